//! Snapshots, compaction and InstallSnapshot through real processes: a node
//! whose disk was lost is replaced by a new node that catches up from a
//! streamed snapshot in bounded memory and serves on as a full member;
//! automatic snapshots compact the log and survive a rolling restart under
//! load; plain logs drop old segments by retention and answer reads below
//! them "compacted".

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rast::client::{Client, ClientOptions};
use rast::wire::client::{AdminRequest, ResponseBody, Status};

/// Waits for `condition`, polling; panics with `what` after `within`.
fn wait_until(within: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < within, "{what} within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A client that talks to node `node` only.
fn pinned(cluster: &common::Cluster, node: usize) -> Client {
    let options = ClientOptions {
        deadline: Duration::from_secs(20),
        ..ClientOptions::default()
    };
    Client::new(&[cluster.addresses[node].as_str()], options).unwrap()
}

/// Asks node `node` to snapshot `log` now (retrying while it says to);
/// returns the status it answers with.
fn snapshot_now(cluster: &common::Cluster, node: usize, log: &str) -> Status {
    let started = Instant::now();
    loop {
        match pinned(cluster, node).admin_on(log, AdminRequest::Snapshot) {
            Ok(ResponseBody::Status(status)) => return status,
            other => {
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "node {node} did not snapshot {log}: {other:?}"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Memory of process `pid` from /proc, in bytes: (peak resident, resident,
/// anonymous resident, file-backed resident).
fn resident(pid: u32) -> (u64, u64, u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse::<u64>().ok())
            .unwrap()
            * 1024
    };
    (
        field("VmHWM:"),
        field("VmRSS:"),
        field("RssAnon:"),
        field("RssFile:"),
    )
}

fn value_of(key: u64, bytes: usize) -> Vec<u8> {
    let mut value = vec![(key % 251) as u8; bytes];
    value[..8].copy_from_slice(&key.to_le_bytes());
    value
}

/// A follower is killed, the others take a state of `RAST_SNAPSHOT_TEST_MIB`
/// MiB (default 48) in 64 KiB values, snapshot it and compact their logs;
/// the follower's disk is lost, so it is replaced: removed, and a new node
/// (new id, empty disk) added as a learner. The new node receives the
/// snapshot in chunks, installs it, and ends with every key. Its peak RSS
/// while it does stays within 64 MiB of what it holds after (the state),
/// and that is within 10 % + 64 MiB of the state's bytes.
/// Then it is promoted and serves as a full member: with the leader killed,
/// the cluster elects among the two others and commits on.
#[test]
#[allow(clippy::too_many_lines)]
fn a_replacement_for_a_lost_disk_catches_up_from_a_snapshot_in_bounded_memory() {
    const VALUE_BYTES: usize = 64 * 1024;
    let target_mib: u64 = std::env::var("RAST_SNAPSHOT_TEST_MIB")
        .ok()
        .and_then(|mib| mib.parse().ok())
        .unwrap_or(48);
    let mut cluster = common::Cluster::start_with(
        "snapwipe",
        3,
        1,
        &["--snapshot-log-bytes", "0", "--segment-bytes", "4194304"],
    );
    cluster.client().put(b"warmup", b"0").unwrap();
    let leader = cluster.wait_for_leader("kv", Duration::from_secs(20));
    let wiped = (leader + 1) % 3;
    cluster.kill(wiped);

    let keys = target_mib * 1024 * 1024 / VALUE_BYTES as u64;
    let next = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..4)
        .map(|_| {
            let next = Arc::clone(&next);
            let mut client = cluster.client();
            std::thread::spawn(move || {
                loop {
                    let key = next.fetch_add(1, Ordering::Relaxed);
                    if key >= keys {
                        return;
                    }
                    client
                        .put(
                            format!("key-{key:08}").as_bytes(),
                            &value_of(key, VALUE_BYTES),
                        )
                        .unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    let state_bytes = keys * (VALUE_BYTES as u64 + 12);
    let mut snapshot_index = 0;
    for node in (0..3).filter(|node| *node != wiped) {
        let status = snapshot_now(&cluster, node, "kv");
        assert!(status.snapshot_index > 0, "{status:?}");
        assert!(
            status.first_index > 1,
            "node {node} dropped its log below the snapshot: {status:?}"
        );
        snapshot_index = snapshot_index.max(status.snapshot_index);
    }

    // Replace the dead node, whose disk is lost: it leaves the
    // configuration, and a node with a new id and an empty disk joins as a
    // learner. The leader's log no longer holds what it misses: it gets the
    // snapshot.
    std::fs::remove_dir_all(cluster.data_dir(wiped)).unwrap();
    let removed = wiped as u64 + 1;
    match cluster
        .client()
        .admin_on("kv", AdminRequest::Remove(removed))
    {
        Ok(ResponseBody::Members(members)) => {
            assert!(!members.voters.contains(&removed), "{members:?}");
        }
        other => panic!("removing node {removed}: {other:?}"),
    }
    let fresh = cluster.join();
    let id = fresh as u64 + 1;
    let pid = cluster.pid(fresh).unwrap();
    let started = Instant::now();
    let address = cluster.addresses[fresh].clone();
    match cluster
        .client()
        .admin_on("kv", AdminRequest::AddLearner { id, address })
    {
        Ok(ResponseBody::Members(members)) => assert!(members.learners.contains(&id)),
        other => panic!("adding node {id}: {other:?}"),
    }
    let mut peak_seen = 0;
    wait_until(
        Duration::from_secs(120 + target_mib / 4),
        "the new node applies the snapshot",
        || {
            peak_seen = peak_seen.max(resident(pid).1);
            cluster
                .status(fresh, "kv")
                .is_some_and(|status| status.applied_index >= snapshot_index)
        },
    );
    let caught_up = started.elapsed();
    let (peak, now, anon, file) = resident(pid);
    let status = cluster.status(fresh, "kv").unwrap();
    println!(
        "new node caught up in {caught_up:?}: state {} MiB ({keys} keys), snapshot at {}, \
         peak RSS {} MiB (sampled {} MiB); after: RSS {} MiB = {} anonymous + {} file-backed",
        state_bytes >> 20,
        status.snapshot_index,
        peak >> 20,
        peak_seen >> 20,
        now >> 20,
        anon >> 20,
        file >> 20
    );
    assert!(status.snapshot_index >= snapshot_index, "{status:?}");
    // The transfer itself adds at most a few chunks to the state it
    // leaves behind (a node that buffered the snapshot would peak at
    // twice the state, or keep it)...
    assert!(
        peak <= now + 64 * 1024 * 1024,
        "peak RSS {} MiB, {} MiB after the install",
        peak >> 20,
        now >> 20
    );
    // ...and what it leaves is the state, not a copy of the snapshot.
    assert!(
        now <= state_bytes + state_bytes / 10 + 64 * 1024 * 1024,
        "RSS {} MiB holding a state of {} MiB",
        now >> 20,
        state_bytes >> 20
    );
    let mut local = pinned(&cluster, fresh);
    for key in [0, keys / 2, keys - 1] {
        assert_eq!(
            local.get(format!("key-{key:08}").as_bytes(), true).unwrap(),
            Some(value_of(key, VALUE_BYTES)),
            "key {key} on the new node"
        );
    }

    // Promoted, it is a full member: the cluster commits with it and
    // without the leader.
    match cluster.client().admin_on("kv", AdminRequest::Promote(id)) {
        Ok(ResponseBody::Members(members)) => assert!(members.voters.contains(&id)),
        other => panic!("promoting node {id}: {other:?}"),
    }
    let leader = cluster.wait_for_leader("kv", Duration::from_secs(20));
    if leader != fresh {
        cluster.kill(leader);
    }
    cluster.client().put(b"after", b"the rebuild").unwrap();
    assert_eq!(
        cluster.client().get(b"after", false).unwrap(),
        Some(b"the rebuild".to_vec())
    );
}

/// With small automatic snapshots, every node snapshots and compacts its
/// key-value log while clients write; a rolling restart under that load
/// (each node SIGTERMed and restarted in turn) restarts each from its
/// snapshot and log, and every acknowledged write is read back after.
#[test]
fn automatic_snapshots_survive_a_rolling_restart_under_load() {
    let mut cluster = common::Cluster::start_with(
        "snaproll",
        3,
        1,
        &["--snapshot-log-bytes", "131072", "--segment-bytes", "65536"],
    );
    cluster.client().put(b"warmup", b"0").unwrap();
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..2u64)
        .map(|writer| {
            let acknowledged = Arc::clone(&acknowledged);
            let stop = Arc::clone(&stop);
            let mut client = cluster.client();
            std::thread::spawn(move || {
                let mut sequence = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("w{writer}-{}", sequence % 200);
                    let value = format!("{writer}:{sequence}:{}", "x".repeat(900));
                    if client.put(key.as_bytes(), value.as_bytes()).is_ok() {
                        acknowledged.lock().unwrap().push((key, value));
                    }
                    sequence += 1;
                }
            })
        })
        .collect();
    cluster.wait_for_status("kv", "snapshot and compact", |status| {
        status.snapshot_index > 0 && status.first_index > 1
    });
    for node in 0..3 {
        assert!(cluster.terminate(node).success(), "node {node} exits 0");
        cluster.restart(node);
        wait_until(Duration::from_secs(30), "the node is back", || {
            cluster
                .status(node, "kv")
                .is_some_and(|status| status.snapshot_index > 0)
        });
        let before = acknowledged.lock().unwrap().len();
        wait_until(Duration::from_secs(30), "writes go on", || {
            acknowledged.lock().unwrap().len() > before + 20
        });
    }
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.join().unwrap();
    }
    // The last acknowledged value of each key is what a linearizable read
    // returns (each writer owns its keys and writes them in order).
    let mut last = std::collections::BTreeMap::new();
    for (key, value) in acknowledged.lock().unwrap().iter() {
        last.insert(key.clone(), value.clone());
    }
    assert!(last.len() >= 100, "{} keys written", last.len());
    let mut client = cluster.client();
    for (key, value) in &last {
        let got = client.get(key.as_bytes(), false).unwrap();
        assert_eq!(
            got.as_deref(),
            Some(value.as_bytes()),
            "key {key} after the rolling restart"
        );
    }
}

/// A plain log with a size budget drops its oldest segments on every node;
/// reading below the first kept index fails with a clear "compacted" error
/// naming it, and reading from it works.
#[test]
fn retention_drops_old_segments_and_reads_below_say_compacted() {
    let cluster = common::Cluster::start_with(
        "retain",
        3,
        1,
        &["--retain-bytes", "262144", "--segment-bytes", "65536"],
    );
    let mut client = cluster.client();
    let payload = vec![b'r'; 1000];
    let mut last = 0;
    for _ in 0..100 {
        let batch: Vec<&[u8]> = vec![&payload[..]; 10];
        let appended = client.append("default", &batch).unwrap();
        last = appended.first_index.get() + u64::from(appended.count) - 1;
    }
    cluster.wait_for_status("default", "drop old segments", |status| {
        status.first_index > 1 && status.commit_index >= last
    });
    for node in 0..3 {
        let status = cluster.status(node, "default").unwrap();
        let kept = (status.last_index - status.first_index + 1) * 1000;
        assert!(
            kept <= 262_144 + 3 * 65_536,
            "node {node} keeps about the budget: {status:?}"
        );
    }
    let output = Command::new(env!("CARGO_BIN_EXE_rast"))
        .args(["read", "--from", "1", "--count", "5"])
        .args(["--cluster", &cluster.addresses.join(",")])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("compacted"), "{stderr}");
    let first = cluster.status(0, "default").unwrap().first_index;
    let entries = pinned(&cluster, 0)
        .read("default", rast::types::LogIndex(first), 5)
        .unwrap();
    assert_eq!(entries.first().map(|(index, _)| index.get()), Some(first));
}

/// A follower whose snapshots are all damaged on disk, its log compacted
/// below them, cannot rebuild its copy: it restarts damaged instead of
/// refusing to start, and is repaired from the leader's snapshot and log —
/// with the third node down, so the leader is elected by the damaged
/// node's own vote (it votes for a log that holds what it may have
/// acknowledged) — and serves every key again.
#[test]
fn a_follower_whose_snapshots_are_damaged_is_repaired_from_the_leader() {
    let mut cluster = common::Cluster::start_with(
        "snapdamaged",
        3,
        1,
        &["--snapshot-log-bytes", "0", "--segment-bytes", "65536"],
    );
    let mut client = cluster.client();
    let value = |key: u64| format!("{key}:{}", "v".repeat(2000)).into_bytes();
    for key in 0..120u64 {
        client
            .put(format!("k{key}").as_bytes(), &value(key))
            .unwrap();
    }
    let leader = cluster.wait_for_leader("kv", Duration::from_secs(20));
    let victim = (leader + 1) % 3;
    let other = 3 - leader - victim;
    let status = snapshot_now(&cluster, victim, "kv");
    assert!(
        status.first_index > 1,
        "the snapshot compacted the log: {status:?}"
    );
    assert!(cluster.terminate(victim).success());

    let snapshots = cluster
        .data_dir(victim)
        .join(format!(
            "{:016x}",
            rast::types::LogId::from_name("kv").get()
        ))
        .join("snapshots");
    let mut damaged = 0;
    for entry in std::fs::read_dir(&snapshots).unwrap() {
        let path = entry.unwrap().path();
        let mut bytes = std::fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x5a;
        std::fs::write(&path, &bytes).unwrap();
        damaged += 1;
    }
    assert!(damaged > 0, "no snapshot file in {}", snapshots.display());

    cluster.kill(other);
    cluster.restart(victim);
    wait_until(Duration::from_secs(30), "the victim is repaired", || {
        cluster
            .status(victim, "kv")
            .is_some_and(|status| status.damaged_in == 0 && status.applied_index > 120)
    });
    assert!(
        cluster
            .metric(victim, "rast_corruptions_found_total")
            .is_some_and(|found| found >= f64::from(damaged)),
        "the victim found its damaged snapshots"
    );
    let mut pinned = pinned(&cluster, victim);
    for key in [0u64, 59, 119] {
        assert_eq!(
            pinned.get(format!("k{key}").as_bytes(), true).unwrap(),
            Some(value(key)),
            "key {key} on the repaired node"
        );
    }
}
