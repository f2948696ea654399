//! Majority-loss seeds: where the damage goes past the fault model, so
//! that the nodes' word that entries are lost (`Action::MajorityLost`)
//! can be judged against the truth.
//!
//! ```text
//!  a tenth of the damage seeds (no churn): a second damaged node also
//!  when no undamaged voter holds what the damaged ones acknowledged
//!       │
//!       ├─ a leader can still be elected ─► the run goes on as any
//!       └─ none can (the truth, from every node's state, up or down)
//!            ─► some damaged node must say so after the heal, instead
//!               of the liveness the run could not have
//!  any seed: a node that says so while a voter could be elected, or
//!  names an end some voter's log reaches ─► violation
//! ```
//!
//! The truth is the vote rule of every voter of the settled
//! configuration, read from its core when it is up and from its durable
//! state when it is down (it restarts from that): an undamaged voter, or
//! a damaged one whose log is past the end it acknowledged, campaigns and
//! admits a log at least as up to date as its own; another damaged voter
//! admits one at least as up to date as that end (none, when unknown) and
//! does not campaign. A campaigner admitted by a quorum can win; if none
//! is, none ever will (logs change only under a leader).
//!
//! The other checkers stay on: a majority that lost entries elects no
//! one, so no election passes an acknowledged entry by, and the history
//! stays linearizable; only the liveness probe cannot commit.

use super::Simulation;
use crate::raft::action::TERM_UNKNOWN;
use crate::sim::checker::Violation;
use crate::types::{LogIndex, Term};

/// What a voter's vote rule is, as the truth has it.
struct Rule {
    log: (Term, LogIndex),
    campaigns: bool,
    admits_from: Option<(Term, LogIndex)>,
}

impl Simulation {
    /// The vote rule of every voter of the settled configuration (`None`
    /// while it is joint: these seeds only damage outside changes).
    fn vote_rules(&self) -> Option<Vec<(crate::types::NodeId, Rule)>> {
        let membership = self.config_committed.1;
        if membership.is_joint() {
            return None;
        }
        let mut rules = Vec::new();
        for &id in membership.voters.as_slice() {
            let node = &self.nodes[(id.get() - 1) as usize];
            let (log, hard_state) = if let Some(core) = &node.core {
                (
                    (core.log().last_term(), core.log().last_index()),
                    core.hard_state(),
                )
            } else {
                (node.disk.durable().last(), node.disk.durable_hard_state())
            };
            let rule = if hard_state.damaged_in == Term::ZERO {
                Rule {
                    log,
                    campaigns: true,
                    admits_from: Some(log),
                }
            } else {
                match hard_state.acked_end {
                    Some(end) if hard_state.damaged_in != TERM_UNKNOWN && log >= end => Rule {
                        log,
                        campaigns: true,
                        admits_from: Some(log),
                    },
                    end => Rule {
                        log,
                        campaigns: false,
                        admits_from: end.filter(|_| hard_state.damaged_in != TERM_UNKNOWN),
                    },
                }
            };
            rules.push((id, rule));
        }
        Some(rules)
    }

    /// Whether no voter can ever be elected, by the truth (module docs).
    pub(super) fn no_voter_electable(&self) -> bool {
        let Some(rules) = self.vote_rules() else {
            return false;
        };
        let membership = self.config_committed.1;
        !rules
            .iter()
            .filter(|(_, rule)| rule.campaigns)
            .any(|(_, candidate)| {
                membership.has_quorum(|voter| {
                    rules.iter().any(|(id, rule)| {
                        *id == voter && rule.admits_from.is_some_and(|from| candidate.log >= from)
                    })
                })
            })
    }

    /// `Action::MajorityLost` from `node`: true only when no voter can be
    /// elected and no voter's log reaches the end it waits for.
    pub(super) fn majority_lost(
        &mut self,
        node: usize,
        acked_end: (Term, LogIndex),
        best: (Term, LogIndex),
    ) -> Result<(), Violation> {
        let reached = self.vote_rules().and_then(|rules| {
            rules
                .into_iter()
                .map(|(_, rule)| rule.log)
                .find(|log| *log >= acked_end)
        });
        let electable = !self.no_voter_electable();
        if electable || reached.is_some() {
            return Err(Violation {
                property: "a node says entries are lost only when they are",
                detail: format!(
                    "node {} says no voter holds {acked_end:?} (best {best:?}) nor can be \
                     elected; a voter can be elected: {}, a log reaching it: {reached:?}",
                    node + 1,
                    electable
                ),
            });
        }
        self.trace(|| {
            format!(
                "node {} says a majority lost entries up to {acked_end:?}",
                node + 1
            )
        });
        self.majority_losses += 1;
        Ok(())
    }
}
