//! The Markdown report: how the run was made, added latency over the baseline, absolute latency
//! (corrected beside uncorrected), cost per proxy, ratios between the proxies, the same load in
//! other protocols, latency against connections and against rate.

use std::fmt::Write;

use super::stats::{Percentiles, Spread, Summary, TopologySummary};
use super::Meta;
use crate::topology::Kind;

fn us(s: Option<Spread>) -> String {
    match s {
        Some(s) if s.n > 1 => format!("{:.0} µs ({:.0}–{:.0})", s.median, s.min, s.max),
        Some(s) => format!("{:.0} µs", s.median),
        None => "–".into(),
    }
}

fn num(s: Option<Spread>, digits: usize) -> String {
    match s {
        Some(s) if s.n > 1 => format!("{:.d$} ({:.d$}–{:.d$})", s.median, s.min, s.max, d = digits),
        Some(s) => format!("{:.d$}", s.median, d = digits),
        None => "–".into(),
    }
}

fn mb(kb: f64) -> String {
    format!("{:.1} MB", kb / 1024.0)
}

fn rate(t: &TopologySummary) -> String {
    match (t.max_sustained_rate, t.saturated_at) {
        (Some(r), Some(s)) => format!("{r:.0} rps (not {s:.0})"),
        (Some(r), None) => format!("≥ {r:.0} rps (highest tried)"),
        (None, Some(s)) => format!("< {s:.0} rps"),
        (None, None) => "–".into(),
    }
}

fn ratio(a: Option<Spread>, b: Option<Spread>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b.median > 0.0 => format!("{:.2}×", a.median / b.median),
        _ => "–".into(),
    }
}

fn proxies(s: &Summary) -> Vec<&TopologySummary> {
    s.topologies.iter().filter(|t| t.kind.is_some_and(Kind::has_proxies)).collect()
}

fn name(t: &TopologySummary) -> &'static str {
    t.kind.map(Kind::name).unwrap_or("?")
}

pub fn render(meta: &Meta, s: &Summary) -> String {
    let mut o = String::new();
    let st = &meta.settings;
    let conns = &st.connections;
    let big = conns.iter().copied().max().unwrap_or(16);
    let _ = writeln!(o, "# weft bench results\n");
    let _ = writeln!(o, "- command: `{}`", meta.command);
    let _ = writeln!(o, "- when: {} to {}", meta.started, meta.finished);
    let _ = writeln!(
        o,
        "- machine: {} vCPU, {}, kernel {}, {} MB RAM",
        meta.machine.nproc, meta.machine.cpu_model, meta.machine.kernel, meta.machine.mem_total_mb
    );
    let _ = writeln!(
        o,
        "- placement: {}; {} with {} B answers; open loop at {} rps; {} interleaved repetition(s) of {} s (after {} s of warm-up) per connection count",
        serde_json::to_value(meta.placement).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default(),
        meta.workload.protocol.name(),
        meta.workload.payload,
        st.rate,
        st.repetitions,
        st.duration.as_secs_f64(),
        st.warmup.as_secs_f64()
    );
    let h = &meta.host_load;
    let _ = writeln!(
        o,
        "- host activity over the session: {:.0} % of CPU time busy (the benchmark included), {:.1} % stolen by the hypervisor; load average {} at the start, {} at the end",
        h.busy_percent, h.steal_percent, h.loadavg_start, h.loadavg_end
    );
    let _ = writeln!(o, "- one worker per proxy, mTLS between the proxies of every pair");
    for t in &meta.topologies {
        let versions: Vec<String> = t
            .info
            .iter()
            .filter(|(k, _)| ["version", "commit", "release", "api", "mode"].iter().any(|w| k.contains(w)))
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        if !versions.is_empty() {
            let _ = writeln!(o, "- {}: {}", t.kind, versions.join("; "));
        }
    }

    let _ = writeln!(o, "\n## Added latency over the baseline\n");
    let _ = writeln!(
        o,
        "Corrected for coordinated omission; each repetition's baseline run subtracted from the proxy's run of the same round; median (min–max) over repetitions.\n"
    );
    let mut head = String::from("| topology |");
    let mut sep = String::from("| --- |");
    for c in conns {
        head.push_str(&format!(" p50, {c} conns |"));
        sep.push_str(" --- |");
    }
    head.push_str(&format!(" p90, {big} conns | p99, {big} conns | p99.9, {big} conns |"));
    sep.push_str(" --- | --- | --- |");
    let _ = writeln!(o, "{head}\n{sep}");
    for t in proxies(s) {
        let mut row = format!("| {} |", name(t));
        for c in conns {
            row.push_str(&format!(" {} |", us(t.added.get(c).and_then(|p| p.p50))));
        }
        let a = t.added.get(&big).cloned().unwrap_or_default();
        row.push_str(&format!(" {} | {} | {} |", us(a.p90), us(a.p99), us(a.p999)));
        let _ = writeln!(o, "{row}");
    }

    let _ = writeln!(o, "\n## Absolute latency\n");
    let _ = writeln!(o, "Corrected (from the intended send) and, beside it, uncorrected (from the actual send); medians over repetitions.\n");
    let _ = writeln!(
        o,
        "| topology | conns | p50 | p90 | p99 | p99.9 | max | uncorrected p50 | uncorrected p99 | achieved rps |"
    );
    let _ = writeln!(o, "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for t in &s.topologies {
        for c in conns {
            let p = t.corrected.get(c).cloned().unwrap_or_default();
            let u = t.uncorrected.get(c).cloned().unwrap_or_default();
            let m = |x: Option<Spread>| x.map(|s| format!("{:.0} µs", s.median)).unwrap_or("–".into());
            let _ = writeln!(
                o,
                "| {} | {c} | {} | {} | {} | {} | {} | {} | {} | {} |",
                name(t),
                m(p.p50),
                m(p.p90),
                m(p.p99),
                m(p.p999),
                m(p.max),
                m(u.p50),
                m(u.p99),
                t.achieved_qps.get(c).map(|q| format!("{:.0}", q.median)).unwrap_or("–".into())
            );
        }
    }

    let _ = writeln!(o, "\n## Cost per proxy\n");
    let _ = writeln!(
        o,
        "CPU from /proc/PID/stat over each measured window (every main run, both sides); memory from /proc/PID/status, the larger of the two sides; RssAnon beside VmRSS (a large binary's pages are mostly shared).\n"
    );
    let _ = writeln!(o, "| topology | vCPU per 1000 rps | client side | server side | VmRSS idle | VmRSS loaded | VmRSS peak | RssAnon idle / loaded | open-loop max rate |");
    let _ = writeln!(o, "| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for t in &s.topologies {
        if !t.kind.is_some_and(Kind::has_proxies) {
            let _ = writeln!(o, "| {} | – | – | – | – | – | – | – | {} |", name(t), rate(t));
            continue;
        }
        let role = |r: &str| num(t.vcpu_per_krps_by_role.get(r).copied(), 3);
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {} | {} / {} | {} |",
            name(t),
            num(t.vcpu_per_krps, 3),
            role("client-side"),
            role("server-side"),
            mb(t.rss_idle_kb as f64),
            t.rss_steady_kb.map(|s| mb(s.median)).unwrap_or("–".into()),
            mb(t.rss_peak_kb as f64),
            mb(t.rss_anon_idle_kb as f64),
            t.rss_anon_steady_kb.map(|s| mb(s.median)).unwrap_or("–".into()),
            rate(t)
        );
    }

    let ps = proxies(s);
    if ps.len() > 1 {
        let _ = writeln!(o, "\n## Ratios between proxies (row ÷ column, medians)\n");
        type Pick = fn(&TopologySummary, usize) -> Option<Spread>;
        let picks: [(&str, Pick); 4] = [
            ("added p50", |t, c| t.added.get(&c).and_then(|p: &Percentiles| p.p50)),
            ("added p90", |t, c| t.added.get(&c).and_then(|p: &Percentiles| p.p90)),
            ("added p99", |t, c| t.added.get(&c).and_then(|p: &Percentiles| p.p99)),
            ("vCPU per 1000 rps", |t, _| t.vcpu_per_krps),
        ];
        for (label, pick) in picks {
            let _ = writeln!(
                o,
                "{label}{}:\n",
                if label.starts_with("added") { format!(", {big} connections") } else { String::new() }
            );
            let mut head = String::from("| |");
            let mut sep = String::from("| --- |");
            for b in &ps {
                head.push_str(&format!(" {} |", name(b)));
                sep.push_str(" --- |");
            }
            let _ = writeln!(o, "{head}\n{sep}");
            for a in &ps {
                let mut row = format!("| {} |", name(a));
                for b in &ps {
                    row.push_str(&format!(
                        " {} |",
                        if a.kind == b.kind { "1".into() } else { ratio(pick(a, big), pick(b, big)) }
                    ));
                }
                let _ = writeln!(o, "{row}");
            }
            let _ = writeln!(o);
        }
    }

    protocols(&mut o, meta, s);

    let all_conns: std::collections::BTreeSet<usize> =
        s.topologies.iter().flat_map(|t| t.p50_by_connections.keys().copied()).collect();
    if all_conns.len() > 1 {
        let (lo, hi) = (*all_conns.first().unwrap_or(&0), *all_conns.last().unwrap_or(&0));
        let _ = writeln!(o, "## Latency against connections\n\nCorrected p50 at {} rps (medians).\n", st.rate);
        let mut head = String::from("| topology |");
        let mut sep = String::from("| --- |");
        for c in &all_conns {
            head.push_str(&format!(" {c} |"));
            sep.push_str(" --- |");
        }
        head.push_str(&format!(" growth {lo}→{hi} |"));
        sep.push_str(" --- |");
        let _ = writeln!(o, "{head}\n{sep}");
        for t in &s.topologies {
            let mut row = format!("| {} |", name(t));
            for c in &all_conns {
                row.push_str(&t.p50_by_connections.get(c).map(|v| format!(" {v:.0} µs |")).unwrap_or(" – |".into()));
            }
            let g = match (t.p50_by_connections.get(&lo), t.p50_by_connections.get(&hi)) {
                (Some(a), Some(b)) if *a > 0.0 => format!("{:.2}×", b / a),
                _ => "–".into(),
            };
            let _ = writeln!(o, "{row} {g} |");
        }
    }

    let _ = writeln!(
        o,
        "\n## Latency against rate\n\nCorrected p50 / p99 at {} connections; * = not sustained (achieved < 95 % of offered, unsent slots, or a queue: p90 over 25 ms). Chart: `latency-vs-rate.svg`.\n",
        st.rate_sweep_connections
    );
    let rates: std::collections::BTreeSet<u64> =
        s.topologies.iter().flat_map(|t| t.rate_curve.iter().map(|p| p.offered as u64)).collect();
    let mut head = String::from("| topology |");
    let mut sep = String::from("| --- |");
    for r in &rates {
        head.push_str(&format!(" {r} |"));
        sep.push_str(" --- |");
    }
    let _ = writeln!(o, "{head}\n{sep}");
    for t in &s.topologies {
        let mut row = format!("| {} |", name(t));
        for r in &rates {
            match t.rate_curve.iter().find(|p| p.offered as u64 == *r) {
                Some(p) => row.push_str(&format!(
                    " {:.2} / {:.2} ms{} |",
                    p.p50_us as f64 / 1000.0,
                    p.p99_us as f64 / 1000.0,
                    if p.sustained { "" } else { " *" }
                )),
                None => row.push_str(" |"),
            }
        }
        let _ = writeln!(o, "{row}");
    }
    o
}

/// The same rate in every protocol measured: added p50 / p99 and the cost, per topology.
fn protocols(o: &mut String, meta: &Meta, s: &Summary) {
    let protocols: std::collections::BTreeSet<&str> =
        s.topologies.iter().flat_map(|t| t.by_protocol.keys().map(String::as_str)).collect();
    if protocols.len() < 2 {
        return;
    }
    // The main protocol first, then the others in a fixed order.
    let order: Vec<&str> = std::iter::once(meta.workload.protocol.name())
        .chain(["http1", "http2", "grpc", "tcp"])
        .filter(|p| protocols.contains(p))
        .fold(vec![], |mut v, p| {
            if !v.contains(&p) {
                v.push(p);
            }
            v
        });
    let _ = writeln!(
        o,
        "## By protocol

At {} rps and {} connections: HTTP/1.1, HTTP/2 from the client (prior knowledge), gRPC unary calls, opaque TCP request/response (a 10-byte request, the payload back). Added corrected p50 / p99 (each run minus the baseline's run of the same protocol and round) and vCPU per 1000 rps per proxy; median (min–max) over repetitions. The baseline row is absolute.
",
        meta.settings.rate, meta.settings.rate_sweep_connections
    );
    let mut head = String::from("| topology |");
    let mut sep = String::from("| --- |");
    for p in &order {
        head.push_str(&format!(" {p}: added p50 | {p}: added p99 | {p}: vCPU/krps |"));
        sep.push_str(" --- | --- | --- |");
    }
    let _ = writeln!(
        o,
        "{head}
{sep}"
    );
    for t in &s.topologies {
        let mut row = format!("| {} |", name(t));
        for p in &order {
            match t.by_protocol.get(*p) {
                Some(r) if t.kind == Some(Kind::Baseline) => {
                    row.push_str(&format!(" {} | {} | – |", us(r.p50), us(r.p99)));
                }
                Some(r) => {
                    row.push_str(&format!(" {} | {} | {} |", us(r.added_p50), us(r.added_p99), num(r.vcpu_per_krps, 3)))
                }
                None => row.push_str(" – | – | – |"),
            }
        }
        let _ = writeln!(o, "{row}");
    }
    let _ = writeln!(o);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Series;
    use crate::report::stats::summarize;
    use crate::report::stats::tests::{meta, record};

    #[test]
    fn report_has_every_table_and_the_added_figures() {
        let kinds = [Kind::Baseline, Kind::Floor, Kind::Weft];
        let mut recs = vec![];
        for rep in 0..3 {
            for c in [4, 16] {
                recs.push(record(Kind::Baseline, Series::Main, 1000.0, c, rep, 100, 0.0));
                recs.push(record(Kind::Floor, Series::Main, 1000.0, c, rep, 200 + rep as u64, 0.6));
                recs.push(record(Kind::Weft, Series::Main, 1000.0, c, rep, 250, 0.7));
            }
        }
        let mut m = meta(&kinds);
        m.settings.connections = vec![4, 16];
        let md = render(&m, &summarize(&m, &recs));
        assert!(md.contains("| floor | 101 µs (100–102) | 101 µs (100–102) |"), "{md}");
        assert!(md.contains("| weft | 150 µs (150–150) |"), "{md}");
        assert!(md.contains("## Cost per proxy"), "{md}");
        // weft adds 150, the floor 101: 1.49×.
        assert!(md.contains("| weft | 1.49× | 1 |") || md.contains("| weft | 1.49×"), "{md}");
        assert!(md.contains("## Latency against rate"), "{md}");
        assert!(!md.contains("## By protocol"), "one protocol: no table of protocols\n{md}");

        // A TCP row beside the main protocol's: the table, the main protocol's column first.
        for rep in 0..3 {
            for (kind, p50) in [(Kind::Baseline, 80), (Kind::Floor, 130), (Kind::Weft, 140)] {
                let mut r = record(kind, Series::Protocol, 1000.0, 16, rep, p50, 0.5);
                r.load.protocol = "tcp".into();
                recs.push(r);
            }
        }
        for r in recs.iter_mut().filter(|r| r.series == Series::Main) {
            r.load.protocol = "http1".into();
        }
        let md = render(&m, &summarize(&m, &recs));
        assert!(md.contains("## By protocol"), "{md}");
        assert!(
            md.contains("| topology | http1: added p50 | http1: added p99 | http1: vCPU/krps | tcp: added p50 |"),
            "{md}"
        );
        assert!(md.contains("| baseline | 100 µs (100–100) | 400 µs (400–400) | – | 80 µs (80–80) |"), "{md}");
        assert!(md.contains("| 60 µs (60–60) | 240 µs (240–240) | 0.050 (0.050–0.050) |"), "weft's tcp row\n{md}");
    }
}
