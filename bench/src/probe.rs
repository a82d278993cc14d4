//! `weft bench probe URL`: one HTTP/1.1 GET, exit 0 on a 2xx. The benchmark runs it inside pod
//! namespaces (their loopback is out of the host's reach) to wait for readiness, so the benchmark
//! needs no curl.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{bail, Context};

/// GETs `url` (http:// only) and returns the status and body.
pub fn get(url: &str, timeout: Duration) -> anyhow::Result<(u16, String)> {
    let rest = url.strip_prefix("http://").context("only http:// URLs")?;
    let (hostport, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}"))).unwrap_or((rest, "/".into()));
    let addr = hostport.to_socket_addrs()?.next().context("no address")?;
    let mut s = TcpStream::connect_timeout(&addr, timeout).with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n")?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("not an HTTP answer: {:?}", &text[..text.len().min(100)]))?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    Ok((status, if chunked { dechunk(body) } else { body.to_string() }))
}

/// The payload of a chunked body (sizes in hex, each chunk followed by CRLF, a zero-size end).
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.split(';').next().unwrap_or_default().trim(), 16) else { break };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].strip_prefix("\r\n").unwrap_or(&rest[n..]);
    }
    out
}

/// Succeeds on a 2xx answer (for `tcp://ADDR`: once a connection is accepted).
pub fn check(url: &str) -> anyhow::Result<()> {
    if let Some(addr) = url.strip_prefix("tcp://") {
        let addr = addr.to_socket_addrs()?.next().context("no address")?;
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).with_context(|| format!("connecting to {addr}"))?;
        return Ok(());
    }
    let (status, body) = get(url, Duration::from_secs(2))?;
    if !(200..300).contains(&status) {
        bail!("{url}: {status} {}", body.chars().take(200).collect::<String>());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(super::dechunk("5\r\nhello\r\n7;x=1\r\n, world\r\n0\r\n\r\n"), "hello, world");
    }
}
