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
//!
//! `Node`, its set-up and its output are here; the rest is one module per
//! kind of input: `requests` (clients), `peers` (Raft messages and the
//! core's actions) and `apply` (committed entries, answers, deadlines).
//!
//! [`MAELSTROM_REQUEST_TIMEOUT_MS`]: crate::constants::MAELSTROM_REQUEST_TIMEOUT_MS

mod apply;
mod peers;
mod requests;

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use crate::constants::{MAELSTROM_ELECTION_MS, MAELSTROM_HEARTBEAT_MS};
use crate::kv::{ReadQueue, StateMachine};
use crate::maelstrom::protocol::{Envelope, body, code, error_body};
use crate::raft::{self, Action, BatchSummary, Core, Membership, NodeSet, Restart, Role};
use crate::storage;
use crate::storage::memory::{MemoryLog, SyncMode};
use crate::types::{LogIndex, NodeId, Term};

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
