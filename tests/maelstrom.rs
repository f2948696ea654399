//! The Maelstrom harness against real `rast-maelstrom` processes: lin-kv
//! clients on 3 and 5 nodes through a network that drops, delays and
//! partitions, every history checked for linearizability; and a cas retried
//! across a leader crash, applied exactly once.
//!
//! Replay a run's faults with `RAST_MAELSTROM_SEED=<seed>` (the processes'
//! timing is not replayed). The tests run one at a time: they share the
//! machine's cores with the nodes' timers.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rast::check::linearizable::{FailedCas, ReferenceLimits, check_kv_reference};
use rast::maelstrom::harness::{self, Options};

/// Keys beyond these are left to our own checker alone (the reference
/// search has no budget).
const REFERENCE_LIMITS: ReferenceLimits = ReferenceLimits {
    calls_max: 400,
    unknown_max: 8,
};

/// One harness at a time: elections are timed, and the nodes of two runs
/// would compete for two cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Each test must finish well under this (the bound is 60 s).
const RUN_TIME_MAX: Duration = Duration::from_secs(40);

fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rast-maelstrom"))
}

fn seed(default: u64) -> u64 {
    std::env::var("RAST_MAELSTROM_SEED")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(default)
}

fn lin_kv_with_faults(nodes: usize, default_seed: u64) {
    let _guard = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let seed = seed(default_seed);
    let options = Options::faulty(binary(), nodes, seed);
    let report = harness::run(&options).unwrap_or_else(|error| panic!("seed {seed}: {error}"));
    eprintln!(
        "lin-kv {nodes} nodes, seed {seed}: {} ok, {} failed, {} unknown ({} ok after the heal), \
         {} partitions, network {:?}, checked {} keys in {} steps, {:.1} s",
        report.ok,
        report.failed,
        report.unknown,
        report.ok_after_heal,
        report.partitions,
        report.network,
        report.search.keys,
        report.search.steps,
        report.elapsed.as_secs_f64(),
    );
    if !report.search.verdict.is_linearizable() {
        let text = report.history.to_text().unwrap_or_default();
        let path = std::env::temp_dir().join(format!("rast-maelstrom-{nodes}-{seed}.history"));
        let _ = std::fs::write(&path, text);
        panic!(
            "seed {seed}: key {:?}: {} (history in {})",
            report.search.key,
            report.search.verdict,
            path.display()
        );
    }
    // A second, independent opinion: the reference checker (todc-utils'
    // WGL, no budget, none of our prunings) on every key small enough for
    // its exponential search.
    let started = Instant::now();
    let reference = check_kv_reference(
        &report.history.operations(),
        FailedCas::CompareMismatch,
        REFERENCE_LIMITS,
    );
    eprintln!(
        "reference checker: linearizable {}, {} keys checked, {} skipped ({REFERENCE_LIMITS:?}), \
         {:.1} s",
        reference.linearizable,
        reference.keys_checked,
        reference.keys_skipped,
        started.elapsed().as_secs_f64()
    );
    assert!(
        reference.linearizable,
        "the reference checker disagrees: {reference:?}"
    );
    assert!(reference.keys_checked > 0, "{reference:?}");
    assert!(report.partitions > 0, "the nemesis partitioned the network");
    assert!(report.network.lost > 0 && report.network.cut > 0);
    assert!(report.ok > 50, "too little got done: {} ok", report.ok);
    assert!(report.ok_after_heal > 0, "no progress after the heal");
    assert!(report.elapsed < RUN_TIME_MAX, "took {:?}", report.elapsed);
}

/// Three nodes, 5% loss, up to 20 ms delay, a partition or heal every
/// 0.5-1.5 s for 8 s, then 3 s healthy: the history is linearizable and
/// the cluster makes progress after the heal.
#[test]
fn lin_kv_three_nodes_with_faults() {
    lin_kv_with_faults(3, 3);
}

/// The same with five nodes (minorities of one or two).
#[test]
fn lin_kv_five_nodes_with_faults() {
    lin_kv_with_faults(5, 5);
}

/// A cas whose reply is lost when the leader is SIGKILLed right after
/// applying it, retried with the same session and sequence at the
/// survivors, is answered cas_ok (applied once) and the value is the cas's;
/// the same drop-and-retry without a session gets 22, which shows the test
/// can tell.
#[test]
fn cas_retried_across_leader_crash_is_applied_once() {
    let _guard = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let started = Instant::now();
    let report = harness::cas_retry_across_leader_crash(&binary(), seed(11)).unwrap();
    eprintln!("{report:?} in {:.1} s", started.elapsed().as_secs_f64());
    assert_eq!(report.retry_without_session["code"], 22, "{report:?}");
    assert_eq!(report.retry_answer["type"], "cas_ok", "{report:?}");
    assert_eq!(report.value_after, 1, "{report:?}");
    assert!(started.elapsed() < RUN_TIME_MAX);
}

/// The check can fail: the same faulty run with reads served from each
/// node's local copy (`"stale": true`, the `--stale` read) is caught as not
/// linearizable: a node cut off by a partition answers old values while
/// the majority moves on.
#[test]
fn stale_reads_are_caught() {
    let _guard = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let seed = seed(7);
    let mut options = Options::faulty(binary(), 3, seed);
    options.stale_reads = true;
    let report = harness::run(&options).unwrap_or_else(|error| panic!("seed {seed}: {error}"));
    eprintln!(
        "stale reads, seed {seed}: {} ok, {} partitions: {}",
        report.ok, report.partitions, report.search.verdict
    );
    assert!(
        report.search.verdict.is_violation(),
        "seed {seed}: stale reads passed as linearizable"
    );
    let reference = check_kv_reference(
        &report.history.operations(),
        FailedCas::CompareMismatch,
        REFERENCE_LIMITS,
    );
    assert!(
        !reference.linearizable,
        "seed {seed}: the reference checker passed stale reads: {reference:?}"
    );
}
