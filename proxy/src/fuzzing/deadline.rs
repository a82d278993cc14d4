//! Deadline headers and `grpc-timeout`: parsing never overflows (the fuzz build has overflow
//! checks on), budgets stay within a day, and what a proxy writes reads back as the same budget.

use std::time::Duration;

use http::{HeaderMap, HeaderValue};
use tokio::time::Instant;
use weft_proto::contract;

use crate::http::deadline::{
    format_grpc_timeout, from_app, from_peer, parse_grpc_timeout, write_for_app, write_for_peer, MAX_BUDGET,
};

const GRPC_MAX: Duration = Duration::from_secs(99_999_999 * 3600);

/// Input: text lines — a `grpc-timeout` value, then values for `x-weft-deadline-ms`,
/// `x-weft-deadline-at` and `grpc-timeout` headers (a missing line: no such header).
pub fn check(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let first = lines.next().unwrap_or("");
    if let Some(d) = parse_grpc_timeout(first) {
        assert!(d <= GRPC_MAX, "{first:?} parsed to {d:?}");
        // What a proxy writes back (never more than a day) parses to at most that, short by
        // under a unit.
        let d = d.min(MAX_BUDGET);
        let written = format_grpc_timeout(d);
        let back = parse_grpc_timeout(&written).unwrap_or_else(|| panic!("{written:?} from {d:?} does not parse"));
        let unit = if d.as_millis() < 100_000_000 { Duration::from_millis(1) } else { Duration::from_secs(1) };
        assert!(back <= d && d - back < unit, "{first:?}: {d:?} written as {written:?} reads {back:?}");
    }
    let mut h = HeaderMap::new();
    for name in [contract::DEADLINE_MS, contract::DEADLINE_AT, "grpc-timeout"] {
        if let Some(v) = lines.next().and_then(|v| HeaderValue::from_str(v).ok()) {
            h.insert(name, v);
        }
    }
    let now = Instant::now();
    for now_unix_ms in [0, 1_700_000_000_000, 4_000_000_000_000] {
        for d in [from_app(&h, now, now_unix_ms), from_peer(&h, now)].into_iter().flatten() {
            assert!(d >= now && d <= now + MAX_BUDGET, "a budget beyond a day: {h:?}");
            let left = d - now;
            // Hop to a peer and back: the budget survives, rounded down to the millisecond.
            let mut to_peer = HeaderMap::new();
            write_for_peer(&mut to_peer, d, now, true);
            let peer = from_peer(&to_peer, now).expect("a written budget parses");
            assert!(peer <= d && d - peer < Duration::from_millis(1), "{left:?} became {:?}", peer - now);
            // To the app and back from it, on the same clock.
            let mut to_app = HeaderMap::new();
            write_for_app(&mut to_app, d, now, now_unix_ms);
            let app = from_app(&to_app, now, now_unix_ms).expect("a written budget parses");
            assert!(app <= d && d - app < Duration::from_millis(1), "{left:?} became {:?}", app - now);
        }
    }
}
