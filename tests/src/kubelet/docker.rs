//! The Docker CLI, as the runner uses it: every call checked, every container labelled with its
//! test run so that nothing is left behind.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub fn docker(args: &[String]) -> Output {
    Command::new("docker").args(args).output().expect("the docker command")
}

/// Runs `docker ARGS` and returns stdout, or panics with its stderr.
pub fn ok(args: &[String]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// `docker inspect -f FORMAT NAME`.
pub fn inspect(name: &str, format: &str) -> Option<String> {
    let out = docker(&args(&["inspect", "-f", format, name]));
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

pub fn running(name: &str) -> bool {
    inspect(name, "{{.State.Running}}").as_deref() == Some("true")
}

pub fn exit_code(name: &str) -> Option<i64> {
    if running(name) {
        return None;
    }
    inspect(name, "{{.State.ExitCode}}").and_then(|c| c.parse().ok())
}

/// Waits for a container to exit; its code, or None on timeout.
pub fn wait_exit(name: &str, timeout: Duration) -> Option<i64> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(code) = exit_code(name) {
            return Some(code);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn logs(name: &str) -> String {
    let out = docker(&args(&["logs", "--tail", "80", name]));
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Removes every container and network carrying `label`.
pub fn remove_labelled(label: &str) {
    let filter = format!("label={label}");
    let ids = docker(&args(&["ps", "-aq", "--filter", &filter]));
    let ids: Vec<String> = String::from_utf8_lossy(&ids.stdout).split_whitespace().map(String::from).collect();
    if !ids.is_empty() {
        let mut rm = args(&["rm", "-f", "-v"]);
        rm.extend(ids);
        docker(&rm);
    }
}
