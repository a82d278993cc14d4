//! Dialling with the connect timeout: the one way the proxy opens a TCP connection (to the app,
//! to peers, to static endpoints, to pass-through destinations).

use std::time::Duration;

use tokio::time::Instant;

/// Dials `dst` with the connect timeout (a refused connect, which never reached anyone, is tried
/// once more).
pub(crate) async fn connect(dst: std::net::SocketAddr, timeout: Duration) -> std::io::Result<tokio::net::TcpStream> {
    let deadline = Instant::now() + timeout;
    let mut attempt = 0;
    loop {
        let result = match tokio::time::timeout_at(deadline, tokio::net::TcpStream::connect(dst)).await {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, format!("{dst}: connect timed out"))),
        };
        match result {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused && attempt == 0 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_refused_connect_is_tried_once_more() {
        // A port nothing listens on, which starts listening a moment later (an app restarting).
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        let listener = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            let l = tokio::net::TcpListener::bind(addr).await.unwrap();
            let _ = l.accept().await;
        });
        connect(addr, Duration::from_secs(3)).await.unwrap();
        listener.await.unwrap();
    }
}
