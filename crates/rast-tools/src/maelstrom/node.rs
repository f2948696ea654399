//! One Maelstrom node: the daemon's own replica ([`Group`] over the `kv`
//! log: the Raft core, the key-value state machine, the read queue, the
//! pending writes) over an in-memory log, with Maelstrom's network as the
//! transport.
//!
//! Pure like the core: the caller feeds it lines and ticks with the time and
//! collects the lines it wants written ([`Node::take_output`], which also
//! ends the turn: the writes of the lines handled since the last call go to
//! the other nodes together). The binary (`src/bin/rast-maelstrom.rs`) does
//! the IO; tests drive it in-process.
//!
//! ```text
//!  client cN ──read/write/cas──► any node ──(not leader)──forward──► leader
//!                                   ▲                                 │ Group::get / Group::write
//!                                   └────────────forward_ok───────────┤ the group's answer frames
//!  client cN ◄──read_ok/write_ok/cas_ok/error── the node asked ◄──────┘
//!  node ◄──raft{data: base64(PeerMessage frame ‖ batch frames)}──► node  (Group::step / its Outbound)
//! ```
//!
//! Why the daemon's replica and not a driver of its own: every action the
//! core asks for (append, send, apply, answer) is carried out by the very
//! code `rast serve` runs, so Maelstrom's checkers judge the server's glue,
//! not a copy of it. This module only translates: Maelstrom requests into
//! the group's calls, its answer frames into Maelstrom answers, its peer
//! frames into `raft` messages.
//!
//! * **Writes** (`write`, `cas`) become one `KvCommand` entry in a `kv`
//!   batch, stamped with this node's wall clock (log time); the answer is
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
//! direction: `requests` (clients in), `peers` (Raft messages in and out)
//! and `answers` (the group's answers out, and deadlines).
//!
//! [`MAELSTROM_REQUEST_TIMEOUT_MS`]: crate::constants::MAELSTROM_REQUEST_TIMEOUT_MS

mod answers;
mod peers;
mod requests;

use std::collections::HashMap;

use serde_json::Value;

use crate::constants::{MAELSTROM_ELECTION_MS, MAELSTROM_HEARTBEAT_MS};
use crate::kv::StateMachine;
use crate::maelstrom::protocol::{Envelope, body, code, error_body};
use crate::raft::{self, BatchSummary, Role};
use crate::server::group::{Group, KV_LOG, Outbound};
use crate::storage::memory::{MemoryLog, SyncMode};
use crate::types::{LogId, NodeId};

/// Rounds of `Group::turn` that end a turn (see [`Node::take_output`]).
const TURN_ROUNDS: usize = 3;

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

/// What a request asked for: how its answer reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Asking {
    Read,
    Write,
    Cas,
}

/// A request handed to the group, waiting for its answer.
#[derive(Clone, Debug)]
struct Asked {
    reply: ReplyTo,
    asking: Asking,
    deadline_ms: u64,
    /// The group took it on (an answer from now on comes from what was
    /// committed, not from a refusal up front).
    taken: bool,
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
    group: Group,
    /// Requests in the group, by the request id the group answers with.
    asked: HashMap<u64, Asked>,
    next_request_id: u64,
    forwards: HashMap<u64, Forward>,
    next_forward_id: u64,
    summaries: Vec<BatchSummary>,
    /// What the group wants sent, collected during a call.
    out: Outbound,
}

impl Running {
    /// The Maelstrom name of node `id` (ids are positions in `node_ids`
    /// from 1); `None` for 0 or an id beyond them.
    fn name_of(&self, id: NodeId) -> Option<&String> {
        let position = usize::try_from(id.get().checked_sub(1)?).ok()?;
        self.ids.get(position)
    }
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
                .field("role", &running.group.core().role())
                .field("term", &running.group.core().term());
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
    /// than one per write (see `Core::replicate`), and what the in-memory
    /// log made durable is fed back.
    pub fn take_output(&mut self) -> Vec<String> {
        if let Some(running) = self.running.as_mut() {
            // Durability fed back may queue writes (a follower's answer
            // needs none, a new leader's no-op does) that the next round
            // makes durable: with an immediate disk, three rounds settle.
            for _ in 0..TURN_ROUNDS {
                running.group.turn(&mut running.out);
            }
        }
        self.deliver();
        std::mem::take(&mut self.output)
    }

    /// The node's Maelstrom id, once initialized.
    pub fn id(&self) -> Option<&str> {
        self.running.as_ref().map(|running| running.me.as_str())
    }

    /// The core's role, once initialized.
    pub fn role(&self) -> Option<Role> {
        self.running
            .as_ref()
            .map(|running| running.group.core().role())
    }

    /// The state machine, once initialized.
    pub fn machine(&self) -> Option<&StateMachine> {
        self.running
            .as_ref()
            .and_then(|running| running.group.kv_machine())
    }

    /// One line from stdin. A line that is not a message is logged and
    /// dropped (Maelstrom never sends one).
    pub fn handle_line(&mut self, line: &str, now: Now) {
        self.now = now;
        match Envelope::parse(line) {
            Ok(envelope) => self.handle(&envelope),
            Err(error) => tracing::warn!(%error, "dropping a line that is not a message"),
        }
        self.deliver();
    }

    /// Time passes: the core's timers, request deadlines.
    pub fn tick(&mut self, now: Now) {
        self.now = now;
        if let Some(running) = self.running.as_mut() {
            running.group.tick(now.monotonic_ms, &mut running.out);
            self.deliver();
            self.expire_requests();
        }
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
        if ids.len() > crate::constants::NODES_MAX {
            return Err(format!(
                "{} nodes (limit {})",
                ids.len(),
                crate::constants::NODES_MAX
            ));
        }
        let voters: Vec<NodeId> = (1..=ids.len() as u64).map(NodeId).collect();
        let id = NodeId(position as u64 + 1);
        let mut config = raft::Config::new(id, self.seed);
        config.timeout_ms_election = MAELSTROM_ELECTION_MS;
        config.interval_ms_heartbeat = MAELSTROM_HEARTBEAT_MS;
        let addresses = voters
            .iter()
            .zip(&ids)
            .map(|(voter, name)| (*voter, name.clone()))
            .collect();
        #[allow(unused_mut)]
        let mut group = Group::open(
            LogId::from_name(KV_LOG),
            KV_LOG.to_owned(),
            config,
            &voters,
            addresses,
            Box::new(MemoryLog::new(SyncMode::Immediate)),
            self.now.monotonic_ms,
        )
        .map_err(|error| error.to_string())?;
        #[cfg(any(test, feature = "planted-bugs"))]
        if let Some(prepare) = self.prepare_machine
            && let Some(machine) = group.kv_machine_mut()
        {
            prepare(machine);
        }
        Ok(Running {
            me: me.to_owned(),
            ids,
            id,
            group,
            asked: HashMap::new(),
            next_request_id: 1,
            forwards: HashMap::new(),
            next_forward_id: 1,
            summaries: Vec::new(),
            out: Outbound::default(),
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
}
