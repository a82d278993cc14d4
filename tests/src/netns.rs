//! Network-namespace "pods" for transparent-mode tests: a switch namespace with a bridge, and pods
//! joined to it by veth pairs, each with `lo` up and a default route (so connects to a VIP reach
//! the nat rules). Everything a lab makes — namespaces and processes — goes when it drops, also
//! when a test fails. Needs root; without it the tests fail loudly rather than skip.

use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::harness::{bin, Proc, TestDir};

/// The switch's address; pods are 198.18.0.N (the benchmarking range, inside our namespaces only).
pub const SWITCH_IP: &str = "198.18.0.1";
/// The switch's IPv6 address in dual-stack labs; pods are fd00:198:18::N (a unique local prefix,
/// inside our namespaces only).
pub const SWITCH_IP6: &str = "fd00:198:18::1";

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false)
}

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

fn sh(cmd: &[&str]) -> Output {
    Command::new(cmd[0]).args(&cmd[1..]).output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

fn must(cmd: &[&str]) {
    let out = sh(cmd);
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

pub struct Lab {
    pub prefix: String,
    pub switch: String,
    namespaces: Vec<String>,
    procs: Vec<Proc>,
    pub dir: TestDir,
    v6_switch: bool,
    etc_dirs: Vec<std::path::PathBuf>,
}

impl Lab {
    pub fn new(name: &str) -> Self {
        require_root();
        static N: AtomicU32 = AtomicU32::new(0);
        let prefix = format!("w{}{}", std::process::id() % 100_000, N.fetch_add(1, Ordering::SeqCst));
        let switch = format!("{prefix}-sw");
        let mut lab = Self {
            prefix,
            switch: switch.clone(),
            namespaces: vec![],
            procs: vec![],
            dir: TestDir::new(name),
            v6_switch: false,
            etc_dirs: vec![],
        };
        lab.add_ns(&switch);
        // A fixed MAC: a bridge without one takes its lowest port's, so adding a pod could change
        // the switch's MAC under the pods' ARP caches and cut them off from it for seconds.
        must(&["ip", "-n", &switch, "link", "add", "br0", "address", "02:00:c6:12:00:01", "type", "bridge"]);
        must(&["ip", "-n", &switch, "addr", "add", &format!("{SWITCH_IP}/24"), "dev", "br0"]);
        must(&["ip", "-n", &switch, "link", "set", "br0", "up"]);
        lab
    }

    fn add_ns(&mut self, ns: &str) {
        let _ = sh(&["ip", "netns", "del", ns]);
        must(&["ip", "netns", "add", ns]);
        self.namespaces.push(ns.to_string());
        must(&["ip", "-n", ns, "link", "set", "lo", "up"]);
    }

    /// A pod namespace at 198.18.0.`n`, wired to the switch. Returns its name.
    pub fn pod(&mut self, name: &str, n: u8) -> String {
        let ns = format!("{}-{name}", self.prefix);
        self.add_ns(&ns);
        let (a, b) = (format!("{}p{n}", self.prefix), format!("{}s{n}", self.prefix));
        must(&["ip", "link", "add", &a, "netns", &ns, "type", "veth", "peer", "name", &b, "netns", &self.switch]);
        must(&["ip", "-n", &self.switch, "link", "set", &b, "master", "br0"]);
        must(&["ip", "-n", &self.switch, "link", "set", &b, "up"]);
        must(&["ip", "-n", &ns, "addr", "add", &format!("198.18.0.{n}/24"), "dev", &a]);
        must(&["ip", "-n", &ns, "link", "set", &a, "up"]);
        must(&["ip", "-n", &ns, "route", "add", "default", "via", SWITCH_IP]);
        ns
    }

    /// Gives the switch and the pod `ns` (made by [`Lab::pod`] as number `n`) IPv6 addresses too.
    pub fn dual_stack(&mut self, ns: &str, n: u8) {
        if !self.v6_switch {
            must(&["ip", "-n", &self.switch, "addr", "add", &format!("{SWITCH_IP6}/64"), "dev", "br0", "nodad"]);
            self.v6_switch = true;
        }
        let dev = format!("{}p{n}", self.prefix);
        must(&["ip", "-n", ns, "addr", "add", &format!("fd00:198:18::{n}/64"), "dev", &dev, "nodad"]);
        must(&["ip", "-n", ns, "-6", "route", "add", "default", "via", SWITCH_IP6]);
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
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]);
        if let Some(uid) = uid {
            c.args(["setpriv", &format!("--reuid={uid}"), &format!("--regid={uid}"), "--clear-groups", "--"]);
        }
        c.args(cmd);
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
        for ns in self.namespaces.iter().rev() {
            let _ = sh(&["ip", "netns", "del", ns]);
        }
        for d in &self.etc_dirs {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}
