//! Deadline budgets. Between proxies a request carries the milliseconds it has left
//! (`x-weft-deadline-ms`, or `grpc-timeout`); the inbound proxy turns that into an absolute
//! deadline on its host's clock for the app (`x-weft-deadline-at`), and an app that copies that
//! header onto its own calls hands the budget to its outbound proxy, which shares its clock.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use tokio::time::Instant;

use super::headers::{self, names};
use http::HeaderValue;

/// The longest budget honoured: a longer one (up to `i64::MAX` ms, or `grpc-timeout`'s 99999999H)
/// is served as this, never refused; it keeps every deadline representable.
pub const MAX_BUDGET: Duration = Duration::from_secs(24 * 3600);

/// Milliseconds since the Unix epoch on this host's clock.
pub fn unix_now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Parses a gRPC `grpc-timeout` value: up to 8 digits and a unit (H, M, S, m, u, n).
pub fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    // Byte lengths: a multi-byte last character must be refused, not split (caught by the
    // `deadline` fuzz target; header values reach here as ASCII, other callers may not).
    if v.len() < 2 || v.len() > 9 || !v.is_ascii() {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Formats a `grpc-timeout` value in milliseconds (at most 8 digits, as the spec requires).
pub fn format_grpc_timeout(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 100_000_000 {
        format!("{ms}m")
    } else {
        format!("{}S", (d.as_secs()).min(99_999_999))
    }
}

/// The budget an outbound proxy's local app gives a request: the earliest of an absolute
/// `x-weft-deadline-at`, a relative `x-weft-deadline-ms` and (for gRPC) `grpc-timeout`.
pub fn from_app(h: &HeaderMap, now: Instant, now_unix_ms: i64) -> Option<Instant> {
    let mut best: Option<Instant> = None;
    let mut consider = |d: Duration| {
        let d = now + d.min(MAX_BUDGET);
        best = Some(best.map_or(d, |b| b.min(d)))
    };
    if let Some(at) = headers::get(h, &names::DEADLINE_AT).and_then(|v| v.trim().parse::<i64>().ok()) {
        consider(Duration::from_millis(at.saturating_sub(now_unix_ms).max(0) as u64));
    }
    if let Some(ms) = headers::get(h, &names::DEADLINE_MS).and_then(|v| v.trim().parse::<u64>().ok()) {
        consider(Duration::from_millis(ms));
    }
    if let Some(d) = headers::get(h, &names::GRPC_TIMEOUT).and_then(parse_grpc_timeout) {
        consider(d);
    }
    best
}

/// The budget a peer proxy sent: `x-weft-deadline-ms`, else `grpc-timeout` (at most a day).
pub fn from_peer(h: &HeaderMap, now: Instant) -> Option<Instant> {
    let budget = match headers::get(h, &names::DEADLINE_MS).and_then(|v| v.trim().parse::<u64>().ok()) {
        Some(ms) => Duration::from_millis(ms),
        None => headers::get(h, &names::GRPC_TIMEOUT).and_then(parse_grpc_timeout)?,
    };
    Some(now + budget.min(MAX_BUDGET))
}

/// What to send on: `min(route timeout, deadline − now)`. None = unbounded.
pub fn effective(route_timeout: Option<Duration>, deadline: Option<Instant>, now: Instant) -> Option<Instant> {
    let by_route = route_timeout.map(|t| now + t);
    match (by_route, deadline) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Writes the relative budget for the next hop (and `grpc-timeout` for gRPC), into headers the
/// app's own deadline headers are already gone from.
pub fn write_for_peer(h: &mut HeaderMap, deadline: Instant, now: Instant, grpc: bool) {
    let left = deadline.saturating_duration_since(now);
    // Marked sensitive: the value changes with every request, so HPACK should not index it (it
    // would only churn the peer connection's header table).
    let mut ms = HeaderValue::from(left.as_millis() as u64);
    ms.set_sensitive(true);
    h.insert(names::DEADLINE_MS, ms);
    if grpc {
        if let Ok(mut v) = HeaderValue::from_str(&format_grpc_timeout(left)) {
            v.set_sensitive(true);
            h.insert(names::GRPC_TIMEOUT, v);
        }
    }
}

/// Writes the budget for the local app: absolute on this host's clock, and relative.
pub fn write_for_app(h: &mut HeaderMap, deadline: Instant, now: Instant, now_unix_ms: i64) {
    let left = deadline.saturating_duration_since(now).as_millis() as i64;
    h.insert(names::DEADLINE_AT, HeaderValue::from(now_unix_ms + left));
    h.insert(names::DEADLINE_MS, HeaderValue::from(left));
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_proto::contract;

    #[test]
    fn grpc_timeout_round_trips() {
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("5u"), Some(Duration::from_micros(5)));
        assert_eq!(parse_grpc_timeout("123456789m"), None, "more than 8 digits");
        assert_eq!(parse_grpc_timeout("10x"), None);
        assert_eq!(format_grpc_timeout(Duration::from_millis(496)), "496m");
        assert_eq!(parse_grpc_timeout("5\u{e9}"), None, "a multi-byte unit is refused, not split");
    }

    #[tokio::test(start_paused = true)]
    async fn the_earliest_deadline_from_the_app_wins() {
        let now = Instant::now();
        let mut h = HeaderMap::new();
        h.insert(contract::DEADLINE_AT, HeaderValue::from_static("10500"));
        h.insert(contract::DEADLINE_MS, HeaderValue::from_static("800"));
        // At Unix 10000 ms, deadline-at leaves 500 ms: it wins over 800 ms.
        assert_eq!(from_app(&h, now, 10_000), Some(now + Duration::from_millis(500)));
        h.insert(contract::DEADLINE_MS, HeaderValue::from_static("200"));
        assert_eq!(from_app(&h, now, 10_000), Some(now + Duration::from_millis(200)));
        // An absolute deadline already past leaves nothing.
        assert_eq!(from_app(&h, now, 20_000), Some(now));
        assert_eq!(from_app(&HeaderMap::new(), now, 0), None);
    }

    #[tokio::test(start_paused = true)]
    async fn budgets_past_a_day_are_served_as_a_day() {
        let now = Instant::now();
        let day = now + MAX_BUDGET;
        let mut h = HeaderMap::new();
        h.insert(contract::DEADLINE_MS, HeaderValue::from_static("9223372036854775807"));
        assert_eq!(from_peer(&h, now), Some(day));
        assert_eq!(from_app(&h, now, 1_000), Some(day));
        let mut h = HeaderMap::new();
        h.insert("grpc-timeout", HeaderValue::from_static("99999999H"));
        assert_eq!(from_peer(&h, now), Some(day));
        let mut h = HeaderMap::new();
        h.insert(contract::DEADLINE_AT, HeaderValue::from_static("9223372036854775807"));
        assert_eq!(from_app(&h, now, 1_000), Some(day));
        // What the app is then told is positive and a day away.
        let mut to_app = HeaderMap::new();
        write_for_app(&mut to_app, day, now, 1_000);
        assert_eq!(to_app[contract::DEADLINE_MS], "86400000");
        assert_eq!(to_app[contract::DEADLINE_AT], "86401000");
        // Signs and garbage are no budget at all.
        let mut h = HeaderMap::new();
        h.insert("grpc-timeout", HeaderValue::from_static("+5S"));
        assert_eq!(from_peer(&h, now), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hop_sends_min_of_route_timeout_and_budget() {
        let now = Instant::now();
        let deadline = now + Duration::from_millis(600);
        assert_eq!(effective(Some(Duration::from_secs(2)), Some(deadline), now), Some(deadline));
        assert_eq!(
            effective(Some(Duration::from_millis(300)), Some(deadline), now),
            Some(now + Duration::from_millis(300))
        );
        assert_eq!(effective(None, None, now), None);
    }

    #[tokio::test(start_paused = true)]
    async fn budget_shrinks_by_the_time_the_app_spent() {
        // Inbound hop: 600 ms arrive; the app is told the absolute deadline.
        let t0 = Instant::now();
        let mut peer = HeaderMap::new();
        peer.insert(contract::DEADLINE_MS, HeaderValue::from_static("600"));
        let deadline = from_peer(&peer, t0).unwrap();
        let mut to_app = HeaderMap::new();
        write_for_app(&mut to_app, deadline, t0, 1_000_000);
        assert_eq!(to_app[contract::DEADLINE_AT], "1000600");
        // The app spends 104 ms and copies x-weft-deadline-at onto its call.
        tokio::time::advance(Duration::from_millis(104)).await;
        let t1 = Instant::now();
        let mut from = HeaderMap::new();
        from.insert(contract::DEADLINE_AT, to_app[contract::DEADLINE_AT].clone());
        let d = from_app(&from, t1, 1_000_104).unwrap();
        let mut next = HeaderMap::new();
        write_for_peer(&mut next, d, t1, true);
        assert_eq!(next[contract::DEADLINE_MS], "496");
        assert_eq!(next["grpc-timeout"], "496m");
    }
}
