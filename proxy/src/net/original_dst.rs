//! The original destination of a connection iptables redirected (`SO_ORIGINAL_DST`, through
//! socket2, IPv4 and IPv6; IPv4-mapped addresses read as IPv4).

use std::net::{IpAddr, SocketAddr};

use tokio::net::TcpStream;

/// The destination a redirected connection was sent to.
pub(crate) fn original_dst(stream: &TcpStream) -> Option<SocketAddr> {
    let sock = socket2::SockRef::from(stream);
    let v4_first = stream.local_addr().ok().is_some_and(|a| match a.ip() {
        IpAddr::V4(_) => true,
        IpAddr::V6(v6) => v6.to_ipv4_mapped().is_some(),
    });
    let (first, second) = if v4_first {
        (sock.original_dst_v4(), sock.original_dst_v6())
    } else {
        (sock.original_dst_v6(), sock.original_dst_v4())
    };
    let addr = first.or(second).ok()?.as_socket()?;
    Some(match addr.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), addr.port()),
            None => addr,
        },
        IpAddr::V4(_) => addr,
    })
}
