//! The leader: the no-op of its term, proposals, replication to each peer
//! within its inflight window and the message limits, the answers to its
//! AppendEntries and heartbeats, commit (only onto an entry of its own
//! term: rule 3 of the `raft` module docs), check-quorum, and stepping down
//! when a committed configuration removes it.
//!
//! Why apart: the leader holds most of the core's state (progress per peer)
//! and most of its code; apart, each role's rules can be read whole.

#[cfg(feature = "planted-bugs")]
use super::PlantedBug;
use super::{Core, ProposeError};
use crate::constants::{
    APPENDS_PER_PEER_PER_CALL_MAX, BATCH_ENTRIES_MAX, NOOP_BATCH_BYTES, PROGRESS_STALL_HEARTBEATS,
    PROPOSALS_PENDING_MAX,
};
use crate::raft::action::{Action, Role};
use crate::raft::log::Boundary;
use crate::raft::message::{
    AppendRange, AppendResponse, Body, Heartbeat, HeartbeatResponse, Message, OutgoingBody,
};
use crate::raft::progress::ProgressState;
use crate::raft::quorum::Membership;
use crate::types::{LogIndex, NodeId, Term};
use crate::wire::BatchKind;

impl Core {
    pub(super) fn step_leader(&mut self, message: &Message<'_>, actions: &mut Vec<Action>) {
        let Some(position) = self.peer_position(message.from) else {
            return;
        };
        match message.body {
            Body::AppendResponse(response) => {
                self.peers[position].progress.recent_active = true;
                if response.success {
                    self.leader_append_accepted(position, response, actions);
                } else {
                    self.leader_append_rejected(position, response, actions);
                }
            }
            Body::HeartbeatResponse(response) => {
                self.leader_heartbeat_response(position, response, actions);
            }
            Body::SnapshotResponse(_) => self.peers[position].progress.recent_active = true,
            // Another leader in our term cannot exist; votes are late.
            _ => {}
        }
    }

    pub(super) fn become_leader(&mut self, actions: &mut Vec<Action>) {
        assert!(!self.hard_state_pending(), "lead only a durable term");
        self.role = Role::Leader;
        self.leader = self.config.id;
        self.transfer_to = NodeId::ZERO;
        self.elapsed_ms_election = 0;
        self.elapsed_ms_heartbeat = 0;
        self.reads.collecting = 0;
        self.reads.rounds.clear();
        let next = self.log.last_index().next();
        for peer in &mut self.peers {
            peer.progress.match_index = LogIndex::ZERO;
            peer.progress.become_probe(next);
            peer.progress.recent_active = false;
            peer.progress.read_round_acked = 0;
        }
        // A no-op of the new term lets everything before it commit (§5.4.2)
        // and makes ReadIndex possible (§6.4).
        let index = next;
        self.log.append(Boundary {
            first_index: index,
            term: self.term,
            count: 1,
            bytes: NOOP_BATCH_BYTES,
            kind: BatchKind::Noop,
            batches: 1,
        });
        actions.push(Action::AppendNoop {
            term: self.term,
            index,
        });
        // The no-op leaves now: every peer probes, one message each.
        self.proposals_unsent = false;
        for position in 0..self.peers.len() {
            self.replicate_to(position, actions);
        }
    }

    pub(super) fn propose_batch(
        &mut self,
        kind: BatchKind,
        count: u32,
        bytes: u32,
        membership: Option<Membership>,
        actions: &mut Vec<Action>,
    ) -> Result<(Term, LogIndex), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if self.transfer_to != NodeId::ZERO {
            return Err(ProposeError::Transferring);
        }
        if count == 0 || count > BATCH_ENTRIES_MAX {
            return Err(ProposeError::Invalid);
        }
        if self.log.batches_after(self.commit) >= PROPOSALS_PENDING_MAX {
            return Err(ProposeError::TooMany);
        }
        let start = actions.len();
        let first_index = self.log.last_index().next();
        self.log.append(Boundary {
            first_index,
            term: self.term,
            count,
            bytes,
            kind,
            batches: 1,
        });
        actions.push(Action::AppendProposal {
            term: self.term,
            first_index,
            count,
        });
        if let Some(membership) = membership {
            self.memberships_uncommitted.push((first_index, membership));
            self.set_membership(membership);
        }
        // Sent by `replicate`, with whatever else this batch of inputs
        // proposes: one message per peer rather than one per proposal.
        self.proposals_unsent = true;
        self.finish(start, actions);
        Ok((self.term, first_index))
    }

    /// Sends every peer what its state allows; remembers whether a peer
    /// still could take more (it hit the per-call message bound), so the
    /// next `replicate` or tick goes on.
    pub(super) fn replicate_unsent(&mut self, actions: &mut Vec<Action>) {
        for position in 0..self.peers.len() {
            self.replicate_to(position, actions);
        }
        self.proposals_unsent = (0..self.peers.len()).any(|position| self.can_send(position));
    }

    /// Whether `send_append` would send to the peer at `position` now.
    fn can_send(&self, position: usize) -> bool {
        let progress = &self.peers[position].progress;
        !progress.is_paused()
            && (progress.state != ProgressState::Replicate
                || progress.next_index <= self.log.last_index())
    }

    pub(super) fn tick_leader(&mut self, actions: &mut Vec<Action>) {
        if self.elapsed_ms_election >= self.config.timeout_ms_election {
            self.elapsed_ms_election = 0;
            if self.config.check_quorum {
                let id = self.config.id;
                let peers = &self.peers;
                let active = self.membership.has_quorum(|voter| {
                    voter == id
                        || peers
                            .iter()
                            .any(|peer| peer.id == voter && peer.progress.recent_active)
                });
                if !active {
                    self.become_follower(self.term, NodeId::ZERO, actions);
                    return;
                }
                for peer in &mut self.peers {
                    peer.progress.recent_active = false;
                }
            }
            self.transfer_to = NodeId::ZERO;
        }
        if self.elapsed_ms_heartbeat >= self.config.interval_ms_heartbeat {
            self.elapsed_ms_heartbeat = 0;
            if self.reads.collecting > 0 && self.can_start_read_round() {
                self.start_read_round(actions);
            } else {
                self.broadcast_heartbeat(actions);
            }
            self.probe_stalled_peers(actions);
        }
        // A runtime that never calls `replicate` still gets its proposals
        // out, a tick late. After the stall probes, so that a peer they just
        // reset gets its one probe, not appends the reset would void.
        if self.proposals_unsent {
            self.replicate_unsent(actions);
        }
    }

    /// A peer whose window has not moved for several heartbeats lost
    /// messages: probe again from what it matches.
    fn probe_stalled_peers(&mut self, actions: &mut Vec<Action>) {
        for position in 0..self.peers.len() {
            let progress = &mut self.peers[position].progress;
            if progress.state != ProgressState::Replicate || progress.inflights.count() == 0 {
                continue;
            }
            progress.stalled_heartbeats += 1;
            if progress.stalled_heartbeats >= PROGRESS_STALL_HEARTBEATS {
                let next = progress.match_index.next();
                progress.become_probe(next);
                self.replicate_to(position, actions);
            }
        }
    }

    fn leader_append_accepted(
        &mut self,
        position: usize,
        response: AppendResponse,
        actions: &mut Vec<Action>,
    ) {
        // An honest follower acknowledges whole batches of this leader's
        // log; anything else is not an answer to this leader: ignore it.
        if !self.log.is_batch_end(response.match_index)
            || !self.log.is_batch_end(response.last_index)
        {
            return;
        }
        let last = self.log.last_index();
        let progress = &mut self.peers[position].progress;
        let advanced = progress.update_match(response.match_index);
        match progress.state {
            ProgressState::Probe => {
                let next = response.last_index.next().max(progress.match_index.next());
                progress.become_replicate(next);
            }
            ProgressState::Snapshot { pending } if progress.match_index >= pending => {
                let next = progress.match_index.next();
                progress.become_probe(next);
            }
            _ => {}
        }
        if advanced && self.maybe_commit() {
            self.after_commit(actions);
        }
        let id = self.peers[position].id;
        if self.transfer_to == id && self.peers[position].progress.match_index == last {
            self.send(id, OutgoingBody::TimeoutNow, actions);
        }
        self.replicate_to(position, actions);
    }

    fn leader_append_rejected(
        &mut self,
        position: usize,
        response: AppendResponse,
        actions: &mut Vec<Action>,
    ) {
        let progress = &self.peers[position].progress;
        let stale = match progress.state {
            ProgressState::Replicate => response.rejected_index <= progress.match_index,
            ProgressState::Probe => response.rejected_index != progress.next_index.prev(),
            ProgressState::Snapshot { .. } => true,
        };
        if stale {
            return;
        }
        // The follower's hint names its last entry that could match; our
        // own last entry at or below it with a term no higher is the
        // candidate point, and we send from the start of our batch holding
        // the entry after it, never below what matches.
        let (index, _) = self
            .log
            .find_conflict_by_term(response.hint_index, response.hint_term);
        let next = self.log.batch_start(index.next());
        self.peers[position].progress.become_probe(next);
        self.replicate_to(position, actions);
    }

    fn leader_heartbeat_response(
        &mut self,
        position: usize,
        response: HeartbeatResponse,
        actions: &mut Vec<Action>,
    ) {
        let last = self.log.last_index();
        let progress = &mut self.peers[position].progress;
        progress.recent_active = true;
        progress.read_round_acked = progress.read_round_acked.max(response.read_round);
        let advanced = self.log.is_batch_end(response.match_index)
            && progress.update_match(response.match_index);
        if progress.state == ProgressState::Probe {
            progress.probe_sent = false;
        }
        if advanced && self.maybe_commit() {
            self.after_commit(actions);
        }
        if self.peers[position].progress.match_index < last {
            self.replicate_to(position, actions);
        }
        self.confirm_reads(actions);
    }

    /// Advances the commit index to what a quorum has durable, but only
    /// onto an entry of this term (§5.4.2): earlier entries commit with it.
    pub(super) fn maybe_commit(&mut self) -> bool {
        let id = self.config.id;
        let durable = self.log.durable_index();
        let peers = &self.peers;
        let quorum_index = self.membership.committed_index(|voter| {
            if voter == id {
                durable
            } else {
                peers
                    .iter()
                    .find(|peer| peer.id == voter)
                    .map_or(LogIndex::ZERO, |peer| peer.progress.match_index)
            }
        });
        if quorum_index <= self.commit {
            return false;
        }
        let current_term = self.log.term_at(quorum_index) == Some(self.term);
        #[cfg(feature = "planted-bugs")]
        let current_term = current_term
            || self.config.planted_bug == Some(PlantedBug::CommitPreviousTermByCounting);
        if !current_term {
            return false;
        }
        self.advance_commit(quorum_index);
        true
    }

    pub(super) fn after_commit(&mut self, actions: &mut Vec<Action>) {
        if !self.membership_committed.is_voter(self.config.id) {
            self.step_down_removed(actions);
            return;
        }
        if self.reads.collecting > 0 && self.reads.rounds.is_empty() {
            self.start_read_round(actions);
        }
    }

    /// A committed configuration no longer counts this leader as a voter
    /// (Raft §4.2.2): it stops leading. A voter of the configuration that
    /// holds the whole log is told to campaign at once, so the cluster does
    /// not wait an election timeout for a new leader.
    fn step_down_removed(&mut self, actions: &mut Vec<Action>) {
        let last = self.log.last_index();
        let successor = self
            .peers
            .iter()
            .filter(|peer| self.membership.is_voter(peer.id))
            .find(|peer| peer.progress.match_index == last)
            .map(|peer| peer.id);
        if let Some(successor) = successor {
            self.send(successor, OutgoingBody::TimeoutNow, actions);
        }
        self.become_follower(self.term, NodeId::ZERO, actions);
    }

    /// Sends to the peer at `position` as much as its state allows.
    pub(super) fn replicate_to(&mut self, position: usize, actions: &mut Vec<Action>) {
        for _ in 0..APPENDS_PER_PEER_PER_CALL_MAX {
            if !self.send_append(position, actions) {
                break;
            }
        }
    }

    /// Sends one AppendEntries to the peer at `position`; false if paused
    /// or there is nothing to send.
    fn send_append(&mut self, position: usize, actions: &mut Vec<Action>) -> bool {
        let progress = &self.peers[position].progress;
        if progress.is_paused() {
            return false;
        }
        let next = progress.next_index;
        let replicating = progress.state == ProgressState::Replicate;
        let last = self.log.last_index();
        if replicating && next > last {
            return false;
        }
        let to = self.peers[position].id;
        let prev = next.prev();
        let Some(prev_term) = self
            .log
            .term_at(prev)
            .filter(|_| next >= self.log.first_index())
        else {
            let pending = self.log.snapshot_index();
            self.peers[position].progress.become_snapshot(pending);
            actions.push(Action::SendSnapshot { to });
            return false;
        };
        debug_assert!(self.log.is_batch_start(next), "next {next} starts a batch");
        let bytes_max = self
            .config
            .append_message_bytes_max
            .min(self.config.inflight_bytes_max);
        let run = self
            .log
            .run_from(next, self.config.append_message_batches_max, bytes_max);
        let range = AppendRange {
            prev_index: prev,
            prev_term,
            leader_commit: self.commit,
            first_index: next,
            last_index: run.last_index,
            batches: run.batches,
            bytes: run.bytes,
        };
        self.peers[position]
            .progress
            .sent(run.last_index, run.bytes);
        self.send(to, OutgoingBody::AppendEntries(range), actions);
        true
    }

    pub(super) fn broadcast_heartbeat(&mut self, actions: &mut Vec<Action>) {
        for position in 0..self.peers.len() {
            let peer = &self.peers[position];
            let heartbeat = Heartbeat {
                leader_commit: peer.progress.match_index.min(self.commit),
                read_round: self.reads.round_started,
            };
            let to = peer.id;
            self.send(to, OutgoingBody::Heartbeat(heartbeat), actions);
        }
    }
}
