//! The playground (issue #6): `weft playground` as local processes.

use std::process::Command;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use weft_tests::harness::{bin, TestDir};

/// A base port with the 60 ports after it free. The tests of this file run at once in one process:
/// each call searches its own interleaved series of blocks (up to four callers), so two tests never
/// find the same free block and race to bind it (which once failed a playground run).
fn free_base() -> u16 {
    static CALLS: AtomicU16 = AtomicU16::new(0);
    let own = CALLS.fetch_add(1, Ordering::SeqCst) % 4;
    let start = 20000 + (std::process::id() % 100) as u16 * 240 + own * 60;
    (0..80)
        .map(|i| start + i * 240)
        .find(|b| (*b..*b + 60).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()))
        .expect("a free port range")
}

/// Processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut out = vec![];
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if text.contains(needle) {
                out.push(format!("{}: {text}", entry.file_name().to_string_lossy()));
            }
        }
    }
    out
}

#[test]
fn the_local_playground_runs_over_mtls_and_leaves_nothing_behind() {
    let dir = TestDir::new("playground");
    let work = dir.path().join("pg");
    let base = free_base();
    let out = Command::new(bin("weft"))
        .args(["playground", "--duration", "15", "--plain", "--base-port", &base.to_string(), "--dir"])
        .arg(&work)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}\n{stdout}\n{stderr}", out.status);
    let last = stdout.lines().last().unwrap_or_default();
    assert!(last.starts_with("playground summary:"), "{stdout}");
    let success: f64 = last
        .split("success ")
        .nth(1)
        .and_then(|s| s.split('%').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no success rate in {last:?}"));
    assert!(success >= 99.0, "success {success}%: {stdout}");
    assert!(last.contains("mTLS on every hop: yes"), "{last}");
    let requests: u64 = last.split_whitespace().nth(2).and_then(|s| s.parse().ok()).unwrap_or(0);
    assert!(requests >= 250, "about 20 rps for 15 s: {last}");
    // Every line shows all four proxies connected.
    assert!(stdout.lines().filter(|l| l.starts_with("t=")).all(|l| l.contains("connected 4/4")), "{stdout}");
    std::thread::sleep(Duration::from_millis(200));
    let left = processes_mentioning(&work.display().to_string());
    assert!(left.is_empty(), "processes left behind: {left:#?}");
}

#[test]
fn a_playground_without_dir_removes_its_temporary_folder_and_says_so() {
    let tmp = TestDir::new("playground-tmp");
    let base = free_base();
    let out = Command::new(bin("weft"))
        .args(["playground", "--duration", "3", "--plain", "--base-port", &base.to_string()])
        .env("TMPDIR", tmp.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}\n{stderr}", out.status);
    assert!(stderr.contains("removed ") && stderr.contains("weft-playground-"), "{stderr}");
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().flatten().map(|e| e.path()).collect();
    assert!(left.is_empty(), "left behind in {}: {left:?}", tmp.path().display());
}

#[test]
fn the_demo_app_stops_on_sigterm() {
    use weft_tests::harness::{free_port, wait_http_ok, Proc};
    let dir = TestDir::new("demo-sigterm");
    let addr = format!("127.0.0.1:{}", free_port());
    let mut cmd = Command::new(bin("weft-demo"));
    cmd.args(["--name", "bar", "--listen", &addr]);
    let mut demo = Proc::spawn("weft-demo", cmd, dir.path().join("demo.log"));
    wait_http_ok(&format!("http://{addr}/"), Duration::from_secs(10)).unwrap();
    demo.signal("TERM");
    // A container runtime waits 10 s before SIGKILL: the app must be gone well before.
    let status = demo.wait_exit(Duration::from_secs(5)).expect("weft-demo ignored SIGTERM");
    assert!(status.success(), "{status:?}\n{}", demo.logs());
}
