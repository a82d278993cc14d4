//! The topologies under test — the same client, backend and workload with nothing, a bare TLS
//! relay pair, or a pair of sidecars between them — and where they run: on loopback in explicit
//! mode, or in network-namespace pods with iptables interception. Each starts its processes,
//! proves the path answers end to end, and says which processes are the proxies to measure.

pub mod baseline;
pub mod envoy;
pub mod floor;
pub mod linkerd;
pub mod policy;
pub mod weft;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::pki::BenchPki;
use crate::procs::{free_port, wait_until, Proc};
use crate::resources::{self, Memory};

/// What sits between the client and the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    #[serde(rename = "baseline")]
    Baseline,
    #[serde(rename = "floor")]
    Floor,
    #[serde(rename = "weft")]
    Weft,
    #[serde(rename = "envoy")]
    Envoy,
    #[serde(rename = "linkerd2-proxy")]
    Linkerd,
}

impl Kind {
    pub const ALL: [Kind; 5] = [Kind::Baseline, Kind::Floor, Kind::Weft, Kind::Envoy, Kind::Linkerd];

    pub fn name(self) -> &'static str {
        match self {
            Self::Baseline => "baseline",
            Self::Floor => "floor",
            Self::Weft => "weft",
            Self::Envoy => "envoy",
            Self::Linkerd => "linkerd2-proxy",
        }
    }

    /// Short, for namespace names (interface names have 15 characters at most).
    pub fn short(self) -> &'static str {
        match self {
            Self::Baseline => "base",
            Self::Floor => "floor",
            Self::Weft => "weft",
            Self::Envoy => "envoy",
            Self::Linkerd => "l5d",
        }
    }

    pub fn parse(s: &str) -> anyhow::Result<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s || (s == "linkerd" && *k == Self::Linkerd) || (s == "none" && *k == Self::Baseline))
            .with_context(|| format!("unknown topology {s:?} (baseline, floor, weft, envoy, linkerd2-proxy)"))
    }

    pub fn has_proxies(self) -> bool {
        self != Self::Baseline
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Placement {
    /// Everything on 127.0.0.1, proxies in explicit mode (no root).
    Loopback,
    /// Client and server pods (network namespaces, veth, iptables interception; root).
    Netns,
}

/// The binaries a run needs.
#[derive(Debug, Clone)]
pub struct Tools {
    pub self_exe: PathBuf,
    pub weft_proxy: Option<PathBuf>,
    pub weft_controller: Option<PathBuf>,
    pub envoy: Option<PathBuf>,
    pub linkerd: Option<PathBuf>,
}

/// Where a topology's two sides live: on loopback, or in a client pod and a server pod.
#[derive(Debug, Clone)]
pub struct Site {
    /// The namespace holding the pods' bridge (where a control plane lives), in a netns placement.
    pub switch_ns: Option<String>,
    pub client_ns: Option<String>,
    pub server_ns: Option<String>,
    pub client_ip: Ipv4Addr,
    pub server_ip: Ipv4Addr,
}

impl Site {
    pub fn loopback() -> Self {
        Self {
            switch_ns: None,
            client_ns: None,
            server_ns: None,
            client_ip: Ipv4Addr::LOCALHOST,
            server_ip: Ipv4Addr::LOCALHOST,
        }
    }

    pub fn is_netns(&self) -> bool {
        self.server_ns.is_some()
    }

    /// A pod gives each role its well-known port; loopback hands out free ones.
    pub fn port(&self, well_known: u16) -> anyhow::Result<u16> {
        if self.is_netns() {
            Ok(well_known)
        } else {
            free_port()
        }
    }
}

/// Starts processes for a topology and checks they answer.
pub struct Launcher {
    pub logs: PathBuf,
    pub tools: Tools,
}

impl Launcher {
    /// Starts `program` (in `ns`, as `uid`) with its output in `logs/<name>.log`.
    pub fn spawn(
        &self,
        name: &str,
        ns: Option<&str>,
        uid: Option<u32>,
        program: &Path,
        args: &[String],
        env: &[(String, String)],
    ) -> anyhow::Result<Proc> {
        let mut cmd = crate::netns::command(ns, uid, &program.display().to_string());
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Proc::spawn(name, cmd, self.logs.join(format!("{name}.log")))
    }

    /// Runs this executable's `bench <args>` helper.
    pub fn spawn_self(&self, name: &str, ns: Option<&str>, args: &[String]) -> anyhow::Result<Proc> {
        let mut all = vec!["bench".to_string()];
        all.extend_from_slice(args);
        self.spawn(name, ns, None, &self.tools.self_exe, &all, &[])
    }

    /// Waits until `url` answers 2xx from inside `ns`, failing early (with logs) if one of `procs` dies.
    pub fn wait_ok(&self, ns: Option<&str>, url: &str, timeout: Duration, procs: &mut [Proc]) -> anyhow::Result<()> {
        let result = wait_until(url, timeout, || {
            for p in procs.iter_mut() {
                p.check_running()?;
            }
            match ns {
                None => crate::probe::check(url),
                Some(ns) => {
                    let out = crate::netns::command(Some(ns), None, &self.tools.self_exe.display().to_string())
                        .args(["bench", "probe", url])
                        .output()?;
                    if out.status.success() {
                        Ok(())
                    } else {
                        bail!("{}", String::from_utf8_lossy(&out.stderr).trim())
                    }
                }
            }
        });
        result.map_err(|e| {
            let logs: Vec<String> =
                procs.iter().map(|p| format!("--- {} ({})\n{}", p.name, p.log.display(), p.log_tail(15))).collect();
            anyhow::anyhow!("{e:#}\n{}", logs.join("\n"))
        })
    }

    /// The body of a 2xx answer to `url` from inside `ns`.
    pub fn fetch(&self, ns: Option<&str>, url: &str) -> anyhow::Result<String> {
        match ns {
            None => {
                let (status, body) = crate::probe::get(url, Duration::from_secs(5))?;
                if !(200..300).contains(&status) {
                    bail!("{url}: {status}");
                }
                Ok(body)
            }
            Some(ns) => {
                let out = crate::netns::command(Some(ns), None, &self.tools.self_exe.display().to_string())
                    .args(["bench", "probe", "--print", url])
                    .output()?;
                if !out.status.success() {
                    bail!("{url} in {ns}: {}", String::from_utf8_lossy(&out.stderr).trim());
                }
                Ok(String::from_utf8_lossy(&out.stdout).into_owned())
            }
        }
    }

    /// The built-in backend on the server side: `0.0.0.0:8080` in a pod, a free loopback port otherwise.
    pub fn backend(&self, kind: Kind, site: &Site, payload: usize) -> anyhow::Result<(Proc, SocketAddr)> {
        let port = site.port(8080)?;
        let listen = if site.is_netns() { format!("0.0.0.0:{port}") } else { format!("127.0.0.1:{port}") };
        let args = vec!["backend".into(), "--listen".into(), listen, "--payload".into(), payload.to_string()];
        let proc = self.spawn_self(&format!("{kind}-backend"), site.server_ns.as_deref(), &args)?;
        Ok((proc, SocketAddr::from((site.server_ip, port))))
    }
}

/// A proxy process whose cost is measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Measured {
    /// `client-side` or `server-side`.
    pub role: String,
    pub pid: u32,
    /// The process's command name, proving the real binary was measured (not a wrapper).
    pub comm: String,
    /// Memory after start-up and one request, before any load.
    pub idle: Memory,
}

/// A running topology.
pub struct Deployment {
    pub kind: Kind,
    /// Where the load generator connects.
    pub target: SocketAddr,
    /// Where the opaque TCP load connects, when not `target` (a proxy that needs a listener of its
    /// own for TCP, as Envoy does).
    pub tcp_target: Option<SocketAddr>,
    pub authority: String,
    /// Where the load generator runs (`None`: the host).
    pub load_ns: Option<String>,
    pub measured: Vec<Measured>,
    /// Versions and settings, for the report.
    pub info: BTreeMap<String, String>,
    pub procs: Vec<Proc>,
    /// The proxies to measure: a role and an index in `procs`.
    pub roles: Vec<(&'static str, usize)>,
    /// How to prove the proxies used mutual TLS for the test request.
    pub mtls_check: Option<MtlsCheck>,
}

/// A metrics or stats page that, after a request crossed the pair, must have a line holding every
/// one of `line_has` (e.g. the server side counting a request with `tls="true"` and the client's
/// identity). A pair that silently fell back to plaintext would fail the run here.
#[derive(Debug, Clone)]
pub struct MtlsCheck {
    pub ns: Option<String>,
    pub url: String,
    pub line_has: Vec<String>,
}

impl MtlsCheck {
    /// Retried for a few seconds: counters may lag the request a little, and an admin server may
    /// drop a connection now and then.
    pub fn verify(&self, launcher: &Launcher) -> anyhow::Result<()> {
        wait_until(&self.url, Duration::from_secs(10), || {
            let text = launcher.fetch(self.ns.as_deref(), &self.url)?;
            if text.lines().any(|l| self.line_has.iter().all(|s| l.contains(s.as_str()))) {
                return Ok(());
            }
            let tls_lines: Vec<&str> =
                text.lines().filter(|l| l.contains("tls") || l.contains("ssl")).take(40).collect();
            bail!("no line has all of {:?}; TLS-related lines:\n{}", self.line_has, tls_lines.join("\n"))
        })
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        // Proxies were started last: stop them first, before their control plane and backend.
        for p in self.procs.iter_mut().rev() {
            p.kill();
        }
    }
}

impl Deployment {
    /// Records the idle memory of the proxies named in `roles`.
    fn measure_idle(&mut self) -> anyhow::Result<()> {
        // Let start-up allocations and the first request settle before calling it idle.
        std::thread::sleep(Duration::from_millis(1000));
        for (role, i) in self.roles.clone() {
            let pid = self.procs[i].pid();
            let idle = resources::memory(pid).with_context(|| format!("{} {role}", self.kind))?;
            self.measured.push(Measured { role: role.to_string(), pid, comm: resources::comm(pid), idle });
        }
        Ok(())
    }

    pub fn check_running(&mut self) -> anyhow::Result<()> {
        for p in &mut self.procs {
            p.check_running().with_context(|| format!("{} topology", self.kind))?;
        }
        Ok(())
    }
}

/// What every topology's start function receives.
pub struct Setup<'a> {
    pub kind: Kind,
    pub site: Site,
    pub launcher: &'a Launcher,
    pub pki: &'a BenchPki,
    pub dir: PathBuf,
    pub payload: usize,
    /// Distinguishes this run's Envoy instances from any other on the host.
    pub base_id: u32,
}

/// Starts `setup.kind` and checks that a request crosses it.
pub fn start(setup: &Setup<'_>) -> anyhow::Result<Deployment> {
    std::fs::create_dir_all(&setup.dir)?;
    let mut d = match setup.kind {
        Kind::Baseline => baseline::start(setup),
        Kind::Floor => floor::start(setup),
        Kind::Weft => weft::start(setup),
        Kind::Envoy => envoy::start(setup),
        Kind::Linkerd => linkerd::start(setup),
    }
    .with_context(|| format!("starting the {} topology", setup.kind))?;
    let url = format!("http://{}/", d.target);
    setup
        .launcher
        .wait_ok(d.load_ns.as_deref(), &url, Duration::from_secs(30), &mut d.procs)
        .with_context(|| format!("{}: no answer through the topology", setup.kind))?;
    if let Some(check) = d.mtls_check.clone() {
        check
            .verify(setup.launcher)
            .with_context(|| format!("{}: mutual TLS between the proxies not confirmed", setup.kind))?;
        d.info.insert("mtls_verified".into(), format!("{} has a line with {:?}", check.url, check.line_has));
    }
    d.info.insert("placement".into(), if setup.site.is_netns() { "netns" } else { "loopback" }.into());
    d.measure_idle()?;
    Ok(d)
}

/// The first line of `program --version`-like output that mentions `needle`.
pub fn version_line(program: &Path, args: &[&str], needle: &str) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .map(|o| {
            let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
            text.lines().find(|l| l.contains(needle)).unwrap_or_default().trim().to_string()
        })
        .unwrap_or_default()
}
