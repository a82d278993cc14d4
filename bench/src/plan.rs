//! What a benchmark run consists of: the main measurement (one rate, a few connection counts,
//! several repetitions), a connection sweep, the same rate in other protocols (HTTP/2, gRPC,
//! opaque TCP) and a rate sweep that goes on until every topology saturates — every round
//! interleaved across the topologies (A B C A B C…), so that slow drifts of a shared machine land
//! on all of them alike instead of on whichever ran last.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::load::{LoadSummary, Protocol};
use crate::topology::Kind;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Series {
    /// The reference point: one rate, a few connection counts, several repetitions.
    Main,
    /// Latency against the number of connections at the main rate.
    Connections,
    /// Latency against the offered rate, up to saturation.
    Rate,
    /// The main rate in another protocol than the main measurement's.
    Protocol,
}

impl Series {
    pub fn name(self) -> &'static str {
        match self {
            Self::Main => "main",
            Self::Connections => "connections",
            Self::Rate => "rate",
            Self::Protocol => "protocol",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    pub rate: f64,
    pub connections: Vec<usize>,
    pub repetitions: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub connection_sweep: Vec<usize>,
    pub sweep_repetitions: usize,
    pub rate_sweep: Vec<f64>,
    /// Connections used in the rate sweep.
    pub rate_sweep_connections: usize,
    pub sweep_duration: Duration,
    pub sweep_warmup: Duration,
    /// Past the listed rates, the sweep goes on in steps of this factor until every topology has
    /// saturated, up to `rate_sweep_limit` (so each one's knee is found, not the list's end).
    pub rate_sweep_growth: f64,
    pub rate_sweep_limit: f64,
    /// Other protocols measured at the main rate (at the sweep's connection count, with the sweep's
    /// run length), beside the main measurement's.
    pub protocols: Vec<Protocol>,
    pub protocol_repetitions: usize,
}

impl Settings {
    /// A few seconds per topology: proves the harness and the reports (CI).
    pub fn quick() -> Self {
        Self {
            rate: 1000.0,
            connections: vec![4, 16],
            repetitions: 1,
            duration: Duration::from_secs(2),
            warmup: Duration::from_millis(500),
            connection_sweep: vec![],
            sweep_repetitions: 1,
            rate_sweep: vec![2000.0],
            rate_sweep_connections: 16,
            sweep_duration: Duration::from_millis(1500),
            sweep_warmup: Duration::from_millis(500),
            rate_sweep_growth: 1.0,
            rate_sweep_limit: 2000.0,
            protocols: vec![Protocol::Http2, Protocol::Grpc, Protocol::Tcp],
            protocol_repetitions: 1,
        }
    }

    /// The documented method (bench.md): 1000 rps, 4 and 16 connections, 5 interleaved
    /// repetitions; the classic connection sweep; a rate sweep to saturation.
    pub fn full() -> Self {
        Self {
            rate: 1000.0,
            connections: vec![4, 16],
            repetitions: 5,
            duration: Duration::from_secs(8),
            warmup: Duration::from_secs(2),
            connection_sweep: vec![8, 32, 100],
            sweep_repetitions: 2,
            rate_sweep: vec![2000.0, 4000.0, 6000.0, 8000.0, 10_000.0, 12_000.0, 16_000.0, 20_000.0],
            rate_sweep_connections: 16,
            sweep_duration: Duration::from_secs(4),
            sweep_warmup: Duration::from_secs(1),
            rate_sweep_growth: 1.25,
            rate_sweep_limit: 100_000.0,
            protocols: vec![Protocol::Http2, Protocol::Grpc, Protocol::Tcp],
            protocol_repetitions: 3,
        }
    }
}

/// One measurement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    pub kind: Kind,
    pub series: Series,
    /// `None`: the session's main protocol.
    pub protocol: Option<Protocol>,
    pub rate: f64,
    pub connections: usize,
    pub rep: usize,
    pub warmup: Duration,
    pub duration: Duration,
}

/// The main measurement and the connection sweep, interleaved across `kinds` in every round.
/// (The connection sweep skips counts the main measurement already covers.)
pub fn fixed_steps(s: &Settings, kinds: &[Kind]) -> Vec<Step> {
    let mut steps = vec![];
    // One round: every topology once, with the same settings.
    let mut round = |series, protocol, connections, rep, warmup, duration| {
        for &kind in kinds {
            steps.push(Step { kind, series, protocol, rate: s.rate, connections, rep, warmup, duration });
        }
    };
    for rep in 0..s.repetitions {
        for &connections in &s.connections {
            round(Series::Main, None, connections, rep, s.warmup, s.duration);
        }
    }
    for rep in 0..s.sweep_repetitions {
        for &connections in s.connection_sweep.iter().filter(|c| !s.connections.contains(c)) {
            round(Series::Connections, None, connections, rep, s.sweep_warmup, s.sweep_duration);
        }
    }
    for rep in 0..s.protocol_repetitions {
        for &protocol in &s.protocols {
            let c = s.rate_sweep_connections;
            round(Series::Protocol, Some(protocol), c, rep, s.sweep_warmup, s.sweep_duration);
        }
    }
    steps
}

/// The rate sweep's steps: the listed rates, then on by `rate_sweep_growth` (rounded to 1000 rps)
/// up to `rate_sweep_limit`. The caller stops when every topology has saturated.
pub fn sweep_rates(s: &Settings) -> Vec<f64> {
    let mut rates = s.rate_sweep.clone();
    let Some(&last) = rates.last() else { return rates };
    // Only a finite start and a factor above 1 end (NaN compares false to everything).
    if !(s.rate_sweep_growth > 1.0 && last.is_finite()) {
        return rates;
    }
    let mut r = last;
    loop {
        // At least 1000 rps a step: rounding must never keep the sweep in place.
        r = (((r * s.rate_sweep_growth) / 1000.0).round() * 1000.0).max(r + 1000.0);
        if r > s.rate_sweep_limit {
            return rates;
        }
        rates.push(r);
    }
}

/// One round of the rate sweep: every topology not yet saturated, at `rate`.
pub fn rate_round(s: &Settings, rate: f64, active: &[Kind]) -> Vec<Step> {
    active
        .iter()
        .map(|&kind| Step {
            kind,
            series: Series::Rate,
            protocol: None,
            rate,
            connections: s.rate_sweep_connections,
            rep: 0,
            warmup: s.sweep_warmup,
            duration: s.sweep_duration,
        })
        .collect()
}

/// Load time of the whole plan if nothing saturates (for the progress bar).
pub fn planned_seconds(s: &Settings, kinds: &[Kind]) -> f64 {
    let fixed: f64 = fixed_steps(s, kinds).iter().map(|st| (st.warmup + st.duration).as_secs_f64()).sum();
    // The sweep's extension past its list runs until each topology saturates: not counted.
    fixed + (s.sweep_warmup + s.sweep_duration).as_secs_f64() * (s.rate_sweep.len() * kinds.len()) as f64
}

/// Latency at which a queue is clearly building up: far above any proxy's normal tail here.
pub const BACKLOG_P90: Duration = Duration::from_millis(25);

/// Whether the target kept up with the offered rate: it achieved at least 95 % of it, every slot
/// was sent, and no backlog built up (the corrected p90 stays far below a queue's).
pub fn sustained(l: &LoadSummary) -> bool {
    l.actual_qps >= 0.95 * l.target_rate && l.unsent == 0 && l.corrected.p90_us <= BACKLOG_P90.as_micros() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::Latency;

    #[test]
    fn rounds_interleave_topologies() {
        let kinds = [Kind::Baseline, Kind::Weft, Kind::Envoy];
        let s =
            Settings { repetitions: 2, connection_sweep: vec![8, 16, 32], sweep_repetitions: 1, ..Settings::full() };
        let steps = fixed_steps(&s, &kinds);
        let order: Vec<Kind> = steps.iter().take(6).map(|s| s.kind).collect();
        assert_eq!(order, [Kind::Baseline, Kind::Weft, Kind::Envoy, Kind::Baseline, Kind::Weft, Kind::Envoy]);
        assert_eq!(steps.iter().filter(|s| s.series == Series::Main).count(), 2 * 2 * 3);
        // 16 is in the main measurement already: the sweep adds 8 and 32.
        let sweep: Vec<usize> =
            steps.iter().filter(|s| s.series == Series::Connections).map(|s| s.connections).collect();
        assert_eq!(sweep, [8, 8, 8, 32, 32, 32]);
        assert_eq!((steps[2].rep, steps[2].connections), (0, 4));
        assert_eq!((steps[3].rep, steps[3].connections), (0, 16));
        assert_eq!((steps[6].rep, steps[6].connections), (1, 4));
    }

    #[test]
    fn plan_length_bounds_the_full_run() {
        let secs = planned_seconds(&Settings::full(), &Kind::ALL);
        assert!(
            secs < 19.0 * 60.0,
            "a full run's load time (before the sweep's extension) must stay under 20 minutes: {secs}"
        );
        let quick = planned_seconds(&Settings::quick(), &[Kind::Baseline, Kind::Floor, Kind::Weft, Kind::Envoy]);
        assert!(quick < 60.0, "{quick}");
    }

    #[test]
    fn protocol_rows_run_at_the_main_rate_for_every_topology() {
        let kinds = [Kind::Baseline, Kind::Weft];
        let s = Settings { protocol_repetitions: 2, ..Settings::quick() };
        let rows: Vec<(Kind, Option<Protocol>, usize)> = fixed_steps(&s, &kinds)
            .iter()
            .filter(|st| st.series == Series::Protocol)
            .map(|st| (st.kind, st.protocol, st.rep))
            .collect();
        assert_eq!(rows.len(), 2 * 3 * 2);
        assert_eq!(rows[..2], [(Kind::Baseline, Some(Protocol::Http2), 0), (Kind::Weft, Some(Protocol::Http2), 0)]);
        assert!(fixed_steps(&s, &kinds).iter().all(|st| st.series == Series::Protocol || st.protocol.is_none()));
    }

    #[test]
    fn the_rate_sweep_goes_past_its_list_to_the_limit() {
        let rates = sweep_rates(&Settings::full());
        assert_eq!(rates[..8], Settings::full().rate_sweep[..]);
        assert_eq!(rates[8..11], [25_000.0, 31_000.0, 39_000.0]);
        assert!(rates.last().is_some_and(|&r| r <= 100_000.0 && r * 1.25 > 100_000.0), "{rates:?}");
        assert_eq!(sweep_rates(&Settings::quick()), [2000.0]);
        let slow = Settings {
            rate_sweep: vec![1000.0],
            rate_sweep_growth: 1.01,
            rate_sweep_limit: 4000.0,
            ..Settings::full()
        };
        assert_eq!(sweep_rates(&slow), [1000.0, 2000.0, 3000.0, 4000.0], "a small factor still moves on");
    }

    #[test]
    fn saturation_is_missing_rate_unsent_slots_or_a_queue() {
        let ok = LoadSummary {
            target_rate: 4000.0,
            actual_qps: 3990.0,
            corrected: Latency { p90_us: 900, ..Default::default() },
            ..Default::default()
        };
        assert!(sustained(&ok));
        assert!(!sustained(&LoadSummary { actual_qps: 3700.0, ..ok.clone() }));
        assert!(!sustained(&LoadSummary { unsent: 1, ..ok.clone() }));
        let queued = LoadSummary { corrected: Latency { p90_us: 400_000, ..Default::default() }, ..ok };
        assert!(!sustained(&queued));
    }
}
