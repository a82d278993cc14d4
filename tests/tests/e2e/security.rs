//! Zero trust under attack (issue #9): each test plays one attacker against the real binaries on
//! loopback — another workload, a leaked join token, a custom client holding a mesh certificate, a
//! hostile app — and checks what the issue promises against it. Network-namespace cases
//! (plaintext callers, transparent loops, IPv6) are in `transparent.rs`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use weft_tests::apps::{rt, Behaviour, Client, HttpApp};
use weft_tests::attack::{identity, mtls, raw_exchange, read_until_closed};
use weft_tests::harness::{bin, eventually, http_get, metric, Mesh, ProxyHandle, ProxyOpts};

const FOO_ID: &str = "spiffe://weft.local/ns/default/sa/foo";

fn foo_and_bar(name: &str, mesh: &str, foo_args: &[&str]) -> (Mesh, HttpApp, ProxyHandle, ProxyHandle) {
    let m = Mesh::start(name, mesh);
    let bar_app = HttpApp::start("bar-1", Behaviour::default());
    let bar = m.proxy(ProxyOpts::new("bar").app(bar_app.addr));
    let mut opts = ProxyOpts::client("foo").upstream("bar");
    for a in foo_args {
        opts = opts.arg(a);
    }
    let foo = m.proxy(opts);
    foo.wait_endpoints("bar", 1, Duration::from_secs(10));
    (m, bar_app, foo, bar)
}

fn ready_body(p: &ProxyHandle) -> (u16, String) {
    http_get(&format!("http://127.0.0.1:{}/ready", p.admin)).unwrap_or((0, String::new()))
}

// 1. Cross-namespace hijack.
#[test]
fn a_service_of_the_same_name_in_another_namespace_gets_none_of_its_traffic() {
    let m = Mesh::start("xns", "trust_domain: weft.local\nservices:\n  foo: {}\n  bar: {}\n  evil/bar: {}\n");
    let bar_app = HttpApp::start("bar-default", Behaviour::default());
    let evil_app = HttpApp::start("bar-evil", Behaviour::default());
    let _bar = m.proxy(ProxyOpts::new("bar").app(bar_app.addr));
    // A join token for evil/bar: a perfectly valid workload, in another namespace.
    let _evil = m.proxy(ProxyOpts::new("bar").namespace("evil").app(evil_app.addr));
    let foo = m.proxy(ProxyOpts::client("foo").upstream("bar").upstream("evil/bar"));
    foo.wait_endpoints("bar", 1, Duration::from_secs(10));
    let c = Client::new();
    for _ in 0..40 {
        let r = c.get(foo.upstream("bar"), "/");
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["app"], "bar-default");
    }
    assert_eq!(evil_app.requests(), 0, "evil/bar got a share of default/bar's traffic");
    // evil/bar is reachable as itself, and told apart in metrics by its namespace.
    let r = c.get(foo.upstream("evil/bar"), "/");
    assert_eq!(r.json()["app"], "bar-evil");
    assert_eq!(r.json()["client_id"], FOO_ID);
    let fm = foo.metrics();
    let sent =
        |ns| metric(&fm, "weft_requests_total", &[("direction", "outbound"), ("service", "bar"), ("namespace", ns)]);
    assert_eq!((sent("default"), sent("evil")), (40.0, 1.0), "{fm}");
}

// 2. Registrations claim any address.
#[test]
fn a_registration_claims_only_its_own_address_and_never_another_workloads_port() {
    let (m, bar_app, foo, _bar) =
        foo_and_bar("claims", "trust_domain: weft.local\nservices:\n  foo: {}\n  bar: {}\n", &[]);
    // Another host's address: never registered, and /ready says why.
    let liar = m.proxy_unready(
        ProxyOpts::new("liar").app("127.0.0.1:9".parse().unwrap()).arg("--advertise-addr").arg("127.0.0.2:4143"),
    );
    eventually("the address claim is refused", Duration::from_secs(15), || {
        ready_body(&liar).1.contains("registers the address it connects from")
    });
    assert!(metric(&m.controller_metrics(), "weft_registrations_refused_total", &[("reason", "invalid")]) >= 1.0);
    // bar's app port, claimed by another identity from the same IP: accepted without it.
    let thief = m.proxy(ProxyOpts::new("thief").app(bar_app.addr));
    eventually("the stolen port is counted", Duration::from_secs(5), || {
        metric(&m.controller_metrics(), "weft_registration_app_ports_refused_total", &[]) >= 1.0
    });
    let state = m.state();
    let thief_ports = state["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "thief")
        .and_then(|s| s["endpoints"][0]["app_ports"].as_array().cloned())
        .unwrap_or_default();
    assert!(thief_ports.is_empty(), "{state}");
    assert!(thief.proc.logs().contains("discovery stream established"));
    // bar's entry is untouched: foo still reaches bar.
    for _ in 0..10 {
        assert_eq!(Client::new().get(foo.upstream("bar"), "/").json()["app"], "bar-1");
    }
}

#[test]
fn instances_per_identity_are_capped() {
    let m = Mesh::start_with(
        "cap",
        "trust_domain: weft.local\nservices:\n  bar: {}\n",
        &["--max-instances-per-identity", "2"],
    );
    let token = m.token("bar");
    let start = |i: &str| {
        let mut o = ProxyOpts::new("bar").app("127.0.0.1:9".parse().unwrap()).arg("--instance").arg(i);
        o.token = Some(token.clone());
        o
    };
    let _a = m.proxy(start("bar-a"));
    let _b = m.proxy(start("bar-b"));
    let c = m.proxy_unready(start("bar-c"));
    eventually("the third instance is refused", Duration::from_secs(15), || {
        metric(&m.controller_metrics(), "weft_registrations_refused_total", &[("reason", "too-many-instances")]) >= 1.0
    });
    eventually("and /ready says so", Duration::from_secs(5), || ready_body(&c).1.contains("registered instances"));
}

// 3 and 4. Join tokens: ids, revocation, file modes, instance binding; permanent refusals exit.
#[test]
fn a_revoked_token_stops_certificates_renewals_and_streams() {
    let mut m = Mesh::start_with("revoke", "trust_domain: weft.local\nservices:\n  bar: {}\n", &["--cert-ttl", "6s"]);
    let (token, said) = m.token_with("default", "bar", &[]);
    assert!(said.contains("join token ") && said.contains("good until"), "{said}");
    let bar_app = HttpApp::start("bar", Behaviour::default());
    let mut o = ProxyOpts::new("bar").app(bar_app.addr);
    o.token = Some(token.clone());
    let mut bar = m.proxy(o.clone());
    assert_eq!(m.state()["proxies"].as_array().unwrap().len(), 1);
    let out = std::process::Command::new(bin("weft"))
        .args(["ca", "revoke", "--dir"])
        .arg(&m.ca_dir)
        .arg("--token-file")
        .arg(&token)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The running proxy's stream is closed and its reconnections refused.
    eventually("the stream of the revoked token closes", Duration::from_secs(5), || {
        m.state()["proxies"].as_array().is_some_and(|p| p.is_empty())
    });
    eventually("reconnections are refused", Duration::from_secs(10), || {
        metric(&m.controller_metrics(), "weft_registrations_refused_total", &[("reason", "revoked")]) >= 1.0
    });
    // Its renewal is refused, then (certificate expired) its token: it stops, saying why.
    let status = bar.proc.wait_exit(Duration::from_secs(20)).expect("the proxy of a revoked token stops");
    assert!(!status.success());
    assert!(bar.proc.logs().contains("was revoked"), "{}", bar.proc.logs());
    assert!(metric(&m.controller_metrics(), "weft_certify_refused_total", &[("reason", "revoked")]) >= 1.0);
    // A new proxy with the token never gets a certificate.
    let mut again = m.proxy_unready(o);
    assert!(!again.proc.wait_exit(Duration::from_secs(10)).expect("refused for good").success());
    // The list survives a controller restart.
    m.stop_controller();
    m.start_controller();
    assert!(metric(&m.controller_metrics(), "weft_revoked_tokens", &[]) >= 1.0);
}

#[test]
fn a_token_bound_to_an_instance_registers_only_that_instance_and_files_are_private() {
    let m = Mesh::start("bound", "trust_domain: weft.local\nservices:\n  bar: {}\n");
    let (token, said) = m.token_with("default", "bar", &["--bind-instance", "bar-0"]);
    assert!(said.contains("for instance bar-0 only"), "{said}");
    let mut wrong = ProxyOpts::new("bar").app("127.0.0.1:9".parse().unwrap()).arg("--instance").arg("bar-1");
    wrong.token = Some(token.clone());
    let wrong = m.proxy_unready(wrong);
    eventually("another instance name is refused", Duration::from_secs(15), || {
        ready_body(&wrong).1.contains("bound to instance")
    });
    drop(wrong);
    let mut right = ProxyOpts::new("bar").app("127.0.0.1:9".parse().unwrap()).arg("--instance").arg("bar-0");
    right.token = Some(token);
    let _right = m.proxy(right);
    // Token files are the owner's alone; --owner hands them to the proxies' user.
    let dir = m.dir.path().join("boot");
    let out = std::process::Command::new(bin("weft"))
        .args(["ca", "bootstrap", "--dir"])
        .arg(&dir)
        .args(["--services", "web", "--owner", "2102:2102"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(dir.join("tokens/web.token")).unwrap();
    assert_eq!((meta.mode() & 0o777, meta.uid(), meta.gid()), (0o600, 2102, 2102));
    assert_eq!(std::fs::metadata(dir.join("ca.key")).unwrap().mode() & 0o777, 0o600);
}

#[test]
fn a_controller_problem_shows_in_ready_while_it_is_retried() {
    let mut m = Mesh::start("ready-why", "trust_domain: weft.local\nservices:\n  bar: {}\n");
    m.stop_controller();
    let p = m.proxy_unready(ProxyOpts::new("bar").app("127.0.0.1:9".parse().unwrap()));
    eventually("/ready names the problem", Duration::from_secs(10), || {
        let (status, body) = ready_body(&p);
        status == 503 && body.contains("certificate request failed")
    });
    m.start_controller();
    eventually("the proxy recovers", Duration::from_secs(20), || ready_body(&p).0 == 200);
}

#[test]
fn an_expired_token_stops_the_proxy_with_the_reason() {
    let m = Mesh::start("expired", "trust_domain: weft.local\nservices:\n  bar: {}\n");
    let (token, _) = m.token_with("default", "bar", &["--ttl", "1s"]);
    std::thread::sleep(Duration::from_millis(2100));
    let mut o = ProxyOpts::new("bar").app("127.0.0.1:9".parse().unwrap());
    o.token = Some(token);
    let mut p = m.proxy_unready(o);
    assert!(!p.proc.wait_exit(Duration::from_secs(10)).expect("the proxy stops").success());
    assert!(p.proc.logs().contains("join token expired"), "{}", p.proc.logs());
}

// 5. Smuggled identity.
#[test]
fn the_app_sees_only_the_verified_caller_however_the_request_arrives() {
    let (m, bar_app, foo, bar) = foo_and_bar(
        "smuggle",
        "trust_domain: weft.local\nservices:\n  foo: {}\n  bar: {}\n",
        &["--header-read-timeout", "3s"],
    );
    let up = foo.upstream("bar");
    let forged = "spiffe://weft.local/ns/default/sa/admin";
    // An underscore spelling, which CGI, WSGI and Rack read as the same header.
    let r = Client::new().get_with(up, "/", &[("x_weft_client_id", forged), ("X-Weft_Client-Id", forged)]);
    assert_eq!(r.json()["client_id"], FOO_ID);
    assert!(!r.body.contains(forged), "{}", r.body);
    // Slow first bytes: "G", a pause past the detect timeout, then the rest with a forged header.
    let mut s = TcpStream::connect(up).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"G").unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    s.write_all(
        format!("ET /slow HTTP/1.1\r\nHost: bar\r\nConnection: close\r\nx-weft-client-id: {forged}\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 200") && out.contains(FOO_ID) && !out.contains(forged), "{out}");
    // Silent past the detect timeout, then a whole request: still HTTP, never a raw tunnel.
    let mut s = TcpStream::connect(up).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    s.write_all(
        format!("GET /late HTTP/1.1\r\nHost: bar\r\nConnection: close\r\nx-weft-client-id: {forged}\r\n\r\n")
            .as_bytes(),
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 200") && out.contains(FOO_ID) && !out.contains(forged), "{out}");
    // A slowloris is cut off at the header read timeout, not kept as a tunnel.
    let mut s = TcpStream::connect(up).unwrap();
    let started = Instant::now();
    s.write_all(b"GET /").unwrap();
    let mut cut = false;
    while started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(200));
        if s.write_all(b"a").is_err() {
            cut = true;
            break;
        }
    }
    assert!(cut && started.elapsed() < Duration::from_secs(8), "slowloris kept for {:?}", started.elapsed());

    // A custom peer holding foo's certificate: over HTTP/1.1 it names our header in `Connection`;
    // over an opaque tunnel it sends raw HTTP with a forged header. The app sees foo either way.
    let inbound: SocketAddr = format!("127.0.0.1:{}", bar.inbound).parse().unwrap();
    let foo_cert = identity(&m.ca_dir, "default", "foo");
    let port = bar_app.addr.port();
    let seen = rt().block_on(async {
        use tokio::io::AsyncWriteExt;
        let mut h1 = mtls(inbound, &m.ca_dir, Some(foo_cert.clone()), b"http/1.1").await.unwrap();
        h1.write_all(
            format!(
                "GET /h1 HTTP/1.1\r\nHost: bar\r\nx-weft-dst-port: {port}\r\nConnection: close, x-weft-client-id\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let (a, _) = read_until_closed(&mut h1, Duration::from_secs(10)).await;
        let mut tunnel = mtls(inbound, &m.ca_dir, Some(foo_cert), b"weft.tcp/1").await.unwrap();
        let mut preamble = b"WFT1".to_vec();
        preamble.extend_from_slice(&port.to_be_bytes());
        tunnel.write_all(&preamble).await.unwrap();
        tunnel
            .write_all(format!("GET /tunnel HTTP/1.1\r\nHost: bar\r\nConnection: close\r\nx-weft-client-id: {forged}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let (b, _) = read_until_closed(&mut tunnel, Duration::from_secs(10)).await;
        (String::from_utf8_lossy(&a).into_owned(), String::from_utf8_lossy(&b).into_owned())
    });
    assert!(seen.0.starts_with("HTTP/1.1 200") && seen.0.contains(FOO_ID), "{}", seen.0);
    assert!(seen.1.starts_with("HTTP/1.1 200") && seen.1.contains(FOO_ID) && !seen.1.contains(forged), "{}", seen.1);

    // A hostile app forging the proxy's response headers: only a proxy may set them.
    bar_app.set(|b| {
        b.response_headers =
            vec![("x-weft-proxy-error".into(), "forged".into()), ("x-weft-overloaded".into(), "true".into())]
    });
    let r = Client::new().get(up, "/");
    assert_eq!(r.status, 200);
    assert!(r.header("x-weft-proxy-error").is_none() && r.header("x-weft-overloaded").is_none(), "{r:?}");
}

// 8. Deadline overflow.
#[test]
fn a_deadline_past_a_day_is_served_as_a_day() {
    let (_m, _bar_app, foo, _bar) =
        foo_and_bar("overflow", "trust_domain: weft.local\nservices:\n  foo: {}\n  bar: {}\n", &[]);
    let c = Client::new();
    for (h, v) in [
        ("x-weft-deadline-ms", "9223372036854775807"),
        ("x-weft-deadline-at", "9223372036854775807"),
        ("grpc-timeout", "99999999H"),
    ] {
        let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
        let r = c.get_with(foo.upstream("bar"), "/", &[(h, v)]);
        assert_eq!(r.status, 200, "{h}: {r:?}");
        let at: i64 = r.json()["deadline_at"].as_str().unwrap().parse().unwrap();
        let day = 24 * 3600 * 1000;
        assert!(at > now_ms + day - 60_000 && at <= now_ms + day + 60_000, "{h}: deadline-at {at}, now {now_ms}");
    }
}

// 9. A malformed client body is the client's fault.
#[test]
fn a_malformed_body_from_the_client_is_a_400_and_never_ejects_the_endpoint() {
    let (_m, bar_app, foo, _bar) =
        foo_and_bar("bad-body", "trust_domain: weft.local\nservices:\n  foo: {}\n  bar: {}\n", &[]);
    for _ in 0..12 {
        let r = raw_exchange(
            foo.upstream("bar"),
            b"POST /upload HTTP/1.1\r\nHost: bar\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\nzz-not-a-size\r\n",
        );
        assert!(r.is_empty() || r.starts_with("HTTP/1.1 400"), "{r}");
    }
    let fm = foo.metrics();
    assert_eq!(metric(&fm, "weft_endpoint_ejections_total", &[]), 0.0, "{fm}");
    assert_eq!(metric(&fm, "weft_proxy_errors_total", &[("reason", "upstream-reset")]), 0.0, "{fm}");
    for _ in 0..5 {
        assert_eq!(Client::new().get(foo.upstream("bar"), "/").status, 200);
    }
    assert!(bar_app.requests() >= 5);
}

// 10. Inbound limits.
#[test]
fn inbound_connections_and_requests_are_bounded() {
    let m = Mesh::start("limits", "trust_domain: weft.local\nservices:\n  foo: {}\n  bar: {}\n");
    let bar_app = HttpApp::start("bar", Behaviour { latency: Duration::from_millis(1500), ..Default::default() });
    let bar = m.proxy(
        ProxyOpts::new("bar")
            .app(bar_app.addr)
            .arg("--max-inbound-requests")
            .arg("150")
            .arg("--header-read-timeout")
            .arg("2s"),
    );
    let inbound: SocketAddr = format!("127.0.0.1:{}", bar.inbound).parse().unwrap();
    let foo_cert = identity(&m.ca_dir, "default", "foo");
    let port = bar_app.addr.port();
    // An mTLS connection that never sends the HTTP/2 preface is closed.
    let closed = rt().block_on(async {
        let mut c = mtls(inbound, &m.ca_dir, Some(foo_cert.clone()), b"h2").await.unwrap();
        read_until_closed(&mut c, Duration::from_secs(6)).await.1
    });
    assert!(closed, "a silent mTLS connection was kept open");
    // 500 streams on one connection with the app slow: at most 100 reach the app at once; two
    // connections' worth beyond the proxy's 150 get a fast 503 marked overloaded.
    let statuses = rt().block_on(async {
        let mut all = Vec::new();
        let mut conns = Vec::new();
        for _ in 0..2 {
            let tls = mtls(inbound, &m.ca_dir, Some(foo_cert.clone()), b"h2").await.unwrap();
            let (sender, conn) = hyper::client::conn::http2::handshake::<_, _, http_body_util::Empty<bytes::Bytes>>(
                hyper_util::rt::TokioExecutor::new(),
                hyper_util::rt::TokioIo::new(tls),
            )
            .await
            .unwrap();
            tokio::spawn(conn);
            conns.push(sender);
        }
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..500 {
            let mut s = conns[i % 2].clone();
            tasks.spawn(async move {
                let req = http::Request::get("http://bar/slow")
                    .header("x-weft-dst-port", port.to_string())
                    .body(http_body_util::Empty::new())
                    .unwrap();
                match tokio::time::timeout(Duration::from_secs(30), s.send_request(req)).await {
                    Ok(Ok(r)) => (r.status().as_u16(), r.headers().contains_key("x-weft-overloaded")),
                    _ => (0, false),
                }
            });
        }
        while let Some(r) = tasks.join_next().await {
            all.push(r.unwrap());
        }
        all
    });
    let max = bar_app.stats.max_in_flight.load(std::sync::atomic::Ordering::SeqCst);
    assert!(max <= 150, "{max} requests reached the app at once");
    let overloaded = statuses.iter().filter(|(s, o)| *s == 503 && *o).count();
    let ok = statuses.iter().filter(|(s, _)| *s == 200).count();
    assert!(overloaded > 0 && ok > 0 && ok + overloaded == 500, "ok {ok}, overloaded {overloaded}: {statuses:?}");
    assert!(
        metric(&bar.metrics(), "weft_proxy_errors_total", &[("direction", "inbound"), ("reason", "overloaded")]) > 0.0
    );
}

// 11. The controller before authentication.
#[test]
fn the_controller_bounds_what_unauthenticated_clients_can_hold() {
    let m = Mesh::start("ctl-limits", "trust_domain: weft.local\nservices:\n  bar: {}\n");
    let grpc: SocketAddr = format!("127.0.0.1:{}", m.grpc_port).parse().unwrap();
    let pid = m.controller.as_ref().unwrap().pid();
    let rss = || -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap()
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
            .unwrap()
    };
    let before = rss();
    rt().block_on(async {
        // TLS without a certificate and no preface: closed within the handshake timeout.
        let mut silent = mtls(grpc, &m.ca_dir, None, b"h2").await.unwrap();
        let (_, closed) = read_until_closed(&mut silent, Duration::from_secs(15)).await;
        assert!(closed, "a connection that never sent the preface stayed open");
        // Discovery without a workload certificate: refused before any message is read.
        let tls = mtls(grpc, &m.ca_dir, None, b"h2").await.unwrap();
        let (mut send, conn) = hyper::client::conn::http2::handshake::<_, _, http_body_util::Full<bytes::Bytes>>(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tls),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        let req = http::Request::post("http://controller/weft.v1.Discovery/Stream")
            .header("content-type", "application/grpc")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        let r = send.send_request(req).await.unwrap();
        assert_eq!(r.headers().get("grpc-status").map(|v| v.to_str().unwrap().to_string()).as_deref(), Some("16"));
        // Forty half-sent certificate requests of 1 MiB each on unauthenticated connections.
        let mut held = Vec::new();
        for _ in 0..40 {
            let Ok(tls) = mtls(grpc, &m.ca_dir, None, b"h2").await else { continue };
            let Ok((mut send, conn)) = hyper::client::conn::http2::handshake::<_, _, http_body_util::StreamBody<_>>(
                hyper_util::rt::TokioExecutor::new(),
                hyper_util::rt::TokioIo::new(tls),
            )
            .await
            else {
                continue;
            };
            tokio::spawn(conn);
            let (tx, rx) =
                tokio::sync::mpsc::channel::<Result<hyper::body::Frame<bytes::Bytes>, std::convert::Infallible>>(4);
            let mut frame = vec![0u8, 0, 16, 0, 0]; // gRPC frame header: a 1 MiB message...
            frame.extend(std::iter::repeat_n(7u8, 512 * 1024)); // ...of which half is sent
            let _ = tx.send(Ok(hyper::body::Frame::data(bytes::Bytes::from(frame)))).await;
            let req = http::Request::post("http://controller/weft.v1.Identity/Certify")
                .header("content-type", "application/grpc")
                .body(http_body_util::StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)))
                .unwrap();
            let resp = tokio::spawn(send.send_request(req));
            held.push((tx, resp));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let grown_kb = rss().saturating_sub(before);
        assert!(grown_kb < 40 * 1024, "the controller grew by {grown_kb} KiB for 40 half-sent requests");
        drop(held);
    });
    // And it still serves proxies.
    let _bar = m.proxy(ProxyOpts::new("bar").app("127.0.0.1:9".parse().unwrap()));
}

// 12. Admin ports (loopback part; remote callers are refused in the namespace tests).
#[test]
fn slow_admin_connections_cannot_starve_the_proxy() {
    let (_m, _bar_app, foo, bar) =
        foo_and_bar("admin-cap", "trust_domain: weft.local\nservices:\n  foo: {}\n  bar: {}\n", &[]);
    let admin: SocketAddr = format!("127.0.0.1:{}", bar.admin).parse().unwrap();
    let mut idle = Vec::new();
    for _ in 0..60 {
        let mut s = TcpStream::connect(admin).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
        idle.push(s);
    }
    // Beyond the cap, connections are closed at once (a read ends; it does not merely time out),
    // well before the header read timeout would close them anyway.
    std::thread::sleep(Duration::from_millis(500));
    let mut closed = 0;
    for s in idle.iter_mut().skip(40) {
        s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let mut b = [0u8; 1];
        match s.read(&mut b) {
            Ok(0) => closed += 1,
            Err(e) if !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => closed += 1,
            _ => {}
        }
    }
    assert!(closed >= 15, "only {closed} of 20 connections beyond the cap were closed");
    // The data path is unaffected.
    for _ in 0..5 {
        assert_eq!(Client::new().get(foo.upstream("bar"), "/").status, 200);
    }
    // From loopback, the restricted endpoints answer.
    assert_eq!(http_get(&format!("http://127.0.0.1:{}/config", foo.admin)).unwrap().0, 200);
}

// 13. The mesh-file watcher.
#[test]
fn a_huge_or_deeply_nested_mesh_edit_is_rejected_at_once_and_the_config_stays() {
    let (m, _bar_app, foo, _bar) =
        foo_and_bar("watch-bounds", "trust_domain: weft.local\nservices:\n  foo: {}\n  bar: {allow: [foo]}\n", &[]);
    let rejected = || metric(&m.controller_metrics(), "weft_config_rejected_total", &[]);
    let deep: String = format!(
        "trust_domain: weft.local\nservices:\n  bar: {{allow: []}}\nx:\n{}",
        (1..600).map(|i| format!("{}- \n", " ".repeat(i))).collect::<String>()
    );
    let started = Instant::now();
    m.write_mesh(&deep);
    eventually("the deep file is rejected", Duration::from_secs(5), || rejected() >= 1.0);
    let huge =
        format!("trust_domain: weft.local\nservices:\n  bar: {{allow: []}}\n# {}\n", "x".repeat(2 * 1024 * 1024));
    m.write_mesh(&huge);
    eventually("the huge file is rejected", Duration::from_secs(5), || rejected() >= 2.0);
    assert!(started.elapsed() < Duration::from_secs(8));
    // Neither applied `allow: []`: foo still gets through.
    assert_eq!(Client::new().get(foo.upstream("bar"), "/").status, 200);
}

// 14 (loopback part). A controller on an IPv6 address.
#[test]
fn a_controller_at_an_ipv6_literal_is_reachable() {
    let has_v6 = std::net::TcpListener::bind("[::1]:0").is_ok();
    assert!(has_v6, "this test needs IPv6 on loopback");
    let m = Mesh::start_with("v6-ctl", "trust_domain: weft.local\nservices:\n  bar: {}\n", &[]);
    // A second controller on [::1], same CA and mesh file.
    let port = weft_tests::harness::free_port();
    let admin = weft_tests::harness::free_port();
    let mut cmd = std::process::Command::new(bin("weft-controller"));
    cmd.arg("--mesh").arg(&m.mesh_file).arg("--ca-dir").arg(&m.ca_dir);
    cmd.args(["--grpc-addr", &format!("[::1]:{port}"), "--admin-addr", &format!("127.0.0.1:{admin}")]);
    let _ctl = weft_tests::harness::Proc::spawn("weft-controller-v6", cmd, m.dir.path().join("ctl-v6.log"));
    weft_tests::harness::wait_http_ok(&format!("http://127.0.0.1:{admin}/ready"), Duration::from_secs(20)).unwrap();
    let token = m.token("bar");
    let mut cmd = std::process::Command::new(bin("weft-proxy"));
    let padmin = weft_tests::harness::free_port();
    cmd.args(["--controller", &format!("https://[::1]:{port}")])
        .arg("--trust-anchor")
        .arg(m.ca_dir.join("ca.crt"))
        .arg("--token-file")
        .arg(&token)
        .args([
            "--service",
            "bar",
            "--app",
            "127.0.0.1:9",
            "--inbound",
            &format!("[::1]:{}", weft_tests::harness::free_port()),
        ])
        .args(["--admin", &format!("127.0.0.1:{padmin}")]);
    let _p = weft_tests::harness::Proc::spawn("weft-proxy-v6", cmd, m.dir.path().join("proxy-v6.log"));
    weft_tests::harness::wait_http_ok(&format!("http://127.0.0.1:{padmin}/ready"), Duration::from_secs(20)).unwrap();
}

// 15. The lesser items.
#[test]
fn peers_are_not_told_the_apps_address_and_forged_proxy_headers_stop_at_the_proxy() {
    let m = Mesh::start("lesser", "trust_domain: weft.local\nservices:\n  foo: {}\n  bar: {}\n");
    // bar's app is down.
    let dead = "127.0.0.1:1".parse().unwrap();
    let _bar = m.proxy(ProxyOpts::new("bar").app(dead));
    let foo = m.proxy(ProxyOpts::client("foo").upstream("bar"));
    foo.wait_endpoints("bar", 1, Duration::from_secs(10));
    let r = Client::new().get(foo.upstream("bar"), "/");
    assert_eq!(r.status, 502);
    assert_eq!(r.header("x-weft-proxy-error"), Some("app-unavailable"));
    assert!(!r.body.contains("127.0.0.1:1"), "{}", r.body);
}

#[test]
fn a_ca_key_others_can_read_is_refused() {
    let m = Mesh::start("key-mode", "trust_domain: weft.local\nservices:\n  bar: {}\n");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(m.ca_dir.join("ca.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut cmd = std::process::Command::new(bin("weft-controller"));
    cmd.arg("--mesh").arg(&m.mesh_file).arg("--ca-dir").arg(&m.ca_dir);
    cmd.args(["--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"]);
    let mut ctl = weft_tests::harness::Proc::spawn("weft-controller", cmd, m.dir.path().join("key-mode.log"));
    let status = ctl.wait_exit(Duration::from_secs(10)).expect("the controller refuses to start");
    assert!(!status.success());
    assert!(ctl.logs().contains("chmod 600"), "{}", ctl.logs());
}

#[test]
fn refusals_are_logged_at_a_bounded_rate() {
    let m = Mesh::start("log-rate", "trust_domain: weft.local\nservices:\n  bar: {}\n");
    // 60 certificate requests with a garbage token.
    let grpc: SocketAddr = format!("127.0.0.1:{}", m.grpc_port).parse().unwrap();
    rt().block_on(async {
        for _ in 0..60 {
            let Ok(tls) = mtls(grpc, &m.ca_dir, None, b"h2").await else { continue };
            let Ok((mut send, conn)) =
                hyper::client::conn::http2::handshake::<_, _, http_body_util::Full<bytes::Bytes>>(
                    hyper_util::rt::TokioExecutor::new(),
                    hyper_util::rt::TokioIo::new(tls),
                )
                .await
            else {
                continue;
            };
            tokio::spawn(conn);
            let msg = prost::Message::encode_to_vec(&weft_proto::v1::CertifyRequest {
                identity: "spiffe://weft.local/ns/default/sa/bar".into(),
                token: "garbage".into(),
                csr_der: vec![1, 2, 3],
                identity_token: String::new(),
            });
            let mut frame = vec![0u8];
            frame.extend_from_slice(&(msg.len() as u32).to_be_bytes());
            frame.extend_from_slice(&msg);
            let req = http::Request::post("http://controller/weft.v1.Identity/Certify")
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(http_body_util::Full::new(bytes::Bytes::from(frame)))
                .unwrap();
            let _ = send.send_request(req).await;
        }
    });
    eventually("every refusal is counted", Duration::from_secs(5), || {
        metric(&m.controller_metrics(), "weft_certify_refused_total", &[]) >= 60.0
    });
    let logs = m.controller.as_ref().unwrap().logs();
    let lines = logs.lines().filter(|l| l.contains("refused")).count();
    assert!(lines <= 12, "{lines} refusal lines for 60 refusals:\n{logs}");
}

#[test]
fn an_upgrade_request_honours_its_deadline() {
    let m = Mesh::start("upgrade-deadline", "trust_domain: weft.local\nservices:\n  foo: {}\n  bar: {}\n");
    // An app that accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let _bar = m.proxy(ProxyOpts::new("bar").app(silent.local_addr().unwrap()));
    let foo = m.proxy(ProxyOpts::client("foo").upstream("bar"));
    foo.wait_endpoints("bar", 1, Duration::from_secs(10));
    let started = Instant::now();
    let mut s = TcpStream::connect(foo.upstream("bar")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /chat HTTP/1.1\r\nHost: bar\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nx-weft-deadline-ms: 500\r\n\r\n")
        .unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 504");
    assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
    drop(silent);
}

#[test]
fn a_burst_that_fills_the_apps_accept_queue_rides_out_one_lost_syn() {
    let m = Mesh::start("syn-burst", "trust_domain: weft.local\nservices:\n  foo: {}\n  bar: {}\n");
    // An app with an accept queue of one that stalls for 800 ms, as a busy app does under a burst:
    // the kernel drops the SYNs it cannot queue and the clients resend them after a second.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into()).unwrap();
    sock.listen(1).unwrap();
    let app_addr = sock.local_addr().unwrap().as_socket().unwrap();
    let listener: std::net::TcpListener = sock.into();
    let _bar = m.proxy(ProxyOpts::new("bar").app(app_addr));
    let foo = m.proxy(ProxyOpts::client("foo").upstream("bar"));
    foo.wait_endpoints("bar", 1, Duration::from_secs(10));
    // Four requests: two connections fit the queue, the other two SYNs are dropped and resent.
    const N: usize = 4;
    let server = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(800));
        for _ in 0..N {
            let Ok((mut s, _)) = listener.accept() else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
            });
        }
    });
    let up = foo.upstream("bar");
    let statuses: Vec<u16> = rt().block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..N {
            tasks.spawn(async move {
                weft_tests::apps::client_request(up, "GET", "/", vec![], bytes::Bytes::new())
                    .await
                    .map(|r| r.status)
                    .unwrap_or(0)
            });
        }
        let mut out = Vec::new();
        while let Some(s) = tasks.join_next().await {
            out.push(s.unwrap());
        }
        out
    });
    server.join().unwrap();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
}
