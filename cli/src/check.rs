//! `weft check`: the install's health as a list of checks, each `ok`, `warn` or `fail` with a hint
//! (as `linkerd check` does), against a controller's admin address: live and ready, the trust
//! anchor's expiry, the config in force (an edit rejected or not) and the policy findings, the
//! proxies connected, their certificates' expiry and any NACK. The exit code is 0 only when no
//! check failed. The verdicts are computed from what was read, without I/O, in [`evaluate`].
//! With a kubeconfig (`--kubeconfig`, or `$KUBECONFIG`) the install is checked in the cluster too
//! ([`crate::kubernetes::cluster_check`]): CRDs, webhook, replicas; the trust anchor is then the
//! one the install distributes unless one is given.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;

#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// The controller's admin address.
    #[arg(long, env = "WEFT_CONTROLLER_ADMIN", default_value = "http://127.0.0.1:7071")]
    pub controller_admin: String,
    /// The trust anchor (the CA certificate proxies trust); or give --ca-dir.
    #[arg(long)]
    pub trust_anchor: Option<PathBuf>,
    /// The CA folder (`weft ca init`): its ca.crt is the trust anchor.
    #[arg(long)]
    pub ca_dir: Option<PathBuf>,
    /// Warn when the trust anchor expires within this long.
    #[arg(long, default_value = "30d")]
    pub anchor_warn_within: String,
    /// A kubeconfig: check the install in that cluster too (CRDs, webhook, controller replicas).
    /// `$KUBECONFIG` may list several files, separated by `:`.
    #[arg(long, env = "KUBECONFIG", value_name = "FILE")]
    pub kubeconfig: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    Warn,
    Fail,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    pub verdict: Verdict,
    pub check: &'static str,
    pub detail: String,
    /// What to do about it (empty when ok).
    pub hint: String,
}

/// What `weft check` read.
#[derive(Debug)]
pub struct Observed {
    pub admin: String,
    /// `/live`: the status, or why it could not be read.
    pub live: Result<u16, String>,
    pub ready: Option<u16>,
    pub state: Option<Value>,
    /// The anchor's `notAfter` (Unix seconds), or why it could not be read; None: not given.
    pub anchor_not_after: Option<Result<i64, String>>,
    pub now_ms: i64,
    pub anchor_warn_within: Duration,
}

fn line(verdict: Verdict, check: &'static str, detail: impl Into<String>, hint: impl Into<String>) -> Line {
    Line { verdict, check, detail: detail.into(), hint: hint.into() }
}

fn human(ms: i64) -> String {
    let s = ms.unsigned_abs() / 1000;
    match s {
        s if s >= 86400 => format!("{}d{}h", s / 86400, s % 86400 / 3600),
        s if s >= 3600 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        s if s >= 60 => format!("{}m{}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

/// The checks, from what was read.
pub fn evaluate(o: &Observed) -> Vec<Line> {
    use Verdict::{Fail, Warn};
    let mut out = Vec::new();
    match &o.live {
        Ok(200) => out.push(line(Verdict::Ok, "controller is live", format!("{}/live answered 200", o.admin), "")),
        Ok(code) => {
            out.push(line(Fail, "controller is live", format!("/live answered {code}"), "see the controller's log"))
        }
        Err(e) => {
            out.push(line(
                Fail,
                "controller is live",
                e.clone(),
                "is weft-controller running? --controller-admin says where its admin address is",
            ));
        }
    }
    match o.ready {
        Some(200) => out.push(line(Verdict::Ok, "controller is ready", "/ready answered 200", "")),
        Some(code) => out.push(line(
            Fail,
            "controller is ready",
            format!("/ready answered {code}"),
            "in Kubernetes mode a replica is ready once it has listed the cluster: check its access to the API server",
        )),
        None => {}
    }
    match &o.anchor_not_after {
        None => out.push(line(Warn, "trust anchor expiry", "not checked", "give --trust-anchor FILE or --ca-dir DIR")),
        Some(Err(e)) => {
            out.push(line(Fail, "trust anchor expiry", e.clone(), "give the CA certificate (PEM) proxies trust"))
        }
        Some(Result::Ok(not_after)) => {
            let left = not_after * 1000 - o.now_ms;
            if left <= 0 {
                out.push(line(
                    Fail,
                    "trust anchor expiry",
                    format!("expired {} ago", human(left)),
                    "no certificate it signs is valid: make a new CA (weft ca init) and roll it out",
                ));
            } else if left < o.anchor_warn_within.as_millis() as i64 {
                out.push(line(
                    Warn,
                    "trust anchor expiry",
                    format!("expires in {}", human(left)),
                    "roll the CA before then: add the new anchor to the bundle first",
                ));
            } else {
                out.push(line(Verdict::Ok, "trust anchor expiry", format!("valid for {}", human(left)), ""));
            }
        }
    }
    let Some(state) = &o.state else {
        if o.live.is_ok() {
            out.push(line(
                Fail,
                "controller state",
                "/api/v1/state could not be read",
                "it is served to loopback only unless --admin-open: run weft check where the controller runs",
            ));
        }
        return out;
    };
    match state["config"]["rejected"].as_array() {
        Some(problems) => out.push(line(
            Fail,
            "mesh config",
            format!(
                "the latest edit was rejected ({} problems: {}); the last good config is in force",
                problems.len(),
                problems.iter().filter_map(Value::as_str).take(3).collect::<Vec<_>>().join("; ")
            ),
            "fix the mesh file (or the weft-mesh ConfigMap); weft_config_rejected_total counts rejections",
        )),
        None => out.push(line(
            Verdict::Ok,
            "mesh config",
            format!("version {} in force, no rejected edit", state["config_version"]),
            "",
        )),
    }
    // `combined` findings (the mesh file's allow and TrafficTargets both granted) are what the
    // documented precedence says; they are counted, not warned about.
    let all = state["policy_findings"].as_array().cloned().unwrap_or_default();
    let notes = all.iter().filter(|x| x["kind"] == "combined").count();
    let issues: Vec<Value> = all.into_iter().filter(|x| x["kind"] != "combined").collect();
    match Some(issues).filter(|f| !f.is_empty()) {
        Some(f) => {
            let invalid = f.iter().filter(|x| x["kind"] == "invalid").count();
            let first = f
                .iter()
                .take(3)
                .map(|x| format!("{}: {}", x["source"].as_str().unwrap_or(""), x["message"].as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join("; ");
            out.push(line(
                if invalid > 0 { Fail } else { Warn },
                "traffic policy",
                format!("{} findings ({invalid} invalid): {first}", f.len()),
                "see policy_findings in /api/v1/state (weft status --json)",
            ));
        }
        None if notes > 0 => out.push(line(
            Verdict::Ok,
            "traffic policy",
            format!("no conflicts, nothing left out ({notes} allow lists combined with TrafficTargets)"),
            "",
        )),
        None => out.push(line(Verdict::Ok, "traffic policy", "no conflicts, nothing left out", "")),
    }
    let proxies = state["proxies"].as_array().cloned().unwrap_or_default();
    if proxies.is_empty() {
        out.push(line(Warn, "proxies connected", "none", "no proxy is connected to this controller (yet)"));
    } else {
        out.push(line(Verdict::Ok, "proxies connected", format!("{}", proxies.len()), ""));
    }
    let mut expired = Vec::new();
    let mut soon = Vec::new();
    let mut nacked = Vec::new();
    for p in &proxies {
        let name = format!("{}/{}", p["namespace"].as_str().unwrap_or(""), p["instance"].as_str().unwrap_or(""));
        let left = p["cert_expires_at_unix_ms"].as_i64().unwrap_or(0) - o.now_ms;
        if left <= 0 {
            expired.push(name.clone());
        } else if left < 3_600_000 {
            soon.push(format!("{name} in {}", human(left)));
        }
        if p["nacked"].as_object().is_some_and(|n| !n.is_empty()) {
            nacked.push(format!("{name} ({})", p["nacked"]));
        }
    }
    if !proxies.is_empty() {
        out.push(match (expired.is_empty(), soon.is_empty()) {
            (false, _) => line(
                Fail,
                "proxy certificates",
                format!("expired: {}", expired.join(", ")),
                "their renewals fail: see the proxies' logs",
            ),
            (true, false) => line(
                Warn,
                "proxy certificates",
                format!("expiring within an hour: {}", soon.join(", ")),
                "renewals happen at half-life; one this close to expiry is late",
            ),
            (true, true) => line(Verdict::Ok, "proxy certificates", "all valid for more than an hour", ""),
        });
        out.push(if nacked.is_empty() {
            line(Verdict::Ok, "proxy config", "every proxy ACKed what it was sent", "")
        } else {
            line(
                Warn,
                "proxy config",
                format!("NACKed: {}", nacked.join(", ")),
                "the proxies keep their last good config; see their logs",
            )
        });
    }
    out
}

/// Prints the lines; true when none failed.
pub fn render(lines: &[Line]) -> (String, bool) {
    let mut s = String::new();
    for l in lines {
        let tag = match l.verdict {
            Verdict::Ok => "ok  ",
            Verdict::Warn => "warn",
            Verdict::Fail => "FAIL",
        };
        s.push_str(&format!("{tag}  {:<20} {}\n", l.check, l.detail));
        if !l.hint.is_empty() && l.verdict != Verdict::Ok {
            s.push_str(&format!("      {:<20} hint: {}\n", "", l.hint));
        }
    }
    let count = |v| lines.iter().filter(|l| l.verdict == v).count();
    let (fails, warns) = (count(Verdict::Fail), count(Verdict::Warn));
    s.push_str(&format!("{} ok, {warns} warnings, {fails} failed\n", count(Verdict::Ok)));
    (s, fails == 0)
}

/// The latest `notAfter` of a PEM bundle (a bundle expires with its last anchor).
fn not_after(pem: &[u8], what: &str) -> Result<i64, String> {
    let certs = weft_certs::pem::certs(pem).map_err(|e| format!("{what}: {e}"))?;
    certs
        .iter()
        .filter_map(|c| weft_certs::x509::not_after_unix(c).ok())
        .max()
        .ok_or_else(|| format!("{what}: no certificate"))
}

fn anchor(args: &CheckArgs) -> Option<Result<i64, String>> {
    let path = args.trust_anchor.clone().or_else(|| args.ca_dir.as_ref().map(|d| d.join("ca.crt")))?;
    Some(
        std::fs::read(&path)
            .map_err(|e| format!("{}: {e}", path.display()))
            .and_then(|pem| not_after(&pem, &path.display().to_string())),
    )
}

/// The cluster's checks, and the anchor the install distributes when none was given.
async fn cluster(kubeconfig: &str, anchor_given: bool) -> (Vec<Line>, Option<Result<i64, String>>) {
    use crate::kubernetes::cluster_check;
    let client = match cluster_check::client(kubeconfig).await {
        Ok(c) => c,
        Err(e) => {
            let hint = "give a readable kubeconfig with --kubeconfig (or $KUBECONFIG)";
            return (vec![line(Verdict::Fail, "kubeconfig", e, hint)], None);
        }
    };
    let pem = cluster_check::trust_anchor(&client).await;
    let lines = cluster_check::evaluate(&cluster_check::observe(&client, pem.as_deref().ok()).await);
    let anchor = if anchor_given {
        None
    } else {
        Some(pem.and_then(|pem| {
            not_after(&pem, &format!("ConfigMap weft-system/{}", weft_inject::install::TRUST_ANCHOR_CONFIGMAP))
        }))
    };
    (lines, anchor)
}

pub fn main(args: CheckArgs) -> ExitCode {
    let warn_within = match weft_proto::duration::parse_duration(&args.anchor_warn_within) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("weft check: --anchor-warn-within: {e}");
            return ExitCode::from(2);
        }
    };
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
        return ExitCode::FAILURE;
    };
    let admin = args.controller_admin.trim_end_matches('/').to_string();
    let get = |path: &str| rt.block_on(crate::http_get::get(&format!("{admin}{path}"), Duration::from_secs(5)));
    let live = get("/live").map(|(s, _)| s).map_err(|e| format!("{e:#}"));
    let (ready, state) = if live.is_ok() {
        let ready = get("/ready").ok().map(|(s, _)| s);
        let state =
            get("/api/v1/state").ok().filter(|(s, _)| *s == 200).and_then(|(_, b)| serde_json::from_str(&b).ok());
        (ready, state)
    } else {
        (None, None)
    };
    let now_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
    let mut anchor_not_after = anchor(&args);
    let kubeconfig = args.kubeconfig.as_deref().filter(|k| !k.is_empty());
    let mut cluster_lines = Vec::new();
    if let Some(kc) = kubeconfig {
        let (lines, from_cluster) = rt.block_on(cluster(kc, anchor_not_after.is_some()));
        cluster_lines = lines;
        anchor_not_after = anchor_not_after.or(from_cluster);
    }
    let observed = Observed {
        admin: admin.clone(),
        live,
        ready,
        state,
        anchor_not_after,
        now_ms,
        anchor_warn_within: warn_within,
    };
    match kubeconfig {
        Some(kc) => println!("weft check: the controller at {admin}, the install in the cluster of {kc}"),
        None => println!("weft check: the controller at {admin}"),
    }
    let mut lines = evaluate(&observed);
    lines.extend(cluster_lines);
    let (text, passed) = render(&lines);
    print!("{text}");
    if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const DAY_MS: i64 = 86_400_000;

    fn healthy() -> Observed {
        Observed {
            admin: "http://127.0.0.1:7071".into(),
            live: Ok(200),
            ready: Some(200),
            state: Some(json!({
                "config_version": 3, "config": {"rejected_total": 0, "rejected": null}, "policy_findings": [],
                "proxies": [{"namespace": "shop", "instance": "bar-1", "cert_expires_at_unix_ms": 1000 + DAY_MS, "nacked": {}}]
            })),
            anchor_not_after: Some(Ok((1000 + 365 * DAY_MS) / 1000)),
            now_ms: 1000,
            anchor_warn_within: Duration::from_secs(30 * 86400),
        }
    }

    fn verdicts(o: &Observed) -> Vec<(&'static str, Verdict)> {
        evaluate(o).into_iter().map(|l| (l.check, l.verdict)).collect()
    }

    #[test]
    fn a_healthy_install_passes_every_check() {
        let lines = evaluate(&healthy());
        assert!(lines.iter().all(|l| l.verdict == Verdict::Ok), "{lines:#?}");
        assert!(render(&lines).1);
    }

    #[test]
    fn a_down_controller_fails_and_says_where_to_look() {
        let o = Observed { live: Err("connection refused".into()), ready: None, state: None, ..healthy() };
        let lines = evaluate(&o);
        assert_eq!(lines[0].verdict, Verdict::Fail);
        assert!(lines[0].hint.contains("--controller-admin"));
        assert!(!render(&lines).1);
    }

    #[test]
    fn anchors_expired_or_close_and_rejected_configs() {
        let mut o = healthy();
        o.anchor_not_after = Some(Ok(0));
        assert!(verdicts(&o).contains(&("trust anchor expiry", Verdict::Fail)));
        o.anchor_not_after = Some(Ok((1000 + 2 * DAY_MS) / 1000));
        assert!(verdicts(&o).contains(&("trust anchor expiry", Verdict::Warn)));
        o.state.as_mut().unwrap()["config"]["rejected"] = json!(["services.bar.timeout: bad"]);
        let lines = evaluate(&o);
        let cfg = lines.iter().find(|l| l.check == "mesh config").unwrap();
        assert_eq!(cfg.verdict, Verdict::Fail);
        assert!(cfg.detail.contains("services.bar.timeout"), "{cfg:?}");
    }

    #[test]
    fn proxies_with_expired_certificates_or_nacks() {
        let mut o = healthy();
        o.state.as_mut().unwrap()["proxies"] = json!([
            {"namespace": "shop", "instance": "a", "cert_expires_at_unix_ms": 0, "nacked": {}},
            {"namespace": "shop", "instance": "b", "cert_expires_at_unix_ms": 1000 + DAY_MS, "nacked": {"service": "bad"}}
        ]);
        let v = verdicts(&o);
        assert!(v.contains(&("proxy certificates", Verdict::Fail)), "{v:?}");
        assert!(v.contains(&("proxy config", Verdict::Warn)), "{v:?}");
        o.state.as_mut().unwrap()["proxies"] = json!([]);
        assert!(verdicts(&o).contains(&("proxies connected", Verdict::Warn)));
        o.state.as_mut().unwrap()["policy_findings"] =
            json!([{"kind": "invalid", "source": "TrafficSplit shop/bar", "message": "there is no Service shop/bar"}]);
        assert!(verdicts(&o).contains(&("traffic policy", Verdict::Fail)));
        o.state.as_mut().unwrap()["policy_findings"] =
            json!([{"kind": "combined", "source": "mesh file", "message": "both granted"}]);
        assert!(verdicts(&o).contains(&("traffic policy", Verdict::Ok)), "a combined allow list is no conflict");
    }
}
