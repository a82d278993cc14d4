//! Watches the mesh file for changes by polling its content. Polling the path (rather than
//! watching one inode) sees editors that save by writing a new file and renaming it, and works on
//! container bind mounts where file events do not cross. An invalid edit is logged, counted in
//! `weft_config_rejected_total`, and leaves the last good config in force.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::mesh::MeshConfig;
use crate::state::MeshState;

pub const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Reads and validates a mesh file for this controller's CA; every problem in one list.
pub fn load(path: &std::path::Path, trust_domain: &str) -> Result<MeshConfig, Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| vec![format!("{}: {e}", path.display())])?;
    let mesh = MeshConfig::parse(&text)?;
    if mesh.trust_domain != trust_domain {
        return Err(vec![format!(
            "trust_domain: {:?} is not the CA's trust domain {trust_domain:?}",
            mesh.trust_domain
        )]);
    }
    Ok(mesh)
}

pub async fn watch(path: PathBuf, state: Arc<MeshState>, initial_text: Option<String>) {
    let mut last_seen = initial_text;
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let text = match tokio::fs::read_to_string(&path).await {
            Ok(t) => t,
            // Mid-rename, or deleted: keep what we have and look again.
            Err(_) => continue,
        };
        if last_seen.as_deref() == Some(text.as_str()) {
            continue;
        }
        last_seen = Some(text.clone());
        let result = MeshConfig::parse(&text).and_then(|m| {
            if m.trust_domain == state.trust_domain() {
                Ok(m)
            } else {
                Err(vec![format!(
                    "trust_domain: {:?} is not the CA's trust domain {:?}",
                    m.trust_domain,
                    state.trust_domain()
                )])
            }
        });
        match result {
            Ok(mesh) => {
                tracing::info!(path = %path.display(), "mesh file reloaded");
                state.metrics.config_reloads.with(&[]).inc();
                state.set_mesh(mesh);
            }
            Err(problems) => {
                state.metrics.config_rejected.with(&[]).inc();
                tracing::error!(
                    path = %path.display(),
                    "mesh file rejected; the last good config stays in force. Problems:\n  {}",
                    problems.join("\n  ")
                );
            }
        }
    }
}
