//! Membership changes on real `rast serve` processes over loopback.
//!
//! A live 3-node cluster under a light append load and key-value clients
//! grows to 5 (each new node started with `--join`, added as a learner to
//! both logs, promoted once caught up), a joined node is restarted and
//! takes leadership (so it recovered the configuration from its log), then
//! the cluster shrinks back to 3 by removing a follower and then the
//! leader. At the end no acknowledged append is lost, every remaining
//! node's log is identical up to the commit index, and the key-value
//! history is linearizable. Every wait is a condition with a deadline.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Cluster;
use rast::check::history::History;
use rast::check::linearizable::KvOp;
use rast::client::{Client, ClientOptions};
use rast::wire::client::{AdminRequest, Members, ResponseBody};

const WITHIN: Duration = Duration::from_secs(30);

/// Sends an admin request for `log` to its leader; the answer must be the
/// resulting configuration.
fn admin_on(cluster: &Cluster, log: &str, request: &AdminRequest) -> Members {
    let mut client = cluster.client();
    match client.admin_on(log, request.clone()) {
        Ok(ResponseBody::Members(members)) => members,
        other => panic!("{log}: {request:?}: {other:?}"),
    }
}

/// Applies a change to both logs (each is its own group); returns the
/// `default` log's resulting configuration after checking the `kv` log's
/// voters and learners are the same.
fn admin(cluster: &Cluster, request: &AdminRequest) -> Members {
    let members = admin_on(cluster, "default", request);
    let kv = admin_on(cluster, "kv", request);
    let sorted = |ids: &[u64]| {
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids
    };
    assert_eq!(sorted(&kv.voters), sorted(&members.voters), "{kv:?}");
    assert_eq!(sorted(&kv.learners), sorted(&members.learners), "{kv:?}");
    members
}

/// Polls `condition` until it holds; fails after `within`.
fn wait_until(what: &str, within: Duration, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The node among `voters` that leads `log`, and its commit index.
fn leader_commit(cluster: &Cluster, voters: &[usize], log: &str) -> (usize, u64) {
    let mut found = None;
    wait_until("a leader among the voters", WITHIN, || {
        found = voters.iter().find_map(|node| {
            cluster
                .status(*node, log)
                .filter(|status| status.role == "leader")
                .map(|status| (*node, status.commit_index))
        });
        found.is_some()
    });
    found.expect("found above")
}

/// Acknowledged appends: (index, payload).
type Acknowledged = Arc<Mutex<Vec<(u64, Vec<u8>)>>>;

/// A light load: one append in flight, recorded when acknowledged, until
/// `stop`.
fn start_appender(
    cluster: &Cluster,
    stop: &Arc<AtomicBool>,
    acknowledged: &Acknowledged,
) -> std::thread::JoinHandle<()> {
    let (stop, acknowledged) = (Arc::clone(stop), Arc::clone(acknowledged));
    let addresses = cluster.addresses.clone();
    std::thread::spawn(move || {
        let options = ClientOptions {
            deadline: Duration::from_secs(20),
            timeout: Duration::from_secs(5),
            ..ClientOptions::default()
        };
        let mut client = Client::new(&addresses, options.clone()).unwrap();
        let mut sequence = 0u64;
        while !stop.load(Ordering::Relaxed) {
            sequence += 1;
            let payload = format!("entry-{sequence}").into_bytes();
            match client.append("default", &[payload.as_slice()]) {
                Ok(appended) => acknowledged
                    .lock()
                    .unwrap()
                    .push((appended.first_index.get(), payload)),
                // Outcome unknown (a leader removed mid-append): not
                // acknowledged, so not checked; start afresh.
                Err(_) => client = Client::new(&addresses, options.clone()).unwrap(),
            }
        }
    })
}

/// Starts a node with `--join`, adds it as a learner, waits until it has
/// caught up, promotes it; checks each answer.
fn join_and_promote(cluster: &mut Cluster) {
    let node = cluster.join();
    let id = node as u64 + 1;
    let address = cluster.addresses[node].clone();
    let members = admin(cluster, &AdminRequest::AddLearner { id, address });
    assert!(members.learners.contains(&id), "{members:?}");
    assert!(!members.voters.contains(&id), "{members:?}");
    let voters: Vec<usize> = members.voters.iter().map(|v| *v as usize - 1).collect();
    for log in ["default", "kv"] {
        let (_, target) = leader_commit(cluster, &voters, log);
        wait_until("the learner caught up", WITHIN, || {
            cluster
                .status(node, log)
                .is_some_and(|status| status.commit_index >= target)
        });
    }
    let members = admin(cluster, &AdminRequest::Promote(id));
    assert!(members.voters.contains(&id), "{members:?}");
    assert!(members.voters_outgoing.is_empty(), "{members:?}");
    assert!(members.learners.is_empty(), "{members:?}");
    assert!(
        members.addresses.iter().any(|(known, _)| *known == id),
        "{members:?}"
    );
}

/// Restarts joined node `node` from its disk and hands it leadership: it
/// can lead only if it recovered the configuration from its log (it
/// started outside every one). Its answer to `members` is its own view.
fn restart_and_lead(cluster: &mut Cluster, node: usize) {
    cluster.kill(node);
    cluster.restart(node);
    let id = node as u64 + 1;
    wait_until("the restarted node takes leadership", WITHIN, || {
        let mut client = cluster.client();
        client
            .admin_on("default", AdminRequest::TransferLeader(id))
            .is_ok()
    });
    wait_until("the restarted node leads", WITHIN, || {
        cluster
            .status(node, "default")
            .is_some_and(|status| status.role == "leader")
    });
    let members = admin(cluster, &AdminRequest::Members);
    assert_eq!(
        members.voters.len(),
        5,
        "node {id}'s configuration: {members:?}"
    );
}

/// Removes a follower, then the leader; returns the remaining voters.
fn shrink(cluster: &Cluster) -> Vec<usize> {
    let leader = cluster.wait_for_leader("default", WITHIN);
    let follower = (0..3).find(|node| *node != leader).expect("a follower");
    let members = admin(cluster, &AdminRequest::Remove(follower as u64 + 1));
    assert_eq!(members.voters.len(), 4, "{members:?}");
    assert!(!members.voters.contains(&(follower as u64 + 1)));
    let members = admin(cluster, &AdminRequest::Remove(leader as u64 + 1));
    assert_eq!(members.voters.len(), 3, "{members:?}");
    assert!(!members.voters.contains(&(leader as u64 + 1)));
    assert!(members.voters_outgoing.is_empty(), "{members:?}");
    members.voters.iter().map(|v| *v as usize - 1).collect()
}

/// Every remaining node holds the same log up to the commit index, and
/// every acknowledged append is in it at its index.
fn check_logs(cluster: &Cluster, remaining: &[usize], acknowledged: &[(u64, Vec<u8>)]) {
    let last = acknowledged.iter().map(|(index, _)| *index).max().unwrap();
    let mut commits = Vec::new();
    wait_until(
        "every remaining voter committed the last ack",
        WITHIN,
        || {
            commits = remaining
                .iter()
                .filter_map(|node| cluster.status(*node, "default"))
                .map(|status| status.commit_index)
                .collect();
            commits.len() == remaining.len() && commits.iter().all(|commit| *commit >= last)
        },
    );
    let commit = commits.iter().copied().min().expect("three voters");
    let logs: Vec<BTreeMap<u64, Vec<u8>>> = remaining
        .iter()
        .map(|node| cluster.read_all(*node, "default", commit))
        .collect();
    // The log's own entries (no-ops, configurations) are not read: the
    // indexes have gaps, the same on every node.
    for (position, log) in logs.iter().enumerate() {
        assert!(
            log.keys().next_back().is_some_and(|last| *last <= commit),
            "node {}",
            remaining[position] + 1
        );
        assert_eq!(log, &logs[0], "node {} differs", remaining[position] + 1);
    }
    for (index, payload) in acknowledged {
        assert_eq!(logs[0].get(index), Some(payload), "acknowledged {index}");
    }
}

/// Grows a loaded cluster from 3 to 5 voters, restarts a joined node and
/// makes it lead, shrinks back to 3 (the leader removed last); then every
/// acknowledged append is in every remaining log, identical everywhere.
#[test]
fn grow_to_five_and_shrink_to_three_under_load() {
    let mut cluster = Cluster::start("membership", 3, 1);
    cluster.wait_for_leader("default", WITHIN);
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Acknowledged::default();
    let appender = start_appender(&cluster, &stop, &acknowledged);
    let history = Arc::new(Mutex::new(History::<KvOp>::default()));
    let kv_stop = Arc::clone(&stop);
    let kv_workers = common::kv_history::spawn_workers(
        &cluster.addresses,
        3,
        3,
        &history,
        Instant::now(),
        move || !kv_stop.load(Ordering::Relaxed),
    );
    let acked = || acknowledged.lock().unwrap().len();
    wait_until("first appends acknowledged", WITHIN, || acked() >= 20);

    join_and_promote(&mut cluster);
    join_and_promote(&mut cluster);
    let members = admin(&cluster, &AdminRequest::Members);
    assert_eq!(members.voters.len(), 5, "{members:?}");

    restart_and_lead(&mut cluster, 4);

    let remaining = shrink(&cluster);
    // The smaller cluster still commits.
    let before = acked();
    wait_until("appends after the shrink", WITHIN, || {
        acked() >= before + 20
    });
    stop.store(true, Ordering::Relaxed);
    appender.join().unwrap();
    for worker in kv_workers {
        worker.join().unwrap();
    }
    common::kv_history::check(&history.lock().unwrap(), 20);

    let acknowledged = acknowledged.lock().unwrap();
    assert!(
        acknowledged.len() >= 40,
        "{} acknowledged",
        acknowledged.len()
    );
    check_logs(&cluster, &remaining, &acknowledged);
    check_cli(&cluster, &remaining);
}

/// `rast admin members` prints the configuration; a refused change exits
/// non-zero with the reason.
fn check_cli(cluster: &Cluster, remaining: &[usize]) {
    let addresses: Vec<&str> = remaining
        .iter()
        .map(|node| cluster.addresses[*node].as_str())
        .collect();
    let run = |arguments: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_rast"))
            .args([
                "admin",
                "--cluster",
                &addresses.join(","),
                "--timeout-seconds",
                "10",
            ])
            .args(arguments)
            .output()
            .unwrap()
    };
    let members = run(&["members"]);
    let stdout = String::from_utf8_lossy(&members.stdout);
    assert!(members.status.success(), "{members:?}");
    let voters: Vec<String> = remaining
        .iter()
        .map(|node| (node + 1).to_string())
        .collect();
    assert!(
        stdout.contains(&format!("voters: [{}]", voters.join(", "))),
        "{stdout}"
    );
    let refused = run(&["remove", "42"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{refused:?}");
    assert!(stderr.contains("node 42 is not a member"), "{stderr}");
}
