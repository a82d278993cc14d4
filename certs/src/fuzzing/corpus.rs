//! The fuzz targets' corpora (`fuzz/corpus/<target>`) replayed as ordinary tests, shared by the crates
//! whose `fuzzing` modules hold the checks: a crash a fuzzer once found stays fixed.

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
