//! Names of the user-facing contract shared by every crate: headers, ALPN-independent constants
//! and the opaque-port list ("one list, used everywhere").

/// Ports on which no protocol detection happens (server-speaks-first protocols and the like).
pub const OPAQUE_PORTS: &[u16] = &[25, 587, 3306, 4222, 4444, 5432, 6379, 9300, 11211];

/// The verified caller identity, set by the inbound proxy (empty for plaintext callers).
pub const CLIENT_ID: &str = "x-weft-client-id";
/// Milliseconds left of the request's budget when sent (relative: host clocks need not agree).
pub const DEADLINE_MS: &str = "x-weft-deadline-ms";
/// The absolute deadline in Unix milliseconds on this host's clock (handed to the app).
pub const DEADLINE_AT: &str = "x-weft-deadline-at";
/// On every response the proxy made itself, with the reason.
pub const PROXY_ERROR: &str = "x-weft-proxy-error";
/// On circuit-breaker rejections.
pub const OVERLOADED: &str = "x-weft-overloaded";
/// Between proxies: the destination port of the request (internal).
pub const DST_PORT: &str = "x-weft-dst-port";
/// Between proxies: the protocol the client spoke, restored for the app (internal).
pub const ORIG_PROTO: &str = "x-weft-orig-proto";

/// The preamble of a tunnelled TCP connection: magic then the destination port (big endian).
pub const TCP_PREAMBLE_MAGIC: &[u8; 4] = b"WFT1";
