//! Deadline headers and grpc-timeout (see weft_proxy::fuzzing::deadline).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| weft_proxy::fuzzing::deadline::check(data));
