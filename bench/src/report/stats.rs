//! The figures the tables are made of. Added latency is paired per repetition (a topology's run
//! minus the baseline's run of the same round, which ran next to it), then summarised as median
//! (min–max) over repetitions — on a shared machine the spread is part of the result.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Meta;
use crate::load::Latency;
use crate::plan::{sustained, Series};
use crate::runner::RunRecord;
use crate::topology::Kind;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Spread {
    pub fn of(values: &[f64]) -> Option<Self> {
        if values.is_empty() {
            return None;
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
        Some(Self { median, min: v[0], max: v[n - 1], n })
    }
}

/// Spreads of the latency percentiles (µs) over repetitions.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50: Option<Spread>,
    pub p90: Option<Spread>,
    pub p99: Option<Spread>,
    pub p999: Option<Spread>,
    pub max: Option<Spread>,
}

/// Percentiles of one run in µs, signed: an added figure below zero is noise, and stays visible.
#[derive(Debug, Clone, Copy, Default)]
struct Point {
    p50: f64,
    p90: f64,
    p99: f64,
    p999: f64,
    max: f64,
}

impl From<Latency> for Point {
    fn from(l: Latency) -> Self {
        Self {
            p50: l.p50_us as f64,
            p90: l.p90_us as f64,
            p99: l.p99_us as f64,
            p999: l.p999_us as f64,
            max: l.max_us as f64,
        }
    }
}

impl std::ops::Sub for Point {
    type Output = Point;
    fn sub(self, b: Point) -> Point {
        Point {
            p50: self.p50 - b.p50,
            p90: self.p90 - b.p90,
            p99: self.p99 - b.p99,
            p999: self.p999 - b.p999,
            max: self.max - b.max,
        }
    }
}

impl Percentiles {
    fn of(points: &[Point]) -> Self {
        let s = |f: fn(&Point) -> f64| Spread::of(&points.iter().map(f).collect::<Vec<_>>());
        Self { p50: s(|p| p.p50), p90: s(|p| p.p90), p99: s(|p| p.p99), p999: s(|p| p.p999), max: s(|p| p.max) }
    }
}

/// One point of the rate sweep.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RatePoint {
    pub offered: f64,
    pub achieved: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub sustained: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TopologySummary {
    pub kind: Option<Kind>,
    /// Main series, by connection count: corrected and uncorrected absolute latency, achieved rate.
    pub corrected: BTreeMap<usize, Percentiles>,
    pub uncorrected: BTreeMap<usize, Percentiles>,
    pub achieved_qps: BTreeMap<usize, Spread>,
    /// Main series, by connection count: corrected latency minus the baseline's, paired by round.
    pub added: BTreeMap<usize, Percentiles>,
    /// vCPU per 1000 rps of each proxy process (main series, every run and both sides).
    pub vcpu_per_krps: Option<Spread>,
    pub vcpu_per_krps_by_role: BTreeMap<String, Spread>,
    /// Memory per proxy process (KiB): the larger of the two sides.
    pub rss_idle_kb: u64,
    pub rss_steady_kb: Option<Spread>,
    pub rss_peak_kb: u64,
    pub rss_anon_idle_kb: u64,
    pub rss_anon_steady_kb: Option<Spread>,
    /// Median corrected p50 (µs) by connection count (main and connection sweep).
    pub p50_by_connections: BTreeMap<usize, f64>,
    pub rate_curve: Vec<RatePoint>,
    /// Highest offered rate sustained, and the first one that was not.
    pub max_sustained_rate: Option<f64>,
    pub saturated_at: Option<f64>,
    /// By protocol, at the main rate and the sweep's connection count: the main protocol from the
    /// main series, the others from the protocol rows.
    pub by_protocol: BTreeMap<String, ProtocolRow>,
}

/// One protocol's figures for one topology.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProtocolRow {
    /// Corrected p50 / p99 (µs), absolute.
    pub p50: Option<Spread>,
    pub p99: Option<Spread>,
    /// Minus the baseline's run of the same protocol and round.
    pub added_p50: Option<Spread>,
    pub added_p99: Option<Spread>,
    pub vcpu_per_krps: Option<Spread>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Summary {
    pub topologies: Vec<TopologySummary>,
}

impl Summary {
    pub fn get(&self, kind: Kind) -> Option<&TopologySummary> {
        self.topologies.iter().find(|t| t.kind == Some(kind))
    }
}

fn main_runs(records: &[RunRecord], kind: Kind) -> impl Iterator<Item = &RunRecord> {
    records.iter().filter(move |r| r.topology == kind && r.series == Series::Main)
}

pub fn summarize(meta: &Meta, records: &[RunRecord]) -> Summary {
    let mut kinds: Vec<Kind> = meta.topologies.iter().map(|t| t.kind).collect();
    kinds.sort();
    let mut out = Summary::default();
    for kind in kinds {
        let mut t = TopologySummary { kind: Some(kind), ..Default::default() };
        let conns: std::collections::BTreeSet<usize> = main_runs(records, kind).map(|r| r.load.connections).collect();
        for &c in &conns {
            let runs: Vec<&RunRecord> = main_runs(records, kind).filter(|r| r.load.connections == c).collect();
            t.corrected.insert(c, Percentiles::of(&runs.iter().map(|r| r.load.corrected.into()).collect::<Vec<_>>()));
            t.uncorrected
                .insert(c, Percentiles::of(&runs.iter().map(|r| r.load.uncorrected.into()).collect::<Vec<_>>()));
            if let Some(s) = Spread::of(&runs.iter().map(|r| r.load.actual_qps).collect::<Vec<_>>()) {
                t.achieved_qps.insert(c, s);
            }
            if kind != Kind::Baseline {
                let added: Vec<Point> = runs
                    .iter()
                    .filter_map(|r| {
                        let b =
                            main_runs(records, Kind::Baseline).find(|b| b.load.connections == c && b.rep == r.rep)?;
                        Some(Point::from(r.load.corrected) - Point::from(b.load.corrected))
                    })
                    .collect();
                t.added.insert(c, Percentiles::of(&added));
            }
        }

        // Cost: every main run, both sides.
        let mut vcpu = vec![];
        let mut by_role: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        let (mut steady, mut anon) = (vec![], vec![]);
        for r in main_runs(records, kind) {
            for (p, v) in r.proxies.iter().zip(r.vcpu_per_krps()) {
                vcpu.push(v);
                by_role.entry(p.role.clone()).or_default().push(v);
            }
            if let Some(m) = r.proxies.iter().map(|p| p.usage.vm_rss_steady_kb).max() {
                steady.push(m as f64);
            }
            if let Some(m) = r.proxies.iter().map(|p| p.usage.rss_anon_steady_kb).max() {
                anon.push(m as f64);
            }
            t.rss_peak_kb = t.rss_peak_kb.max(r.proxies.iter().map(|p| p.usage.vm_rss_peak_kb).max().unwrap_or(0));
        }
        t.vcpu_per_krps = Spread::of(&vcpu);
        t.vcpu_per_krps_by_role = by_role.into_iter().filter_map(|(k, v)| Some((k, Spread::of(&v)?))).collect();
        t.rss_steady_kb = Spread::of(&steady);
        t.rss_anon_steady_kb = Spread::of(&anon);
        if let Some(tm) = meta.topology(kind) {
            t.rss_idle_kb = tm.proxies.iter().map(|p| p.idle.vm_rss_kb).max().unwrap_or(0);
            t.rss_anon_idle_kb = tm.proxies.iter().map(|p| p.idle.rss_anon_kb).max().unwrap_or(0);
        }

        // Latency against connections: the main series and the sweep, at the main rate.
        let mut by_conns: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
        for r in records.iter().filter(|r| {
            r.topology == kind
                && matches!(r.series, Series::Main | Series::Connections)
                && r.load.target_rate == meta.settings.rate
        }) {
            by_conns.entry(r.load.connections).or_default().push(r.load.corrected.p50_us as f64);
        }
        t.p50_by_connections = by_conns.into_iter().filter_map(|(c, v)| Some((c, Spread::of(&v)?.median))).collect();

        // The rate curve at the sweep's connection count: the main rate's runs, then the sweep.
        let sweep_c = meta.settings.rate_sweep_connections;
        let at_main: Vec<&RunRecord> = main_runs(records, kind).filter(|r| r.load.connections == sweep_c).collect();
        if let (Some(p50), Some(p99), Some(q)) = (
            Spread::of(&at_main.iter().map(|r| r.load.corrected.p50_us as f64).collect::<Vec<_>>()),
            Spread::of(&at_main.iter().map(|r| r.load.corrected.p99_us as f64).collect::<Vec<_>>()),
            Spread::of(&at_main.iter().map(|r| r.load.actual_qps).collect::<Vec<_>>()),
        ) {
            t.rate_curve.push(RatePoint {
                offered: meta.settings.rate,
                achieved: q.median,
                p50_us: p50.median as u64,
                p99_us: p99.median as u64,
                sustained: at_main.iter().all(|r| sustained(&r.load)),
            });
        }
        for r in records.iter().filter(|r| r.topology == kind && r.series == Series::Rate) {
            t.rate_curve.push(RatePoint {
                offered: r.load.target_rate,
                achieved: r.load.actual_qps,
                p50_us: r.load.corrected.p50_us,
                p99_us: r.load.corrected.p99_us,
                sustained: sustained(&r.load),
            });
        }
        t.rate_curve.sort_by(|a, b| a.offered.total_cmp(&b.offered));
        t.max_sustained_rate = t.rate_curve.iter().take_while(|p| p.sustained).map(|p| p.offered).last();
        t.saturated_at = t.rate_curve.iter().find(|p| !p.sustained).map(|p| p.offered);
        t.by_protocol = by_protocol(meta, records, kind);
        out.topologies.push(t);
    }
    out
}

/// The runs comparable across protocols: the main series at the sweep's connection count, and
/// the protocol rows.
fn protocol_runs<'a>(meta: &Meta, records: &'a [RunRecord], kind: Kind) -> impl Iterator<Item = &'a RunRecord> {
    let (c, rate) = (meta.settings.rate_sweep_connections, meta.settings.rate);
    records.iter().filter(move |r| {
        r.topology == kind
            && (r.series == Series::Protocol || (r.series == Series::Main && r.load.connections == c))
            && r.load.target_rate == rate
    })
}

fn by_protocol(meta: &Meta, records: &[RunRecord], kind: Kind) -> BTreeMap<String, ProtocolRow> {
    let mut rows = BTreeMap::new();
    let protocols: std::collections::BTreeSet<String> =
        protocol_runs(meta, records, kind).map(|r| r.load.protocol.clone()).collect();
    for protocol in protocols {
        let runs: Vec<&RunRecord> =
            protocol_runs(meta, records, kind).filter(|r| r.load.protocol == protocol).collect();
        let added: Vec<Point> = runs
            .iter()
            .filter_map(|r| {
                let b = protocol_runs(meta, records, Kind::Baseline)
                    .find(|b| b.series == r.series && b.load.protocol == protocol && b.rep == r.rep)?;
                Some(Point::from(r.load.corrected) - Point::from(b.load.corrected))
            })
            .collect();
        let vcpu: Vec<f64> = runs.iter().flat_map(|r| r.vcpu_per_krps()).collect();
        let abs: Vec<Point> = runs.iter().map(|r| r.load.corrected.into()).collect();
        let (abs, added) = (Percentiles::of(&abs), Percentiles::of(&added));
        rows.insert(
            protocol,
            ProtocolRow {
                p50: abs.p50,
                p99: abs.p99,
                added_p50: if kind == Kind::Baseline { None } else { added.p50 },
                added_p99: if kind == Kind::Baseline { None } else { added.p99 },
                vcpu_per_krps: Spread::of(&vcpu),
            },
        );
    }
    rows
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::load::LoadSummary;
    use crate::resources::Usage;
    use crate::runner::ProxyUsage;

    #[test]
    fn spread_is_median_min_max() {
        assert_eq!(Spread::of(&[]), None);
        let s = Spread::of(&[5.0, 1.0, 3.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (3.0, 1.0, 5.0, 3));
        assert_eq!(Spread::of(&[4.0, 1.0, 3.0, 2.0]).unwrap().median, 2.5);
    }

    pub(crate) fn record(
        kind: Kind,
        series: Series,
        rate: f64,
        conns: usize,
        rep: usize,
        p50: u64,
        cpu: f64,
    ) -> RunRecord {
        let lat = Latency {
            p50_us: p50,
            p90_us: p50 * 2,
            p99_us: p50 * 4,
            p999_us: p50 * 8,
            max_us: p50 * 10,
            ..Default::default()
        };
        let proxies = if kind == Kind::Baseline {
            vec![]
        } else {
            ["client-side", "server-side"]
                .iter()
                .map(|role| ProxyUsage {
                    role: role.to_string(),
                    pid: 1,
                    comm: "p".into(),
                    usage: Usage {
                        cpu_seconds: cpu,
                        window_seconds: 10.0,
                        vm_rss_steady_kb: 5000,
                        vm_rss_peak_kb: 6000,
                        rss_anon_steady_kb: 1000,
                        ..Default::default()
                    },
                })
                .collect()
        };
        RunRecord {
            id: format!("{kind}-{rep}"),
            topology: kind,
            series,
            rep,
            target: String::new(),
            load: LoadSummary {
                target_rate: rate,
                actual_qps: rate,
                connections: conns,
                corrected: lat,
                uncorrected: lat,
                ..Default::default()
            },
            proxies,
        }
    }

    pub(crate) fn meta(kinds: &[Kind]) -> Meta {
        Meta {
            command: "weft bench".into(),
            placement: crate::topology::Placement::Loopback,
            quick: false,
            started: String::new(),
            finished: String::new(),
            machine: Default::default(),
            host_load: Default::default(),
            settings: crate::plan::Settings {
                rate: 1000.0,
                rate_sweep_connections: 16,
                ..crate::plan::Settings::full()
            },
            workload: crate::runner::Workload {
                protocol: crate::load::Protocol::Http1,
                payload: 1024,
                request_timeout: std::time::Duration::from_secs(10),
                load_threads: 1,
            },
            topologies: kinds
                .iter()
                .map(|&kind| super::super::TopologyMeta { kind, info: Default::default(), proxies: vec![] })
                .collect(),
            weft_version: String::new(),
        }
    }

    #[test]
    fn added_latency_is_paired_per_round_and_cost_is_per_thousand_rps() {
        let mut recs = vec![];
        // Baseline drifts from 100 to 300 µs over three rounds; the proxy adds 50, 60, 70.
        for (rep, (b, w)) in [(100, 150), (200, 260), (300, 370)].into_iter().enumerate() {
            recs.push(record(Kind::Baseline, Series::Main, 1000.0, 16, rep, b, 0.0));
            recs.push(record(Kind::Weft, Series::Main, 1000.0, 16, rep, w, 0.8));
        }
        let s = summarize(&meta(&[Kind::Baseline, Kind::Weft]), &recs);
        let weft = s.get(Kind::Weft).unwrap();
        let added = weft.added[&16].p50.unwrap();
        assert_eq!((added.median, added.min, added.max), (60.0, 50.0, 70.0), "paired by round, not by medians");
        assert_eq!(weft.added[&16].p99.unwrap().median, 240.0);
        assert!(s.get(Kind::Baseline).unwrap().added.is_empty());
        // 0.8 CPU-seconds over 10 s at 1000 rps: 0.08 vCPU per 1000 rps, for each side.
        let cpu = weft.vcpu_per_krps.unwrap();
        assert!((cpu.median - 0.08).abs() < 1e-9 && cpu.n == 6, "{cpu:?}");
        assert_eq!(weft.rss_steady_kb.unwrap().median, 5000.0);
        assert_eq!(weft.rss_peak_kb, 6000);
    }

    #[test]
    fn protocol_rows_are_paired_with_the_baselines_run_of_the_same_protocol() {
        let mut recs = vec![];
        for (series, protocol, b, w) in [
            (Series::Main, "http1", 100, 250),
            (Series::Protocol, "grpc", 150, 400),
            (Series::Protocol, "tcp", 80, 120),
        ] {
            for (kind, p50) in [(Kind::Baseline, b), (Kind::Weft, w)] {
                let mut r = record(kind, series, 1000.0, 16, 0, p50, 0.5);
                r.load.protocol = protocol.into();
                recs.push(r);
            }
        }
        // Another connection count of the main series is not this table's.
        recs.push(record(Kind::Weft, Series::Main, 1000.0, 4, 0, 9_999, 0.5));
        let s = summarize(&meta(&[Kind::Baseline, Kind::Weft]), &recs);
        let w = &s.get(Kind::Weft).unwrap().by_protocol;
        assert_eq!(w.keys().collect::<Vec<_>>(), ["grpc", "http1", "tcp"]);
        assert_eq!(w["http1"].added_p50.unwrap().median, 150.0);
        assert_eq!(w["grpc"].added_p50.unwrap().median, 250.0);
        assert_eq!(w["tcp"].added_p50.unwrap().median, 40.0);
        assert_eq!(w["tcp"].vcpu_per_krps.unwrap().median, 0.05);
        let b = &s.get(Kind::Baseline).unwrap().by_protocol;
        assert_eq!((b["tcp"].p50.unwrap().median, b["tcp"].added_p50), (80.0, None));
    }

    #[test]
    fn rate_curve_finds_the_highest_sustained_rate() {
        let mut recs = vec![record(Kind::Weft, Series::Main, 1000.0, 16, 0, 200, 0.5)];
        recs.push(record(Kind::Weft, Series::Rate, 4000.0, 16, 0, 300, 0.5));
        let mut sat = record(Kind::Weft, Series::Rate, 8000.0, 16, 0, 900_000, 0.5);
        sat.load.actual_qps = 6000.0;
        recs.push(sat);
        let s = summarize(&meta(&[Kind::Weft]), &recs);
        let t = s.get(Kind::Weft).unwrap();
        assert_eq!(t.rate_curve.iter().map(|p| p.offered).collect::<Vec<_>>(), [1000.0, 4000.0, 8000.0]);
        assert_eq!(t.max_sustained_rate, Some(4000.0));
        assert_eq!(t.saturated_at, Some(8000.0));
        assert_eq!(t.p50_by_connections[&16], 200.0);
    }
}
