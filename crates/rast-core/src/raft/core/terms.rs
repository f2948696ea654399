//! Terms, the same for every role (Raft §5.1): a message of a newer term
//! makes this node a follower of it, unless a live leader's lease (§6.2)
//! or a pre-vote (§9.6) says to change nothing; a message of an older term
//! is never acted on, only answered where the sender must learn the term;
//! and a vote request is judged the same whatever this node's role.
//!
//! Why apart: every message passes through here before the role dispatch,
//! so the rules that keep terms and votes safe are read together.

use super::Core;
#[cfg(feature = "planted-bugs")]
use super::PlantedBug;
use crate::raft::action::{Action, Role};
use crate::raft::message::{
    AppendResponse, Body, Message, OutgoingBody, RequestVote, VoteResponse,
};
use crate::types::{NodeId, Term};

impl Core {
    pub(super) fn step_term(&mut self, message: &Message<'_>, actions: &mut Vec<Action>) {
        if message.term > self.term {
            match message.body {
                Body::RequestVote(request) => {
                    let in_lease = self.config.check_quorum
                        && self.leader != NodeId::ZERO
                        && self.elapsed_ms_election < self.config.timeout_ms_election;
                    if in_lease && !request.leadership_transfer {
                        return; // a leader is alive: no disruption (§6.2)
                    }
                    if !request.pre_vote {
                        self.become_follower(message.term, NodeId::ZERO, actions);
                    }
                }
                Body::VoteResponse(VoteResponse {
                    pre_vote: true,
                    granted: true,
                }) => {}
                Body::AppendEntries(_) | Body::Heartbeat(_) | Body::InstallSnapshot(_) => {
                    self.become_follower(message.term, message.from, actions);
                }
                _ => self.become_follower(message.term, NodeId::ZERO, actions),
            }
        } else if message.term < self.term {
            self.step_stale(message, actions);
            return;
        }
        if let Body::RequestVote(request) = message.body {
            self.step_request_vote(message.from, message.term, request, actions);
            return;
        }
        match self.role {
            Role::Leader => self.step_leader(message, actions),
            Role::PreCandidate | Role::Candidate => self.step_candidate(message, actions),
            Role::Follower => self.step_follower(message, actions),
        }
    }

    /// A message from an older term: never acted on. A stale leader is told
    /// the newer term (else, with pre-vote or check-quorum, it might never
    /// learn it; nor, from a damaged node, which may not campaign and
    /// bumped its term precisely so that the leader steps down: see
    /// "Damaged nodes"); a stale pre-candidate is refused.
    fn step_stale(&mut self, message: &Message<'_>, actions: &mut Vec<Action>) {
        match message.body {
            Body::AppendEntries(_) | Body::Heartbeat(_)
                if self.config.check_quorum || self.config.pre_vote || !self.trusted() =>
            {
                let response = AppendResponse {
                    last_index: self.log.last_index(),
                    ..AppendResponse::default()
                };
                self.send(
                    message.from,
                    OutgoingBody::AppendResponse(response),
                    actions,
                );
            }
            Body::RequestVote(RequestVote { pre_vote: true, .. }) => {
                let response = VoteResponse {
                    granted: false,
                    pre_vote: true,
                };
                self.send(message.from, OutgoingBody::VoteResponse(response), actions);
            }
            _ => {}
        }
    }

    fn step_request_vote(
        &mut self,
        from: NodeId,
        term: Term,
        request: RequestVote,
        actions: &mut Vec<Action>,
    ) {
        let can_vote = self.vote == from
            || (self.vote == NodeId::ZERO && self.leader == NodeId::ZERO)
            || (request.pre_vote && term > self.term);
        let up_to_date = (request.last_term, request.last_index)
            >= (self.log.last_term(), self.log.last_index());
        #[cfg(feature = "planted-bugs")]
        let up_to_date =
            up_to_date || self.config.planted_bug == Some(PlantedBug::VoteWithoutLogCheck);
        // A damaged node may have lost entries it acknowledged: its log
        // alone says nothing of what it promised to keep, the end of the
        // log it may have acknowledged does.
        let covers_acked = self.covers_acked((request.last_term, request.last_index));
        #[cfg(feature = "planted-bugs")]
        let covers_acked =
            covers_acked || self.config.planted_bug == Some(PlantedBug::VoteWhileDamaged);
        let granted = can_vote && up_to_date && covers_acked;
        let response = VoteResponse {
            granted,
            pre_vote: request.pre_vote,
        };
        if granted && request.pre_vote {
            // Answer at the candidate's future term; change nothing here.
            self.send_at(term, from, OutgoingBody::VoteResponse(response), actions);
        } else {
            if granted {
                self.vote = from;
                self.reset_election_timer();
                self.persist_hard_state(actions);
            }
            self.send(from, OutgoingBody::VoteResponse(response), actions);
        }
    }
}
