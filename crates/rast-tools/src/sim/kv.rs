//! The key-value workload of the simulator: clients with exactly-once
//! sessions doing get, put and cas on a few keys, through the real
//! [`kv::StateMachine`](crate::kv::StateMachine) that every node applies its
//! committed `kv` batches to, and the checks of what they saw.
//!
//! ```text
//!  client ── op (session id, sequence) ──► leader: propose kv batch
//!     ▲  retry, same sequence, after a refusal / lost proposal / crash
//!     │                                     │ commit
//!     └── answer of the apply at its index ◄┘ every node: StateMachine
//! ```
//!
//! * Writes are retried with the *same* session sequence until answered or
//!   until the client gives up (outcome unknown): a retry of a request that
//!   was applied is answered from the session, so it takes effect once.
//! * Gets are linearizable reads: a ReadIndex round, served once the node
//!   applied up to the read index.
//! * Checks: the history is linearizable (`check::linearizable::check_kv`,
//!   the independent checker); each request takes effect at most once in
//!   the committed log; every node's machine has the same state at the same
//!   applied index.

use crate::check::history::{EventKind, History, ProcessId};
use crate::check::linearizable::{FailedCas, KvOp, check_kv};
use crate::check::wgl::{Budget, Verdict};
use crate::constants::SIM_SEARCH_STEPS_MAX;
use crate::kv::{KvResponse, StateMachine};
use crate::sim::checker::Violation;

/// Keys the clients use (1..=KEYS).
pub const KEYS: u64 = 3;
/// A client gives up on an operation after this long (outcome unknown).
pub const GIVE_UP_MS: u64 = 1_500;

/// The outcome of a key-value operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvOutcome {
    /// Not answered (yet), or given up: unknown.
    Info,
    /// Took effect; a get carries the value it read.
    Ok(KvOp),
    /// A cas whose compare did not match: no effect.
    Fail,
}

/// One key-value operation of a client, across all its attempts.
#[derive(Clone, Debug)]
pub struct KvEntry {
    /// The client.
    pub client: u32,
    /// The operation as invoked.
    pub op: KvOp,
    /// The session sequence of a write (0 for a get).
    pub sequence: u64,
    /// Simulated ms of the invocation.
    pub invoked_ms: u64,
    /// Simulated ms of the completion (`u64::MAX`: none).
    pub completed_ms: u64,
    /// The outcome.
    pub outcome: KvOutcome,
    /// Attempts made (submissions to a node).
    pub attempts: u32,
    /// Times the request took effect in the committed log.
    pub effects: u32,
    /// Some node answered a committed copy of it from the session record
    /// (a retry of a request that had been applied).
    pub answered_from_session: bool,
    /// An attempt was lost to the crash of the node it was proposed at.
    pub lost_to_crash: bool,
}

/// The value `value` as stored (8 bytes little-endian).
pub fn encode_value(value: u64) -> Vec<u8> {
    value.to_le_bytes().to_vec()
}

/// A stored value back as the `u64` it encodes.
pub fn decode_value(bytes: &[u8]) -> u64 {
    let mut raw = [0u8; 8];
    raw[..bytes.len().min(8)].copy_from_slice(&bytes[..bytes.len().min(8)]);
    u64::from_le_bytes(raw)
}

/// Whether applying `response` changed the state.
pub fn took_effect(response: &KvResponse) -> bool {
    matches!(response, KvResponse::Done | KvResponse::CasApplied)
}

/// A hash of a machine's whole state (its snapshot bytes).
pub fn state_hash(machine: &StateMachine) -> Result<u64, Violation> {
    use std::hash::{Hash, Hasher};
    let mut bytes = Vec::new();
    machine.snapshot_to(&mut bytes).map_err(|error| Violation {
        property: "kv state machine works",
        detail: format!("snapshot failed: {error}"),
    })?;
    let mut hasher = std::hash::DefaultHasher::new();
    bytes.hash(&mut hasher);
    Ok(hasher.finish())
}

/// What the key-value checks concluded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvVerdict {
    /// Operations checked.
    pub operations: usize,
    /// The search proved the history linearizable (false: out of budget).
    pub linearizable: bool,
}

/// Checks the key-value history: linearizability with the independent
/// checker, then that each request took effect at most once.
pub fn check(entries: &[KvEntry]) -> Result<KvVerdict, Violation> {
    let mut events: Vec<(u64, bool, u64, EventKind, KvOp)> = Vec::new();
    for (number, entry) in entries.iter().enumerate() {
        let process = number as u64;
        events.push((
            entry.invoked_ms * 1_000_000,
            false,
            process,
            EventKind::Invoke,
            entry.op,
        ));
        if entry.completed_ms != u64::MAX {
            let (kind, op) = match entry.outcome {
                KvOutcome::Ok(op) => (EventKind::Ok, op),
                KvOutcome::Fail => (EventKind::Fail, entry.op),
                KvOutcome::Info => (EventKind::Info, entry.op),
            };
            events.push((entry.completed_ms * 1_000_000, true, process, kind, op));
        }
    }
    events.sort_by_key(|(time, completion, process, _, _)| (*time, *completion, *process));
    let mut history = History::default();
    for (time, _, process, kind, op) in events {
        let recorded = if kind == EventKind::Invoke {
            history.invoke(time, ProcessId(process), op)
        } else {
            history.complete(time, ProcessId(process), kind, op)
        };
        recorded.map_err(|error| Violation {
            property: "kv history is well formed",
            detail: error.to_string(),
        })?;
    }
    let operations = history.operations();
    let search = check_kv(
        &operations,
        FailedCas::CompareMismatch,
        &Budget::steps(SIM_SEARCH_STEPS_MAX),
    );
    if let Verdict::NotLinearizable(dead_end) = &search.verdict {
        return Err(Violation {
            property: "kv linearizability (check::linearizable::check_kv)",
            detail: format!("key {:?}: {dead_end:?}", search.key),
        });
    }
    for entry in entries {
        if entry.effects > 1 {
            return Err(Violation {
                property: "a kv request takes effect at most once",
                detail: format!(
                    "client {} sequence {} ({}) took effect {} times",
                    entry.client, entry.sequence, entry.op, entry.effects
                ),
            });
        }
    }
    Ok(KvVerdict {
        operations: operations.len(),
        linearizable: search.verdict.is_linearizable(),
    })
}
