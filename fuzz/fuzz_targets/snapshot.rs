//! Snapshot building from registrations: none removes or shadows another's entry (see weft_controller::fuzzing::snapshot).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| weft_controller::fuzzing::snapshot::check(data));
