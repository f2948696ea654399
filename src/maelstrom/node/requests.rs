//! Client requests: `read`, `write` and `cas` from Maelstrom's clients,
//! served here when this node leads (writes proposed, reads through
//! ReadIndex, or a stale read of the local copy when asked), forwarded to
//! the leader otherwise, and the forwarded answers relayed back; and the
//! `rast_status` extension.
//!
//! Why apart: this is everything a client can ask and every answer it can
//! get before its write is applied, kept apart from the Raft traffic.

use serde_json::{Value, json};

use super::{Forward, Node, PendingRead, PendingWrite, ReplyTo};
use crate::constants::{
    KEY_BYTES_MAX, MAELSTROM_REQUEST_TIMEOUT_MS, PROPOSALS_PENDING_MAX, VALUE_BYTES_MAX,
};
use crate::maelstrom::protocol::{Envelope, body, code, error_body, from_bytes, to_bytes};
use crate::raft::{ReadError, Role};
use crate::types::{LogIndex, NodeId, Term};
use crate::wire::client::{KvCommand, KvOperation, encode_kv_command};
use crate::wire::{BatchKind, BatchMut, encode_batch};

impl Node {
    /// A `read`, `write` or `cas` from a client (`may_forward`) or forwarded
    /// by another node (answered here, never forwarded again).
    pub(super) fn request(&mut self, request: &Value, reply: ReplyTo, may_forward: bool) {
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

    pub(super) fn forwarded(&mut self, envelope: &Envelope) {
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

    pub(super) fn forward_answered(&mut self, envelope: &Envelope) {
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

    pub(super) fn status(&mut self, envelope: &Envelope) {
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
}
