//! The log clients: appends and ReadIndex reads, each sent to the node its
//! client believes leads, with every outcome recorded in the history the
//! checkers judge; and the proposal path the other proposers share
//! (`proposed`, `replicate`: when a node calls `Core::replicate`, as the
//! seed's [`Replication`] says).
//!
//! Why apart: the history is the clients' view of the cluster, and what is
//! recorded here (ok, fail, info) is exactly what the checkers may assume.

use std::rc::Rc;

use super::{CLIENT_TIMEOUT_MS, Event, KV_TAG, Replication, Simulation, TURN_MS_MAX};
use crate::constants::BATCH_ENTRIES_MAX;
use crate::raft::{Core, ProposeError, Role};
use crate::sim::checker::{HistoryEntry, Operation, Outcome, Violation};
use crate::sim::disk::SimBatch;
use crate::types::{LogIndex, NodeId, Term};
use crate::wire::BatchKind;

impl Simulation {
    pub(super) fn client_invoke(&mut self, client: u32) -> Result<(), Violation> {
        if self.healed || self.clients[client as usize].operation.is_some() {
            return Ok(());
        }
        let node = self.clients[client as usize].leader_guess;
        let operation = if self.random.chance(7, 10) {
            let count = self.random.between(1, 4) as u32;
            let first_value = self.next_value;
            self.next_value += u64::from(count);
            Operation::Append { first_value, count }
        } else {
            Operation::Read
        };
        let index = self.invoke(client, operation);
        self.clients[client as usize].operation = Some(index);
        self.submit(node, index)?;
        Ok(())
    }

    pub(super) fn invoke(&mut self, client: u32, operation: Operation) -> usize {
        self.checker.history.push(HistoryEntry {
            client,
            operation,
            invoked_ms: self.now,
            completed_ms: u64::MAX,
            outcome: Outcome::Info,
        });
        let index = self.checker.history.len() - 1;
        self.schedule(CLIENT_TIMEOUT_MS, Event::ClientTimeout(index));
        index
    }

    /// Sends operation `index` to `node`: refused at once unless it leads.
    pub(super) fn submit(&mut self, node: usize, index: usize) -> Result<(), Violation> {
        let operation = self.checker.history[index].operation;
        let leader = self.nodes[node].core.as_ref().map(Core::leader);
        let is_leader = self.nodes[node]
            .core
            .as_ref()
            .is_some_and(|core| core.role() == Role::Leader);
        if !is_leader {
            self.redirect(index, leader);
            self.complete(index, Outcome::Fail);
            return Ok(());
        }
        match operation {
            Operation::Append { first_value, count } => {
                self.propose(node, index, first_value, count)
            }
            Operation::Read => {
                let mut actions = std::mem::take(&mut self.actions);
                actions.clear();
                let core = self.nodes[node].core.as_mut().expect("leader is up");
                let result = core.read_index(&mut actions);
                if let Ok(round) = result {
                    self.nodes[node].reads_waiting.push_back((round, index));
                }
                let executed = self.execute(node, &actions, None, None);
                self.actions = actions;
                if result.is_err() {
                    self.complete(index, Outcome::Fail);
                }
                executed
            }
        }
    }

    fn propose(
        &mut self,
        node: usize,
        index: usize,
        first_value: u64,
        count: u32,
    ) -> Result<(), Violation> {
        assert!(count <= BATCH_ENTRIES_MAX);
        let mut actions = std::mem::take(&mut self.actions);
        actions.clear();
        // The frame's size does not depend on the stamped term and index:
        // encode it first, tell the core its size, stamp what it assigns.
        let values: Vec<u64> = (first_value..first_value + u64::from(count)).collect();
        let unstamped = SimBatch::new(BatchKind::Data, Term::ZERO, LogIndex::ZERO, &values);
        let core = self.nodes[node].core.as_mut().expect("leader is up");
        let result = core.propose(
            BatchKind::Data,
            count,
            unstamped.summary.bytes,
            &mut actions,
        );
        let accepted = result.is_ok();
        let executed = match result {
            Ok((term, first_index)) => {
                let mut batch = unstamped;
                crate::wire::BatchMut::parse(&mut batch.frame)
                    .expect("our own frame")
                    .stamp(term, first_index);
                batch.summary.term = term;
                batch.summary.first_index = first_index;
                let batch = Rc::new(batch);
                self.nodes[node].proposals.push((index, term, first_index));
                self.execute(node, &actions, None, Some(&batch))
            }
            Err(error) => {
                let leader = match error {
                    ProposeError::NotLeader { leader } => Some(leader),
                    _ => None,
                };
                self.redirect(index, leader);
                self.complete(index, Outcome::Fail);
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

    /// `node` proposed a batch: send it now, at the end of the node's turn,
    /// or leave it to the tick, as the seed's [`Replication`] says.
    pub(super) fn proposed(&mut self, node: usize) -> Result<(), Violation> {
        match self.replication {
            Replication::EachProposal => {
                self.nodes[node].proposals_unsent += 1;
                self.replicate(node)
            }
            Replication::Turn => {
                let state = &mut self.nodes[node];
                state.proposals_unsent += 1;
                if !state.replicate_scheduled {
                    state.replicate_scheduled = true;
                    let delay = self.random.below(TURN_MS_MAX + 1);
                    self.schedule(delay, Event::Replicate(node));
                }
                Ok(())
            }
            Replication::TickOnly => Ok(()),
        }
    }

    /// Ends `node`'s turn: its core sends what was proposed since the last
    /// call.
    pub(super) fn replicate(&mut self, node: usize) -> Result<(), Violation> {
        let state = &mut self.nodes[node];
        state.replicate_scheduled = false;
        if std::mem::take(&mut state.proposals_unsent) >= 2 {
            self.replicates_grouped += 1;
        }
        self.with_core(node, Core::replicate)
    }

    fn redirect(&mut self, operation: usize, leader: Option<NodeId>) {
        let client = self.checker.history[operation].client as usize;
        let guess = match leader {
            Some(leader) if leader != NodeId::ZERO => (leader.get() - 1) as usize,
            _ => self.random.below(self.nodes.len() as u64) as usize,
        };
        if client < self.clients.len() {
            self.clients[client].leader_guess = guess;
        }
    }

    /// Records the outcome of an operation (the first one only) and lets
    /// its client go on.
    pub(super) fn complete(&mut self, operation: usize, outcome: Outcome) {
        if operation >= KV_TAG {
            // A key-value get's attempt failed (its reads are answered in
            // `serve_reads`): try again.
            self.kv_retry(operation - KV_TAG);
            return;
        }
        let entry = &mut self.checker.history[operation];
        if entry.completed_ms != u64::MAX {
            return;
        }
        entry.completed_ms = self.now;
        entry.outcome = outcome;
        let client = entry.client;
        if let Some(probe) = self
            .probes
            .iter()
            .position(|probe| *probe == Some(operation))
            && !matches!(outcome, Outcome::Appended { .. })
        {
            self.probes[probe] = None;
        }
        if (client as usize) < self.clients.len()
            && self.clients[client as usize].operation == Some(operation)
        {
            self.clients[client as usize].operation = None;
            let think = self.random.between(1, 30);
            self.schedule(think, Event::Client(client));
        }
    }
}
