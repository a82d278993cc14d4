//! Network-namespace "pods" for `--placement netns`: a switch namespace holding a bridge, pods
//! joined to it by veth pairs (198.18.0.0/24, the benchmarking range, which exists only inside our
//! namespaces), each with `lo` up and a default route. Commands run in a pod with
//! `ip netns exec`, optionally under another UID (the proxies' 2102, which their iptables rules
//! exempt). Every namespace is deleted when the lab drops, and on Ctrl-C.

use std::process::{Command, Stdio};

use anyhow::{bail, Context};

use crate::procs::{forget_namespace, register_namespace, run_ok};

/// The switch's address; pod N is 198.18.0.N.
pub const SWITCH_IP: &str = "198.18.0.1";
/// The switch's IPv6 address in dual-stack labs; pod N is fd00:198:18::N (a unique local prefix,
/// inside our namespaces only).
pub const SWITCH_IP6: &str = "fd00:198:18::1";

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false)
}

/// Fails unless we are root and have the tools pods need.
pub fn require() -> anyhow::Result<()> {
    if !is_root() {
        bail!("--placement netns needs root (network namespaces, veth pairs, iptables)");
    }
    for tool in ["ip", "iptables", "setpriv"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            bail!("--placement netns needs `{tool}` (iproute2, iptables, util-linux)");
        }
    }
    Ok(())
}

/// The one network-namespace lab (the benchmark's pods and the tests' alike).
pub struct Lab {
    prefix: String,
    switch: String,
    namespaces: Vec<String>,
    v6_switch: bool,
}

impl Lab {
    pub fn new() -> anyhow::Result<Self> {
        Self::with_prefix(format!("wb{}", std::process::id() % 100_000))
    }

    /// A lab whose namespaces and links are named `PREFIX-…` (short: interface names are 15 bytes).
    pub fn with_prefix(prefix: String) -> anyhow::Result<Self> {
        require()?;
        let switch = format!("{prefix}-sw");
        let mut lab = Self { prefix, switch: switch.clone(), namespaces: vec![], v6_switch: false };
        lab.add_ns(&switch)?;
        // A fixed MAC: a bridge without one takes its lowest port's, so adding a pod could change
        // the switch's MAC under the pods' ARP caches.
        run_ok(Command::new("ip").args([
            "-n",
            &switch,
            "link",
            "add",
            "br0",
            "address",
            "02:00:c6:12:00:01",
            "type",
            "bridge",
        ]))?;
        run_ok(Command::new("ip").args(["-n", &switch, "addr", "add", &format!("{SWITCH_IP}/24"), "dev", "br0"]))?;
        run_ok(Command::new("ip").args(["-n", &switch, "link", "set", "br0", "up"]))?;
        Ok(lab)
    }

    pub fn switch(&self) -> &str {
        &self.switch
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn add_ns(&mut self, ns: &str) -> anyhow::Result<()> {
        let _ = Command::new("ip").args(["netns", "del", ns]).stderr(Stdio::null()).status();
        run_ok(Command::new("ip").args(["netns", "add", ns]))?;
        register_namespace(ns);
        self.namespaces.push(ns.to_string());
        run_ok(Command::new("ip").args(["-n", ns, "link", "set", "lo", "up"]))?;
        Ok(())
    }

    /// A pod at 198.18.0.`n` wired to the switch; returns its namespace.
    pub fn pod(&mut self, name: &str, n: u8) -> anyhow::Result<String> {
        let ns = format!("{}-{name}", self.prefix);
        self.add_ns(&ns)?;
        let (a, b) = (format!("{}p{n}", self.prefix), format!("{}s{n}", self.prefix));
        let ip = |args: &[&str]| run_ok(Command::new("ip").args(args)).with_context(|| format!("wiring pod {name}"));
        ip(&["link", "add", &a, "netns", &ns, "type", "veth", "peer", "name", &b, "netns", &self.switch])?;
        ip(&["-n", &self.switch, "link", "set", &b, "master", "br0"])?;
        ip(&["-n", &self.switch, "link", "set", &b, "up"])?;
        ip(&["-n", &ns, "addr", "add", &format!("198.18.0.{n}/24"), "dev", &a])?;
        ip(&["-n", &ns, "link", "set", &a, "up"])?;
        ip(&["-n", &ns, "route", "add", "default", "via", SWITCH_IP])?;
        Ok(ns)
    }

    /// Gives the switch and pod `ns` (made by [`Lab::pod`] as number `n`) IPv6 addresses too.
    pub fn dual_stack(&mut self, ns: &str, n: u8) -> anyhow::Result<()> {
        let ip = |args: &[&str]| run_ok(Command::new("ip").args(args)).with_context(|| format!("IPv6 for {ns}"));
        if !self.v6_switch {
            ip(&["-n", &self.switch, "addr", "add", &format!("{SWITCH_IP6}/64"), "dev", "br0", "nodad"])?;
            self.v6_switch = true;
        }
        let dev = format!("{}p{n}", self.prefix);
        ip(&["-n", ns, "addr", "add", &format!("fd00:198:18::{n}/64"), "dev", &dev, "nodad"])?;
        ip(&["-n", ns, "-6", "route", "add", "default", "via", SWITCH_IP6])?;
        Ok(())
    }
}

/// A command that runs `program` inside `ns` (the host's namespace for `None`), as `uid` if given.
pub fn command(ns: Option<&str>, uid: Option<u32>, program: &str) -> Command {
    let mut argv: Vec<String> = vec![];
    if let Some(ns) = ns {
        argv.extend(["ip", "netns", "exec", ns].map(String::from));
    }
    if let Some(uid) = uid {
        argv.extend([
            "setpriv".into(),
            format!("--reuid={uid}"),
            format!("--regid={uid}"),
            "--clear-groups".into(),
            "--".into(),
        ]);
    }
    argv.push(program.to_string());
    let mut c = Command::new(&argv[0]);
    c.args(&argv[1..]);
    c
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).stderr(Stdio::null()).status();
            forget_namespace(ns);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_enter_the_namespace_then_drop_privileges() {
        let c = command(Some("wb1-a"), Some(2102), "/bin/proxy");
        let args: Vec<_> =
            std::iter::once(c.get_program()).chain(c.get_args()).map(|s| s.to_string_lossy().into_owned()).collect();
        assert_eq!(
            args,
            [
                "ip",
                "netns",
                "exec",
                "wb1-a",
                "setpriv",
                "--reuid=2102",
                "--regid=2102",
                "--clear-groups",
                "--",
                "/bin/proxy"
            ]
        );
        let c = command(None, None, "/bin/proxy");
        assert_eq!(c.get_program(), "/bin/proxy");
        assert_eq!(c.get_args().count(), 0);
    }
}
