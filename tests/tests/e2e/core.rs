//! The core mesh (issue #2): foo → foo's proxy → mTLS HTTP/2 → bar's proxy → bar.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use weft_tests::apps::{self, rt, Behaviour, Client, GrpcApp, HttpApp, TcpApp, WsApp};
use weft_tests::attack::raw_exchange;
use weft_tests::harness::{eventually, metric, Mesh, ProxyHandle, ProxyOpts};

const FOO_ID: &str = "spiffe://weft.local/ns/default/sa/foo";

const MESH: &str = "trust_domain: weft.local\nservices:\n  foo: {}\n  bar: {}\n";

/// foo (a proxy with an upstream listener for bar) and one bar instance.
fn foo_and_bar(name: &str, mesh: &str) -> (Mesh, HttpApp, ProxyHandle, ProxyHandle) {
    let m = Mesh::start(name, mesh);
    let bar_app = HttpApp::start("bar-1", Behaviour::default());
    let bar = m.proxy(ProxyOpts::new("bar").app(bar_app.addr));
    let foo = m.proxy(ProxyOpts::client("foo").upstream("bar"));
    foo.wait_endpoints("bar", 1, Duration::from_secs(10));
    (m, bar_app, foo, bar)
}

#[test]
fn http_get_and_post_cross_mtls_and_the_app_sees_the_caller() {
    let (_m, bar_app, foo, bar) = foo_and_bar("http", MESH);
    let c = Client::new();
    // A caller-supplied identity header is overwritten, not trusted.
    let r = c.get_with(
        foo.upstream("bar"),
        "/hello?x=1",
        &[("x-weft-client-id", "spiffe://weft.local/ns/default/sa/admin")],
    );
    assert_eq!(r.status, 200, "{r:?}");
    let j = r.json();
    assert_eq!(j["app"], "bar-1");
    assert_eq!(j["path"], "/hello");
    assert_eq!(j["client_id"], FOO_ID);
    assert_eq!(j["version"], "HTTP/1.1", "HTTP/1 from the app is restored to HTTP/1.1 for bar");
    let r = c.post(foo.upstream("bar"), "/submit", "a body of some length");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["body"], "a body of some length");
    assert_eq!(bar_app.requests(), 2);
    let m = bar.metrics();
    assert_eq!(
        metric(
            &m,
            "weft_requests_total",
            &[("direction", "inbound"), ("tls", "true"), ("client_id", FOO_ID), ("status_code", "200")]
        ),
        2.0,
        "{m}"
    );
    let fm = foo.metrics();
    assert_eq!(
        metric(&fm, "weft_requests_total", &[("direction", "outbound"), ("service", "bar"), ("status_code", "200")]),
        2.0
    );
    assert!(metric(&fm, "weft_request_duration_seconds_count", &[("direction", "outbound")]) >= 2.0);
    assert!(fm.contains(
        "weft_request_duration_seconds_bucket{direction=\"outbound\",service=\"bar\",namespace=\"default\",le=\"0.001\"}"
    ));
    assert_eq!(metric(&fm, "weft_control_plane_connected", &[]), 1.0);
    assert!(metric(&fm, "weft_identity_cert_expiry_timestamp_seconds", &[]) > 1e9);
}

#[test]
fn grpc_unary_and_server_streaming_through_the_mesh() {
    use weft_proto::demo::echo_client::EchoClient;
    use weft_proto::demo::EchoRequest;
    let m = Mesh::start("grpc", MESH);
    let app = GrpcApp::start("bar-grpc");
    let _bar = m.proxy(ProxyOpts::new("bar").app(app.addr));
    let foo = m.proxy(ProxyOpts::client("foo").upstream("bar"));
    foo.wait_endpoints("bar", 1, Duration::from_secs(10));
    let addr = foo.upstream("bar");
    rt().block_on(async move {
        let mut client = EchoClient::connect(format!("http://{addr}")).await.expect("connect");
        let reply = client
            .unary(EchoRequest { message: "hi".into(), count: 0, delay_ms: 0 })
            .await
            .expect("unary")
            .into_inner();
        assert_eq!(reply.message, "hi");
        assert_eq!(reply.client_id, FOO_ID);
        let mut stream = client
            .server_stream(EchoRequest { message: "s".into(), count: 5, delay_ms: 0 })
            .await
            .expect("stream")
            .into_inner();
        let mut got = vec![];
        while let Some(item) = stream.message().await.expect("stream item") {
            got.push(item.index);
        }
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
    });
    // gRPC outcomes are counted by grpc-status (read at the end of each stream), not HTTP 200.
    eventually("both calls counted as gRPC OK", Duration::from_secs(5), || {
        metric(
            &foo.metrics(),
            "weft_grpc_responses_total",
            &[("direction", "outbound"), ("service", "bar"), ("grpc_status", "0")],
        ) == 2.0
    });
}

/// An opaque port from the list that is free here.
fn free_opaque_port() -> u16 {
    for p in [4444u16, 4222, 9300, 11211, 5432, 6379, 3306, 587, 25] {
        if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
    panic!("no opaque port is free on 127.0.0.1");
}

#[test]
fn opaque_tcp_and_a_server_speaks_first_protocol() {
    let m = Mesh::start("tcp", MESH);
    // A server-speaks-first protocol on an opaque port: no detection, the banner arrives at once.
    let port = free_opaque_port();
    let banner_app = TcpApp::start(&format!("127.0.0.1:{port}"), Some("220 hello from bar\r\n"));
    let _bar = m.proxy(ProxyOpts::new("bar").app(banner_app.addr));
    // A client-first binary protocol on an ordinary port: detected as opaque, tunnelled.
    let echo_app = TcpApp::start("127.0.0.1:0", None);
    let _baz = m.proxy(ProxyOpts::new("baz").app(echo_app.addr));
    let mut foo_opts = ProxyOpts::client("foo").upstream("bar").upstream("baz");
    foo_opts.extra = vec!["--tcp-idle-timeout".into(), "1s".into()];
    let foo = m.proxy(foo_opts);
    foo.wait_endpoints("bar", 1, Duration::from_secs(10));
    foo.wait_endpoints("baz", 1, Duration::from_secs(10));

    let started = Instant::now();
    let mut s = TcpStream::connect(foo.upstream("bar")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"220 hello from bar\r\n");
    assert!(started.elapsed() < Duration::from_secs(2), "the banner must not wait for detection");
    s.write_all(b"PING\r\n").unwrap();
    let n = s.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"PING\r\n");
    // Left idle, the connection is closed by foo's proxy after its --tcp-idle-timeout.
    let idle_from = Instant::now();
    assert_eq!(s.read(&mut buf).expect("closed when idle, within the read timeout"), 0);
    let idle = idle_from.elapsed();
    assert!(idle >= Duration::from_millis(900) && idle < Duration::from_secs(5), "closed after {idle:?}");

    let mut s = TcpStream::connect(foo.upstream("baz")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let payload = b"\x00\x01binary\xffpayload";
    s.write_all(payload).unwrap();
    let mut got = vec![0u8; payload.len()];
    s.read_exact(&mut got).unwrap();
    assert_eq!(&got, payload);
    drop(s);
    eventually("TCP metrics", Duration::from_secs(5), || {
        metric(
            &foo.metrics(),
            "weft_tcp_connections_total",
            &[("direction", "outbound"), ("tls", "true"), ("meshed", "true")],
        ) >= 2.0
    });
}

#[test]
fn operator_opaque_ports_skip_detection_on_both_sides() {
    let m = Mesh::start("opaque-ports", MESH);
    // A server-speaks-first app on a port outside the built-in list, and a detect timeout so long
    // that the banner could only arrive quickly if neither proxy waits for the client to speak.
    let banner_app = TcpApp::start("127.0.0.1:0", Some("220 hello from bar\r\n"));
    let port = banner_app.addr.port().to_string();
    let flags = |o: &mut ProxyOpts| {
        o.extra = vec!["--opaque-ports".into(), format!("1,{port}"), "--detect-timeout".into(), "20s".into()]
    };
    let mut bar_opts = ProxyOpts::new("bar").app(banner_app.addr);
    flags(&mut bar_opts);
    let _bar = m.proxy(bar_opts);
    let mut foo_opts = ProxyOpts::client("foo").upstream("bar");
    flags(&mut foo_opts);
    let foo = m.proxy(foo_opts);
    foo.wait_endpoints("bar", 1, Duration::from_secs(10));

    let started = Instant::now();
    let mut s = TcpStream::connect(foo.upstream("bar")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"220 hello from bar\r\n");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "the banner waited {took:?}: a proxy ran detection on an opaque port");
}

#[test]
fn plaintext_and_foreign_certificates_are_refused_at_the_inbound_port() {
    let (m, bar_app, foo, bar) = foo_and_bar("refuse", MESH);
    let inbound: SocketAddr = format!("127.0.0.1:{}", bar.inbound).parse().unwrap();
    // Plaintext HTTP: the TLS handshake fails and the connection closes without an answer.
    let mut s = TcpStream::connect(inbound).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: bar\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    assert!(!String::from_utf8_lossy(&buf).contains("HTTP/1.1 200"), "plaintext must not be served");
    // Garbage: closed, and nothing else is affected.
    let mut s = TcpStream::connect(inbound).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(&[0xde, 0xad, 0xbe, 0xef].repeat(100));
    let _ = s.read_to_end(&mut buf);
    // A client certificate from another CA.
    let other = weft_certs::CertificateAuthority::init(&m.dir.path().join("other-ca"), "weft.local").unwrap();
    let id = weft_certs::SpiffeId::new("weft.local", "default", "foo").unwrap();
    let issued = other.issue_direct(&id, Duration::from_secs(3600)).unwrap();
    let store = weft_certs::IdentityStore::new();
    store.install(issued.chain, issued.key.into()).unwrap();
    let real_bundle = weft_certs::TrustBundle::new(vec![weft_certs::CertificateAuthority::load(&m.ca_dir)
        .unwrap()
        .cert_der()
        .clone()])
    .unwrap();
    let cfg = weft_certs::tls::client_config(Some(store), real_bundle, "weft.local", &[b"h2"]);
    let result = rt().block_on(async move {
        let tcp = tokio::net::TcpStream::connect(inbound).await.unwrap();
        let conn = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(weft_certs::tls::server_name_for(inbound.ip()), tcp)
            .await;
        match conn {
            Err(e) => Err(e.to_string()),
            Ok(mut tls) => {
                // TLS 1.3: the server's verdict on the client certificate arrives with the first read.
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let _ = tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
                let mut b = [0u8; 16];
                match tls.read(&mut b).await {
                    Ok(0) | Err(_) => Err("closed".to_string()),
                    Ok(_) => Ok(()),
                }
            }
        }
    });
    assert!(result.is_err(), "a certificate from another CA must be refused");
    // The mesh still works.
    assert_eq!(Client::new().get(foo.upstream("bar"), "/").status, 200);
    assert_eq!(bar_app.requests(), 1);
    assert!(metric(&bar.metrics(), "weft_proxy_errors_total", &[("reason", "tls-handshake")]) >= 2.0);
}

#[test]
fn a_token_for_foo_cannot_obtain_a_certificate_for_bar() {
    let m = Mesh::start("token", MESH);
    let foo_token = m.token("foo");
    let mut opts = ProxyOpts::new("bar").app("127.0.0.1:9".parse().unwrap());
    opts.token = Some(foo_token);
    let mut p = m.proxy_unready(opts);
    eventually("the controller refuses the token", Duration::from_secs(10), || {
        metric(&m.controller_metrics(), "weft_certify_refused_total", &[("reason", "token")]) >= 1.0
    });
    // A refusal for good stops the proxy with the reason, rather than retrying for ever.
    let status = p.proc.wait_exit(Duration::from_secs(10)).expect("the proxy exits");
    assert!(!status.success());
    let logs = p.proc.logs();
    assert!(
        logs.contains("join token refused") && logs.contains("is for spiffe://weft.local/ns/default/sa/foo"),
        "{logs}"
    );
}

#[test]
fn controller_gone_traffic_flows_and_after_restart_changes_arrive() {
    let (mut m, _bar_app, foo, _bar) = foo_and_bar("ctl-restart", MESH);
    let c = Client::new();
    m.stop_controller();
    eventually("proxies notice", Duration::from_secs(15), || {
        metric(&foo.metrics(), "weft_control_plane_connected", &[]) == 0.0
    });
    for _ in 0..20 {
        assert_eq!(c.get(foo.upstream("bar"), "/").status, 200, "static stability: serving on the last config");
    }
    m.start_controller();
    eventually("proxies reconnect", Duration::from_secs(20), || {
        metric(&foo.metrics(), "weft_control_plane_connected", &[]) == 1.0
    });
    // A later change reaches the proxies: bar now only allows web.
    m.write_mesh("trust_domain: weft.local\nservices:\n  foo: {}\n  bar: {allow: [web]}\n");
    eventually("the new policy applies", Duration::from_secs(10), || c.get(foo.upstream("bar"), "/").status == 403);
}

#[test]
fn a_broken_mesh_edit_is_rejected_and_the_previous_config_keeps_serving() {
    let (m, _bar_app, foo, _bar) = foo_and_bar("broken-edit", MESH);
    let before = m.state()["config_version"].clone();
    m.write_mesh("trust_domain: weft.local\nservices:\n  bar: {timeout: soon, protocol: carrier-pigeon}\n");
    eventually("the edit is rejected", Duration::from_secs(10), || {
        metric(&m.controller_metrics(), "weft_config_rejected_total", &[]) == 1.0
    });
    assert_eq!(m.state()["config_version"], before);
    let logs = m.controller.as_ref().unwrap().logs();
    assert!(
        logs.contains("services.bar.timeout") && logs.contains("services.bar.protocol"),
        "every problem is logged:\n{logs}"
    );
    assert_eq!(Client::new().get(foo.upstream("bar"), "/").status, 200);
    // A good edit after a bad one applies.
    m.write_mesh("trust_domain: weft.local\nservices:\n  foo: {}\n  bar: {allow: [web]}\n");
    eventually("the good edit applies", Duration::from_secs(10), || {
        Client::new().get(foo.upstream("bar"), "/").status == 403
    });
}

#[test]
fn a_second_instance_takes_traffic_within_a_second_and_a_slow_one_gets_little() {
    let (m, bar1_app, foo, _bar1) = foo_and_bar("balance", MESH);
    let c = Client::new();
    let bar2_app = HttpApp::start("bar-2", Behaviour::default());
    let _bar2 = m.proxy(ProxyOpts::new("bar").app(bar2_app.addr));
    let registered = Instant::now();
    foo.wait_endpoints("bar", 2, Duration::from_secs(5));
    let seen_after = registered.elapsed();
    assert!(seen_after < Duration::from_secs(1), "foo's proxy learnt the new instance after {seen_after:?}");
    // Equally fast instances share the traffic. The balancer is latency-aware: on a loaded machine one
    // instance's slow moment keeps it out until its estimate decays (1 s time constant), so keep
    // going, bounded, until both have taken a fair number.
    let until = Instant::now() + Duration::from_secs(20);
    for sent in 0..2000 {
        assert_eq!(c.get(foo.upstream("bar"), "/").status, 200);
        let spread = bar1_app.requests() >= 20 && bar2_app.requests() >= 20;
        if (sent >= 200 && spread) || Instant::now() > until {
            break;
        }
    }
    let (a, b) = (bar1_app.requests(), bar2_app.requests());
    assert!(a >= 20 && b >= 20, "both instances should take traffic: {a} vs {b}\n{:#}", foo.config()["services"]);

    // bar-2 answers 50 ms slower: peak-EWMA steers traffic away from it.
    bar2_app.set(|b| b.latency = Duration::from_millis(50));
    let (a0, b0) = (bar1_app.requests(), bar2_app.requests());
    for _ in 0..300 {
        assert_eq!(c.get(foo.upstream("bar"), "/").status, 200);
    }
    let (da, db) = (bar1_app.requests() - a0, bar2_app.requests() - b0);
    let share = db as f64 / (da + db) as f64;
    assert!(share < 0.25, "the slow instance got {:.0}% ({db} of {})", share * 100.0, da + db);
}

#[test]
fn an_identity_not_allowed_gets_403() {
    let mesh = "trust_domain: weft.local\nservices:\n  foo: {}\n  bar: {allow: [web]}\n";
    let (_m, bar_app, foo, bar) = foo_and_bar("authz", mesh);
    let r = Client::new().get(foo.upstream("bar"), "/");
    assert_eq!(r.status, 403);
    assert_eq!(r.header("x-weft-proxy-error"), Some("unauthorized"));
    assert_eq!(bar_app.requests(), 0);
    assert_eq!(
        metric(
            &bar.metrics(),
            "weft_requests_total",
            &[("direction", "inbound"), ("status_code", "403"), ("client_id", FOO_ID)]
        ),
        1.0
    );
}

#[test]
fn websocket_echo_through_the_mesh() {
    let m = Mesh::start("ws", MESH);
    let ws = WsApp::start();
    let _bar = m.proxy(ProxyOpts::new("bar").app(ws.addr));
    let mut foo_opts = ProxyOpts::client("foo").upstream("bar");
    foo_opts.extra = vec!["--tcp-idle-timeout".into(), "1s".into()];
    let foo = m.proxy(foo_opts);
    foo.wait_endpoints("bar", 1, Duration::from_secs(10));
    let addr = foo.upstream("bar");
    rt().block_on(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /chat HTTP/1.1\r\nHost: bar\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
            .await
            .unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut b).await.unwrap();
            head.push(b[0]);
        }
        let head = String::from_utf8_lossy(&head);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        for msg in ["hello", "mesh", "both ways"] {
            s.write_all(&apps::client_frame(msg)).await.unwrap();
            let got = tokio::time::timeout(Duration::from_secs(5), apps::read_frame(&mut s)).await.unwrap().unwrap();
            assert_eq!(got, msg.as_bytes());
        }
        // Left idle, the upgraded connection is closed by foo's proxy after its --tcp-idle-timeout.
        let idle_from = tokio::time::Instant::now();
        let read = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b)).await;
        assert_eq!(read.expect("closed when idle, within 5 s").unwrap(), 0);
        let idle = idle_from.elapsed();
        assert!(idle >= Duration::from_millis(900), "closed after {idle:?}");
    });
}

/// Sends requests at a steady pace on a background thread; counts failures.
struct SteadyLoad {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    errors: Arc<std::sync::Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SteadyLoad {
    fn start(target: SocketAddr, every: Duration) -> Self {
        let (stop, ok, failed) =
            (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (s, o, f, e) = (stop.clone(), ok.clone(), failed.clone(), errors.clone());
        let thread = std::thread::spawn(move || {
            let c = Client::new();
            // Bounded: at most 10 minutes of load whatever happens.
            let end = Instant::now() + Duration::from_secs(600);
            while !s.load(Ordering::SeqCst) && Instant::now() < end {
                match rt().block_on(c.send(target, "GET", "/steady", &[], "")) {
                    Ok(r) if r.status == 200 => {
                        o.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(r) => {
                        f.fetch_add(1, Ordering::SeqCst);
                        e.lock().unwrap().push(format!("{} {:?} {}", r.status, r.header("x-weft-proxy-error"), r.body));
                    }
                    Err(err) => {
                        f.fetch_add(1, Ordering::SeqCst);
                        e.lock().unwrap().push(err);
                    }
                }
                std::thread::sleep(every);
            }
        });
        Self { stop, ok, failed, errors, thread: Some(thread) }
    }

    fn finish(mut self) -> (u64, u64, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        (self.ok.load(Ordering::SeqCst), self.failed.load(Ordering::SeqCst), self.errors.lock().unwrap().clone())
    }
}

#[test]
fn certificates_rotate_under_steady_traffic_without_a_failed_request() {
    let m = Mesh::start_with("rotate", MESH, &["--cert-ttl", "4s"]);
    let bar_app = HttpApp::start("bar-1", Behaviour::default());
    let bar = m.proxy(ProxyOpts::new("bar").app(bar_app.addr));
    let foo = m.proxy(ProxyOpts::client("foo").upstream("bar"));
    foo.wait_endpoints("bar", 1, Duration::from_secs(10));
    let expiry = |p: &ProxyHandle| metric(&p.metrics(), "weft_identity_cert_expiry_timestamp_seconds", &[]);
    let first = (expiry(&foo), expiry(&bar));
    let load = SteadyLoad::start(foo.upstream("bar"), Duration::from_millis(20));
    // Two rotations each at a 4 s TTL (half-life 2 s): wait until the controller issued them.
    eventually("two renewals per proxy", Duration::from_secs(30), || {
        metric(&m.controller_metrics(), "weft_certificates_issued_total", &[("kind", "renewal")]) >= 4.0
    });
    std::thread::sleep(Duration::from_millis(500));
    let (ok, failed, errors) = load.finish();
    assert_eq!(failed, 0, "failed requests during rotation: {errors:?}");
    assert!(ok > 50, "{ok}");
    assert!(expiry(&foo) > first.0 && expiry(&bar) > first.1, "both proxies hold newer certificates");
}

#[test]
fn controller_restart_under_steady_traffic_drops_nothing() {
    let (mut m, _bar1_app, foo, _bar1) = foo_and_bar("restart-load", MESH);
    let bar2_app = HttpApp::start("bar-2", Behaviour::default());
    let _bar2 = m.proxy(ProxyOpts::new("bar").app(bar2_app.addr));
    foo.wait_endpoints("bar", 2, Duration::from_secs(5));
    let load = SteadyLoad::start(foo.upstream("bar"), Duration::from_millis(20));
    std::thread::sleep(Duration::from_millis(500));
    m.stop_controller();
    std::thread::sleep(Duration::from_secs(1));
    m.start_controller();
    // Until every proxy is back and past the controller's hold-down, foo must keep both endpoints.
    let until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < until {
        let n = foo.config()["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "bar")
            .map(|s| s["endpoints"].as_array().unwrap().len())
            .unwrap_or(0);
        assert_eq!(n, 2, "an endpoint was dropped while proxies reconnected");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (ok, failed, errors) = load.finish();
    assert_eq!(failed, 0, "{errors:?}");
    assert!(ok > 100);
    assert_eq!(m.state()["proxies"].as_array().unwrap().len(), 3, "every proxy reconnected");
}

#[test]
fn bad_input_from_the_app_gets_clear_answers() {
    let m = Mesh::start("bad-input", MESH);
    let bar_app = HttpApp::start("bar-1", Behaviour::default());
    let _bar = m.proxy(ProxyOpts::new("bar").app(bar_app.addr));
    let foo = m.proxy(
        ProxyOpts::new("foo")
            .app("127.0.0.1:9".parse().unwrap())
            .upstream("bar")
            .arg("--header-read-timeout")
            .arg("1s"),
    );
    foo.wait_endpoints("bar", 1, Duration::from_secs(10));
    let up = foo.upstream("bar");
    // Malformed HTTP: 400, not a hang.
    let r = raw_exchange(up, b"GET / HTTP/1.1\r\nHost: bar\r\nthis is not a header\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    // Oversized headers: 431.
    let big = format!("GET / HTTP/1.1\r\nHost: bar\r\nx-big: {}\r\n\r\n", "a".repeat(70 * 1024));
    let r = raw_exchange(up, big.as_bytes());
    assert!(r.starts_with("HTTP/1.1 431"), "{}", &r[..r.len().min(200)]);
    // Headers just under the 64 KiB default pass.
    let ok = format!("GET / HTTP/1.1\r\nHost: bar\r\nConnection: close\r\nx-big: {}\r\n\r\n", "a".repeat(50 * 1024));
    let r = raw_exchange(up, ok.as_bytes());
    assert!(r.starts_with("HTTP/1.1 200"), "{}", &r[..r.len().min(200)]);
    // A client that sends its headers too slowly is cut off.
    let mut s = TcpStream::connect(up).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = Instant::now();
    s.write_all(b"GET / HTTP/1.1\r\n").unwrap();
    let mut closed = false;
    for _ in 0..40 {
        std::thread::sleep(Duration::from_millis(100));
        if s.write_all(b"x").is_err() {
            closed = true;
            break;
        }
        let mut b = [0u8; 64];
        s.set_nonblocking(true).unwrap();
        let r = s.read(&mut b);
        s.set_nonblocking(false).unwrap();
        if matches!(r, Ok(0)) || matches!(r, Ok(n) if n > 0) {
            closed = true;
            break;
        }
    }
    assert!(closed, "a slow client was not cut off");
    assert!(started.elapsed() < Duration::from_secs(4));
    assert_eq!(bar_app.requests(), 1, "only the valid request reached the app");
}

#[test]
fn invalid_flags_and_mesh_files_list_every_problem_and_exit_non_zero() {
    let out = std::process::Command::new(weft_tests::harness::bin("weft-proxy"))
        .args(["--controller", "http://x", "--upstream", "nope", "--admin", "here", "--workers", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in ["--controller", "--service", "--trust-anchor", "--token-file", "--upstream", "--admin", "--workers"]
    {
        assert!(err.contains(needle), "{needle} missing:\n{err}");
    }
    let dir = weft_tests::harness::TestDir::new("bad-mesh");
    let ca = dir.path().join("ca");
    weft_certs::CertificateAuthority::init(&ca, "weft.local").unwrap();
    let mesh = dir.path().join("mesh.yaml");
    // The controller with a mesh file: its stderr when it refuses to start.
    let refused = |text: &str| -> String {
        std::fs::write(&mesh, text).unwrap();
        let out = std::process::Command::new(weft_tests::harness::bin("weft-controller"))
            .arg("--mesh")
            .arg(&mesh)
            .arg("--ca-dir")
            .arg(&ca)
            .args(["--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"])
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = refused("trust_domain: other.td\nservices:\n  bar: {timeout: 2x, mtls: maybe}\n");
    assert!(err.contains("services.bar.timeout") && err.contains("services.bar.mtls"), "{err}");
    assert!(refused("trust_domain: other.td\n").contains("not the CA's trust domain"));
}

#[test]
fn shutdown_from_loopback_await_and_probe() {
    let (_m, _bar_app, foo, mut bar) = foo_and_bar("shutdown", MESH);
    let probe = |url: &str| {
        std::process::Command::new(weft_tests::harness::bin("weft-proxy"))
            .args(["probe", url])
            .status()
            .unwrap()
            .success()
    };
    assert!(probe(&format!("http://127.0.0.1:{}/ready", foo.admin)));
    assert!(!probe(&format!("http://127.0.0.1:{}/nope", foo.admin)));
    // await runs the command once the proxy is ready, exits with its status, then shuts it down.
    let status = std::process::Command::new(weft_tests::harness::bin("weft-proxy"))
        .args([
            "await",
            "--admin",
            &format!("http://127.0.0.1:{}", bar.admin),
            "--shutdown",
            "--",
            "sh",
            "-c",
            "exit 7",
        ])
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(7));
    assert!(bar.proc.wait_exit(Duration::from_secs(10)).is_some(), "POST /shutdown made the proxy exit");
    // SIGTERM: /ready fails, connections drain, the process exits.
    let mut foo = foo;
    foo.proc.signal("TERM");
    let exit = foo.proc.wait_exit(Duration::from_secs(15)).expect("exits after SIGTERM");
    assert!(exit.success(), "{exit:?}");
}

#[test]
fn a_peer_cannot_reach_other_ports_on_the_apps_address() {
    let (m, bar_app, _foo, bar) = foo_and_bar("ports", MESH);
    // A legitimate mesh identity, straight to bar's inbound port, asking for bar's admin port.
    let ca = weft_certs::CertificateAuthority::load(&m.ca_dir).unwrap();
    let id = weft_certs::SpiffeId::new("weft.local", "default", "foo").unwrap();
    let issued = ca.issue_direct(&id, Duration::from_secs(3600)).unwrap();
    let store = weft_certs::IdentityStore::new();
    store.install(issued.chain, issued.key.into()).unwrap();
    let bundle = weft_certs::TrustBundle::new(vec![ca.cert_der().clone()]).unwrap();
    let cfg = Arc::new(weft_certs::tls::client_config(Some(store), bundle, "weft.local", &[b"h2"]));
    let inbound: SocketAddr = format!("127.0.0.1:{}", bar.inbound).parse().unwrap();
    let statuses = rt().block_on(async move {
        let mut out = vec![];
        for port in [bar.admin, bar_app.addr.port()] {
            let tcp = tokio::net::TcpStream::connect(inbound).await.unwrap();
            let tls = tokio_rustls::TlsConnector::from(cfg.clone())
                .connect(weft_certs::tls::server_name_for(inbound.ip()), tcp)
                .await
                .unwrap();
            let (mut send, conn) = hyper::client::conn::http2::handshake(
                hyper_util::rt::TokioExecutor::new(),
                hyper_util::rt::TokioIo::new(tls),
            )
            .await
            .unwrap();
            tokio::spawn(conn);
            let req = http::Request::get("http://bar/metrics")
                .header("x-weft-dst-port", port.to_string())
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap();
            out.push(send.send_request(req).await.unwrap().status().as_u16());
        }
        out
    });
    assert_eq!(statuses, vec![400, 200], "only the app port is reachable");
}

#[test]
fn a_proxy_shutting_down_under_traffic_loses_no_request() {
    let (m, _bar1_app, foo, mut bar1) = foo_and_bar("drain", MESH);
    let bar2_app = HttpApp::start("bar-2", Behaviour::default());
    let _bar2 = m.proxy(ProxyOpts::new("bar").app(bar2_app.addr));
    foo.wait_endpoints("bar", 2, Duration::from_secs(5));
    let load = SteadyLoad::start(foo.upstream("bar"), Duration::from_millis(10));
    std::thread::sleep(Duration::from_millis(500));
    // SIGTERM: bar-1 withdraws its endpoint, keeps serving for the shutdown delay, then drains.
    bar1.proc.signal("TERM");
    foo.wait_endpoints("bar", 1, Duration::from_secs(2));
    let exit = bar1.proc.wait_exit(Duration::from_secs(15)).expect("bar-1 exits");
    assert!(exit.success(), "{exit:?}");
    std::thread::sleep(Duration::from_millis(500));
    let (ok, failed, errors) = load.finish();
    assert_eq!(failed, 0, "{errors:?}");
    assert!(ok > 100, "{ok}");
    assert!(bar2_app.requests() > 0);
}

#[test]
fn config_shows_each_policy_in_the_mesh_file_shape() {
    let mesh = "trust_domain: weft.local\nservices:\n  foo: {}\n  bar:\n    protocol: http\n    mtls: strict\n    \
                allow: [foo]\n    timeout: 2s\n    retries: {max_retries: 3, backoff: {base: 50ms, max: 1s}}\n    \
                routes:\n      - match: {path_prefix: /slow}\n        timeout: 10s\n";
    let (_m, _bar_app, foo, _bar) = foo_and_bar("config-json", mesh);
    let config = foo.config();
    let bar = config["services"].as_array().unwrap().iter().find(|s| s["name"] == "bar").cloned().unwrap();
    let p = &bar["policy"];
    assert_eq!(p["protocol"], "http", "{p:#}");
    assert_eq!(p["mtls"], "strict");
    assert_eq!(p["allow"], serde_json::json!([FOO_ID]));
    assert_eq!(p["timeout"], "2s");
    assert_eq!(p["retries"]["max_retries"], 3);
    assert_eq!(p["retries"]["backoff"], serde_json::json!({"base": "50ms", "max": "1s"}));
    // Defaults are spelled out, not left for the reader to know.
    assert!(p["retries"]["budget"]["window"].is_string(), "{p:#}");
    assert!(p["circuit_breaker"]["outlier"]["consecutive_failures"].is_u64(), "{p:#}");
    // A route inherits what it does not set.
    assert_eq!(p["routes"][0]["match"]["path_prefix"], "/slow");
    assert_eq!(p["routes"][0]["timeout"], "10s");
    assert_eq!(p["routes"][0]["retries"]["max_retries"], 3);
    // The runtime fields stay.
    assert_eq!(bar["namespace"], "default");
    assert_eq!(bar["endpoints"].as_array().map(Vec::len), Some(1));
    assert!(config["versions"].is_object() || config["versions"].is_array(), "{config:#}");
    assert!(!config["directory"].is_null());
}
