//! Metrics through the `metrics` crate and its Prometheus exporter. Each process (and each test)
//! owns a [`Registry`]: its own exporter recorder — not the crate's global one, so that two proxies
//! in one test process never share counters — rendered by Weft's own admin server. Families are
//! declared once with their help text and label names; `with(values)` hands out a series' handle,
//! which callers on the request path keep, so that a request does no lookup.

use std::sync::Arc;
use std::time::Duration;

use metrics::{Key, KeyName, Label, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

/// Buckets for request latency in seconds: fine at the low end, where a proxy's cost shows.
pub const LATENCY_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// How often histogram samples are folded into their buckets when nobody scrapes: the exporter
/// keeps raw samples until then, so without it an unscraped proxy would grow with its traffic.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

static METADATA: Metadata<'static> = Metadata::new(module_path!(), metrics::Level::INFO, None);

/// A counter series.
#[derive(Clone)]
pub struct Counter(metrics::Counter);

impl Counter {
    pub fn inc(&self) {
        self.0.increment(1);
    }
    pub fn add(&self, n: u64) {
        self.0.increment(n);
    }
}

/// A gauge series.
#[derive(Clone)]
pub struct Gauge(metrics::Gauge);

impl Gauge {
    pub fn set(&self, v: i64) {
        self.0.set(v as f64);
    }
    pub fn inc(&self) {
        self.0.increment(1.0);
    }
    pub fn dec(&self) {
        self.0.decrement(1.0);
    }
}

/// A histogram series (of durations, in seconds).
#[derive(Clone)]
pub struct Histogram(metrics::Histogram);

impl Histogram {
    pub fn observe(&self, d: Duration) {
        self.0.record(d.as_secs_f64());
    }
}

/// One metric name and its label names.
struct Family {
    registry: Arc<Registry>,
    name: &'static str,
    labels: &'static [&'static str],
}

impl Family {
    fn key(&self, values: &[&str]) -> Key {
        debug_assert_eq!(values.len(), self.labels.len(), "{}: wrong label count", self.name);
        let labels: Vec<Label> = self.labels.iter().zip(values).map(|(k, v)| Label::new(*k, v.to_string())).collect();
        Key::from_parts(self.name, labels)
    }
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
    /// The series with these label values (a lookup: keep the handle where it is used often).
    pub fn with(&self, values: &[&str]) -> Counter {
        Counter(self.0.registry.recorder.register_counter(&self.0.key(values), &METADATA))
    }
}

impl GaugeVec {
    pub fn with(&self, values: &[&str]) -> Gauge {
        Gauge(self.0.registry.recorder.register_gauge(&self.0.key(values), &METADATA))
    }
}

impl HistogramVec {
    pub fn with(&self, values: &[&str]) -> Histogram {
        Histogram(self.0.registry.recorder.register_histogram(&self.0.key(values), &METADATA))
    }
}

/// The metrics one process exposes on `/metrics`.
pub struct Registry {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
}

impl Registry {
    /// A registry whose histograms use [`LATENCY_BUCKETS`].
    pub fn new() -> Arc<Self> {
        Self::with_buckets(LATENCY_BUCKETS)
    }

    pub fn with_buckets(buckets: &[f64]) -> Arc<Self> {
        let recorder = PrometheusBuilder::new().set_buckets(buckets).expect("buckets are not empty").build_recorder();
        let handle = recorder.handle();
        Arc::new(Self { recorder, handle })
    }

    fn family(self: &Arc<Self>, name: &'static str, labels: &'static [&'static str]) -> Arc<Family> {
        Arc::new(Family { registry: self.clone(), name, labels })
    }

    pub fn counter(
        self: &Arc<Self>,
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> CounterVec {
        self.recorder.describe_counter(KeyName::from(name), None, SharedString::const_str(help));
        CounterVec(self.family(name, labels))
    }

    pub fn gauge(
        self: &Arc<Self>,
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> GaugeVec {
        self.recorder.describe_gauge(KeyName::from(name), None, SharedString::const_str(help));
        GaugeVec(self.family(name, labels))
    }

    /// A histogram family; its buckets are the registry's.
    pub fn histogram(
        self: &Arc<Self>,
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> HistogramVec {
        self.recorder.describe_histogram(KeyName::from(name), Some(Unit::Seconds), SharedString::const_str(help));
        HistogramVec(self.family(name, labels))
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// Folds histogram samples into their buckets (see [`UPKEEP_INTERVAL`]).
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }

    /// Runs [`Registry::upkeep`] every [`UPKEEP_INTERVAL`], for the life of the process (spawn it on
    /// the admin runtime, away from the data plane).
    pub async fn upkeep_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(UPKEEP_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.upkeep();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_and_histograms_with_labels_in_order() {
        let r = Registry::with_buckets(&[0.001, 0.01]);
        let c = r.counter("weft_requests_total", "Requests.", &["direction", "status_code"]);
        c.with(&["inbound", "200"]).inc();
        c.with(&["inbound", "200"]).add(2);
        c.with(&["outbound", "503"]).inc();
        let g = r.gauge("weft_control_plane_connected", "Connected.", &[]);
        g.with(&[]).set(1);
        let h = r.histogram("weft_request_duration_seconds", "Latency.", &["direction", "service"]);
        let series = h.with(&["inbound", "bar"]);
        series.observe(Duration::from_micros(500));
        series.observe(Duration::from_millis(5));
        series.observe(Duration::from_secs(1));
        let text = r.render();
        assert!(text.contains("weft_requests_total{direction=\"inbound\",status_code=\"200\"} 3\n"), "{text}");
        assert!(text.contains("weft_requests_total{direction=\"outbound\",status_code=\"503\"} 1\n"), "{text}");
        assert!(text.contains("# TYPE weft_request_duration_seconds histogram"), "{text}");
        assert!(text.contains("# HELP weft_requests_total Requests."), "{text}");
        assert!(
            text.contains(
                "weft_request_duration_seconds_bucket{direction=\"inbound\",service=\"bar\",le=\"0.001\"} 1\n"
            ),
            "{text}"
        );
        assert!(text
            .contains("weft_request_duration_seconds_bucket{direction=\"inbound\",service=\"bar\",le=\"0.01\"} 2\n"));
        assert!(text
            .contains("weft_request_duration_seconds_bucket{direction=\"inbound\",service=\"bar\",le=\"+Inf\"} 3\n"));
        assert!(text.contains("weft_request_duration_seconds_count{direction=\"inbound\",service=\"bar\"} 3\n"));
        assert!(text.contains("weft_control_plane_connected 1\n"), "{text}");
    }

    #[test]
    fn two_registries_never_share_a_series() {
        let (a, b) = (Registry::new(), Registry::new());
        a.counter("x_total", "X.", &[]).with(&[]).inc();
        b.counter("x_total", "X.", &[]).with(&[]);
        assert!(a.render().contains("x_total 1"));
        assert!(b.render().contains("x_total 0"));
    }

    #[test]
    fn upkeep_keeps_an_unscraped_histogram_from_growing() {
        let r = Registry::new();
        let h = r.histogram("lat_seconds", "L.", &[]).with(&[]);
        for _ in 0..10_000 {
            h.observe(Duration::from_millis(1));
        }
        r.upkeep();
        assert!(r.render().contains("lat_seconds_count 10000"));
    }
}
