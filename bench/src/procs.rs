//! Child processes of the benchmark: finding binaries, starting them with their logs kept, and
//! making sure every one of them (and every network namespace) goes away — when its handle drops,
//! when the run fails, and on Ctrl-C or SIGTERM.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// Things to undo if the process is interrupted: child PIDs to kill, namespaces to delete.
#[derive(Default)]
struct Cleanup {
    pids: Vec<u32>,
    namespaces: Vec<String>,
}

fn cleanup() -> &'static Mutex<Cleanup> {
    static C: OnceLock<Mutex<Cleanup>> = OnceLock::new();
    C.get_or_init(Default::default)
}

pub(crate) fn register_namespace(ns: &str) {
    cleanup().lock().unwrap_or_else(|e| e.into_inner()).namespaces.push(ns.to_string());
}

pub(crate) fn forget_namespace(ns: &str) {
    cleanup().lock().unwrap_or_else(|e| e.into_inner()).namespaces.retain(|n| n != ns);
}

fn register_pid(pid: u32) {
    cleanup().lock().unwrap_or_else(|e| e.into_inner()).pids.push(pid);
}

fn forget_pid(pid: u32) {
    cleanup().lock().unwrap_or_else(|e| e.into_inner()).pids.retain(|p| *p != pid);
}

/// Kills every registered child and deletes every registered namespace (newest first).
pub fn cleanup_all() {
    let (pids, namespaces) = {
        let mut c = cleanup().lock().unwrap_or_else(|e| e.into_inner());
        (std::mem::take(&mut c.pids), std::mem::take(&mut c.namespaces))
    };
    for pid in pids.iter().rev() {
        let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).stderr(Stdio::null()).status();
    }
    for ns in namespaces.iter().rev() {
        let _ = Command::new("ip").args(["netns", "del", ns]).stderr(Stdio::null()).status();
    }
}

/// On SIGINT or SIGTERM: clean up, then exit 130. Runs on its own thread with its own runtime,
/// since the benchmark's main thread blocks on child processes.
pub fn install_interrupt_cleanup() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        std::thread::Builder::new()
            .name("bench-signals".into())
            .spawn(|| {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
                rt.block_on(async {
                    use tokio::signal::unix::{signal, SignalKind};
                    let (Ok(mut int), Ok(mut term)) =
                        (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
                    else {
                        return;
                    };
                    tokio::select! {
                        _ = int.recv() => {},
                        _ = term.recv() => {},
                    }
                    eprintln!("\nweft bench: interrupted; stopping every process and removing namespaces");
                    cleanup_all();
                    std::process::exit(130);
                });
            })
            .expect("signal thread");
    });
}

/// A binary beside our own executable (how the release build lays them out), else on PATH.
pub fn find_binary(name: &str) -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf)) {
        let p = dir.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    bail!(
        "`{name}` not found beside {} nor on PATH (build with `cargo build --release --workspace`)",
        self_exe_display()
    )
}

fn self_exe_display() -> String {
    std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_else(|_| "this executable".into())
}

/// This executable, re-run for the benchmark's own helper processes (load, backend, relay, stand-in).
pub fn self_exe() -> anyhow::Result<PathBuf> {
    std::env::current_exe().context("finding the benchmark's own executable")
}

/// A running child with its log file; killed when dropped.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    pub log: PathBuf,
}

impl Proc {
    /// Starts `cmd` with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> anyhow::Result<Self> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("log file {}", log.display()))?;
        let err = out.try_clone()?;
        cmd.stdout(Stdio::from(out)).stderr(Stdio::from(err)).stdin(Stdio::null());
        let child = cmd.spawn().with_context(|| format!("starting {name} ({cmd:?})"))?;
        register_pid(child.id());
        Ok(Self { name: name.to_string(), child: Some(child), log })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// The last `n` lines of the log, for error messages.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Fails if the process has exited (with its log tail).
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(c) = self.child.as_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                bail!("{} exited ({status}); last log lines:\n{}", self.name, self.log_tail(30));
            }
        }
        Ok(())
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            forget_pid(c.id());
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `check` until it succeeds or `timeout` passes, then fails with the last error.
pub fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() >= deadline => bail!("{what} not ready after {timeout:?}: {e:#}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Runs a command to completion and returns its stdout; fails with its stderr.
pub fn run_ok(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A port on 127.0.0.1 free at the time of asking and not handed out before by this process.
pub fn free_port() -> anyhow::Result<u16> {
    static USED: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    for _ in 0..100 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut used = USED.lock().unwrap_or_else(|e| e.into_inner());
        if !used.contains(&port) {
            used.push(port);
            return Ok(port);
        }
    }
    bail!("no free port on 127.0.0.1")
}
