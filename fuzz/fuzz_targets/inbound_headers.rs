//! The inbound header pipeline: the app sees only the verified identity (see weft_proxy::fuzzing::headers).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| weft_proxy::fuzzing::headers::check(data));
