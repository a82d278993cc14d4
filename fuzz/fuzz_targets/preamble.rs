//! The opaque tunnel's preamble, read in small chunks (see weft_proxy::fuzzing::detect).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| weft_proxy::fuzzing::detect::check_preamble(data));
