//! A kubelet for tests, on Docker: runs a pod spec the way the kubelet would — a pause container
//! holding the pod's network namespace, init containers one after the other, a native sidecar
//! (an init container with `restartPolicy: Always`) kept running and waited for until its startup
//! probe passes, then the app containers; probes, the downward API, volumes, users, capabilities
//! and read-only root filesystems from the spec. Anything in the spec it does not handle fails
//! the test (see `fields`). Every container, network and image it makes is removed on drop.

mod container;
mod docker;
mod env;
pub mod fields;
mod probes;
mod volumes;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{bin_dir, TestDir};

pub use docker::args;

/// What the downward API and volumes read about a pod.
pub struct PodFacts {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub node: String,
    pub service_account: String,
    pub ip: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub fs_group: Option<u32>,
    objects: Objects,
}

#[derive(Clone, Default)]
struct Objects {
    config_maps: HashMap<String, BTreeMap<String, String>>,
    secrets: HashMap<String, BTreeMap<String, Vec<u8>>>,
}

impl PodFacts {
    pub fn secret(&self, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        self.objects.secrets.get(name).cloned()
    }
    pub fn config_map(&self, name: &str) -> Option<BTreeMap<String, String>> {
        self.objects.config_maps.get(name).cloned()
    }
}

fn strings(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect())
        .unwrap_or_default()
}

/// One Docker "node": a network, the pause image, the images under test, the API objects
/// (ConfigMaps, Secrets) pods may use.
pub struct Node {
    pub label: String,
    pub network: String,
    pub image_tag: String,
    pause_image: String,
    dir: TestDir,
    objects: Objects,
}

impl Node {
    /// Builds the images (`weft:TAG`, `weft-init:TAG`, the pause image) and a network.
    pub fn start(name: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let label = format!("weft-k8s-{name}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        let dir = TestDir::new(&label);
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root");
        let out = std::process::Command::new(root.join("examples/playground/build-images.sh"))
            .env("WEFT_BIN_DIR", bin_dir())
            .env("WEFT_IMAGE_TAG", &label)
            .output()
            .expect("build-images.sh");
        assert!(out.status.success(), "building the images: {}", String::from_utf8_lossy(&out.stderr));
        let ctx = dir.path().join("pause-image");
        std::fs::create_dir_all(&ctx).unwrap();
        std::fs::copy(bin_dir().join("weft-test-pause"), ctx.join("pause")).expect("weft-test-pause is built");
        std::fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY pause /pause\nCMD [\"/pause\"]\n").unwrap();
        let pause_image = format!("weft-test-pause:{label}");
        docker::ok(&args(&["build", "-q", "-t", &pause_image, &ctx.display().to_string()]));
        let network = label.clone();
        docker::ok(&args(&["network", "create", "--label", &format!("weft-k8s-test={label}"), &network]));
        Self { image_tag: label.clone(), label, network, pause_image, dir, objects: Objects::default() }
    }

    /// Makes the ConfigMaps and Secrets of a YAML stream available to pods.
    pub fn add_objects(&mut self, docs: &[Value]) {
        for d in docs {
            let name = d["metadata"]["name"].as_str().unwrap_or_default().to_string();
            match d["kind"].as_str() {
                Some("ConfigMap") => {
                    self.objects.config_maps.insert(name, strings(&d["data"]));
                }
                Some("Secret") => {
                    use base64::Engine;
                    let mut data: BTreeMap<String, Vec<u8>> = strings(&d["data"])
                        .into_iter()
                        .map(|(k, v)| {
                            (k, base64::engine::general_purpose::STANDARD.decode(v).expect("base64 Secret data"))
                        })
                        .collect();
                    data.extend(strings(&d["stringData"]).into_iter().map(|(k, v)| (k, v.into_bytes())));
                    self.objects.secrets.insert(name, data);
                }
                _ => {}
            }
        }
    }

    /// Starts a pod: pause, init containers (native sidecars until their startup probe passes),
    /// then the app containers. `aliases` are DNS names other containers on the network resolve
    /// to its IP (what a Service's name would).
    pub fn run(&self, pod: &Value, aliases: &[&str]) -> RunningPod {
        let mut problems = Vec::new();
        fields::unhandled(pod, &fields::POD, "pod", &mut problems);
        assert!(problems.is_empty(), "the test kubelet does not handle these fields: {problems:?}");
        let spec = &pod["spec"];
        assert!(spec["hostNetwork"] != true, "hostNetwork pods are not run here");
        let meta = &pod["metadata"];
        static N: AtomicU32 = AtomicU32::new(0);
        let name = match meta["name"].as_str() {
            Some(n) => n.to_string(),
            None => format!(
                "{}{:05x}",
                meta["generateName"].as_str().unwrap_or("pod-"),
                N.fetch_add(1, Ordering::Relaxed) + 0x1a2b
            ),
        };
        let prefix = format!("{}-{name}", self.label);
        let pod_label = format!("weft-k8s-pod={prefix}");
        let started = Instant::now();
        let mut run = RunningPod {
            name: name.clone(),
            prefix: prefix.clone(),
            pod_label: pod_label.clone(),
            ip: String::new(),
            spec: spec.clone(),
            started,
            timeline: Vec::new(),
            sidecars: Vec::new(),
            apps: Vec::new(),
            all: Vec::new(),
            mounts: Vec::new(),
        };
        let pause = format!("{prefix}-pause");
        let mut a = args(&[
            "run",
            "-d",
            "--name",
            &pause,
            "--label",
            &pod_label,
            "--label",
            &format!("weft-k8s-test={}", self.label),
        ]);
        a.extend(args(&["--network", &self.network]));
        for alias in aliases {
            a.extend(args(&["--network-alias", alias]));
        }
        a.push(self.pause_image.clone());
        docker::ok(&a);
        run.all.push(pause.clone());
        run.ip = docker::inspect(
            &pause,
            &format!("{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}", self.network),
        )
        .filter(|ip| !ip.is_empty())
        .expect("the pod's IP");
        run.event("pod sandbox (pause) running");

        let pod_sc = &spec["securityContext"];
        let facts = PodFacts {
            name: name.clone(),
            namespace: meta["namespace"].as_str().unwrap_or("default").to_string(),
            uid: format!("0000-{prefix}"),
            node: "docker-node".into(),
            service_account: spec["serviceAccountName"].as_str().unwrap_or("default").to_string(),
            ip: run.ip.clone(),
            labels: strings(&meta["labels"]),
            annotations: strings(&meta["annotations"]),
            fs_group: pod_sc["fsGroup"].as_u64().map(|g| g as u32),
            objects: self.objects.clone(),
        };
        let pod_dir = self.dir.path().join(&name);
        let (vols, mounts) = volumes::prepare(&pod_dir, spec, &facts);
        run.mounts = mounts;
        let sa = (spec["automountServiceAccountToken"] != false).then(|| volumes::service_account(&pod_dir, &facts));

        for c in spec["initContainers"].as_array().into_iter().flatten() {
            let cname = c["name"].as_str().expect("name").to_string();
            let dn =
                run.start_container(c, &facts, &vols, sa.as_deref(), &pause, &format!("weft-k8s-test={}", self.label));
            match c["restartPolicy"].as_str() {
                Some("Always") => {
                    run.post_start(c, &dn);
                    if let Some(probe) = c.get("startupProbe") {
                        run.wait_probe(&cname, c, &dn, probe, "startup");
                    }
                    run.event(&format!("{cname}: native sidecar started"));
                    run.sidecars.push((cname, dn));
                }
                None => {
                    let code = docker::wait_exit(&dn, Duration::from_secs(120))
                        .unwrap_or_else(|| panic!("init container {cname} did not finish\n{}", docker::logs(&dn)));
                    assert_eq!(code, 0, "init container {cname} failed ({code}):\n{}", docker::logs(&dn));
                    run.event(&format!("{cname}: init container exited 0"));
                }
                Some(other) => panic!("container restartPolicy {other:?} is not handled"),
            }
        }
        for c in spec["containers"].as_array().expect("containers") {
            let cname = c["name"].as_str().expect("name").to_string();
            let dn =
                run.start_container(c, &facts, &vols, sa.as_deref(), &pause, &format!("weft-k8s-test={}", self.label));
            run.post_start(c, &dn);
            run.event(&format!("{cname}: started"));
            run.apps.push((cname, dn));
        }
        run
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        docker::remove_labelled(&format!("weft-k8s-test={}", self.label));
        let _ = docker::docker(&args(&["network", "rm", &self.network]));
        for image in
            [format!("weft:{}", self.image_tag), format!("weft-init:{}", self.image_tag), self.pause_image.clone()]
        {
            let _ = docker::docker(&args(&["rmi", "-f", &image]));
        }
    }
}

/// How a pod that runs to completion ended.
#[derive(Debug)]
pub struct Completion {
    /// Container → exit code, for the app containers.
    pub exit_codes: BTreeMap<String, i64>,
    /// From the pod's start to the last app container's exit.
    pub apps_done: Duration,
    /// From the pod's start to the last sidecar's exit (the pod has finished).
    pub finished: Duration,
    pub succeeded: bool,
}

/// A pod the runner started.
pub struct RunningPod {
    pub name: String,
    prefix: String,
    pod_label: String,
    pub ip: String,
    spec: Value,
    started: Instant,
    /// What happened when, from the pod's start.
    pub timeline: Vec<(Duration, String)>,
    sidecars: Vec<(String, String)>,
    apps: Vec<(String, String)>,
    all: Vec<String>,
    mounts: Vec<PathBuf>,
}

impl RunningPod {
    fn event(&mut self, what: &str) {
        self.timeline.push((self.started.elapsed(), what.to_string()));
    }

    /// Starts one container (`docker run`, everything taken from its spec); its Docker name.
    fn start_container(
        &mut self,
        c: &Value,
        facts: &PodFacts,
        vols: &BTreeMap<String, PathBuf>,
        sa: Option<&Path>,
        pause: &str,
        test_label: &str,
    ) -> String {
        let dn = format!("{}-{}", self.prefix, c["name"].as_str().expect("container name"));
        let labels = [self.pod_label.as_str(), test_label];
        docker::ok(&container::run_args(c, &self.spec, facts, vols, sa, pause, &dn, &labels));
        self.all.push(dn.clone());
        dn
    }

    fn post_start(&mut self, c: &Value, dn: &str) {
        let Some(cmd) = c["lifecycle"]["postStart"]["exec"]["command"].as_array() else { return };
        let mut a = args(&["exec", dn]);
        a.extend(cmd.iter().map(|w| w.as_str().unwrap_or_default().to_string()));
        let out = docker::docker(&a);
        assert!(
            out.status.success(),
            "{dn}: postStart hook failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            docker::logs(dn)
        );
        self.event(&format!("{}: postStart hook done", c["name"].as_str().unwrap_or("?")));
    }

    /// Runs a probe on its period until it passes (or `failureThreshold` failures in a row).
    fn wait_probe(&mut self, cname: &str, c: &Value, dn: &str, probe: &Value, kind: &str) {
        let period = Duration::from_secs(probe["periodSeconds"].as_u64().unwrap_or(10));
        let failures_allowed = probe["failureThreshold"].as_u64().unwrap_or(3);
        std::thread::sleep(Duration::from_secs(probe["initialDelaySeconds"].as_u64().unwrap_or(0)));
        let mut failures = 0;
        loop {
            match probes::once(probe, c, dn, &self.ip) {
                Ok(()) => {
                    self.event(&format!("{cname}: {kind} probe passed"));
                    return;
                }
                Err(e) => {
                    failures += 1;
                    assert!(
                        docker::running(dn),
                        "{cname} exited while waiting for its {kind} probe:\n{}",
                        docker::logs(dn)
                    );
                    assert!(
                        failures < failures_allowed,
                        "{cname}: {kind} probe failed {failures} times: {e}\n{}",
                        docker::logs(dn)
                    );
                }
            }
            std::thread::sleep(period);
        }
    }

    fn container(&self, name: &str) -> (&Value, &str) {
        let spec = self.spec["initContainers"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(self.spec["containers"].as_array().into_iter().flatten())
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no container {name}"));
        let dn =
            self.sidecars.iter().chain(&self.apps).find(|(n, _)| n == name).map(|(_, d)| d.as_str()).expect("started");
        (spec, dn)
    }

    /// The container's readiness probe, once (a container without one is ready while running).
    pub fn ready(&self, name: &str) -> Result<(), String> {
        let (spec, dn) = self.container(name);
        if !docker::running(dn) {
            return Err(format!("{name} is not running:\n{}", docker::logs(dn)));
        }
        match spec.get("readinessProbe") {
            Some(p) => probes::once(p, spec, dn, &self.ip),
            None => Ok(()),
        }
    }

    /// The container's liveness probe, once.
    pub fn live(&self, name: &str) -> Result<(), String> {
        let (spec, dn) = self.container(name);
        match spec.get("livenessProbe") {
            Some(p) => probes::once(p, spec, dn, &self.ip),
            None => Ok(()),
        }
    }

    /// Waits until every named container is ready; the time since the pod started.
    pub fn wait_ready(&mut self, names: &[&str], timeout: Duration) -> Duration {
        let deadline = Instant::now() + timeout;
        loop {
            let not_ready: Vec<String> =
                names.iter().filter_map(|n| self.ready(n).err().map(|e| format!("{n}: {e}"))).collect();
            if not_ready.is_empty() {
                let t = self.started.elapsed();
                self.event(&format!("ready: {}", names.join(", ")));
                return t;
            }
            for (n, dn) in self.sidecars.iter().chain(&self.apps) {
                assert!(
                    docker::running(dn) || self.spec["restartPolicy"] != "Always",
                    "{n} exited:\n{}",
                    docker::logs(dn)
                );
            }
            assert!(Instant::now() < deadline, "not ready after {timeout:?}: {not_ready:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// For pods that run to completion: waits for the app containers to exit, then stops the
    /// native sidecars in reverse order, as the kubelet does.
    pub fn wait_completion(&mut self, timeout: Duration) -> Completion {
        let deadline = Instant::now() + timeout;
        let mut exit_codes = BTreeMap::new();
        for (n, dn) in self.apps.clone() {
            let code = docker::wait_exit(&dn, deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|| panic!("{n} still running after {timeout:?}:\n{}", docker::logs(&dn)));
            self.event(&format!("{n}: exited {code}"));
            exit_codes.insert(n, code);
        }
        let apps_done = self.started.elapsed();
        self.stop_sidecars();
        let finished = self.started.elapsed();
        let succeeded = exit_codes.values().all(|c| *c == 0);
        self.event(if succeeded { "pod Succeeded" } else { "pod Failed" });
        Completion { exit_codes, apps_done, finished, succeeded }
    }

    fn grace(&self) -> String {
        self.spec["terminationGracePeriodSeconds"].as_u64().unwrap_or(30).to_string()
    }

    fn stop_sidecars(&mut self) {
        for (n, dn) in self.sidecars.clone().into_iter().rev() {
            docker::ok(&args(&["stop", "-t", &self.grace(), &dn]));
            self.event(&format!("{n}: stopped (exit {})", docker::exit_code(&dn).unwrap_or(-1)));
        }
    }

    /// `docker inspect -f FORMAT` on one of the pod's containers (init containers included).
    pub fn inspect(&self, name: &str, format: &str) -> String {
        let dn = format!("{}-{name}", self.prefix);
        docker::inspect(&dn, format).unwrap_or_else(|| panic!("no container {dn}"))
    }

    pub fn logs(&self, name: &str) -> String {
        docker::logs(self.container(name).1)
    }

    /// Runs a command in a container.
    pub fn exec(&self, name: &str, cmd: &[&str]) -> std::process::Output {
        let mut a = args(&["exec", self.container(name).1]);
        a.extend(args(cmd));
        docker::docker(&a)
    }

    pub fn print_timeline(&self) {
        for (t, what) in &self.timeline {
            println!("  {:>7.3}s  {} {what}", t.as_secs_f64(), self.name);
        }
    }
}

impl Drop for RunningPod {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_timeline();
            for dn in &self.all {
                eprintln!("----- {dn} -----\n{}", docker::logs(dn));
            }
        }
        docker::remove_labelled(&self.pod_label);
        volumes::unmount(&self.mounts);
    }
}
