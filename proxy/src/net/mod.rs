//! Connections as bytes: accepting, dialling with a timeout, protocol detection, the original destination of
//! redirected connections, relaying opaque TCP, serving HTTP with the proxy's limits, the
//! connection pools towards peers and the app, and handing memory back once connections close.

pub(crate) mod accept;
pub(crate) mod connect;
pub(crate) mod detect;
pub(crate) mod http_server;
pub(crate) mod memory;
pub(crate) mod original_dst;
pub(crate) mod pool;
pub(crate) mod relay;
