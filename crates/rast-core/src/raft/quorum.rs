//! Quorum math: who counts, and what a majority has.
//!
//! Invariants:
//! * A [`NodeSet`] holds at most [`NODES_MAX`] distinct, non-zero ids.
//! * `majority(n) = n / 2 + 1`, for even `n` too (the prototype got 4 wrong).
//! * A joint [`Membership`] (`voters_outgoing` non-empty) decides only with a
//!   majority of *each* half; an empty half constrains nothing, so a simple
//!   configuration is the joint one with an empty outgoing half.
//! * Learners never count: not for commit, not for votes, not for
//!   check-quorum.
//!
//! Everything here is pure and allocation-free: sets are fixed-size arrays,
//! so the leader recomputes its commit index on every acknowledgement without
//! touching the heap.

use crate::constants::NODES_MAX;
use crate::types::{LogIndex, NodeId};

/// A small set of node ids, stored inline (no allocation), in insertion order.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct NodeSet {
    ids: [NodeId; NODES_MAX],
    len: u8,
}

impl std::fmt::Debug for NodeSet {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_list()
            .entries(self.as_slice().iter().map(|id| id.get()))
            .finish()
    }
}

impl NodeSet {
    /// The empty set.
    pub const EMPTY: Self = Self {
        ids: [NodeId::ZERO; NODES_MAX],
        len: 0,
    };

    /// The set of `ids`; `None` if one is zero, one repeats, or there are
    /// more than [`NODES_MAX`].
    pub fn from_ids(ids: &[NodeId]) -> Option<Self> {
        let mut set = Self::EMPTY;
        for id in ids {
            if !set.insert(*id) {
                return None;
            }
        }
        Some(set)
    }

    /// Adds `id`; false if it is zero, already present, or the set is full.
    pub fn insert(&mut self, id: NodeId) -> bool {
        if id == NodeId::ZERO || self.contains(id) || self.len() == NODES_MAX {
            return false;
        }
        self.ids[self.len()] = id;
        self.len += 1;
        true
    }

    /// Whether `id` is a member.
    #[inline]
    pub fn contains(&self, id: NodeId) -> bool {
        self.as_slice().contains(&id)
    }

    /// Number of members.
    #[inline]
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Whether the set has no member.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The members, in insertion order.
    #[inline]
    pub fn as_slice(&self) -> &[NodeId] {
        &self.ids[..self.len()]
    }

    /// Smallest number of members that is more than half: `len / 2 + 1`.
    #[inline]
    pub fn majority(&self) -> usize {
        self.len() / 2 + 1
    }

    /// The largest index that a majority of members have reached, given each
    /// member's index. `u64::MAX` for the empty set (it constrains nothing).
    pub fn committed_index(&self, mut index_of: impl FnMut(NodeId) -> LogIndex) -> LogIndex {
        if self.is_empty() {
            return LogIndex(u64::MAX);
        }
        let mut indexes = [0u64; NODES_MAX];
        for (slot, id) in indexes.iter_mut().zip(self.as_slice()) {
            *slot = index_of(*id).get();
        }
        let indexes = &mut indexes[..self.len()];
        indexes.sort_unstable_by(|left, right| right.cmp(left));
        // Sorted descending, the majority-th value is held by at least a
        // majority (itself and every larger one).
        LogIndex(indexes[self.majority() - 1])
    }

    /// The election outcome given each member's answer (`None`: not yet).
    pub fn vote_result(&self, mut vote_of: impl FnMut(NodeId) -> Option<bool>) -> VoteResult {
        if self.is_empty() {
            return VoteResult::Won;
        }
        let (mut granted, mut missing) = (0, 0);
        for id in self.as_slice() {
            match vote_of(*id) {
                Some(true) => granted += 1,
                Some(false) => {}
                None => missing += 1,
            }
        }
        if granted >= self.majority() {
            VoteResult::Won
        } else if granted + missing >= self.majority() {
            VoteResult::Pending
        } else {
            VoteResult::Lost
        }
    }
}

/// What the votes so far decide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteResult {
    /// A majority granted.
    Won,
    /// Neither a majority granted nor a majority refused yet.
    Pending,
    /// A majority can no longer be reached.
    Lost,
}

/// A cluster configuration: who votes and who only listens.
///
/// Mirrors `Membership` in the schema (addresses live with the runtime).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Membership {
    /// Voters of the (incoming) configuration.
    pub voters: NodeSet,
    /// Voters of the outgoing configuration during a joint change; empty
    /// otherwise.
    pub voters_outgoing: NodeSet,
    /// Nodes that receive the log but never vote nor count for commit.
    pub learners: NodeSet,
}

impl Membership {
    /// A simple configuration of `voters` and no learner.
    pub fn with_voters(voters: &[NodeId]) -> Option<Self> {
        Some(Self {
            voters: NodeSet::from_ids(voters)?,
            ..Self::default()
        })
    }

    /// Whether `id` votes (in either half of a joint configuration).
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(id) || self.voters_outgoing.contains(id)
    }

    /// Whether `id` is a learner.
    pub fn is_learner(&self, id: NodeId) -> bool {
        self.learners.contains(id)
    }

    /// Whether the configuration is joint.
    pub fn is_joint(&self) -> bool {
        !self.voters_outgoing.is_empty()
    }

    /// Every member (voters of both halves, then learners), each once.
    pub fn members(&self) -> NodeSet {
        let mut all = self.voters;
        for id in self
            .voters_outgoing
            .as_slice()
            .iter()
            .chain(self.learners.as_slice())
        {
            all.insert(*id);
        }
        all
    }

    /// The index a quorum has reached: the smaller of the two halves'.
    /// Zero when there is no voter at all.
    pub fn committed_index(&self, mut index_of: impl FnMut(NodeId) -> LogIndex) -> LogIndex {
        if self.voters.is_empty() && self.voters_outgoing.is_empty() {
            return LogIndex::ZERO;
        }
        let incoming = self.voters.committed_index(&mut index_of);
        let outgoing = self.voters_outgoing.committed_index(&mut index_of);
        incoming.min(outgoing)
    }

    /// The election outcome: won only when each half is won.
    pub fn vote_result(&self, mut vote_of: impl FnMut(NodeId) -> Option<bool>) -> VoteResult {
        if self.voters.is_empty() && self.voters_outgoing.is_empty() {
            return VoteResult::Lost;
        }
        let incoming = self.voters.vote_result(&mut vote_of);
        let outgoing = self.voters_outgoing.vote_result(&mut vote_of);
        match (incoming, outgoing) {
            (VoteResult::Won, VoteResult::Won) => VoteResult::Won,
            (VoteResult::Lost, _) | (_, VoteResult::Lost) => VoteResult::Lost,
            _ => VoteResult::Pending,
        }
    }

    /// Whether the members for which `active` holds form a quorum.
    pub fn has_quorum(&self, mut active: impl FnMut(NodeId) -> bool) -> bool {
        self.vote_result(|id| Some(active(id))) == VoteResult::Won
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ids(raw: &[u64]) -> Vec<NodeId> {
        raw.iter().copied().map(NodeId).collect()
    }

    /// Majority is n / 2 + 1 for odd and even sizes alike.
    #[test]
    fn majority_of_even_and_odd_sets() {
        for (size, majority) in [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (9, 5)] {
            let raw: Vec<u64> = (1..=size).collect();
            let set = NodeSet::from_ids(&ids(&raw)).expect("valid");
            assert_eq!(set.majority(), majority, "size {size}");
        }
    }

    /// Zero ids, duplicates and oversized sets are refused.
    #[test]
    fn node_set_refuses_invalid_members() {
        assert!(NodeSet::from_ids(&ids(&[0])).is_none());
        assert!(NodeSet::from_ids(&ids(&[1, 1])).is_none());
        let too_many: Vec<u64> = (1..=(NODES_MAX as u64 + 1)).collect();
        assert!(NodeSet::from_ids(&ids(&too_many)).is_none());
    }

    /// A joint configuration commits only what both halves have.
    #[test]
    fn joint_commit_takes_the_smaller_half() {
        let membership = Membership {
            voters: NodeSet::from_ids(&ids(&[1, 2, 3])).expect("valid"),
            voters_outgoing: NodeSet::from_ids(&ids(&[3, 4, 5])).expect("valid"),
            learners: NodeSet::from_ids(&ids(&[6])).expect("valid"),
        };
        let matches = [0, 10, 9, 8, 2, 1, 100];
        let committed = membership.committed_index(|id| LogIndex(matches[id.get() as usize]));
        // incoming {10,9,8} → 9; outgoing {8,2,1} → 2.
        assert_eq!(committed, LogIndex(2));
    }

    /// A vote is lost as soon as a majority can no longer be reached.
    #[test]
    fn vote_result_decides_early() {
        let set = NodeSet::from_ids(&ids(&[1, 2, 3, 4, 5])).expect("valid");
        let answers = [
            None,
            Some(true),
            Some(false),
            Some(false),
            None,
            Some(false),
        ];
        assert_eq!(
            set.vote_result(|id| answers[id.get() as usize]),
            VoteResult::Lost
        );
        let answers = [None, Some(true), Some(true), None, None, Some(false)];
        assert_eq!(
            set.vote_result(|id| answers[id.get() as usize]),
            VoteResult::Pending
        );
    }

    proptest! {
        /// The committed index is reached by a majority and exceeded by less
        /// than a majority: exactly the definition, checked by counting.
        #[test]
        fn committed_index_is_the_majority_order_statistic(
            matches in proptest::collection::vec(0u64..20, 1..=NODES_MAX)
        ) {
            let raw: Vec<u64> = (1..=matches.len() as u64).collect();
            let set = NodeSet::from_ids(&ids(&raw)).expect("valid");
            let committed = set.committed_index(|id| LogIndex(matches[id.get() as usize - 1]));
            let at_least = matches.iter().filter(|m| **m >= committed.get()).count();
            let above = matches.iter().filter(|m| **m > committed.get()).count();
            prop_assert!(at_least >= set.majority());
            prop_assert!(above < set.majority());
        }
    }
}
