//! Pod-style transparent interception (issue #4): network namespaces as pods, rules installed by
//! `weft-proxy init`, proxies under their own UID, unmodified clients and apps. Needs root.

use std::process::Command;
use std::time::{Duration, Instant};

use weft_tests::harness::{bin, metric};
use weft_tests::netns::{Lab, SWITCH_IP, SWITCH_IP6};

const PROXY_UID: u32 = 2102;
const FOO_ID: &str = "spiffe://weft.local/ns/default/sa/foo";

fn mesh(mtls: &str) -> String {
    format!(
        "trust_domain: weft.local\nservices:\n  foo: {{}}\n  bar:\n    vip: 10.96.0.10\n    ports: [{{port: 80, target_port: 8080}}]\n    mtls: {mtls}\n"
    )
}

/// A lab with a controller in the switch namespace; returns the CA dir and the mesh file.
fn controller(lab: &mut Lab, mesh_yaml: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    controller_on(lab, mesh_yaml, &format!("{SWITCH_IP}:7070"))
}

fn controller_on(lab: &mut Lab, mesh_yaml: &str, grpc: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let ca = lab.dir.path().join("ca");
    assert!(Command::new(bin("weft")).args(["ca", "init", "--dir"]).arg(&ca).status().unwrap().success());
    let mesh_dir = lab.dir.path().join("mesh");
    std::fs::create_dir_all(&mesh_dir).unwrap();
    let mesh = mesh_dir.join("mesh.yaml");
    std::fs::write(&mesh, mesh_yaml).unwrap();
    let switch = lab.switch.clone();
    lab.spawn(
        &switch,
        "controller",
        None,
        &[
            bin("weft-controller").display().to_string(),
            "--mesh".into(),
            mesh.display().to_string(),
            "--ca-dir".into(),
            ca.display().to_string(),
            "--grpc-addr".into(),
            grpc.into(),
            "--admin-addr".into(),
            format!("{SWITCH_IP}:7071"),
            "--restart-holddown".into(),
            "2s".into(),
        ],
    );
    lab.wait_ready(&switch, &format!("http://{SWITCH_IP}:7071/ready"), Duration::from_secs(20));
    (ca, mesh)
}

/// A meshed pod: rules from `weft-proxy init`, the demo app (HTTP on 8080, a banner TCP server on
/// the opaque port 4222), and a transparent proxy under its own UID.
fn meshed_pod(lab: &mut Lab, ca: &std::path::Path, name: &str, service: &str, n: u8) -> String {
    let ns = lab.pod(name, n);
    start_meshed_pod(lab, &ns, ca, name, service, &format!("https://{SWITCH_IP}:7070"));
    ns
}

/// Rules, app and proxy in an existing pod namespace `ns`.
fn start_meshed_pod(lab: &mut Lab, ns: &str, ca: &std::path::Path, name: &str, service: &str, controller: &str) {
    let ns = ns.to_string();
    let init = lab.exec(&ns, &[&lab.weft_proxy(), "init"]);
    assert!(init.status.success(), "init: {}", String::from_utf8_lossy(&init.stderr));
    let token = lab.dir.path().join(format!("{name}.token"));
    let out =
        Command::new(bin("weft")).args(["ca", "token", "--dir"]).arg(ca).args(["--service", service]).output().unwrap();
    std::fs::write(&token, out.stdout).unwrap();
    lab.spawn(
        &ns,
        &format!("{name}-app"),
        None,
        &[
            bin("weft-demo").display().to_string(),
            "--name".into(),
            name.into(),
            "--listen".into(),
            // Both families (a dual-stack pod's app takes IPv6 too).
            "[::]:8080".into(),
            "--tcp".into(),
            "0.0.0.0:4222".into(),
            "--banner".into(),
            format!("220 {name} ready"),
        ],
    );
    lab.spawn(
        &ns,
        &format!("{name}-proxy"),
        Some(PROXY_UID),
        &[
            lab.weft_proxy(),
            "--transparent".into(),
            "--controller".into(),
            controller.into(),
            "--trust-anchor".into(),
            ca.join("ca.crt").display().to_string(),
            "--token-file".into(),
            token.display().to_string(),
            "--service".into(),
            service.into(),
            "--instance".into(),
            name.into(),
        ],
    );
    lab.wait_ready(&ns, "http://127.0.0.1:4191/ready", Duration::from_secs(20));
}

fn metrics(lab: &Lab, ns: &str) -> String {
    lab.curl(ns, "http://127.0.0.1:4191/metrics").map(|(_, b)| b).unwrap_or_default()
}

#[test]
fn pods_talk_through_their_sidecars_without_knowing() {
    let mut lab = Lab::new("pods");
    let (ca, mesh_file) = controller(&mut lab, &mesh("permissive"));
    let a = meshed_pod(&mut lab, &ca, "a", "foo", 11);
    let b = meshed_pod(&mut lab, &ca, "b", "bar", 12);
    let c = meshed_pod(&mut lab, &ca, "c", "bar", 13);
    // A pod outside the mesh: no rules, no proxy, a plain app.
    let x = lab.pod("x", 20);
    lab.spawn(
        &x,
        "x-app",
        None,
        &[
            bin("weft-demo").display().to_string(),
            "--name".into(),
            "outside".into(),
            "--listen".into(),
            "0.0.0.0:9090".into(),
        ],
    );
    lab.wait_ready(&x, "http://198.18.0.20:9090/healthz", Duration::from_secs(10));

    // A's proxy learns the mesh's addresses from the controller; until then A's connections to a
    // new pod would pass through unmeshed (as in any on-demand mesh).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let dir = lab.curl(&a, "http://127.0.0.1:4191/config").map(|(_, b)| b).unwrap_or_default();
        if ["198.18.0.12", "198.18.0.13", "10.96.0.10:80"].iter().all(|ip| dir.contains(&format!("\"{ip}\""))) {
            break;
        }
        assert!(Instant::now() < deadline, "A's proxy never learnt the mesh's addresses: {dir}");
        std::thread::sleep(Duration::from_millis(100));
    }

    // An unmodified client in pod A calls pod B's IP and app port: both proxies, over mTLS.
    let (status, body) = lab.curl(&a, "http://198.18.0.12:8080/hello").unwrap();
    assert_eq!(status, 200, "{body}");
    let j: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(j["service"], "b");
    assert_eq!(j["client_id"], FOO_ID, "bar's app sees the verified caller");
    let bm = metrics(&lab, &b);
    assert!(
        metric(&bm, "weft_requests_total", &[("direction", "inbound"), ("tls", "true"), ("client_id", FOO_ID)]) >= 1.0,
        "{bm}"
    );

    // A service VIP is balanced across both bar pods. The balancer is latency-aware, so on a loaded
    // machine one pod's slow moment can keep it out for a second or two (its estimate decays with a
    // 1 s time constant): keep calling, bounded, until both have answered.
    let mut served_by = std::collections::BTreeSet::new();
    let until = Instant::now() + Duration::from_secs(20);
    for _ in 0..300 {
        if served_by.len() == 2 || Instant::now() > until {
            break;
        }
        let (status, body) = lab.curl(&a, "http://10.96.0.10:80/").unwrap();
        assert_eq!(status, 200);
        let j: serde_json::Value = serde_json::from_str(&body).unwrap();
        served_by.insert(j["service"].as_str().unwrap().to_string());
    }
    assert_eq!(served_by.len(), 2, "both pods behind the VIP answer: {served_by:?}");

    // A server-speaks-first protocol on an opaque port: the banner arrives through the mesh.
    let started = Instant::now();
    let out = lab.exec_ok(&a, &["bash", "-c", "exec 3<>/dev/tcp/198.18.0.12/4222; read -t 5 line <&3; echo \"$line\"; echo ping >&3; read -t 5 echo <&3; echo \"$echo\""]);
    assert_eq!(out.trim().lines().collect::<Vec<_>>(), vec!["220 b ready", "ping"], "{out:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(
        metric(&metrics(&lab, &a), "weft_tcp_connections_total", &[("direction", "outbound"), ("tls", "true")]) >= 1.0
    );

    // Traffic to a destination outside the mesh passes through untouched.
    let (status, body) = lab.curl(&a, "http://198.18.0.20:9090/").unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"client_id\":\"\""), "no proxy on the way: {body}");
    assert!(
        metric(&metrics(&lab, &a), "weft_tcp_connections_total", &[("direction", "outbound"), ("meshed", "false")])
            >= 1.0
    );

    // Permissive: a plaintext client from outside the mesh is served, labelled tls="false".
    let (status, body) = lab.curl(&x, "http://198.18.0.12:8080/").unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"client_id\":\"\""));
    assert!(metric(&metrics(&lab, &b), "weft_requests_total", &[("direction", "inbound"), ("tls", "false")]) >= 1.0);

    // Strict: the same client is refused; mesh peers still get through.
    std::fs::write(mesh_file.with_extension("tmp"), mesh("strict")).unwrap();
    std::fs::rename(mesh_file.with_extension("tmp"), &mesh_file).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if lab.curl(&x, "http://198.18.0.12:8080/").is_err() {
            break;
        }
        assert!(Instant::now() < deadline, "strict mode never refused the plaintext client");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(lab.curl(&a, "http://198.18.0.12:8080/").unwrap().0, 200);
    assert!(metric(&metrics(&lab, &b), "weft_proxy_errors_total", &[("reason", "plaintext-refused")]) >= 1.0);

    // The proxy's own connections were never redirected back to itself: a handful of outbound
    // connections, not a loop.
    let am = metrics(&lab, &a);
    let open = metric(&am, "weft_tcp_connections_open", &[("direction", "outbound")]);
    assert!(open < 10.0, "outbound connections open in A's proxy: {open}");
    let _ = c;
}

#[test]
fn init_is_idempotent_covers_ipv6_and_uninstalls_cleanly() {
    let mut lab = Lab::new("init");
    let ns = lab.pod("p", 30);
    let proxy = lab.weft_proxy();
    // The machine's own namespace is refused.
    let out = Command::new(&proxy).arg("init").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("initial network namespace"));
    // Twice: exactly one set of rules.
    lab.exec_ok(&ns, &[&proxy, "init", "--skip-subnets", "10.0.0.0/8"]);
    let once = lab.nat_rules(&ns, "iptables-save");
    lab.exec_ok(&ns, &[&proxy, "init", "--skip-subnets", "10.0.0.0/8"]);
    let twice = lab.nat_rules(&ns, "iptables-save");
    assert_eq!(once, twice);
    assert_eq!(twice.iter().filter(|l| l.as_str() == "-A PREROUTING -p tcp -j WEFT_INBOUND").count(), 1, "{twice:#?}");
    assert_eq!(twice.iter().filter(|l| l.as_str() == "-A OUTPUT -p tcp -j WEFT_OUTBOUND").count(), 1);
    assert!(twice.iter().any(|l| l.contains("--uid-owner 2102 -j RETURN")));
    assert!(twice.iter().any(|l| l.contains("-d 10.0.0.0/8 -j RETURN")));
    // IPv6 too, so strict mode cannot be bypassed over IPv6.
    let v6 = lab.nat_rules(&ns, "ip6tables-save");
    assert!(v6.iter().any(|l| l.contains("REDIRECT --to-ports 4143")), "{v6:#?}");
    assert!(v6.iter().any(|l| l.contains("REDIRECT --to-ports 4140")));
    // Uninstall leaves nothing.
    lab.exec_ok(&ns, &[&proxy, "init", "--uninstall"]);
    assert!(lab.nat_rules(&ns, "iptables-save").is_empty());
    assert!(lab.nat_rules(&ns, "ip6tables-save").is_empty());
    // The legacy backend works too, and auto mode then keeps using it.
    let legacy = lab.pod("l", 31);
    lab.exec_ok(&legacy, &[&proxy, "init", "--iptables-mode", "legacy"]);
    assert_eq!(
        lab.nat_rules(&legacy, "iptables-legacy-save").len(),
        11,
        "{:#?}",
        lab.nat_rules(&legacy, "iptables-legacy-save")
    );
    lab.exec_ok(&legacy, &[&proxy, "init"]);
    assert_eq!(lab.nat_rules(&legacy, "iptables-legacy-save").len(), 11, "auto mode picked the backend holding rules");
    lab.exec_ok(&legacy, &[&proxy, "init", "--uninstall"]);
    assert!(lab.nat_rules(&legacy, "iptables-legacy-save").is_empty());
    // --dry-run prints the rules and changes nothing.
    let printed = lab.exec_ok(&ns, &[&proxy, "init", "--dry-run"]);
    assert!(printed.contains("-t nat -A WEFT_INBOUND -p tcp -j REDIRECT --to-ports 4143"), "{printed}");
    assert!(lab.nat_rules(&ns, "iptables-save").is_empty());
}

/// An unmeshed pod with the demo app on 8080: a client from outside the mesh.
fn outside_pod(lab: &mut Lab, n: u8) -> String {
    let x = lab.pod("x", n);
    lab.spawn(
        &x,
        "x-app",
        None,
        &[
            bin("weft-demo").display().to_string(),
            "--name".into(),
            "outside".into(),
            "--listen".into(),
            "0.0.0.0:9090".into(),
        ],
    );
    x
}

/// Waits until `ns`'s proxy knows `addr` in its directory.
fn wait_directory(lab: &Lab, ns: &str, addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let dir = lab.curl(ns, "http://127.0.0.1:4191/config").map(|(_, b)| b).unwrap_or_default();
        if dir.contains(&format!("\"{addr}\"")) {
            return;
        }
        assert!(Instant::now() < deadline, "{ns}'s proxy never learnt {addr}: {dir}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn edit(mesh_file: &std::path::Path, yaml: &str) {
    std::fs::write(mesh_file.with_extension("tmp"), yaml).unwrap();
    std::fs::rename(mesh_file.with_extension("tmp"), mesh_file).unwrap();
}

// Issue #9, item 6: an allow list admits only its identities, never plaintext; `[]` nobody.
#[test]
fn authorization_never_fails_open_for_plaintext_callers() {
    let mut lab = Lab::new("authz");
    let allow = |list: &str| {
        format!("trust_domain: weft.local\nservices:\n  foo: {{}}\n  bar: {{mtls: permissive, allow: {list}}}\n")
    };
    let (ca, mesh_file) = controller(&mut lab, &allow("[foo]"));
    let a = meshed_pod(&mut lab, &ca, "a", "foo", 41);
    let _b = meshed_pod(&mut lab, &ca, "b", "bar", 42);
    let x = outside_pod(&mut lab, 43);
    wait_directory(&lab, &a, "198.18.0.42");
    // foo is allowed; a plaintext client is not, although bar is permissive.
    assert_eq!(lab.curl(&a, "http://198.18.0.42:8080/").unwrap().0, 200);
    let (status, body) = lab.curl(&x, "http://198.18.0.42:8080/").unwrap();
    assert_eq!(status, 403, "{body}");
    // Bytes can't be told 403: the opaque port closes.
    let out = lab.exec(&x, &["bash", "-c", "exec 3<>/dev/tcp/198.18.0.42/4222; read -t 3 line <&3; echo \"[$line]\""]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("220"), "{out:?}");
    // An empty list admits nobody.
    edit(&mesh_file, &allow("[]"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while lab.curl(&a, "http://198.18.0.42:8080/").map(|r| r.0) != Ok(403) {
        assert!(Instant::now() < deadline, "allow: [] never took effect");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(lab.curl(&x, "http://198.18.0.42:8080/").unwrap().0, 403);
}

// Issue #9, item 7: no loop through the outbound listener, no plaintext to a mesh service that
// has no endpoints.
#[test]
fn loops_and_mesh_destinations_without_endpoints_are_refused() {
    let mut lab = Lab::new("loops");
    let yaml = "trust_domain: weft.local\nservices:\n  foo: {}\n  ghost: {vip: 10.96.0.99, ports: [{port: 80, target_port: 8080}]}\n";
    let (ca, _) = controller(&mut lab, yaml);
    let a = meshed_pod(&mut lab, &ca, "a", "foo", 51);
    wait_directory(&lab, &a, "10.96.0.99:80");
    // Straight to the outbound port: refused at once, not passed through to itself.
    let started = Instant::now();
    assert!(lab.curl(&a, "http://127.0.0.1:4140/").is_err());
    assert!(started.elapsed() < Duration::from_secs(3));
    let am = metrics(&lab, &a);
    assert!(metric(&am, "weft_proxy_errors_total", &[("reason", "loop")]) >= 1.0, "{am}");
    assert!(metric(&am, "weft_tcp_connections_open", &[("direction", "outbound")]) < 5.0, "{am}");
    // A mesh service with no endpoints is never reached in plaintext behind the mesh's back.
    assert!(lab.curl(&a, "http://10.96.0.99:80/").is_err());
    assert!(metric(&metrics(&lab, &a), "weft_proxy_errors_total", &[("reason", "no-endpoints")]) >= 1.0);
}

// Issue #9, item 12: remote callers get what scrapers and kubelets need, nothing more.
#[test]
fn remote_callers_get_metrics_and_health_but_not_config_or_log_level() {
    let mut lab = Lab::new("admin");
    let (ca, _) = controller(&mut lab, "trust_domain: weft.local\nservices:\n  foo: {}\n");
    let a = meshed_pod(&mut lab, &ca, "a", "foo", 61);
    let sw = lab.switch.clone();
    for path in ["/metrics", "/ready", "/live"] {
        assert_eq!(lab.curl(&sw, &format!("http://198.18.0.61:4191{path}")).unwrap().0, 200, "{path}");
    }
    assert_eq!(lab.curl(&sw, "http://198.18.0.61:4191/config").unwrap().0, 403);
    assert_eq!(lab.curl_with(&sw, "http://198.18.0.61:4191/log-level", &["-X", "PUT", "-d", "trace"]).unwrap().0, 403);
    assert_eq!(lab.curl_with(&sw, "http://198.18.0.61:4191/shutdown", &["-X", "POST"]).unwrap().0, 403);
    // From the pod itself (loopback) they answer.
    assert_eq!(lab.curl(&a, "http://127.0.0.1:4191/config").unwrap().0, 200);
    // The controller likewise: its state reveals the mesh's topology.
    assert_eq!(lab.curl(&a, &format!("http://{SWITCH_IP}:7071/metrics")).unwrap().0, 200);
    assert_eq!(lab.curl(&a, &format!("http://{SWITCH_IP}:7071/api/v1/state")).unwrap().0, 403);
    assert_eq!(
        lab.curl_with(&a, &format!("http://{SWITCH_IP}:7071/log-level"), &["-X", "PUT", "-d", "trace"]).unwrap().0,
        403
    );
}

// Issue #9, item 14: IPv6 is a first-class path between meshed pods.
#[test]
fn dual_stack_pods_talk_over_mtls_on_ipv6_too() {
    let mut lab = Lab::new("dual");
    let yaml = "trust_domain: weft.local\nservices:\n  foo: {}\n  bar: {mtls: strict}\n";
    let (ca, _) = controller_on(&mut lab, yaml, "[::]:7070");
    let mut pods = Vec::new();
    for (name, service, n) in [("a", "foo", 71), ("b", "bar", 72)] {
        let ns = lab.pod(name, n);
        lab.dual_stack(&ns, n);
        lab.hosts(&ns, &format!("{SWITCH_IP} weft-controller\n{SWITCH_IP6} weft-controller"));
        start_meshed_pod(&mut lab, &ns, &ca, name, service, "https://weft-controller:7070");
        pods.push(ns);
    }
    let x = lab.pod("x", 73);
    lab.dual_stack(&x, 73);
    let (a, b) = (&pods[0], &pods[1]);
    wait_directory(&lab, a, "198.18.0.72");
    wait_directory(&lab, a, "fd00:198:18::72");
    for url in ["http://198.18.0.72:8080/v4", "http://[fd00:198:18::72]:8080/v6"] {
        let (status, body) = lab.curl(a, url).unwrap();
        assert_eq!(status, 200, "{url}: {body}");
        assert!(body.contains(FOO_ID), "{url} was not mTLS: {body}");
    }
    // Strict holds over IPv6: a plaintext client is refused on both families.
    assert!(lab.curl(&x, "http://198.18.0.72:8080/").is_err());
    assert!(lab.curl(&x, "http://[fd00:198:18::72]:8080/").is_err());
    let bm = metrics(&lab, b);
    assert!(metric(&bm, "weft_proxy_errors_total", &[("reason", "plaintext-refused")]) >= 2.0, "{bm}");
}

// Issue #9, item 14: init never leaves IPv6 open silently, and a dry run changes nothing.
#[test]
fn init_refuses_to_leave_ipv6_open_and_a_dry_run_touches_nothing() {
    let mut lab = Lab::new("init6");
    let proxy = lab.weft_proxy();
    // A dry run in a fresh namespace: not even an empty table appears.
    let fresh = lab.pod("d", 81);
    let tables = |lab: &Lab| lab.exec_ok(&fresh, &["cat", "/proc/net/ip_tables_names"]);
    let before = tables(&lab);
    let printed = lab.exec_ok(&fresh, &[&proxy, "init", "--dry-run"]);
    assert!(printed.contains("REDIRECT --to-ports 4143"));
    assert_eq!(tables(&lab), before, "the dry run created tables");
    // No ip6tables where the namespace has IPv6: refused, unless --ipv4-only.
    let ns = lab.pod("p", 82);
    let only_v4 = lab.dir.path().join("only-v4");
    std::fs::create_dir_all(&only_v4).unwrap();
    let real =
        String::from_utf8_lossy(&Command::new("sh").args(["-c", "command -v iptables"]).output().unwrap().stdout)
            .trim()
            .to_string();
    std::os::unix::fs::symlink(std::fs::canonicalize(&real).unwrap(), only_v4.join("iptables")).unwrap();
    let path = format!("PATH={}", only_v4.display());
    let out = lab.exec(&ns, &["env", &path, &proxy, "init", "--iptables-mode", "auto"]);
    assert!(!out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--ipv4-only"), "{out:?}");
    let out = lab.exec(&ns, &["env", &path, &proxy, "init", "--ipv4-only"]);
    assert!(out.status.success(), "{out:?}");
}
