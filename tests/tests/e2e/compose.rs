//! The playground in containers (issue #6): images built, `docker compose up`, traffic over mTLS,
//! a live weight edit, a bar container stopped, `docker compose down` leaving nothing behind.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use weft_tests::harness::{bin_dir, http_get, metric, TestDir};

/// `docker compose` (v2 plugin) or `docker-compose` (v1), whichever exists.
fn compose_cmd() -> Vec<String> {
    let v2 = Command::new("docker").args(["compose", "version"]).output().is_ok_and(|o| o.status.success());
    if v2 {
        return vec!["docker".into(), "compose".into()];
    }
    let v1 = Command::new("docker-compose").arg("version").output().is_ok_and(|o| o.status.success());
    assert!(v1, "the compose playground test needs Docker with `docker compose` or `docker-compose`");
    vec!["docker-compose".into()]
}

struct Project {
    dir: std::path::PathBuf,
    name: String,
    cmd: Vec<String>,
}

impl Project {
    fn run(&self, args: &[&str]) -> Output {
        Command::new(&self.cmd[0])
            .args(&self.cmd[1..])
            .args(["-p", &self.name])
            .args(args)
            .current_dir(&self.dir)
            .output()
            .expect("compose")
    }

    fn ok(&self, args: &[&str]) {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "compose {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let logs = self.run(&["logs", "--tail", "30"]);
            eprintln!("{}", String::from_utf8_lossy(&logs.stdout));
        }
        let _ = self.run(&["down", "-v", "--remove-orphans", "--timeout", "5"]);
    }
}

fn inbound(url: &str) -> f64 {
    http_get(url).map(|(_, b)| metric(&b, "weft_requests_total", &[("direction", "inbound")])).unwrap_or(0.0)
}

/// The last "t=…s sent=N ok=N failed=N" line of the load container.
fn load_counts(p: &Project) -> (u64, u64) {
    let out = p.run(&["logs", "--tail", "5", "load"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().rev().find(|l| l.contains("sent=")).unwrap_or_default().to_string();
    let field =
        |k: &str| line.split_whitespace().find_map(|w| w.strip_prefix(k)).and_then(|v| v.parse().ok()).unwrap_or(0);
    (field("ok="), field("failed="))
}

fn wait(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn the_compose_playground_for_real() {
    let cmd = compose_cmd();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
    let build =
        Command::new(root.join("examples/playground/build-images.sh")).env("WEFT_BIN_DIR", bin_dir()).output().unwrap();
    assert!(build.status.success(), "building the images: {}", String::from_utf8_lossy(&build.stderr));
    let tmp = TestDir::new("compose");
    let dir = tmp.path().join("playground");
    let copy = Command::new("cp").arg("-r").arg(root.join("examples/playground")).arg(&dir).status().unwrap();
    assert!(copy.success());
    let project = Project { dir: dir.clone(), name: format!("weft-e2e-{}", std::process::id()), cmd };
    project.ok(&["up", "-d"]);

    // Ready: four proxies connected, bar taking traffic from foo over mTLS.
    wait("four proxies connected", Duration::from_secs(120), || {
        http_get("http://127.0.0.1:17071/api/v1/state")
            .ok()
            .and_then(|(_, b)| serde_json::from_str::<serde_json::Value>(&b).ok())
            .is_some_and(|s| s["proxies"].as_array().is_some_and(|p| p.len() == 4))
    });
    wait("traffic through the mesh", Duration::from_secs(60), || {
        let m = http_get("http://127.0.0.1:14193/metrics").map(|(_, b)| b).unwrap_or_default();
        metric(
            &m,
            "weft_requests_total",
            &[("direction", "inbound"), ("tls", "true"), ("client_id", "spiffe://weft.local/ns/default/sa/foo")],
        ) >= 10.0
    });
    for admin in [14192, 14193, 14194] {
        let m = http_get(&format!("http://127.0.0.1:{admin}/metrics")).unwrap().1;
        assert_eq!(
            metric(&m, "weft_requests_total", &[("direction", "inbound"), ("tls", "false")]),
            0.0,
            "mesh hops are mTLS"
        );
    }
    let web = http_get("http://127.0.0.1:14191/metrics").unwrap().1;
    assert!(
        metric(&web, "weft_requests_total", &[("direction", "inbound"), ("tls", "false")]) > 0.0,
        "the load outside the mesh reaches web in plaintext (permissive)"
    );

    // A live weight edit moves bar's traffic to v2 (the editor way: a new file renamed over).
    let mesh = dir.join("mesh/mesh.yaml");
    let text = std::fs::read_to_string(&mesh)
        .unwrap()
        .replace("weight: 90}", "weight: 0}")
        .replace("weight: 10}", "weight: 100}");
    std::fs::write(dir.join("mesh/mesh.yaml.new"), text).unwrap();
    std::fs::rename(dir.join("mesh/mesh.yaml.new"), &mesh).unwrap();
    wait("all of bar's traffic on v2", Duration::from_secs(30), || {
        let (v1, v2) = (inbound("http://127.0.0.1:14193/metrics"), inbound("http://127.0.0.1:14194/metrics"));
        std::thread::sleep(Duration::from_secs(2));
        inbound("http://127.0.0.1:14193/metrics") == v1 && inbound("http://127.0.0.1:14194/metrics") > v2
    });

    // Stop the bar container taking the traffic: after ejection the load recovers on v1.
    project.ok(&["stop", "-t", "2", "bar-v2-app"]);
    wait("the load recovers", Duration::from_secs(45), || {
        let (ok1, failed1) = load_counts(&project);
        std::thread::sleep(Duration::from_secs(4));
        let (ok2, failed2) = load_counts(&project);
        ok2 > ok1 && failed2 == failed1
    });
    let (ok, failed) = load_counts(&project);
    assert!(ok > 100, "{ok} ok");
    assert!(failed * 20 < ok, "failures stay few: {failed} of {}", ok + failed);

    // Down: no container, network or volume of the project is left.
    project.ok(&["down", "-v", "--timeout", "5"]);
    let name = project.name.clone();
    let left = |args: &[&str]| {
        String::from_utf8_lossy(&Command::new("docker").args(args).output().unwrap().stdout).trim().to_string()
    };
    assert!(
        left(&["ps", "-aq", "--filter", &format!("label=com.docker.compose.project={name}")]).is_empty(),
        "containers left"
    );
    assert!(
        left(&["network", "ls", "-q", "--filter", &format!("label=com.docker.compose.project={name}")]).is_empty(),
        "networks left"
    );
    assert!(
        left(&["volume", "ls", "-q", "--filter", &format!("label=com.docker.compose.project={name}")]).is_empty(),
        "volumes left"
    );
}
