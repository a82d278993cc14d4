//! `weft inject FILE|-…` and `weft uninject FILE|-…`: each input in order, its documents in order,
//! workloads changed and everything else byte for byte; a report line per object on stderr.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use weft_inject::stream::{self, StreamResult};
use weft_inject::workloads::{Action, LineKind};
use weft_inject::{InjectContext, NamespaceInfo, OptIn};

use super::settings_args::SettingsArgs;

#[derive(Args, Debug)]
pub struct InjectArgs {
    /// YAML files (Pods, Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs, CronJobs,
    /// Lists, several documents); `-` reads stdin.
    #[arg(required = true, value_name = "FILE|-")]
    pub inputs: Vec<String>,
    /// The CA folder (`weft ca init`, the same as `weft install --ca-dir`): its ca.crt is the trust anchor.
    #[arg(long, value_name = "DIR", conflicts_with = "trust_anchor")]
    pub ca_dir: Option<PathBuf>,
    /// The trust anchor (PEM) instead of --ca-dir.
    #[arg(long, value_name = "FILE")]
    pub trust_anchor: Option<PathBuf>,
    #[command(flatten)]
    pub settings: SettingsArgs,
}

#[derive(Args, Debug)]
pub struct UninjectArgs {
    /// YAML files; `-` reads stdin.
    #[arg(required = true, value_name = "FILE|-")]
    pub inputs: Vec<String>,
}

fn read_input(name: &str) -> anyhow::Result<String> {
    if name == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).context("reading stdin")?;
        return Ok(s);
    }
    std::fs::read_to_string(Path::new(name)).with_context(|| format!("reading {name}"))
}

/// Runs `f` over every input; prints the YAML and the report. Fails (after printing) when an
/// object could not be handled.
fn each_input(inputs: &[String], f: impl Fn(&str) -> Result<StreamResult, String>) -> anyhow::Result<()> {
    let mut out = String::new();
    let mut failed = std::collections::BTreeSet::new();
    let mut err = std::io::stderr().lock();
    for name in inputs {
        let text = read_input(name)?;
        let result = f(&text).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        if !out.is_empty() {
            if !out.ends_with('\n') {
                out.push('\n');
            }
            out.push_str("---\n");
        }
        out.push_str(&result.output);
        for line in result.report {
            let what = match line.kind {
                LineKind::Injected | LineKind::Uninjected => String::new(),
                LineKind::Skipped => "skipped: ".into(),
                LineKind::Warning => "warning: ".into(),
                LineKind::Error => {
                    failed.insert(format!("{name} {}", line.object));
                    "error: ".into()
                }
            };
            let _ = writeln!(err, "{}: {what}{}", line.object, line.message);
        }
    }
    std::io::stdout().lock().write_all(out.as_bytes()).context("writing stdout")?;
    anyhow::ensure!(failed.is_empty(), "{} object(s) could not be handled; they were written unchanged", failed.len());
    Ok(())
}

pub fn inject(args: InjectArgs) -> anyhow::Result<()> {
    let settings = args.settings.resolve()?;
    let anchor_file = match (&args.ca_dir, &args.trust_anchor) {
        (Some(dir), _) => dir.join("ca.crt"),
        (None, Some(f)) => f.clone(),
        (None, None) => anyhow::bail!(
            "the trust anchor is needed: --ca-dir DIR (the CA given to `weft install`) or --trust-anchor FILE"
        ),
    };
    let trust_anchor =
        std::fs::read_to_string(&anchor_file).with_context(|| format!("reading {}", anchor_file.display()))?;
    weft_certs::pem::certs(trust_anchor.as_bytes())
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("{} is not a PEM certificate", anchor_file.display()))?;
    let ctx = InjectContext {
        settings: &settings,
        trust_anchor: &trust_anchor,
        namespace: None,
        namespace_info: NamespaceInfo::Unknown,
        opt_in: OptIn::Command,
    };
    each_input(&args.inputs, |text| stream::run(text, Action::Inject(&ctx)))
}

pub fn uninject(args: UninjectArgs) -> anyhow::Result<()> {
    each_input(&args.inputs, |text| stream::run(text, Action::Uninject))
}
