//! `weft-proxy await [--shutdown] -- CMD ARGS…`: waits for the local proxy's `/ready`, runs the
//! command, optionally tells the proxy to exit afterwards (for jobs), and exits with the command's
//! status.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

#[derive(Args, Debug)]
pub struct AwaitArgs {
    /// The proxy's admin address.
    #[arg(long, env = "WEFT_PROXY_ADMIN_URL", default_value = "http://127.0.0.1:4191")]
    pub admin: String,
    /// Give up waiting for readiness after this long.
    #[arg(long, default_value = "120s")]
    pub timeout: String,
    /// After the command exits, ask the proxy to shut down (POST /shutdown).
    #[arg(long)]
    pub shutdown: bool,
    /// The command to run, after `--`.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

pub fn main(args: AwaitArgs) -> ExitCode {
    let timeout = match crate::config::parse_duration(&args.timeout) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("weft-proxy await: --timeout: {e}");
            return ExitCode::from(2);
        }
    };
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
        return ExitCode::FAILURE;
    };
    let admin = args.admin.trim_end_matches('/').to_string();
    let ready = rt.block_on(async {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Ok((200, _)) = crate::cli::probe::get(&format!("{admin}/ready"), Duration::from_secs(2)).await {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    if !ready {
        eprintln!("weft-proxy await: the proxy at {admin} was not ready within {timeout:?}");
        return ExitCode::FAILURE;
    }
    let status = std::process::Command::new(&args.command[0]).args(&args.command[1..]).status();
    if args.shutdown {
        let _ = rt.block_on(post_shutdown(&admin));
    }
    match status {
        Ok(s) => ExitCode::from(s.code().unwrap_or(1).clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("weft-proxy await: running {:?}: {e}", args.command[0]);
            ExitCode::from(127)
        }
    }
}

async fn post_shutdown(admin: &str) -> Result<(), String> {
    use http_body_util::Empty;
    use hyper_util::rt::TokioIo;
    let uri: http::Uri = format!("{admin}/shutdown").parse().map_err(|e| format!("{e}"))?;
    let host = uri.host().unwrap_or("127.0.0.1").trim_start_matches('[').trim_end_matches(']').to_string();
    let port = uri.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host.as_str(), port)).await.map_err(|e| e.to_string())?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = http::Request::post("/shutdown")
        .header(http::header::HOST, format!("{host}:{port}"))
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| e.to_string())?;
    sender.send_request(req).await.map_err(|e| e.to_string())?;
    Ok(())
}
