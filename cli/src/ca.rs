//! `weft ca init`, `weft ca token`, `weft ca bootstrap` and `weft ca revoke`.

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

fn parse_ttl(s: &str) -> anyhow::Result<std::time::Duration> {
    weft_proto::duration::parse_duration(s).map_err(anyhow::Error::msg).context("--ttl")
}

/// Prints a join token on stdout; its id and expiry go to stderr (the id is what `weft ca revoke`
/// takes).
pub fn token(dir: &Path, service: &str, namespace: &str, ttl: &str, bind_instance: Option<&str>) -> anyhow::Result<()> {
    let ttl = parse_ttl(ttl)?;
    let ca = CertificateAuthority::load(dir)?;
    let id = SpiffeId::new(ca.trust_domain(), namespace, service)?;
    let (token, claims) = ca.join_token(&id, ttl, bind_instance)?;
    println!("{token}");
    eprintln!(
        "join token {} for {id}, good until {} (Unix seconds){}",
        claims.jti,
        claims.exp,
        match bind_instance {
            Some(i) => format!(", for instance {i} only"),
            None => String::new(),
        }
    );
    Ok(())
}

/// `UID:GID` for `--owner`.
pub fn parse_owner(s: &str) -> anyhow::Result<(u32, u32)> {
    let (u, g) = s.split_once(':').context("--owner: expected UID:GID")?;
    Ok((u.parse().context("--owner: UID is not a number")?, g.parse().context("--owner: GID is not a number")?))
}

/// The CA in `dir` (made if missing) and `dir/tokens/SERVICE.token` for each service, readable by
/// `owner` only (the proxies' user in containers).
pub fn bootstrap(
    dir: &Path,
    trust_domain: &str,
    services: &[String],
    namespace: &str,
    ttl: &str,
    owner: Option<(u32, u32)>,
) -> anyhow::Result<()> {
    let ttl = parse_ttl(ttl)?;
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
        let (token, claims) = ca.join_token(&id, ttl, None)?;
        weft_certs::ca::write_secret(&path, token.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                .with_context(|| format!("--owner: chown {}", path.display()))?;
        }
        eprintln!("wrote {} (token {}, good until {} Unix seconds)", path.display(), claims.jti, claims.exp);
    }
    Ok(())
}

/// Adds a token id to the CA folder's revocation list, which controllers watch. Takes the id, or a
/// token (file) to read it from.
pub fn revoke(dir: &Path, token_id: Option<&str>, token_file: Option<&Path>, reason: &str) -> anyhow::Result<()> {
    let ca = CertificateAuthority::load(dir)?;
    let (id, about) = match (token_id, token_file) {
        (Some(id), None) => (id.to_string(), String::new()),
        (None, Some(f)) => {
            let text = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
            let claims = ca.token_claims(text.trim()).context("that file holds no token of this CA")?;
            (claims.jti, format!(" for {}", claims.id))
        }
        _ => anyhow::bail!("give either --token-id or --token-file"),
    };
    let note = format!("revoked at {} (Unix seconds){about}; {reason}", weft_certs::ca::unix_now());
    weft_certs::revocation::revoke(dir, &id, &note).map_err(anyhow::Error::msg)?;
    eprintln!(
        "revoked join token {id}{about}: controllers using {} refuse its certificates and renewals within a second, and close its proxies' streams",
        dir.display()
    );
    Ok(())
}
