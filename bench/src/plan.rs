//! What a benchmark run consists of: the main measurement (one rate, a few connection counts,
//! several repetitions), a connection sweep and a rate sweep up to saturation — every round
//! interleaved across the topologies (A B C A B C…), so that slow drifts of a shared machine land
//! on all of them alike instead of on whichever ran last.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::load::LoadSummary;
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
}

impl Series {
    pub fn name(self) -> &'static str {
        match self {
            Self::Main => "main",
            Self::Connections => "connections",
            Self::Rate => "rate",
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
        }
    }
}

/// One measurement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    pub kind: Kind,
    pub series: Series,
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
    for rep in 0..s.repetitions {
        for &connections in &s.connections {
            for &kind in kinds {
                steps.push(Step {
                    kind,
                    series: Series::Main,
                    rate: s.rate,
                    connections,
                    rep,
                    warmup: s.warmup,
                    duration: s.duration,
                });
            }
        }
    }
    for rep in 0..s.sweep_repetitions {
        for &connections in s.connection_sweep.iter().filter(|c| !s.connections.contains(c)) {
            for &kind in kinds {
                steps.push(Step {
                    kind,
                    series: Series::Connections,
                    rate: s.rate,
                    connections,
                    rep,
                    warmup: s.sweep_warmup,
                    duration: s.sweep_duration,
                });
            }
        }
    }
    steps
}

/// One round of the rate sweep: every topology not yet saturated, at `rate`.
pub fn rate_round(s: &Settings, rate: f64, active: &[Kind]) -> Vec<Step> {
    active
        .iter()
        .map(|&kind| Step {
            kind,
            series: Series::Rate,
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
        assert!(secs < 17.0 * 60.0, "a full run's load time must stay well under 20 minutes: {secs}");
        let quick = planned_seconds(&Settings::quick(), &[Kind::Baseline, Kind::Floor, Kind::Weft, Kind::Envoy]);
        assert!(quick < 40.0, "{quick}");
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
