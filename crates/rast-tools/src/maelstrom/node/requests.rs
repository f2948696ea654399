//! Client requests: `read`, `write` and `cas` from Maelstrom's clients,
//! handed to the group when this node leads (a stale read at once, on any
//! node, when asked), forwarded to the leader otherwise, and the forwarded
//! answers relayed back; and the `rast_status` extension.
//!
//! Why apart: this is everything a client can ask, translated into the
//! group's calls, kept apart from the Raft traffic.

use serde_json::{Value, json};

use super::{Asked, Asking, Forward, Node, ReplyTo};
use crate::constants::{KEY_BYTES_MAX, MAELSTROM_REQUEST_TIMEOUT_MS, PROPOSALS_PENDING_MAX};
use crate::kv::StateMachine;
use crate::maelstrom::protocol::{Envelope, body, code, error_body, to_bytes};
use crate::raft::Role;
use crate::server::group::{self, Group, Outbound};
use crate::types::NodeId;
use crate::wire::client::{KvCommand, KvOperation};

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
            self.ask(reply, Asking::Read, |group, to, out| {
                group.get(key, true, to, out);
            });
            return;
        }
        if let Some(why) = failure(&running.group) {
            let text = format!("the state machine stopped: {why}");
            self.reply(&reply, error_body(code::TEMPORARILY_UNAVAILABLE, text));
            return;
        }
        let core = running.group.core();
        if core.role() != Role::Leader {
            let leader = core.leader();
            if may_forward && leader != NodeId::ZERO {
                self.forward(request, reply, leader);
            } else {
                let text = "not the leader, and no leader is known: retry";
                self.reply(&reply, error_body(code::TEMPORARILY_UNAVAILABLE, text));
            }
            return;
        }
        if kind == "read" {
            self.ask(reply, Asking::Read, |group, to, out| {
                group.get(key, false, to, out);
            });
            return;
        }
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
            let text = "write needs value; cas needs from and to";
            self.reply(&reply, error_body(code::MALFORMED_REQUEST, text));
            return;
        };
        let command = KvCommand {
            client_id: request
                .get("client_id")
                .and_then(Value::as_u64)
                .unwrap_or(0),
            sequence: request.get("seq").and_then(Value::as_u64).unwrap_or(0),
            key,
            operation,
            // Log time: this leader's wall clock.
            time_ms: self.now.wall_ms,
        };
        let asking = if kind == "cas" {
            Asking::Cas
        } else {
            Asking::Write
        };
        self.ask(reply, asking, |group, to, out| {
            group.write(&command, to, out);
        });
    }

    /// Hands a request to the group under a new request id. Answers the
    /// group gives during the call are refusals up front (nothing was
    /// proposed); the request is taken on after it.
    fn ask(
        &mut self,
        reply: ReplyTo,
        asking: Asking,
        call: impl FnOnce(&mut Group, group::ReplyTo, &mut Outbound),
    ) {
        let deadline_ms = self.now.monotonic_ms + MAELSTROM_REQUEST_TIMEOUT_MS;
        let running = self.running.as_mut().expect("initialized");
        if running.asked.len() >= PROPOSALS_PENDING_MAX {
            self.reply(
                &reply,
                error_body(code::TEMPORARILY_UNAVAILABLE, "too many requests pending"),
            );
            return;
        }
        let request_id = running.next_request_id;
        running.next_request_id += 1;
        running.asked.insert(
            request_id,
            Asked {
                reply,
                asking,
                deadline_ms,
                taken: false,
            },
        );
        let to = group::ReplyTo {
            connection: 0,
            generation: 0,
            request_id,
        };
        call(&mut running.group, to, &mut running.out);
        self.deliver();
        let running = self.running.as_mut().expect("initialized");
        if let Some(asked) = running.asked.get_mut(&request_id) {
            asked.taken = true;
        }
    }

    fn forward(&mut self, request: &Value, reply: ReplyTo, leader: NodeId) {
        let ReplyTo::Client { dest, msg_id } = reply else {
            return;
        };
        let running = self.running.as_mut().expect("initialized");
        let Some(to) = running.name_of(leader).cloned() else {
            return;
        };
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
                let core = running.group.core();
                let leader = running
                    .name_of(core.leader())
                    .map_or(Value::Null, |name| Value::from(name.clone()));
                let role = match core.role() {
                    Role::Leader => "leader",
                    Role::Candidate => "candidate",
                    Role::PreCandidate => "pre-candidate",
                    Role::Follower => "follower",
                };
                let machine = running.group.kv_machine();
                json!({
                    "type": "rast_status_ok",
                    "role": role,
                    "term": core.term().get(),
                    "leader": leader,
                    "commit": core.commit_index().get(),
                    "applied": machine.map_or(0, |machine| machine.applied_index().get()),
                    "keys": machine.map_or(0, StateMachine::len),
                    "sessions": machine.map_or(0, |machine| machine.sessions().len()),
                    "failed": failure(&running.group).unwrap_or_default(),
                })
            }
        };
        self.reply(&reply, answer);
    }
}

/// Why the group stopped serving key-value requests: its log storage
/// failed, or its state machine did.
fn failure(group: &Group) -> Option<String> {
    if let Some(reason) = group.failed() {
        return Some(format!("log storage: {reason}"));
    }
    group
        .kv_machine()
        .and_then(|machine| machine.failure())
        .map(|failure| format!("at index {}: {}", failure.index, failure.reason))
}
