//! Mesh-file parsing within a time budget (see weft_controller::fuzzing::mesh).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| weft_controller::fuzzing::mesh::check(data));
