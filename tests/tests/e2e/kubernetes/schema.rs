//! Schema validation: every golden output and `weft install`'s output against the Kubernetes
//! 1.29, 1.33 and 1.37 schemas with `kubernetes-validate` 1.37.0 in strict mode (unknown fields
//! fail). The tool comes from PyPI (`scripts/test` installs it); without it this test fails — it
//! never skips.

use std::process::Command;

use weft_tests::harness::TestDir;

use super::support::{golden_dir, weft};

pub const VERSIONS: [&str; 3] = ["1.29", "1.33", "1.37"];

fn tool() -> String {
    let out = Command::new("kubernetes-validate").arg("--version").output().unwrap_or_else(|e| {
        panic!("kubernetes-validate is missing ({e}): pip install kubernetes-validate==1.37.0 (scripts/test does)")
    });
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(version.contains("1.37.0"), "kubernetes-validate {version:?}: 1.37.0 is required");
    "kubernetes-validate".into()
}

/// Validates `files` in strict mode against every version; returns the number of resources passed.
pub fn validate(files: &[std::path::PathBuf]) -> usize {
    let tool = tool();
    let mut passed = 0;
    for v in VERSIONS {
        let out = Command::new(&tool).args(["--strict", "-k", v]).args(files).output().expect("kubernetes-validate");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "kubernetes-validate --strict -k {v} failed:\n{text}");
        let n = text.lines().filter(|l| l.contains(" passed ")).count();
        assert!(text.lines().all(|l| !l.contains("ERROR")), "{text}");
        passed += n;
    }
    passed
}

#[test]
fn every_golden_output_and_the_install_manifests_pass_strict_schema_validation() {
    let dir = TestDir::new("schema");
    let ca = dir.path().join("ca");
    assert_eq!(weft(&["ca", "init", "--dir", &ca.display().to_string()], None).code, 0);
    let install = weft(&["install", "--ca-dir", &ca.display().to_string()], None);
    assert_eq!(install.code, 0, "{}", install.stderr);
    let install_file = dir.path().join("install.yaml");
    std::fs::write(&install_file, &install.stdout).unwrap();
    let mut files: Vec<_> = std::fs::read_dir(golden_dir().join("out"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files.push(install_file);
    let passed = validate(&files);
    println!("kubernetes-validate --strict: {passed} resources passed across {VERSIONS:?} ({} files)", files.len());

    // The check has teeth: an unknown field in a container fails strict validation.
    let bad = dir.path().join("unknown-field.yaml");
    std::fs::write(
        &bad,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec:\n  containers:\n  - {name: x, image: x, restartPolicyy: Always}\n",
    )
    .unwrap();
    let out = Command::new(tool()).args(["--strict", "-k", "1.29"]).arg(&bad).output().unwrap();
    assert!(!out.status.success(), "strict validation accepted an unknown field");
}
