//! Starting the real binaries for end-to-end tests: a temporary mesh directory with a CA made by
//! `weft ca init`, the controller, and proxies, each a child process whose log is kept and printed
//! when a test fails. Every process is killed when its handle drops, also on panic.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

/// The directory holding the release binaries built next to this test executable.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<triple>/release/deps/<test> → target/<triple>/release
    let dir = exe.parent().and_then(Path::parent).expect("target dir").to_path_buf();
    for b in ["weft", "weft-proxy", "weft-controller"] {
        assert!(
            dir.join(b).is_file(),
            "{} is missing: build the binaries first (`cargo build --release --workspace`, as the README's test command does)",
            dir.join(b).display()
        );
    }
    dir
}

pub fn bin(name: &str) -> PathBuf {
    bin_dir().join(name)
}

/// A port free at the time of asking, distinct from any other this process handed out.
pub fn free_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    if NEXT.load(Ordering::Relaxed) == 0 {
        let base = 20000 + (std::process::id() % 2000) as u16 * 10;
        let _ = NEXT.compare_exchange(0, base, Ordering::Relaxed, Ordering::Relaxed);
    }
    loop {
        let p = NEXT.fetch_add(1, Ordering::Relaxed);
        if p >= 60000 {
            NEXT.store(20000, Ordering::Relaxed);
            continue;
        }
        if TcpListener::bind(("127.0.0.1", p)).is_ok() && TcpListener::bind(("::", p)).is_ok() {
            return p;
        }
    }
}

/// A temporary directory, removed on drop unless WEFT_KEEP_TEST_DIRS is set.
pub struct TestDir(pub PathBuf);

impl TestDir {
    pub fn new(name: &str) -> Self {
        static N: AtomicU16 = AtomicU16::new(0);
        let d = std::env::temp_dir().join(format!(
            "weft-e2e-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("create test dir");
        Self(d)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::env::var_os("WEFT_KEEP_TEST_DIRS").is_none() && !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A child process with its log file; killed on drop. On a panicking test its log is printed.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> Self {
        let out = std::fs::OpenOptions::new().create(true).append(true).open(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        cmd.stdout(Stdio::from(out)).stderr(Stdio::from(err)).stdin(Stdio::null());
        let child = cmd.spawn().unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Self { name: name.to_string(), child: Some(child), log }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill").arg(format!("-{sig}")).arg(self.pid().to_string()).status();
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut()?;
        loop {
            if let Ok(Some(s)) = child.try_wait() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let logs = self.logs();
            let tail: Vec<&str> = logs.lines().rev().take(60).collect();
            eprintln!("----- last lines of {} ({}) -----", self.name, self.log.display());
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
        self.kill();
    }
}

/// Polls `url` until it answers 200.
pub fn wait_http_ok(url: &str, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    while Instant::now() < deadline {
        match http_get(url) {
            Ok((200, _)) => return Ok(()),
            Ok((s, b)) => last = format!("{s}: {b}"),
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("{url} not ready after {timeout:?}: {last}"))
}

/// A blocking HTTP/1.1 GET (for admin endpoints).
pub fn http_get(url: &str) -> Result<(u16, String), String> {
    http_request("GET", url, "")
}

/// A blocking HTTP/1.1 request with `Connection: close` (for admin endpoints).
pub fn http_request(method: &str, url: &str, body: &str) -> Result<(u16, String), String> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").ok_or("http:// only")?;
    let (hostport, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}"))).unwrap_or((rest, "/".into()));
    let mut s = std::net::TcpStream::connect(hostport).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status =
        text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| format!("bad response: {text}"))?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}

/// Sums the samples of `name` whose labels include every `(label, value)` of `filter`.
pub fn metric(text: &str, name: &str, filter: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if n != name {
                return None;
            }
            let ok = filter.iter().all(|(k, v)| labels.contains(&format!("{k}=\"{v}\"")));
            ok.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// A mesh for one test: CA, mesh file, controller; proxies are added with [`Mesh::proxy`].
pub struct Mesh {
    pub dir: TestDir,
    pub ca_dir: PathBuf,
    pub mesh_file: PathBuf,
    pub grpc_port: u16,
    pub admin_port: u16,
    pub controller: Option<Proc>,
    pub controller_args: Vec<String>,
    restarts: u32,
}

impl Mesh {
    /// A CA (`weft ca init`), the mesh file, and a running controller.
    pub fn start(name: &str, mesh_yaml: &str) -> Self {
        Self::start_with(name, mesh_yaml, &[])
    }

    pub fn start_with(name: &str, mesh_yaml: &str, controller_args: &[&str]) -> Self {
        let dir = TestDir::new(name);
        let ca_dir = dir.path().join("ca");
        let status = Command::new(bin("weft"))
            .args(["ca", "init", "--dir"])
            .arg(&ca_dir)
            .args(["--trust-domain", "weft.local"])
            .status()
            .expect("weft ca init");
        assert!(status.success(), "weft ca init failed");
        let mesh_dir = dir.path().join("mesh");
        std::fs::create_dir_all(&mesh_dir).unwrap();
        let mesh_file = mesh_dir.join("mesh.yaml");
        std::fs::write(&mesh_file, mesh_yaml).unwrap();
        let mut m = Self {
            dir,
            ca_dir,
            mesh_file,
            grpc_port: free_port(),
            admin_port: free_port(),
            controller: None,
            controller_args: controller_args.iter().map(|s| s.to_string()).collect(),
            restarts: 0,
        };
        m.start_controller();
        m
    }

    pub fn controller_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.grpc_port)
    }

    pub fn controller_admin(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin_port)
    }

    pub fn start_controller(&mut self) {
        let mut cmd = Command::new(bin("weft-controller"));
        cmd.arg("--mesh")
            .arg(&self.mesh_file)
            .arg("--ca-dir")
            .arg(&self.ca_dir)
            .args(["--grpc-addr", &format!("127.0.0.1:{}", self.grpc_port)])
            .args(["--admin-addr", &format!("127.0.0.1:{}", self.admin_port)])
            .args(["--restart-holddown", "5s", "--endpoint-grace", "3s"])
            .args(&self.controller_args)
            .env("WEFT_CONTROLLER_LOG_LEVEL", "info");
        self.restarts += 1;
        let log = self.dir.path().join(format!("controller-{}.log", self.restarts));
        self.controller = Some(Proc::spawn("weft-controller", cmd, log));
        wait_http_ok(&format!("{}/ready", self.controller_admin()), Duration::from_secs(20)).unwrap();
    }

    pub fn stop_controller(&mut self) {
        if let Some(mut c) = self.controller.take() {
            c.kill();
        }
    }

    /// A join token for `service` in a file.
    pub fn token(&self, service: &str) -> PathBuf {
        self.token_with("default", service, &[]).0
    }

    /// A join token for `namespace/service` (with `extra` flags for `weft ca token`) in a file,
    /// and what `weft ca token` said on stderr (the token's id).
    pub fn token_with(&self, namespace: &str, service: &str, extra: &[&str]) -> (PathBuf, String) {
        let out = Command::new(bin("weft"))
            .args(["ca", "token", "--dir"])
            .arg(&self.ca_dir)
            .args(["--service", service, "--namespace", namespace])
            .args(extra)
            .output()
            .expect("weft ca token");
        assert!(out.status.success(), "weft ca token: {}", String::from_utf8_lossy(&out.stderr));
        let path = self.dir.path().join(format!("{namespace}-{service}-{}.token", free_port()));
        std::fs::write(&path, &out.stdout).unwrap();
        (path, String::from_utf8_lossy(&out.stderr).into_owned())
    }

    /// Replaces the mesh file the way editors do: write a new file, rename it over the old one.
    pub fn write_mesh(&self, yaml: &str) {
        let tmp = self.mesh_file.with_extension("yaml.tmp");
        std::fs::write(&tmp, yaml).unwrap();
        std::fs::rename(&tmp, &self.mesh_file).unwrap();
    }

    pub fn state(&self) -> serde_json::Value {
        let (_, body) = http_get(&format!("{}/api/v1/state", self.controller_admin())).expect("controller state");
        serde_json::from_str(&body).expect("state JSON")
    }

    pub fn controller_metrics(&self) -> String {
        http_get(&format!("{}/metrics", self.controller_admin())).map(|(_, b)| b).unwrap_or_default()
    }

    /// Starts a proxy and waits for it to be ready.
    pub fn proxy(&self, opts: ProxyOpts) -> ProxyHandle {
        let p = self.proxy_unready(opts);
        wait_http_ok(&format!("http://127.0.0.1:{}/ready", p.admin), Duration::from_secs(20)).unwrap_or_else(|e| {
            panic!("{} not ready: {e}\n{}", p.proc.name, p.proc.logs());
        });
        p
    }

    /// Starts a proxy without waiting for readiness.
    pub fn proxy_unready(&self, opts: ProxyOpts) -> ProxyHandle {
        let inbound = free_port();
        let admin = free_port();
        let namespace = opts.namespace.clone().unwrap_or_else(|| "default".into());
        let token = opts.token.clone().unwrap_or_else(|| self.token_with(&namespace, &opts.service, &[]).0);
        let mut cmd = Command::new(bin("weft-proxy"));
        cmd.args(["--controller", &self.controller_url()])
            .arg("--trust-anchor")
            .arg(self.ca_dir.join("ca.crt"))
            .arg("--token-file")
            .arg(&token)
            .args(["--service", &opts.service, "--namespace", &namespace])
            .args(["--inbound", &format!("127.0.0.1:{inbound}")])
            .args(["--admin", &format!("127.0.0.1:{admin}")]);
        if let Some(app) = opts.app {
            cmd.args(["--app", &app.to_string()]);
        }
        if let Some(v) = &opts.version {
            cmd.args(["--version", v]);
        }
        let mut upstreams = HashMap::new();
        for svc in &opts.upstreams {
            let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
            cmd.args(["--upstream", &format!("{svc}={addr}")]);
            upstreams.insert(svc.clone(), addr);
        }
        cmd.args(&opts.extra);
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let name = format!(
            "weft-proxy[{}{}]",
            opts.service,
            opts.version.as_deref().map(|v| format!(" {v}")).unwrap_or_default()
        );
        let log = self.dir.path().join(format!("proxy-{namespace}-{}-{inbound}.log", opts.service));
        let proc = Proc::spawn(&name, cmd, log);
        ProxyHandle { proc, inbound, admin, upstreams }
    }
}

#[derive(Default, Clone)]
pub struct ProxyOpts {
    pub service: String,
    /// Default: `default`.
    pub namespace: Option<String>,
    pub version: Option<String>,
    pub app: Option<SocketAddr>,
    pub upstreams: Vec<String>,
    pub extra: Vec<String>,
    pub env: Vec<(String, String)>,
    pub token: Option<PathBuf>,
}

impl ProxyOpts {
    pub fn new(service: &str) -> Self {
        Self { service: service.to_string(), ..Default::default() }
    }
    /// A workload that only calls others (its `--app` is a port nothing listens on).
    pub fn client(service: &str) -> Self {
        Self::new(service).app("127.0.0.1:9".parse().expect("address"))
    }
    pub fn app(mut self, app: SocketAddr) -> Self {
        self.app = Some(app);
        self
    }
    pub fn upstream(mut self, svc: &str) -> Self {
        self.upstreams.push(svc.to_string());
        self
    }
    pub fn version(mut self, v: &str) -> Self {
        self.version = Some(v.to_string());
        self
    }
    pub fn arg(mut self, a: &str) -> Self {
        self.extra.push(a.to_string());
        self
    }
    pub fn namespace(mut self, ns: &str) -> Self {
        self.namespace = Some(ns.to_string());
        self
    }
}

pub struct ProxyHandle {
    pub proc: Proc,
    pub inbound: u16,
    pub admin: u16,
    pub upstreams: HashMap<String, SocketAddr>,
}

impl ProxyHandle {
    pub fn upstream(&self, svc: &str) -> SocketAddr {
        self.upstreams[svc]
    }
    pub fn metrics(&self) -> String {
        http_get(&format!("http://127.0.0.1:{}/metrics", self.admin)).map(|(_, b)| b).unwrap_or_default()
    }
    pub fn config(&self) -> serde_json::Value {
        let (_, b) = http_get(&format!("http://127.0.0.1:{}/config", self.admin)).expect("config");
        serde_json::from_str(&b).expect("config JSON")
    }
    /// Waits until `cond` holds for this proxy's view of `service`'s endpoints.
    pub fn wait_endpoints(&self, service: &str, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let cfg = self.config();
            let count = cfg["services"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|s| s["name"] == service)
                .and_then(|s| s["endpoints"].as_array().map(|a| a.len()))
                .unwrap_or(0);
            if count == n {
                return;
            }
            assert!(Instant::now() < deadline, "{} never saw {n} endpoints of {service} (saw {count})", self.proc.name);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Waits until `f` returns true, or panics with `what`.
pub fn eventually(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
