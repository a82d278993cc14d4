//! What the demo service is told to do (fail a share, add latency), changeable at run time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::Args;

#[derive(Clone, Copy, Debug)]
pub struct Behaviour {
    pub fail_percent: u32,
    pub latency: Duration,
}

pub struct Shared {
    pub name: String,
    pub version: String,
    pub instance: String,
    pub calls: Vec<String>,
    pub behaviour: Mutex<Behaviour>,
    pub served: AtomicU64,
    pub failed: AtomicU64,
}

impl Shared {
    pub fn new(args: &Args, latency: Duration) -> Self {
        Self {
            name: args.name.clone(),
            version: args.version.clone(),
            instance: format!("{}-{}", args.name, std::process::id()),
            calls: args.calls.clone(),
            behaviour: Mutex::new(Behaviour { fail_percent: args.fail_percent, latency }),
            served: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }

    pub fn behaviour(&self) -> Behaviour {
        *self.behaviour.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies `fail=30&latency=200ms` (a query string or form body).
    pub fn update(&self, spec: &str) -> Result<Behaviour, String> {
        let mut b = self.behaviour();
        for pair in spec.trim().split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').ok_or_else(|| format!("expected key=value, got {pair:?}"))?;
            match k {
                "fail" | "fail_percent" => {
                    let n: u32 = v.parse().map_err(|_| format!("fail: {v:?} is not a number"))?;
                    if n > 100 {
                        return Err("fail must be 0 to 100".into());
                    }
                    b.fail_percent = n;
                }
                "latency" => b.latency = weft_proto::duration::parse_duration(v)?,
                other => return Err(format!("unknown setting {other:?} (use fail and latency)")),
            }
        }
        *self.behaviour.lock().unwrap_or_else(|e| e.into_inner()) = b;
        Ok(b)
    }

    pub fn count(&self, failed: bool) {
        self.served.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A uniform draw in 0..100 without a random-number crate.
pub fn percent_draw() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
    (h.finish() % 100) as u32
}
