//! Mesh-file parsing: any text is parsed or refused with messages, within a time budget (deep
//! nesting, anchors and huge scalars included), and a file that parses builds a snapshot.

use std::time::{Duration, Instant};

use weft_proto::types;

use crate::mesh::MeshConfig;
use crate::snapshot::Snapshot;

/// How long one input may take. A real file parses in well under a millisecond; the bound is
/// generous for a loaded machine and an unoptimised build.
pub const BUDGET: Duration = Duration::from_secs(2);

pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let started = Instant::now();
    let parsed = MeshConfig::parse(text);
    let took = started.elapsed();
    assert!(took < BUDGET, "parsing {} bytes took {took:?}", text.len());
    match parsed {
        Ok(mesh) => {
            for (key, svc) in &mesh.services {
                assert_eq!(key, &format!("{}/{}", svc.namespace, svc.name), "a service under another's key");
            }
            let snap = Snapshot::build(1, &mesh, std::iter::empty());
            assert_eq!(snap.resources(types::SERVICE).map(|s| s.len()), Some(mesh.services.len()));
        }
        Err(problems) => assert!(!problems.is_empty(), "refused without a reason"),
    }
}
