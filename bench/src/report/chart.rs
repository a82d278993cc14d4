//! `latency-vs-rate.svg`: corrected p50 (solid) and p99 (dashed) against the offered rate, one
//! colour per topology, log-scaled latency so that the floor's microseconds and a saturated
//! queue's seconds fit on one chart.

use std::path::Path;

use plotters::prelude::*;

use super::stats::summarize;
use super::Meta;
use crate::runner::RunRecord;
use crate::topology::Kind;

fn colour(kind: Kind) -> RGBColor {
    match kind {
        Kind::Baseline => RGBColor(90, 90, 90),
        Kind::Floor => RGBColor(44, 160, 44),
        Kind::Weft => RGBColor(31, 119, 180),
        Kind::Envoy => RGBColor(214, 39, 40),
        Kind::Linkerd => RGBColor(255, 127, 14),
    }
}

pub fn render(path: &Path, meta: &Meta, records: &[RunRecord]) -> anyhow::Result<()> {
    let summary = summarize(meta, records);
    // Per topology: (offered rate, p50 ms, p99 ms) points.
    type Curve = (Kind, Vec<(f64, f64, f64)>);
    let curves: Vec<Curve> = summary
        .topologies
        .iter()
        .filter_map(|t| {
            let pts: Vec<(f64, f64, f64)> = t
                .rate_curve
                .iter()
                .map(|p| (p.offered, (p.p50_us as f64 / 1000.0).max(0.001), (p.p99_us as f64 / 1000.0).max(0.001)))
                .collect();
            Some((t.kind?, pts))
        })
        .filter(|(_, p)| !p.is_empty())
        .collect();
    let x_max = curves.iter().flat_map(|(_, p)| p.iter().map(|x| x.0)).fold(1000.0, f64::max) * 1.05;
    let y_min = curves.iter().flat_map(|(_, p)| p.iter().map(|x| x.1)).fold(f64::MAX, f64::min).min(0.1) * 0.8;
    let y_max = curves.iter().flat_map(|(_, p)| p.iter().map(|x| x.2)).fold(1.0, f64::max) * 1.5;

    let root = SVGBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let caption = format!(
        "Latency vs offered rate ({} connections, {}, {} placement): p50 solid, p99 dashed",
        meta.settings.rate_sweep_connections,
        meta.workload.protocol.name(),
        serde_json::to_value(meta.placement).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 18))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max, (y_min..y_max).log_scale())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("offered rate (requests/s)")
        .y_desc("corrected latency (ms, log)")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y}"))
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    for (kind, pts) in &curves {
        let c = colour(*kind);
        chart
            .draw_series(LineSeries::new(pts.iter().map(|p| (p.0, p.1)), c.stroke_width(2)))
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .label(kind.name())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        chart
            .draw_series(pts.iter().map(|p| Circle::new((p.0, p.1), 3, c.filled())))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        chart
            .draw_series(DashedLineSeries::new(pts.iter().map(|p| (p.0, p.2)), 6, 4, c.stroke_width(1)))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Series;
    use crate::report::stats::tests::{meta, record};

    #[test]
    fn chart_is_an_svg_with_a_curve_per_topology() {
        let recs = vec![
            record(Kind::Baseline, Series::Main, 1000.0, 16, 0, 100, 0.0),
            record(Kind::Baseline, Series::Rate, 4000.0, 16, 0, 120, 0.0),
            record(Kind::Weft, Series::Main, 1000.0, 16, 0, 300, 0.5),
            record(Kind::Weft, Series::Rate, 4000.0, 16, 0, 350, 0.5),
        ];
        let path = std::env::temp_dir().join(format!("weft-bench-chart-{}.svg", std::process::id()));
        render(&path, &meta(&[Kind::Baseline, Kind::Weft]), &recs).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        // plotters writes each text on its own line inside <text>.
        assert!(svg.contains("\nweft\n</text>") && svg.contains("\nbaseline\n</text>"), "legend names each topology");
        assert!(svg.matches("<polyline").count() >= 2, "a line per topology");
        let _ = std::fs::remove_file(&path);
    }
}
