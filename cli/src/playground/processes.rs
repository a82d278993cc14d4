//! The playground's processes: the controller, and for each workload its demo app and sidecar,
//! started from binaries found beside `weft` (or on PATH), each logging to a file, all stopped on
//! exit — also when the playground fails half-way.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use weft_certs::{CertificateAuthority, SpiffeId};

use super::PlaygroundArgs;

/// The mesh the playground starts with; the user edits it live.
pub const MESH: &str = include_str!("../../../examples/playground/mesh/mesh.yaml");

/// One demo workload: its app and its sidecar.
#[derive(Clone, Debug)]
pub struct Workload {
    pub name: &'static str,
    pub service: &'static str,
    pub version: &'static str,
    pub app: SocketAddr,
    pub inbound: SocketAddr,
    pub admin: SocketAddr,
    /// (service, local listener) the app calls through its proxy.
    pub upstream: Option<(&'static str, SocketAddr)>,
}

/// What the summary needs to scrape a proxy.
#[derive(Clone, Debug)]
pub struct ProxyInfo {
    pub name: &'static str,
    pub service: &'static str,
    pub version: &'static str,
    pub admin: SocketAddr,
}

struct Running {
    name: String,
    child: Child,
}

pub struct Topology {
    dir: PathBuf,
    /// The folder was made for this run (no `--dir`): removed at a clean stop, since it holds
    /// a CA key.
    temporary: bool,
    controller_admin: SocketAddr,
    workloads: Vec<Workload>,
    children: Vec<Running>,
    reported: Vec<String>,
}

fn find_binary(name: &str) -> anyhow::Result<PathBuf> {
    let beside = std::env::current_exe().ok().and_then(|e| e.parent().map(|d| d.join(name)));
    if let Some(p) = beside.filter(|p| p.is_file()) {
        return Ok(p);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&path) {
            if d.join(name).is_file() {
                return Ok(d.join(name));
            }
        }
    }
    anyhow::bail!("{name} not found beside weft or on PATH (build with `cargo build --release --workspace`)")
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

impl Topology {
    pub async fn start(args: &PlaygroundArgs) -> anyhow::Result<Self> {
        let controller = find_binary("weft-controller")?;
        let proxy = find_binary("weft-proxy")?;
        let demo = find_binary("weft-demo")?;
        let base = args.base_port;
        let mut workloads = Vec::new();
        for (i, (name, service, version)) in
            [("bar-v1", "bar", "v1"), ("bar-v2", "bar", "v2"), ("foo", "foo", "v1"), ("web", "web", "v1")]
                .into_iter()
                .enumerate()
        {
            let p = base + 10 + 10 * i as u16;
            let upstream = match service {
                "web" => Some(("foo", local(p + 3))),
                "foo" => Some(("bar", local(p + 3))),
                _ => None,
            };
            workloads.push(Workload {
                name,
                service,
                version,
                app: local(p),
                inbound: local(p + 1),
                admin: local(p + 2),
                upstream,
            });
        }
        // Refuse early, and clearly, when a port is taken.
        let mut ports = vec![base, base + 1];
        for w in &workloads {
            ports.extend([w.app.port(), w.inbound.port(), w.admin.port()]);
            ports.extend(w.upstream.map(|(_, a)| a.port()));
        }
        for p in ports {
            std::net::TcpListener::bind(local(p)).with_context(|| {
                format!("port {p} is in use (another playground?); pick other ports with --base-port")
            })?;
        }

        let dir = match &args.dir {
            Some(d) => d.clone(),
            None => std::env::temp_dir().join(format!("weft-playground-{}", std::process::id())),
        };
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let ca_dir = dir.join("ca");
        let ca = if ca_dir.join("ca.crt").exists() {
            CertificateAuthority::load(&ca_dir)?
        } else {
            CertificateAuthority::init(&ca_dir, "weft.local")?
        };
        let mesh = dir.join("mesh.yaml");
        if !mesh.exists() {
            std::fs::write(&mesh, MESH)?;
        }
        let mut topo = Self {
            dir: dir.clone(),
            temporary: args.dir.is_none(),
            controller_admin: local(base + 1),
            workloads: workloads.clone(),
            children: vec![],
            reported: vec![],
        };
        let mut cmd = Command::new(&controller);
        cmd.arg("--mesh").arg(&mesh).arg("--ca-dir").arg(&ca_dir);
        cmd.args(["--grpc-addr", &local(base).to_string(), "--admin-addr", &local(base + 1).to_string()]);
        topo.spawn("controller", cmd)?;
        topo.wait_ready(&format!("http://{}/ready", local(base + 1)), "the controller").await?;

        for w in &workloads {
            let token = dir.join(format!("{}.token", w.name));
            let id = SpiffeId::new(ca.trust_domain(), "default", w.service)?;
            weft_certs::ca::write_secret(
                &token,
                ca.join_token(&id, Duration::from_secs(30 * 86400), None)?.0.as_bytes(),
            )?;
            let mut app = Command::new(&demo);
            app.args(["--name", w.service, "--version", w.version, "--listen", &w.app.to_string()]);
            if let Some((_, up)) = w.upstream {
                app.args(["--call", &format!("http://{up}/")]);
            }
            topo.spawn(&format!("{}-app", w.name), app)?;
            let mut p = Command::new(&proxy);
            p.args(["--controller", &format!("https://{}", local(base))])
                .arg("--trust-anchor")
                .arg(ca_dir.join("ca.crt"))
                .arg("--token-file")
                .arg(&token)
                .args(["--service", w.service, "--version", w.version, "--instance", w.name])
                .args([
                    "--app",
                    &w.app.to_string(),
                    "--inbound",
                    &w.inbound.to_string(),
                    "--admin",
                    &w.admin.to_string(),
                ]);
            if let Some((svc, up)) = w.upstream {
                p.args(["--upstream", &format!("{svc}={up}")]);
            }
            topo.spawn(&format!("{}-proxy", w.name), p)?;
        }
        for w in &workloads {
            topo.wait_ready(&format!("http://{}/ready", w.admin), &format!("{}'s proxy", w.name)).await?;
            topo.wait_ready(&format!("http://{}/healthz", w.app), &format!("{}'s app", w.name)).await?;
        }
        Ok(topo)
    }

    fn spawn(&mut self, name: &str, mut cmd: Command) -> anyhow::Result<()> {
        let log = std::fs::File::create(self.dir.join(format!("{name}.log")))?;
        cmd.stdout(Stdio::from(log.try_clone()?)).stderr(Stdio::from(log)).stdin(Stdio::null());
        let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        self.children.push(Running { name: name.to_string(), child });
        Ok(())
    }

    async fn wait_ready(&mut self, url: &str, what: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((200, _)) = crate::http_get::get(url, Duration::from_secs(2)).await {
                return Ok(());
            }
            if let Some(dead) = self.unexpected_exit() {
                anyhow::bail!("{dead} exited while starting; see {}", self.dir.join(format!("{dead}.log")).display());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{what} was not ready within 30 s ({url}); logs in {}",
                self.dir.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn web_app_addr(&self) -> SocketAddr {
        self.workloads.iter().find(|w| w.service == "web").map(|w| w.app).expect("web exists")
    }

    pub fn proxies(&self) -> Vec<ProxyInfo> {
        self.workloads
            .iter()
            .map(|w| ProxyInfo { name: w.name, service: w.service, version: w.version, admin: w.admin })
            .collect()
    }

    fn pid(&self, name: &str) -> u32 {
        self.children.iter().find(|c| c.name == name).map(|c| c.child.id()).unwrap_or(0)
    }

    /// The name of a child that exited by itself (each reported once).
    pub fn unexpected_exit(&mut self) -> Option<String> {
        for c in &mut self.children {
            if matches!(c.child.try_wait(), Ok(Some(_))) && !self.reported.contains(&c.name) {
                self.reported.push(c.name.clone());
                return Some(c.name.clone());
            }
        }
        None
    }

    /// Where to look and what to try.
    pub fn guide(&self) -> String {
        let w = |n: &str| self.workloads.iter().find(|w| w.name == n).expect("workload");
        let (web, foo, v1, v2) = (w("web"), w("foo"), w("bar-v1"), w("bar-v2"));
        format!(
            "The Weft playground is up: web → foo → bar (v1 and v2), each with its sidecar, load on web.
Files and logs: {dir}

  weft status --controller-admin http://{ctl}        the mesh at a glance
  curl -s http://{web_app}/ | python3 -m json.tool    one request through the mesh
  curl -s http://{v1_admin}/metrics | grep weft_requests_total   bar v1's golden metrics
  $EDITOR {dir}/mesh.yaml                            change policy live (weights, retries, timeouts)

Try (in another terminal):
  shift bar to v2:      set the split weights in mesh.yaml to v1: 0, v2: 100
  bar fails 30 %:       curl -X PUT -d fail=30 http://{v1_app}/control   (retries hide it; fail=0 to heal)
  bar gets slow:        curl -X PUT -d latency=2500ms http://{v1_app}/control   (bar's 2 s timeout cuts it)
  stop a bar instance:  kill {v2_pid}   (bar v2's app: ejection and fail-over; the playground keeps going)
  stop the controller:  kill {ctl_pid}   (traffic keeps flowing on the last config)
",
            dir = self.dir.display(),
            ctl = self.controller_admin,
            web_app = web.app,
            v1_admin = v1.admin,
            v1_app = v1.app,
            v2_pid = self.pid("bar-v2-app"),
            ctl_pid = self.pid("controller"),
        ) + &format!("  foo's proxy: http://{}/config   web's proxy: http://{}/metrics\n", foo.admin, web.admin)
            + &format!("  bar v2's control: http://{}/control\n", v2.app)
    }

    pub fn guide_short(&self) -> String {
        format!("Weft playground — files and logs in {} — Ctrl-C to stop\n", self.dir.display())
    }

    /// Stops every child: SIGTERM, a short grace, then SIGKILL.
    pub async fn stop(&mut self) {
        for c in &self.children {
            let _ = Command::new("kill").arg("-TERM").arg(c.child.id().to_string()).stderr(Stdio::null()).status();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && self.children.iter_mut().any(|c| matches!(c.child.try_wait(), Ok(None))) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.kill_all();
        if std::mem::take(&mut self.temporary) {
            match std::fs::remove_dir_all(&self.dir) {
                Ok(()) => eprintln!("removed {} (pass --dir to keep the files and logs)", self.dir.display()),
                Err(e) => eprintln!("could not remove {}: {e}", self.dir.display()),
            }
        }
    }

    fn kill_all(&mut self) {
        for c in &mut self.children {
            let _ = c.child.kill();
            let _ = c.child.wait();
        }
        self.children.clear();
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.kill_all();
        // Not stopped cleanly (a start failed): the logs explain why, so they stay, and we say where.
        if self.temporary {
            eprintln!(
                "the playground's files (logs, and its CA key) stay in {}; remove them when done",
                self.dir.display()
            );
        }
    }
}
