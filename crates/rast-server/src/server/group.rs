//! One Raft group (one named log) on a core: the pure core, its storage,
//! and the clients waiting on it.
//!
//! The group turns the core's [`Action`]s into storage calls, peer frames
//! and client answers, and feeds storage completions back as
//! `persisted` / `hard_state_persisted`. It never waits for the disk: a
//! turn queues writes, `flush` issues them with one sync per file, and a
//! later turn's `poll` reports how far they are durable.
//!
//! Client appends are answered only when their last index is committed:
//! "appended" if it still holds the term they were appended in, else "not
//! leader" (another entry committed at that index, so theirs never will,
//! and a retry cannot duplicate it). An entry overwritten here by a new
//! leader is not answered then: the nodes it reached may still elect a
//! leader that commits it.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use super::connection::FileSpan;
use super::metrics::PayloadTally;
use crate::kv::{ReadQueue, StateMachine};
use crate::net::codec::{PeerBody, PeerHeader};
use crate::raft::{
    self, Action, AppendEntries, BatchSummary, Body, Boundary, Core, Membership, Message, NodeSet,
    ProposeError, Restart, Role, RunLimits,
};
use crate::search::partition_point_from_end;
use crate::storage::segment::Reservation;
use crate::storage::{self, LogStorage, StorageError, visit_batches};
use crate::types::{LogId, LogIndex, NodeId, Term};
use crate::wire::client::{ErrorKind, ErrorReply, Response, ResponseBody};
use crate::wire::{BatchKind, BatchMut, BatchView, WireError, encode_batch, split_frame};

mod admin;
mod damage;
mod install;
mod kv;
mod reads;
mod replicate;
pub mod snapshot;
#[cfg(test)]
mod tests;

pub use kv::KV_LOG;
use replicate::{check_received, summary_of};

/// Where an answer goes: a connection on this core and the request id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplyTo {
    /// Connection slot on the core.
    pub connection: usize,
    /// Its generation (a reused slot is another connection).
    pub generation: u64,
    /// The client's request id.
    pub request_id: u64,
}

/// One piece of what a client is sent.
#[derive(Debug)]
pub enum ClientOut {
    /// A response frame.
    Bytes(Vec<u8>),
    /// Stored batch frames, straight from the log file.
    File(FileSpan),
    /// Stored batch frames still in the shared memory they arrived in.
    Shared(Bytes),
    /// Stored batch frames copied out of a store's buffer (counted).
    Copied(Bytes),
}

/// Batch bytes of a peer message, as the store holds them.
#[derive(Debug)]
pub enum Piece {
    /// In the shared memory they arrived in: sent from there.
    Shared(Bytes),
    /// In the log file: spliced file → pipe → socket.
    File(FileSpan),
    /// Copied out of a store's buffer (counted).
    Copied(Bytes),
}

impl Piece {
    /// Its length in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Piece::Shared(bytes) | Piece::Copied(bytes) => bytes.len() as u64,
            Piece::File(span) => span.len,
        }
    }

    /// True when it holds no byte.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A message for a peer: its encoded header, then (an AppendEntries') the
/// batch frames, sent from where they are without being copied together.
#[derive(Debug)]
pub struct PeerFrame {
    /// The encoded `PeerMessage` frame.
    pub header: Vec<u8>,
    /// The batch frames after it, in order.
    pub pieces: Vec<Piece>,
}

impl From<Vec<u8>> for PeerFrame {
    /// A message with no batch frames after its header.
    fn from(header: Vec<u8>) -> Self {
        Self {
            header,
            pieces: Vec::new(),
        }
    }
}

/// What a group wants sent, collected during a call.
#[derive(Debug, Default)]
pub struct Outbound {
    /// Messages for peers.
    pub peers: Vec<(NodeId, PeerFrame)>,
    /// For clients, in order: response frames, and stored batch frames as
    /// file spans (sent by splice) or bytes.
    pub clients: Vec<(ReplyTo, ClientOut)>,
    /// Leader changes seen (for metrics).
    pub leader_changes: u64,
    /// Batches a damaged copy appended from its leader (repair).
    pub repaired_batches: u64,
    /// Syncs completed: (latency µs, entries made durable).
    pub syncs: Vec<(u64, u64)>,
    /// Payload bytes sent and copied (for metrics).
    pub payload: PayloadTally,
    /// Members of a configuration that came into force, with addresses:
    /// the shard keeps a link to each.
    pub members: Vec<(NodeId, String)>,
    /// Nodes that left a group's configuration: the shard drops its link
    /// unless another of its groups still counts them.
    pub removed: Vec<NodeId>,
}

impl Outbound {
    /// Queues a client response.
    pub fn reply(&mut self, to: ReplyTo, body: ResponseBody) {
        let frame = crate::wire::client::encode_response(&Response {
            request_id: to.request_id,
            body,
        });
        self.clients.push((to, ClientOut::Bytes(frame)));
    }

    /// Queues a client error.
    pub fn error(&mut self, to: ReplyTo, kind: ErrorKind, message: impl Into<String>) {
        self.reply(
            to,
            ResponseBody::Error(ErrorReply {
                message: message.into(),
                kind,
            }),
        );
    }
}

/// An append waiting for its commit, or a key-value write waiting for its
/// apply.
#[derive(Clone, Copy, Debug)]
struct PendingAppend {
    first_index: LogIndex,
    last_index: LogIndex,
    term: Term,
    count: u32,
    reply: ReplyTo,
    /// A key-value write: answered with its apply's response.
    write: bool,
}

/// A client following the log.
#[derive(Clone, Copy, Debug)]
struct Tail {
    reply: ReplyTo,
    next: LogIndex,
    max_entries: u32,
}

/// Everything that can stop a group.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    /// Storage failed (fail-stop for this log).
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// Stored bytes failed to parse.
    #[error("stored batch: {0}")]
    Wire(#[from] WireError),
}

/// One named log on this node.
pub struct Group {
    /// The group id.
    pub id: LogId,
    /// The log's name.
    pub name: String,
    core: Core,
    storage: Box<dyn LogStorage>,
    actions: Vec<Action>,
    pending: VecDeque<PendingAppend>,
    tails: Vec<Tail>,
    /// Durability last fed to the core.
    durable_index: LogIndex,
    durable_hard_state: storage::HardState,
    /// Set when storage failed: the group refuses work.
    failed: Option<String>,
    /// The failure was a full disk: the store itself is intact, and the
    /// group can be reopened from it once the disk has room again.
    failed_for_space: bool,
    /// The scrubber found damage in the store's files: reopening it lets
    /// recovery cut the log there, and the leader repair it.
    failed_for_damage: bool,
    /// Damaged records and snapshot files recovery found (and cut) while
    /// opening, not yet counted at `/metrics`.
    damage_found: u64,
    /// Address of each node, for redirects.
    addresses: Vec<(NodeId, String)>,
    /// Reused for decoding config batches.
    configs: Vec<Membership>,
    /// Spliced batches waiting for the core's verdict (see `step_spliced`),
    /// and how many batches the message carried.
    spliced: Option<(Reservation, u32)>,
    /// When the oldest write not yet durable was flushed (sync latency).
    flushed_at: Option<std::time::Instant>,
    /// The leader last reported.
    leader: NodeId,
    /// The key-value state machine, on the `kv` log only.
    kv: Option<StateMachine>,
    /// Linearizable reads waiting for their ReadIndex round and the apply.
    reads: ReadQueue<(ReplyTo, Vec<u8>)>,
    /// Admin requests waiting for their outcome.
    admin_waits: Vec<admin::AdminWait>,
    /// The nodes last reported to the shard as linked (see
    /// `linked_members`).
    linked_reported: NodeSet,
    /// Snapshots: taking, compacting, streaming, installing.
    snapshots: snapshot::Snapshots,
    /// The time of the last tick.
    now_ms: u64,
    /// Stored bytes may go out as file spans (spliced file → socket);
    /// false over TLS, where the bytes must be encrypted in user space.
    file_pieces: bool,
    /// How the node's connections are encrypted, for `status`.
    tls_mode: &'static str,
}

impl std::fmt::Debug for Group {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Group")
            .field("name", &self.name)
            .field("role", &self.core.role())
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl Group {
    /// Opens a group over recovered `storage`.
    pub fn open(
        id: LogId,
        name: String,
        config: raft::Config,
        voters: &[NodeId],
        addresses: Vec<(NodeId, String)>,
        storage: Box<dyn LogStorage>,
        now_ms: u64,
    ) -> Result<Self, GroupError> {
        let batches = recovered_batches(storage.as_ref(), config.run_limits())?;
        let configs = recovered_configs(storage.as_ref(), &batches)?;
        let hard_state = storage.hard_state();
        let storage_damage = storage.damage_found();
        let membership = Membership {
            voters: NodeSet::from_ids(voters).unwrap_or_default(),
            ..Membership::default()
        };
        let restart = Restart {
            hard_state,
            snapshot_index: storage.first_index().prev(),
            snapshot_term: storage
                .term_at(storage.first_index().prev())
                .unwrap_or(Term::ZERO),
            membership,
            batches: &batches,
            now_ms,
        };
        let mut core = Core::new(config, &restart);
        let mut memberships = Vec::with_capacity(configs.len());
        for (index, members) in &configs {
            memberships.push((*index, membership_of(members)?));
        }
        core.restore_configs(&memberships);
        let mut group = Self {
            id,
            name,
            core,
            durable_index: storage.last_index(),
            durable_hard_state: hard_state,
            storage,
            actions: Vec::with_capacity(crate::constants::ACTIONS_PER_STEP_MAX),
            pending: VecDeque::new(),
            tails: Vec::new(),
            failed: None,
            failed_for_space: false,
            failed_for_damage: false,
            damage_found: storage_damage,
            addresses,
            configs: Vec::new(),
            spliced: None,
            flushed_at: None,
            leader: NodeId::ZERO,
            kv: (id == LogId::from_name(KV_LOG)).then(StateMachine::new),
            reads: ReadQueue::new(),
            admin_waits: Vec::new(),
            linked_reported: NodeSet::EMPTY,
            snapshots: snapshot::Snapshots::default(),
            now_ms,
            file_pieces: true,
            tls_mode: "off",
        };
        for (_, members) in &configs {
            group.learn_addresses(members);
        }
        Ok(group)
    }

    /// Fault injection: makes this group's state machine (if it has one)
    /// panic whenever it applies a write to `key`.
    pub fn inject_kv_panic(&mut self, key: Vec<u8>) {
        if let Some(machine) = &mut self.kv {
            tracing::warn!(log = %self.name, "fault injection: the state machine panics on a key");
            machine.panic_on_key(Some(key));
        }
    }

    /// The key-value state machine, on the `kv` log only.
    pub fn kv_machine(&self) -> Option<&StateMachine> {
        self.kv.as_ref()
    }

    /// Test hook: the key-value state machine, to plant a bug in it.
    #[cfg(any(test, feature = "planted-bugs"))]
    pub fn kv_machine_mut(&mut self) -> Option<&mut StateMachine> {
        self.kv.as_mut()
    }

    /// The core (for status).
    pub fn core(&self) -> &Core {
        &self.core
    }

    /// The storage (for reads and status).
    pub fn storage(&self) -> &dyn LogStorage {
        self.storage.as_ref()
    }

    /// Why the group stopped, if it did.
    pub fn failed(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// Advances the clock.
    pub fn tick(&mut self, now_ms: u64, out: &mut Outbound) {
        self.now_ms = now_ms;
        self.refuse_if_unrepairable(out);
        let mut actions = std::mem::take(&mut self.actions);
        self.core.tick(now_ms, &mut actions);
        self.execute(&mut actions, None, None, out);
        self.actions = actions;
    }

    /// Steps a peer message; `batches` are its AppendEntries summaries and
    /// `batch_bytes` the frames that followed it (checked here before the
    /// core sees them; appended from this very memory).
    pub fn step(
        &mut self,
        header: &PeerHeader,
        batches: &[BatchSummary],
        batch_bytes: &Bytes,
        out: &mut Outbound,
    ) -> Result<(), WireError> {
        self.configs.clear();
        let body = match header.body {
            PeerBody::AppendEntries {
                prev_index,
                prev_term,
                leader_commit,
                ..
            } => {
                check_received(batches, batch_bytes)?;
                self.decode_configs(batches, batch_bytes)?;
                Body::AppendEntries(AppendEntries {
                    prev_index,
                    prev_term,
                    leader_commit,
                    batches,
                    configs: &[],
                })
            }
            PeerBody::AppendResponse(response) => Body::AppendResponse(response),
            PeerBody::RequestVote(request) => Body::RequestVote(request),
            PeerBody::VoteResponse(response) => Body::VoteResponse(response),
            PeerBody::Heartbeat(heartbeat) => Body::Heartbeat(heartbeat),
            PeerBody::HeartbeatResponse(response) => Body::HeartbeatResponse(response),
            PeerBody::TimeoutNow => Body::TimeoutNow,
            PeerBody::InstallSnapshot(install) => Body::InstallSnapshot(install),
            PeerBody::SnapshotResponse(response) => Body::SnapshotResponse(response),
            PeerBody::RepairWait(wait) => Body::RepairWait(wait),
        };
        let configs = std::mem::take(&mut self.configs);
        let body = match body {
            Body::AppendEntries(append) => Body::AppendEntries(AppendEntries {
                configs: &configs,
                ..append
            }),
            other => other,
        };
        let message = Message {
            from: header.from,
            to: header.to,
            term: header.term,
            body,
        };
        let mut actions = std::mem::take(&mut self.actions);
        self.core.step(&message, &mut actions);
        self.execute(&mut actions, None, Some(batch_bytes), out);
        self.actions = actions;
        self.configs = configs;
        match header.body {
            // The stream's bytes: `batch_bytes` is the whole frame.
            PeerBody::InstallSnapshot(_) if self.failed.is_none() => {
                self.snapshot_chunk(header, batch_bytes, out)?;
            }
            PeerBody::SnapshotResponse(response) if self.failed.is_none() => {
                self.snapshot_response(header.from, header.term, response, out);
            }
            _ => {}
        }
        Ok(())
    }

    /// Answers `reply` `Unavailable` if this node's copy of the log stopped
    /// (another node can serve it); whether it did.
    fn refused_when_failed(&self, reply: ReplyTo, out: &mut Outbound) -> bool {
        let Some(reason) = &self.failed else {
            return false;
        };
        out.error(
            reply,
            ErrorKind::Unavailable,
            format!("log failed on this node: {reason}"),
        );
        true
    }

    /// Proposes a client's batch frame (validated, sealed, unstamped): it
    /// is stamped in place and appended from the very memory it arrived in.
    /// The answer comes when it commits.
    pub fn propose(&mut self, mut frame: BytesMut, reply: ReplyTo, out: &mut Outbound) {
        // Refused before anything is written: another node may take it.
        if self.refused_when_failed(reply, out) {
            return;
        }
        let (kind, count) = match BatchView::parse(&frame) {
            Ok(view) => (view.kind().unwrap_or(BatchKind::Data), view.count()),
            Err(error) => {
                out.error(reply, ErrorKind::Invalid, format!("bad batch: {error}"));
                return;
            }
        };
        if count == 0 {
            out.error(
                reply,
                ErrorKind::Invalid,
                "a batch needs at least one entry",
            );
            return;
        }
        let mut actions = std::mem::take(&mut self.actions);
        match self
            .core
            .propose(kind, count, frame.len() as u32, &mut actions)
        {
            Ok((term, first_index)) => {
                if let Ok(mut batch) = BatchMut::parse(&mut frame) {
                    batch.stamp(term, first_index);
                }
                let frame = frame.freeze();
                let last_index = LogIndex(first_index.get() + u64::from(count) - 1);
                // In index order: an append kept across a truncation may sit
                // above the indexes a later term hands out.
                let at = partition_point_from_end(self.pending.len(), |at| {
                    self.pending[at].last_index <= last_index
                });
                self.pending.insert(
                    at,
                    PendingAppend {
                        first_index,
                        last_index,
                        term,
                        count,
                        reply,
                        write: kind == BatchKind::Kv && self.kv.is_some(),
                    },
                );
                self.execute(&mut actions, Some(&frame), None, out);
            }
            Err(ProposeError::NotLeader { leader }) => {
                self.execute(&mut actions, None, None, out);
                let address = self.address_of(leader);
                out.error(
                    reply,
                    ErrorKind::NotLeader {
                        leader: leader.get(),
                        address,
                    },
                    format!(
                        "node {} is not the leader of log {}",
                        self.core.id(),
                        self.name
                    ),
                );
            }
            Err(error) => {
                self.execute(&mut actions, None, None, out);
                out.error(reply, ErrorKind::Unavailable, error.to_string());
            }
        }
        self.actions = actions;
    }

    /// Blocks until everything written is durable (shutdown).
    pub fn sync_all(&mut self) -> Result<(), StorageError> {
        if self.failed.is_none() {
            self.storage.sync_all()?;
        }
        Ok(())
    }

    /// End of a loop turn: send the turn's proposals to the followers,
    /// issue queued writes (one sync per file), collect finished syncs and
    /// feed durability to the core.
    pub fn turn(&mut self, out: &mut Outbound) {
        if self.failed.is_some() {
            return;
        }
        self.replicate(out);
        let durability = self.storage.flush().and_then(|()| self.storage.poll());
        if self.flushed_at.is_none() && self.storage.last_index() > self.durable_index {
            self.flushed_at = Some(std::time::Instant::now());
        }
        match durability {
            Ok(durability) => self.feed_durability(durability, out),
            Err(error) => self.fail_storage(&error, out),
        }
    }

    /// Sends every proposal of the turn at once: one AppendEntries per
    /// follower rather than one per client batch. Their frames are already
    /// queued in storage (`propose` executed them), where the messages read
    /// them from; the messages leave while the flush that follows syncs them.
    fn replicate(&mut self, out: &mut Outbound) {
        let mut actions = std::mem::take(&mut self.actions);
        self.core.replicate(&mut actions);
        if !actions.is_empty() {
            self.execute(&mut actions, None, None, out);
        }
        self.actions = actions;
    }

    fn feed_durability(&mut self, durability: storage::Durability, out: &mut Outbound) {
        let mut actions = std::mem::take(&mut self.actions);
        if durability.hard_state != self.durable_hard_state {
            self.durable_hard_state = durability.hard_state;
            self.core
                .hard_state_persisted(durability.hard_state, &mut actions);
        }
        if durability.index != self.durable_index {
            if durability.index > self.durable_index
                && let Some(flushed_at) = self.flushed_at.take()
            {
                let micros = flushed_at.elapsed().as_micros() as u64;
                out.syncs
                    .push((micros, durability.index.get() - self.durable_index.get()));
            }
            self.durable_index = durability.index;
            if let Some(term) = self.storage.term_at(durability.index) {
                self.core.persisted(durability.index, term, &mut actions);
            }
        }
        self.execute(&mut actions, None, None, out);
        self.actions = actions;
    }

    /// Answers the clients still following the log before the group is
    /// closed (to be reopened): they follow again from where they were.
    pub fn close(&mut self, out: &mut Outbound) {
        for tail in self.tails.drain(..) {
            out.error(
                tail.reply,
                ErrorKind::Unavailable,
                format!(
                    "log {} is being reopened; tail again from {}",
                    self.name, tail.next
                ),
            );
        }
    }

    /// Stops the group: storage can no longer be trusted.
    fn fail(&mut self, reason: &str, out: &mut Outbound) {
        if self.failed_for_damage {
            tracing::warn!(log = %self.name, %reason,
                "the log stops to be reopened: recovery cuts the damage and the leader repairs it");
        } else {
            tracing::error!(log = %self.name, %reason, "log storage failed; the group stops (fail-stop)");
        }
        self.failed = Some(reason.to_owned());
        for pending in self.pending.drain(..) {
            if pending.write {
                // Sessions make a retried write apply once: retry is safe.
                out.error(
                    pending.reply,
                    ErrorKind::Unavailable,
                    format!("log failed: {reason}"),
                );
            } else {
                // The entry may have reached other nodes, which may commit
                // it without us: its outcome is unknown, and a retry could
                // append it twice. `Failed` is not retried by clients.
                out.error(
                    pending.reply,
                    ErrorKind::Failed,
                    format!("log failed after this append was proposed: it may or may not be committed ({reason})"),
                );
            }
        }
    }

    /// Executes the core's actions in order. `proposal` is the frame of the
    /// proposal just accepted; `received` the batch bytes of the message
    /// just stepped.
    fn execute(
        &mut self,
        actions: &mut Vec<Action>,
        proposal: Option<&Bytes>,
        received: Option<&Bytes>,
        out: &mut Outbound,
    ) {
        for action in actions.drain(..) {
            if self.failed.is_some() {
                break;
            }
            if let Err(error) = self.execute_one(action, proposal, received, out) {
                // Any storage refusal after the core accepted an entry (a
                // full disk included) would part the core's log from the
                // stored one: stop the group (fail-stop) rather than diverge.
                match error {
                    GroupError::Storage(error) => self.fail_storage(&error, out),
                    GroupError::Wire(_) => self.fail(&error.to_string(), out),
                }
            }
        }
        self.after_input(out);
    }

    fn execute_one(
        &mut self,
        action: Action,
        proposal: Option<&Bytes>,
        received: Option<&Bytes>,
        out: &mut Outbound,
    ) -> Result<(), GroupError> {
        match action {
            Action::PersistHardState(state) => {
                self.storage.store_hard_state(state)?;
            }
            Action::Truncate { from } => {
                self.storage.truncate_suffix(from)?;
                self.durable_index = self.durable_index.min(from.prev());
                // Appends overwritten here stay pending: other nodes may hold
                // them and elect a leader that commits them. They are
                // answered when their index commits (`committed`): with
                // them, or with another entry (then they never will).
            }
            Action::AppendProposal { .. } => {
                let frame = proposal.expect("AppendProposal comes from propose");
                self.storage.append_shared(frame.clone())?;
            }
            Action::AppendNoop { term, index } => {
                let frame = encode_batch(BatchKind::Noop, term, index, &[b""]);
                self.storage.append_shared(Bytes::from(frame))?;
            }
            Action::AppendReceived {
                skip,
                first_index,
                last_index,
            } => {
                if let Some((reservation, batches)) = self.spliced.take() {
                    let last = self.storage.complete_reservation(reservation)?;
                    debug_assert_eq!(last, last_index);
                    if !self.core.trusted() {
                        out.repaired_batches += u64::from(batches.saturating_sub(skip));
                    }
                    return Ok(());
                }
                let Some(received) = received else {
                    // The message's bytes are gone (a failed read-back of
                    // spliced bytes): the core's log and storage would part.
                    return Err(StorageError::Failed(
                        "received batches could not be read back".into(),
                    )
                    .into());
                };
                // Each batch is appended as a handle on the received
                // memory (checked by `check_received`): no copy.
                let mut rest: &[u8] = received;
                let mut offset = 0usize;
                let mut position = 0u32;
                while let Some((frame, tail)) = split_frame(rest)? {
                    rest = tail;
                    let len = frame.len();
                    if position >= skip {
                        let view = BatchView::parse(frame)?;
                        debug_assert!(view.first_index() >= first_index);
                        debug_assert!(view.last_index() <= last_index);
                        self.storage
                            .append_shared(received.slice(offset..offset + len))?;
                        if !self.core.trusted() {
                            out.repaired_batches += 1;
                        }
                    }
                    offset += len;
                    position += 1;
                }
            }
            Action::Send(message) => self.send(&message, out)?,
            Action::Apply { up_to } => self.committed(up_to, out),
            Action::ReadReady {
                through_round,
                index,
            } => {
                self.reads.confirmed(through_round, index);
                self.serve_reads(out);
            }
            Action::ReadsAborted { through_round } => {
                let (leader, address) = (self.core.leader(), self.address_of(self.core.leader()));
                self.reads.abort(through_round, |(reply, _)| {
                    out.error(
                        reply,
                        ErrorKind::NotLeader {
                            leader: leader.get(),
                            address: address.clone(),
                        },
                        "leadership lost before the read was confirmed",
                    );
                });
            }
            Action::SendSnapshot { to } => self.stream_snapshot(to, out),
            Action::RoleChanged { role, term, leader } => {
                tracing::info!(log = %self.name, ?role, %term, %leader, "role changed");
                if leader != self.leader && leader != NodeId::ZERO {
                    out.leader_changes += 1;
                }
                self.leader = leader;
            }
            Action::MajorityLost { acked_end, best } => self.majority_lost(acked_end, best, out),
        }
        Ok(())
    }

    /// Decodes the memberships of config batches carried by a message.
    fn decode_configs(&mut self, batches: &[BatchSummary], bytes: &[u8]) -> Result<(), WireError> {
        if !batches.iter().any(|batch| batch.kind == BatchKind::Config) {
            return Ok(());
        }
        let mut rest = bytes;
        while let Some((frame, tail)) = split_frame(rest)? {
            rest = tail;
            let view = BatchView::parse(frame)?;
            if view.kind()? == BatchKind::Config {
                let members = config_members(&view)?;
                self.configs.push(membership_of(&members)?);
                self.learn_addresses(&members);
            }
        }
        Ok(())
    }

    fn address_of(&self, node: NodeId) -> String {
        self.addresses
            .iter()
            .find(|(id, _)| *id == node)
            .map(|(_, address)| address.clone())
            .unwrap_or_default()
    }

    /// How the node's connections are encrypted ("off", "user-space"):
    /// stored bytes go out as file spans only over plain TCP, and `status`
    /// reports it.
    pub fn set_tls_mode(&mut self, mode: &'static str) {
        self.file_pieces = mode == "off";
        self.tls_mode = mode;
    }

    /// Gauges for the metrics endpoint.
    pub fn gauges(&self) -> super::metrics::LogGauges {
        let status = self.status();
        super::metrics::LogGauges {
            name: self.name.clone(),
            role: status.role,
            leader: status.leader,
            stored: self.storage.stored_bytes(),
            term: status.term,
            commit: status.commit_index,
            last: status.last_index,
            lag: status
                .peers
                .iter()
                .map(|peer| (peer.id, status.last_index.saturating_sub(peer.match_index)))
                .collect(),
            failed: !status.failed.is_empty(),
            damaged: !self.core.trusted(),
        }
    }

    /// Status for `rast status`.
    pub fn status(&self) -> crate::wire::client::Status {
        let core = &self.core;
        let role = match core.role() {
            Role::Leader => "leader",
            Role::Candidate => "candidate",
            Role::PreCandidate => "pre-candidate",
            Role::Follower => "follower",
        };
        let peers = self
            .addresses
            .iter()
            .filter(|(id, _)| *id != core.id())
            .filter_map(|(id, _)| {
                core.progress(*id)
                    .map(|progress| crate::wire::client::PeerStatus {
                        id: id.get(),
                        match_index: progress.match_index.get(),
                        next_index: progress.next_index.get(),
                        state: format!("{:?}", progress.state).to_lowercase(),
                    })
            })
            .filter(|_| core.role() == Role::Leader)
            .collect();
        crate::wire::client::Status {
            node_id: core.id().get(),
            role: role.to_owned(),
            term: core.term().get(),
            leader: core.leader().get(),
            first_index: self.storage.first_index().get(),
            snapshot_index: self.core.log().snapshot_index().get(),
            last_index: self.storage.last_index().get(),
            commit_index: core.commit_index().get(),
            applied_index: self
                .kv
                .as_ref()
                .map_or(core.commit_index(), StateMachine::applied_index)
                .get(),
            peers,
            failed: self
                .failed
                .clone()
                .or_else(|| {
                    let failure = self.kv.as_ref()?.failure()?;
                    Some(format!(
                        "state machine stopped at index {}: {}",
                        failure.index, failure.reason
                    ))
                })
                .unwrap_or_default(),
            tls: self.tls_mode.to_owned(),
            damaged_in: self.core.hard_state().damaged_in.get(),
            acked_end: self
                .core
                .hard_state()
                .acked_end
                .map(|(term, index)| (term.get(), index.get())),
        }
    }
}

/// The `Membership` message of a config batch (its one entry).
fn config_members(view: &BatchView<'_>) -> Result<crate::wire::client::Members, WireError> {
    let mut members = None;
    view.for_each_entry(|payload| {
        if members.is_some() {
            return Err(WireError::Malformed(
                "config batch with more than one entry".into(),
            ));
        }
        members = Some(crate::wire::client::decode_members(payload)?);
        Ok(())
    })?;
    members.ok_or_else(|| WireError::Malformed("config batch without a membership".into()))
}

/// The core's membership of a decoded configuration entry.
fn membership_of(members: &crate::wire::client::Members) -> Result<Membership, WireError> {
    let set = |ids: &[u64]| {
        let ids: Vec<NodeId> = ids.iter().copied().map(NodeId).collect();
        NodeSet::from_ids(&ids).ok_or_else(|| WireError::Malformed("bad node set".into()))
    };
    let voters = set(&members.voters)?;
    if voters.is_empty() {
        // The rules never produce one; from a peer or a file it is damage.
        return Err(WireError::Malformed(
            "a configuration without voters".into(),
        ));
    }
    Ok(Membership {
        voters,
        voters_outgoing: set(&members.voters_outgoing)?,
        learners: set(&members.learners)?,
    })
}

/// The configuration entries among the stored batches: (index, content),
/// for the core's restart and the addresses they carry.
fn recovered_configs(
    storage: &dyn LogStorage,
    batches: &[Boundary],
) -> Result<Vec<(LogIndex, crate::wire::client::Members)>, GroupError> {
    let mut configs = Vec::new();
    if !batches.iter().any(|batch| batch.kind == BatchKind::Config) {
        return Ok(configs);
    }
    visit_batches(storage, storage.first_index(), |view, _| {
        if view.kind()? == BatchKind::Config {
            configs.push((view.first_index(), config_members(view)?));
        }
        Ok::<_, GroupError>(true)
    })?;
    Ok(configs)
}

/// Every stored batch, coalesced into runs within `limits`, for the core's
/// restart.
fn recovered_batches(
    storage: &dyn LogStorage,
    limits: RunLimits,
) -> Result<Vec<Boundary>, GroupError> {
    let mut batches = Vec::new();
    visit_batches(storage, storage.first_index(), |view, _| {
        limits.push(&mut batches, Boundary::from(&summary_of(view)?));
        Ok::<_, GroupError>(true)
    })?;
    Ok(batches)
}
