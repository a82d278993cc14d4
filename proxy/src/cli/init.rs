//! `weft-proxy init`: installs the nat rules that send a network namespace's TCP through the proxy
//! (what a Kubernetes init container does for a pod). Inbound `PREROUTING` goes to the inbound
//! port except the admin port and skipped ports; outbound `OUTPUT` goes to the outbound port
//! except the proxy's own UID and GID, loopback, skipped ports and skipped subnets. The rules live
//! in our own chains, flushed and refilled, so running it again is harmless; IPv4 and IPv6 alike,
//! so strict mTLS cannot be bypassed over IPv6. It refuses to touch the machine's initial network
//! namespace (a mistake there would redirect the machine's own traffic) unless `--force`.

use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::process::{Command, ExitCode};

use clap::Args;

pub const INBOUND_CHAIN: &str = "WEFT_INBOUND";
pub const OUTBOUND_CHAIN: &str = "WEFT_OUTBOUND";
/// The inode of the kernel's initial network namespace (init_net).
const INIT_NET_INODE: u64 = 4026531833;

#[derive(Args, Debug, Clone)]
pub struct InitArgs {
    #[arg(long, env = "WEFT_PROXY_UID", default_value_t = 2102)]
    pub proxy_uid: u32,
    #[arg(long, env = "WEFT_PROXY_GID", default_value_t = 2102)]
    pub proxy_gid: u32,
    #[arg(long, env = "WEFT_PROXY_INBOUND_PORT", default_value_t = 4143)]
    pub inbound_port: u16,
    #[arg(long, env = "WEFT_PROXY_OUTBOUND_PORT", default_value_t = 4140)]
    pub outbound_port: u16,
    #[arg(long, env = "WEFT_PROXY_ADMIN_PORT", default_value_t = 4191)]
    pub admin_port: u16,
    /// Inbound ports not redirected (comma-separated).
    #[arg(long, env = "WEFT_PROXY_SKIP_INBOUND_PORTS", value_delimiter = ',')]
    pub skip_inbound_ports: Vec<u16>,
    /// Outbound destination ports not redirected (comma-separated).
    #[arg(long, env = "WEFT_PROXY_SKIP_OUTBOUND_PORTS", value_delimiter = ',')]
    pub skip_outbound_ports: Vec<u16>,
    /// Destination subnets not redirected (CIDRs, IPv4 or IPv6, comma-separated).
    #[arg(long, env = "WEFT_PROXY_SKIP_SUBNETS", value_delimiter = ',')]
    pub skip_subnets: Vec<String>,
    /// Remove the rules instead.
    #[arg(long)]
    pub uninstall: bool,
    /// Print the commands without running them.
    #[arg(long)]
    pub dry_run: bool,
    /// Allow the machine's initial network namespace.
    #[arg(long)]
    pub force: bool,
    /// Install IPv4 rules only, even though this namespace has IPv6 (whose traffic would then
    /// bypass the proxy: strict mTLS included).
    #[arg(long, env = "WEFT_PROXY_IPV4_ONLY")]
    pub ipv4_only: bool,
    /// Which iptables backend: auto (the one already holding rules, else the system default), nft
    /// or legacy.
    #[arg(long, env = "WEFT_PROXY_IPTABLES_MODE", default_value = "auto")]
    pub iptables_mode: String,
}

/// IPv4 or IPv6.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

/// A CIDR for `--skip-subnets`, checked.
fn parse_cidr(s: &str) -> Result<(IpAddr, u8), String> {
    let (ip, len) = s.split_once('/').unwrap_or((s, ""));
    let ip: IpAddr = ip.trim().parse().map_err(|_| format!("{s:?} is not a CIDR"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = if len.is_empty() { max } else { len.parse().map_err(|_| format!("{s:?} is not a CIDR"))? };
    if len > max {
        return Err(format!("{s:?}: prefix longer than {max}"));
    }
    Ok((ip, len))
}

/// The rules for one family, as iptables argument lists (without the binary and `-w`).
pub fn rules(args: &InitArgs, family: Family) -> Result<Vec<Vec<String>>, String> {
    let mut r: Vec<Vec<String>> = Vec::new();
    let mut add = |parts: &[&str]| r.push(parts.iter().map(|s| s.to_string()).collect());
    let (inb, outb) = (args.inbound_port.to_string(), args.outbound_port.to_string());
    // Inbound: everything to the inbound port, but the admin port (probes reach it directly).
    add(&["-t", "nat", "-A", INBOUND_CHAIN, "-p", "tcp", "--dport", &args.admin_port.to_string(), "-j", "RETURN"]);
    for p in &args.skip_inbound_ports {
        add(&["-t", "nat", "-A", INBOUND_CHAIN, "-p", "tcp", "--dport", &p.to_string(), "-j", "RETURN"]);
    }
    add(&["-t", "nat", "-A", INBOUND_CHAIN, "-p", "tcp", "-j", "REDIRECT", "--to-ports", &inb]);
    // Outbound: the proxy's own traffic and loopback leave as they are.
    add(&[
        "-t",
        "nat",
        "-A",
        OUTBOUND_CHAIN,
        "-m",
        "owner",
        "--uid-owner",
        &args.proxy_uid.to_string(),
        "-j",
        "RETURN",
    ]);
    add(&[
        "-t",
        "nat",
        "-A",
        OUTBOUND_CHAIN,
        "-m",
        "owner",
        "--gid-owner",
        &args.proxy_gid.to_string(),
        "-j",
        "RETURN",
    ]);
    add(&["-t", "nat", "-A", OUTBOUND_CHAIN, "-o", "lo", "-j", "RETURN"]);
    let loopback = if family == Family::V4 { "127.0.0.0/8" } else { "::1/128" };
    add(&["-t", "nat", "-A", OUTBOUND_CHAIN, "-d", loopback, "-j", "RETURN"]);
    for p in &args.skip_outbound_ports {
        add(&["-t", "nat", "-A", OUTBOUND_CHAIN, "-p", "tcp", "--dport", &p.to_string(), "-j", "RETURN"]);
    }
    for s in &args.skip_subnets {
        let (ip, len) = parse_cidr(s)?;
        if ip.is_ipv4() == (family == Family::V4) {
            add(&["-t", "nat", "-A", OUTBOUND_CHAIN, "-d", &format!("{ip}/{len}"), "-j", "RETURN"]);
        }
    }
    add(&["-t", "nat", "-A", OUTBOUND_CHAIN, "-p", "tcp", "-j", "REDIRECT", "--to-ports", &outb]);
    Ok(r)
}

/// The jumps from the built-in chains into ours.
fn jumps() -> [[&'static str; 8]; 2] {
    [
        ["-t", "nat", "PREROUTING", "-p", "tcp", "-j", INBOUND_CHAIN, ""],
        ["-t", "nat", "OUTPUT", "-p", "tcp", "-j", OUTBOUND_CHAIN, ""],
    ]
}

fn jump_args(op: &str, j: &[&str; 8]) -> Vec<String> {
    let mut v = vec![j[0].to_string(), j[1].to_string(), op.to_string()];
    v.extend(j[2..7].iter().map(|s| s.to_string()));
    v
}

/// Whether this process is in the machine's initial network namespace.
pub fn in_initial_netns() -> Result<bool, String> {
    let ours = std::fs::metadata("/proc/self/ns/net").map_err(|e| format!("reading /proc/self/ns/net: {e}"))?.ino();
    if std::process::id() != 1 {
        if let Ok(init) = std::fs::metadata("/proc/1/ns/net") {
            return Ok(init.ino() == ours);
        }
    }
    Ok(ours == INIT_NET_INODE)
}

/// The iptables binaries to use for IPv4 and IPv6. `look`: whether existing rules may be looked
/// at to pick the backend (not in a dry run: even reading the legacy `nat` table creates it).
fn backend(mode: &str, look: bool) -> Result<(String, Option<String>), String> {
    let have = |b: &str| which(b).is_some();
    let pick = |suffix: &str| -> (String, Option<String>) {
        let v4 = format!("iptables{suffix}");
        let v6 = format!("ip6tables{suffix}");
        let v6 = have(&v6).then_some(v6);
        (v4, v6)
    };
    match mode {
        "nft" | "legacy" => {
            if !have(&format!("iptables-{mode}")) {
                return Err(format!("--iptables-mode {mode}: iptables-{mode} is not installed"));
            }
            Ok(pick(&format!("-{mode}")))
        }
        "auto" => {
            // The backend that already holds rules in this namespace wins (both are visible to
            // the kernel, and mixing them confuses everyone); else the system's default.
            let count = |save: &str| -> usize {
                Command::new(save)
                    .args(["-t", "nat"])
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).lines().filter(|l| l.starts_with("-A")).count())
                    .unwrap_or(0)
            };
            if look && have("iptables-legacy") && have("iptables-nft") {
                let (legacy, nft) = (count("iptables-legacy-save"), count("iptables-nft-save"));
                if legacy > nft {
                    return Ok(pick("-legacy"));
                }
                if nft > legacy {
                    return Ok(pick("-nft"));
                }
            }
            if !have("iptables") {
                return Err("iptables is not installed".into());
            }
            Ok(pick(""))
        }
        other => Err(format!("--iptables-mode {other:?}: expected auto, nft or legacy")),
    }
}

/// Where `bin` is on PATH (as the commands are run by name, they are found the same way).
fn which(bin: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_else(|| vec!["/usr/sbin".into(), "/usr/bin".into(), "/sbin".into(), "/bin".into()])
        .into_iter()
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
}

fn ipv6_enabled() -> bool {
    std::path::Path::new("/proc/net/if_inet6").exists()
        && std::fs::read_to_string("/proc/sys/net/ipv6/conf/all/disable_ipv6").map(|s| s.trim() != "1").unwrap_or(true)
}

struct Runner {
    dry_run: bool,
}

impl Runner {
    /// Runs `bin -w args…`; returns whether it succeeded (dry run: prints and succeeds).
    fn run(&self, bin: &str, args: &[String], quiet: bool) -> Result<bool, String> {
        if self.dry_run {
            if !quiet {
                println!("{bin} -w {}", args.join(" "));
            }
            return Ok(true);
        }
        let out = Command::new(bin).arg("-w").args(args).output().map_err(|e| format!("running {bin}: {e}"))?;
        if !out.status.success() && !quiet {
            return Err(format!("{bin} -w {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(out.status.success())
    }

    fn chain_exists(&self, bin: &str, chain: &str) -> bool {
        !self.dry_run
            && self
                .run(bin, &["-t".into(), "nat".into(), "-L".into(), chain.into(), "-n".into()], true)
                .unwrap_or(false)
    }

    fn install(&self, bin: &str, args: &InitArgs, family: Family) -> Result<(), String> {
        let rules = rules(args, family)?;
        for chain in [INBOUND_CHAIN, OUTBOUND_CHAIN] {
            if !self.chain_exists(bin, chain) {
                self.run(bin, &["-t".into(), "nat".into(), "-N".into(), chain.into()], false)?;
            }
            self.run(bin, &["-t".into(), "nat".into(), "-F".into(), chain.into()], false)?;
        }
        for r in &rules {
            self.run(bin, r, false)?;
        }
        for j in &jumps() {
            let present = !self.dry_run && self.run(bin, &jump_args("-C", j), true)?;
            if !present {
                self.run(bin, &jump_args("-A", j), false)?;
            }
        }
        Ok(())
    }

    fn uninstall(&self, bin: &str) -> Result<(), String> {
        for j in &jumps() {
            if self.dry_run {
                self.run(bin, &jump_args("-D", j), false)?;
                continue;
            }
            // Every copy, in case something added it twice.
            for _ in 0..32 {
                if !self.run(bin, &jump_args("-D", j), true)? {
                    break;
                }
            }
        }
        for chain in [INBOUND_CHAIN, OUTBOUND_CHAIN] {
            if self.dry_run || self.chain_exists(bin, chain) {
                self.run(bin, &["-t".into(), "nat".into(), "-F".into(), chain.into()], false)?;
                self.run(bin, &["-t".into(), "nat".into(), "-X".into(), chain.into()], false)?;
            }
        }
        Ok(())
    }
}

pub fn main(args: InitArgs) -> ExitCode {
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weft-proxy init: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &InitArgs) -> Result<(), String> {
    for s in &args.skip_subnets {
        parse_cidr(s)?;
    }
    if !args.dry_run && !args.force && in_initial_netns()? {
        return Err("refusing to change the machine's initial network namespace: its own traffic would be \
                    redirected. Run this inside the pod's (or a test's) network namespace, or pass --force."
            .into());
    }
    let (v4, v6) = backend(&args.iptables_mode, !args.dry_run)?;
    let runner = Runner { dry_run: args.dry_run };
    let mut families = vec![(v4.clone(), Family::V4)];
    match (v6, ipv6_enabled(), args.ipv4_only) {
        (_, _, true) => eprintln!("weft-proxy init: --ipv4-only: IPv6 traffic is not intercepted"),
        (Some(v6), true, false) => families.push((v6, Family::V6)),
        (Some(v6), false, false) if args.dry_run || args.uninstall => families.push((v6, Family::V6)),
        (_, false, false) => eprintln!("weft-proxy init: IPv6 is disabled here; installing IPv4 rules only"),
        (None, true, false) => {
            return Err("this namespace has IPv6 but there is no ip6tables for this backend: IPv6 traffic would \
                        bypass the proxy (and strict mTLS). Install ip6tables, or pass --ipv4-only to accept that."
                .into())
        }
    }
    for (bin, family) in families {
        if args.uninstall {
            runner.uninstall(&bin)?;
        } else {
            runner.install(&bin, args, family)?;
        }
        if !args.dry_run {
            eprintln!(
                "weft-proxy init: {} {family:?} rules with {bin}",
                if args.uninstall { "removed" } else { "installed" }
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: InitArgs,
    }

    fn args(extra: &[&str]) -> InitArgs {
        T::parse_from(std::iter::once("init").chain(extra.iter().copied())).a
    }

    #[test]
    fn inbound_rules_skip_the_admin_port_then_redirect() {
        let r = rules(&args(&["--skip-inbound-ports", "22,9090"]), Family::V4).unwrap();
        let text: Vec<String> = r.iter().map(|a| a.join(" ")).collect();
        assert_eq!(text[0], "-t nat -A WEFT_INBOUND -p tcp --dport 4191 -j RETURN");
        assert!(text.contains(&"-t nat -A WEFT_INBOUND -p tcp --dport 22 -j RETURN".to_string()));
        assert!(text.contains(&"-t nat -A WEFT_INBOUND -p tcp -j REDIRECT --to-ports 4143".to_string()));
        let redirect = text.iter().position(|t| t.contains("WEFT_INBOUND -p tcp -j REDIRECT")).unwrap();
        assert!(text.iter().take(redirect).all(|t| t.contains("RETURN")), "exemptions come first");
    }

    #[test]
    fn outbound_rules_exempt_the_proxy_loopback_and_skips() {
        let a = args(&["--skip-outbound-ports", "5432", "--skip-subnets", "10.0.0.0/8,fd00::/8", "--proxy-uid", "7"]);
        let v4: Vec<String> = rules(&a, Family::V4).unwrap().iter().map(|a| a.join(" ")).collect();
        assert!(v4.contains(&"-t nat -A WEFT_OUTBOUND -m owner --uid-owner 7 -j RETURN".to_string()));
        assert!(v4.contains(&"-t nat -A WEFT_OUTBOUND -m owner --gid-owner 2102 -j RETURN".to_string()));
        assert!(v4.contains(&"-t nat -A WEFT_OUTBOUND -o lo -j RETURN".to_string()));
        assert!(v4.contains(&"-t nat -A WEFT_OUTBOUND -d 10.0.0.0/8 -j RETURN".to_string()));
        assert!(!v4.iter().any(|t| t.contains("fd00")), "IPv6 subnets only in IPv6 rules");
        assert_eq!(v4.last().unwrap(), "-t nat -A WEFT_OUTBOUND -p tcp -j REDIRECT --to-ports 4140");
        let v6: Vec<String> = rules(&a, Family::V6).unwrap().iter().map(|a| a.join(" ")).collect();
        assert!(v6.contains(&"-t nat -A WEFT_OUTBOUND -d ::1/128 -j RETURN".to_string()));
        assert!(v6.contains(&"-t nat -A WEFT_OUTBOUND -d fd00::/8 -j RETURN".to_string()));
    }

    #[test]
    fn bad_subnets_are_refused() {
        assert!(rules(&args(&["--skip-subnets", "10.0.0.0/33"]), Family::V4).is_err());
        assert!(rules(&args(&["--skip-subnets", "nonsense"]), Family::V4).is_err());
    }
}
