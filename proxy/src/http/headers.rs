//! Header rules: which `x-weft-*` headers survive a hop, hop-by-hop headers, and the internal
//! headers carried between proxies.

use http::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION, TE, TRANSFER_ENCODING, UPGRADE};

/// Header names as constants: a lookup by `HeaderName` skips parsing the name every time.
pub mod names {
    use http::HeaderName;
    use weft_proto::contract;

    pub const CLIENT_ID: HeaderName = HeaderName::from_static(contract::CLIENT_ID);
    pub const DEADLINE_MS: HeaderName = HeaderName::from_static(contract::DEADLINE_MS);
    pub const DEADLINE_AT: HeaderName = HeaderName::from_static(contract::DEADLINE_AT);
    pub const DST_PORT: HeaderName = HeaderName::from_static(contract::DST_PORT);
    pub const ORIG_PROTO: HeaderName = HeaderName::from_static(contract::ORIG_PROTO);
    pub const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
    pub const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
    pub const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
    pub const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
}

/// Whether a header name is one of Weft's, also when spelled with `_` for `-`: CGI, WSGI and Rack
/// read `x_weft_client_id` as the same header, so it must not pass either.
pub fn is_weft(name: &str) -> bool {
    // Header names are lower case already (`http` normalises them); this runs on every header of
    // every request, so it compares bytes rather than building anything.
    let n = name.as_bytes();
    let dash = |b: u8| b == b'-' || b == b'_';
    n.len() >= 7 && n[0] == b'x' && dash(n[1]) && &n[2..6] == b"weft" && dash(n[6])
}

/// The deadline headers an outbound proxy accepts from its local app.
pub const APP_DEADLINE: [HeaderName; 2] = [names::DEADLINE_MS, names::DEADLINE_AT];

/// Removes every `x-weft-*` header (however spelled) but those named in `keep` (spelled exactly:
/// the deadlines an app may send, or what the caller overwrites next), and says whether one of
/// those is there. Runs on every request: one pass over the names, and no allocation unless there
/// is something to remove.
pub fn strip_weft(headers: &mut HeaderMap, keep: &[HeaderName]) -> bool {
    let mut kept = false;
    // Allocates only on a first push: usually nothing is doomed.
    let mut doomed = Vec::new();
    for k in headers.keys().filter(|k| is_weft(k.as_str())) {
        if keep.contains(k) {
            kept = true;
        } else {
            doomed.push(k.clone());
        }
    }
    for k in doomed {
        headers.remove(k);
    }
    kept
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == CONNECTION
        || name == TRANSFER_ENCODING
        || name == UPGRADE
        || name == TE
        || name == names::KEEP_ALIVE
        || name == names::PROXY_CONNECTION
}

/// Removes hop-by-hop headers (and any named in `Connection`), keeping `te: trailers` which gRPC
/// needs end to end.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none: one pass to find out.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    for n in [CONNECTION, TRANSFER_ENCODING, UPGRADE, names::KEEP_ALIVE, names::PROXY_CONNECTION] {
        headers.remove(n);
    }
    let te_trailers = headers
        .get_all(TE)
        .iter()
        .any(|v| v.to_str().is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case("trailers"))));
    if headers.remove(TE).is_some() && te_trailers {
        headers.insert(TE, HeaderValue::from_static("trailers"));
    }
}

/// For an upgrade request, which travels as HTTP/1.1 with its `Connection` header: keeps only the
/// `upgrade` token in it and removes every header the others named (a caller naming
/// `x-weft-client-id` there would otherwise have the app's server drop the proxy's header).
pub fn sanitize_upgrade_connection(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.eq_ignore_ascii_case("upgrade"))
        .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
        .collect();
    for n in named {
        if n != UPGRADE {
            headers.remove(n);
        }
    }
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    for n in [TRANSFER_ENCODING, TE, names::KEEP_ALIVE, names::PROXY_CONNECTION] {
        headers.remove(n);
    }
}

/// Whether an HTTP/1 request asks to switch protocols (WebSocket and the like).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(UPGRADE)
        && headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade")))
}

pub fn get<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_weft_headers_but_keeps_deadlines_from_the_app() {
        let mut h = HeaderMap::new();
        h.insert("x-weft-client-id", HeaderValue::from_static("spiffe://evil"));
        h.insert("x-weft-deadline-ms", HeaderValue::from_static("100"));
        h.insert("x-weft-deadline-at", HeaderValue::from_static("123"));
        h.insert("x-other", HeaderValue::from_static("1"));
        let mut from_app = h.clone();
        assert!(strip_weft(&mut from_app, &APP_DEADLINE), "deadlines are there");
        assert!(from_app.get("x-weft-client-id").is_none());
        assert!(from_app.get("x-weft-deadline-ms").is_some());
        assert!(from_app.get("x-weft-deadline-at").is_some());
        assert!(!strip_weft(&mut h, &[]));
        assert_eq!(h.len(), 1);
        assert!(!strip_weft(&mut h, &APP_DEADLINE), "none left to keep");
    }

    #[test]
    fn weft_headers_spelled_with_underscores_go_too() {
        let mut h = HeaderMap::new();
        h.insert("x_weft_client_id", HeaderValue::from_static("spiffe://evil"));
        h.insert("x-weft_client-id", HeaderValue::from_static("spiffe://evil"));
        h.insert("x_weft_deadline_ms", HeaderValue::from_static("1"));
        h.insert("x-weftish", HeaderValue::from_static("stays"));
        h.insert("x_wefty", HeaderValue::from_static("stays"));
        assert!(!strip_weft(&mut h, &APP_DEADLINE), "an underscore spelling is never kept");
        assert_eq!(h.len(), 2, "{h:?}");
        assert!(is_weft(HeaderName::from_bytes(b"X_WEFT_CLIENT_ID").unwrap().as_str()));
        assert!(!is_weft("x-weft"));
    }

    #[test]
    fn an_upgrade_keeps_only_its_upgrade_token() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("Upgrade, x-weft-client-id, x-secret"));
        h.insert(UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-weft-client-id", HeaderValue::from_static("spiffe://weft.local/ns/default/sa/foo"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        sanitize_upgrade_connection(&mut h);
        assert_eq!(h[CONNECTION], "upgrade");
        assert_eq!(h[UPGRADE], "websocket");
        assert!(h.get("x-secret").is_none() && h.get("x-weft-client-id").is_none());
    }

    #[test]
    fn hop_by_hop_headers_go_but_te_trailers_stays() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("keep-alive, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(TE, HeaderValue::from_static("trailers, deflate"));
        h.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2, "{h:?}");
        assert_eq!(h[TE], "trailers");
    }
}
