//! CSR signing: the issued identity is the granted one (see weft_certs::fuzzing::csr).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| weft_certs::fuzzing::csr::check(data));
