//! A cluster made of test parts, for the test API server tests: network-namespace pods on a
//! switch (as in the transparent tests), the test API server listening inside the switch
//! namespace, `weft-controller --kubernetes` replicas there reading it through a kubeconfig, and
//! the controller Service as kube-proxy makes it — a VIP whose connections iptables DNATs to the
//! replicas at random, keeping the pod's source IP. Pods are real: `weft-proxy init`, the demo
//! app, a transparent `weft-proxy` under UID 2102 presenting a token the test API server signed.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use weft_tests::harness::{bin, Proc};
use weft_tests::kube_api::{self, TestApiServer};
use weft_tests::netns::{Lab, SWITCH_IP};

pub const NS: &str = "shop";
pub const PROXY_UID: u32 = 2102;
/// The controller Service's VIP, as proxies dial it.
pub const CONTROLLER_VIP: &str = "10.96.0.1";
pub const AUDIENCE: &str = "weft.io/identity";

/// One controller replica (in the switch namespace).
pub struct Replica {
    pub name: String,
    pub grpc: u16,
    pub admin: u16,
    pub proc: Option<Proc>,
}

pub struct ApiLab {
    // Processes go before the namespaces they run in.
    pub replicas: Vec<Replica>,
    pods: Vec<(String, Vec<Proc>)>,
    pub api: TestApiServer,
    pub ca: PathBuf,
    pub mesh: PathBuf,
    pub lab: Lab,
}

impl ApiLab {
    /// The lab, the test API server (namespace `shop`), the CA and the mesh file.
    pub fn new(name: &str, mesh_yaml: &str) -> Self {
        let lab = Lab::new(name);
        let ca = lab.dir.path().join("ca");
        assert!(Command::new(bin("weft")).args(["ca", "init", "--dir"]).arg(&ca).status().unwrap().success());
        let api_dir = lab.dir.path().join("api");
        std::fs::create_dir_all(&api_dir).unwrap();
        let api_ca = api_dir.join("ca");
        assert!(Command::new(bin("weft")).args(["ca", "init", "--dir"]).arg(&api_ca).status().unwrap().success());
        let listener = lab.listen_in(&lab.switch, &format!("{SWITCH_IP}:0"));
        let api = TestApiServer::start_on(&api_ca, &api_dir, listener);
        api.apply(serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}));
        let mesh = lab.dir.path().join("mesh").join("mesh.yaml");
        std::fs::create_dir_all(mesh.parent().unwrap()).unwrap();
        std::fs::write(&mesh, mesh_yaml).unwrap();
        Self { replicas: Vec::new(), pods: Vec::new(), api, ca, mesh, lab }
    }

    /// Starts replica `name` listening on `grpc` (and its admin on loopback), and waits until it
    /// is ready (it has listed the cluster).
    pub fn replica(&mut self, name: &str, grpc: u16, admin: u16, extra: &[&str]) {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.lab.switch])
            .arg(bin("weft-controller"))
            .arg("--kubernetes")
            .arg("--kubeconfig")
            .arg(&self.api.kubeconfig)
            .arg("--mesh")
            .arg(&self.mesh)
            .arg("--ca-dir")
            .arg(&self.ca)
            .args(["--grpc-addr", &format!("{SWITCH_IP}:{grpc}"), "--admin-addr", &format!("127.0.0.1:{admin}")])
            .args(extra)
            .env("WEFT_CONTROLLER_LOG_LEVEL", "info,weft_controller=debug");
        let log = self.lab.dir.path().join(format!("controller-{name}.log"));
        let proc = Proc::spawn(&format!("weft-controller[{name}]"), cmd, log);
        self.replicas.push(Replica { name: name.into(), grpc, admin, proc: Some(proc) });
        self.lab.wait_ready(
            &self.lab.switch.clone(),
            &format!("http://127.0.0.1:{admin}/ready"),
            Duration::from_secs(20),
        );
    }

    /// The controller Service: connections to the VIP spread over the replicas' gRPC ports at
    /// random (iptables `statistic`, as kube-proxy does), the source IP kept.
    pub fn controller_service(&self) {
        let n = self.replicas.len();
        for (i, r) in self.replicas.iter().enumerate() {
            let mut args: Vec<String> =
                ["-t", "nat", "-A", "PREROUTING", "-d", CONTROLLER_VIP, "-p", "tcp", "--dport", "7070"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
            if i + 1 < n {
                let p = 1.0 / (n - i) as f64;
                args.extend(["-m", "statistic", "--mode", "random", "--probability"].map(String::from));
                args.push(format!("{p:.4}"));
            }
            args.extend([
                "-j".to_string(),
                "DNAT".to_string(),
                "--to-destination".to_string(),
                format!("{SWITCH_IP}:{}", r.grpc),
            ]);
            let mut cmd = vec!["iptables", "-w"];
            cmd.extend(args.iter().map(String::as_str));
            self.lab.exec_ok(&self.lab.switch, &cmd);
        }
    }

    pub fn controller_url() -> String {
        format!("https://{CONTROLLER_VIP}:7070")
    }

    /// GET on a replica's admin port (from inside the switch namespace, on loopback).
    pub fn replica_get(&self, replica: &Replica, path: &str) -> Option<String> {
        self.lab.curl(&self.lab.switch, &format!("http://127.0.0.1:{}{path}", replica.admin)).ok().map(|(_, b)| b)
    }

    pub fn replica_state(&self, replica: &Replica) -> serde_json::Value {
        self.replica_get(replica, "/api/v1/state").and_then(|b| serde_json::from_str(&b).ok()).unwrap_or_default()
    }

    /// Which replica serves the proxy of pod `instance` (by the replicas' states).
    pub fn replica_of(&self, instance: &str) -> Option<usize> {
        self.replicas.iter().position(|r| {
            r.proc.is_some()
                && self.replica_state(r)["proxies"]
                    .as_array()
                    .is_some_and(|ps| ps.iter().any(|p| p["instance"] == instance))
        })
    }

    /// Registers the pod with the test API server (not ready yet), then starts it at 198.18.0.`n`:
    /// rules, app, proxy with a token for it. Returns its namespace once its proxy and app answer;
    /// the pod is then marked ready, as the kubelet would once its probes pass.
    pub fn meshed_pod(&mut self, name: &str, app: &str, version: &str, n: u8) -> String {
        let ip = format!("198.18.0.{n}");
        self.api.apply(kube_api::pod(
            NS,
            name,
            app,
            &ip,
            &[("app", app), ("app.kubernetes.io/version", version)],
            true,
        ));
        let token = self.token_file(name, &self.api.token(NS, name, AUDIENCE, 600));
        let ns = self.start_pod(name, n, app, &token, &[]);
        // Ready as the kubelet would see it: the proxy's probe and the app's.
        self.lab.wait_ready(&ns, "http://127.0.0.1:4191/ready", Duration::from_secs(30));
        self.lab.wait_ready(&ns, "http://127.0.0.1:8080/", Duration::from_secs(30));
        self.api.set_pod_ready(NS, name, true);
        ns
    }

    pub fn token_file(&self, name: &str, token: &str) -> PathBuf {
        let path = self.lab.dir.path().join(format!("{name}-{}.token", rand_suffix()));
        std::fs::write(&path, token).unwrap();
        path
    }

    /// A pod namespace with the interception rules and the demo app on 8080 (no proxy).
    pub fn pod_namespace(&mut self, name: &str, n: u8) -> String {
        let ns = self.lab.pod(name, n);
        let proxy = self.lab.weft_proxy();
        let init = self.lab.exec(&ns, &[&proxy, "init"]);
        assert!(init.status.success(), "init: {}", String::from_utf8_lossy(&init.stderr));
        let app = self.spawn_in(
            &ns,
            &format!("{name}-app"),
            None,
            &[
                bin("weft-demo").display().to_string(),
                "--name".into(),
                name.into(),
                "--listen".into(),
                "0.0.0.0:8080".into(),
            ],
        );
        self.pods.push((ns.clone(), vec![app]));
        ns
    }

    /// The pod's namespace, app and proxy (`service`: its account; `extra`: more proxy flags).
    pub fn start_pod(&mut self, name: &str, n: u8, service: &str, token: &std::path::Path, extra: &[&str]) -> String {
        let ns = self.pod_namespace(name, n);
        let proxy = self.proxy(&ns, name, service, token, extra);
        self.pods.last_mut().expect("the pod").1.push(proxy);
        ns
    }

    /// A transparent proxy in `ns` for pod `instance`, under UID 2102.
    pub fn proxy(&self, ns: &str, instance: &str, service: &str, token: &std::path::Path, extra: &[&str]) -> Proc {
        let mut args = vec![
            self.lab.weft_proxy(),
            "--transparent".into(),
            "--controller".into(),
            Self::controller_url(),
            "--trust-anchor".into(),
            self.ca.join("ca.crt").display().to_string(),
            "--identity-token-file".into(),
            token.display().to_string(),
            "--service".into(),
            service.into(),
            "--namespace".into(),
            NS.into(),
            "--instance".into(),
            instance.into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        self.spawn_in(ns, &format!("{instance}-proxy-{}", rand_suffix()), Some(PROXY_UID), &args)
    }

    fn spawn_in(&self, ns: &str, name: &str, uid: Option<u32>, cmd: &[String]) -> Proc {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]);
        if let Some(uid) = uid {
            c.args(["setpriv", &format!("--reuid={uid}"), &format!("--regid={uid}"), "--clear-groups", "--"]);
        }
        c.args(cmd);
        Proc::spawn(name, c, self.lab.dir.path().join(format!("{name}.log")))
    }

    /// Stops the processes of pod namespace `ns` (its namespace stays).
    pub fn stop_pod(&mut self, ns: &str) {
        if let Some((_, procs)) = self.pods.iter_mut().find(|(n, _)| n == ns) {
            for p in procs {
                p.kill();
            }
        }
    }

    /// A proxy's view of a service's endpoints (instances), from its `/config`.
    pub fn endpoints_seen(&self, ns: &str, service: &str) -> Vec<String> {
        let Ok((_, body)) = self.lab.curl(ns, "http://127.0.0.1:4191/config") else { return Vec::new() };
        let cfg: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let mut out: Vec<String> = cfg["services"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["key"] == service)
            .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
            .map(|e| e["instance"].as_str().unwrap_or_default().to_string())
            .collect();
        out.sort();
        out
    }

    /// Waits until the proxy in `ns` sees exactly `instances` for `service`; returns how long.
    pub fn wait_endpoints(&self, ns: &str, service: &str, instances: &[&str], timeout: Duration) -> Duration {
        let started = Instant::now();
        let mut want: Vec<String> = instances.iter().map(|s| s.to_string()).collect();
        want.sort();
        loop {
            let seen = self.endpoints_seen(ns, service);
            if seen == want {
                return started.elapsed();
            }
            assert!(started.elapsed() < timeout, "the proxy in {ns} never saw {want:?} for {service} (saw {seen:?})");
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Steady `weft load` from pod namespace `ns` to `url` for `secs` (its log: `load.log`).
    pub fn load(&self, ns: &str, url: &str, rps: u32, secs: u64) -> Proc {
        let weft = bin("weft").display().to_string();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, &weft, "load", "--url", url, "--rps", &rps.to_string(), "--duration"])
            .arg(secs.to_string());
        Proc::spawn("weft load", cmd, self.lab.dir.path().join("load.log"))
    }

    pub fn metrics(&self, ns: &str) -> String {
        self.lab.curl(ns, "http://127.0.0.1:4191/metrics").map(|(_, b)| b).unwrap_or_default()
    }
}

fn rand_suffix() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// `sent=N ok=N failed=N` from the last line `weft load` printed.
pub fn load_totals(log: &str) -> (u64, u64, u64) {
    let line = log.lines().rev().find(|l| l.contains("sent=")).unwrap_or_default();
    let field = |k: &str| {
        line.split_whitespace().find_map(|w| w.strip_prefix(k)).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
    };
    (field("sent="), field("ok="), field("failed="))
}
