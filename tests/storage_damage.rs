//! Storage damage on real processes, repaired from the peers with no
//! operator: damage at rest in a running node's sealed segment, found by
//! the scrubber; a hard state zeroed while the node was down.

mod common;

use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use common::Cluster;
use rast::types::{LogId, LogIndex, Term};

const WITHIN: Duration = Duration::from_secs(30);

/// Waits until `metric` of `node` satisfies `done`.
fn wait_for_metric(cluster: &Cluster, node: usize, metric: &str, done: impl Fn(f64) -> bool) {
    let started = Instant::now();
    loop {
        if cluster.metric(node, metric).is_some_and(&done) {
            return;
        }
        assert!(
            started.elapsed() < WITHIN,
            "{metric} of node {node} stays at {:?}",
            cluster.metric(node, metric)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Appends `count` payloads of `bytes` bytes each to `default`, waits for
/// them to commit, and picks a follower: (payloads, their indexes, the
/// follower).
fn load_and_pick_a_follower(
    cluster: &Cluster,
    count: u32,
    bytes: usize,
) -> (Vec<Vec<u8>>, Vec<u64>, usize) {
    let payloads: Vec<Vec<u8>> = (0..count)
        .map(|n| format!("entry {n} {}", "x".repeat(bytes)).into_bytes())
        .collect();
    let indexes = cluster.append_each("default", &payloads);
    cluster.wait_for_commit("default", *indexes.last().unwrap(), WITHIN);
    let leader = cluster.wait_for_leader("default", WITHIN);
    (payloads, indexes, (leader + 1) % 3)
}

/// Once `victim` has found its damage: new entries (and the leader change
/// the damaged copy's term bump brings) repair it; then it is undamaged
/// and serves every entry. Returns the last index appended.
fn assert_repaired(cluster: &Cluster, victim: usize, indexes: &[u64], payloads: &[Vec<u8>]) -> u64 {
    wait_for_metric(cluster, victim, "rast_corruptions_found_total", |found| {
        found >= 1.0
    });
    // The damaged copy's term bump makes the leader step down at its
    // next answer, which an append in flight then can meet: its outcome is
    // unknown and it is not retried by the client. These entries are only
    // there to be committed in a new term, so try again until five land.
    let mut client = cluster.client();
    let mut landed = Vec::new();
    let started = Instant::now();
    while landed.len() < 5 {
        assert!(started.elapsed() < WITHIN, "appends after the damage fail");
        if let Ok(appended) = client.append("default", &[b"after".as_slice()]) {
            landed.push(appended.first_index.get());
        }
    }
    let last = *landed.last().unwrap();
    cluster.wait_for_commit("default", last, WITHIN);
    wait_for_metric(
        cluster,
        victim,
        "rast_damaged{log=\"default\"}",
        |damaged| damaged == 0.0,
    );
    let entries = cluster.read_all(victim, "default", last);
    for (n, (index, payload)) in indexes.iter().zip(payloads).enumerate() {
        assert_eq!(&entries[index], payload, "entry {n} on the repaired node");
    }
    assert_eq!(cluster.status(victim, "default").unwrap().damaged_in, 0);
    last
}

/// A byte flipped in a record of a running follower's sealed segment: the
/// scrubber finds it, the log is reopened, recovery cuts it there and marks
/// the copy damaged, and the leader sends the rest again. Every entry then
/// reads back from the follower, and `/metrics` counted it all.
#[test]
fn scrubbing_finds_damage_at_rest_and_the_leader_repairs_it() {
    let mut cluster = Cluster::start_with(
        "scrub",
        3,
        1,
        &["--segment-bytes=65536", "--scrub-bytes-per-sec=67108864"],
    );
    let (payloads, indexes, victim) = load_and_pick_a_follower(&cluster, 300, 700);

    // Flip a byte in the middle of a record of the victim's first segment
    // (sealed: later ones follow it), while the victim runs.
    let dir = cluster
        .data_dir(victim)
        .join(format!("{:016x}", LogId::from_name("default").get()));
    let segments = rast::storage::segment::segment_files(&dir);
    assert!(segments.len() >= 3, "several segments: {segments:?}");
    let (first, segment) = &segments[0];
    assert_eq!(*first, LogIndex(1));
    let bytes = std::fs::read(segment).unwrap();
    let mut records = Vec::new();
    rast::storage::record::scan(&bytes, LogIndex(1), Term::ZERO, |meta| {
        records.push(meta);
    })
    .unwrap();
    let record = records[records.len() / 2];
    let at = record.offset + u64::from(record.bytes) / 2;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(segment)
        .unwrap();
    file.write_at(&[bytes[at as usize] ^ 0x5a], at).unwrap();
    file.sync_all().unwrap();
    drop(file);

    // Found by the scrubber, cut by recovery at the reopen, repaired.
    let last = assert_repaired(&cluster, victim, &indexes, &payloads);
    assert!(cluster.metric(victim, "rast_scrub_bytes_total").unwrap() > 0.0);
    let repaired = cluster
        .metric(victim, "rast_repaired_batches_total")
        .unwrap();
    let cut = (last - record.first.get()) as f64;
    assert!(
        repaired >= 1.0,
        "the batches from the damaged one on came back from the leader ({repaired} of about {cut})"
    );
    // The healthy nodes found nothing.
    for node in (0..3).filter(|node| *node != victim) {
        assert_eq!(
            cluster.metric(node, "rast_corruptions_found_total"),
            Some(0.0),
            "node {node}"
        );
    }
    cluster.kill(victim);
}

/// A follower's hard-state file zeroed while it is down (both copies
/// gone): it restarts not knowing its term or vote, hears every other
/// voter's term before it acts, then is repaired like any damaged copy;
/// every acknowledged entry reads back from it.
#[test]
fn a_zeroed_hard_state_is_rebuilt_from_the_peers() {
    let mut cluster = Cluster::start("zeroed-hard-state", 3, 1);
    let (payloads, indexes, victim) = load_and_pick_a_follower(&cluster, 20, 10);
    assert!(cluster.terminate(victim).success());
    let file = cluster
        .data_dir(victim)
        .join(format!("{:016x}", LogId::from_name("default").get()))
        .join("hard-state");
    let length = std::fs::metadata(&file).unwrap().len() as usize;
    std::fs::write(&file, vec![0u8; length]).unwrap();

    cluster.restart(victim);
    assert_repaired(&cluster, victim, &indexes, &payloads);
    let status = cluster.status(victim, "default").unwrap();
    assert!(status.term >= 2, "a term above every term heard");
}

/// Zeroes the last record of the `default` log of `node` (stopped),
/// which must end at index `last`; returns the segment file's path.
fn zero_last_record(cluster: &Cluster, node: usize, last: u64) -> std::path::PathBuf {
    let dir = cluster
        .data_dir(node)
        .join(format!("{:016x}", LogId::from_name("default").get()));
    let segments = rast::storage::segment::segment_files(&dir);
    let (first, segment) = segments.last().unwrap();
    let bytes = std::fs::read(segment).unwrap();
    let mut records = Vec::new();
    rast::storage::record::scan(&bytes, *first, Term::ZERO, |meta| {
        records.push(meta);
    })
    .unwrap();
    let record = records.last().expect("a record in the last segment");
    assert_eq!(record.last.get(), last, "node {node}");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(segment)
        .unwrap();
    file.write_at(&vec![0; record.bytes as usize], record.offset)
        .unwrap();
    file.sync_all().unwrap();
    segment.clone()
}

/// Two of three nodes damaged at once, each having lost batches it had
/// acknowledged (its last record zeroed while it was down, under a
/// durable mark that covers it): the third node holds everything, and
/// the damaged nodes' votes, checked against the end of what each had
/// acknowledged, elect it; it repairs both. Were damaged nodes not to
/// vote at all, no leader could be elected.
#[test]
fn two_damaged_nodes_elect_the_one_that_holds_their_entries() {
    let mut cluster = Cluster::start("two-damaged", 3, 1);
    let (payloads, indexes, victim) = load_and_pick_a_follower(&cluster, 20, 10);
    let victims = [victim, (victim + 1) % 3];
    let healthy = (victim + 2) % 3;
    for node in victims {
        assert!(cluster.terminate(node).success());
        zero_last_record(&cluster, node, *indexes.last().unwrap());
    }
    for node in victims {
        cluster.restart(node);
    }
    for node in victims {
        assert_repaired(&cluster, node, &indexes, &payloads);
    }
    assert_eq!(
        cluster.metric(healthy, "rast_corruptions_found_total"),
        Some(0.0)
    );
}

/// The two nodes that acknowledged the last entries (the third was down
/// then) both lose them to damage while down: no node holds them, and the
/// damaged nodes' votes elect no one. Rather than wait for good, each
/// damaged node stops its copy of the log, saying which indexes were lost
/// and from which file (`raft::Core`, "A majority lost entries"); the
/// third node, which lags, keeps serving what it can and refuses nothing.
#[test]
fn a_majority_that_lost_committed_entries_refuses_naming_them() {
    let mut cluster = Cluster::start("majority-lost", 3, 1);
    let leader = cluster.wait_for_leader("default", WITHIN);
    let lagging = (leader + 1) % 3;
    assert!(cluster.terminate(lagging).success());
    let payloads: Vec<Vec<u8>> = (0..10).map(|n| format!("entry {n}").into_bytes()).collect();
    let indexes = cluster.append_each("default", &payloads);
    let last = *indexes.last().unwrap();
    cluster.wait_for_commit("default", last, WITHIN);
    let victims = [leader, (leader + 2) % 3];
    let mut segments = Vec::new();
    for node in victims {
        assert!(cluster.terminate(node).success());
        segments.push(zero_last_record(&cluster, node, last));
    }
    for node in [lagging, victims[0], victims[1]] {
        cluster.restart(node);
    }
    let statuses = cluster.wait_for_status("default", "refused on the damaged nodes", |status| {
        let victim = victims
            .iter()
            .any(|node| status.node_id == *node as u64 + 1);
        victim == status.failed.contains("a majority lost committed entries")
    });
    for (node, segment) in victims.iter().zip(&segments) {
        let failed = &statuses
            .iter()
            .find(|status| status.node_id == *node as u64 + 1)
            .unwrap()
            .failed;
        assert!(
            failed.contains(&format!("indexes {last}..={last}")),
            "node {node} names the lost index {last}: {failed}"
        );
        let file = segment.file_name().unwrap().to_string_lossy().into_owned();
        assert!(failed.contains(&file), "node {node} names {file}: {failed}");
    }
    let lagging_status = &statuses
        .iter()
        .find(|status| status.node_id == lagging as u64 + 1)
        .unwrap();
    assert!(lagging_status.last_index < last);
    assert_eq!(lagging_status.leader, 0, "nobody could be elected");
}
