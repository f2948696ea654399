//! Snapshots: the leader's side of a snapshot transfer (the runtime streams
//! the bytes; the core learns only when it is done or given up), the
//! follower's install (keep the log after a matching snapshot point, or
//! reset it), and compaction.
//!
//! Why apart: the runtime owns the snapshot's bytes; the core only moves its
//! log's boundaries and commit, and these are the inputs that do so.

use super::{Core, SnapshotInstall};
use crate::raft::action::{Action, Role};
use crate::raft::progress::ProgressState;
use crate::raft::quorum::Membership;
use crate::types::{LogIndex, NodeId, Term};

impl Core {
    /// The runtime finished (or gave up) streaming a snapshot to `to`.
    pub fn snapshot_sent(&mut self, to: NodeId, success: bool, actions: &mut Vec<Action>) {
        let start = actions.len();
        if self.role == Role::Leader
            && let Some(position) = self.peer_position(to)
        {
            let progress = &mut self.peers[position].progress;
            if let ProgressState::Snapshot { pending } = progress.state {
                let next = if success {
                    pending.next()
                } else {
                    progress.match_index.next()
                };
                progress.become_probe(next);
                self.replicate_to(position, actions);
            }
        }
        self.finish(start, actions);
    }

    /// How a snapshot up to `index` (of `term`) received from the leader
    /// would be installed now; the runtime asks before it touches its disk
    /// and then calls [`Self::snapshot_installed`].
    pub fn snapshot_install(&self, index: LogIndex, term: Term) -> SnapshotInstall {
        if index <= self.commit || self.role == Role::Leader {
            SnapshotInstall::Ignore
        } else if self.log.term_at(index) == Some(term)
            && index <= self.log.durable_index()
            && self.log.is_batch_end(index)
        {
            SnapshotInstall::KeepLog
        } else {
            SnapshotInstall::ResetLog
        }
    }

    /// The runtime installed a snapshot up to `index` (of `term`) received
    /// from the leader, as [`Self::snapshot_install`] said. Ignored unless
    /// it is ahead of the commit index: a snapshot never moves commit
    /// backwards.
    pub fn snapshot_installed(
        &mut self,
        index: LogIndex,
        term: Term,
        membership: Membership,
        actions: &mut Vec<Action>,
    ) {
        let start = actions.len();
        match self.snapshot_install(index, term) {
            SnapshotInstall::Ignore => {}
            SnapshotInstall::KeepLog => {
                // Raft §7: the entries after a matching snapshot point stay
                // (this node may have acknowledged them).
                self.commit = index;
                self.log.compact(index);
                self.memberships_uncommitted.retain(|(at, _)| *at > index);
                self.installed(index, membership, actions);
            }
            SnapshotInstall::ResetLog => {
                // Nothing after `index` can have been acknowledged to this
                // leader: it matched nothing past its snapshot point.
                self.log.reset_to_snapshot(index, term);
                self.commit = index;
                self.memberships_uncommitted.clear();
                self.installed(index, membership, actions);
            }
        }
        self.finish(start, actions);
    }

    fn installed(&mut self, index: LogIndex, membership: Membership, actions: &mut Vec<Action>) {
        // A leader's snapshot is committed state: it repairs a damaged
        // node when its term is after the damage.
        self.check_repaired(actions);
        // The runtime installed the state up to `index` itself: no `Apply`
        // covers those entries (it would apply them twice).
        self.reported_commit = index;
        self.verified_index = self.verified_index.max(index);
        self.membership_committed = membership;
        self.membership_committed_at = index;
        self.restore_membership();
        self.acknowledge(actions);
    }

    /// Forgets the log up to `index` (a batch end at or below the commit and
    /// durable indexes), now covered by a snapshot.
    pub fn compact(&mut self, index: LogIndex) {
        assert!(index <= self.commit, "compact only committed entries");
        self.log.compact(index);
    }
}
