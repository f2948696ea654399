//! The key-value state machine through real processes: the CLI verbs, and
//! concurrent clients doing put/get/cas while the leader is killed and
//! restarted, with the recorded history checked for linearizability.

mod common;

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rast::check::history::History;
use rast::check::linearizable::KvOp;
use rast::client::{Client, ClientError, ClientOptions};

fn rast(cluster: &common::Cluster, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rast"))
        .args(args)
        .args(["--cluster", &cluster.addresses.join(",")])
        .output()
        .unwrap()
}

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout)
        .trim_end()
        .to_owned()
}

/// put / get / cas / delete as users script them: exit codes and output.
#[test]
fn cli_put_get_cas_delete() {
    let cluster = common::Cluster::start("kvcli", 3, 1);
    assert!(rast(&cluster, &["put", "color", "red"]).status.success());
    let got = rast(&cluster, &["get", "color"]);
    assert!(got.status.success());
    assert_eq!(stdout(&got), "red");

    let missing = rast(&cluster, &["get", "shape"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not found"));

    assert!(
        rast(&cluster, &["cas", "color", "red", "blue"])
            .status
            .success()
    );
    let mismatch = rast(&cluster, &["cas", "color", "red", "green"]);
    assert_eq!(mismatch.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&mismatch.stderr).contains("current value: blue"),
        "{mismatch:?}"
    );
    assert!(
        rast(&cluster, &["cas", "--absent", "shape", "", "round"])
            .status
            .success()
    );
    assert_eq!(stdout(&rast(&cluster, &["get", "shape"])), "round");

    assert!(rast(&cluster, &["delete", "color"]).status.success());
    assert_eq!(rast(&cluster, &["get", "color"]).status.code(), Some(1));
    let stale = rast(&cluster, &["get", "--stale", "shape"]);
    assert!(stale.status.success());
}

/// Concurrent clients on a few keys while the leader is SIGKILLed and later
/// restarted: every acknowledged write survives and the history is
/// linearizable (per key, with failed cas meaning "did not match").
#[test]
fn kv_history_is_linearizable_across_leader_crash() {
    let mut cluster = common::Cluster::start("kvlin", 3, 1);
    // Make sure the kv log has a leader before the clock starts.
    cluster.client().put(b"warmup", b"0").unwrap();
    let history = Arc::new(Mutex::new(History::<KvOp>::default()));
    let started = Instant::now();
    let run_for = Duration::from_secs(6);
    let workers = common::kv_history::spawn_workers(
        &cluster.addresses,
        4,
        32,
        &history,
        started,
        move || started.elapsed() < run_for,
    );
    std::thread::sleep(Duration::from_secs(2));
    let leader = cluster.wait_for_leader("kv", Duration::from_secs(10));
    cluster.kill(leader);
    std::thread::sleep(Duration::from_secs(2));
    cluster.restart(leader);
    for worker in workers {
        worker.join().unwrap();
    }
    common::kv_history::check(&history.lock().unwrap(), 50);
}

/// A state machine that panics on a chosen key (real processes, fault
/// injected with `--fault-kv-panic-key`): the write is answered "failed",
/// every node's kv log stops at the same index and says why in its status,
/// the other logs keep serving, and after a restart without the fault
/// every node applies the same entries, the panicking one included (it
/// was never skipped).
#[test]
fn state_machine_panic_stops_only_its_log_and_nothing_diverges() {
    let mut cluster =
        common::Cluster::start_with("kvpanic", 3, 1, &["--fault-kv-panic-key", "boom"]);
    let mut client = cluster.client();
    client.put(b"before", b"1").unwrap();
    match client.put(b"boom", b"x") {
        Err(ClientError::Reply(reply)) => {
            assert_eq!(
                reply.kind,
                rast::wire::client::ErrorKind::Failed,
                "{reply:?}"
            );
        }
        other => panic!("a panicking apply answered {other:?}"),
    }
    let failed = cluster.wait_for_status("kv", "failed", |status| !status.failed.is_empty());
    let stopped_at = failed[0].applied_index;
    for status in &failed {
        assert!(status.failed.contains("panic"), "{status:?}");
        assert_eq!(
            status.applied_index, stopped_at,
            "nodes stopped apart: {failed:?}"
        );
        assert!(status.commit_index > stopped_at, "{status:?}");
    }
    // The stopped log refuses new work clearly; the others serve on.
    match client.put(b"after", b"2") {
        Err(ClientError::Reply(reply)) => {
            assert_eq!(
                reply.kind,
                rast::wire::client::ErrorKind::Failed,
                "{reply:?}"
            );
        }
        other => panic!("a stopped kv log answered {other:?}"),
    }
    let appended = client.append("default", &[b"still serving"]).unwrap();
    let entries = client.read("default", appended.first_index, 1).unwrap();
    assert_eq!(entries[0].1, b"still serving");

    // Restarted with the fault still injected, the log stops again at the
    // same entry: it never skips it.
    cluster.kill(0);
    cluster.restart(0);
    cluster.wait_for_status("kv", "stopped again", |status| {
        !status.failed.is_empty() && status.applied_index == stopped_at
    });

    // Restarted without the fault, every node applies the same entries.
    cluster.set_extra(&[]);
    for node in 0..3 {
        cluster.kill(node);
        cluster.restart(node);
    }
    let healed = cluster.wait_for_status("kv", "healed", |status| {
        status.failed.is_empty() && status.applied_index > stopped_at
    });
    let mut client = cluster.client();
    assert_eq!(
        client.get(b"boom", false).unwrap().as_deref(),
        Some(&b"x"[..])
    );
    assert_eq!(
        client.get(b"before", false).unwrap().as_deref(),
        Some(&b"1"[..])
    );
    let applied = healed
        .iter()
        .map(|status| status.applied_index)
        .max()
        .unwrap();
    cluster.wait_for_status("kv", "caught up", |status| status.applied_index >= applied);
    for address in &cluster.addresses {
        let options = ClientOptions {
            deadline: Duration::from_secs(10),
            ..ClientOptions::default()
        };
        let mut local = Client::new(&[address], options).unwrap();
        for key in [&b"before"[..], b"boom"] {
            assert_eq!(
                local.get(key, true).unwrap(),
                client.get(key, false).unwrap(),
                "node {address} diverges on {:?}",
                String::from_utf8_lossy(key)
            );
        }
    }
}
