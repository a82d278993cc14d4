//! One real `weft-proxy` in the big mesh, calling a handful of services: what it holds is what it
//! subscribes to, so its memory must not grow with the number of services in the mesh.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::pki::BenchPki;
use crate::procs::Proc;
use crate::resources::memory;

/// Its service: one no simulated proxy calls, so its registration changes nothing they hold.
const SERVICE: &str = "bench-real-proxy";
const READY_TIMEOUT: Duration = Duration::from_secs(60);

pub struct RealProxy {
    proc: Proc,
}

impl RealProxy {
    /// Starts the proxy against the controller at `controller` (its gRPC address), calling
    /// `upstreams` (`NS/NAME`), and waits until it is ready: it holds its own policy and its
    /// upstreams'.
    pub async fn start(
        binary: &Path,
        pki: &BenchPki,
        controller: SocketAddr,
        upstreams: &[String],
        log_dir: &Path,
    ) -> anyhow::Result<Self> {
        let token = pki.join_token(SERVICE)?;
        let port = crate::procs::free_port;
        let (inbound, admin) = (port()?, port()?);
        let mut cmd = Command::new(binary);
        cmd.args(["--controller", &format!("https://{controller}")])
            .arg("--trust-anchor")
            .arg(pki.ca_cert())
            .arg("--token-file")
            .arg(&token)
            .args(["--service", SERVICE, "--instance", SERVICE, "--workers", "1", "--log-level", "warn"])
            .args(["--app", "127.0.0.1:9"])
            .args(["--inbound", &format!("127.0.0.1:{inbound}"), "--admin", &format!("127.0.0.1:{admin}")]);
        for u in upstreams {
            cmd.args(["--upstream", &format!("{u}=127.0.0.1:{}", port()?)]);
        }
        let mut proc = Proc::spawn("weft-proxy", cmd, log_dir.join("real-proxy.log"))?;
        super::controller::wait_ready(&mut proc, &format!("http://127.0.0.1:{admin}/ready"), READY_TIMEOUT).await?;
        Ok(Self { proc })
    }

    /// Its VmRSS now, in bytes.
    pub fn rss_bytes(&self) -> u64 {
        memory(self.proc.pid()).map(|m| m.vm_rss_kb * 1024).unwrap_or(0)
    }
}
