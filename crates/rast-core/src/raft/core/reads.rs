//! ReadIndex (Raft §6.4), batched: every read that arrives while a round is
//! in flight joins the next round, so one heartbeat round serves many.
//!
//! Why apart: reads never touch the log; their rounds ride on the leader's
//! heartbeats and are confirmed by a quorum's answers, bookkeeping of their
//! own that the leader's replication does not need to know.

use super::Core;
use crate::constants::READ_ROUNDS_INFLIGHT_MAX;
use crate::raft::action::Action;

impl Core {
    pub(super) fn can_start_read_round(&self) -> bool {
        self.reads.rounds.len() < READ_ROUNDS_INFLIGHT_MAX
            && self.log.term_at(self.commit) == Some(self.term)
    }

    pub(super) fn start_read_round(&mut self, actions: &mut Vec<Action>) {
        if self.reads.collecting == 0 || !self.can_start_read_round() {
            return;
        }
        self.reads.round_started += 1;
        self.reads.collecting = 0;
        self.reads
            .rounds
            .push_back((self.reads.round_started, self.commit));
        self.elapsed_ms_heartbeat = 0;
        self.broadcast_heartbeat(actions);
        self.confirm_reads(actions);
    }

    pub(super) fn confirm_reads(&mut self, actions: &mut Vec<Action>) {
        let mut confirmed = None;
        while let Some(&(round, index)) = self.reads.rounds.front() {
            let id = self.config.id;
            let peers = &self.peers;
            let quorum = self.membership.has_quorum(|voter| {
                voter == id
                    || peers
                        .iter()
                        .any(|peer| peer.id == voter && peer.progress.read_round_acked >= round)
            });
            if !quorum {
                break;
            }
            self.reads.rounds.pop_front();
            confirmed = Some((round, index));
        }
        if let Some((through_round, index)) = confirmed {
            actions.push(Action::ReadReady {
                through_round,
                index,
            });
            if self.reads.collecting > 0 && self.reads.rounds.is_empty() {
                self.start_read_round(actions);
            }
        }
    }

    pub(super) fn abort_reads(&mut self, actions: &mut Vec<Action>) {
        if self.reads.collecting > 0 {
            self.reads.round_started += 1;
        }
        if self.reads.collecting > 0 || !self.reads.rounds.is_empty() {
            actions.push(Action::ReadsAborted {
                through_round: self.reads.round_started,
            });
        }
        self.reads.collecting = 0;
        self.reads.rounds.clear();
    }
}
