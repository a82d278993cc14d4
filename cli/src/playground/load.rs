//! The playground's steady load in front of web: a fixed request rate, each request carrying a
//! 2.5 s deadline budget (`x-weft-deadline-at`, which the demo apps pass on to their calls).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// The budget each request starts with.
pub const BUDGET: Duration = Duration::from_millis(2500);

#[derive(Default, Clone, Debug)]
pub struct LoadStats {
    pub sent: u64,
    pub ok: u64,
    pub failed: u64,
    /// Latencies and success of the requests finished since the last snapshot.
    pub window: Vec<(Duration, bool)>,
}

pub struct Load {
    stats: Arc<Mutex<LoadStats>>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    pub fn start(url: String, rps: u32, stop: Arc<AtomicBool>) -> Self {
        let stats = Arc::new(Mutex::new(LoadStats::default()));
        let s = stats.clone();
        let task = tokio::spawn(async move {
            let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rps)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut inflight = tokio::task::JoinSet::new();
            while !stop.load(Ordering::SeqCst) {
                tick.tick().await;
                while inflight.try_join_next().is_some() {}
                let (client, s, url) = (client.clone(), s.clone(), url.clone());
                s.lock().unwrap_or_else(|e| e.into_inner()).sent += 1;
                inflight.spawn(async move {
                    let started = tokio::time::Instant::now();
                    let deadline_at = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| (d + BUDGET).as_millis())
                        .unwrap_or(0);
                    let req = http::Request::get(url.as_str())
                        .header("x-weft-deadline-at", deadline_at.to_string())
                        .body(Empty::new())
                        .expect("static request");
                    let ok = match tokio::time::timeout(BUDGET + Duration::from_secs(1), client.request(req)).await {
                        Ok(Ok(resp)) => {
                            let status = resp.status();
                            let _ = resp.into_body().collect().await;
                            status.is_success()
                        }
                        _ => false,
                    };
                    let mut st = s.lock().unwrap_or_else(|e| e.into_inner());
                    if ok {
                        st.ok += 1;
                    } else {
                        st.failed += 1;
                    }
                    st.window.push((started.elapsed(), ok));
                });
            }
            // Let the requests in flight finish (bounded by their own timeout).
            while inflight.join_next().await.is_some() {}
        });
        Self { stats, task }
    }

    /// Totals so far, and the window since the last snapshot (which it clears).
    pub fn snapshot(&self) -> LoadStats {
        let mut st = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        let out = st.clone();
        st.window.clear();
        out
    }

    /// Waits for the requests in flight (the caller has set the stop flag).
    pub async fn finish(&mut self) {
        let _ = tokio::time::timeout(BUDGET + Duration::from_secs(2), &mut self.task).await;
    }
}
