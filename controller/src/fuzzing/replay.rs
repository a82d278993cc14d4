//! Replays every input kept in `fuzz/corpus/<target>` through the target's check, as an
//! ordinary test: a crash the fuzzer once found stays fixed.

use weft_certs::fuzzing::corpus::replay;

#[test]
fn mesh_corpus() {
    replay("mesh", super::mesh::check);
}

#[test]
fn snapshot_corpus() {
    replay("snapshot", super::snapshot::check);
}

#[test]
fn session_corpus() {
    replay("session", super::session::check);
}
