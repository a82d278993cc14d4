//! The webhook's view of namespace annotations: a GET per namespace through the Kubernetes API
//! (RBAC: `get` on `namespaces`), cached for a few seconds so that a burst of pods costs one
//! read, bounded by a timeout so that a slow API server never holds up pod creation. When a read
//! fails, a recent answer is used if there is one.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

pub type Annotations = BTreeMap<String, String>;
pub type SourceFuture<'a> = Pin<Box<dyn Future<Output = Result<Option<Annotations>, String>> + Send + 'a>>;

/// Where namespaces are read from: the API server, or a stand-in in tests.
pub trait NamespaceSource: Send + Sync {
    /// The namespace's annotations; `Ok(None)` when it does not exist.
    fn annotations<'a>(&'a self, name: &'a str) -> SourceFuture<'a>;
}

/// Reads namespaces with the kube client.
pub struct KubeNamespaces(pub kube::Client);

impl NamespaceSource for KubeNamespaces {
    fn annotations<'a>(&'a self, name: &'a str) -> SourceFuture<'a> {
        Box::pin(async move {
            let api: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(self.0.clone());
            match api.get_opt(name).await {
                Ok(ns) => Ok(ns.map(|n| n.metadata.annotations.unwrap_or_default())),
                Err(e) => Err(e.to_string()),
            }
        })
    }
}

/// What a lookup found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    Found(Annotations),
    /// Unreadable: no API configured, an error, or a timeout; the reason says which.
    Failed(String),
}

#[derive(Clone)]
struct Entry {
    at: Instant,
    annotations: Annotations,
}

/// Cached namespace annotations.
pub struct NamespaceCache {
    source: Option<Arc<dyn NamespaceSource>>,
    /// Why there is no source (shown in every failed lookup).
    no_source_reason: String,
    fresh_for: Duration,
    /// How long an old answer may stand in when the API cannot be read.
    stale_for: Duration,
    timeout: Duration,
    entries: Mutex<HashMap<String, Entry>>,
}

impl NamespaceCache {
    pub fn new(source: Arc<dyn NamespaceSource>, fresh_for: Duration, timeout: Duration) -> Self {
        Self {
            source: Some(source),
            no_source_reason: String::new(),
            fresh_for,
            stale_for: Duration::from_secs(300),
            timeout,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// A cache with nothing to read from: every lookup fails with `reason`.
    pub fn unavailable(reason: impl Into<String>) -> Self {
        Self {
            source: None,
            no_source_reason: reason.into(),
            fresh_for: Duration::ZERO,
            stale_for: Duration::ZERO,
            timeout: Duration::ZERO,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn cached(&self, name: &str, max_age: Duration) -> Option<Annotations> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.get(name).filter(|e| e.at.elapsed() < max_age).map(|e| e.annotations.clone())
    }

    /// The namespace's annotations, within `min(timeout, budget)`.
    pub async fn get(&self, name: &str, budget: Duration) -> Lookup {
        let Some(source) = &self.source else {
            return Lookup::Failed(self.no_source_reason.clone());
        };
        if let Some(a) = self.cached(name, self.fresh_for) {
            return Lookup::Found(a);
        }
        let limit = self.timeout.min(budget);
        let result = match tokio::time::timeout(limit, source.annotations(name)).await {
            Ok(Ok(found)) => Ok(found.unwrap_or_default()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(format!("no answer from the API server within {limit:?}")),
        };
        match result {
            Ok(annotations) => {
                let entry = Entry { at: Instant::now(), annotations: annotations.clone() };
                self.entries.lock().unwrap_or_else(|p| p.into_inner()).insert(name.to_string(), entry);
                Lookup::Found(annotations)
            }
            Err(e) => match self.cached(name, self.stale_for) {
                Some(a) => {
                    tracing::warn!(namespace = name, "reading the namespace failed ({e}); using the last answer");
                    Lookup::Found(a)
                }
                None => Lookup::Failed(e),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Answers after `delay`, counting calls; fails when `fail` is set.
    struct Fake {
        calls: AtomicUsize,
        delay: Duration,
        fail: std::sync::atomic::AtomicBool,
    }

    impl NamespaceSource for Fake {
        fn annotations<'a>(&'a self, name: &'a str) -> SourceFuture<'a> {
            Box::pin(async move {
                self.calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(self.delay).await;
                if self.fail.load(Ordering::SeqCst) {
                    return Err("boom".into());
                }
                Ok((name != "missing").then(|| [("weft.io/inject".to_string(), "enabled".to_string())].into()))
            })
        }
    }

    fn fake(delay: Duration) -> Arc<Fake> {
        Arc::new(Fake { calls: AtomicUsize::new(0), delay, fail: false.into() })
    }

    #[tokio::test(start_paused = true)]
    async fn reads_are_cached_then_refreshed() {
        let f = fake(Duration::from_millis(10));
        let cache = NamespaceCache::new(f.clone(), Duration::from_secs(5), Duration::from_secs(2));
        let budget = Duration::from_secs(10);
        assert!(matches!(cache.get("shop", budget).await, Lookup::Found(a) if a.len() == 1));
        assert!(matches!(cache.get("shop", budget).await, Lookup::Found(_)));
        assert_eq!(f.calls.load(Ordering::SeqCst), 1);
        tokio::time::advance(Duration::from_secs(6)).await;
        cache.get("shop", budget).await;
        assert_eq!(f.calls.load(Ordering::SeqCst), 2);
        assert_eq!(cache.get("missing", budget).await, Lookup::Found(Annotations::new()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_api_times_out_and_a_recent_answer_stands_in() {
        let f = fake(Duration::from_secs(30));
        let cache = NamespaceCache::new(f.clone(), Duration::from_secs(5), Duration::from_secs(2));
        let started = Instant::now();
        assert!(matches!(cache.get("shop", Duration::from_secs(10)).await, Lookup::Failed(e) if e.contains("2s")));
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        // The budget left in the request bounds the read too.
        let started = Instant::now();
        cache.get("shop", Duration::from_millis(500)).await;
        assert_eq!(started.elapsed(), Duration::from_millis(500));

        let f = fake(Duration::from_millis(1));
        let cache = NamespaceCache::new(f.clone(), Duration::from_secs(5), Duration::from_secs(2));
        cache.get("shop", Duration::from_secs(10)).await;
        f.fail.store(true, Ordering::SeqCst);
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(matches!(cache.get("shop", Duration::from_secs(10)).await, Lookup::Found(_)));
        tokio::time::advance(Duration::from_secs(600)).await;
        assert!(matches!(cache.get("shop", Duration::from_secs(10)).await, Lookup::Failed(e) if e == "boom"));
    }
}
