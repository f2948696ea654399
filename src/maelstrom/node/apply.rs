//! Applying: committed `kv` batches go through the state machine in order,
//! each write's answer goes to whoever asked (error 11 if another entry
//! was committed at its index), reads are served once their index is
//! applied, and requests past their deadline get an indefinite error.
//!
//! Why apart: every answer a client gets after its request reached the log
//! is decided here, from what was committed.

use serde_json::Value;

use super::{Node, ReplyTo};
use crate::kv::{ApplyError, Current, KvResponse, Refusal};
use crate::maelstrom::protocol::{body, code, error_body, from_bytes};
use crate::storage::{StorageError, visit_batches};
use crate::types::{LogIndex, Term};
use crate::wire::BatchKind;

impl Node {
    /// Applies committed batches up to `up_to` and answers their writers.
    pub(super) fn apply(&mut self, up_to: LogIndex) {
        let running = self.running.as_mut().expect("initialized");
        if running.failed.is_some() {
            return;
        }
        let mut applied = Vec::new();
        let mut answers = Vec::new();
        let mut failure = None;
        let from = running.machine.applied_index().next();
        let machine = &mut running.machine;
        let walked = visit_batches(&running.storage, from, |view, _| {
            if view.last_index() > up_to {
                return Ok::<_, StorageError>(false);
            }
            if failure.is_some() {
                return Ok(true);
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
            Ok(true)
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

    pub(super) fn serve_reads(&mut self) {
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
    pub(super) fn expire_requests(&mut self) {
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
