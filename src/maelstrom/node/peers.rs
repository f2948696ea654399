//! The Raft side: messages from the other nodes decoded and stepped into
//! the core, the core's actions executed in order (storage, peers, apply,
//! reads) and storage durability fed back.
//!
//! Why apart: this is the node's stand-in for the server's event loop, the
//! one place that obeys `raft::Action`'s ordering contract over the
//! in-memory log and Maelstrom's network.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::Value;

use super::Node;
use crate::maelstrom::protocol::{Envelope, body, code, error_body};
use crate::net::codec::{self, PeerBody};
use crate::raft::{self, Action, AppendEntries, BatchSummary, Body, Message, OutgoingBody};
use crate::storage::memory::MemoryLog;
use crate::storage::visit_batches;
use crate::storage::{self, LogStorage, StorageError};
use crate::types::LogId;
use crate::wire::{BatchKind, WireError, encode_batch, split_frame};

impl Node {
    pub(super) fn step(&mut self, envelope: &Envelope) {
        let Some(running) = self.running.as_mut() else {
            return;
        };
        let Some(bytes) = envelope
            .body
            .get("data")
            .and_then(Value::as_str)
            .and_then(|data| BASE64.decode(data).ok())
        else {
            tracing::warn!(from = %envelope.src, "raft message without base64 data");
            return;
        };
        let decoded = split_frame(&bytes).and_then(|split| {
            let (header, batches) = split.ok_or(WireError::Truncated {
                have: bytes.len(),
                need: bytes.len() + 1,
            })?;
            let header = codec::decode(header, &mut running.summaries)?;
            Ok((header, batches))
        });
        let (header, batch_bytes) = match decoded {
            Ok(decoded) => decoded,
            Err(error) => {
                tracing::warn!(from = %envelope.src, %error, "dropping a malformed raft message");
                return;
            }
        };
        if header.to != running.id {
            return;
        }
        let summaries = std::mem::take(&mut running.summaries);
        let body = match header.body {
            PeerBody::AppendEntries {
                prev_index,
                prev_term,
                leader_commit,
                ..
            } => Body::AppendEntries(AppendEntries {
                prev_index,
                prev_term,
                leader_commit,
                batches: &summaries,
                configs: &[],
            }),
            PeerBody::AppendResponse(response) => Body::AppendResponse(response),
            PeerBody::RequestVote(request) => Body::RequestVote(request),
            PeerBody::VoteResponse(response) => Body::VoteResponse(response),
            PeerBody::Heartbeat(heartbeat) => Body::Heartbeat(heartbeat),
            PeerBody::HeartbeatResponse(response) => Body::HeartbeatResponse(response),
            PeerBody::TimeoutNow => Body::TimeoutNow,
            PeerBody::InstallSnapshot(install) => Body::InstallSnapshot(install),
            PeerBody::SnapshotResponse(response) => Body::SnapshotResponse(response),
        };
        let message = Message {
            from: header.from,
            to: header.to,
            term: header.term,
            body,
        };
        let mut actions = std::mem::take(&mut running.actions);
        running.core.step(&message, &mut actions);
        running.actions = actions;
        running.summaries = summaries;
        self.execute(None, Some(batch_bytes));
    }

    /// Executes the queued actions in order (see `raft::Action`'s ordering
    /// contract), then feeds storage durability back until nothing changes.
    pub(super) fn execute(&mut self, proposal: Option<&[u8]>, received: Option<&[u8]>) {
        let Some(running) = self.running.as_mut() else {
            return;
        };
        let mut actions = std::mem::take(&mut running.actions);
        for action in actions.drain(..) {
            self.execute_one(action, proposal, received);
        }
        self.running.as_mut().expect("initialized").actions = actions;
        self.feed_durability();
    }

    fn feed_durability(&mut self) {
        // Each round reports at most the durability of the writes issued by
        // the previous one; with an immediate disk, two rounds settle.
        for _ in 0..4 {
            let running = self.running.as_mut().expect("initialized");
            let durability = match running
                .storage
                .flush()
                .and_then(|()| running.storage.poll())
            {
                Ok(durability) => durability,
                Err(error) => return self.storage_failed(&error),
            };
            let mut actions = std::mem::take(&mut running.actions);
            if durability.hard_state != running.durable_hard_state {
                running.durable_hard_state = durability.hard_state;
                let hard_state = raft::HardState {
                    term: durability.hard_state.term,
                    vote: durability.hard_state.vote,
                    commit: durability.hard_state.commit,
                };
                running.core.hard_state_persisted(hard_state, &mut actions);
            }
            if durability.index != running.durable_index {
                running.durable_index = durability.index;
                if let Some(term) = running.storage.term_at(durability.index) {
                    running.core.persisted(durability.index, term, &mut actions);
                }
            }
            if actions.is_empty() {
                running.actions = actions;
                return;
            }
            for action in actions.drain(..) {
                self.execute_one(action, None, None);
            }
            self.running.as_mut().expect("initialized").actions = actions;
        }
    }

    fn execute_one(&mut self, action: Action, proposal: Option<&[u8]>, received: Option<&[u8]>) {
        let running = self.running.as_mut().expect("initialized");
        let stored = match action {
            Action::PersistHardState(state) => {
                running.storage.store_hard_state(storage::HardState {
                    term: state.term,
                    vote: state.vote,
                    commit: state.commit,
                })
            }
            Action::Truncate { from } => {
                let truncated = running.storage.truncate_suffix(from);
                running.durable_index = running.durable_index.min(from.prev());
                // Writes proposed here at or above `from` stay pending: the
                // nodes they reached may still elect a leader that commits
                // them (Raft figure 8), so "not applied" is known only once
                // another entry is committed at their index (see `apply`).
                truncated
            }
            Action::AppendProposal { .. } => running
                .storage
                .append(proposal.expect("AppendProposal comes from propose"))
                .map(drop),
            Action::AppendNoop { term, index } => {
                let frame = encode_batch(BatchKind::Noop, term, index, &[b""]);
                running.storage.append(&frame).map(drop)
            }
            Action::AppendReceived { skip, .. } => append_received(
                &mut running.storage,
                received.expect("AppendReceived comes from step"),
                skip,
            ),
            Action::Send(message) => {
                self.send_peer(&message);
                Ok(())
            }
            Action::Apply { up_to } => {
                self.apply(up_to);
                Ok(())
            }
            Action::ReadReady {
                through_round,
                index,
            } => {
                running.reads.confirmed(through_round, index);
                self.serve_reads();
                Ok(())
            }
            Action::ReadsAborted { through_round } => {
                let mut failed = Vec::new();
                running
                    .reads
                    .abort(through_round, |read| failed.push(read.reply));
                for reply in failed {
                    self.reply(
                        &reply,
                        error_body(
                            code::TEMPORARILY_UNAVAILABLE,
                            "leadership lost before the read was confirmed: retry",
                        ),
                    );
                }
                Ok(())
            }
            Action::SendSnapshot { to } => {
                tracing::warn!(peer = %to, "peer needs a snapshot; this node keeps the whole log, so none is taken");
                Ok(())
            }
            Action::RoleChanged { role, term, leader } => {
                tracing::info!(?role, %term, %leader, "role changed");
                Ok(())
            }
        };
        if let Err(error) = stored {
            self.storage_failed(&error);
        }
    }

    /// The in-memory log refused an operation: a bug, not a disk. Stop
    /// applying and answering writes rather than diverge.
    fn storage_failed(&mut self, error: &StorageError) {
        tracing::error!(%error, "log storage failed; this node stops applying");
        let running = self.running.as_mut().expect("initialized");
        if running.failed.is_none() {
            running.failed = Some(format!("log storage: {error}"));
        }
    }

    fn send_peer(&mut self, message: &raft::Outgoing) {
        let running = self.running.as_ref().expect("initialized");
        let mut summaries = Vec::new();
        let mut frames = Vec::new();
        if let OutgoingBody::AppendEntries(range) = message.body {
            let collected = visit_batches(&running.storage, range.first_index, |view, frame| {
                if view.last_index() > range.last_index {
                    return Ok::<_, StorageError>(false);
                }
                summaries.push(BatchSummary {
                    term: view.term(),
                    first_index: view.first_index(),
                    count: view.count(),
                    bytes: view.len() as u32,
                    kind: view.kind()?,
                });
                frames.extend_from_slice(frame);
                Ok(true)
            });
            if let Err(error) = collected {
                tracing::error!(%error, "cannot read batches to send");
                return;
            }
        }
        let mut bytes = codec::encode(LogId::ZERO, message, &summaries);
        bytes.extend_from_slice(&frames);
        let to = running.ids[(message.to.get() - 1) as usize].clone();
        self.send(&to, body("raft", &[("data", BASE64.encode(&bytes).into())]));
    }
}

/// Appends the batches of a received AppendEntries from the `skip`-th on.
fn append_received(
    storage: &mut MemoryLog,
    mut rest: &[u8],
    skip: u32,
) -> Result<(), StorageError> {
    let mut position = 0u32;
    while let Some((frame, tail)) = split_frame(rest)? {
        rest = tail;
        if position >= skip {
            storage.append(frame)?;
        }
        position += 1;
    }
    Ok(())
}
