//! The built-in key-value state machine: `get`, `put`, `delete`, `cas`, with
//! exactly-once client sessions, applied from the replicated log.
//!
//! Pure: no IO, no clock, no threads. The runtime hands it committed entries
//! in log order and gets a response per entry; every replica that applies
//! the same log reaches the same state and the same responses, byte for byte
//! (the snapshot format makes that checkable).
//!
//! ```text
//!  kv batch (EntryBatch kind kv) ──► one KvCommand per entry
//!      │                               client id, sequence, key, op, timeMs
//!      ▼
//!  apply(index, command) ──catch_unwind──► limits ─► log time = max(time, timeMs)
//!      │                                      ─► expire idle sessions
//!      │                                      ─► session check (duplicate? stale?)
//!      │                                      ─► execute on the map, record
//!      ▼
//!  Ok(KvResponse)  │  Err(ApplyError::Panicked): machine stopped, entry not applied
//! ```
//!
//! * **Values and limits.** Keys and values are bytes, at most
//!   [`KEY_BYTES_MAX`] and [`VALUE_BYTES_MAX`]. A command over a limit is
//!   refused ([`Refusal`]) identically on every replica; the server checks
//!   the limits before proposing too, so refusals in the log are rare.
//! * **cas** compares the whole current value with `expected`; `expected:
//!   None` means "only if the key is absent" (create-if-absent).
//! * **Log time** comes from the log, never a clock: the leader stamps its
//!   clock into each command (`KvCommand.timeMs`) and the machine keeps the
//!   largest stamp seen, so it never goes backwards across leaders.
//! * **Sessions** ([`session`]): a retried request is answered from the
//!   record instead of being applied twice. Sessions are part of the state
//!   (snapshot included), so they survive failover.
//! * **Reads** are served by the runtime from [`StateMachine::get`]: after
//!   a ReadIndex round ([`reads`]) for a linearizable read, or at once for a
//!   stale read, which says so.
//! * **Panics.** [`StateMachine::apply`] catches a panic (a bug in this
//!   code); the machine then refuses every later apply, snapshot and
//!   read, so it neither diverges nor skips the entry. The runtime reports
//!   [`StateMachine::failure`] in its status and answers clients with a
//!   clear error; other groups are unaffected.
//! * **Snapshots** ([`snapshot`]): the whole state, sessions included, as a
//!   deterministic checksummed stream.
//! * **Answers** ([`reply`]): responses as client-protocol bodies, for the
//!   server.

//! # How a runtime drives it (the server's groups, which the Maelstrom node
//! runs too)
//!
//! 1. **Propose.** Build each client write as a `KvCommand` with
//!    `time_ms` set to the leader's wall clock now (overwrite whatever the
//!    client sent), encode it with `encode_kv_command` as one entry of a
//!    `kv` batch, propose the batch, and remember (index, term, client).
//! 2. **Apply.** On `Action::Apply { up_to }`, hand each committed batch up
//!    to `up_to`, in order, to [`StateMachine::apply_batch`]. Answer a
//!    remembered write when its index comes back: with
//!    [`reply::response_body`] if the batch's term is the one it was
//!    proposed in, else "not leader" (another entry was committed there, so
//!    it never will be). Not at an `Action::Truncate`: the nodes the write
//!    reached may still elect a leader that commits it (Raft figure 8).
//! 3. **Read.** `Core::read_index` → [`ReadQueue::push`];
//!    `Action::ReadReady` → [`ReadQueue::confirmed`]; after each apply,
//!    [`ReadQueue::serve`] with [`reply::read_body`];
//!    `Action::ReadsAborted` → [`ReadQueue::abort`] ("retry"). A stale read
//!    is [`reply::read_body`] at once, with `stale: true`.
//! 4. **Fail.** An `Err` from `apply_batch` means the machine stopped:
//!    report [`StateMachine::failure`] in status and metrics, answer
//!    waiting writes "failed", refuse new requests; keep the group's Raft
//!    running (it still votes and replicates), and the other groups.
//! 5. **Snapshot.** [`StateMachine::snapshot_to`] at the applied index;
//!    [`StateMachine::restore_from`] on restart or install (then apply the
//!    log after the snapshot's [`StateMachine::applied_index`]).

pub mod reads;
pub mod reply;
pub mod session;
pub mod snapshot;

use std::io::{Read, Write};
use std::sync::Arc;

use crate::constants::{KEY_BYTES_MAX, SESSION_VALUE_BYTES_MAX, VALUE_BYTES_MAX};
use crate::types::LogIndex;
use crate::wire::client::{KvCommand, KvOperation, decode_kv_command};
use crate::wire::{BatchKind, BatchView};

pub use reads::ReadQueue;
pub use session::Sessions;
pub use snapshot::SnapshotError;

/// The current value a failed cas saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Current {
    /// The key was absent.
    Absent,
    /// The key held this value.
    Value(Vec<u8>),
    /// The key held a value larger than a session records
    /// ([`SESSION_VALUE_BYTES_MAX`]); only in the answer to a retry.
    NotRetained,
}

/// What applying one command answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvResponse {
    /// A put or delete took effect.
    Done,
    /// A cas matched; the new value is set.
    CasApplied,
    /// A cas did not match; nothing changed.
    CasMismatch(Current),
    /// Refused with no effect, the same way on every replica.
    Refused(Refusal),
}

impl KvResponse {
    /// The form a session records: a large current value of a failed cas
    /// is dropped (bounded memory), everything else kept.
    #[must_use]
    pub fn recorded(&self) -> Self {
        match self {
            Self::CasMismatch(Current::Value(value)) if value.len() > SESSION_VALUE_BYTES_MAX => {
                Self::CasMismatch(Current::NotRetained)
            }
            Self::Refused(refusal) => unreachable!("refusals are not recorded: {refusal}"),
            other => other.clone(),
        }
    }
}

/// Why a command was refused (it had no effect).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The key is over [`KEY_BYTES_MAX`].
    #[error("key of {bytes} bytes exceeds the limit of {limit}")]
    KeyTooLarge {
        /// Key bytes.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// A value (or a cas's expected value) is over [`VALUE_BYTES_MAX`].
    #[error("value of {bytes} bytes exceeds the limit of {limit}")]
    ValueTooLarge {
        /// Value bytes.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// The client's session expired (or was evicted): its request may have
    /// been applied before, so it is not applied now. The outcome of the
    /// client's earlier attempts is unknown.
    #[error("session of client {client_id} expired; the request was not applied")]
    SessionExpired {
        /// The client.
        client_id: u64,
    },
    /// A request older than the last one the session applied (a delayed
    /// duplicate); its answer was given long ago.
    #[error("sequence {sequence} is older than the session's last ({last})")]
    StaleSequence {
        /// The request's sequence.
        sequence: u64,
        /// The last applied.
        last: u64,
    },
    /// The entry is not a well-formed `KvCommand`.
    #[error("malformed key-value command")]
    Malformed,
}

/// Why an entry was not applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// Applying this entry panicked; the machine stopped (the entry is not
    /// applied and never will be by this machine).
    #[error("applying index {index} panicked: {message}; the state machine stopped")]
    Panicked {
        /// The entry.
        index: LogIndex,
        /// The panic's message.
        message: String,
    },
    /// The machine stopped earlier and applies nothing.
    #[error("the state machine stopped at index {index}: {reason}")]
    Stopped {
        /// The entry it stopped at.
        index: LogIndex,
        /// Why.
        reason: String,
    },
    /// The entry is at or below the applied index (a runtime bug).
    #[error("index {index} is already applied (applied up to {applied})")]
    AlreadyApplied {
        /// The entry.
        index: LogIndex,
        /// The applied index.
        applied: LogIndex,
    },
}

/// Why the machine stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The entry it stopped at (not applied).
    pub index: LogIndex,
    /// What went wrong.
    pub reason: String,
}

/// The key-value state machine. See the module docs.
#[derive(Clone, Debug, Default)]
pub struct StateMachine {
    data: snapshot::Data,
    sessions: Sessions,
    applied_index: LogIndex,
    log_time_ms: u64,
    failure: Option<Failure>,
    /// Fault injection: applying a command on this key panics.
    panic_on_key: Option<Vec<u8>>,
    /// Planted bug: a duplicate is applied again instead of answered from
    /// its session.
    #[cfg(any(test, feature = "planted-bugs"))]
    apply_duplicates: bool,
}

impl StateMachine {
    /// An empty machine; nothing applied.
    pub fn new() -> Self {
        Self::default()
    }

    // ------------------------------------------------------------------
    // Observers.

    /// The value of `key`. Callers check [`Self::failure`] first: a stopped
    /// machine's state is not trusted.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.data.get(key).map(|value| &value[..])
    }

    /// The last entry applied.
    pub fn applied_index(&self) -> LogIndex {
        self.applied_index
    }

    /// The log time: the largest leader stamp applied.
    pub fn log_time_ms(&self) -> u64 {
        self.log_time_ms
    }

    /// Why the machine stopped, if it did.
    pub fn failure(&self) -> Option<&Failure> {
        self.failure.as_ref()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether no key exists.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The session table.
    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    // ------------------------------------------------------------------
    // Applying.

    /// Applies the committed command at `index` (above the applied index;
    /// gaps are entries of other kinds, see [`Self::advance`]). A panic
    /// inside is caught: the machine stops and reports it, the entry is not
    /// applied, and every later call is refused.
    pub fn apply(
        &mut self,
        index: LogIndex,
        command: &KvCommand,
    ) -> Result<KvResponse, ApplyError> {
        self.check_next(index)?;
        let outcome = crate::fail_stop::contain(|| self.apply_unguarded(command));
        match outcome {
            Ok(response) => {
                self.applied_index = index;
                Ok(response)
            }
            Err(payload) => {
                let message = panic_message(payload.as_ref());
                self.stop(index, format!("apply panicked: {message}"));
                Err(ApplyError::Panicked { index, message })
            }
        }
    }

    /// Applies one entry's payload (an encoded `KvCommand`); a payload that
    /// does not decode is refused as [`Refusal::Malformed`] (the same bytes
    /// are refused on every replica).
    pub fn apply_payload(
        &mut self,
        index: LogIndex,
        payload: &[u8],
    ) -> Result<KvResponse, ApplyError> {
        if let Ok(command) = decode_kv_command(payload) {
            self.apply(index, &command)
        } else {
            self.check_next(index)?;
            self.applied_index = index;
            Ok(KvResponse::Refused(Refusal::Malformed))
        }
    }

    /// Marks entries up to `index` applied without a command: entries of
    /// other kinds (the leader's no-op, configuration, plain data).
    pub fn advance(&mut self, index: LogIndex) -> Result<(), ApplyError> {
        self.check_next(index)?;
        self.applied_index = index;
        Ok(())
    }

    /// Applies a stored batch: each entry of a `kv` batch, or the whole
    /// batch as [`Self::advance`] for other kinds. `answer` gets each kv
    /// entry's index and response. Entries at or below the applied index
    /// are skipped (a batch partly covered by a snapshot). An unknown kind
    /// or an unreadable batch stops the machine: applying past an entry it
    /// does not understand could diverge from replicas that do.
    pub fn apply_batch(
        &mut self,
        batch: &BatchView<'_>,
        mut answer: impl FnMut(LogIndex, KvResponse),
    ) -> Result<(), ApplyError> {
        if let Some(failure) = &self.failure {
            return Err(stopped(failure));
        }
        let kind = match batch.kind() {
            Ok(kind) => kind,
            Err(error) => return Err(self.stop_with(batch.first_index(), &error)),
        };
        if kind != BatchKind::Kv {
            if batch.last_index() > self.applied_index {
                self.advance(batch.last_index())?;
            }
            return Ok(());
        }
        let mut index = batch.first_index();
        let mut failed = None;
        let walked = batch.for_each_entry(|payload| {
            if failed.is_none() && index > self.applied_index {
                match self.apply_payload(index, payload) {
                    Ok(response) => answer(index, response),
                    Err(error) => failed = Some(error),
                }
            }
            index = index.next();
            Ok(())
        });
        if let Some(error) = failed {
            return Err(error);
        }
        if let Err(error) = walked {
            return Err(self.stop_with(index, &error));
        }
        Ok(())
    }

    fn check_next(&self, index: LogIndex) -> Result<(), ApplyError> {
        if let Some(failure) = &self.failure {
            return Err(stopped(failure));
        }
        if index <= self.applied_index {
            return Err(ApplyError::AlreadyApplied {
                index,
                applied: self.applied_index,
            });
        }
        Ok(())
    }

    fn stop(&mut self, index: LogIndex, reason: String) {
        tracing::error!(%index, %reason, "key-value state machine stopped");
        self.failure = Some(Failure { index, reason });
    }

    fn stop_with(&mut self, index: LogIndex, error: &dyn std::fmt::Display) -> ApplyError {
        self.stop(index, format!("unreadable entry: {error}"));
        stopped(self.failure.as_ref().expect("just set"))
    }

    /// The apply itself; may panic only through a bug (or the test hook).
    fn apply_unguarded(&mut self, command: &KvCommand) -> KvResponse {
        if let Err(refusal) = check_limits(command) {
            return KvResponse::Refused(refusal);
        }
        self.log_time_ms = self.log_time_ms.max(command.time_ms);
        self.sessions.expire(self.log_time_ms);
        let client_id = command.client_id;
        if client_id == 0 {
            return self.execute(command);
        }
        match self.sessions.check(client_id, command.sequence) {
            #[cfg(any(test, feature = "planted-bugs"))]
            session::Check::Duplicate(_) if self.apply_duplicates => self.execute(command),
            session::Check::Duplicate(response) => {
                self.sessions.touch(client_id, self.log_time_ms);
                response
            }
            session::Check::Stale { last } => KvResponse::Refused(Refusal::StaleSequence {
                sequence: command.sequence,
                last,
            }),
            session::Check::Expired => KvResponse::Refused(Refusal::SessionExpired { client_id }),
            session::Check::Fresh => {
                let response = self.execute(command);
                self.sessions
                    .record(client_id, command.sequence, self.log_time_ms, &response);
                response
            }
        }
    }

    /// Runs the operation on the map.
    fn execute(&mut self, command: &KvCommand) -> KvResponse {
        assert!(
            self.panic_on_key.as_deref() != Some(command.key.as_slice()),
            "injected panic on key {:?}",
            String::from_utf8_lossy(&command.key)
        );
        match &command.operation {
            KvOperation::Put(value) => {
                self.data.insert(
                    Arc::from(command.key.as_slice()),
                    Arc::from(value.as_slice()),
                );
                KvResponse::Done
            }
            KvOperation::Delete => {
                self.data.remove(command.key.as_slice());
                KvResponse::Done
            }
            KvOperation::Cas { expected, new } => {
                let current = self.data.get(command.key.as_slice());
                if current.map(|value| &value[..]) == expected.as_deref() {
                    self.data
                        .insert(Arc::from(command.key.as_slice()), Arc::from(new.as_slice()));
                    KvResponse::CasApplied
                } else {
                    KvResponse::CasMismatch(
                        current.map_or(Current::Absent, |value| Current::Value(value.to_vec())),
                    )
                }
            }
        }
    }

    // ------------------------------------------------------------------
    // Snapshots.

    /// Exact bytes [`Self::snapshot_to`] writes now.
    pub fn snapshot_len(&self) -> u64 {
        snapshot::encoded_len(&self.data, &self.sessions)
    }

    /// Writes the whole state (map, sessions, applied index, log time) in
    /// the deterministic checksummed format of [`snapshot`]. Returns the
    /// bytes written. Refused once the machine stopped.
    pub fn snapshot_to<W: Write>(&self, writer: W) -> Result<u64, SnapshotError> {
        if let Some(failure) = &self.failure {
            return Err(SnapshotError::Failed(failure.reason.clone()));
        }
        let written = snapshot::write(
            self.applied_index,
            self.log_time_ms,
            &self.data,
            &self.sessions,
            writer,
        )?;
        debug_assert_eq!(written, self.snapshot_len());
        Ok(written)
    }

    /// The state as of now, detached from the machine for a snapshot taken
    /// elsewhere (another thread) while the machine applies on. Keys and
    /// values are shared, not copied: this costs a walk of the map, not a
    /// copy of its bytes. Refused once the machine stopped.
    pub fn freeze(&self) -> Result<Frozen, SnapshotError> {
        if let Some(failure) = &self.failure {
            return Err(SnapshotError::Failed(failure.reason.clone()));
        }
        Ok(Frozen {
            applied_index: self.applied_index,
            log_time_ms: self.log_time_ms,
            data: self.data.clone(),
            sessions: self.sessions.clone(),
        })
    }

    /// Replaces the whole state with a snapshot, after checking all of it
    /// (checksum, limits, order). On any error the machine is unchanged. A
    /// snapshot behind the applied index is refused: applied never moves
    /// backwards.
    pub fn restore_from<R: Read>(&mut self, reader: R) -> Result<(), SnapshotError> {
        if let Some(failure) = &self.failure {
            return Err(SnapshotError::Failed(failure.reason.clone()));
        }
        let image = snapshot::read(reader)?;
        if image.applied_index < self.applied_index {
            return Err(SnapshotError::Behind {
                snapshot: image.applied_index,
                applied: self.applied_index,
            });
        }
        self.data = image.data;
        self.sessions = image.sessions;
        self.applied_index = image.applied_index;
        self.log_time_ms = image.log_time_ms;
        Ok(())
    }

    // ------------------------------------------------------------------
    // Test hooks.

    /// Makes every later apply of a command on `key` panic: fault injection
    /// for tests and `rast serve --fault-kv-panic-key`.
    pub fn panic_on_key(&mut self, key: Option<Vec<u8>>) {
        self.panic_on_key = key;
    }

    /// Plants a bug: retried requests are applied again instead of being
    /// answered from their session (test builds and `planted-bugs` only),
    /// so tests can show they would catch it.
    #[cfg(any(test, feature = "planted-bugs"))]
    pub fn plant_duplicate_applies(&mut self) {
        self.apply_duplicates = true;
    }
}

/// A machine's state at one applied index (see [`StateMachine::freeze`]).
#[derive(Clone, Debug)]
pub struct Frozen {
    applied_index: LogIndex,
    log_time_ms: u64,
    data: snapshot::Data,
    sessions: Sessions,
}

impl Frozen {
    /// The index it is the state at.
    pub fn applied_index(&self) -> LogIndex {
        self.applied_index
    }

    /// Exact bytes [`Self::write_to`] writes.
    pub fn encoded_len(&self) -> u64 {
        snapshot::encoded_len(&self.data, &self.sessions)
    }

    /// Writes the snapshot, in the format of [`StateMachine::snapshot_to`].
    pub fn write_to<W: Write>(&self, writer: W) -> Result<u64, SnapshotError> {
        snapshot::write(
            self.applied_index,
            self.log_time_ms,
            &self.data,
            &self.sessions,
            writer,
        )
    }
}

/// Two machines are equal when their replicated state is: map, sessions,
/// applied index, log time and failure (not test hooks).
impl PartialEq for StateMachine {
    fn eq(&self, other: &Self) -> bool {
        self.data == other.data
            && self.sessions == other.sessions
            && self.applied_index == other.applied_index
            && self.log_time_ms == other.log_time_ms
            && self.failure == other.failure
    }
}

impl Eq for StateMachine {}

fn stopped(failure: &Failure) -> ApplyError {
    ApplyError::Stopped {
        index: failure.index,
        reason: failure.reason.clone(),
    }
}

/// The size limits of a command.
fn check_limits(command: &KvCommand) -> Result<(), Refusal> {
    if command.key.len() > KEY_BYTES_MAX {
        return Err(Refusal::KeyTooLarge {
            bytes: command.key.len(),
            limit: KEY_BYTES_MAX,
        });
    }
    let largest = match &command.operation {
        KvOperation::Put(value) => value.len(),
        KvOperation::Delete => 0,
        KvOperation::Cas { expected, new } => new.len().max(expected.as_ref().map_or(0, Vec::len)),
    };
    if largest > VALUE_BYTES_MAX {
        return Err(Refusal::ValueTooLarge {
            bytes: largest,
            limit: VALUE_BYTES_MAX,
        });
    }
    Ok(())
}

/// The text of a panic payload.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "non-text panic payload".to_owned()
    }
}

#[cfg(test)]
mod tests;
