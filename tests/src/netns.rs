//! Network-namespace "pods" for transparent-mode tests: a switch namespace with a bridge, and pods
//! joined to it by veth pairs, each with `lo` up and a default route (so connects to a VIP reach
//! the nat rules). Everything a lab makes — namespaces and processes — goes when it drops, also
//! when a test fails. Needs root; without it the tests fail loudly rather than skip.

use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::harness::{bin, Proc, TestDir};

pub use weft_bench::netns::{is_root, SWITCH_IP, SWITCH_IP6};

pub fn require_root() {
    assert!(is_root(), "network-namespace tests need root (ip netns, veth, iptables); run the test command as root");
    for tool in ["ip", "iptables", "setpriv", "curl"] {
        let ok = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "network-namespace tests need `{tool}` (.ci/run installs it)");
    }
}

/// The benchmark's lab (switch, pods, dual stack), plus what tests need around it: processes
/// that die with the lab, per-namespace hosts files, `curl` and `exec` inside a pod.
pub struct Lab {
    pub prefix: String,
    pub switch: String,
    procs: Vec<Proc>,
    pub dir: TestDir,
    etc_dirs: Vec<std::path::PathBuf>,
    /// Dropped last (fields drop in order, after `Drop::drop` has stopped the processes).
    lab: weft_bench::netns::Lab,
}

impl Lab {
    pub fn new(name: &str) -> Self {
        require_root();
        static N: AtomicU32 = AtomicU32::new(0);
        let prefix = format!("w{}{}", std::process::id() % 100_000, N.fetch_add(1, Ordering::SeqCst));
        let lab = weft_bench::netns::Lab::with_prefix(prefix.clone()).unwrap_or_else(|e| panic!("{e:#}"));
        Self { prefix, switch: lab.switch().to_string(), procs: vec![], dir: TestDir::new(name), etc_dirs: vec![], lab }
    }

    /// A pod namespace at 198.18.0.`n`, wired to the switch. Returns its name.
    pub fn pod(&mut self, name: &str, n: u8) -> String {
        self.lab.pod(name, n).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Gives the switch and the pod `ns` (made by [`Lab::pod`] as number `n`) IPv6 addresses too.
    pub fn dual_stack(&mut self, ns: &str, n: u8) {
        self.lab.dual_stack(ns, n).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Names resolved inside `ns` (`ip netns exec` mounts `/etc/netns/NS/hosts` over `/etc/hosts`).
    pub fn hosts(&mut self, ns: &str, lines: &str) {
        let dir = std::path::PathBuf::from("/etc/netns").join(ns);
        std::fs::create_dir_all(&dir).expect("/etc/netns/NS");
        std::fs::write(dir.join("hosts"), format!("127.0.0.1 localhost\n::1 localhost\n{lines}\n")).unwrap();
        self.etc_dirs.push(dir);
    }

    /// Runs a command in a namespace to completion.
    pub fn exec(&self, ns: &str, cmd: &[&str]) -> Output {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).args(cmd);
        c.output().unwrap_or_else(|e| panic!("{cmd:?} in {ns}: {e}"))
    }

    /// Runs a command in a namespace and returns its stdout; panics on failure.
    pub fn exec_ok(&self, ns: &str, cmd: &[&str]) -> String {
        let out = self.exec(ns, cmd);
        assert!(
            out.status.success(),
            "{cmd:?} in {ns} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts a long-running process in a namespace, optionally as another user.
    pub fn spawn(&mut self, ns: &str, name: &str, uid: Option<u32>, cmd: &[String]) {
        let mut c = weft_bench::netns::command(Some(ns), uid, &cmd[0]);
        c.args(&cmd[1..]);
        let log = self.dir.path().join(format!("{name}.log"));
        self.procs.push(Proc::spawn(name, c, log));
    }

    /// GET with curl inside a namespace: (status, body), or an error if no HTTP answer came.
    pub fn curl(&self, ns: &str, url: &str) -> Result<(u16, String), String> {
        self.curl_with(ns, url, &[])
    }

    /// curl inside a namespace with extra arguments (`-X PUT`, `-d …`, `-6`).
    pub fn curl_with(&self, ns: &str, url: &str, extra: &[&str]) -> Result<(u16, String), String> {
        let mut args = vec!["curl", "-s", "-m", "5", "-w", "\n%{http_code}"];
        args.extend_from_slice(extra);
        args.push(url);
        let out = self.exec(ns, &args);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "000"));
        let code: u16 = code.trim().parse().unwrap_or(0);
        if !out.status.success() || code == 0 {
            return Err(format!(
                "curl {url} in {ns}: exit {:?} {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok((code, body.to_string()))
    }

    /// Waits until `url` answers 200 from inside `ns`.
    pub fn wait_ready(&self, ns: &str, url: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok((200, _)) = self.curl(ns, url) {
                return;
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = self.procs.iter().map(|p| format!("--- {}\n{}", p.name, p.logs())).collect();
                panic!("{url} in {ns} not ready after {timeout:?}\n{}", logs.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The nat table's rules in a namespace (`iptables-save -t nat` for the given tool).
    pub fn nat_rules(&self, ns: &str, save: &str) -> Vec<String> {
        self.exec_ok(ns, &[save, "-t", "nat"]).lines().filter(|l| l.contains("WEFT")).map(str::to_string).collect()
    }

    /// A listener of this test process bound at `addr` inside the namespace `ns` (a short-lived
    /// thread enters it for the bind; the socket stays in it), for servers the test itself runs.
    pub fn listen_in(&self, ns: &str, addr: &str) -> std::net::TcpListener {
        use std::os::fd::AsFd;
        let (path, addr) = (format!("/var/run/netns/{ns}"), addr.to_string());
        std::thread::spawn(move || {
            let f = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            rustix::thread::move_into_link_name_space(f.as_fd(), Some(rustix::thread::LinkNameSpaceType::Network))
                .unwrap_or_else(|e| panic!("entering {path}: {e}"));
            std::net::TcpListener::bind(&addr).unwrap_or_else(|e| panic!("binding {addr} in {path}: {e}"))
        })
        .join()
        .expect("the bind thread")
    }

    pub fn weft_proxy(&self) -> String {
        bin("weft-proxy").display().to_string()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for p in &mut self.procs {
            p.kill();
        }
        self.procs.clear();
        for d in &self.etc_dirs {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}
