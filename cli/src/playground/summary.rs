//! The playground's one-screen summary: every second it scrapes each proxy's `/metrics` and turns
//! the change since the last scrape into requests per second, success rate and latency per
//! service, the share each bar version gets, retries, ejections, and whether every hop was mTLS.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use super::load::{LoadStats, BUDGET};
use super::processes::ProxyInfo;
use crate::prom::{self, Sample};

/// Services whose inbound proxies see traffic (web is the edge: the load reaches its app
/// directly, so its row comes from the load generator).
const MESHED: [&str; 2] = ["foo", "bar"];

pub struct Sampler {
    proxies: Vec<ProxyInfo>,
    last: BTreeMap<&'static str, Vec<Sample>>,
    last_at: Instant,
    load_window: Vec<(Duration, bool)>,
}

/// What one tick shows.
pub struct View {
    load: LoadStats,
    load_p50: Option<Duration>,
    load_p99: Option<Duration>,
    load_window_ok: f64,
    rows: Vec<Row>,
    versions: Vec<(String, f64)>,
    retries_per_s: f64,
    ejected: f64,
    connected: usize,
    proxies: usize,
    plaintext_inbound: f64,
    inbound_total: f64,
}

struct Row {
    service: &'static str,
    rps: f64,
    success: Option<f64>,
    p50: Option<f64>,
    p99: Option<f64>,
}

/// Totals at the end.
pub struct Totals {
    load: LoadStats,
    plaintext_inbound: f64,
    inbound_total: f64,
}

fn ms(d: f64) -> String {
    format!("{:.1} ms", d * 1000.0)
}

fn pct(x: Option<f64>) -> String {
    x.map(|v| format!("{:.1}%", v * 100.0)).unwrap_or_else(|| "-".into())
}

impl Sampler {
    pub fn new(proxies: Vec<ProxyInfo>) -> Self {
        Self { proxies, last: BTreeMap::new(), last_at: Instant::now(), load_window: vec![] }
    }

    async fn scrape(&self) -> BTreeMap<&'static str, Vec<Sample>> {
        let mut out = BTreeMap::new();
        for p in &self.proxies {
            if let Ok((200, body)) =
                crate::http_get::get(&format!("http://{}/metrics", p.admin), Duration::from_secs(1)).await
            {
                out.insert(p.name, prom::parse(&body));
            }
        }
        out
    }

    pub async fn sample(&mut self, load: &LoadStats) -> View {
        let now_samples = self.scrape().await;
        let elapsed = self.last_at.elapsed().as_secs_f64().max(0.001);
        self.last_at = Instant::now();
        let delta = |name: &str,
                     metric: &str,
                     filter: &[(&str, &str)],
                     samples: &BTreeMap<&'static str, Vec<Sample>>,
                     last: &BTreeMap<&'static str, Vec<Sample>>|
         -> f64 {
            let cur = samples.get(name).map(|s| prom::sum(s, metric, filter)).unwrap_or(0.0);
            let prev = last.get(name).map(|s| prom::sum(s, metric, filter)).unwrap_or(0.0);
            (cur - prev).max(0.0)
        };
        let mut rows = Vec::new();
        for svc in MESHED {
            let names: Vec<&'static str> = self.proxies.iter().filter(|p| p.service == svc).map(|p| p.name).collect();
            let (mut total, mut ok) = (0.0, 0.0);
            let mut buckets: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
            for n in &names {
                let f = [("direction", "inbound")];
                total += delta(n, "weft_requests_total", &f, &now_samples, &self.last);
                for code in ["200", "201", "204"] {
                    ok += delta(
                        n,
                        "weft_requests_total",
                        &[("direction", "inbound"), ("status_code", code)],
                        &now_samples,
                        &self.last,
                    );
                }
                let cur = now_samples
                    .get(n)
                    .map(|s| prom::buckets(s, "weft_request_duration_seconds", &f))
                    .unwrap_or_default();
                let prev =
                    self.last.get(n).map(|s| prom::buckets(s, "weft_request_duration_seconds", &f)).unwrap_or_default();
                for (le, count) in cur {
                    let before = prev.iter().find(|(l, _)| *l == le).map(|(_, c)| *c).unwrap_or(0.0);
                    let e = buckets.entry(le.to_bits()).or_insert((le, 0.0));
                    e.1 += (count - before).max(0.0);
                }
            }
            let mut b: Vec<(f64, f64)> = buckets.into_values().collect();
            b.sort_by(|a, c| a.0.total_cmp(&c.0));
            rows.push(Row {
                service: svc,
                rps: total / elapsed,
                success: (total > 0.0).then(|| ok / total),
                p50: prom::quantile(&b, 0.5),
                p99: prom::quantile(&b, 0.99),
            });
        }
        let mut versions: Vec<(String, f64)> = Vec::new();
        let bar_total: f64 = self
            .proxies
            .iter()
            .filter(|p| p.service == "bar")
            .map(|p| delta(p.name, "weft_requests_total", &[("direction", "inbound")], &now_samples, &self.last))
            .sum();
        for p in self.proxies.iter().filter(|p| p.service == "bar") {
            let d = delta(p.name, "weft_requests_total", &[("direction", "inbound")], &now_samples, &self.last);
            versions.push((p.version.to_string(), if bar_total > 0.0 { d / bar_total } else { 0.0 }));
        }
        let retries: f64 =
            self.proxies.iter().map(|p| delta(p.name, "weft_retries_total", &[], &now_samples, &self.last)).sum();
        let ejected: f64 = now_samples.values().map(|s| prom::sum(s, "weft_endpoints_ejected", &[])).sum();
        let connected =
            now_samples.values().filter(|s| prom::sum(s, "weft_control_plane_connected", &[]) >= 1.0).count();
        let (plaintext_inbound, inbound_total) = mtls_counts(&now_samples);
        self.last = now_samples;
        self.load_window.extend(load.window.iter().copied());
        // Latency of the load over the last few seconds.
        let keep = self.load_window.len().saturating_sub(500);
        self.load_window.drain(..keep);
        let mut lat: Vec<Duration> = self.load_window.iter().map(|(d, _)| *d).collect();
        lat.sort();
        let q = |q: f64| lat.get(((lat.len() as f64 - 1.0) * q).round() as usize).copied();
        let window_ok = if self.load_window.is_empty() {
            1.0
        } else {
            self.load_window.iter().filter(|(_, ok)| *ok).count() as f64 / self.load_window.len() as f64
        };
        let done = load.window.len() as f64;
        rows.insert(
            0,
            Row {
                service: "web",
                rps: done / elapsed,
                success: (done > 0.0).then(|| load.window.iter().filter(|(_, ok)| *ok).count() as f64 / done),
                p50: q(0.5).map(|d| d.as_secs_f64()),
                p99: q(0.99).map(|d| d.as_secs_f64()),
            },
        );
        View {
            load: load.clone(),
            load_p50: q(0.5),
            load_p99: q(0.99),
            load_window_ok: window_ok,
            rows,
            versions,
            retries_per_s: retries / elapsed,
            ejected,
            connected,
            proxies: self.proxies.len(),
            plaintext_inbound,
            inbound_total,
        }
    }

    pub async fn totals(&mut self, load: &LoadStats) -> Totals {
        let samples = self.scrape().await;
        let (plaintext_inbound, inbound_total) = mtls_counts(&samples);
        Totals { load: load.clone(), plaintext_inbound, inbound_total }
    }
}

/// Inbound requests over plaintext, and all inbound requests, summed over every proxy.
fn mtls_counts(samples: &BTreeMap<&'static str, Vec<Sample>>) -> (f64, f64) {
    let plain = samples
        .values()
        .map(|s| prom::sum(s, "weft_requests_total", &[("direction", "inbound"), ("tls", "false")]))
        .sum();
    let all = samples.values().map(|s| prom::sum(s, "weft_requests_total", &[("direction", "inbound")])).sum();
    (plain, all)
}

fn success(load: &LoadStats) -> f64 {
    let done = load.ok + load.failed;
    if done == 0 {
        0.0
    } else {
        load.ok as f64 / done as f64
    }
}

impl View {
    pub fn render(&self, elapsed: Duration) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "after {:>4}s   load on web: {} sent, {} ok overall, last seconds {} ok, p50 {}, p99 {} (budget {} ms)",
            elapsed.as_secs(),
            self.load.sent,
            pct(Some(success(&self.load))),
            pct(Some(self.load_window_ok)),
            self.load_p50.map(|d| ms(d.as_secs_f64())).unwrap_or_else(|| "-".into()),
            self.load_p99.map(|d| ms(d.as_secs_f64())).unwrap_or_else(|| "-".into()),
            BUDGET.as_millis()
        );
        let _ = writeln!(
            out,
            "\n{:<8} {:>8} {:>9} {:>10} {:>10}   (web: as the load sees it; others: their inbound proxies)",
            "SERVICE", "RPS", "SUCCESS", "P50", "P99"
        );
        for r in &self.rows {
            let _ = writeln!(
                out,
                "{:<8} {:>8.1} {:>9} {:>10} {:>10}",
                r.service,
                r.rps,
                pct(r.success),
                r.p50.map(ms).unwrap_or_else(|| "-".into()),
                r.p99.map(ms).unwrap_or_else(|| "-".into())
            );
        }
        let versions: Vec<String> = self.versions.iter().map(|(v, s)| format!("{v} {:.0}%", s * 100.0)).collect();
        let _ = writeln!(
            out,
            "\nbar versions: {}   retries: {:.1}/s   endpoints ejected: {}",
            versions.join("  "),
            self.retries_per_s,
            self.ejected
        );
        let _ = writeln!(
            out,
            "control plane: {}/{} proxies connected   mTLS: {}",
            self.connected,
            self.proxies,
            if self.plaintext_inbound == 0.0 {
                format!("every hop ({} inbound requests, all tls=\"true\")", self.inbound_total)
            } else {
                format!("{} plaintext inbound requests!", self.plaintext_inbound)
            }
        );
        out
    }

    /// One line, for logs and non-terminals.
    pub fn line(&self, elapsed: Duration) -> String {
        let rows: Vec<String> =
            self.rows.iter().map(|r| format!("{} {:.1}rps {}", r.service, r.rps, pct(r.success))).collect();
        let versions: Vec<String> = self.versions.iter().map(|(v, s)| format!("{v}={:.0}%", s * 100.0)).collect();
        format!(
            "t={}s load sent={} ok={} | {} | bar {} | retries {:.1}/s ejected {} | connected {}/{}",
            elapsed.as_secs(),
            self.load.sent,
            pct(Some(success(&self.load))),
            rows.join(" | "),
            versions.join(" "),
            self.retries_per_s,
            self.ejected,
            self.connected,
            self.proxies
        )
    }
}

impl Totals {
    pub fn render_final(&self) -> String {
        let done = self.load.ok + self.load.failed;
        format!(
            "playground summary: {done} requests, {} ok, {} failed, success {:.2}%, mTLS on every hop: {} ({} inbound requests, {} plaintext)",
            self.load.ok,
            self.load.failed,
            success(&self.load) * 100.0,
            if self.plaintext_inbound == 0.0 && self.inbound_total > 0.0 { "yes" } else { "no" },
            self.inbound_total,
            self.plaintext_inbound
        )
    }
}
