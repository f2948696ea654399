//! Replication batching in the core: `propose` only appends, and
//! `replicate` sends each follower everything proposed since its last call
//! in as few AppendEntries as the message limits, the inflight window and
//! the per-call bound allow; a leader whose runtime never calls `replicate`
//! still replicates, through its ticks.

use rast::constants::{ACTIONS_PER_STEP_MAX, APPENDS_PER_PEER_PER_CALL_MAX, NODES_MAX};
use rast::raft::{Action, AppendRange, Config, Core, Outgoing, OutgoingBody};
use rast::types::NodeId;
use rast::wire::BatchKind;

#[path = "common/cores.rs"]
mod cores;

use cores::InstantCluster as Cluster;

impl Cluster {
    /// `nodes` voters shaped by `configure`, node 1 elected.
    fn elected(nodes: u64, configure: impl Fn(&mut Config)) -> Self {
        let mut cluster = Self::new(nodes, configure);
        cluster.elect();
        cluster
    }

    /// Runs `input` on the leader; returns the AppendEntries it sent.
    fn leader(&mut self, input: impl FnOnce(&mut Core, &mut Vec<Action>)) -> Vec<Outgoing> {
        input(&mut self.cores[0], &mut self.actions);
        assert!(
            self.actions.len() <= ACTIONS_PER_STEP_MAX,
            "{} actions in one call",
            self.actions.len()
        );
        let appends = self
            .actions
            .iter()
            .filter_map(|action| match action {
                Action::Send(message) if matches!(message.body, OutgoingBody::AppendEntries(_)) => {
                    Some(*message)
                }
                _ => None,
            })
            .collect();
        self.route(0);
        appends
    }

    /// Proposes a one-entry batch of `bytes` at the leader; asserts that
    /// nothing is sent for it yet.
    fn propose(&mut self, bytes: u32) {
        let sent = self.leader(|core, actions| {
            core.propose(BatchKind::Data, 1, bytes, actions)
                .expect("the leader accepts");
        });
        assert!(sent.is_empty(), "propose sends nothing: {sent:?}");
    }

    /// Everything the leader holds is committed.
    fn all_committed(&self) -> bool {
        self.cores[0].commit_index() == self.cores[0].log().last_index()
    }
}

fn range_of(message: &Outgoing) -> AppendRange {
    match message.body {
        OutgoingBody::AppendEntries(range) => range,
        _ => unreachable!("only AppendEntries are collected"),
    }
}

/// N proposals with the window open, then one `replicate`: exactly one
/// AppendEntries per follower, carrying all N batches; and they commit.
#[test]
fn proposals_of_one_turn_leave_as_one_append_entries_per_peer() {
    for proposals in [1u64, 2, 5, 17, 64] {
        let mut cluster = Cluster::elected(3, |_| {});
        let first = cluster.cores[0].log().last_index().next();
        for _ in 0..proposals {
            cluster.propose(200);
        }
        let sent = cluster.leader(Core::replicate);
        assert_eq!(sent.len(), 2, "{proposals} proposals: {sent:?}");
        for (message, follower) in sent.iter().zip([NodeId(2), NodeId(3)]) {
            let range = range_of(message);
            assert_eq!(message.to, follower);
            assert_eq!(u64::from(range.batches), proposals);
            assert_eq!(range.first_index, first);
            assert_eq!(range.last_index, cluster.cores[0].log().last_index());
        }
        assert!(
            cluster.leader(Core::replicate).is_empty(),
            "a second call has nothing left to send"
        );
        cluster.drain();
        assert!(cluster.all_committed(), "{proposals} proposals committed");
    }
}

/// The message limits and window of one case.
#[derive(Clone, Copy, Debug)]
struct Limits {
    batches_max: usize,
    bytes_max: u64,
    inflight: usize,
}

/// Proposals beyond the message limits split into more AppendEntries, each
/// within the batch and byte limits (a single larger batch excepted), each
/// full but the last (as few as the limits allow), never more than
/// `APPENDS_PER_PEER_PER_CALL_MAX` per peer and call nor more than the
/// inflight window before an acknowledgement; repeated `replicate` calls
/// send the rest, and the acknowledgements the window waits for.
#[test]
fn proposals_beyond_the_message_limits_split_within_them() {
    for batches_max in [1usize, 2, 3, 7] {
        for bytes_max in [250u64, 700, 1 << 20] {
            for inflight in [1usize, 3, 64] {
                for proposals in [1u32, 2, 4, 9, 20] {
                    let limits = Limits {
                        batches_max,
                        bytes_max,
                        inflight,
                    };
                    split_within_limits(limits, proposals);
                }
            }
        }
    }
}

/// One case of `proposals_beyond_the_message_limits_split_within_them`.
fn split_within_limits(limits: Limits, proposals: u32) {
    let mut cluster = Cluster::elected(3, |config| {
        config.append_message_batches_max = limits.batches_max;
        config.append_message_bytes_max = limits.bytes_max;
        config.inflight_messages_max = limits.inflight;
    });
    let case = format!("{limits:?}, {proposals} proposals");
    let start = cluster.cores[0].log().last_index();
    // Sizes 100, 200, 300, 100, ...: some batches alone exceed the
    // smallest byte limit.
    for proposal in 0..proposals {
        cluster.propose(100 * (proposal % 3 + 1));
    }
    let last = cluster.cores[0].log().last_index();
    let mut sent_to: [Vec<AppendRange>; 2] = [Vec::new(), Vec::new()];
    loop {
        let sent = cluster.leader(Core::replicate);
        if sent.is_empty() {
            break;
        }
        for (ranges, to) in sent_to.iter_mut().zip([NodeId(2), NodeId(3)]) {
            let before = ranges.len();
            ranges.extend(sent.iter().filter(|message| message.to == to).map(range_of));
            assert!(
                ranges.len() - before <= APPENDS_PER_PEER_PER_CALL_MAX,
                "{case}"
            );
        }
    }
    for ranges in &sent_to {
        assert!(ranges.len() <= limits.inflight, "{case}: window exceeded");
        let mut previous = start;
        for (position, range) in ranges.iter().enumerate() {
            assert_eq!(range.prev_index, previous, "{case}: contiguous");
            assert!(range.batches as usize <= limits.batches_max, "{case}");
            assert!(
                range.batches == 1 || range.bytes <= limits.bytes_max,
                "{case}"
            );
            if let Some(next) = ranges.get(position + 1) {
                let next_batch = cluster.cores[0]
                    .log()
                    .batch_at(next.first_index)
                    .expect("in the log");
                assert!(
                    range.batches as usize == limits.batches_max
                        || range.bytes + u64::from(next_batch.bytes) > limits.bytes_max,
                    "{case}: message {position} could have held more"
                );
            }
            previous = range.last_index;
        }
        if ranges.len() < limits.inflight {
            assert_eq!(previous, last, "{case}: the window was open");
        }
    }
    cluster.drain();
    assert!(cluster.all_committed(), "{case}: committed");
}

/// A leader whose runtime never calls `replicate` still replicates: its
/// proposals stay unsent (and uncommitted) until its next tick, even one
/// short of a heartbeat, which sends them as one AppendEntries per peer.
#[test]
fn a_leader_never_told_to_replicate_replicates_on_its_ticks() {
    let mut cluster = Cluster::elected(3, |_| {});
    for _ in 0..5 {
        cluster.propose(200);
    }
    cluster.drain();
    assert!(!cluster.all_committed(), "nothing sent, nothing committed");
    let sent = cluster.leader(|core, actions| core.tick(1, actions));
    assert_eq!(sent.len(), 2, "one message per follower: {sent:?}");
    assert!(sent.iter().all(|message| range_of(message).batches == 5));
    cluster.drain();
    assert!(
        cluster.all_committed(),
        "the tick's messages committed them"
    );
}

/// With the most peers a group may have and one batch per message, a
/// `replicate` and a heartbeat tick that also sends the unsent proposals
/// stay within the core's bound on actions per call (checked by `leader`).
#[test]
fn replicate_and_tick_stay_within_the_action_bound() {
    let mut cluster = Cluster::elected(NODES_MAX as u64, |config| {
        config.append_message_batches_max = 1;
    });
    for _ in 0..50 {
        cluster.propose(100);
    }
    let sent = cluster.leader(Core::replicate);
    assert_eq!(sent.len(), (NODES_MAX - 1) * APPENDS_PER_PEER_PER_CALL_MAX);
    let heartbeat_ms = cluster.cores[0].config().interval_ms_heartbeat;
    let sent = cluster.leader(|core, actions| core.tick(heartbeat_ms, actions));
    assert_eq!(sent.len(), (NODES_MAX - 1) * APPENDS_PER_PEER_PER_CALL_MAX);
    cluster.drain();
    assert!(cluster.all_committed(), "acknowledgements sent the rest");
}
