//! Arbitrary discovery responses applied in the proxy (see weft_proxy::fuzzing::discovery).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| weft_proxy::fuzzing::discovery::check(data));
