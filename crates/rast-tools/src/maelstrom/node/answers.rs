//! The group's output translated for Maelstrom: peer frames to `raft`
//! messages, answer frames to `read_ok` / `write_ok` / `cas_ok` or an error
//! code, and deadlines past which a client is told the outcome is unknown.
//!
//! Why apart: every answer a client gets is decided here, and so is the
//! one rule Maelstrom adds to the daemon's: whether an error is definite
//! (the operation certainly did not happen) or not.
//!
//! ```text
//!  answer given during the call that handed the request over ─► refused up
//!      front: definite (11, 12), nothing was proposed
//!  answer given later (from what was committed or lost)
//!      NotLeader: another entry took the index ─► 11 definite
//!      cas mismatch ─► 20 / 22;  session expired ─► 1000
//!      anything else (state machine or log stopped) ─► 13 indefinite
//!  reads ─► errors are definite: a read changes nothing
//! ```

use serde_json::Value;

use super::{Asking, Node, ReplyTo};
use crate::maelstrom::protocol::{body, code, error_body, from_bytes};
use crate::server::group::ClientOut;
use crate::wire::client::{ErrorKind, ErrorReply, ResponseBody, decode_response};

impl Node {
    /// Sends what the group queued: peer frames, then answers.
    pub(super) fn deliver(&mut self) {
        let Some(running) = self.running.as_mut() else {
            return;
        };
        let out = std::mem::take(&mut running.out);
        for (to, frame) in out.peers {
            self.send_peer(to, frame);
        }
        let mut answers = Vec::new();
        let running = self.running.as_mut().expect("initialized");
        for (_, client_out) in out.clients {
            let ClientOut::Bytes(frame) = client_out else {
                // Log reads and tails are never asked for here.
                continue;
            };
            let response = match decode_response(&frame) {
                Ok(response) => response,
                Err(error) => {
                    tracing::error!(%error, "the group's answer does not decode");
                    continue;
                }
            };
            // Absent: its deadline passed and the client was answered.
            if let Some(asked) = running.asked.remove(&response.request_id) {
                let answer = answer_of(asked.asking, asked.taken, response.body);
                answers.push((asked.reply, answer));
            }
        }
        for (reply, answer) in answers {
            self.reply(&reply, answer);
        }
    }

    /// Deadlines of forwarded requests and of requests in the group: past
    /// them, the client is told the outcome is unknown (a write may still
    /// commit).
    pub(super) fn expire_requests(&mut self) {
        let now = self.now.monotonic_ms;
        let Some(running) = self.running.as_mut() else {
            return;
        };
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
        running.asked.retain(|_, asked| {
            if asked.deadline_ms > now {
                return true;
            }
            expired.push(asked.reply.clone());
            false
        });
        for reply in expired {
            self.reply(
                &reply,
                error_body(code::TIMEOUT, "no answer in time: the outcome is unknown"),
            );
        }
    }
}

/// The Maelstrom answer to the group's answer `body` to a request of kind
/// `asking`; `taken` when the group took the request on (see the module
/// docs).
fn answer_of(asking: Asking, taken: bool, body_of: ResponseBody) -> Value {
    match body_of {
        ResponseBody::Value(value) if value.found => {
            let mut fields = vec![("value", from_bytes(&value.value))];
            if value.stale {
                fields.push(("stale", true.into()));
                fields.push(("index", value.index.into()));
            }
            body("read_ok", &fields)
        }
        ResponseBody::Value(value) => {
            let text = if value.stale {
                "key does not exist (stale read)"
            } else {
                "key does not exist"
            };
            error_body(code::KEY_DOES_NOT_EXIST, text)
        }
        ResponseBody::CasResult(_) if asking == Asking::Cas => body("cas_ok", &[]),
        ResponseBody::Done | ResponseBody::CasResult(_) => body("write_ok", &[]),
        ResponseBody::Error(error) => error_answer(asking, taken, error),
        other => error_body(code::CRASH, format!("unexpected answer {other:?}")),
    }
}

fn error_answer(asking: Asking, taken: bool, error: ErrorReply) -> Value {
    let ErrorReply { message, kind } = error;
    let code = match (&kind, taken) {
        (ErrorKind::PreconditionFailed(current), _) if !current.found => code::KEY_DOES_NOT_EXIST,
        (ErrorKind::PreconditionFailed(current), _) => {
            let mut answer = error_body(code::PRECONDITION_FAILED, message);
            if !current.value.is_empty()
                && let Value::Object(fields) = &mut answer
            {
                fields.insert("current".into(), from_bytes(&current.value));
            }
            return answer;
        }
        (ErrorKind::NotFound, _) => code::KEY_DOES_NOT_EXIST,
        (ErrorKind::SessionExpired, _) => code::SESSION_EXPIRED,
        (ErrorKind::TooLarge(_) | ErrorKind::Invalid, false) => code::MALFORMED_REQUEST,
        // Refused before anything was proposed, another entry was
        // committed at the write's index, or a read (which changes
        // nothing): it never happened.
        (ErrorKind::NotLeader { .. }, _) | (_, false) => code::TEMPORARILY_UNAVAILABLE,
        _ if asking == Asking::Read => code::TEMPORARILY_UNAVAILABLE,
        // At apply, `Invalid` is a refused sequence: an earlier attempt
        // may have applied.
        (ErrorKind::Invalid, true) => code::STALE_SEQUENCE,
        (_, true) => code::CRASH,
    };
    error_body(code, message)
}
