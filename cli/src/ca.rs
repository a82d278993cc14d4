//! `weft ca init` and `weft ca token`.

use std::path::Path;

use anyhow::Context;
use weft_certs::{CertificateAuthority, SpiffeId};

pub fn init(dir: &Path, trust_domain: &str) -> anyhow::Result<()> {
    let ca = CertificateAuthority::init(dir, trust_domain)?;
    eprintln!(
        "created the root CA for trust domain {} in {} (ca.crt, ca.key — keep ca.key private)",
        ca.trust_domain(),
        dir.display()
    );
    Ok(())
}

pub fn token(dir: &Path, service: &str, namespace: &str, ttl: &str) -> anyhow::Result<()> {
    let ttl = weft_proto_duration(ttl).context("--ttl")?;
    let ca = CertificateAuthority::load(dir)?;
    let id = SpiffeId::new(ca.trust_domain(), namespace, service)?;
    println!("{}", ca.join_token(&id, ttl)?);
    Ok(())
}

fn weft_proto_duration(s: &str) -> anyhow::Result<std::time::Duration> {
    weft_proto::duration::parse_duration(s).map_err(anyhow::Error::msg)
}

/// The CA in `dir` (made if missing) and `dir/tokens/SERVICE.token` for each service.
pub fn bootstrap(dir: &Path, trust_domain: &str, services: &[String], namespace: &str) -> anyhow::Result<()> {
    let ca = if dir.join(weft_certs::ca::CA_CERT_FILE).exists() {
        CertificateAuthority::load(dir)?
    } else {
        init(dir, trust_domain)?;
        CertificateAuthority::load(dir)?
    };
    anyhow::ensure!(
        ca.trust_domain() == trust_domain,
        "the CA in {} is for {}, not {trust_domain}",
        dir.display(),
        ca.trust_domain()
    );
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens)?;
    for s in services {
        let id = SpiffeId::new(ca.trust_domain(), namespace, s)?;
        let path = tokens.join(format!("{s}.token"));
        std::fs::write(&path, ca.join_token(&id, std::time::Duration::from_secs(365 * 86400))?)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
