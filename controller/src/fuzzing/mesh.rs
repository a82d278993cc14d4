//! Mesh-file parsing: any text is parsed or refused with messages, within a time budget (deep
//! nesting, anchors and huge scalars included), and a file that parses builds a snapshot.

use std::time::{Duration, Instant};

use weft_proto::types;

use crate::mesh::MeshConfig;
use crate::snapshot::Snapshot;

/// How much CPU time one input may take. A real file parses in well under a millisecond; the bound
/// is generous for an unoptimised or coverage-instrumented build.
pub const BUDGET: Duration = Duration::from_secs(2);

/// The CPU time this thread has used, where Linux tells (`/proc/thread-self/schedstat`). A budget
/// in CPU time holds on a loaded machine; wall time does not (a fuzzer run beside a busy build saw
/// 7.6 s of wall time for an input that takes milliseconds).
fn thread_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    Some(Duration::from_nanos(stat.split_whitespace().next()?.parse().ok()?))
}

pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (started, cpu_before) = (Instant::now(), thread_cpu_time());
    let parsed = MeshConfig::parse(text);
    let took = match (cpu_before, thread_cpu_time()) {
        (Some(before), Some(after)) => after.saturating_sub(before),
        _ => started.elapsed(),
    };
    assert!(took < BUDGET, "parsing {} bytes took {took:?} of CPU time", text.len());
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
