//! The install's injection settings and their per-pod overrides. One set of names serves three
//! places: the settings file (`weft install` renders it into the `weft-injector` ConfigMap), the
//! flags of `weft install` and `weft inject`, and the `config.weft.io/<name>` annotations.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::names;

/// What every injected pod gets unless an annotation says otherwise.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct InjectSettings {
    /// The image holding `weft-proxy` (the sidecar).
    pub proxy_image: String,
    /// The image holding `weft-proxy` and iptables (the init container).
    pub init_image: String,
    pub image_pull_policy: String,
    /// Where proxies reach the controller.
    pub controller: String,
    pub proxy_log_level: String,
    pub proxy_cpu_request: Option<String>,
    pub proxy_cpu_limit: Option<String>,
    pub proxy_memory_request: Option<String>,
    pub proxy_memory_limit: Option<String>,
    /// The proxy as a native sidecar (an init container that keeps running; Kubernetes ≥ 1.29)
    /// rather than a classic sidecar first among the containers.
    pub native_sidecar: bool,
    /// The proxy's longest drain on shutdown (`--shutdown-grace`); unset: the proxy's default.
    pub shutdown_grace_period: Option<String>,
    /// A Secret in the pod's namespace holding a join token (key `token`): the identity until the
    /// controller accepts service-account tokens (Kubernetes, part 2).
    pub join_token_secret: Option<String>,
    pub skip_inbound_ports: Vec<u16>,
    pub skip_outbound_ports: Vec<u16>,
    pub skip_subnets: Vec<String>,
    pub opaque_ports: Vec<u16>,
    /// Lifetime of the projected service-account token (the kubelet renews it at 80 %).
    pub identity_token_expiration_seconds: i64,
}

impl Default for InjectSettings {
    fn default() -> Self {
        Self {
            proxy_image: "weft:playground".into(),
            init_image: "weft-init:playground".into(),
            image_pull_policy: "IfNotPresent".into(),
            controller: format!("https://weft-controller.{}.svc:7070", names::MESH_NAMESPACE),
            proxy_log_level: "info".into(),
            proxy_cpu_request: Some("10m".into()),
            proxy_cpu_limit: None,
            proxy_memory_request: Some("20Mi".into()),
            proxy_memory_limit: Some("250Mi".into()),
            native_sidecar: true,
            shutdown_grace_period: None,
            join_token_secret: None,
            skip_inbound_ports: Vec::new(),
            skip_outbound_ports: Vec::new(),
            skip_subnets: Vec::new(),
            opaque_ports: Vec::new(),
            identity_token_expiration_seconds: 600,
        }
    }
}

/// The settings one pod gets: the install's, then the namespace's annotations, then the pod's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodSettings {
    pub base: InjectSettings,
    /// `config.weft.io/service`: the proxy's service (identity) instead of the service account.
    pub service: Option<String>,
    /// `config.weft.io/await-binary`: where the app image has `weft-proxy`; with a classic sidecar a
    /// Job's commands are wrapped in `weft-proxy await --shutdown` so the pod can finish.
    pub await_binary: Option<String>,
}

/// The `config.weft.io/` names an annotation may set, with what each takes.
pub const OVERRIDES: &[(&str, &str)] = &[
    ("proxy-image", "image reference"),
    ("init-image", "image reference"),
    ("proxy-log-level", "log filter, e.g. info or debug"),
    ("proxy-cpu-request", "CPU quantity, e.g. 10m"),
    ("proxy-cpu-limit", "CPU quantity"),
    ("proxy-memory-request", "memory quantity, e.g. 20Mi"),
    ("proxy-memory-limit", "memory quantity"),
    ("native-sidecar", "true or false"),
    ("shutdown-grace-period", "duration, e.g. 30s"),
    ("join-token-secret", "Secret name"),
    ("skip-inbound-ports", "ports, comma-separated"),
    ("skip-outbound-ports", "ports, comma-separated"),
    ("skip-subnets", "CIDRs, comma-separated"),
    ("opaque-ports", "ports, comma-separated"),
    ("service", "service name (pod only)"),
    ("await-binary", "path of weft-proxy in the app image (pod only)"),
];

impl InjectSettings {
    /// Every problem at once, each naming its setting.
    pub fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        let mut check = |name: &str, r: Result<(), String>| {
            if let Err(e) = r {
                p.push(format!("{name}: {e}"));
            }
        };
        check("proxy-image", image(&self.proxy_image));
        check("init-image", image(&self.init_image));
        check(
            "image-pull-policy",
            match self.image_pull_policy.as_str() {
                "Always" | "IfNotPresent" | "Never" => Ok(()),
                other => Err(format!("{other:?}: expected Always, IfNotPresent or Never")),
            },
        );
        check("controller", controller_url(&self.controller));
        check("proxy-log-level", log_level(&self.proxy_log_level));
        for (name, q) in [
            ("proxy-cpu-request", &self.proxy_cpu_request),
            ("proxy-cpu-limit", &self.proxy_cpu_limit),
            ("proxy-memory-request", &self.proxy_memory_request),
            ("proxy-memory-limit", &self.proxy_memory_limit),
        ] {
            if let Some(q) = q {
                check(name, quantity(q));
            }
        }
        if let Some(d) = &self.shutdown_grace_period {
            check("shutdown-grace-period", weft_proto::duration::parse_duration(d).map(|_| ()));
        }
        if let Some(s) = &self.join_token_secret {
            check("join-token-secret", dns_subdomain(s));
        }
        for (name, ports) in [
            ("skip-inbound-ports", &self.skip_inbound_ports),
            ("skip-outbound-ports", &self.skip_outbound_ports),
            ("opaque-ports", &self.opaque_ports),
        ] {
            if ports.contains(&0) {
                check(name, Err("port 0 is not a port".into()));
            }
        }
        for s in &self.skip_subnets {
            check("skip-subnets", cidr(s));
        }
        if !(600..=86400 * 7).contains(&self.identity_token_expiration_seconds) {
            check(
                "identity-token-expiration-seconds",
                Err("the API server accepts 600 (10 minutes) to 604800 (7 days)".into()),
            );
        }
        p
    }

    /// Applies namespace annotations, then pod annotations; returns problems (which stop
    /// injection) and warnings (unknown `config.weft.io/` names, which are ignored).
    pub fn for_pod(
        &self,
        namespace: Option<&BTreeMap<String, String>>,
        pod: &BTreeMap<String, String>,
    ) -> (Result<PodSettings, Vec<String>>, Vec<String>) {
        let mut s = PodSettings { base: self.clone(), service: None, await_binary: None };
        let (mut problems, mut warnings) = (Vec::new(), Vec::new());
        let layers = [("namespace", namespace), ("pod", Some(pod))];
        for (origin, annotations) in layers {
            for (k, v) in annotations.into_iter().flatten() {
                let Some(name) = k.strip_prefix(names::CONFIG_PREFIX) else { continue };
                if origin == "namespace" && matches!(name, "service" | "await-binary") {
                    warnings.push(format!("{k} on a namespace is ignored (pods only)"));
                    continue;
                }
                match s.apply(name, v) {
                    Ok(true) => {}
                    Ok(false) => warnings.push(format!("unknown annotation {k} (ignored)")),
                    Err(e) => problems.push(format!("{origin} annotation {k}={v:?}: {e}")),
                }
            }
        }
        problems.extend(s.base.validate().into_iter().map(|e| format!("setting {e}")));
        if problems.is_empty() {
            (Ok(s), warnings)
        } else {
            (Err(problems), warnings)
        }
    }
}

impl PodSettings {
    /// Sets one override; `Ok(false)` for a name that is not one.
    fn apply(&mut self, name: &str, v: &str) -> Result<bool, String> {
        let b = &mut self.base;
        let v = v.trim();
        let quantity_value = |v: &str| quantity(v).map(|()| Some(v.to_string()));
        match name {
            "proxy-image" => b.proxy_image = image(v).map(|()| v.to_string())?,
            "init-image" => b.init_image = image(v).map(|()| v.to_string())?,
            "proxy-log-level" => b.proxy_log_level = log_level(v).map(|()| v.to_string())?,
            "proxy-cpu-request" => b.proxy_cpu_request = quantity_value(v)?,
            "proxy-cpu-limit" => b.proxy_cpu_limit = quantity_value(v)?,
            "proxy-memory-request" => b.proxy_memory_request = quantity_value(v)?,
            "proxy-memory-limit" => b.proxy_memory_limit = quantity_value(v)?,
            "native-sidecar" => b.native_sidecar = bool_value(v)?,
            "shutdown-grace-period" => {
                weft_proto::duration::parse_duration(v)?;
                b.shutdown_grace_period = Some(v.to_string());
            }
            "join-token-secret" => b.join_token_secret = dns_subdomain(v).map(|()| Some(v.to_string()))?,
            "skip-inbound-ports" => b.skip_inbound_ports = ports(v)?,
            "skip-outbound-ports" => b.skip_outbound_ports = ports(v)?,
            "skip-subnets" => {
                b.skip_subnets = list(v);
                b.skip_subnets.iter().try_for_each(|s| cidr(s))?;
            }
            "opaque-ports" => b.opaque_ports = ports(v)?,
            "service" => {
                weft_certs::SpiffeId::new("weft.local", "default", v).map_err(|e| e.to_string())?;
                self.service = Some(v.to_string());
            }
            "await-binary" => {
                if !v.starts_with('/') || v.contains(char::is_whitespace) {
                    return Err("expected an absolute path".into());
                }
                self.await_binary = Some(v.to_string());
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

fn bool_value(v: &str) -> Result<bool, String> {
    match v.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(format!("{other:?}: expected true or false")),
    }
}

fn list(v: &str) -> Vec<String> {
    v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
}

/// Comma-separated ports (1–65535).
pub fn ports(v: &str) -> Result<Vec<u16>, String> {
    list(v)
        .iter()
        .map(|p| match p.parse::<u16>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("{p:?} is not a port (1-65535)")),
        })
        .collect()
}

fn image(v: &str) -> Result<(), String> {
    if v.is_empty() || v.contains(char::is_whitespace) {
        return Err(format!("{v:?} is not an image reference"));
    }
    Ok(())
}

fn controller_url(v: &str) -> Result<(), String> {
    let rest = v.strip_prefix("https://").ok_or_else(|| format!("{v:?}: expected https://HOST:PORT"))?;
    let port = rest.rsplit_once(':').map(|(_, p)| p).unwrap_or("");
    if rest.is_empty() || port.parse::<u16>().is_err() || rest.contains('/') {
        return Err(format!("{v:?}: expected https://HOST:PORT"));
    }
    Ok(())
}

fn log_level(v: &str) -> Result<(), String> {
    let ok = !v.is_empty() && v.chars().all(|c| c.is_ascii_alphanumeric() || "_=,:.-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!("{v:?}: expected a level (error, warn, info, debug, trace) or directives"))
    }
}

/// A Kubernetes resource quantity (`10m`, `0.5`, `20Mi`, `1e3`), not negative.
pub fn quantity(v: &str) -> Result<(), String> {
    let bad = || Err(format!("{v:?} is not a Kubernetes quantity (e.g. 10m, 0.5, 64Mi, 1G)"));
    let unsigned = v.strip_prefix('+').unwrap_or(v);
    let digits_end = unsigned.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(unsigned.len());
    let (number, suffix) = unsigned.split_at(digits_end);
    let dots = number.matches('.').count();
    if number.is_empty() || number == "." || dots > 1 {
        return bad();
    }
    let suffix_ok = matches!(
        suffix,
        "" | "n" | "u" | "m" | "k" | "M" | "G" | "T" | "P" | "E" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei"
    ) || suffix
        .strip_prefix(['e', 'E'])
        .map(|e| e.strip_prefix(['+', '-']).unwrap_or(e))
        .is_some_and(|e| !e.is_empty() && e.chars().all(|c| c.is_ascii_digit()));
    if suffix_ok {
        Ok(())
    } else {
        bad()
    }
}

/// A Kubernetes object name (RFC 1123 subdomain).
pub fn dns_subdomain(v: &str) -> Result<(), String> {
    let ok = !v.is_empty()
        && v.len() <= 253
        && v.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && v.starts_with(|c: char| c.is_ascii_alphanumeric())
        && v.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!("{v:?} is not a Kubernetes object name"))
    }
}

fn cidr(v: &str) -> Result<(), String> {
    let (ip, len) = v.split_once('/').unwrap_or((v, ""));
    let ip: IpAddr = ip.parse().map_err(|_| format!("{v:?} is not a CIDR"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if !len.is_empty() && len.parse::<u8>().map_or(true, |l| l > max) {
        return Err(format!("{v:?} is not a CIDR"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(InjectSettings::default().validate(), Vec::<String>::new());
    }

    #[test]
    fn quantities() {
        for ok in ["10m", "0.5", "1", "64Mi", "1G", "1e3", "1E-2", "+2", ".5", "100Ki"] {
            assert!(quantity(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-1", "lots", "10mb", "1.2.3", "Mi", "1e", "."] {
            assert!(quantity(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_pod_wins_over_the_namespace() {
        let s = InjectSettings::default();
        let ns = ann(&[("config.weft.io/proxy-log-level", "debug"), ("config.weft.io/skip-inbound-ports", "25")]);
        let pod = ann(&[("config.weft.io/proxy-log-level", "trace"), ("config.weft.io/native-sidecar", "false")]);
        let (r, warnings) = s.for_pod(Some(&ns), &pod);
        let p = r.unwrap();
        assert_eq!(p.base.proxy_log_level, "trace");
        assert_eq!(p.base.skip_inbound_ports, vec![25]);
        assert!(!p.base.native_sidecar);
        assert!(warnings.is_empty());
    }

    #[test]
    fn problems_and_warnings() {
        let s = InjectSettings::default();
        let pod = ann(&[
            ("config.weft.io/proxy-cpu-request", "lots"),
            ("config.weft.io/skip-outbound-ports", "80,x"),
            ("config.weft.io/native-sidecar", "yes"),
            ("config.weft.io/colour", "blue"),
            ("config.weft.io/service", "Not A Name"),
        ]);
        let (r, warnings) = s.for_pod(None, &pod);
        let problems = r.unwrap_err();
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert_eq!(warnings, vec!["unknown annotation config.weft.io/colour (ignored)".to_string()]);
    }
}
