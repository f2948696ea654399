//! The command line against a real cluster: `append` prints indexes,
//! `read` prints `index<TAB>payload`, `tail` follows, `status` reports every
//! node, and errors are one line on stderr with a non-zero exit.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

fn rast(cluster: &common::Cluster, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rast"))
        .args(args)
        .args(["--cluster", &cluster.addresses.join(",")])
        .output()
        .unwrap()
}

/// append → read → tail → status, through the binary users script against.
#[test]
fn append_read_tail_status() {
    let cluster = common::Cluster::start("cli", 3, 1);
    let appended = rast(&cluster, &["append", "one", "two"]);
    assert!(appended.status.success(), "{appended:?}");
    let indexes: Vec<u64> = String::from_utf8_lossy(&appended.stdout)
        .lines()
        .map(|line| line.parse().unwrap())
        .collect();
    assert_eq!(indexes.len(), 2);
    assert_eq!(indexes[1], indexes[0] + 1);

    // One entry per stdin line when no payload is given.
    let mut child = Command::new(env!("CARGO_BIN_EXE_rast"))
        .args(["append", "--cluster", &cluster.addresses.join(",")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"three\nfour\n")
        .unwrap();
    let piped = child.wait_with_output().unwrap();
    assert!(piped.status.success());
    assert_eq!(String::from_utf8_lossy(&piped.stdout).lines().count(), 2);

    let read = rast(
        &cluster,
        &["read", "--from", &indexes[0].to_string(), "--count", "4"],
    );
    assert!(read.status.success(), "{read:?}");
    let text = String::from_utf8_lossy(&read.stdout);
    let payloads: Vec<&str> = text
        .lines()
        .map(|line| line.split('\t').nth(1).unwrap())
        .collect();
    assert_eq!(payloads, ["one", "two", "three", "four"]);

    // tail from the first index prints what is there, then follows.
    let mut tail = Command::new(env!("CARGO_BIN_EXE_rast"))
        .args([
            "tail",
            "--from",
            &indexes[0].to_string(),
            "--cluster",
            &cluster.addresses.join(","),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(tail.stdout.take().unwrap()).lines();
    for expected in ["one", "two", "three", "four"] {
        let line = lines.next().unwrap().unwrap();
        assert!(line.ends_with(&format!("\t{expected}")), "{line}");
    }
    assert!(rast(&cluster, &["append", "five"]).status.success());
    let line = lines.next().unwrap().unwrap();
    assert!(line.ends_with("\tfive"), "{line}");
    tail.kill().unwrap();
    tail.wait().unwrap();

    // Every node answers status (retried: a node busy syncing on a loaded
    // machine may miss one 5 s window).
    let mut status = rast(&cluster, &["status"]);
    for _ in 0..5 {
        if status.status.success() {
            break;
        }
        status = rast(&cluster, &["status"]);
    }
    assert!(status.status.success(), "{status:?}");
    let text = String::from_utf8_lossy(&status.stdout);
    assert_eq!(
        text.lines()
            .filter(|line| line.starts_with("node "))
            .count(),
        3,
        "{text}"
    );
    assert_eq!(text.matches(": leader ").count(), 1, "{text}");
}

/// A client error is one line on stderr and exit code 2; an unreachable
/// cluster is reported as such.
#[test]
fn errors_are_one_line_and_non_zero() {
    let port = common::free_port();
    let output = Command::new(env!("CARGO_BIN_EXE_rast"))
        .args([
            "append",
            "x",
            "--cluster",
            &format!("127.0.0.1:{port}"),
            "--timeout-seconds",
            "1",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("rast: "), "{stderr}");
}

/// `rast serve --config FILE` takes its settings from TOML, flags override
/// the file, and a bad file is one clear error line.
#[test]
fn serve_reads_a_config_file() {
    let dir = std::env::temp_dir().join(format!("rast-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = common::free_port();
    let config = dir.join("rast.toml");
    std::fs::write(
        &config,
        format!(
            "id = 1\nlisten = \"127.0.0.1:{port}\"\npeers = \"1=127.0.0.1:{port}\"\ndata = \"{}\"\ncores = 1\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    let mut server = Command::new(env!("CARGO_BIN_EXE_rast"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("RAST_LOG", "warn")
        .spawn()
        .unwrap();
    // A single-node cluster elects itself and serves an append.
    let output = Command::new(env!("CARGO_BIN_EXE_rast"))
        .args([
            "append",
            "configured",
            "--cluster",
            &format!("127.0.0.1:{port}"),
        ])
        .output()
        .unwrap();
    server.kill().unwrap();
    server.wait().unwrap();
    assert!(output.status.success(), "{output:?}");

    std::fs::write(&config, "id = \"one\"\n").unwrap();
    let bad = Command::new(env!("CARGO_BIN_EXE_rast"))
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("parsing config file"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A log name outside `[A-Za-z0-9._-]` is refused with a clear error and
/// the node keeps serving.
#[test]
fn invalid_log_names_are_refused() {
    let cluster = common::Cluster::start("names", 3, 1);
    let output = rast(&cluster, &["append", "x", "--log", "../../etc"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("invalid log name"),
        "{output:?}"
    );
    assert!(
        rast(&cluster, &["append", "y", "--log", "fine.name-1"])
            .status
            .success()
    );
}

/// For scripts and operators: `--output json` on `status`, `read` and
/// `admin members`; the client options accepted after a nested verb
/// (`rast admin members --cluster …`, the helper puts `--cluster` last);
/// completions and the manual page generated from the CLI itself; no
/// test-only switch in `rast serve --help`.
#[test]
fn json_output_global_flags_completions_and_man() {
    let cluster = common::Cluster::start("cli-json", 3, 1);
    let appended = rast(&cluster, &["append", "alpha", "beta"]);
    assert!(appended.status.success(), "{appended:?}");
    let first: u64 = String::from_utf8_lossy(&appended.stdout)
        .lines()
        .next()
        .unwrap()
        .parse()
        .unwrap();

    let read = rast(
        &cluster,
        &["read", "--from", &first.to_string(), "--output", "json"],
    );
    assert!(read.status.success(), "{read:?}");
    let entries: serde_json::Value = serde_json::from_slice(&read.stdout).unwrap();
    assert_eq!(entries[0]["index"], first);
    assert_eq!(entries[0]["payload"], "alpha");
    assert_eq!(entries[1]["payload"], "beta");

    let status = rast(&cluster, &["status", "--output", "json"]);
    assert!(status.status.success(), "{status:?}");
    let nodes: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let nodes = nodes.as_array().unwrap();
    assert_eq!(nodes.len(), 3);
    assert_eq!(
        nodes.iter().filter(|node| node["role"] == "leader").count(),
        1,
        "{nodes:?}"
    );
    assert!(
        nodes
            .iter()
            .all(|node| node["last_index"].as_u64() >= Some(first + 1))
    );

    let members = rast(&cluster, &["admin", "members", "--output", "json"]);
    assert!(members.status.success(), "{members:?}");
    let members: serde_json::Value = serde_json::from_slice(&members.stdout).unwrap();
    assert_eq!(members["log"], "default");
    assert_eq!(members["voters"].as_array().unwrap().len(), 3);

    let binary = env!("CARGO_BIN_EXE_rast");
    let completions = Command::new(binary)
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(completions.status.success());
    let script = String::from_utf8_lossy(&completions.stdout);
    assert!(
        script.contains("_rast()") && script.contains("append") && script.contains("--cluster")
    );
    let man = Command::new(binary).arg("man").output().unwrap();
    assert!(man.status.success());
    assert!(String::from_utf8_lossy(&man.stdout).contains(".TH rast 1"));
    // A reader that is gone before it writes (`rast man | true`): the
    // process ends quietly, with no error on stderr.
    let mut child = Command::new(binary)
        .arg("man")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let ended = child.wait_with_output().unwrap();
    assert!(
        ended.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&ended.stderr)
    );
    let help = Command::new(binary)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(help.status.success());
    assert!(!String::from_utf8_lossy(&help.stdout).contains("fault-kv-panic-key"));
}
