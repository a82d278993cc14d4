//! `weft check` against a universal-mode controller (the checks it runs without a kubeconfig):
//! a healthy mesh passes (exit 0); a rejected mesh-file edit, an expired trust anchor and a
//! controller that is down each fail with a hint (exit 1).

use std::time::Duration;

use weft_tests::harness::{eventually, Mesh, ProxyOpts};

use super::support::weft;

const MESH: &str = "trust_domain: weft.local\nservices:\n  bar: {protocol: http}\n";

#[test]
fn weft_check_passes_a_healthy_mesh_and_fails_broken_ones_with_hints() {
    let mut m = Mesh::start("check", MESH);
    let _foo = m.proxy(ProxyOpts::client("foo"));
    let ca = m.ca_dir.display().to_string();
    let admin = m.controller_admin();
    let check = |extra: &[&str]| {
        let mut args = vec!["check", "--controller-admin", admin.as_str()];
        args.extend_from_slice(extra);
        weft(&args, None)
    };

    let healthy = check(&["--ca-dir", &ca]);
    assert_eq!(healthy.code, 0, "{}{}", healthy.stdout, healthy.stderr);
    for line in ["controller is live", "controller is ready", "trust anchor expiry", "mesh config", "proxies connected"]
    {
        assert!(healthy.stdout.lines().any(|l| l.starts_with("ok") && l.contains(line)), "{line}:\n{}", healthy.stdout);
    }
    assert!(!healthy.stdout.contains("FAIL"), "{}", healthy.stdout);
    println!("{}", healthy.stdout);

    // A rejected edit: the last good config stays in force, and check says so.
    m.write_mesh("trust_domain: weft.local\nservices:\n  bar: {timeout: soon}\n");
    eventually("the edit is rejected", Duration::from_secs(10), || !m.state()["config"]["rejected"].is_null());
    let rejected = check(&["--ca-dir", &ca]);
    assert_eq!(rejected.code, 1, "{}", rejected.stdout);
    let fail =
        rejected.stdout.lines().find(|l| l.starts_with("FAIL") && l.contains("mesh config")).expect(&rejected.stdout);
    assert!(fail.contains("services.bar.timeout"), "{fail}");
    assert!(rejected.stdout.contains("hint: fix the mesh file"), "{}", rejected.stdout);
    m.write_mesh(MESH);
    eventually("a good edit clears it", Duration::from_secs(10), || m.state()["config"]["rejected"].is_null());

    // An expired trust anchor (a certificate valid for one second, two seconds ago).
    let authority = weft_certs::CertificateAuthority::load(&m.ca_dir).unwrap();
    let issued = authority.issue_controller(Duration::from_secs(1)).unwrap();
    let anchor = m.dir.path().join("expired.crt");
    std::fs::write(&anchor, weft_certs::pem::encode_certs(&issued.chain[..1])).unwrap();
    std::thread::sleep(Duration::from_millis(2100));
    let expired = check(&["--trust-anchor", &anchor.display().to_string()]);
    assert_eq!(expired.code, 1, "{}", expired.stdout);
    assert!(
        expired
            .stdout
            .lines()
            .any(|l| l.starts_with("FAIL") && l.contains("trust anchor expiry") && l.contains("expired")),
        "{}",
        expired.stdout
    );
    println!("{}", expired.stdout);

    // The controller down.
    m.stop_controller();
    let down = check(&["--ca-dir", &ca]);
    assert_eq!(down.code, 1, "{}", down.stdout);
    assert!(down.stdout.lines().any(|l| l.starts_with("FAIL") && l.contains("controller is live")), "{}", down.stdout);
    assert!(down.stdout.contains("--controller-admin"), "the hint says where to look:\n{}", down.stdout);
    println!("{}", down.stdout);
}
