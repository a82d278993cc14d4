//! Reading Prometheus text: samples with their labels, sums over label filters, and quantiles
//! from histogram buckets.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses the sample lines of a Prometheus text exposition.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let (series, value) = line.rsplit_once(' ')?;
    let value = value.parse().ok()?;
    let (name, labels) = match series.split_once('{') {
        None => (series.to_string(), BTreeMap::new()),
        Some((name, rest)) => (name.to_string(), parse_labels(rest.strip_suffix('}')?)?),
    };
    Some(Sample { name, labels, value })
}

fn parse_labels(mut s: &str) -> Option<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    while !s.is_empty() {
        let (k, rest) = s.split_once("=\"")?;
        let mut v = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => v.push('\n'),
                    other => v.push(other),
                },
                '"' => break i,
                c => v.push(c),
            }
        };
        out.insert(k.trim_start_matches(',').to_string(), v);
        s = rest[end + 1..].trim_start_matches(',');
    }
    Some(out)
}

/// Sum of the samples named `name` whose labels include all of `filter`.
pub fn sum(samples: &[Sample], name: &str, filter: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name && filter.iter().all(|(k, v)| s.labels.get(*k).is_some_and(|x| x == v)))
        .map(|s| s.value)
        .sum::<f64>()
        + 0.0 // an empty sum is -0.0; show it as 0
}

/// Cumulative bucket counts (upper bound → count) of a histogram, summed over matching series.
pub fn buckets(samples: &[Sample], name: &str, filter: &[(&str, &str)]) -> Vec<(f64, f64)> {
    let mut by_le: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    for s in samples.iter().filter(|s| {
        s.name == format!("{name}_bucket") && filter.iter().all(|(k, v)| s.labels.get(*k).is_some_and(|x| x == v))
    }) {
        let le = match s.labels.get("le").map(String::as_str) {
            Some("+Inf") => f64::INFINITY,
            Some(x) => match x.parse::<f64>() {
                Ok(v) => v,
                Err(_) => continue,
            },
            None => continue,
        };
        let e = by_le.entry(le.to_bits()).or_insert((le, 0.0));
        e.1 += s.value;
    }
    let mut v: Vec<(f64, f64)> = by_le.into_values().collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    v
}

/// The q-quantile from cumulative buckets, interpolating inside the bucket (as Prometheus does).
pub fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut prev = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some(prev.0);
            }
            let span = count - prev.1;
            let frac = if span > 0.0 { (rank - prev.1) / span } else { 1.0 };
            return Some(prev.0 + (le - prev.0) * frac);
        }
        prev = (le, count);
    }
    Some(prev.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_labels_sums_and_quantiles() {
        let text = "# HELP x\nweft_requests_total{direction=\"inbound\",service=\"bar\",status_code=\"200\",tls=\"true\",client_id=\"spiffe://a\"} 7\n\
                    weft_requests_total{direction=\"inbound\",service=\"bar\",status_code=\"503\",tls=\"true\",client_id=\"\"} 3\n\
                    lat_bucket{le=\"0.001\"} 50\nlat_bucket{le=\"0.01\"} 100\nlat_bucket{le=\"+Inf\"} 100\n";
        let s = parse(text);
        assert_eq!(sum(&s, "weft_requests_total", &[("service", "bar")]), 10.0);
        assert_eq!(sum(&s, "weft_requests_total", &[("status_code", "200")]), 7.0);
        assert_eq!(s[0].labels["client_id"], "spiffe://a");
        let b = buckets(&s, "lat", &[]);
        assert_eq!(quantile(&b, 0.5), Some(0.001));
        let p99 = quantile(&b, 0.99).unwrap();
        assert!((p99 - 0.00982).abs() < 1e-9, "{p99}");
    }
}
