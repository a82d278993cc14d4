//! The injection settings as flags, shared by `weft install` (which renders them into the
//! `weft-injector` ConfigMap) and `weft inject` (which injects with them). A flag overrides the
//! `--settings` file, which overrides the defaults.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use weft_inject::InjectSettings;

#[derive(Args, Debug, Clone, Default)]
pub struct SettingsArgs {
    /// A settings file (YAML: the flags below as keys, without `--`), e.g. the `settings.yaml` of the
    /// `weft-injector` ConfigMap.
    #[arg(long, value_name = "FILE")]
    pub settings: Option<PathBuf>,
    /// The sidecar image (holds weft-proxy) [default: weft:playground].
    #[arg(long)]
    pub proxy_image: Option<String>,
    /// The init image (weft-proxy and iptables) [default: weft-init:playground].
    #[arg(long)]
    pub init_image: Option<String>,
    /// Always, IfNotPresent or Never [default: IfNotPresent].
    #[arg(long)]
    pub image_pull_policy: Option<String>,
    /// Where proxies reach the controller [default: https://weft-controller.weft-system.svc:7070].
    #[arg(long)]
    pub controller: Option<String>,
    /// The proxy's log filter [default: info].
    #[arg(long)]
    pub proxy_log_level: Option<String>,
    /// [default: 10m]
    #[arg(long)]
    pub proxy_cpu_request: Option<String>,
    /// [default: none]
    #[arg(long)]
    pub proxy_cpu_limit: Option<String>,
    /// [default: 20Mi]
    #[arg(long)]
    pub proxy_memory_request: Option<String>,
    /// [default: 250Mi]
    #[arg(long)]
    pub proxy_memory_limit: Option<String>,
    /// The proxy as a native sidecar (Kubernetes ≥ 1.29); false: a classic sidecar [default: true].
    #[arg(long)]
    pub native_sidecar: Option<bool>,
    /// The proxy's longest drain on shutdown, e.g. 30s [default: the proxy's, 30s].
    #[arg(long)]
    pub shutdown_grace_period: Option<String>,
    /// A Secret (key `token`) in each pod's namespace holding a join token: the pod's identity
    /// until the controller accepts service-account tokens [default: none].
    #[arg(long)]
    pub join_token_secret: Option<String>,
    /// Inbound ports the proxy does not intercept (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub skip_inbound_ports: Option<Vec<u16>>,
    /// Outbound ports the proxy does not intercept (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub skip_outbound_ports: Option<Vec<u16>>,
    /// Destination CIDRs the proxy does not intercept (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub skip_subnets: Option<Vec<String>>,
    /// Ports with no protocol detection besides the built-in list (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub opaque_ports: Option<Vec<u16>>,
    /// Lifetime of the projected service-account token [default: 600].
    #[arg(long)]
    pub identity_token_expiration_seconds: Option<i64>,
}

impl SettingsArgs {
    /// Defaults, then the file, then the flags; every problem at once.
    pub fn resolve(&self) -> anyhow::Result<InjectSettings> {
        let mut s = match &self.settings {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| format!("--settings {}", path.display()))?;
                serde_norway::from_str(&text).with_context(|| format!("--settings {}", path.display()))?
            }
            None => InjectSettings::default(),
        };
        let set = |to: &mut String, from: &Option<String>| {
            if let Some(v) = from {
                *to = v.clone();
            }
        };
        set(&mut s.proxy_image, &self.proxy_image);
        set(&mut s.init_image, &self.init_image);
        set(&mut s.image_pull_policy, &self.image_pull_policy);
        set(&mut s.controller, &self.controller);
        set(&mut s.proxy_log_level, &self.proxy_log_level);
        let set_opt = |to: &mut Option<String>, from: &Option<String>| {
            if let Some(v) = from {
                *to = (!v.is_empty()).then(|| v.clone());
            }
        };
        set_opt(&mut s.proxy_cpu_request, &self.proxy_cpu_request);
        set_opt(&mut s.proxy_cpu_limit, &self.proxy_cpu_limit);
        set_opt(&mut s.proxy_memory_request, &self.proxy_memory_request);
        set_opt(&mut s.proxy_memory_limit, &self.proxy_memory_limit);
        set_opt(&mut s.shutdown_grace_period, &self.shutdown_grace_period);
        set_opt(&mut s.join_token_secret, &self.join_token_secret);
        if let Some(v) = self.native_sidecar {
            s.native_sidecar = v;
        }
        if let Some(v) = &self.skip_inbound_ports {
            s.skip_inbound_ports = v.clone();
        }
        if let Some(v) = &self.skip_outbound_ports {
            s.skip_outbound_ports = v.clone();
        }
        if let Some(v) = &self.skip_subnets {
            s.skip_subnets = v.clone();
        }
        if let Some(v) = &self.opaque_ports {
            s.opaque_ports = v.clone();
        }
        if let Some(v) = self.identity_token_expiration_seconds {
            s.identity_token_expiration_seconds = v;
        }
        let problems = s.validate();
        anyhow::ensure!(problems.is_empty(), "invalid settings:\n  {}", problems.join("\n  "));
        Ok(s)
    }
}
