//! Replays every input kept in `fuzz/corpus/<target>` through the target's check, as an
//! ordinary test: a crash the fuzzer once found stays fixed.

use std::path::PathBuf;

/// Runs `check` on every file of the target's corpus; the folder must exist and hold inputs.
pub fn replay(target: &str, check: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a corpus entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} holds no inputs", dir.display());
    for f in files {
        let data = std::fs::read(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        eprintln!("replaying {}", f.display());
        check(&data);
    }
}

#[test]
fn mesh_corpus() {
    replay("mesh", super::mesh::check);
}

#[test]
fn snapshot_corpus() {
    replay("snapshot", super::snapshot::check);
}
