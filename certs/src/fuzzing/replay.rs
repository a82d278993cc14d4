//! Replays every input kept in `fuzz/corpus/<target>` through the target's check, as an
//! ordinary test: a crash the fuzzer once found stays fixed.

use std::path::PathBuf;

use super::corpus::replay;

#[test]
fn der_corpus() {
    replay("der", super::der::check);
}

#[test]
fn spiffe_corpus() {
    replay("spiffe", super::identity::check_spiffe);
}

#[test]
fn token_corpus() {
    replay("token", super::identity::check_token);
}

#[test]
fn csr_corpus() {
    replay("csr", super::csr::check);
}

/// Writes the DER and raw-CSR seed inputs (real certificates and CSRs from a fresh CA).
/// Run by hand: `cargo test -p weft-certs --release fuzzing::replay::write_cert_seeds -- --ignored`.
#[test]
#[ignore = "writes seed inputs into fuzz/corpus/der and fuzz/corpus/csr"]
fn write_cert_seeds() {
    use std::time::Duration;

    use crate::{ca::workload_csr, provenance::Provenance, CertificateAuthority, SpiffeId};
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let ca_dir = std::env::temp_dir().join(format!("weft-seed-ca-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&ca_dir);
    let ca = CertificateAuthority::init(&ca_dir, "weft.local").unwrap();
    let web: SpiffeId = "spiffe://weft.local/ns/default/sa/web".parse().unwrap();
    let (_, csr) = workload_csr(&web).unwrap();
    let provenance = Provenance { token_id: "0123456789abcdef".into(), instance: Some("web-0".into()) };
    let leaf = ca.sign_csr(&csr, &web, Duration::from_secs(3600), Some(&provenance)).unwrap();
    let direct = ca.issue_direct(&web, Duration::from_secs(3600)).unwrap();
    let controller = ca.issue_controller(Duration::from_secs(3600)).unwrap();
    for (name, der) in [
        ("ca", ca.cert_der().as_ref()),
        ("leaf-with-provenance", leaf.chain[0].as_ref()),
        ("leaf-direct", direct.chain[0].as_ref()),
        ("controller", controller.chain[0].as_ref()),
    ] {
        std::fs::write(root.join("der").join(name), der).unwrap();
    }
    let admin: SpiffeId = "spiffe://weft.local/ns/default/sa/admin".parse().unwrap();
    let (_, admin_csr) = workload_csr(&admin).unwrap();
    // Mode 0: a raw CSR, for the first granted identity (web).
    std::fs::write(root.join("csr/raw-web"), [&[0u8][..], &csr].concat()).unwrap();
    std::fs::write(root.join("csr/raw-asks-admin"), [&[0u8][..], &admin_csr].concat()).unwrap();
    let _ = std::fs::remove_dir_all(&ca_dir);
}
