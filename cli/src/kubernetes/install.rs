//! `weft install`: the control plane's manifests on stdout, for `kubectl apply -f -`. With
//! `--ca-dir` the output depends only on the CA and the settings (byte-stable, diffs cleanly);
//! without it a new CA is made, and stderr says so.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use weft_inject::install::{self, InstallOptions};

use super::settings_args::SettingsArgs;

#[derive(Args, Debug)]
pub struct InstallArgs {
    /// The CA folder made by `weft ca init` (ca.crt, ca.key). Without it, a new CA is generated.
    #[arg(long, value_name = "DIR")]
    pub ca_dir: Option<PathBuf>,
    /// The trust domain of a generated CA.
    #[arg(long, default_value = "weft.local", conflicts_with = "ca_dir")]
    pub trust_domain: String,
    /// The mesh file the controller starts with [default: just the CA's trust domain].
    #[arg(long, value_name = "FILE")]
    pub mesh: Option<PathBuf>,
    /// The controller's image (holds weft-controller).
    #[arg(long, default_value = "weft:playground")]
    pub controller_image: String,
    /// Controller replicas (each reads the Kubernetes API; any serves any proxy).
    #[arg(long, default_value_t = 2)]
    pub replicas: i32,
    /// Where the controller finds services, endpoints and identities: `api` (the Kubernetes API:
    /// Services, EndpointSlices, Pods, service-account tokens) or `mesh-file` (universal mode:
    /// the mesh file and join tokens; its replicas do not share registrations).
    #[arg(long, default_value = "api", value_parser = ["api", "mesh-file"])]
    pub discovery: String,
    #[arg(long, default_value = "info")]
    pub controller_log_level: String,
    #[arg(long, default_value = "50m")]
    pub controller_cpu_request: String,
    #[arg(long, default_value = "64Mi")]
    pub controller_memory_request: String,
    #[arg(long, default_value = "256Mi")]
    pub controller_memory_limit: String,
    /// Ignore: pods created while the webhook is down start without a sidecar; Fail: their
    /// creation fails until it is back.
    #[arg(long, default_value = "Ignore")]
    pub webhook_failure_policy: String,
    /// How long the API server waits for the webhook (1–30 s; the webhook answers within half).
    #[arg(long, default_value_t = 10)]
    pub webhook_timeout_seconds: i32,
    /// Ship the SMI CRDs (TrafficSplit, TrafficTarget, HTTPRouteGroup) with `--discovery api`;
    /// false where another install already owns them.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub smi_crds: bool,
    #[command(flatten)]
    pub settings: SettingsArgs,
}

fn read(path: &std::path::Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

pub fn run(args: InstallArgs) -> anyhow::Result<()> {
    let settings = args.settings.resolve()?;
    let (ca_cert_pem, ca_key_pem, trust_domain) = match &args.ca_dir {
        Some(dir) => {
            let ca = weft_certs::CertificateAuthority::load(dir)?;
            (read(&dir.join("ca.crt"))?, read(&dir.join("ca.key"))?, ca.trust_domain().to_string())
        }
        None => generate_ca(&args.trust_domain)?,
    };
    let mesh_yaml = match &args.mesh {
        Some(path) => read(path)?,
        None => format!(
            "# The mesh file (see the README's \"The mesh file\"); edit it here or install with --mesh FILE.\ntrust_domain: {trust_domain}\n"
        ),
    };
    let discovery_from_api = args.discovery == "api";
    if args.replicas > 1 && !discovery_from_api {
        eprintln!(
            "weft install: warning: --replicas {} with --discovery mesh-file: replicas do not share registrations \
             (use --replicas 1, or --discovery api)",
            args.replicas
        );
    }
    let opts = InstallOptions {
        ca_cert_pem,
        ca_key_pem,
        mesh_yaml,
        settings,
        controller_image: args.controller_image,
        replicas: args.replicas,
        discovery_from_api,
        controller_log_level: args.controller_log_level,
        controller_cpu_request: args.controller_cpu_request,
        controller_memory_request: args.controller_memory_request,
        controller_memory_limit: args.controller_memory_limit,
        webhook_failure_policy: args.webhook_failure_policy,
        webhook_timeout_seconds: args.webhook_timeout_seconds,
        smi_crds: args.smi_crds,
    };
    let problems = opts.validate();
    anyhow::ensure!(problems.is_empty(), "invalid settings:\n  {}", problems.join("\n  "));
    std::io::stdout().lock().write_all(install::render(&opts).as_bytes()).context("writing stdout")?;
    Ok(())
}

/// A fresh CA, made in a private temporary folder that is removed afterwards.
fn generate_ca(trust_domain: &str) -> anyhow::Result<(String, String, String)> {
    let dir = std::env::temp_dir().join(format!("weft-install-ca-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let made = weft_certs::CertificateAuthority::init(&dir, trust_domain)
        .map_err(anyhow::Error::from)
        .and_then(|_| Ok((read(&dir.join("ca.crt"))?, read(&dir.join("ca.key"))?)));
    let _ = std::fs::remove_dir_all(&dir);
    let (cert, key) = made?;
    eprintln!(
        "weft install: no --ca-dir: generated a new CA for trust domain {trust_domain}; its key is in the Secret \
         weft-system/weft-ca.\n  Keep a copy: `weft install` without --ca-dir makes another CA each time, and proxies \
         with certificates from this one would stop being trusted. To save it:\n  \
         kubectl -n weft-system get secret weft-ca -o jsonpath='{{.data.ca\\.crt}}' | base64 -d > ca.crt\n  \
         kubectl -n weft-system get secret weft-ca -o jsonpath='{{.data.ca\\.key}}' | base64 -d > ca.key"
    );
    Ok((cert, key, trust_domain.to_string()))
}
