//! Membership churn (see the `cluster` module docs): membership steps at
//! the leader through the core's own rules, leaving joint configurations,
//! and the record of committed configurations.
//!
//! Why apart: that record decides which disks must hold the committed
//! entries (`check_committed_durable`) and which configuration a snapshot
//! must record, so it is kept beside the changes that produce it.

use std::rc::Rc;

use super::Simulation;
use crate::raft::{Change, Core, Membership};
use crate::random::Random;
use crate::sim::checker::Violation;
use crate::sim::disk::SimBatch;
use crate::types::{LogIndex, NodeId, Term};

impl Simulation {
    /// One membership step at the current leader, through the core's rules:
    /// add a learner (a spare, or a removed node), promote a learner,
    /// remove a node (the leader too), replace a voter by a learner, or
    /// transfer leadership. A refused change is fine (that the core
    /// refuses is part of what runs); nothing is forced.
    pub(super) fn churn(&mut self) -> Result<(), Violation> {
        let Some(leader) = self.leader_position() else {
            return Ok(());
        };
        let core = self.nodes[leader].core.as_ref().expect("leader is up");
        let membership = *core.membership();
        let members = membership.members();
        let pick = |random: &mut Random, ids: &[NodeId]| -> Option<NodeId> {
            (!ids.is_empty()).then(|| ids[random.below(ids.len() as u64) as usize])
        };
        let outside: Vec<NodeId> = self
            .nodes
            .iter()
            .map(|node| node.id)
            .filter(|id| !members.contains(*id))
            .collect();
        let learners = membership.learners.as_slice().to_vec();
        let voters = membership.voters.as_slice().to_vec();
        let change = match self.random.below(10) {
            0..=2 => match pick(&mut self.random, &outside) {
                Some(id) => Change::AddLearner(id),
                None => return Ok(()),
            },
            3..=4 => match pick(&mut self.random, &learners) {
                Some(id) => Change::Promote(id),
                None => return Ok(()),
            },
            // Removing a voter keeps at least three, so the nemesis (which
            // crashes one node at a time) still leaves a quorum most of
            // the time; a learner may always go.
            5..=6 => {
                let removable: Vec<NodeId> = if voters.len() > 3 {
                    members.as_slice().to_vec()
                } else {
                    learners.clone()
                };
                match pick(&mut self.random, &removable) {
                    Some(id) => Change::Remove(id),
                    None => return Ok(()),
                }
            }
            7..=8 => match (
                pick(&mut self.random, &learners),
                pick(&mut self.random, &voters),
            ) {
                (Some(add), Some(remove)) => Change::Replace { add, remove },
                _ => return Ok(()),
            },
            _ => {
                if let Some(to) = pick(&mut self.random, &voters) {
                    self.trace(|| format!("churn: transfer leadership to {to}"));
                    self.with_core(leader, |core, actions| {
                        let _ = core.transfer_leadership(to, actions);
                    })?;
                }
                return Ok(());
            }
        };
        let core = self.nodes[leader].core.as_ref().expect("leader is up");
        match core.plan_change(change) {
            Ok(next) => {
                self.trace(|| format!("churn: {change:?} → {next:?}"));
                self.propose_config(leader, next)
            }
            Err(error) => {
                self.trace(|| format!("churn: {change:?} refused: {error}"));
                if matches!(error, crate::raft::ChangeError::NotCaughtUp { .. }) {
                    self.promotions_refused += 1;
                }
                Ok(())
            }
        }
    }

    /// A leader whose joint configuration committed proposes leaving it.
    pub(super) fn leave_joint_if_due(&mut self, node: usize) -> Result<(), Violation> {
        let due = self.nodes[node]
            .core
            .as_ref()
            .and_then(Core::leave_joint_due);
        match due {
            Some(membership) => {
                self.trace(|| format!("node {}: leave joint → {membership:?}", node + 1));
                self.propose_config(node, membership)
            }
            None => Ok(()),
        }
    }

    /// Proposes configuration `membership` at leader `node`.
    fn propose_config(&mut self, node: usize, membership: Membership) -> Result<(), Violation> {
        let mut actions = std::mem::take(&mut self.actions);
        actions.clear();
        let unstamped = SimBatch::config(Term::ZERO, LogIndex::ZERO, membership);
        let core = self.nodes[node].core.as_mut().expect("leader is up");
        let result = core.propose_membership(membership, unstamped.summary.bytes, &mut actions);
        let accepted = result.is_ok();
        let executed = match result {
            Ok((term, first_index)) => {
                self.trace(|| format!("node {}: config at {first_index}@{term}", node + 1));
                let mut batch = unstamped;
                crate::wire::BatchMut::parse(&mut batch.frame)
                    .expect("our own frame")
                    .stamp(term, first_index);
                batch.summary.term = term;
                batch.summary.first_index = first_index;
                self.execute(node, &actions, None, Some(&Rc::new(batch)))
            }
            Err(error) => {
                self.trace(|| format!("node {}: config refused: {error}", node + 1));
                self.execute(node, &actions, None, None)
            }
        };
        self.actions = actions;
        executed?;
        if accepted {
            self.proposed(node)?;
        }
        Ok(())
    }

    /// Notes the configuration entries that `node` just applied: the latest
    /// committed one decides which disks must hold the committed entries.
    pub(super) fn note_committed_configs(&mut self, node: usize, from: LogIndex, up_to: LogIndex) {
        let latest = self.nodes[node]
            .disk
            .written()
            .batches
            .iter()
            .filter(|batch| batch.summary.first_index > from && batch.summary.first_index <= up_to)
            .filter_map(|batch| Some((batch.summary.first_index, batch.membership?)))
            .filter(|(index, _)| *index > self.config_committed.0)
            .collect::<Vec<_>>();
        if let Some(last) = latest.last() {
            self.membership_changes += latest.len() as u64;
            self.configs_committed.extend_from_slice(&latest);
            self.config_committed = *last;
            self.trace(|| format!("node {}: configuration committed {last:?}", node + 1));
        }
    }

    /// The configuration committed as of `index`: the latest committed
    /// configuration entry at or below it. Complete up to any applied
    /// index: whichever node applied an entry first noted the
    /// configurations up to it (a node that skipped entries by installing a
    /// snapshot got it from one that applied them).
    pub(super) fn config_committed_at(&self, index: LogIndex) -> Membership {
        let after = self
            .configs_committed
            .partition_point(|(at, _)| *at <= index);
        self.configs_committed[after - 1].1
    }
}
