//! Linearizability of a register, a key-value store and an append-only log.
//!
//! Each object is a sequential specification (a `todc_utils::Specification`
//! impl, so the reference checker can run it too) plus an entry point that
//! turns a recorded history into the search's input and runs the bounded
//! [`super::wgl`] search.
//!
//! Turning a history into search input is where the meaning of outcomes
//! lives:
//!
//! | outcome  | read / get                 | write, put, delete, append | cas |
//! |----------|----------------------------|----------------------------|-----|
//! | `ok`     | must see the state         | takes effect               | compare matched, swapped |
//! | `fail`   | dropped                    | dropped (no effect)        | see [`FailedCas`] |
//! | unknown  | dropped (observes nothing) | may take effect any time after invoke, or never | same, if the compare matches |
//!
//! An operation of unknown outcome gets no completion in the search, so it
//! can be linearized anywhere after its invocation, or left out.
//!
//! A key-value store is checked one key at a time: linearizability is
//! *local* (Herlihy & Wing), so the history is linearizable iff each key's
//! sub-history is, and many small searches are exponentially cheaper than
//! one big one. Values and keys are `u64`: the harness names its keys and
//! values with small integers, which is all a checker needs.
//!
//! The append-only log spec is exact but its state is the whole log (cloned
//! and hashed per step), so it suits histories of up to a few thousand
//! operations; for longer ones, [`super::log`] checks the log-specific
//! invariants in near-linear time.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;

use todc_utils::Specification;

use super::history::{OpParseError, Operation, Optional, Outcome, parse_optional};
use super::log::LogOp;
use super::wgl::{self, Budget, Call, Hints, Search, Verdict};
use crate::types::LogIndex;

/// An operation on one register holding an optional `u64` (`None`: never
/// written, or deleted).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RegisterOp {
    /// Read: at invoke the value is ignored (Jepsen writes `read nil`); at
    /// `ok` it is what was read, `None` meaning absent.
    Read(Option<u64>),
    /// Write a value; `None` deletes.
    Write(Option<u64>),
    /// If the value is `from`, make it `to`. `None` on either side means
    /// absent: `cas nil 5` creates, `cas 5 nil` deletes.
    Cas {
        /// The expected value.
        from: Option<u64>,
        /// The new value.
        to: Option<u64>,
    },
}

impl fmt::Display for RegisterOp {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Read(value) => write!(formatter, "read {}", Optional(value)),
            Self::Write(value) => write!(formatter, "write {}", Optional(value)),
            Self::Cas { from, to } => {
                write!(formatter, "cas {} {}", Optional(from), Optional(to))
            }
        }
    }
}

impl FromStr for RegisterOp {
    type Err = OpParseError;

    fn from_str(text: &str) -> Result<Self, OpParseError> {
        let words: Vec<&str> = text.split_whitespace().collect();
        match words.as_slice() {
            ["read"] => Ok(Self::Read(None)),
            ["read", value] => Ok(Self::Read(parse_optional(value)?)),
            ["write", value] => Ok(Self::Write(parse_optional(value)?)),
            ["cas", from, to] => Ok(Self::Cas {
                from: parse_optional(from)?,
                to: parse_optional(to)?,
            }),
            _ => Err(OpParseError(format!("not a register operation: {text:?}"))),
        }
    }
}

/// An operation on a key-value store of `u64` keys and values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KvOp {
    /// Read a key; at `ok`, `value` is what was read (`None`: absent).
    Get {
        /// The key.
        key: u64,
        /// The value read.
        value: Option<u64>,
    },
    /// Set a key.
    Put {
        /// The key.
        key: u64,
        /// The value.
        value: u64,
    },
    /// Remove a key.
    Delete {
        /// The key.
        key: u64,
    },
    /// Compare-and-set; `None` means absent on either side.
    Cas {
        /// The key.
        key: u64,
        /// The expected value.
        from: Option<u64>,
        /// The new value.
        to: Option<u64>,
    },
}

impl KvOp {
    /// The key, and the operation as one on that key's register.
    pub const fn split(self) -> (u64, RegisterOp) {
        match self {
            Self::Get { key, value } => (key, RegisterOp::Read(value)),
            Self::Put { key, value } => (key, RegisterOp::Write(Some(value))),
            Self::Delete { key } => (key, RegisterOp::Write(None)),
            Self::Cas { key, from, to } => (key, RegisterOp::Cas { from, to }),
        }
    }
}

impl fmt::Display for KvOp {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Get { key, value } => write!(formatter, "get {key} {}", Optional(value)),
            Self::Put { key, value } => write!(formatter, "put {key} {value}"),
            Self::Delete { key } => write!(formatter, "delete {key}"),
            Self::Cas { key, from, to } => {
                write!(formatter, "cas {key} {} {}", Optional(from), Optional(to))
            }
        }
    }
}

impl FromStr for KvOp {
    type Err = OpParseError;

    fn from_str(text: &str) -> Result<Self, OpParseError> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let key = |word: &str| {
            word.parse::<u64>()
                .map_err(|_| OpParseError(format!("bad key {word:?} in {text:?}")))
        };
        match words.as_slice() {
            ["get", k] => Ok(Self::Get {
                key: key(k)?,
                value: None,
            }),
            ["get", k, value] => Ok(Self::Get {
                key: key(k)?,
                value: parse_optional(value)?,
            }),
            ["put", k, value] => Ok(Self::Put {
                key: key(k)?,
                value: key(value)?,
            }),
            ["delete", k] => Ok(Self::Delete { key: key(k)? }),
            ["cas", k, from, to] => Ok(Self::Cas {
                key: key(k)?,
                from: parse_optional(from)?,
                to: parse_optional(to)?,
            }),
            _ => Err(OpParseError(format!("not a key-value operation: {text:?}"))),
        }
    }
}

/// What a `fail` completion of a compare-and-set means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailedCas {
    /// It took no effect and tells nothing: dropped (Knossos's reading;
    /// right when `fail` may also mean "rejected before trying").
    NoEffect,
    /// It took no effect *because the compare did not match*: at some point
    /// in its window the value was not `from` (Jepsen's etcd client, and
    /// porcupine's reading). Stronger: catches a server that refuses a cas
    /// it should have applied.
    CompareMismatch,
}

/// How the search must treat an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Effect {
    /// It completed `ok`: it took effect, its results must match.
    Ok,
    /// Unknown outcome: it may have taken effect, its results are unknown.
    Unknown,
    /// A cas that failed because its compare did not match: no effect, but
    /// the value was not `from` when it ran.
    Mismatch,
}

/// A register operation as the search applies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RegisterCall {
    /// The operation, with the results of an `ok`.
    pub op: RegisterOp,
    /// How to treat it.
    pub effect: Effect,
}

/// Sequential specification of a register holding an optional `u64`,
/// initially absent.
#[derive(Clone, Copy, Debug)]
pub struct RegisterSpec;

impl Specification for RegisterSpec {
    type State = Option<u64>;
    type Operation = RegisterCall;

    fn init() -> Option<u64> {
        None
    }

    fn apply(call: &RegisterCall, state: &Option<u64>) -> (bool, Option<u64>) {
        match (call.op, call.effect) {
            (RegisterOp::Read(value), Effect::Ok) => (value == *state, *state),
            // Unknown reads are dropped before the search; accept to stay
            // total (todc's checker may be fed them).
            (RegisterOp::Read(_), _) => (true, *state),
            (RegisterOp::Write(value), Effect::Ok | Effect::Unknown) => (true, value),
            (RegisterOp::Cas { from, to }, Effect::Ok) => (from == *state, to),
            // Unknown cas: when it does not match it is a no-op, as if it
            // never ran; accept it so todc's checker (which must place every
            // operation) agrees with ours (which need not).
            (RegisterOp::Cas { from, to }, Effect::Unknown) => {
                (true, if from == *state { to } else { *state })
            }
            (RegisterOp::Cas { from, .. }, Effect::Mismatch) => (from != *state, *state),
            (RegisterOp::Write(_), Effect::Mismatch) => (false, *state),
        }
    }
}

impl Hints for RegisterSpec {
    fn is_read_only(call: &RegisterCall) -> bool {
        matches!(call.op, RegisterOp::Read(_)) || call.effect == Effect::Mismatch
    }
}

/// The search input for one register's history, and for each call the
/// index of the operation it came from.
pub fn register_calls(
    operations: &[Operation<RegisterOp>],
    failed_cas: FailedCas,
) -> (Vec<Call<RegisterCall>>, Vec<usize>) {
    convert(operations, |operation| {
        register_call(operation.invoke, &operation.outcome, failed_cas)
    })
}

fn register_call(
    invoke: RegisterOp,
    outcome: &Outcome<RegisterOp>,
    failed_cas: FailedCas,
) -> Option<RegisterCall> {
    let (op, effect) = match (invoke, outcome) {
        (RegisterOp::Read(_), Outcome::Ok(RegisterOp::Read(value))) => {
            (RegisterOp::Read(*value), Effect::Ok)
        }
        // An `ok` read whose completion is not a read: malformed. Check it
        // as a read of the invoke's value rather than hide it.
        (RegisterOp::Read(_), Outcome::Ok(_)) => (invoke, Effect::Ok),
        (RegisterOp::Read(_), _) => return None,
        (_, Outcome::Ok(_)) => (invoke, Effect::Ok),
        (_, Outcome::Unknown) => (invoke, Effect::Unknown),
        (RegisterOp::Cas { .. }, Outcome::Fail(_)) if failed_cas == FailedCas::CompareMismatch => {
            (invoke, Effect::Mismatch)
        }
        (_, Outcome::Fail(_)) => return None,
    };
    Some(RegisterCall { op, effect })
}

/// Checks a single register's history.
///
/// [`wgl::DeadEnd::blocked`] in the answer indexes `operations`.
pub fn check_register(
    operations: &[Operation<RegisterOp>],
    failed_cas: FailedCas,
    budget: &Budget,
) -> Search<Option<u64>> {
    let (calls, origin) = register_calls(operations, failed_cas);
    remap(wgl::check::<RegisterSpec>(&calls, budget), &origin)
}

/// The answer for a key-value history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvSearch {
    /// Linearizable if every key is; else the first key (in key order) that
    /// is not, or else the first whose search ran out of budget.
    pub verdict: Verdict<Option<u64>>,
    /// The key the verdict is about (`None` when linearizable).
    pub key: Option<u64>,
    /// Steps over all keys.
    pub steps: u64,
    /// Keys checked.
    pub keys: usize,
}

/// Checks a key-value store's history, one key at a time; the budget
/// applies to each key's search.
///
/// [`wgl::DeadEnd::blocked`] in the answer indexes `operations`.
pub fn check_kv(
    operations: &[Operation<KvOp>],
    failed_cas: FailedCas,
    budget: &Budget,
) -> KvSearch {
    let per_key = split_by_key(operations);
    let mut answer = KvSearch {
        verdict: Verdict::Linearizable,
        key: None,
        steps: 0,
        keys: per_key.len(),
    };
    for (key, (key_operations, key_origin)) in &per_key {
        let search = remap(
            check_register(key_operations, failed_cas, budget),
            key_origin,
        );
        answer.steps += search.steps;
        match search.verdict {
            Verdict::Linearizable => {}
            Verdict::NotLinearizable(_) => {
                answer.verdict = search.verdict;
                answer.key = Some(*key);
                return answer;
            }
            Verdict::Unknown(_) => {
                if answer.verdict.is_linearizable() {
                    answer.verdict = search.verdict;
                    answer.key = Some(*key);
                }
            }
        }
    }
    answer
}

/// Each key's sub-history as register operations, with the index in
/// `operations` each came from.
fn split_by_key(
    operations: &[Operation<KvOp>],
) -> BTreeMap<u64, (Vec<Operation<RegisterOp>>, Vec<usize>)> {
    let mut per_key: BTreeMap<u64, (Vec<Operation<RegisterOp>>, Vec<usize>)> = BTreeMap::new();
    for (index, operation) in operations.iter().enumerate() {
        let (key, invoke) = operation.invoke.split();
        let outcome = match operation.outcome {
            Outcome::Ok(done) => Outcome::Ok(done.split().1),
            Outcome::Fail(done) => Outcome::Fail(done.split().1),
            Outcome::Unknown => Outcome::Unknown,
        };
        let (key_operations, key_origin) = per_key.entry(key).or_default();
        key_operations.push(operation.retyped(invoke, outcome));
        key_origin.push(index);
    }
    per_key
}

/// The reference checker's answer on a key-value history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvReference {
    /// Every key checked is linearizable.
    pub linearizable: bool,
    /// The first key (in key order) found not linearizable.
    pub key: Option<u64>,
    /// Keys checked.
    pub keys_checked: usize,
    /// Keys left unchecked: over a [`ReferenceLimits`] bound.
    pub keys_skipped: usize,
}

/// Which keys the reference checker is given. Its search has no budget
/// and is exponential in the operations that overlap, and an operation of
/// unknown outcome overlaps everything after its invocation: keys with
/// many of those are left to [`check_kv`] (which prunes them) alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReferenceLimits {
    /// Most calls on one key.
    pub calls_max: usize,
    /// Most calls of unknown outcome on one key.
    pub unknown_max: usize,
}

/// Checks a key-value history with the reference checker
/// (`todc_utils::WGLChecker`, which has no budget and none of our
/// prunings), one key at a time, skipping keys over `limits`. An
/// independent second opinion on [`check_kv`]'s verdict.
pub fn check_kv_reference(
    operations: &[Operation<KvOp>],
    failed_cas: FailedCas,
    limits: ReferenceLimits,
) -> KvReference {
    let mut answer = KvReference {
        linearizable: true,
        key: None,
        keys_checked: 0,
        keys_skipped: 0,
    };
    for (key, (key_operations, _)) in split_by_key(operations) {
        let (calls, _) = register_calls(&key_operations, failed_cas);
        let unknown = calls
            .iter()
            .filter(|call| call.op.effect == Effect::Unknown)
            .count();
        if calls.len() > limits.calls_max || unknown > limits.unknown_max {
            answer.keys_skipped += 1;
            continue;
        }
        answer.keys_checked += 1;
        if calls.is_empty() {
            continue;
        }
        let history = reference_history(&calls);
        if !todc_utils::linearizability::WGLChecker::<RegisterSpec>::is_linearizable(history) {
            answer.linearizable = false;
            answer.key = Some(key);
            return answer;
        }
    }
    answer
}

/// Search input as a history for the reference checker: each call its own
/// process, an unknown outcome answered after everything else (equivalent
/// to "any time after its invocation, or never": the specifications accept
/// such a call anywhere, as a no-op when it cannot apply).
pub fn reference_history<T: Clone>(
    calls: &[Call<T>],
) -> todc_utils::linearizability::history::History<T> {
    use todc_utils::linearizability::history::{Action, History};
    let mut events: Vec<(usize, bool, usize)> = Vec::with_capacity(calls.len() * 2);
    for (index, call) in calls.iter().enumerate() {
        events.push((call.position_invoke, false, index));
        events.push((call.position_complete.unwrap_or(usize::MAX), true, index));
    }
    events.sort_unstable();
    let actions = events
        .iter()
        .map(|&(_, is_return, index)| {
            let op = calls[index].op.clone();
            let action = if is_return {
                Action::Response(op)
            } else {
                Action::Call(op)
            };
            (index, action)
        })
        .collect();
    History::from_actions(actions)
}

/// A log operation as the search applies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LogCall {
    /// The operation, with the results of an `ok`.
    pub op: LogOp,
    /// How to treat it ([`Effect::Mismatch`] does not occur).
    pub effect: Effect,
}

/// Sequential specification of an append-only log: an append goes to the
/// next index (the first entry is at index 1) and returns it; a read at an
/// index returns the payload there, or nothing past the end. An append that
/// carries an index (acknowledged, or pinned by [`log_calls`]) is valid only
/// at that index.
#[derive(Clone, Copy, Debug)]
pub struct LogSpec;

impl Specification for LogSpec {
    /// The payloads, index 1 first.
    type State = Vec<u64>;
    type Operation = LogCall;

    fn init() -> Vec<u64> {
        Vec::new()
    }

    fn apply(call: &LogCall, state: &Vec<u64>) -> (bool, Vec<u64>) {
        match (call.op, call.effect) {
            (LogOp::Append { payload, index }, Effect::Ok | Effect::Unknown) => {
                let next = state.len() as u64 + 1;
                if index.is_some_and(|i| i.get() != next) {
                    return (false, state.clone());
                }
                let mut after = state.clone();
                after.push(payload);
                (true, after)
            }
            (LogOp::Read { index, payload }, Effect::Ok) => {
                let at = index
                    .get()
                    .checked_sub(1)
                    .and_then(|i| state.get(i as usize));
                (at.copied() == payload, state.clone())
            }
            (LogOp::Read { .. }, _) => (true, state.clone()),
            (LogOp::Append { .. }, Effect::Mismatch) => (false, state.clone()),
        }
    }
}

impl Hints for LogSpec {
    fn is_read_only(call: &LogCall) -> bool {
        matches!(call.op, LogOp::Read { .. })
    }

    fn state_bytes(state: &Vec<u64>) -> usize {
        std::mem::size_of_val(state) + state.capacity() * 8
    }
}

/// The search input for a log's history, and for each call the index of
/// the operation it came from.
///
/// Two rewrites keep the search small; both change no verdict (payloads
/// are unique per append):
///
/// * payloads no read observed are all replaced by one placeholder: such an
///   append matters only by the index it takes, so two of them are
///   interchangeable, and the search sees them as twins and their orders as
///   one state. Without this, `k` unacknowledged appends cost `k!`;
/// * an unknown-outcome append whose payload a read observed at index `i`
///   took index `i` if it took effect at all (else the read could not have
///   seen it), so it is pinned there, like an acknowledged append, instead
///   of being tried at every point.
pub fn log_calls(operations: &[Operation<LogOp>]) -> (Vec<Call<LogCall>>, Vec<usize>) {
    let mut observed: HashMap<u64, LogIndex> = HashMap::new();
    for operation in operations {
        if let (
            LogOp::Read { index, .. },
            Outcome::Ok(LogOp::Read {
                payload: Some(payload),
                ..
            }),
        ) = (operation.invoke, operation.outcome)
        {
            observed.entry(payload).or_insert(index);
        }
    }
    let placeholder = (0..=u64::MAX)
        .rev()
        .find(|payload| !observed.contains_key(payload))
        .expect("fewer reads than payload values");
    let payload_seen = |payload: u64| {
        if observed.contains_key(&payload) {
            payload
        } else {
            placeholder
        }
    };
    convert(operations, |operation| {
        let (op, effect) = match (operation.invoke, &operation.outcome) {
            (LogOp::Append { payload, .. }, Outcome::Ok(done)) => {
                let index = match *done {
                    LogOp::Append { index, .. } => index,
                    LogOp::Read { .. } => None,
                };
                let payload = payload_seen(payload);
                (LogOp::Append { payload, index }, Effect::Ok)
            }
            (LogOp::Read { index, .. }, Outcome::Ok(done)) => {
                let payload = match *done {
                    LogOp::Read { payload, .. } => payload,
                    LogOp::Append { .. } => None,
                };
                (LogOp::Read { index, payload }, Effect::Ok)
            }
            (LogOp::Append { payload, .. }, Outcome::Unknown) => {
                let index = observed.get(&payload).copied();
                let payload = payload_seen(payload);
                (LogOp::Append { payload, index }, Effect::Unknown)
            }
            (_, Outcome::Fail(_) | Outcome::Unknown) => return None,
        };
        Some(LogCall { op, effect })
    })
}

/// Checks an append-only log's history exactly (see the module docs for
/// the size it suits).
///
/// [`wgl::DeadEnd::blocked`] in the answer indexes `operations`.
pub fn check_log(operations: &[Operation<LogOp>], budget: &Budget) -> Search<Vec<u64>> {
    let (calls, origin) = log_calls(operations);
    remap(wgl::check::<LogSpec>(&calls, budget), &origin)
}

/// An operation the search must place, as far as building its input goes.
trait Effected {
    fn effect(&self) -> Effect;
}

impl Effected for RegisterCall {
    fn effect(&self) -> Effect {
        self.effect
    }
}

impl Effected for LogCall {
    fn effect(&self) -> Effect {
        self.effect
    }
}

/// Turns operations into search calls with `call_of` (which drops an
/// operation by answering `None`); unknown outcomes get no completion.
fn convert<O, T: Effected>(
    operations: &[Operation<O>],
    call_of: impl Fn(&Operation<O>) -> Option<T>,
) -> (Vec<Call<T>>, Vec<usize>) {
    let mut calls = Vec::with_capacity(operations.len());
    let mut origin = Vec::with_capacity(operations.len());
    for (index, operation) in operations.iter().enumerate() {
        let Some(op) = call_of(operation) else {
            continue;
        };
        let position_complete = match op.effect() {
            Effect::Unknown => None,
            Effect::Ok | Effect::Mismatch => operation.position_complete,
        };
        calls.push(Call {
            op,
            position_invoke: operation.position_invoke,
            position_complete,
        });
        origin.push(index);
    }
    (calls, origin)
}

/// Rewrites a dead end's `blocked` from a search-input index to the index
/// of the operation it came from.
fn remap<S>(mut search: Search<S>, origin: &[usize]) -> Search<S> {
    if let Verdict::NotLinearizable(dead_end) = &mut search.verdict {
        dead_end.blocked = origin[dead_end.blocked];
    }
    search
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::history::{EventKind, History, ProcessId};
    use crate::check::wgl::Exhausted;

    /// Records a history with one tick per event.
    struct Recorder<O>(History<O>);

    impl<O> Recorder<O> {
        fn new() -> Self {
            Self(History::new())
        }

        fn event(&mut self, process: u64, kind: EventKind, op: O) -> &mut Self {
            let time_ns = self.0.len() as u64;
            self.0
                .complete(time_ns, ProcessId(process), kind, op)
                .unwrap();
            self
        }

        fn invoke(&mut self, process: u64, op: O) -> &mut Self {
            self.event(process, EventKind::Invoke, op)
        }

        fn ok(&mut self, process: u64, op: O) -> &mut Self {
            self.event(process, EventKind::Ok, op)
        }
    }

    impl<O: Copy> Recorder<O> {
        /// A whole operation, invoked and completed `ok` with `done`.
        fn done(&mut self, process: u64, invoke: O, done: O) -> &mut Self {
            self.invoke(process, invoke).ok(process, done)
        }

        fn operations(&self) -> Vec<Operation<O>> {
            self.0.operations()
        }
    }

    use RegisterOp::{Cas, Read, Write};

    fn register(recorder: &Recorder<RegisterOp>, failed_cas: FailedCas) -> Verdict<Option<u64>> {
        check_register(&recorder.operations(), failed_cas, &Budget::DEFAULT).verdict
    }

    /// Absent is a value like any other: cas from absent creates, write nil
    /// deletes, a read of absent after a delete is fine, before it is not.
    #[test]
    fn register_absent_is_expressible() {
        let mut recorder = Recorder::new();
        recorder
            .done(1, Read(None), Read(None))
            .done(
                1,
                Cas {
                    from: None,
                    to: Some(5),
                },
                Cas {
                    from: None,
                    to: Some(5),
                },
            )
            .done(2, Read(None), Read(Some(5)))
            .done(2, Write(None), Write(None))
            .done(1, Read(None), Read(None));
        assert_eq!(
            register(&recorder, FailedCas::CompareMismatch),
            Verdict::Linearizable
        );
        recorder.done(
            2,
            Cas {
                from: Some(5),
                to: Some(6),
            },
            Cas {
                from: Some(5),
                to: Some(6),
            },
        );
        assert!(register(&recorder, FailedCas::NoEffect).is_violation());
    }

    /// An info write may take effect after later operations, or never; but
    /// not before it was invoked.
    #[test]
    fn register_info_may_apply_late_or_never() {
        let mut recorder = Recorder::new();
        recorder
            .invoke(1, Write(Some(1)))
            .event(1, EventKind::Info, Write(Some(1)))
            .done(2, Read(None), Read(None))
            .done(2, Read(None), Read(Some(1)));
        assert_eq!(
            register(&recorder, FailedCas::CompareMismatch),
            Verdict::Linearizable
        );
        let mut recorder = Recorder::new();
        recorder
            .invoke(1, Write(Some(1)))
            .event(1, EventKind::Info, Write(Some(1)))
            .done(2, Read(None), Read(None));
        assert_eq!(
            register(&recorder, FailedCas::CompareMismatch),
            Verdict::Linearizable
        );
        let mut recorder = Recorder::new();
        recorder
            .done(2, Read(None), Read(Some(1)))
            .invoke(1, Write(Some(1)))
            .event(1, EventKind::Info, Write(Some(1)));
        assert!(register(&recorder, FailedCas::CompareMismatch).is_violation());
    }

    /// A cas that failed while the value surely was `from` is a violation
    /// under the compare-mismatch reading, and nothing under no-effect.
    #[test]
    fn register_failed_cas_readings_differ() {
        let cas = Cas {
            from: Some(1),
            to: Some(2),
        };
        let mut recorder = Recorder::new();
        recorder
            .done(1, Write(Some(1)), Write(Some(1)))
            .invoke(2, cas)
            .event(2, EventKind::Fail, cas)
            .done(1, Read(None), Read(Some(1)));
        assert!(register(&recorder, FailedCas::CompareMismatch).is_violation());
        assert_eq!(
            register(&recorder, FailedCas::NoEffect),
            Verdict::Linearizable
        );
    }

    /// Keys are judged independently; the verdict names the bad key and
    /// the blocked operation by its index in the input.
    #[test]
    fn kv_names_the_bad_key() {
        let put = |key, value| KvOp::Put { key, value };
        let get = |key, value| KvOp::Get { key, value };
        let mut recorder = Recorder::new();
        recorder
            .done(1, put(1, 10), put(1, 10))
            .done(1, put(2, 20), put(2, 20))
            .done(2, get(1, None), get(1, Some(10)))
            .done(2, KvOp::Delete { key: 2 }, KvOp::Delete { key: 2 })
            .done(1, get(2, None), get(2, Some(20)));
        let search = check_kv(
            &recorder.operations(),
            FailedCas::CompareMismatch,
            &Budget::DEFAULT,
        );
        assert_eq!(search.keys, 2);
        assert_eq!(search.key, Some(2));
        let Verdict::NotLinearizable(dead_end) = search.verdict else {
            panic!("{search:?}");
        };
        assert_eq!(dead_end.blocked, 4);
        assert_eq!(dead_end.state, None);
    }

    /// The log spec: an acknowledged index leaves no gap unless an
    /// unknown-outcome append may fill it; reads see what is there.
    #[test]
    fn log_indices_and_reads() {
        let append = |payload, index: Option<u64>| LogOp::Append {
            payload,
            index: index.map(LogIndex),
        };
        let read = |index, payload| LogOp::Read {
            index: LogIndex(index),
            payload,
        };
        let mut recorder = Recorder::new();
        recorder.done(1, append(10, None), append(10, Some(2)));
        assert!(
            check_log(&recorder.operations(), &Budget::DEFAULT)
                .verdict
                .is_violation()
        );
        let mut recorder = Recorder::new();
        recorder
            .invoke(2, append(20, None))
            .event(2, EventKind::Info, append(20, None))
            .done(1, append(10, None), append(10, Some(2)))
            .done(1, read(1, None), read(1, Some(20)))
            .done(1, read(3, None), read(3, None));
        assert_eq!(
            check_log(&recorder.operations(), &Budget::DEFAULT).verdict,
            Verdict::Linearizable
        );
        recorder.done(1, read(2, None), read(2, Some(20)));
        assert!(
            check_log(&recorder.operations(), &Budget::DEFAULT)
                .verdict
                .is_violation()
        );
    }

    /// A budget too small for the history answers Unknown, not a verdict.
    #[test]
    fn small_budget_answers_unknown() {
        let mut recorder = Recorder::new();
        for value in 0..20 {
            recorder.invoke(value, Write(Some(value)));
        }
        for value in 0..20 {
            recorder.ok(value, Write(Some(value)));
        }
        let search = check_register(
            &recorder.operations(),
            FailedCas::NoEffect,
            &Budget::steps(10),
        );
        assert_eq!(search.verdict, Verdict::Unknown(Exhausted::Steps));
    }

    /// Operation texts round-trip, and a history of them through the file
    /// format.
    #[test]
    fn op_text_round_trip() {
        let registers = [
            Read(None),
            Read(Some(3)),
            Write(None),
            Write(Some(4)),
            Cas {
                from: None,
                to: Some(1),
            },
        ];
        for op in registers {
            assert_eq!(op.to_string().parse::<RegisterOp>(), Ok(op));
        }
        assert_eq!("read".parse::<RegisterOp>(), Ok(Read(None)));
        assert!("cas 1".parse::<RegisterOp>().is_err());
        let kvs = [
            KvOp::Get {
                key: 1,
                value: None,
            },
            KvOp::Get {
                key: 1,
                value: Some(2),
            },
            KvOp::Put { key: 3, value: 4 },
            KvOp::Delete { key: 5 },
            KvOp::Cas {
                key: 6,
                from: Some(7),
                to: None,
            },
        ];
        for op in kvs {
            assert_eq!(op.to_string().parse::<KvOp>(), Ok(op));
        }
        assert!("put 1 nil".parse::<KvOp>().is_err());
        let mut recorder = Recorder::new();
        recorder
            .done(1, Write(Some(1)), Write(Some(1)))
            .invoke(2, Read(None));
        let text = recorder.0.to_text().unwrap();
        assert_eq!(
            History::<RegisterOp>::parse_text(&text).unwrap(),
            recorder.0
        );
    }
}
