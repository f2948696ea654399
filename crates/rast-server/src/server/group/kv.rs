//! The key-value side of a group (the `kv` log only): writes proposed as
//! `kv` batches and answered with their apply's response, linearizable reads
//! through ReadIndex rounds, stale reads, and the apply loop.
//!
//! ```text
//!  put/cas/delete ─► limits ─► stamp log time ─► kv batch ─► propose ─► pending
//!  commit ─► apply each kv entry in order ─► the pending write at that index
//!            (same term) gets the machine's response; another term: not applied
//!  get ─► read_index round ─► ReadReady ─► applied ≥ read index ─► answer
//!  get --stale ─► answer from the local state at once, marked stale
//! ```

use std::collections::BTreeMap;

use super::{Group, GroupError, Outbound, PendingAppend, ReplyTo};
use crate::constants::{KEY_BYTES_MAX, VALUE_BYTES_MAX};
use crate::kv::{Current, KvResponse, Refusal};
use crate::raft::ReadError;
use crate::storage::visit_batches;
use crate::types::LogIndex;
use crate::types::Term;
use crate::wire::client::{
    ErrorKind, KvCommand, KvOperation, KvValue, ResponseBody, encode_kv_command,
};
use crate::wire::{BatchKind, encode_batch};

/// The log that holds the key-value state machine; key-value requests that
/// name no log go to it.
pub const KV_LOG: &str = "kv";

impl Group {
    /// Proposes a key-value write; the answer comes with its apply.
    ///
    /// `command.time_ms` is its log time (session expiry runs on it): the
    /// caller stamps it with this node's wall clock, never trusting a
    /// client's value.
    pub fn write(&mut self, command: &KvCommand, reply: ReplyTo, out: &mut Outbound) {
        if !self.kv_usable(reply, out) {
            return;
        }
        if let Some(refusal) = over_limits(command) {
            out.error(
                reply,
                ErrorKind::TooLarge(limit_of(refusal)),
                refusal.to_string(),
            );
            return;
        }
        let payload = encode_kv_command(command);
        let frame = encode_batch(BatchKind::Kv, Term(0), LogIndex(0), &[payload]);
        if self.storage.writable_bytes() < frame.len() as u64 {
            out.error(reply, ErrorKind::Unavailable, "write queue full; retry");
            return;
        }
        let frame = bytes::BytesMut::from(frame.as_slice());
        self.propose(frame, reply, out);
    }

    /// Reads a key: linearizably through a ReadIndex round, or at once from
    /// the local state when `stale`.
    pub fn get(&mut self, key: Vec<u8>, stale: bool, reply: ReplyTo, out: &mut Outbound) {
        if !self.kv_usable(reply, out) {
            return;
        }
        if stale {
            let value = self.value_of(&key, true);
            out.reply(reply, ResponseBody::Value(value));
            return;
        }
        let mut actions = std::mem::take(&mut self.actions);
        match self.core.read_index(&mut actions) {
            Ok(round) => self.reads.push(round, (reply, key)),
            Err(ReadError::NotLeader { leader }) => {
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
            Err(error) => out.error(reply, ErrorKind::Unavailable, error.to_string()),
        }
        self.execute(&mut actions, None, None, out);
        self.actions = actions;
    }

    /// Whether key-value requests can be served; answers the client if not.
    fn kv_usable(&self, reply: ReplyTo, out: &mut Outbound) -> bool {
        match &self.kv {
            None => {
                out.error(
                    reply,
                    ErrorKind::Invalid,
                    format!(
                        "log {} holds no key-value state: use the {KV_LOG:?} log",
                        self.name
                    ),
                );
                false
            }
            Some(machine) => {
                if let Some(failure) = machine.failure() {
                    out.error(
                        reply,
                        ErrorKind::Failed,
                        format!(
                            "the key-value state machine stopped at index {}: {}",
                            failure.index, failure.reason
                        ),
                    );
                    return false;
                }
                !self.refused_when_failed(reply, out)
            }
        }
    }

    fn value_of(&self, key: &[u8], stale: bool) -> KvValue {
        let machine = self.kv.as_ref().expect("kv group");
        let value = machine.get(key);
        KvValue {
            found: value.is_some(),
            value: value.map(<[u8]>::to_vec).unwrap_or_default(),
            stale,
            index: machine.applied_index().get(),
        }
    }

    /// Applies committed entries up to `up_to` to the state machine; returns
    /// each kv entry's response by index (with its batch's term).
    pub(super) fn apply_kv(
        &mut self,
        up_to: LogIndex,
        out: &mut Outbound,
    ) -> BTreeMap<LogIndex, (Term, KvResponse)> {
        let mut responses = BTreeMap::new();
        let Some(machine) = self.kv.as_mut() else {
            return responses;
        };
        if machine.failure().is_some() || machine.applied_index() >= up_to {
            return responses;
        }
        let from = machine.applied_index().next();
        let mut stopped = None;
        let walked = visit_batches(self.storage.as_ref(), from, |view, _| {
            if view.last_index() > up_to {
                return Ok::<_, GroupError>(false);
            }
            let term = view.term();
            if let Err(error) = machine.apply_batch(view, |index, response| {
                responses.insert(index, (term, response));
            }) {
                stopped = Some(error);
                return Ok(false);
            }
            Ok(true)
        });
        if let Err(error) = walked {
            tracing::error!(log = %self.name, %error, "reading committed entries to apply");
        }
        if let Some(error) = stopped {
            tracing::error!(log = %self.name, %error, "the state machine stopped; the log keeps replicating");
            self.fail_kv_waiters(&error.to_string(), out);
        }
        self.serve_reads(out);
        responses
    }

    /// Answers a pending write from its apply's response.
    pub(super) fn answer_write(
        &mut self,
        pending: PendingAppend,
        responses: &mut BTreeMap<LogIndex, (Term, KvResponse)>,
        out: &mut Outbound,
    ) {
        // Two writes may wait on one index (one was overwritten there): the
        // response goes to the one of the entry's term.
        let applied = responses
            .get(&pending.first_index)
            .is_some_and(|(term, _)| *term == pending.term);
        let response = if applied {
            responses.remove(&pending.first_index)
        } else {
            None
        };
        match response {
            Some((_, response)) => out.reply_kv(pending.reply, response),
            None if self
                .kv
                .as_ref()
                .is_some_and(|machine| machine.failure().is_some()) =>
            {
                out.error(
                    pending.reply,
                    ErrorKind::Failed,
                    "the key-value state machine stopped",
                );
            }
            _ => {
                let leader = self.core.leader();
                out.error(
                    pending.reply,
                    ErrorKind::NotLeader {
                        leader: leader.get(),
                        address: self.address_of(leader),
                    },
                    "the write was replaced by a new leader; it was not applied",
                );
            }
        }
    }

    /// Answers every confirmed read whose read index is applied.
    pub(super) fn serve_reads(&mut self, out: &mut Outbound) {
        let Some(machine) = self.kv.as_ref() else {
            return;
        };
        if machine.failure().is_some() {
            return;
        }
        let applied = machine.applied_index();
        let mut ready = Vec::new();
        self.reads.serve(applied, |_, read| ready.push(read));
        for (reply, key) in ready {
            let value = self.value_of(&key, false);
            out.reply(reply, ResponseBody::Value(value));
        }
    }

    /// The state machine stopped: every waiting read and write gets a clear
    /// error (writes already in the log stay there, unapplied here).
    fn fail_kv_waiters(&mut self, reason: &str, out: &mut Outbound) {
        self.reads.abort_all(|(reply, _)| {
            out.error(
                reply,
                ErrorKind::Failed,
                format!("state machine stopped: {reason}"),
            );
        });
        let pending: Vec<PendingAppend> =
            self.pending.iter().filter(|p| p.write).copied().collect();
        self.pending.retain(|pending| !pending.write);
        for pending in pending {
            out.error(
                pending.reply,
                ErrorKind::Failed,
                format!("state machine stopped: {reason}"),
            );
        }
    }
}

impl Outbound {
    /// Answers a key-value write with its apply's response.
    fn reply_kv(&mut self, reply: ReplyTo, response: KvResponse) {
        match response {
            KvResponse::Done => self.reply(reply, ResponseBody::Done),
            KvResponse::CasApplied => self.reply(
                reply,
                ResponseBody::CasResult(KvValue {
                    found: true,
                    ..KvValue::default()
                }),
            ),
            KvResponse::CasMismatch(current) => {
                let (found, value, message) = match current {
                    Current::Absent => {
                        (false, Vec::new(), "precondition failed: the key is absent")
                    }
                    Current::Value(value) => (true, value, "precondition failed"),
                    Current::NotRetained => (
                        true,
                        Vec::new(),
                        "precondition failed (the current value is too large to repeat on a retry)",
                    ),
                };
                self.error(
                    reply,
                    ErrorKind::PreconditionFailed(KvValue {
                        found,
                        value,
                        stale: false,
                        index: 0,
                    }),
                    message,
                );
            }
            KvResponse::Refused(refusal) => {
                let kind = match refusal {
                    Refusal::KeyTooLarge { .. } | Refusal::ValueTooLarge { .. } => {
                        ErrorKind::TooLarge(limit_of(refusal))
                    }
                    Refusal::SessionExpired { .. } => ErrorKind::SessionExpired,
                    Refusal::StaleSequence { .. } | Refusal::Malformed => ErrorKind::Invalid,
                };
                self.error(reply, kind, refusal.to_string());
            }
        }
    }
}

/// The refusal a command over the size limits gets (checked before
/// proposing, so such commands rarely reach the log).
fn over_limits(command: &KvCommand) -> Option<Refusal> {
    if command.key.len() > KEY_BYTES_MAX {
        return Some(Refusal::KeyTooLarge {
            bytes: command.key.len(),
            limit: KEY_BYTES_MAX,
        });
    }
    let largest = match &command.operation {
        KvOperation::Put(value) => value.len(),
        KvOperation::Delete => 0,
        KvOperation::Cas { expected, new } => new.len().max(expected.as_ref().map_or(0, Vec::len)),
    };
    (largest > VALUE_BYTES_MAX).then_some(Refusal::ValueTooLarge {
        bytes: largest,
        limit: VALUE_BYTES_MAX,
    })
}

fn limit_of(refusal: Refusal) -> u64 {
    match refusal {
        Refusal::KeyTooLarge { limit, .. } | Refusal::ValueTooLarge { limit, .. } => limit as u64,
        _ => 0,
    }
}

/// The leader's clock, stamped into each command as log time.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft;
    use crate::storage::memory::{MemoryLog, SyncMode};
    use crate::types::{LogId, NodeId};
    use crate::wire::client::ResponseBody;

    fn reply(request_id: u64) -> ReplyTo {
        ReplyTo {
            connection: 0,
            generation: 1,
            request_id,
        }
    }

    /// A single-node kv group that has elected itself.
    fn leader_group() -> (Group, u64) {
        let mut group = Group::open(
            LogId::from_name(KV_LOG),
            KV_LOG.to_owned(),
            raft::Config::new(NodeId(1), 7),
            &[NodeId(1)],
            vec![(NodeId(1), "127.0.0.1:1".to_owned())],
            Box::new(MemoryLog::new(SyncMode::Immediate)),
            0,
        )
        .unwrap();
        let mut out = Outbound::default();
        let mut now = 0;
        while group.core().role() != raft::Role::Leader {
            now += 50;
            assert!(now < 60_000, "a single node elects itself");
            group.tick(now, &mut out);
            group.turn(&mut out);
        }
        (group, now)
    }

    /// Runs turns (durability, commit, apply) until `request_id` is
    /// answered; returns the answer.
    fn answer(group: &mut Group, out: &mut Outbound, request_id: u64) -> ResponseBody {
        for _ in 0..100 {
            group.turn(out);
            if let Some(position) = out
                .clients
                .iter()
                .position(|(to, _)| to.request_id == request_id)
            {
                let (_, piece) = out.clients.remove(position);
                let super::super::ClientOut::Bytes(bytes) = piece else {
                    panic!("a kv answer is bytes");
                };
                return crate::wire::client::decode_response(&bytes).unwrap().body;
            }
        }
        panic!("request {request_id} never answered");
    }

    fn put(key: &[u8], value: &[u8], sequence: u64) -> KvCommand {
        KvCommand {
            client_id: 9,
            sequence,
            key: key.to_vec(),
            operation: KvOperation::Put(value.to_vec()),
            time_ms: 0,
        }
    }

    /// A write is answered from its apply, a retried sequence gets the
    /// recorded answer without applying twice, and a linearizable read sees
    /// the write.
    #[test]
    fn writes_apply_once_and_reads_see_them() {
        let (mut group, _) = leader_group();
        let mut out = Outbound::default();
        group.write(&put(b"k", b"v1", 1), reply(1), &mut out);
        assert_eq!(answer(&mut group, &mut out, 1), ResponseBody::Done);
        // The same session and sequence again, with another value: the
        // recorded answer, and the value stays v1.
        group.write(&put(b"k", b"v2", 1), reply(2), &mut out);
        assert_eq!(answer(&mut group, &mut out, 2), ResponseBody::Done);
        group.get(b"k".to_vec(), false, reply(3), &mut out);
        let ResponseBody::Value(value) = answer(&mut group, &mut out, 3) else {
            panic!("a value");
        };
        assert!(value.found && !value.stale);
        assert_eq!(value.value, b"v1");
    }

    /// An apply that panics stops the machine, not the process: the write
    /// gets a clear error, status reports the failure, later requests are
    /// refused, and the log itself keeps its entries.
    #[test]
    fn a_panicking_apply_stops_the_machine_cleanly() {
        let (mut group, _) = leader_group();
        let mut out = Outbound::default();
        group.write(&put(b"fine", b"1", 1), reply(1), &mut out);
        assert_eq!(answer(&mut group, &mut out, 1), ResponseBody::Done);
        group
            .kv
            .as_mut()
            .unwrap()
            .panic_on_key(Some(b"boom".to_vec()));
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        group.write(&put(b"boom", b"2", 2), reply(2), &mut out);
        let answered = answer(&mut group, &mut out, 2);
        std::panic::set_hook(hook);
        assert!(
            matches!(&answered, ResponseBody::Error(error) if error.kind == ErrorKind::Failed),
            "{answered:?}"
        );
        let status = group.status();
        assert!(status.failed.contains("panicked"), "{}", status.failed);
        assert!(
            status.applied_index < status.commit_index,
            "the entry was not skipped"
        );
        group.get(b"fine".to_vec(), true, reply(3), &mut out);
        assert!(matches!(
            answer(&mut group, &mut out, 3),
            ResponseBody::Error(error) if error.kind == ErrorKind::Failed
        ));
        assert!(group.failed().is_none(), "the log itself keeps serving");
    }
}
