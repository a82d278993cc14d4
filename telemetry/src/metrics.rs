//! A small Prometheus registry: counters, gauges and histograms with labels, rendered as Prometheus
//! text. Each process (and each test) owns its registry, unlike the `metrics` crate's global one.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// Buckets for request latency in seconds: fine at the low end, where a proxy's cost shows.
pub const LATENCY_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

#[derive(Default, Debug)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Default, Debug)]
pub struct Gauge(AtomicI64);

impl Gauge {
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Box<[AtomicU64]>,
    /// Sum in nanoseconds (integer, so it can be atomic).
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: (0..bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: std::time::Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = self.bounds.iter().position(|b| secs <= *b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_nanos.fetch_add(d.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

enum Kind {
    Counter,
    Gauge,
    Histogram(&'static [f64]),
}

#[derive(Clone)]
enum Series {
    Counter(Arc<Counter>),
    Gauge(Arc<Gauge>),
    Histogram(Arc<Histogram>),
}

/// The series whose label values share a hash: (label values, series).
type Bucket = Vec<(Vec<String>, Series)>;

/// One metric name with its labelled series.
pub struct Family {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    kind: Kind,
    /// Series by a hash of their label values (a bucket holds the rare collisions).
    series: RwLock<HashMap<u64, Bucket>>,
}

impl Family {
    /// The series for these label values. The lookup hashes the values in place (no key is
    /// allocated), since it runs for every request.
    fn get_or_make(&self, values: &[&str]) -> Series {
        debug_assert_eq!(values.len(), self.labels.len(), "{}: wrong label count", self.name);
        let hash = hash_values(values);
        let same =
            |stored: &Vec<String>| stored.len() == values.len() && stored.iter().zip(values).all(|(a, b)| a == b);
        if let Some(bucket) = self.series.read().unwrap_or_else(|e| e.into_inner()).get(&hash) {
            if let Some((_, s)) = bucket.iter().find(|(k, _)| same(k)) {
                return s.clone();
            }
        }
        let mut map = self.series.write().unwrap_or_else(|e| e.into_inner());
        let bucket = map.entry(hash).or_default();
        if let Some((_, s)) = bucket.iter().find(|(k, _)| same(k)) {
            return s.clone();
        }
        let s = match self.kind {
            Kind::Counter => Series::Counter(Arc::default()),
            Kind::Gauge => Series::Gauge(Arc::default()),
            Kind::Histogram(b) => Series::Histogram(Arc::new(Histogram::new(b))),
        };
        bucket.push((values.iter().map(|v| v.to_string()).collect(), s.clone()));
        s
    }

    fn render(&self, out: &mut String) {
        let map = self.series.read().unwrap_or_else(|e| e.into_inner());
        let mut rows: Vec<&(Vec<String>, Series)> = map.values().flatten().collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        let type_name = match self.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram(_) => "histogram",
        };
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} {}", self.name, type_name);
        for (values, s) in rows {
            let labels = format_labels(self.labels, values, None);
            match s {
                Series::Counter(c) => {
                    let _ = writeln!(out, "{}{} {}", self.name, labels, c.get());
                }
                Series::Gauge(g) => {
                    let _ = writeln!(out, "{}{} {}", self.name, labels, g.get());
                }
                Series::Histogram(h) => {
                    let mut cumulative = 0;
                    for (i, b) in h.bounds.iter().enumerate() {
                        cumulative += h.counts[i].load(Ordering::Relaxed);
                        let l = format_labels(self.labels, values, Some(&format_float(*b)));
                        let _ = writeln!(out, "{}_bucket{} {}", self.name, l, cumulative);
                    }
                    let count = h.count.load(Ordering::Relaxed);
                    let l = format_labels(self.labels, values, Some("+Inf"));
                    let _ = writeln!(out, "{}_bucket{} {}", self.name, l, count);
                    let sum = h.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
                    let _ = writeln!(out, "{}_sum{} {}", self.name, labels, sum);
                    let _ = writeln!(out, "{}_count{} {}", self.name, labels, count);
                }
            }
        }
    }
}

/// FNV-1a over the label values, with a separator so that ("ab", "c") and ("a", "bc") differ.
fn hash_values(values: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for v in values {
        for b in v.bytes().chain(std::iter::once(0xff)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100000001b3);
        }
    }
    h
}

fn format_float(v: f64) -> String {
    let s = format!("{v}");
    if s.contains('.') || s.contains('e') {
        s
    } else {
        format!("{s}.0")
    }
}

fn format_labels(names: &[&str], values: &[String], le: Option<&str>) -> String {
    if names.is_empty() && le.is_none() {
        return String::new();
    }
    let mut out = String::from("{");
    let mut first = true;
    for (n, v) in names.iter().zip(values) {
        if !first {
            out.push(',');
        }
        first = false;
        let _ = write!(out, "{n}=\"");
        for ch in v.chars() {
            match ch {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    if let Some(le) = le {
        if !first {
            out.push(',');
        }
        let _ = write!(out, "le=\"{le}\"");
    }
    out.push('}');
    out
}

/// A labelled counter family.
#[derive(Clone)]
pub struct CounterVec(Arc<Family>);
/// A labelled gauge family.
#[derive(Clone)]
pub struct GaugeVec(Arc<Family>);
/// A labelled histogram family.
#[derive(Clone)]
pub struct HistogramVec(Arc<Family>);

impl CounterVec {
    pub fn with(&self, values: &[&str]) -> Arc<Counter> {
        match self.0.get_or_make(values) {
            Series::Counter(c) => c,
            _ => unreachable!("counter family holds counters"),
        }
    }
    /// Sum over every series whose labels match all of `filter` (name, value) pairs. For tests
    /// and summaries.
    pub fn sum_where(&self, filter: &[(&str, &str)]) -> u64 {
        let map = self.0.series.read().unwrap_or_else(|e| e.into_inner());
        map.values()
            .flatten()
            .filter(|(vals, _)| matches_filter(self.0.labels, vals, filter))
            .map(|(_, s)| match s {
                Series::Counter(c) => c.get(),
                _ => 0,
            })
            .sum()
    }
}

fn matches_filter(names: &[&str], values: &[String], filter: &[(&str, &str)]) -> bool {
    filter.iter().all(|(n, v)| names.iter().position(|x| x == n).is_some_and(|i| values[i] == *v))
}

impl GaugeVec {
    pub fn with(&self, values: &[&str]) -> Arc<Gauge> {
        match self.0.get_or_make(values) {
            Series::Gauge(g) => g,
            _ => unreachable!("gauge family holds gauges"),
        }
    }
    /// Drops every series (for gauges recomputed from scratch at each update).
    pub fn clear(&self) {
        self.0.series.write().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

impl HistogramVec {
    pub fn with(&self, values: &[&str]) -> Arc<Histogram> {
        match self.0.get_or_make(values) {
            Series::Histogram(h) => h,
            _ => unreachable!("histogram family holds histograms"),
        }
    }
}

/// The set of families a process exposes on `/metrics`.
#[derive(Default)]
pub struct Registry {
    families: Mutex<Vec<Arc<Family>>>,
}

impl Registry {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn add(&self, name: &'static str, help: &'static str, labels: &'static [&'static str], kind: Kind) -> Arc<Family> {
        let f = Arc::new(Family { name, help, labels, kind, series: RwLock::new(HashMap::new()) });
        self.families.lock().unwrap_or_else(|e| e.into_inner()).push(f.clone());
        f
    }

    pub fn counter(&self, name: &'static str, help: &'static str, labels: &'static [&'static str]) -> CounterVec {
        CounterVec(self.add(name, help, labels, Kind::Counter))
    }
    pub fn gauge(&self, name: &'static str, help: &'static str, labels: &'static [&'static str]) -> GaugeVec {
        GaugeVec(self.add(name, help, labels, Kind::Gauge))
    }
    pub fn histogram(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
        buckets: &'static [f64],
    ) -> HistogramVec {
        HistogramVec(self.add(name, help, labels, Kind::Histogram(buckets)))
    }

    /// Prometheus text exposition format 0.0.4.
    pub fn render(&self) -> String {
        let families = self.families.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut out = String::with_capacity(4096);
        for f in families {
            f.render(&mut out);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn renders_counters_gauges_and_histograms() {
        let r = Registry::new();
        let c = r.counter("weft_requests_total", "Requests.", &["direction", "status_code"]);
        c.with(&["inbound", "200"]).inc();
        c.with(&["inbound", "200"]).add(2);
        c.with(&["outbound", "503"]).inc();
        let g = r.gauge("weft_control_plane_connected", "Connected.", &[]);
        g.with(&[]).set(1);
        let h = r.histogram("weft_request_duration_seconds", "Latency.", &["direction"], &[0.001, 0.01]);
        h.with(&["inbound"]).observe(Duration::from_micros(500));
        h.with(&["inbound"]).observe(Duration::from_millis(5));
        h.with(&["inbound"]).observe(Duration::from_secs(1));
        let text = r.render();
        assert!(text.contains("weft_requests_total{direction=\"inbound\",status_code=\"200\"} 3\n"), "{text}");
        assert!(text.contains("weft_requests_total{direction=\"outbound\",status_code=\"503\"} 1\n"));
        assert!(text.contains("# TYPE weft_request_duration_seconds histogram"));
        assert!(text.contains("weft_request_duration_seconds_bucket{direction=\"inbound\",le=\"0.001\"} 1\n"));
        assert!(text.contains("weft_request_duration_seconds_bucket{direction=\"inbound\",le=\"0.01\"} 2\n"));
        assert!(text.contains("weft_request_duration_seconds_bucket{direction=\"inbound\",le=\"+Inf\"} 3\n"));
        assert!(text.contains("weft_request_duration_seconds_count{direction=\"inbound\"} 3\n"));
        assert!(text.contains("weft_control_plane_connected 1\n"));
        assert_eq!(c.sum_where(&[("direction", "inbound")]), 3);
        assert_eq!(c.sum_where(&[]), 4);
    }

    #[test]
    fn escapes_label_values() {
        let r = Registry::new();
        let c = r.counter("x_total", "X.", &["v"]);
        c.with(&["a\"b\\c\nd"]).inc();
        assert!(r.render().contains("x_total{v=\"a\\\"b\\\\c\\nd\"} 1"));
    }
}
