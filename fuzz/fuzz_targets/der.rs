//! The hand-written DER certificate reader against x509-parser (see weft_certs::fuzzing::der).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| weft_certs::fuzzing::der::check(data));
