//! The inbound header pipeline: whatever a caller sends, the app sees exactly the verified caller
//! identity in `x-weft-client-id`, and no `x-weft-*` header (however spelled) that the proxy did
//! not set itself.

use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION};
use tokio::time::Instant;
use weft_proto::contract;

use crate::http::deadline;
use crate::http::headers::{is_upgrade, is_weft};
use crate::inbound::http::{client_id_value, headers_for_app};

/// Identities a verified certificate can carry (None: a plaintext caller).
const IDENTITIES: [Option<&str>; 3] =
    [None, Some("spiffe://weft.local/ns/default/sa/caller"), Some("spiffe://td-2/ns/a.b/sa/x_y-z")];

/// Builds a header map from `name: value` lines; lines that are not a valid header are skipped
/// (hyper would have refused the request).
pub fn header_lines(text: &[u8]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for line in text.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else { continue };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            h.append(n, v);
        }
    }
    h
}

/// Input: a flags byte (bits 0-1: the caller's identity; bit 2: HTTP/1 (an upgrade counts);
/// bit 3: gRPC; bit 4: a deadline, in ms given by the next byte (0: already past)), the deadline
/// byte, then `name: value` lines as the caller sent them.
pub fn check(data: &[u8]) {
    let [flags, ms, lines @ ..] = data else { return };
    let identity = IDENTITIES[usize::from(flags & 3) % IDENTITIES.len()];
    let http1 = flags & 4 != 0;
    let grpc = flags & 8 != 0;
    let started = Instant::now();
    let deadline = (flags & 16 != 0).then(|| started + Duration::from_millis(u64::from(*ms)));
    let now_unix_ms = 1_700_000_000_000;
    let mut h = header_lines(lines);
    let upgrade = http1 && is_upgrade(&h);
    let sent = h.clone();
    let result = headers_for_app(&mut h, &client_id_value(identity), upgrade, deadline, grpc, started, now_unix_ms);
    if deadline.is_some_and(|d| d <= started) {
        assert!(result.is_err(), "a request past its deadline went to the app");
        return;
    }
    assert!(result.is_ok(), "refused: {result:?}");

    let ids: Vec<&HeaderValue> = h.get_all(contract::CLIENT_ID).iter().collect();
    assert_eq!(ids, [identity.unwrap_or("")], "the app must see exactly the verified identity");
    for name in h.keys() {
        let n = name.as_str();
        let ours = n == contract::CLIENT_ID
            || (deadline.is_some() && (n == contract::DEADLINE_AT || n == contract::DEADLINE_MS));
        assert!(!is_weft(n) || ours, "{n} reached the app: sent {sent:?}, app sees {h:?}");
    }
    if let Some(d) = deadline {
        let left = d.saturating_duration_since(started).as_millis().to_string();
        assert_eq!(h.get_all(contract::DEADLINE_MS).iter().collect::<Vec<_>>(), [left.as_str()]);
        let at = (now_unix_ms + d.saturating_duration_since(started).as_millis() as i64).to_string();
        assert_eq!(h.get_all(contract::DEADLINE_AT).iter().collect::<Vec<_>>(), [at.as_str()]);
        if grpc {
            let t = deadline::format_grpc_timeout(d.saturating_duration_since(started));
            assert_eq!(h.get_all("grpc-timeout").iter().collect::<Vec<_>>(), [t.as_str()]);
        }
    }
    // Nothing may tell the app's server to drop a header the proxy set: an upgrade keeps only its
    // `upgrade` token, anything else loses `Connection` altogether.
    let connection: Vec<&HeaderValue> = h.get_all(CONNECTION).iter().collect();
    if upgrade {
        assert_eq!(connection, ["upgrade"]);
    } else {
        assert!(connection.is_empty(), "Connection reached the app: {connection:?}");
    }
}
