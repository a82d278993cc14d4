//! Join tokens: unsigned ones refused, signed claims grant exactly their identity (see weft_certs::fuzzing::identity).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| weft_certs::fuzzing::identity::check_token(data));
