//! The operations kit in `deploy/` works with this build: the example
//! configuration starts a node (every key accepted, every value valid), the
//! node's `/ready` and `/health` answer, every metric the Grafana dashboard
//! and the alert rules query is one the node exports, the exposition and
//! the alert rules pass `promtool` (Debian's `prometheus`; `scripts/setup`
//! installs it), and the systemd unit passes `systemd-analyze verify`
//! without a warning.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rast::launch::free_loopback_address;

/// How long a node may take to elect itself and serve.
const READY_WITHIN: Duration = Duration::from_secs(20);

fn deploy(file: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(file)
}

/// `GET path` on `address`: (status code, body).
fn get(address: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(address).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let code = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n")?.1.to_owned();
    Some((code, body))
}

/// Kills the node when the test ends, passing or not.
struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The metric names an expression queries: its `rast_*` and `process_*`
/// identifiers.
fn names_in(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|token| token.starts_with("rast_") || token.starts_with("process_"))
        .map(str::to_owned)
        .collect()
}

/// Every expression of the dashboard and the alert rules.
fn queries() -> Vec<String> {
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(deploy("grafana/rast.json")).unwrap())
            .expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            exprs.push(target["expr"].as_str().expect("expr").to_owned());
        }
    }
    let rules = std::fs::read_to_string(deploy("prometheus/rast-alerts.yml")).unwrap();
    let alerts = rules
        .lines()
        .filter_map(|line| line.trim().strip_prefix("expr:"))
        .map(|expr| expr.trim().to_owned())
        .collect::<Vec<_>>();
    assert!(
        alerts.len() >= 5,
        "the alert rules hold {} expressions",
        alerts.len()
    );
    exprs.extend(alerts);
    exprs
}

#[test]
fn example_config_serves_and_the_dashboard_and_alerts_query_real_metrics() {
    let listen = free_loopback_address().unwrap();
    let metrics = free_loopback_address().unwrap();
    let data = std::env::temp_dir().join(format!("rast-deploy-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data).unwrap();
    let token = data.join("token");
    std::fs::write(&token, "deploy-test-token\n").unwrap();
    // The file as shipped; only what names this machine is overridden.
    let node = Command::new(env!("CARGO_BIN_EXE_rast"))
        .arg("serve")
        .arg("--config")
        .arg(deploy("rast.toml"))
        .args([
            "--listen",
            &listen,
            "--metrics-addr",
            &metrics,
            "--cores",
            "1",
        ])
        .arg("--peers")
        .arg(format!("1={listen}"))
        .arg("--data")
        .arg(data.join("node"))
        .arg("--token-file")
        .arg(&token)
        .env("RAST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut node = Node(node);
    let deadline = Instant::now() + READY_WITHIN;
    let ready = loop {
        if let Some(exit) = node.0.try_wait().unwrap() {
            panic!("the node exited with {exit} on the example configuration");
        }
        match get(&metrics, "/ready") {
            Some((200, body)) => break body,
            _ if Instant::now() > deadline => panic!("not ready within {READY_WITHIN:?}"),
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    assert_eq!(ready, "ready\n");
    assert_eq!(get(&metrics, "/health").map(|(code, _)| code), Some(200));
    let (code, exposition) = get(&metrics, "/metrics").expect("metrics");
    assert_eq!(code, 200);
    // What this single node exports, and what only a leader with
    // followers does (the unit tests of `metrics` render those).
    let families: Vec<&str> = exposition
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|line| line.split(' ').next())
        .chain(rast::server::metrics::LEADER_WITH_PEERS_FAMILIES)
        .collect();
    match promtool(&["check", "metrics"], exposition.as_bytes()) {
        Some(checked) => assert!(
            checked.status.success(),
            "promtool check metrics: {}{}",
            String::from_utf8_lossy(&checked.stdout),
            String::from_utf8_lossy(&checked.stderr)
        ),
        None => eprintln!("SKIPPED promtool check metrics: no promtool on this machine"),
    }
    for expr in queries() {
        let names = names_in(&expr);
        assert!(!names.is_empty(), "{expr} queries no Rast metric");
        for name in names {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .filter(|base| families.contains(base))
                .unwrap_or(&name);
            assert!(
                families.contains(&family),
                "{expr} queries {name}, which the node does not export"
            );
        }
    }
    drop(node);
    std::fs::remove_dir_all(&data).unwrap();
}

/// `promtool` with `args`, `input` on its standard input; `None` when
/// the machine has no promtool.
fn promtool(args: &[&str], input: &[u8]) -> Option<std::process::Output> {
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    child.stdin.take().unwrap().write_all(input).unwrap();
    Some(child.wait_with_output().unwrap())
}

#[test]
fn alert_rules_pass_promtool() {
    let rules = deploy("prometheus/rast-alerts.yml");
    let Some(checked) = promtool(&["check", "rules", rules.to_str().unwrap()], b"") else {
        eprintln!("SKIPPED alert_rules_pass_promtool: no promtool on this machine");
        return;
    };
    let output = String::from_utf8_lossy(&checked.stdout);
    assert!(
        checked.status.success(),
        "{output}{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(output.contains("SUCCESS"), "{output}");
}

#[test]
fn systemd_unit_verifies() {
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("SKIPPED systemd_unit_verifies: no systemd-analyze on this machine");
        return;
    };
    assert!(version.status.success());
    // The unit as shipped, with ExecStart pointing at this build (verify
    // checks that the program exists).
    let unit = std::fs::read_to_string(deploy("systemd/rast.service"))
        .unwrap()
        .replace("/usr/local/bin/rast", env!("CARGO_BIN_EXE_rast"));
    let dir = std::env::temp_dir().join(format!("rast-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("rast.service");
    std::fs::write(&path, unit).unwrap();
    let verified = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&verified.stderr);
    // Only what concerns this unit (a host may have unrelated complaints).
    let about_unit: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("rast.service"))
        .collect();
    assert!(verified.status.success(), "{stderr}");
    assert!(about_unit.is_empty(), "{}", about_unit.join("\n"));
    std::fs::remove_dir_all(&dir).unwrap();
}
