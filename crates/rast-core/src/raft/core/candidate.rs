//! Elections: pre-vote and real campaigns (and the one a leadership
//! transfer starts), and the count of votes, in which the candidate's own
//! vote counts only once durable (rule 1 of the `raft` module docs), so no
//! node leads a term it could forget having voted in.
//!
//! Why apart: a candidate's handful of rules is easiest to check when read
//! on its own.

use super::{Campaign, Core};
use crate::raft::action::{Action, Role};
use crate::raft::message::{Body, Message, OutgoingBody, RequestVote};
use crate::raft::quorum::VoteResult;
use crate::types::{LogIndex, NodeId};

impl Core {
    pub(super) fn step_candidate(&mut self, message: &Message<'_>, actions: &mut Vec<Action>) {
        match message.body {
            Body::VoteResponse(response) => {
                let pre_vote = self.role == Role::PreCandidate;
                let expected_term = if pre_vote && response.granted {
                    self.term.next()
                } else {
                    self.term
                };
                if response.pre_vote != pre_vote || message.term != expected_term {
                    return;
                }
                if let Some(position) = self.peer_position(message.from) {
                    self.peers[position].vote = Some(response.granted);
                    self.poll(actions);
                }
            }
            Body::AppendEntries(_) | Body::Heartbeat(_) | Body::InstallSnapshot(_) => {
                self.become_follower(message.term, message.from, actions);
                self.step_follower(message, actions);
            }
            _ => {}
        }
    }

    pub(super) fn campaign(&mut self, campaign: Campaign, actions: &mut Vec<Action>) {
        for peer in &mut self.peers {
            peer.vote = None;
        }
        self.self_granted = true;
        let request_term = if campaign == Campaign::PreVote {
            self.role = Role::PreCandidate;
            self.leader = NodeId::ZERO;
            self.reset_election_timer();
            self.term.next()
        } else {
            self.term = self.term.next();
            self.vote = self.config.id;
            self.role = Role::Candidate;
            self.leader = NodeId::ZERO;
            self.verified_index = LogIndex::ZERO;
            self.acknowledged_index = LogIndex::ZERO;
            self.reset_election_timer();
            self.persist_hard_state(actions);
            self.term
        };
        let request = RequestVote {
            last_index: self.log.last_index(),
            last_term: self.log.last_term(),
            pre_vote: campaign == Campaign::PreVote,
            leadership_transfer: campaign == Campaign::Transfer,
        };
        for position in 0..self.peers.len() {
            let id = self.peers[position].id;
            if self.membership.is_voter(id) {
                self.send_at(
                    request_term,
                    id,
                    OutgoingBody::RequestVote(request),
                    actions,
                );
            }
        }
        self.poll(actions);
    }

    /// Counts the votes. The candidate's own vote counts only once durable,
    /// so no node leads a term it could forget having voted in.
    pub(super) fn poll(&mut self, actions: &mut Vec<Action>) {
        let self_vote = match self.role {
            Role::PreCandidate => Some(self.self_granted),
            Role::Candidate if !self.hard_state_pending() => Some(self.self_granted),
            _ => None,
        };
        let id = self.config.id;
        let peers = &self.peers;
        let result = self.membership.vote_result(|voter| {
            if voter == id {
                self_vote
            } else {
                peers
                    .iter()
                    .find(|peer| peer.id == voter)
                    .and_then(|peer| peer.vote)
            }
        });
        match (result, self.role) {
            (VoteResult::Won, Role::PreCandidate) => self.campaign(Campaign::Vote, actions),
            (VoteResult::Won, Role::Candidate) => self.become_leader(actions),
            (VoteResult::Lost, Role::PreCandidate | Role::Candidate) => {
                self.become_follower(self.term, NodeId::ZERO, actions);
            }
            _ => {}
        }
    }
}
