//! One Maelstrom node: the Raft core, an in-memory log and the key-value
//! state machine, with Maelstrom's network as the transport.
//!
//! Pure like the core: the caller feeds it lines and ticks with the time and
//! collects the lines it wants written ([`Node::take_output`], which also
//! ends the turn: the writes of the lines handled since the last call go to
//! the other nodes together). The binary (`src/bin/rast-maelstrom.rs`) does
//! the IO; tests drive it in-process.
//!
//! ```text
//!  client cN ──read/write/cas──► any node ──(not leader)──forward──► leader
//!                                   ▲                                 │ propose / read_index
//!                                   └────────────forward_ok───────────┤ apply / ReadReady
//!  client cN ◄──read_ok/write_ok/cas_ok/error── the node asked ◄──────┘
//!  node ◄──raft{data: base64(PeerMessage frame ‖ batch frames)}──► node
//! ```
//!
//! * **Writes** (`write`, `cas`) become one `KvCommand` entry in a `kv`
//!   batch, stamped with the leader's wall clock (log time); the answer is
//!   sent when the entry is applied. If another entry was committed at its
//!   index, it was never committed: error 11 (definite). If nothing is
//!   known within [`MAELSTROM_REQUEST_TIMEOUT_MS`], error 0 (indefinite).
//! * **Reads** go through ReadIndex ([`crate::kv::reads`]): no log write.
//!   A body with `"stale": true` reads the local copy at once and says so
//!   (`"stale": true` in the answer).
//! * **Sessions** (a rast extension): a body with `client_id` and `seq`
//!   makes a write exactly-once across retries, even to another node after
//!   a leader crash.
//! * A non-leader forwards client requests to the leader it knows and
//!   relays the answer; with no known leader it answers 11.
//! * `rast_status` (another extension) answers role, term, leader, commit
//!   and applied index, for the test harness.

use std::collections::{BTreeMap, HashMap};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};

use crate::constants::{
    KEY_BYTES_MAX, MAELSTROM_ELECTION_MS, MAELSTROM_HEARTBEAT_MS, MAELSTROM_REQUEST_TIMEOUT_MS,
    PROPOSALS_PENDING_MAX, VALUE_BYTES_MAX,
};
use crate::kv::{ApplyError, Current, KvResponse, ReadQueue, Refusal, StateMachine};
use crate::maelstrom::protocol::{Envelope, body, code, error_body, from_bytes, to_bytes};
use crate::net::codec::{self, PeerBody};
use crate::raft::{
    self, Action, AppendEntries, BatchSummary, Body, Core, Membership, Message, NodeSet,
    OutgoingBody, ReadError, Restart, Role,
};
use crate::storage::memory::{MemoryLog, SyncMode};
use crate::storage::{self, LogStorage, StorageError};
use crate::types::{LogId, LogIndex, NodeId, Term};
use crate::wire::client::{KvCommand, KvOperation, encode_kv_command};
use crate::wire::{BatchKind, BatchMut, BatchView, WireError, encode_batch, split_frame};

/// The time, as the runtime sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Now {
    /// Monotonic milliseconds (drives the core's timers).
    pub monotonic_ms: u64,
    /// Wall-clock milliseconds since the Unix epoch (stamped into commands
    /// as log time).
    pub wall_ms: u64,
}

/// Where an answer goes.
#[derive(Clone, Debug, PartialEq, Eq)]
enum ReplyTo {
    /// A client asked this node.
    Client { dest: String, msg_id: u64 },
    /// A node forwarded its client's request here.
    Forwarded { node: String, forward_id: u64 },
}

/// A write waiting for its entry to be applied.
#[derive(Clone, Debug)]
struct PendingWrite {
    term: Term,
    reply: ReplyTo,
    deadline_ms: u64,
    cas: bool,
}

/// A linearizable read waiting for its round and the apply.
#[derive(Clone, Debug)]
struct PendingRead {
    key: Vec<u8>,
    reply: ReplyTo,
}

/// A client request this node forwarded to the leader.
#[derive(Clone, Debug)]
struct Forward {
    client: String,
    msg_id: u64,
    deadline_ms: u64,
}

/// The node after `init`.
struct Running {
    me: String,
    ids: Vec<String>,
    id: NodeId,
    core: Core,
    storage: MemoryLog,
    machine: StateMachine,
    actions: Vec<Action>,
    durable_index: LogIndex,
    durable_hard_state: storage::HardState,
    /// Writes by (index, term proposed in): after a truncation the same
    /// index may be proposed again in a later term while the earlier
    /// proposal still waits for its answer.
    writes: BTreeMap<(LogIndex, Term), PendingWrite>,
    reads: ReadQueue<PendingRead>,
    forwards: HashMap<u64, Forward>,
    next_forward_id: u64,
    summaries: Vec<BatchSummary>,
    /// Why this node stopped applying (the state machine failed, or the
    /// log storage did).
    failed: Option<String>,
}

/// A Maelstrom node. See the module docs.
pub struct Node {
    seed: u64,
    running: Option<Running>,
    next_msg_id: u64,
    output: Vec<String>,
    now: Now,
    /// Test hook: prepares the state machine at `init` (plant a bug).
    #[cfg(any(test, feature = "planted-bugs"))]
    prepare_machine: Option<fn(&mut StateMachine)>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut debug = formatter.debug_struct("Node");
        if let Some(running) = &self.running {
            debug
                .field("me", &running.me)
                .field("role", &running.core.role())
                .field("term", &running.core.term());
        }
        debug.finish_non_exhaustive()
    }
}

impl Node {
    /// A node waiting for Maelstrom's `init`; `seed` feeds the core's
    /// randomness (election timeouts).
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            running: None,
            next_msg_id: 1,
            output: Vec::new(),
            now: Now::default(),
            #[cfg(any(test, feature = "planted-bugs"))]
            prepare_machine: None,
        }
    }

    /// Runs `prepare` on the state machine when it is created at `init`
    /// (test hook: plants a bug).
    #[cfg(any(test, feature = "planted-bugs"))]
    pub fn prepare_machine(&mut self, prepare: fn(&mut StateMachine)) {
        self.prepare_machine = Some(prepare);
    }

    /// Ends a turn (the lines handled since the last call) and returns the
    /// lines to write to stdout, in order. The turn's writes are sent to
    /// the other nodes here, together: one `raft` message per peer rather
    /// than one per write (see `Core::replicate`).
    pub fn take_output(&mut self) -> Vec<String> {
        if let Some(running) = self.running.as_mut() {
            let mut actions = std::mem::take(&mut running.actions);
            running.core.replicate(&mut actions);
            let sends = !actions.is_empty();
            running.actions = actions;
            if sends {
                self.execute(None, None);
            }
        }
        std::mem::take(&mut self.output)
    }

    /// The node's Maelstrom id, once initialized.
    pub fn id(&self) -> Option<&str> {
        self.running.as_ref().map(|running| running.me.as_str())
    }

    /// The core's role, once initialized.
    pub fn role(&self) -> Option<Role> {
        self.running.as_ref().map(|running| running.core.role())
    }

    /// The state machine, once initialized.
    pub fn machine(&self) -> Option<&StateMachine> {
        self.running.as_ref().map(|running| &running.machine)
    }

    /// One line from stdin. A line that is not a message is logged and
    /// dropped (Maelstrom never sends one).
    pub fn handle_line(&mut self, line: &str, now: Now) {
        self.now = now;
        match Envelope::parse(line) {
            Ok(envelope) => self.handle(&envelope),
            Err(error) => tracing::warn!(%error, "dropping a line that is not a message"),
        }
        self.after_input();
    }

    /// Time passes: the core's timers, request deadlines.
    pub fn tick(&mut self, now: Now) {
        self.now = now;
        if let Some(running) = self.running.as_mut() {
            let mut actions = std::mem::take(&mut running.actions);
            running.core.tick(now.monotonic_ms, &mut actions);
            running.actions = actions;
            self.execute(None, None);
            self.expire_requests();
        }
        self.after_input();
    }

    fn handle(&mut self, envelope: &Envelope) {
        match envelope.kind() {
            "init" => self.init(envelope),
            "raft" => self.step(envelope),
            "forward" => self.forwarded(envelope),
            "forward_ok" => self.forward_answered(envelope),
            "rast_status" => self.status(envelope),
            "read" | "write" | "cas" => {
                let Some(msg_id) = envelope.msg_id() else {
                    return;
                };
                let reply = ReplyTo::Client {
                    dest: envelope.src.clone(),
                    msg_id,
                };
                self.request(&envelope.body, reply, true);
            }
            other => {
                if let Some(msg_id) = envelope.msg_id() {
                    let reply = ReplyTo::Client {
                        dest: envelope.src.clone(),
                        msg_id,
                    };
                    let text = format!("unsupported message type {other:?}");
                    self.reply(&reply, error_body(code::NOT_SUPPORTED, text));
                }
            }
        }
    }

    // ------------------------------------------------------------------
    // Set-up.

    fn init(&mut self, envelope: &Envelope) {
        let node_id = envelope.body.get("node_id").and_then(Value::as_str);
        let ids: Option<Vec<String>> =
            envelope
                .body
                .get("node_ids")
                .and_then(Value::as_array)
                .map(|ids| {
                    ids.iter()
                        .filter_map(|id| id.as_str().map(str::to_owned))
                        .collect()
                });
        let reply = envelope.msg_id().map(|msg_id| ReplyTo::Client {
            dest: envelope.src.clone(),
            msg_id,
        });
        let (Some(me), Some(ids)) = (node_id, ids) else {
            if let Some(reply) = reply {
                self.reply(
                    &reply,
                    error_body(code::MALFORMED_REQUEST, "init needs node_id and node_ids"),
                );
            }
            return;
        };
        let Some(position) = ids.iter().position(|id| id == me) else {
            if let Some(reply) = reply {
                self.reply(
                    &reply,
                    error_body(code::MALFORMED_REQUEST, "node_id is not in node_ids"),
                );
            }
            return;
        };
        if self.running.is_none() {
            match self.start(me, ids, position) {
                Ok(running) => self.running = Some(running),
                Err(why) => {
                    if let Some(reply) = reply {
                        self.reply(&reply, error_body(code::MALFORMED_REQUEST, why));
                    }
                    return;
                }
            }
        }
        if let Some(reply) = reply {
            self.reply(&reply, body("init_ok", &[]));
        }
    }

    fn start(&self, me: &str, ids: Vec<String>, position: usize) -> Result<Running, String> {
        let voters: Vec<NodeId> = (1..=ids.len() as u64).map(NodeId).collect();
        let voters = NodeSet::from_ids(&voters).ok_or_else(|| {
            format!(
                "{} nodes (limit {})",
                ids.len(),
                crate::constants::NODES_MAX
            )
        })?;
        let id = NodeId(position as u64 + 1);
        let mut config = raft::Config::new(id, self.seed);
        config.timeout_ms_election = MAELSTROM_ELECTION_MS;
        config.interval_ms_heartbeat = MAELSTROM_HEARTBEAT_MS;
        let restart = Restart {
            hard_state: raft::HardState::default(),
            snapshot_index: LogIndex::ZERO,
            snapshot_term: Term::ZERO,
            membership: Membership {
                voters,
                ..Membership::default()
            },
            batches: &[],
            now_ms: self.now.monotonic_ms,
        };
        #[allow(unused_mut)]
        let mut machine = StateMachine::new();
        #[cfg(any(test, feature = "planted-bugs"))]
        if let Some(prepare) = self.prepare_machine {
            prepare(&mut machine);
        }
        Ok(Running {
            me: me.to_owned(),
            ids,
            id,
            core: Core::new(config, &restart),
            storage: MemoryLog::new(SyncMode::Immediate),
            machine,
            actions: Vec::with_capacity(crate::constants::ACTIONS_PER_STEP_MAX),
            durable_index: LogIndex::ZERO,
            durable_hard_state: storage::HardState::default(),
            writes: BTreeMap::new(),
            reads: ReadQueue::new(),
            forwards: HashMap::new(),
            next_forward_id: 1,
            summaries: Vec::new(),
            failed: None,
        })
    }

    // ------------------------------------------------------------------
    // Client requests.

    /// A `read`, `write` or `cas` from a client (`may_forward`) or forwarded
    /// by another node (answered here, never forwarded again).
    fn request(&mut self, request: &Value, reply: ReplyTo, may_forward: bool) {
        let Some(running) = self.running.as_ref() else {
            self.reply(
                &reply,
                error_body(code::TEMPORARILY_UNAVAILABLE, "not initialized yet"),
            );
            return;
        };
        let kind = request.get("type").and_then(Value::as_str).unwrap_or("");
        let Some(key) = request.get("key") else {
            self.reply(
                &reply,
                error_body(code::MALFORMED_REQUEST, "a key is needed"),
            );
            return;
        };
        let key = to_bytes(key);
        if key.len() > KEY_BYTES_MAX {
            let text = format!("key of {} bytes exceeds {KEY_BYTES_MAX}", key.len());
            self.reply(&reply, error_body(code::MALFORMED_REQUEST, text));
            return;
        }
        if kind == "read" && request.get("stale").and_then(Value::as_bool) == Some(true) {
            self.read_stale(&key, &reply);
            return;
        }
        if let Some(why) = &running.failed {
            let text = format!("the state machine stopped: {why}");
            self.reply(&reply, error_body(code::TEMPORARILY_UNAVAILABLE, text));
            return;
        }
        if running.core.role() != Role::Leader {
            let leader = running.core.leader();
            if may_forward && leader != NodeId::ZERO {
                self.forward(request, reply, leader);
            } else {
                let text = "not the leader, and no leader is known: retry";
                self.reply(&reply, error_body(code::TEMPORARILY_UNAVAILABLE, text));
            }
            return;
        }
        if kind == "read" {
            self.read(key, reply);
        } else {
            self.write(request, key, reply);
        }
    }

    fn read_stale(&mut self, key: &[u8], reply: &ReplyTo) {
        let running = self.running.as_ref().expect("initialized");
        if running.failed.is_some() {
            self.reply(
                reply,
                error_body(code::TEMPORARILY_UNAVAILABLE, "the state machine stopped"),
            );
            return;
        }
        let applied = running.machine.applied_index().get();
        let answer = match running.machine.get(key) {
            Some(value) => body(
                "read_ok",
                &[
                    ("value", from_bytes(value)),
                    ("stale", true.into()),
                    ("index", applied.into()),
                ],
            ),
            None => error_body(code::KEY_DOES_NOT_EXIST, "key does not exist (stale read)"),
        };
        self.reply(reply, answer);
    }

    fn read(&mut self, key: Vec<u8>, reply: ReplyTo) {
        let running = self.running.as_mut().expect("initialized");
        let mut actions = std::mem::take(&mut running.actions);
        let round = running.core.read_index(&mut actions);
        running.actions = actions;
        match round {
            Ok(round) => running.reads.push(round, PendingRead { key, reply }),
            Err(ReadError::NotLeader { .. } | ReadError::TooMany) => {
                self.reply(
                    &reply,
                    error_body(code::TEMPORARILY_UNAVAILABLE, "cannot read now: retry"),
                );
            }
        }
        self.execute(None, None);
    }

    fn write(&mut self, request: &Value, key: Vec<u8>, reply: ReplyTo) {
        let kind = request.get("type").and_then(Value::as_str).unwrap_or("");
        let operation = match kind {
            "write" => request
                .get("value")
                .map(|value| KvOperation::Put(to_bytes(value))),
            _ => match (request.get("from"), request.get("to")) {
                (Some(from), Some(to)) => Some(KvOperation::Cas {
                    expected: Some(to_bytes(from)),
                    new: to_bytes(to),
                }),
                _ => None,
            },
        };
        let Some(operation) = operation else {
            self.reply(
                &reply,
                error_body(
                    code::MALFORMED_REQUEST,
                    "write needs value; cas needs from and to",
                ),
            );
            return;
        };
        let largest = match &operation {
            KvOperation::Put(value) => value.len(),
            KvOperation::Cas { expected, new } => {
                new.len().max(expected.as_ref().map_or(0, Vec::len))
            }
            KvOperation::Delete => 0,
        };
        if largest > VALUE_BYTES_MAX {
            let text = format!("value of {largest} bytes exceeds {VALUE_BYTES_MAX}");
            self.reply(&reply, error_body(code::MALFORMED_REQUEST, text));
            return;
        }
        let command = KvCommand {
            client_id: request
                .get("client_id")
                .and_then(Value::as_u64)
                .unwrap_or(0),
            sequence: request.get("seq").and_then(Value::as_u64).unwrap_or(0),
            key,
            operation,
            time_ms: self.now.wall_ms,
        };
        let running = self.running.as_mut().expect("initialized");
        if running.writes.len() >= PROPOSALS_PENDING_MAX {
            self.reply(
                &reply,
                error_body(code::TEMPORARILY_UNAVAILABLE, "too many writes pending"),
            );
            return;
        }
        let mut frame = encode_batch(
            BatchKind::Kv,
            Term::ZERO,
            LogIndex::ZERO,
            &[encode_kv_command(&command)],
        );
        let mut actions = std::mem::take(&mut running.actions);
        let proposed = running
            .core
            .propose(BatchKind::Kv, 1, frame.len() as u32, &mut actions);
        running.actions = actions;
        match proposed {
            Ok((term, index)) => {
                BatchMut::parse(&mut frame)
                    .expect("our own batch parses")
                    .stamp(term, index);
                running.writes.insert(
                    (index, term),
                    PendingWrite {
                        term,
                        reply,
                        deadline_ms: self.now.monotonic_ms + MAELSTROM_REQUEST_TIMEOUT_MS,
                        cas: kind == "cas",
                    },
                );
                self.execute(Some(&frame), None);
            }
            Err(error) => {
                self.execute(None, None);
                let text = format!("not proposed: {error}");
                self.reply(&reply, error_body(code::TEMPORARILY_UNAVAILABLE, text));
            }
        }
    }

    fn forward(&mut self, request: &Value, reply: ReplyTo, leader: NodeId) {
        let ReplyTo::Client { dest, msg_id } = reply else {
            return;
        };
        let running = self.running.as_mut().expect("initialized");
        let forward_id = running.next_forward_id;
        running.next_forward_id += 1;
        running.forwards.insert(
            forward_id,
            Forward {
                client: dest,
                msg_id,
                deadline_ms: self.now.monotonic_ms + MAELSTROM_REQUEST_TIMEOUT_MS,
            },
        );
        let to = running.ids[(leader.get() - 1) as usize].clone();
        let message = body(
            "forward",
            &[
                ("forward_id", forward_id.into()),
                ("request", request.clone()),
            ],
        );
        self.send(&to, message);
    }

    fn forwarded(&mut self, envelope: &Envelope) {
        let (Some(forward_id), Some(request)) = (
            envelope.body.get("forward_id").and_then(Value::as_u64),
            envelope.body.get("request"),
        ) else {
            return;
        };
        let reply = ReplyTo::Forwarded {
            node: envelope.src.clone(),
            forward_id,
        };
        self.request(&request.clone(), reply, false);
    }

    fn forward_answered(&mut self, envelope: &Envelope) {
        let (Some(forward_id), Some(answer)) = (
            envelope.body.get("forward_id").and_then(Value::as_u64),
            envelope.body.get("reply"),
        ) else {
            return;
        };
        let Some(running) = self.running.as_mut() else {
            return;
        };
        if let Some(forward) = running.forwards.remove(&forward_id) {
            let reply = ReplyTo::Client {
                dest: forward.client,
                msg_id: forward.msg_id,
            };
            self.reply(&reply, answer.clone());
        }
    }

    fn status(&mut self, envelope: &Envelope) {
        let Some(msg_id) = envelope.msg_id() else {
            return;
        };
        let reply = ReplyTo::Client {
            dest: envelope.src.clone(),
            msg_id,
        };
        let answer = match &self.running {
            None => error_body(code::TEMPORARILY_UNAVAILABLE, "not initialized yet"),
            Some(running) => {
                let leader = running.core.leader();
                let leader = if leader == NodeId::ZERO {
                    Value::Null
                } else {
                    Value::from(running.ids[(leader.get() - 1) as usize].clone())
                };
                let role = match running.core.role() {
                    Role::Leader => "leader",
                    Role::Candidate => "candidate",
                    Role::PreCandidate => "pre-candidate",
                    Role::Follower => "follower",
                };
                json!({
                    "type": "rast_status_ok",
                    "role": role,
                    "term": running.core.term().get(),
                    "leader": leader,
                    "commit": running.core.commit_index().get(),
                    "applied": running.machine.applied_index().get(),
                    "keys": running.machine.len(),
                    "sessions": running.machine.sessions().len(),
                    "failed": running.failed.clone().unwrap_or_default(),
                })
            }
        };
        self.reply(&reply, answer);
    }

    // ------------------------------------------------------------------
    // Peers.

    fn step(&mut self, envelope: &Envelope) {
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

    // ------------------------------------------------------------------
    // Executing the core's actions.

    /// Executes the queued actions in order (see `raft::Action`'s ordering
    /// contract), then feeds storage durability back until nothing changes.
    fn execute(&mut self, proposal: Option<&[u8]>, received: Option<&[u8]>) {
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
            let collected = visit_batches(
                &running.storage,
                range.first_index,
                range.last_index,
                |view, frame| {
                    summaries.push(BatchSummary {
                        term: view.term(),
                        first_index: view.first_index(),
                        count: view.count(),
                        bytes: view.len() as u32,
                        kind: view.kind()?,
                    });
                    frames.extend_from_slice(frame);
                    Ok(())
                },
            );
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

    // ------------------------------------------------------------------
    // Applying.

    /// Applies committed batches up to `up_to` and answers their writers.
    fn apply(&mut self, up_to: LogIndex) {
        let running = self.running.as_mut().expect("initialized");
        if running.failed.is_some() {
            return;
        }
        let mut applied = Vec::new();
        let mut answers = Vec::new();
        let mut failure = None;
        let from = running.machine.applied_index().next();
        let machine = &mut running.machine;
        let walked = visit_batches(&running.storage, from, up_to, |view, _| {
            if failure.is_some() {
                return Ok(());
            }
            if let Err(error) =
                machine.apply_batch(view, |index, response| answers.push((index, response)))
            {
                failure = Some(error);
            }
            applied.push((
                view.first_index(),
                view.last_index(),
                view.term(),
                view.kind()?,
            ));
            Ok(())
        });
        if let Err(error) = walked {
            failure.get_or_insert(ApplyError::Stopped {
                index: from,
                reason: format!("unreadable stored batch: {error}"),
            });
        }
        let mut answers = answers.into_iter().peekable();
        let mut replies = Vec::new();
        for (first, last, term, kind) in applied {
            let keys: Vec<(LogIndex, Term)> = running
                .writes
                .range((first, Term::ZERO)..=(last, Term(u64::MAX)))
                .map(|(key, _)| *key)
                .collect();
            for key in keys {
                let write = running.writes.remove(&key).expect("listed");
                let index = key.0;
                while answers.peek().is_some_and(|(at, _)| *at < index) {
                    answers.next();
                }
                let response = answers
                    .peek()
                    .filter(|(at, _)| *at == index)
                    .map(|(_, response)| response);
                let ours = kind == BatchKind::Kv && write.term == term;
                let answer = match response {
                    Some(response) if ours => write_answer(response, write.cas),
                    None if ours => {
                        error_body(code::CRASH, "the state machine stopped at this entry")
                    }
                    _ => error_body(
                        code::TEMPORARILY_UNAVAILABLE,
                        "a new leader replaced the entry; it was not applied",
                    ),
                };
                replies.push((write.reply, answer));
            }
        }
        for (reply, answer) in replies {
            self.reply(&reply, answer);
        }
        if let Some(error) = failure {
            self.machine_failed(&error);
        }
        self.serve_reads();
    }

    /// The state machine stopped: report it, answer everything waiting.
    fn machine_failed(&mut self, error: &ApplyError) {
        tracing::error!(%error, "the state machine stopped; this node applies nothing more");
        let running = self.running.as_mut().expect("initialized");
        running.failed = Some(error.to_string());
        let writes = std::mem::take(&mut running.writes);
        let mut reads = Vec::new();
        running.reads.abort_all(|read| reads.push(read.reply));
        for (_, write) in writes {
            self.reply(
                &write.reply,
                error_body(code::CRASH, format!("the state machine stopped: {error}")),
            );
        }
        for reply in reads {
            self.reply(
                &reply,
                error_body(code::TEMPORARILY_UNAVAILABLE, "the state machine stopped"),
            );
        }
    }

    fn serve_reads(&mut self) {
        let running = self.running.as_mut().expect("initialized");
        let mut served = Vec::new();
        let machine = &running.machine;
        running.reads.serve(machine.applied_index(), |_, read| {
            let answer = match machine.get(&read.key) {
                Some(value) => body("read_ok", &[("value", from_bytes(value))]),
                None => error_body(code::KEY_DOES_NOT_EXIST, "key does not exist"),
            };
            served.push((read.reply, answer));
        });
        for (reply, answer) in served {
            self.reply(&reply, answer);
        }
    }

    /// Deadlines of forwarded requests and of writes: past them, the client
    /// is told the outcome is unknown (and the entry may still commit).
    fn expire_requests(&mut self) {
        let now = self.now.monotonic_ms;
        let running = self.running.as_mut().expect("initialized");
        let mut expired = Vec::new();
        running.forwards.retain(|_, forward| {
            if forward.deadline_ms > now {
                return true;
            }
            expired.push(ReplyTo::Client {
                dest: forward.client.clone(),
                msg_id: forward.msg_id,
            });
            false
        });
        running.writes.retain(|_, write| {
            if write.deadline_ms > now {
                return true;
            }
            expired.push(write.reply.clone());
            false
        });
        for reply in expired {
            self.reply(
                &reply,
                error_body(code::TIMEOUT, "no answer in time: the outcome is unknown"),
            );
        }
    }

    // ------------------------------------------------------------------
    // Output.

    fn reply(&mut self, to: &ReplyTo, mut answer: Value) {
        match to {
            ReplyTo::Client { dest, msg_id } => {
                if let Value::Object(fields) = &mut answer {
                    fields.insert("in_reply_to".into(), (*msg_id).into());
                }
                let dest = dest.clone();
                self.send(&dest, answer);
            }
            ReplyTo::Forwarded { node, forward_id } => {
                let message = body(
                    "forward_ok",
                    &[("forward_id", (*forward_id).into()), ("reply", answer)],
                );
                let node = node.clone();
                self.send(&node, message);
            }
        }
    }

    fn send(&mut self, dest: &str, mut message: Value) {
        if let Value::Object(fields) = &mut message {
            fields.insert("msg_id".into(), self.next_msg_id.into());
            self.next_msg_id += 1;
        }
        let src = self
            .running
            .as_ref()
            .map_or_else(String::new, |running| running.me.clone());
        let envelope = Envelope {
            src,
            dest: dest.to_owned(),
            body: message,
        };
        self.output.push(envelope.to_line());
    }

    fn after_input(&mut self) {
        if let Some(running) = &self.running {
            debug_assert!(running.actions.is_empty(), "every action executed");
        }
    }
}

/// The client's answer to an applied write.
fn write_answer(response: &KvResponse, cas: bool) -> Value {
    match response {
        KvResponse::CasApplied if cas => body("cas_ok", &[]),
        KvResponse::Done | KvResponse::CasApplied => body("write_ok", &[]),
        KvResponse::CasMismatch(Current::Absent) => {
            error_body(code::KEY_DOES_NOT_EXIST, "key does not exist")
        }
        KvResponse::CasMismatch(Current::Value(value)) => {
            let mut answer = error_body(code::PRECONDITION_FAILED, "current value differs");
            if let Value::Object(fields) = &mut answer {
                fields.insert("current".into(), from_bytes(value));
            }
            answer
        }
        KvResponse::CasMismatch(Current::NotRetained) => {
            error_body(code::PRECONDITION_FAILED, "current value differs")
        }
        KvResponse::Refused(refusal @ Refusal::SessionExpired { .. }) => {
            error_body(code::SESSION_EXPIRED, refusal.to_string())
        }
        KvResponse::Refused(refusal @ Refusal::StaleSequence { .. }) => {
            error_body(code::STALE_SEQUENCE, refusal.to_string())
        }
        KvResponse::Refused(refusal) => error_body(code::MALFORMED_REQUEST, refusal.to_string()),
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

/// Bytes asked of storage per read while walking batches.
const READ_CHUNK_BYTES: usize = 1024 * 1024;

/// Visits the stored batches from the one holding `from` while they end at
/// or before `up_to`.
fn visit_batches(
    storage: &MemoryLog,
    from: LogIndex,
    up_to: LogIndex,
    mut visit: impl FnMut(&BatchView<'_>, &[u8]) -> Result<(), WireError>,
) -> Result<(), StorageError> {
    let mut next = from.max(storage.first_index());
    while next <= up_to.min(storage.last_index()) {
        let read = storage.read(next, READ_CHUNK_BYTES)?;
        let before = next;
        let mut rest = read.bytes;
        while let Some((frame, tail)) = split_frame(rest)? {
            rest = tail;
            let view = BatchView::parse(frame)?;
            if view.last_index() < next {
                continue;
            }
            if view.last_index() > up_to {
                return Ok(());
            }
            visit(&view, frame)?;
            next = view.last_index().next();
        }
        if next == before {
            break;
        }
    }
    Ok(())
}
