//! The checkers can fail: each test plants one known Raft bug in every node
//! and asserts the simulator catches it within a bounded number of seeds.
//!
//! Run with `cargo test --features planted-bugs --test planted_bugs`.

use rast::raft::PlantedBug;
use rast::sim::{Options, run};

/// Seeds tried per bug before the test gives up (each run is about a
/// millisecond; the bugs below are caught far sooner).
const SEEDS_MAX: u64 = 3_000;

/// Runs seeds with `bug` planted until one fails; returns that seed and the
/// violated property.
fn first_catch(bug: PlantedBug) -> Option<(u64, String)> {
    (0..SEEDS_MAX).find_map(|seed| {
        let mut options = Options::for_seed(seed);
        options.planted_bug = Some(bug);
        let outcome = std::panic::catch_unwind(|| run(seed, &options));
        match outcome {
            Ok(Ok(_)) => None,
            Ok(Err(failure)) => Some((seed, failure.to_string())),
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_string()))
                    .unwrap_or_default();
                Some((seed, format!("seed {seed} panicked: {message}")))
            }
        }
    })
}

fn assert_caught(bug: PlantedBug) {
    match first_catch(bug) {
        Some((seed, failure)) => println!("{bug:?} caught at seed {seed}: {failure}"),
        None => panic!("{bug:?} not caught in {SEEDS_MAX} seeds"),
    }
}

/// Committing an earlier term's entry by counting replicas (figure 8).
#[test]
fn catches_commit_of_previous_term_by_counting() {
    assert_caught(PlantedBug::CommitPreviousTermByCounting);
}

/// Granting a vote without the up-to-date-log check.
#[test]
fn catches_vote_without_log_check() {
    assert_caught(PlantedBug::VoteWithoutLogCheck);
}

/// Acknowledging entries before they are durable.
#[test]
fn catches_acknowledge_before_durable() {
    assert_caught(PlantedBug::AcknowledgeBeforeDurable);
}

/// Forgetting the vote on restart.
#[test]
fn catches_forgotten_vote_on_restart() {
    assert_caught(PlantedBug::ForgetVoteOnRestart);
}

/// A node whose storage lost entries it acknowledged voting on its cut
/// log, not on the end of what it acknowledged: an election passes a
/// committed entry by.
#[test]
fn catches_a_damaged_node_voting() {
    assert_caught(PlantedBug::VoteWhileDamaged);
}

/// A node that lost its hard state voting and acknowledging at once, from
/// its log's last term: it votes a second time in a term it voted in, or
/// takes a leader its majority counted on it refusing.
#[test]
fn catches_a_node_acting_on_a_lost_hard_state() {
    assert_caught(PlantedBug::ActOnLostHardState);
}

/// Recovery cutting a damaged tail, entries this node acknowledged among
/// them, without marking the node damaged: it votes for a log without
/// them, and a committed entry is lost.
#[test]
fn catches_a_cut_without_the_damage_mark() {
    assert_caught(PlantedBug::CutWithoutMark);
}

/// The key-value runtime applying a retried request again (no session
/// check): a retry of a write that was committed and applied, but not
/// answered, takes effect twice.
#[test]
fn catches_double_apply_of_a_retried_request() {
    assert_caught(PlantedBug::DoubleApply);
}

/// The independent checker alone catches the double apply too: the
/// history check runs `check::linearizable::check_kv` before the
/// simulator's own count of each request's effects, so a failure reported
/// as a linearizability violation is the independent checker's.
#[test]
fn check_kv_catches_double_apply() {
    let caught = (0..SEEDS_MAX).find_map(|seed| {
        let mut options = Options::for_seed(seed);
        options.planted_bug = Some(PlantedBug::DoubleApply);
        match run(seed, &options) {
            Err(failure) if failure.violation.property.starts_with("kv linearizability") => {
                Some(failure.to_string())
            }
            _ => None,
        }
    });
    match caught {
        Some(failure) => println!("check_kv caught DoubleApply: {failure}"),
        None => panic!("check_kv did not catch DoubleApply in {SEEDS_MAX} seeds"),
    }
}
