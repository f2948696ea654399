//! Membership changes (Raft §4): planning and proposing a change, leaving a
//! joint configuration, which configuration is committed and which is in
//! force (the latest in the log, committed or not), and the peers that
//! follow from it.
//!
//! Why apart: which change may start when (see `change` for the
//! transitions) and how a configuration is restored after a truncation, an
//! install or a restart are rules of their own, shared by every role.

use super::{Core, Peer};
use crate::raft::action::{Action, Role};
use crate::raft::change::{self, Change, ChangeError};
use crate::raft::inflights::Inflights;
use crate::raft::progress::Progress;
use crate::raft::quorum::Membership;
use crate::types::{LogIndex, NodeId, Term};
use crate::wire::BatchKind;

impl Core {
    /// The configuration a membership `change` leads to from the one in
    /// force, if this leader may start it now (see [`change`] for the
    /// rules). Nothing is proposed: the runtime encodes the result (with
    /// addresses) and hands it to [`Core::propose_membership`].
    pub fn plan_change(&self, change: Change) -> Result<Membership, ChangeError> {
        self.check_change_allowed()?;
        let last_index = self.log.last_index();
        let lag_max = self.config.promote_lag_entries_max;
        change::next(&self.membership, change, last_index, lag_max, |id| {
            self.progress(id)
                .map_or(LogIndex::ZERO, |progress| progress.match_index)
        })
    }

    /// Proposes a configuration batch (kind `config`) whose decoded content
    /// is `membership`. It is in force as soon as it is appended (Raft
    /// §4.1). Refused unless it is one allowed step from the configuration
    /// in force (entering or leaving a joint configuration, or a learner
    /// change) and no other configuration entry is uncommitted. Like
    /// [`Core::propose`], it is sent by the next [`Core::replicate`].
    pub fn propose_membership(
        &mut self,
        membership: Membership,
        bytes: u32,
        actions: &mut Vec<Action>,
    ) -> Result<(Term, LogIndex), ChangeError> {
        self.check_change_allowed()?;
        change::check_transition(&self.membership, &membership)?;
        Ok(self.propose_batch(BatchKind::Config, 1, bytes, Some(membership), actions)?)
    }

    /// The configuration that ends the joint configuration in force, when
    /// this leader should propose it now: the joint entry has committed and
    /// nothing else is pending. The runtime proposes it with
    /// [`Core::propose_membership`] after each input that may commit (and
    /// on ticks, in case a proposal was refused by back-pressure).
    pub fn leave_joint_due(&self) -> Option<Membership> {
        if self.role != Role::Leader
            || self.transfer_to != NodeId::ZERO
            || !self.memberships_uncommitted.is_empty()
        {
            return None;
        }
        change::leave_joint(&self.membership_committed)
    }

    /// The latest committed configuration (the one in force may be newer).
    pub fn membership_committed(&self) -> &Membership {
        &self.membership_committed
    }

    /// The configuration as of the committed `index` (what a snapshot up to
    /// `index` records), when the core still knows it: `None` for an index
    /// above the commit index, or below the latest committed configuration
    /// entry (an older configuration is forgotten once a newer commits), or
    /// while no configuration is known at all. The last is a node started
    /// outside every configuration (empty, no voter): before the entry that
    /// added it commits, the configuration as of its commit index is in no
    /// entry it holds, and a committed configuration always has voters.
    pub fn membership_at(&self, index: LogIndex) -> Option<Membership> {
        (index <= self.commit
            && index >= self.membership_committed_at
            && !self.membership_committed.voters.is_empty())
        .then_some(self.membership_committed)
    }

    /// Whether a configuration entry is in the log but not committed yet.
    pub fn membership_pending(&self) -> bool {
        !self.memberships_uncommitted.is_empty()
    }

    /// Tells a core just built by [`Core::new`] which recovered batches are
    /// configuration entries: `(first index, membership)` in index order,
    /// all above the snapshot. `Restart::membership` is then the committed
    /// configuration as of the snapshot, and the latest of these is in
    /// force; each becomes committed when the commit index passes it.
    pub fn restore_configs(&mut self, configs: &[(LogIndex, Membership)]) {
        assert!(
            self.memberships_uncommitted.is_empty(),
            "configs are restored once, before any input"
        );
        let mut previous = self.log.snapshot_index();
        for (index, _) in configs {
            assert!(
                *index > previous && *index <= self.log.last_index(),
                "recovered config at {index} out of order or outside the log"
            );
            previous = *index;
        }
        self.memberships_uncommitted.extend_from_slice(configs);
        self.restore_membership();
    }

    fn check_change_allowed(&self) -> Result<(), ChangeError> {
        if self.role != Role::Leader {
            return Err(ChangeError::NotLeader {
                leader: self.leader,
            });
        }
        if self.transfer_to != NodeId::ZERO {
            return Err(ChangeError::Transferring);
        }
        if !self.memberships_uncommitted.is_empty() {
            return Err(ChangeError::InProgress);
        }
        Ok(())
    }

    pub(super) fn restore_membership(&mut self) {
        let membership = self
            .memberships_uncommitted
            .last()
            .map_or(self.membership_committed, |(_, membership)| *membership);
        self.set_membership(membership);
    }

    pub(super) fn set_membership(&mut self, membership: Membership) {
        if membership != self.membership {
            self.membership = membership;
            self.rebuild_peers();
        }
    }

    /// One peer per member other than this node; progress kept for those
    /// that stay.
    pub(super) fn rebuild_peers(&mut self) {
        let members = self.membership.members();
        self.peers.retain(|peer| members.contains(peer.id));
        let next = self.log.last_index().next();
        for id in members.as_slice() {
            if *id != self.config.id && !self.peers.iter().any(|peer| peer.id == *id) {
                let inflights = Inflights::new(
                    self.config.inflight_messages_max,
                    self.config.inflight_bytes_max,
                );
                self.peers.push(Peer {
                    id: *id,
                    progress: Progress::new(next, inflights),
                    vote: None,
                });
            }
        }
    }
}
