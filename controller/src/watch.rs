//! Watches the mesh file (and the CA folder's revocation list) by polling content. Polling the path
//! (rather than watching one inode) sees editors that save by writing a new file and renaming it,
//! and works on container bind mounts where file events do not cross. A change is applied only once
//! two reads a moment apart agree, so a file caught in the middle of an in-place write is never
//! applied; an invalid edit is logged, counted in `weft_config_rejected_total`, and leaves the last
//! good config in force.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use weft_certs::revocation::{RevocationList, REVOCATION_FILE};

use crate::mesh::MeshConfig;
use crate::state::MeshState;

pub const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// The gap between the two reads that must agree before a change is applied.
const SETTLE: Duration = Duration::from_millis(150);

/// Reads and validates a mesh file for this controller's CA; every problem in one list.
pub fn load(path: &Path, trust_domain: &str) -> Result<MeshConfig, Vec<String>> {
    let text = read_bounded(path).map_err(|e| vec![e])?;
    parse_for(&text, trust_domain)
}

pub(crate) fn parse_for(text: &str, trust_domain: &str) -> Result<MeshConfig, Vec<String>> {
    let mesh = MeshConfig::parse(text)?;
    if mesh.trust_domain != trust_domain {
        return Err(vec![format!(
            "trust_domain: {:?} is not the CA's trust domain {trust_domain:?}",
            mesh.trust_domain
        )]);
    }
    Ok(mesh)
}

/// The file's text, refusing one larger than the mesh file may be before reading it whole.
fn read_bounded(path: &Path) -> Result<String, String> {
    let len = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?.len();
    if len > crate::mesh::MAX_MESH_BYTES as u64 {
        return Err(format!("{}: {len} bytes; at most {} are accepted", path.display(), crate::mesh::MAX_MESH_BYTES));
    }
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// One look at the file: its text, or why it cannot be used (too large); None while it is missing
/// (mid-rename, or deleted: keep what we have and look again).
async fn look(path: &Path) -> Option<Result<String, String>> {
    if !path.is_file() {
        return None;
    }
    let p = path.to_path_buf();
    tokio::task::spawn_blocking(move || read_bounded(&p)).await.ok()
}

/// The file's content once two looks `SETTLE` apart agree; None while it is missing or changing.
async fn settled(path: &Path) -> Option<Result<String, String>> {
    let first = look(path).await?;
    tokio::time::sleep(SETTLE).await;
    let second = look(path).await?;
    (first == second).then_some(first)
}

pub async fn watch(path: PathBuf, state: Arc<MeshState>, initial_text: Option<String>) {
    let mut last_seen = initial_text.map(Ok);
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // Nothing to do while the content is what was last handled.
        let Some(now) = look(&path).await else { continue };
        if last_seen.as_ref() == Some(&now) {
            continue;
        }
        let Some(text) = settled(&path).await else { continue };
        if last_seen.as_ref() == Some(&text) {
            continue;
        }
        last_seen = Some(text.clone());
        let td = state.trust_domain();
        let result = match text {
            Ok(text) => tokio::task::spawn_blocking(move || parse_for(&text, &td))
                .await
                .unwrap_or_else(|e| Err(vec![format!("parsing failed: {e}")])),
            Err(e) => Err(vec![e]),
        };
        match result {
            Ok(mesh) => {
                tracing::info!(path = %path.display(), "mesh file reloaded");
                state.metrics.config_reloads.with(&[]).inc();
                state.set_mesh(mesh);
            }
            Err(problems) => {
                tracing::error!(
                    path = %path.display(),
                    "mesh file rejected; the last good config stays in force. Problems:\n  {}",
                    problems.join("\n  ")
                );
                state.reject_config(problems);
            }
        }
    }
}

/// Watches `CA_DIR/revoked-tokens`; a new valid list is put in force at once (sessions of revoked
/// tokens close), an invalid one is logged and the last good list stays.
pub async fn watch_revocations(ca_dir: PathBuf, state: Arc<MeshState>, mut current: RevocationList) {
    let path = ca_dir.join(REVOCATION_FILE);
    let mut last_text: Option<String> = std::fs::read_to_string(&path).ok();
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let text = tokio::fs::read_to_string(&path).await.ok();
        if text == last_text {
            continue;
        }
        tokio::time::sleep(SETTLE).await;
        let again = tokio::fs::read_to_string(&path).await.ok();
        if again != text {
            continue;
        }
        last_text = text.clone();
        match RevocationList::parse(text.as_deref().unwrap_or("")) {
            Ok(list) if list != current => {
                tracing::info!(path = %path.display(), revoked = list.len(), "revocation list reloaded");
                state.metrics.revoked_tokens.with(&[]).set(list.len() as i64);
                current = list.clone();
                state.set_revocations(list);
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(path = %path.display(), "revocation list rejected; the last good one stays: {e}");
            }
        }
    }
}
