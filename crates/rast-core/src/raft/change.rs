//! Membership changes: which configuration comes next, and which steps are
//! allowed at all.
//!
//! Why joint consensus for every voter change (Raft thesis §4.3, etcd's
//! `confchange`): switching straight from one set of voters to another can
//! let two disjoint majorities exist at the same time. A joint configuration
//! (`voters` = the new set, `voters_outgoing` = the old one) decides only
//! with a majority of *each*, so no decision can be made by the old set
//! alone once the joint entry is in force, nor by the new set alone before
//! the old set agreed. The leader leaves the joint configuration (proposes
//! `voters` alone) as soon as the joint entry commits.
//!
//! The steps a change takes:
//!
//! ```text
//!   add learner L     {V, learners}          → {V, learners + L}          (one step)
//!   remove learner L  {V, learners}          → {V, learners - L}          (one step)
//!   promote L         {V, learners}          → {V + L | V, learners - L}  (joint) → {V + L}
//!   remove voter X    {V, learners}          → {V - X | V, learners}      (joint) → {V - X}
//!   replace X by L    {V, learners}          → {V - X + L | V, learners - L} (joint) → {V - X + L}
//! ```
//!
//! Rules (each refusal is a [`ChangeError`]):
//! * at most one configuration entry is uncommitted at a time (a change
//!   starts only from a committed, simple configuration; the one step
//!   allowed from a joint configuration is leaving it);
//! * a learner is promoted only when caught up: its match index within
//!   the configured lag (by default
//!   [`PROMOTE_LAG_ENTRIES_MAX`](crate::constants::PROMOTE_LAG_ENTRIES_MAX)) of the
//!   leader's last index;
//! * a change never leaves the configuration without a voter.
//!
//! Everything here is pure: the core supplies what it knows (configuration,
//! progress) and proposes the result.

use crate::constants::NODES_MAX;
use crate::raft::quorum::{Membership, NodeSet};
use crate::types::{LogIndex, NodeId};

/// A requested membership change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Add a node that receives the log but does not vote.
    AddLearner(NodeId),
    /// Make a caught-up learner a voter (through a joint configuration).
    Promote(NodeId),
    /// Remove a node: a learner at once, a voter through a joint
    /// configuration.
    Remove(NodeId),
    /// Promote caught-up learner `add` and remove voter `remove` in one
    /// joint change (add + remove without a step with an even count).
    Replace {
        /// The learner that becomes a voter.
        add: NodeId,
        /// The voter that leaves.
        remove: NodeId,
    },
}

/// Why a membership change was refused (nothing was proposed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    /// Not the leader; `leader` is the known one (zero: unknown).
    #[error("not the leader (leader: {leader})")]
    NotLeader {
        /// The known leader.
        leader: NodeId,
    },
    /// A configuration entry is not committed yet, or the configuration is
    /// still joint: one change at a time.
    #[error("another membership change is in progress; retry when it has committed")]
    InProgress,
    /// A leadership transfer is in progress.
    #[error("leadership transfer in progress")]
    Transferring,
    /// The node is already a voter or a learner.
    #[error("node {0} is already a member")]
    AlreadyMember(NodeId),
    /// The node is not a learner (promote, replace).
    #[error("node {0} is not a learner")]
    NotLearner(NodeId),
    /// The node is not a member (remove).
    #[error("node {0} is not a member")]
    NotMember(NodeId),
    /// The node is not a voter (replace).
    #[error("node {0} is not a voter")]
    NotVoter(NodeId),
    /// The learner lags too far behind the leader to be promoted.
    #[error(
        "learner {id} is not caught up: it has {match_index} of {last_index} (promote within {lag_max} entries)"
    )]
    NotCaughtUp {
        /// The learner.
        id: NodeId,
        /// What it has.
        match_index: LogIndex,
        /// The leader's last index.
        last_index: LogIndex,
        /// The largest lag allowed.
        lag_max: u64,
    },
    /// The change would leave no voter.
    #[error("the change would leave no voter")]
    NoVoter,
    /// The configuration would exceed the node limit.
    #[error("a configuration holds at most {NODES_MAX} nodes")]
    TooMany,
    /// Node id zero means none.
    #[error("node id 0 is not a valid node")]
    InvalidId,
    /// The proposed configuration does not follow from the one in force by
    /// one allowed step.
    #[error("the proposed configuration is not one allowed step from the one in force")]
    InvalidTransition,
    /// The proposal itself was refused (back-pressure, size).
    #[error("proposal refused: {0}")]
    Propose(#[from] crate::raft::ProposeError),
}

/// Whether a learner with `match_index` is within `lag_max` entries of the
/// leader's `last_index`, close enough to be promoted.
pub fn caught_up(match_index: LogIndex, last_index: LogIndex, lag_max: u64) -> bool {
    last_index.get().saturating_sub(match_index.get()) <= lag_max
}

/// The configuration that `change` leads to from the committed, simple
/// configuration `current`. `match_of` gives the leader's match index of a
/// node (for the catch-up rule: within `lag_max` entries of the leader's
/// `last_index`).
pub fn next(
    current: &Membership,
    change: Change,
    last_index: LogIndex,
    lag_max: u64,
    match_of: impl Fn(NodeId) -> LogIndex,
) -> Result<Membership, ChangeError> {
    if current.is_joint() {
        return Err(ChangeError::InProgress);
    }
    let caught_up_learner = |id: NodeId| -> Result<(), ChangeError> {
        if !current.is_learner(id) {
            return Err(ChangeError::NotLearner(id));
        }
        let match_index = match_of(id);
        if !caught_up(match_index, last_index, lag_max) {
            return Err(ChangeError::NotCaughtUp {
                id,
                match_index,
                last_index,
                lag_max,
            });
        }
        Ok(())
    };
    let mut next = *current;
    match change {
        Change::AddLearner(id) => {
            check_id(id)?;
            if current.members().contains(id) {
                return Err(ChangeError::AlreadyMember(id));
            }
            if !next.learners.insert(id) || current.members().len() >= NODES_MAX {
                return Err(ChangeError::TooMany);
            }
        }
        Change::Promote(id) => {
            check_id(id)?;
            caught_up_learner(id)?;
            next.learners = without(&current.learners, id);
            next.voters.insert(id);
            next.voters_outgoing = current.voters;
        }
        Change::Remove(id) => {
            check_id(id)?;
            if current.is_learner(id) {
                next.learners = without(&current.learners, id);
            } else if current.voters.contains(id) {
                next.voters = without(&current.voters, id);
                if next.voters.is_empty() {
                    return Err(ChangeError::NoVoter);
                }
                next.voters_outgoing = current.voters;
            } else {
                return Err(ChangeError::NotMember(id));
            }
        }
        Change::Replace { add, remove } => {
            check_id(add)?;
            check_id(remove)?;
            if !current.voters.contains(remove) {
                return Err(ChangeError::NotVoter(remove));
            }
            caught_up_learner(add)?;
            next.learners = without(&current.learners, add);
            next.voters = without(&current.voters, remove);
            next.voters.insert(add);
            next.voters_outgoing = current.voters;
        }
    }
    debug_assert!(check_transition(current, &next).is_ok());
    Ok(next)
}

/// The simple configuration that ends the joint configuration `current`:
/// its incoming voters and its learners. `None` if `current` is not joint.
pub fn leave_joint(current: &Membership) -> Option<Membership> {
    current.is_joint().then_some(Membership {
        voters: current.voters,
        voters_outgoing: NodeSet::EMPTY,
        learners: current.learners,
    })
}

/// Whether `next` follows from `current` by one allowed step: entering a
/// joint configuration whose outgoing half is `current`'s voters, leaving
/// a joint configuration, or a learner change that keeps the voters.
pub fn check_transition(current: &Membership, next: &Membership) -> Result<(), ChangeError> {
    if next.voters.is_empty() {
        return Err(ChangeError::NoVoter);
    }
    if next.members().len() != next.voters.len() + next.learners.len() + outgoing_only(next).len() {
        // A node both voter and learner.
        return Err(ChangeError::InvalidTransition);
    }
    let allowed = if current.is_joint() {
        Some(*next) == leave_joint(current)
    } else if next.is_joint() {
        same_set(&next.voters_outgoing, &current.voters)
    } else {
        same_set(&next.voters, &current.voters)
    };
    if allowed {
        Ok(())
    } else {
        Err(ChangeError::InvalidTransition)
    }
}

fn check_id(id: NodeId) -> Result<(), ChangeError> {
    if id == NodeId::ZERO {
        Err(ChangeError::InvalidId)
    } else {
        Ok(())
    }
}

fn without(set: &NodeSet, id: NodeId) -> NodeSet {
    let mut kept = NodeSet::EMPTY;
    for member in set.as_slice() {
        if *member != id {
            kept.insert(*member);
        }
    }
    kept
}

fn outgoing_only(membership: &Membership) -> NodeSet {
    let mut only = NodeSet::EMPTY;
    for id in membership.voters_outgoing.as_slice() {
        if !membership.voters.contains(*id) {
            only.insert(*id);
        }
    }
    only
}

fn same_set(left: &NodeSet, right: &NodeSet) -> bool {
    left.len() == right.len() && left.as_slice().iter().all(|id| right.contains(*id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(raw: &[u64]) -> NodeSet {
        let ids: Vec<NodeId> = raw.iter().copied().map(NodeId).collect();
        NodeSet::from_ids(&ids).expect("valid")
    }

    fn config(voters: &[u64], outgoing: &[u64], learners: &[u64]) -> Membership {
        Membership {
            voters: set(voters),
            voters_outgoing: set(outgoing),
            learners: set(learners),
        }
    }

    fn next_all_caught_up(current: &Membership, change: Change) -> Result<Membership, ChangeError> {
        next(current, change, LogIndex(100), 10, |_| LogIndex(100))
    }

    /// Adding a learner is one step; promoting it enters a joint
    /// configuration with the old voters outgoing, and leaving it keeps the
    /// new voters only.
    #[test]
    fn add_then_promote_goes_through_joint() {
        let start = config(&[1, 2, 3], &[], &[]);
        let added = next_all_caught_up(&start, Change::AddLearner(NodeId(4))).expect("add");
        assert_eq!(added, config(&[1, 2, 3], &[], &[4]));
        let joint = next_all_caught_up(&added, Change::Promote(NodeId(4))).expect("promote");
        assert_eq!(joint, config(&[1, 2, 3, 4], &[1, 2, 3], &[]));
        assert!(check_transition(&added, &joint).is_ok());
        let left = leave_joint(&joint).expect("joint");
        assert_eq!(left, config(&[1, 2, 3, 4], &[], &[]));
        assert!(check_transition(&joint, &left).is_ok());
        assert_eq!(leave_joint(&left), None);
    }

    /// Removing a voter is joint; removing a learner is one step; replace
    /// swaps a voter for a learner in one joint change.
    #[test]
    fn remove_and_replace() {
        let start = config(&[1, 2, 3], &[], &[4]);
        assert_eq!(
            next_all_caught_up(&start, Change::Remove(NodeId(2))),
            Ok(config(&[1, 3], &[1, 2, 3], &[4]))
        );
        assert_eq!(
            next_all_caught_up(&start, Change::Remove(NodeId(4))),
            Ok(config(&[1, 2, 3], &[], &[]))
        );
        assert_eq!(
            next_all_caught_up(
                &start,
                Change::Replace {
                    add: NodeId(4),
                    remove: NodeId(1)
                }
            ),
            Ok(config(&[2, 3, 4], &[1, 2, 3], &[]))
        );
    }

    /// Every refusal has its own error: one change at a time, membership
    /// checks, the last voter, the node limit, id zero.
    #[test]
    fn refusals() {
        let joint = config(&[1, 2, 3, 4], &[1, 2, 3], &[]);
        assert_eq!(
            next_all_caught_up(&joint, Change::AddLearner(NodeId(5))),
            Err(ChangeError::InProgress)
        );
        let start = config(&[1], &[], &[2]);
        assert_eq!(
            next_all_caught_up(&start, Change::AddLearner(NodeId(2))),
            Err(ChangeError::AlreadyMember(NodeId(2)))
        );
        assert_eq!(
            next_all_caught_up(&start, Change::AddLearner(NodeId(1))),
            Err(ChangeError::AlreadyMember(NodeId(1)))
        );
        assert_eq!(
            next_all_caught_up(&start, Change::Promote(NodeId(1))),
            Err(ChangeError::NotLearner(NodeId(1)))
        );
        assert_eq!(
            next_all_caught_up(&start, Change::Remove(NodeId(7))),
            Err(ChangeError::NotMember(NodeId(7)))
        );
        assert_eq!(
            next_all_caught_up(&start, Change::Remove(NodeId(1))),
            Err(ChangeError::NoVoter)
        );
        assert_eq!(
            next_all_caught_up(
                &start,
                Change::Replace {
                    add: NodeId(2),
                    remove: NodeId(3)
                }
            ),
            Err(ChangeError::NotVoter(NodeId(3)))
        );
        assert_eq!(
            next_all_caught_up(&start, Change::AddLearner(NodeId::ZERO)),
            Err(ChangeError::InvalidId)
        );
        let full = config(&[1, 2, 3, 4, 5], &[], &[6, 7, 8, 9]);
        assert_eq!(
            next_all_caught_up(&full, Change::AddLearner(NodeId(10))),
            Err(ChangeError::TooMany)
        );
    }

    /// A learner is promoted only within the lag bound of the leader's last
    /// index; one entry more is refused.
    #[test]
    fn promote_only_caught_up_learners() {
        let start = config(&[1, 2, 3], &[], &[4]);
        let lag_max = crate::constants::PROMOTE_LAG_ENTRIES_MAX;
        let last = LogIndex(1_000 + lag_max);
        let promote = Change::Promote(NodeId(4));
        let at_bound = next(&start, promote, last, lag_max, |_| LogIndex(1_000));
        assert!(at_bound.is_ok());
        let behind = next(&start, promote, last, lag_max, |_| LogIndex(999));
        assert_eq!(
            behind,
            Err(ChangeError::NotCaughtUp {
                id: NodeId(4),
                match_index: LogIndex(999),
                last_index: last,
                lag_max,
            })
        );
    }

    /// Transitions that skip the joint step, keep a joint configuration
    /// with other voters, or leave a joint configuration elsewhere are
    /// refused.
    #[test]
    fn invalid_transitions_are_refused() {
        let simple = config(&[1, 2, 3], &[], &[4]);
        // Straight from {1,2,3} to {1,2,3,4}: no joint step.
        assert_eq!(
            check_transition(&simple, &config(&[1, 2, 3, 4], &[], &[])),
            Err(ChangeError::InvalidTransition)
        );
        // A joint configuration whose outgoing half is not the voters.
        assert_eq!(
            check_transition(&simple, &config(&[1, 2, 4], &[1, 2], &[])),
            Err(ChangeError::InvalidTransition)
        );
        let joint = config(&[1, 2, 4], &[1, 2, 3], &[]);
        // From joint, only leaving it.
        assert_eq!(
            check_transition(&joint, &config(&[1, 2, 3], &[], &[])),
            Err(ChangeError::InvalidTransition)
        );
        assert_eq!(
            check_transition(&joint, &config(&[1, 2, 4, 5], &[1, 2, 4], &[])),
            Err(ChangeError::InvalidTransition)
        );
        assert!(check_transition(&joint, &config(&[1, 2, 4], &[], &[])).is_ok());
        // A node both voter and learner.
        assert_eq!(
            check_transition(&simple, &config(&[1, 2, 3], &[], &[3])),
            Err(ChangeError::InvalidTransition)
        );
        // Learner changes keep the voters.
        assert!(check_transition(&simple, &config(&[1, 2, 3], &[], &[4, 5])).is_ok());
        assert_eq!(
            check_transition(&simple, &config(&[], &[], &[4])),
            Err(ChangeError::NoVoter)
        );
    }
}
