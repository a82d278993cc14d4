//! The controller's discovery stream state machine under arbitrary proxy requests (see weft_controller::fuzzing::session).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| weft_controller::fuzzing::session::check(data));
