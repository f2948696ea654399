//! The key-value clients: gets, puts and compare-and-sets over the real
//! `kv::StateMachine`, with sessions so that a retried write takes effect
//! once; and the apply path that feeds every node's machine the committed
//! entries and checks that all machines agree at every index.
//!
//! Why apart: the key-value workload has its own history, its own retries
//! (same session sequence, possibly at another node) and its own checks
//! (`sim::kv`), beside the log clients'.

use std::rc::Rc;

use super::{Event, KV_TAG, Simulation};
use crate::check::linearizable::KvOp;
use crate::kv::KvResponse;
use crate::raft::{Core, ProposeError, Role};
use crate::sim::checker::Violation;
use crate::sim::disk::{BatchRef, SimBatch};
use crate::sim::kv::{KvEntry, KvOutcome};
use crate::types::{LogIndex, NodeId, Term};
use crate::wire::client::{KvCommand, KvOperation, decode_kv_command, encode_kv_command};
use crate::wire::{BatchKind, BatchView};

impl Simulation {
    /// Applies the committed entries `from + 1 ..= up_to` to the node's
    /// key-value machine; returns the answer of each kv entry. Checks that
    /// every machine has the same state at the same index, and counts each
    /// request's effects the first time any node applies its entry.
    pub(super) fn apply_kv(
        &mut self,
        node: usize,
        from: LogIndex,
        up_to: LogIndex,
    ) -> Result<Vec<(LogIndex, KvResponse)>, Violation> {
        let batches: Vec<BatchRef> = self.nodes[node]
            .disk
            .written()
            .batches
            .iter()
            .filter(|batch| batch.summary.last_index() > from && batch.summary.first_index <= up_to)
            .cloned()
            .collect();
        #[cfg(feature = "planted-bugs")]
        let skip_sessions = self.options.planted_bug == Some(crate::raft::PlantedBug::DoubleApply);
        #[cfg(not(feature = "planted-bugs"))]
        let skip_sessions = false;
        let first_time = self.kv_applied_max;
        let mut answers = Vec::new();
        let mut seen = Vec::new();
        let kv = &mut self.nodes[node].kv;
        let failed = |error: crate::kv::ApplyError| Violation {
            property: "kv state machine applies every committed entry",
            detail: error.to_string(),
        };
        for batch in &batches {
            if batch.summary.kind != BatchKind::Kv {
                let last = batch.summary.last_index().min(up_to);
                if last > kv.applied_index() {
                    kv.advance(last).map_err(failed)?;
                }
                continue;
            }
            let view = BatchView::parse(&batch.frame).expect("stored frames are valid");
            let mut index = batch.summary.first_index;
            let mut error = None;
            view.for_each_entry(|payload| {
                if error.is_none() && index > kv.applied_index() && index <= up_to {
                    let mut command = decode_kv_command(payload).expect("our own commands");
                    let request = (command.client_id, command.sequence);
                    let duplicate = matches!(
                        kv.sessions().check(command.client_id, command.sequence),
                        crate::kv::session::Check::Duplicate(_)
                    );
                    if skip_sessions {
                        // The planted bug: no session check at all.
                        command.client_id = 0;
                    }
                    match kv.apply(index, &command) {
                        Ok(response) => {
                            seen.push((index, request, duplicate, response.clone()));
                            answers.push((index, response));
                        }
                        Err(apply_error) => error = Some(apply_error),
                    }
                }
                index = index.next();
                Ok(())
            })
            .expect("stored frames are valid");
            if let Some(error) = error {
                return Err(failed(error));
            }
        }
        let hash = crate::sim::kv::state_hash(kv)?;
        if let Some(previous) = self.kv_states.insert(up_to.get(), hash)
            && previous != hash
        {
            return Err(Violation {
                property: "kv state machine safety",
                detail: format!(
                    "node {} has a different key-value state at index {up_to}",
                    node + 1
                ),
            });
        }
        for (index, request, duplicate, response) in seen {
            let Some(&operation) = self.kv_requests.get(&request) else {
                continue;
            };
            let entry = &mut self.kv_history[operation];
            if duplicate {
                entry.answered_from_session = true;
            }
            if index > first_time && !duplicate && crate::sim::kv::took_effect(&response) {
                entry.effects += 1;
            }
        }
        self.kv_applied_max = self.kv_applied_max.max(up_to);
        Ok(answers)
    }

    pub(super) fn kv_invoke(&mut self, client: u32) -> Result<(), Violation> {
        if self.healed || self.kv_clients[client as usize].operation.is_some() {
            return Ok(());
        }
        let key = self.random.between(1, crate::sim::kv::KEYS);
        let op = match self.random.below(10) {
            0..4 => KvOp::Get { key, value: None },
            4..7 => {
                let value = self.kv_next_value;
                self.kv_next_value += 1;
                KvOp::Put { key, value }
            }
            _ => {
                let to = self.kv_next_value;
                self.kv_next_value += 1;
                // Expect a recent value (often the current one), or absent.
                let from = if self.random.chance(1, 5) || to < 2 {
                    None
                } else {
                    Some(to - 1 - self.random.below(3.min(to - 1)))
                };
                KvOp::Cas {
                    key,
                    from,
                    to: Some(to),
                }
            }
        };
        let state = &mut self.kv_clients[client as usize];
        let sequence = if matches!(op, KvOp::Get { .. }) {
            0
        } else {
            state.sequence += 1;
            state.sequence
        };
        self.kv_history.push(KvEntry {
            client,
            op,
            sequence,
            invoked_ms: self.now,
            completed_ms: u64::MAX,
            outcome: KvOutcome::Info,
            attempts: 0,
            effects: 0,
            answered_from_session: false,
            lost_to_crash: false,
        });
        let operation = self.kv_history.len() - 1;
        if sequence != 0 {
            self.kv_requests
                .insert((kv_session(client), sequence), operation);
        }
        self.kv_clients[client as usize].operation = Some(operation);
        self.schedule(crate::sim::kv::GIVE_UP_MS, Event::KvGiveUp(operation));
        self.kv_attempt(operation)
    }

    /// One attempt of a key-value operation at the client's guess of the
    /// leader; a refused or lost attempt is retried (`kv_retry`).
    pub(super) fn kv_attempt(&mut self, operation: usize) -> Result<(), Violation> {
        let entry = &mut self.kv_history[operation];
        if entry.completed_ms != u64::MAX || self.healed {
            return Ok(());
        }
        entry.attempts += 1;
        let (client, op, sequence) = (entry.client, entry.op, entry.sequence);
        let node = self.kv_clients[client as usize].leader_guess;
        let is_leader = self.nodes[node]
            .core
            .as_ref()
            .is_some_and(|core| core.role() == Role::Leader);
        if !is_leader {
            let leader = self.nodes[node].core.as_ref().map(Core::leader);
            self.kv_redirect(client, leader);
            self.kv_retry(operation);
            return Ok(());
        }
        let command = match op {
            KvOp::Get { .. } => {
                let mut actions = std::mem::take(&mut self.actions);
                actions.clear();
                let core = self.nodes[node].core.as_mut().expect("leader is up");
                let result = core.read_index(&mut actions);
                if let Ok(round) = result {
                    self.nodes[node]
                        .reads_waiting
                        .push_back((round, operation + KV_TAG));
                }
                let executed = self.execute(node, &actions, None, None);
                self.actions = actions;
                if result.is_err() {
                    self.kv_retry(operation);
                }
                return executed;
            }
            KvOp::Put { key, value } => {
                (key, KvOperation::Put(crate::sim::kv::encode_value(value)))
            }
            KvOp::Cas { key, from, to } => (
                key,
                KvOperation::Cas {
                    expected: from.map(crate::sim::kv::encode_value),
                    new: crate::sim::kv::encode_value(to.unwrap_or(0)),
                },
            ),
            KvOp::Delete { key } => (key, KvOperation::Delete),
        };
        let command = KvCommand {
            client_id: kv_session(client),
            sequence,
            key: command.0.to_le_bytes().to_vec(),
            operation: command.1,
            time_ms: self.now + self.nodes[node].clock_offset_ms,
        };
        let payload = encode_kv_command(&command);
        let unstamped = SimBatch::kv(Term::ZERO, LogIndex::ZERO, &[payload]);
        let mut actions = std::mem::take(&mut self.actions);
        actions.clear();
        let core = self.nodes[node].core.as_mut().expect("leader is up");
        let result = core.propose(BatchKind::Kv, 1, unstamped.summary.bytes, &mut actions);
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
                self.nodes[node]
                    .kv_proposals
                    .push((operation, term, first_index));
                self.execute(node, &actions, None, Some(&batch))
            }
            Err(error) => {
                let leader = match error {
                    ProposeError::NotLeader { leader } => Some(leader),
                    _ => None,
                };
                self.kv_redirect(client, leader);
                self.kv_retry(operation);
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

    /// Schedules another attempt of the operation (same session sequence).
    pub(super) fn kv_retry(&mut self, operation: usize) {
        if self.kv_history[operation].completed_ms != u64::MAX {
            return;
        }
        let delay = self.random.between(5, 40);
        self.schedule(delay, Event::KvAttempt(operation));
    }

    fn kv_redirect(&mut self, client: u32, leader: Option<NodeId>) {
        let guess = match leader {
            Some(leader) if leader != NodeId::ZERO => (leader.get() - 1) as usize,
            _ => self.random.below(self.nodes.len() as u64) as usize,
        };
        self.kv_clients[client as usize].leader_guess = guess;
    }

    /// The outcome a write's answer means.
    pub(super) fn kv_outcome(&self, operation: usize, response: &KvResponse) -> KvOutcome {
        let op = self.kv_history[operation].op;
        match response {
            KvResponse::Done | KvResponse::CasApplied => KvOutcome::Ok(op),
            KvResponse::CasMismatch(_) => KvOutcome::Fail,
            // Expired or stale session: the request's fate is unknown.
            KvResponse::Refused(_) => KvOutcome::Info,
        }
    }

    /// Records the outcome of a key-value operation (the first one only)
    /// and lets its client go on.
    pub(super) fn kv_complete(&mut self, operation: usize, outcome: KvOutcome) {
        let entry = &mut self.kv_history[operation];
        if entry.completed_ms != u64::MAX {
            return;
        }
        entry.completed_ms = self.now;
        entry.outcome = outcome;
        let client = entry.client as usize;
        if self.kv_clients[client].operation == Some(operation) {
            self.kv_clients[client].operation = None;
            let think = self.random.between(1, 30);
            self.schedule(think, Event::KvClient(client as u32));
        }
    }
}

/// The session id of key-value client `client` (never 0: no session).
fn kv_session(client: u32) -> u64 {
    u64::from(client) + 1
}
