//! A majority lost entries: when a damaged node stops waiting and says so.
//!
//! A damaged node that may not campaign (its log is behind `acked_end`,
//! the end of what it may have acknowledged) waits for a leader whose log
//! holds that end. If the entries up to it are on no voter any more —
//! every node that held them was damaged too — no such leader can exist,
//! and with enough damaged voters none can be elected at all: waiting is
//! for good. Then the node stops its copy of the log and names what was
//! lost, for an operator to restore (`Action::MajorityLost`).
//!
//! What it needs to know is every voter's vote rule, which it hears while
//! no leader is heard:
//!
//! ```text
//!  voter campaigning     its RequestVote (pre-vote or vote) gives its log
//!                        end L; it votes for a log at least as up to date
//!                        as L (a damaged node campaigns only once its log
//!                        is past its acked_end: then L covers that end)
//!  voter waiting         its RepairWait (this node sends one too, to every
//!                        voter, each election timeout) gives its log end
//!                        and acked_end E; it votes for a log at least as
//!                        up to date as E, never when E is unknown, and
//!                        never campaigns
//! ```
//!
//! With every voter heard recently ([`HEARD_FOR_TIMEOUTS`]) and since the
//! last leader contact, candidate `c`
//! (a campaigning voter) could win iff the voters whose rule admits `c`'s
//! log form a quorum of the configuration (both, when joint). No log
//! changes without a leader, so if none could win, none ever will. The
//! node says so only when that held at [`LOST_ROUNDS`] election timeouts
//! in a row, and when its own `acked_end` is past every voter's log: the
//! entries it names are on no voter. A voter not heard (down, cut off)
//! may hold them: then it waits.
//!
//! With an odd number of voters, a deadlock needs a majority of waiting
//! voters, each of whose `acked_end` is past the best log; the lowest of
//! their ends was acknowledged by all of them, a majority: it was durable
//! on a majority, as good as committed, and is now on none.

use super::Core;
use crate::constants::{HEARD_FOR_TIMEOUTS, LOST_ROUNDS};
use crate::raft::action::{Action, TERM_UNKNOWN};
use crate::raft::message::{Body, Message, OutgoingBody, RepairWait};
use crate::types::{LogIndex, NodeId, Term};

/// A voter's vote rule, as last heard while no leader was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct HeardEnd {
    id: NodeId,
    /// The end of its log.
    log: (Term, LogIndex),
    /// It votes for a log at least as up to date as this (`None`: for
    /// none); a campaigning voter's is its log end.
    admits_from: Option<(Term, LogIndex)>,
    /// It campaigns.
    campaigns: bool,
    /// When it was heard (the core's clock).
    at_ms: u64,
}

impl Core {
    /// Before a message is stepped: a damaged node notes what it tells of
    /// the sender's vote rule, and forgets all it heard at a leader's
    /// message (logs change from then on).
    pub(super) fn hear_end(&mut self, message: &Message<'_>) {
        if self.trusted() {
            return;
        }
        let heard = match message.body {
            Body::AppendEntries(_) | Body::Heartbeat(_) | Body::InstallSnapshot(_)
                if message.term >= self.term =>
            {
                self.heard_ends.clear();
                self.lost_rounds = 0;
                return;
            }
            // Term 0: a node whose hard state is lost asks for terms; it
            // neither votes nor campaigns, and says so once rebuilt.
            Body::RequestVote(request) if message.term != Term::ZERO => HeardEnd {
                id: message.from,
                log: (request.last_term, request.last_index),
                admits_from: Some((request.last_term, request.last_index)),
                campaigns: true,
                at_ms: self.now_ms,
            },
            Body::RepairWait(wait) => HeardEnd {
                id: message.from,
                log: (wait.last_term, wait.last_index),
                admits_from: wait.acked_end,
                campaigns: false,
                at_ms: self.now_ms,
            },
            _ => return,
        };
        let room = self.heard_ends.len() < crate::constants::NODES_MAX;
        match self.heard_ends.iter_mut().find(|end| end.id == heard.id) {
            Some(end) => *end = heard,
            None if room => self.heard_ends.push(heard),
            None => {}
        }
    }

    /// A damaged node that may not campaign, at its election timeout:
    /// tells every other voter what it waits for, and says its entries
    /// are lost once no voter could be elected for [`LOST_ROUNDS`]
    /// timeouts in a row (see the module docs).
    pub(super) fn wait_for_repair(&mut self, actions: &mut Vec<Action>) {
        // No leader heard for an election timeout: forget it, as a node
        // that campaigns does. Kept, its lease would refuse every (pre-)vote
        // request for good — this node's timer restarts each timeout, and
        // it never campaigns — and a candidate that needs its vote would
        // never get it (simulator seed 62632).
        self.become_follower(self.term, NodeId::ZERO, actions);
        let wait = RepairWait {
            last_index: self.log.last_index(),
            last_term: self.log.last_term(),
            acked_end: self.acked_end,
        };
        for position in 0..self.peers.len() {
            let id = self.peers[position].id;
            if self.membership.is_voter(id) {
                self.send(id, OutgoingBody::RepairWait(wait), actions);
            }
        }
        match self.lost_to() {
            Some(best) if !self.lost_reported => {
                self.lost_rounds += 1;
                if self.lost_rounds >= LOST_ROUNDS {
                    self.lost_reported = true;
                    let acked_end = self.acked_end.expect("lost_to needs a known end");
                    actions.push(Action::MajorityLost { acked_end, best });
                }
            }
            _ => self.lost_rounds = 0,
        }
    }

    /// Whether the entries this node waits for are on no voter and no
    /// voter can be elected, from what was heard since the last leader:
    /// the most up to date voter log, if so.
    fn lost_to(&self) -> Option<(Term, LogIndex)> {
        let acked_end = self.acked_end?;
        if self.damaged_in == TERM_UNKNOWN {
            return None;
        }
        let own = HeardEnd {
            id: self.config.id,
            log: (self.log.last_term(), self.log.last_index()),
            admits_from: Some(acked_end),
            campaigns: false,
            at_ms: self.now_ms,
        };
        let heard_since = self
            .now_ms
            .saturating_sub(HEARD_FOR_TIMEOUTS.saturating_mul(self.config.timeout_ms_election));
        let voters = self.membership.members();
        let mut ends = Vec::with_capacity(voters.len());
        for &id in voters.as_slice() {
            if !self.membership.is_voter(id) {
                continue;
            }
            if id == self.config.id {
                ends.push(own);
            } else {
                let heard = self.heard_ends.iter().find(|end| end.id == id)?;
                if heard.at_ms < heard_since {
                    return None;
                }
                ends.push(*heard);
            }
        }
        let best = ends.iter().map(|end| end.log).max()?;
        if best >= acked_end {
            return None;
        }
        let electable = ends.iter().filter(|end| end.campaigns).any(|candidate| {
            self.membership.has_quorum(|voter| {
                ends.iter().any(|end| {
                    end.id == voter && end.admits_from.is_some_and(|from| candidate.log >= from)
                })
            })
        });
        (!electable).then_some(best)
    }
}
