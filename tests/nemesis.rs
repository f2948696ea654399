//! Short seeded fault-injection runs against real `rast serve` processes
//! (`rast nemesis`, see `crates/rast-tools/src/nemesis`), as CI runs them: each scenario is
//! one child process bounded in time, whose verdict must pass and which
//! must leave no process and no mount behind.
//!
//! As root the runs use a network namespace per node (partitions) and a
//! tmpfs per node (full disks); otherwise loopback and process faults only.
//! Long runs: `scripts/nemesis --minutes 30 --seed S`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The runs share two cores with everything else: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Seconds of faults per scenario; with start-up, healing and the checks a
/// run takes about 10 s more.
const SECONDS: u64 = 25;
/// A run that takes longer than this is killed and fails the test.
const RUN_MAX: Duration = Duration::from_mins(1);

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// What a run left to look at.
struct Run {
    verdict: serde_json::Value,
    history: String,
    timeline: String,
    /// Every node's own log, one after the other.
    node_logs: String,
}

/// Runs one scenario and returns its files; panics with the summary and the
/// replay command if the verdict is not a pass.
fn run_scenario(scenario: &str, nodes: u32, seed: u64, serve_args: &[&str]) -> Run {
    let _guard = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let out =
        std::env::temp_dir().join(format!("rast-nemesis-it-{scenario}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let mut child = Command::new(env!("CARGO_BIN_EXE_rast"))
        .args(["nemesis", "--scenario", scenario])
        .args(["--nodes", &nodes.to_string(), "--seed", &seed.to_string()])
        .args(["--seconds", &SECONDS.to_string()])
        .args(serve_args.iter().map(|arg| format!("--serve-arg={arg}")))
        .arg("--out")
        .arg(&out)
        .env("RAST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting rast nemesis");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > RUN_MAX {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{scenario} seed {seed}: no verdict within {RUN_MAX:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut summary = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut summary).unwrap();
    println!("{summary}");
    assert!(
        status.success(),
        "{scenario} seed {seed} failed ({status}); replay: scripts/nemesis --scenario {scenario} \
         --nodes {nodes} --seed {seed} --seconds {SECONDS}\n{summary}"
    );
    let run = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .map(|entry| entry.path())
        .find(|path| path.is_dir())
        .expect("a run directory");
    let read = |name: &str| std::fs::read_to_string(run.join(name)).unwrap();
    let files = Run {
        verdict: serde_json::from_str(&read("verdict.json")).expect("verdict.json is JSON"),
        history: read("history.txt"),
        timeline: read("nemesis.txt"),
        node_logs: (1..=nodes)
            .map(|node| read(&format!("node{node}.log")))
            .collect(),
    };
    assert_eq!(files.verdict["verdict"], "pass", "{:#}", files.verdict);
    assert_nothing_left(&out);
    files
}

/// No process names the run's directory and nothing is mounted under it
/// (the tmpfs disks lived in the harness's own mount namespace).
fn assert_nothing_left(out: &Path) {
    let needle = out.to_string_lossy().into_owned();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let command_line = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&command_line).contains(&needle),
            "process {} outlived its run",
            entry.file_name().display()
        );
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&needle), "a mount outlived its run");
    let _ = std::fs::remove_dir_all(out);
}

/// Every kind of fault the machine allows, sometimes two at once, on a
/// 3-node cluster: the verdict passes and every fault kind was injected.
#[test]
fn mixed_faults_three_nodes() {
    // Every node snapshots its key-value log every 64 KiB and drops 64 KiB
    // segments below it, so followers that fell behind (killed, paused,
    // cut off) catch up through InstallSnapshot under the faults.
    let run = run_scenario(
        "mixed",
        3,
        1,
        &["--snapshot-log-bytes=65536", "--segment-bytes=65536"],
    );
    assert!(
        run.node_logs.contains("snapshot durable"),
        "no snapshot was taken"
    );
    assert!(
        run.history.contains("\tok\tkv cas ") && run.history.contains("\tok\tkv get "),
        "the key-value workload ran"
    );
    for kind in ["kill", "pause"] {
        assert!(
            run.verdict["faults"][kind].as_u64() > Some(0),
            "no {kind} in {:#}",
            run.verdict
        );
    }
}

/// Partitions (the leader alone, halves, a bridge, one-way) on 5 nodes, or
/// kills without root.
#[test]
fn partitions_five_nodes() {
    let scenario = if is_root() { "partition" } else { "kill" };
    let run = run_scenario(scenario, 5, 2, &[]);
    assert!(run.history.lines().count() > 1000, "too little workload");
}

/// Full disks while the leader changes (needs root), or pauses without.
#[test]
fn full_disks_three_nodes() {
    let scenario = if is_root() { "disk" } else { "pause" };
    let run = run_scenario(scenario, 3, 3, &[]);
    assert!(run.timeline.contains("start "), "{}", run.timeline);
}

/// Power cuts (needs root and /dev/fuse): one node, two, or all three lose
/// power (everything not synced) and start again; nothing acknowledged is
/// lost, and the logs converge. Small segments and snapshots put segment
/// rolls, snapshot files and prefix drops under the cuts. Clean restarts
/// without root.
#[test]
fn power_cuts_three_nodes() {
    let scenario = if is_root() && Path::new("/dev/fuse").exists() {
        "power"
    } else {
        "restart"
    };
    let run = run_scenario(
        scenario,
        3,
        4,
        &["--snapshot-log-bytes=65536", "--segment-bytes=65536"],
    );
    if scenario == "power" {
        assert!(
            run.verdict["faults"]["power"].as_u64() > Some(0),
            "no power cut in {:#}",
            run.verdict
        );
        assert!(run.timeline.contains("cut the power"), "{}", run.timeline);
    }
}

/// Storage damage, one node at a time: bytes of its segment, snapshot and
/// hard-state files flipped, zeroed or cut off, while it is stopped or
/// while it runs. Nothing acknowledged is lost, and every damaged copy is
/// repaired from its peers by the end (the verdict's "every damaged copy
/// repaired"; "repairs" counts what the nodes found and cut).
#[test]
fn storage_damage_three_nodes() {
    let run = run_scenario("corrupt", 3, 2, &[]);
    assert!(
        run.verdict["faults"]["corrupt"].as_u64() > Some(0),
        "no damage in {:#}",
        run.verdict
    );
    assert!(
        run.verdict["repairs"].as_u64() > Some(0),
        "nothing repaired in {:#}",
        run.verdict
    );
}
