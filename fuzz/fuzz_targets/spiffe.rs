//! SPIFFE ID parsing and validation (see weft_certs::fuzzing::identity).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| weft_certs::fuzzing::identity::check_spiffe(data));
