//! The core's side of snapshots: installing a leader's snapshot keeps a
//! matching log suffix (entries this node may have acknowledged) and
//! discards a conflicting one, and never reports the installed entries for
//! apply; and a node that started outside every configuration knows the
//! configuration as of an index only once a configuration entry committed.
//! Also: a follower drops, without panicking or changing its log, an
//! AppendEntries no honest leader sends.

use rast::raft::{
    Action, AppendEntries, BatchSummary, Body, Boundary, Config, Core, HardState, Heartbeat,
    Membership, Message, Restart, SnapshotInstall,
};
use rast::types::{LogIndex, NodeId, Term};
use rast::wire::BatchKind;

/// A follower (node 1 of 3) holding batches of two entries each, 1..=10,
/// all of term 1, durable; it follows leader 2 in term 1.
fn follower() -> Core {
    let membership = Membership::with_voters(&[NodeId(1), NodeId(2), NodeId(3)]).expect("voters");
    let batches: Vec<Boundary> = (0..5)
        .map(|batch| Boundary {
            term: Term(1),
            first_index: LogIndex(1 + 2 * batch),
            count: 2,
            bytes: 100,
            kind: BatchKind::Data,
            batches: 1,
        })
        .collect();
    let restart = Restart {
        hard_state: HardState {
            term: Term(1),
            vote: NodeId(2),
            commit: LogIndex::ZERO,
            damaged_in: Term::ZERO,
            acked_end: None,
        },
        snapshot_index: LogIndex::ZERO,
        snapshot_term: Term::ZERO,
        membership,
        batches: &batches,
        now_ms: 0,
    };
    let mut core = Core::new(Config::new(NodeId(1), 7), &restart);
    let mut actions = Vec::new();
    let heartbeat = Message {
        from: NodeId(2),
        to: NodeId(1),
        term: Term(1),
        body: Body::Heartbeat(Heartbeat {
            leader_commit: LogIndex(2),
            read_round: 0,
        }),
    };
    core.step(&heartbeat, &mut actions);
    assert_eq!(core.leader(), NodeId(2));
    assert_eq!(core.commit_index(), LogIndex(2));
    core
}

/// Installs a snapshot up to `index` of `term`; asserts that no `Apply`
/// covers the installed entries (the state machine loads them instead).
fn install_without_apply(core: &mut Core, index: LogIndex, term: Term, membership: Membership) {
    let mut actions = Vec::new();
    core.snapshot_installed(index, term, membership, &mut actions);
    assert!(
        !actions
            .iter()
            .any(|action| matches!(action, Action::Apply { .. })),
        "{actions:?}"
    );
}

/// A snapshot whose last entry this node holds (same index and term) drops
/// only the prefix: the entries after it stay, commit moves to the
/// snapshot, and no `Apply` covers the installed entries (regression: the
/// log was always reset, losing entries the node had acknowledged, which
/// the simulator caught as a committed entry durable on a minority).
#[test]
fn matching_snapshot_keeps_the_log_after_it() {
    let mut core = follower();
    let membership = *core.membership();
    assert_eq!(
        core.snapshot_install(LogIndex(6), Term(1)),
        SnapshotInstall::KeepLog
    );
    install_without_apply(&mut core, LogIndex(6), Term(1), membership);
    assert_eq!(core.commit_index(), LogIndex(6));
    assert_eq!(core.log().snapshot_index(), LogIndex(6));
    assert_eq!(core.log().last_index(), LogIndex(10));
    core.check();
}

/// A snapshot whose last entry conflicts with the log (another term)
/// replaces the whole log; an old snapshot is ignored.
#[test]
fn conflicting_snapshot_resets_the_log_and_old_ones_are_ignored() {
    let mut core = follower();
    let membership = *core.membership();
    assert_eq!(
        core.snapshot_install(LogIndex(2), Term(1)),
        SnapshotInstall::Ignore
    );
    assert_eq!(
        core.snapshot_install(LogIndex(6), Term(2)),
        SnapshotInstall::ResetLog
    );
    install_without_apply(&mut core, LogIndex(6), Term(2), membership);
    assert_eq!(core.commit_index(), LogIndex(6));
    assert_eq!(core.log().last_index(), LogIndex(6));
    assert_eq!(core.log().last_term(), Term(2));
    core.check();
}

/// A node started outside every configuration (a spare or `--join` node,
/// with an empty membership) that replicates the log from index 1 does not
/// know the configuration as of the indexes before the entry that added
/// it: the configuration in force there (the initial one) is in no entry
/// it holds. `membership_at` says so (`None`), so no snapshot records the
/// empty configuration; once the configuration entry commits, it is known
/// from that entry on. Regression: `membership_at` answered the empty
/// configuration, which the simulator caught as a snapshot with no voter.
#[test]
fn node_started_outside_knows_no_configuration_before_one_commits() {
    let added = Membership::with_voters(&[NodeId(1), NodeId(2), NodeId(3)]).expect("voters");
    let batch = |first: u64, count: u32, kind: BatchKind| Boundary {
        term: Term(1),
        first_index: LogIndex(first),
        count,
        bytes: 100,
        kind,
        batches: 1,
    };
    let batches = [
        batch(1, 2, BatchKind::Data),
        batch(3, 2, BatchKind::Data),
        batch(5, 1, BatchKind::Config),
        batch(6, 2, BatchKind::Data),
    ];
    let restart = Restart {
        hard_state: HardState {
            term: Term(1),
            vote: NodeId::ZERO,
            commit: LogIndex::ZERO,
            damaged_in: Term::ZERO,
            acked_end: None,
        },
        snapshot_index: LogIndex::ZERO,
        snapshot_term: Term::ZERO,
        membership: Membership::default(),
        batches: &batches,
        now_ms: 0,
    };
    let mut core = Core::new(Config::new(NodeId(3), 7), &restart);
    core.restore_configs(&[(LogIndex(5), added)]);
    let commit_to = |core: &mut Core, leader_commit: u64| {
        let heartbeat = Message {
            from: NodeId(2),
            to: NodeId(3),
            term: Term(1),
            body: Body::Heartbeat(Heartbeat {
                leader_commit: LogIndex(leader_commit),
                read_round: 0,
            }),
        };
        core.step(&heartbeat, &mut Vec::new());
        assert_eq!(core.commit_index(), LogIndex(leader_commit));
    };
    commit_to(&mut core, 4);
    assert_eq!(core.membership_at(LogIndex(4)), None);
    assert_eq!(core.membership_at(LogIndex(2)), None);
    commit_to(&mut core, 7);
    assert_eq!(core.membership_at(LogIndex(4)), None);
    assert_eq!(core.membership_at(LogIndex(5)), Some(added));
    assert_eq!(core.membership_at(LogIndex(7)), Some(added));
    assert_eq!(core.membership_at(LogIndex(8)), None);
    core.check();
}

/// An AppendEntries from leader 2 in term 2 after `prev` (of term 1).
fn append(prev: u64, batches: &[BatchSummary]) -> Message<'_> {
    Message {
        from: NodeId(2),
        to: NodeId(1),
        term: Term(2),
        body: Body::AppendEntries(AppendEntries {
            prev_index: LogIndex(prev),
            prev_term: Term(1),
            leader_commit: LogIndex(2),
            batches,
            configs: &[],
        }),
    }
}

/// AppendEntries that no honest leader sends — a conflict at a committed
/// index, a conflict inside one of the follower's batches, a batch across
/// its last entry — are dropped: no panic, no answer, the log unchanged.
#[test]
fn appends_no_honest_leader_sends_are_dropped() {
    let summary = |first: u64, term: u64, count: u32| BatchSummary {
        term: Term(term),
        first_index: LogIndex(first),
        count,
        bytes: 100,
        kind: BatchKind::Data,
    };
    let cases: [(&str, u64, Vec<BatchSummary>); 3] = [
        ("conflict at a committed index", 0, vec![summary(1, 2, 2)]),
        (
            "conflict inside a batch",
            2,
            vec![summary(3, 1, 1), summary(4, 2, 2)],
        ),
        ("a batch across the last entry", 8, vec![summary(9, 1, 3)]),
    ];
    for (case, prev, batches) in cases {
        let mut core = follower();
        let before = (core.log().last_index(), core.log().last_term());
        let mut actions = Vec::new();
        core.step(&append(prev, &batches), &mut actions);
        assert!(
            !actions.iter().any(|action| matches!(
                action,
                Action::Truncate { .. } | Action::AppendReceived { .. } | Action::Send(_)
            )),
            "{case}: {actions:?}"
        );
        assert_eq!(
            (core.log().last_index(), core.log().last_term()),
            before,
            "{case}"
        );
        core.check();
    }
}
