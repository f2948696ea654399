//! The workload: concurrent clients appending to two logs, reading them
//! back, and using the key-value store; every operation recorded as
//! invoke / ok / fail / info in one history. A server that answers that it
//! does not serve the key-value store ([`kv_not_served`]) fails the run,
//! unless it is run with `--kv-optional` (then the verdict says "KV not
//! served": never a pass of the key-value check).
//!
//! One history holds every client's events in true real-time order: an
//! event is timestamped and appended under one lock, invokes before the
//! request leaves, completions after the answer arrives. Each operation
//! names its object (`log a`, `log b`, `kv`), and the checks take each
//! object's operations apart (positions stay those of the whole history,
//! so real-time order between them is kept).
//!
//! History lines (after time, process and kind):
//!
//! ```text
//! log a append 17 nil        append payload 17 to log a (ok: `log a append 17 42`, index 42)
//! log b read 40 nil          read index 40 of log b (ok: the payload there, or nil)
//! kv cas 3 12 19             compare-and-set key 3 from 12 to 19
//! ```
//!
//! Payloads are identities: every append writes `nemesis N` with a fresh
//! `N`, so an entry traces back to the one request that wrote it. Entries
//! the server writes itself (the no-op of each new leader) get identities
//! from their term and index ([`identity_of`]).

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::check::history::{EventKind, History, OpParseError, ProcessId};
use crate::check::linearizable::KvOp;
use crate::check::log::LogOp;
use crate::client::{CasOutcome, Client, ClientError, ClientOptions, Connection};
use crate::random::Random;
use crate::types::LogIndex;
use crate::wire::client::{ErrorKind, RequestBody, ResponseBody};
use crate::wire::{BatchKind, BatchView, WireError};

/// The two logs the workload appends to.
pub const LOGS: [&str; 2] = ["nemesis-a", "nemesis-b"];
/// Their short names in history lines.
pub const LOG_LETTERS: [&str; 2] = ["a", "b"];

/// Identities of client payloads are below this.
pub const CLIENT_IDENTITY_LIMIT: u64 = 1 << 60;
/// Tag of a server no-op's identity: `NOOP | term << 32 | index`.
pub const IDENTITY_NOOP: u64 = 1 << 63;
/// Tag of a configuration entry's identity.
pub const IDENTITY_CONFIG: u64 = 1 << 62;
/// Tag of an entry that is none of ours and not the server's: invented.
pub const IDENTITY_FOREIGN: u64 = 1 << 61;

/// Keys per key generation: the key-value workload uses a few keys at a
/// time and moves to fresh ones now and then (Jepsen's "independent"
/// keys), so each key's history stays small enough for an exact search.
pub const KV_KEYS: u64 = 4;
/// Key-value operations before the workload moves to the next keys: about
/// 40 per key, so that a key whose operations are mostly of unknown outcome
/// (a full disk, a partition) still searches exactly within the budget
/// (100 per key ran out of steps once in a disk-full run).
pub const KV_OPS_PER_GENERATION: u64 = 160;

/// One operation of the workload, on one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NemesisOp {
    /// On log `log` (an index into [`LOGS`]).
    Log {
        /// Which log.
        log: usize,
        /// The operation.
        op: LogOp,
    },
    /// On the key-value store.
    Kv(KvOp),
}

impl fmt::Display for NemesisOp {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Log { log, op } => write!(formatter, "log {} {op}", LOG_LETTERS[*log]),
            Self::Kv(op) => write!(formatter, "kv {op}"),
        }
    }
}

impl FromStr for NemesisOp {
    type Err = OpParseError;

    fn from_str(text: &str) -> Result<Self, OpParseError> {
        if let Some(rest) = text.strip_prefix("kv ") {
            return Ok(Self::Kv(rest.parse()?));
        }
        let rest = text
            .strip_prefix("log ")
            .ok_or_else(|| OpParseError(format!("not a nemesis operation: {text:?}")))?;
        let (letter, op) = rest
            .split_once(' ')
            .ok_or_else(|| OpParseError(format!("no log operation in {text:?}")))?;
        let log = LOG_LETTERS
            .iter()
            .position(|name| *name == letter)
            .ok_or_else(|| OpParseError(format!("unknown log {letter:?}")))?;
        Ok(Self::Log {
            log,
            op: op.parse()?,
        })
    }
}

/// The payload bytes of identity `identity`.
pub fn payload_of(identity: u64) -> Vec<u8> {
    debug_assert!(identity < CLIENT_IDENTITY_LIMIT);
    format!("nemesis {identity}").into_bytes()
}

/// The identity of the entry at `index` of a stored batch: a client payload
/// reads back as its number; a no-op or a configuration entry is named by
/// its term and index; anything else is foreign (the checker will call it
/// invented).
pub fn identity_of(view: &BatchView<'_>, index: LogIndex, payload: &[u8]) -> u64 {
    let position = (view.term().get().min(0x0fff_ffff) << 32) | (index.get() & 0xffff_ffff);
    match view.kind() {
        Ok(BatchKind::Data) => std::str::from_utf8(payload)
            .ok()
            .and_then(|text| text.strip_prefix("nemesis "))
            .and_then(|number| number.parse::<u64>().ok())
            .filter(|number| *number < CLIENT_IDENTITY_LIMIT)
            .unwrap_or(IDENTITY_FOREIGN | position),
        Ok(BatchKind::Noop) => IDENTITY_NOOP | position,
        Ok(BatchKind::Config) => IDENTITY_CONFIG | position,
        _ => IDENTITY_FOREIGN | position,
    }
}

/// Whether an identity names an entry the server writes by itself.
pub const fn is_server_entry(identity: u64) -> bool {
    identity & (IDENTITY_NOOP | IDENTITY_CONFIG) != 0
}

/// The (index, identity) of each entry in `batches` from `from` on.
pub fn entries_of(batches: &[Vec<u8>], from: LogIndex) -> Result<Vec<(LogIndex, u64)>, WireError> {
    let mut entries = Vec::new();
    for frame in batches {
        let view = BatchView::parse(frame)?;
        view.verify_checksum()?;
        let mut index = view.first_index();
        view.for_each_entry(|payload| {
            if index >= from {
                entries.push((index, identity_of(&view, index, payload)));
            }
            index = index.next();
            Ok(())
        })?;
    }
    Ok(entries)
}

/// The history, recorded under one lock with one clock.
#[derive(Debug)]
pub struct Recorder {
    started: Instant,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    history: History<NemesisOp>,
    /// Per log, (invoke ns, complete ns) of every acknowledged append.
    acknowledged: [Vec<(u64, u64)>; 2],
}

impl Recorder {
    /// A recorder whose clock starts now.
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Nanoseconds since the recorder started (the history's clock).
    pub fn now_ns(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records that `process` invokes `op`.
    pub fn invoke(&self, process: ProcessId, op: NemesisOp) {
        let mut inner = self.lock();
        let time_ns = self.now_ns();
        inner
            .history
            .invoke(time_ns, process, op)
            .expect("the workload invokes one operation per process at a time");
    }

    /// Records how `process`'s operation ended; `op` carries the results.
    pub fn complete(&self, process: ProcessId, kind: EventKind, op: NemesisOp) {
        let mut inner = self.lock();
        let time_ns = self.now_ns();
        if kind == EventKind::Ok
            && let NemesisOp::Log {
                log,
                op: LogOp::Append { .. },
            } = op
        {
            let invoked = inner
                .history
                .events()
                .iter()
                .rev()
                .find(|event| event.process == process && event.kind == EventKind::Invoke)
                .map_or(0, |event| event.time_ns);
            inner.acknowledged[log].push((invoked, time_ns));
        }
        inner
            .history
            .complete(time_ns, process, kind, op)
            .expect("the workload completes what it invoked");
    }

    /// The completion time of the first append to `log` acknowledged among
    /// those invoked at or after `since_ns`.
    pub fn first_ack_since(&self, log: usize, since_ns: u64) -> Option<u64> {
        self.lock().acknowledged[log]
            .iter()
            .filter(|(invoked, _)| *invoked >= since_ns)
            .map(|(_, completed)| *completed)
            .min()
    }

    /// A copy of the history so far.
    pub fn history(&self) -> History<NemesisOp> {
        self.lock().history.clone()
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

/// What the workers share.
#[derive(Debug)]
pub struct Shared {
    /// The history.
    pub recorder: Recorder,
    /// Set to stop the workers.
    pub stop: AtomicBool,
    /// Node addresses.
    pub addresses: Vec<String>,
    /// Next payload identity.
    next_identity: AtomicU64,
    /// Per log, the highest index acknowledged so far (reads aim below it).
    acknowledged_max: [AtomicU64; 2],
    /// Key-value operations so far (for key generations).
    kv_operations: AtomicU64,
    /// Client settings.
    pub options: ClientOptions,
}

impl Shared {
    /// Shared state for a cluster at `addresses`.
    pub fn new(addresses: Vec<String>, options: ClientOptions) -> Self {
        Self {
            recorder: Recorder::new(),
            stop: AtomicBool::new(false),
            addresses,
            next_identity: AtomicU64::new(1),
            acknowledged_max: [AtomicU64::new(0), AtomicU64::new(0)],
            kv_operations: AtomicU64::new(0),
            options,
        }
    }

    /// A fresh identity (payloads, key-value values).
    pub fn identity(&self) -> u64 {
        self.next_identity.fetch_add(1, Ordering::Relaxed)
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// How an append that returned an error ended, for the history: `fail`
/// only when the client's answer proves it took no effect.
fn append_error_kind(error: &ClientError) -> EventKind {
    match error {
        // Every attempt was refused (not leader, unavailable, no
        // connection): the server said it did not take the request.
        ClientError::NoLeader { .. } => EventKind::Fail,
        ClientError::Reply(reply) => match reply.kind {
            // Refused before it was proposed (a bad batch, no room).
            ErrorKind::Invalid | ErrorKind::TooLarge(_) | ErrorKind::NoSpace => EventKind::Fail,
            // `Failed`: the log stopped after it was proposed; it may
            // commit elsewhere.
            _ => EventKind::Info,
        },
        _ => EventKind::Info,
    }
}

/// Appends one entry to `log` and records it; the answer's index if
/// acknowledged.
pub fn append(
    shared: &Shared,
    client: &mut Client,
    process: ProcessId,
    log: usize,
) -> Option<LogIndex> {
    let payload = shared.identity();
    let invoke = NemesisOp::Log {
        log,
        op: LogOp::Append {
            payload,
            index: None,
        },
    };
    shared.recorder.invoke(process, invoke);
    match client.append(LOGS[log], &[payload_of(payload)]) {
        Ok(appended) => {
            let index = appended.first_index;
            shared.acknowledged_max[log].fetch_max(index.get(), Ordering::Relaxed);
            let done = NemesisOp::Log {
                log,
                op: LogOp::Append {
                    payload,
                    index: Some(index),
                },
            };
            shared.recorder.complete(process, EventKind::Ok, done);
            Some(index)
        }
        Err(error) => {
            shared
                .recorder
                .complete(process, append_error_kind(&error), invoke);
            None
        }
    }
}

/// Reads the entry at `index` of `log` from node `node` over `connection`
/// (opened if needed) and records it.
fn read(
    shared: &Shared,
    connection: &mut Option<Connection>,
    node: usize,
    process: ProcessId,
    log: usize,
    index: LogIndex,
) {
    let invoke = NemesisOp::Log {
        log,
        op: LogOp::Read {
            index,
            payload: None,
        },
    };
    shared.recorder.invoke(process, invoke);
    let answer = read_at(shared, connection, node, log, index);
    match answer {
        Ok(ReadAnswer::Entry(payload)) => {
            let done = NemesisOp::Log {
                log,
                op: LogOp::Read { index, payload },
            };
            shared.recorder.complete(process, EventKind::Ok, done);
        }
        Ok(ReadAnswer::Refused) => shared.recorder.complete(process, EventKind::Fail, invoke),
        Err(_) => {
            *connection = None;
            shared.recorder.complete(process, EventKind::Info, invoke);
        }
    }
}

/// What a node answered to a read of one index.
enum ReadAnswer {
    /// The identity of the entry there (`None`: not committed that far
    /// on that node).
    Entry(Option<u64>),
    /// An error reply.
    Refused,
}

fn read_at(
    shared: &Shared,
    connection: &mut Option<Connection>,
    node: usize,
    log: usize,
    index: LogIndex,
) -> Result<ReadAnswer, ClientError> {
    if connection.is_none() {
        *connection = Some(Connection::open(&shared.addresses[node], &shared.options)?);
    }
    let connection = connection.as_mut().expect("opened above");
    let body = RequestBody::Read {
        from_index: index.get(),
        max_entries: 1,
    };
    match connection.call(LOGS[log], body, None)? {
        (ResponseBody::Batches(_), batches) => {
            let entries = entries_of(&batches, index)?;
            Ok(ReadAnswer::Entry(
                entries
                    .iter()
                    .find(|(at, _)| *at == index)
                    .map(|(_, identity)| *identity),
            ))
        }
        (ResponseBody::Error(_), _) => Ok(ReadAnswer::Refused),
        (other, _) => Err(ClientError::Unexpected(format!("{other:?}"))),
    }
}

/// A client that appends to both logs and reads them back from any node.
pub fn log_worker(shared: &Arc<Shared>, process: ProcessId, seed: u64) {
    let mut random = Random::new(seed);
    let Ok(mut clients) = LOGS
        .iter()
        .map(|_| Client::new(&shared.addresses, shared.options.clone()))
        .collect::<Result<Vec<Client>, ClientError>>()
    else {
        return;
    };
    let mut readers: Vec<Option<Connection>> = shared.addresses.iter().map(|_| None).collect();
    while !shared.stopped() {
        let log = random.below(LOGS.len() as u64) as usize;
        if random.chance(1, 4) {
            let node = random.below(readers.len() as u64) as usize;
            let highest = shared.acknowledged_max[log].load(Ordering::Relaxed);
            let index = LogIndex(random.between(1, highest + 3));
            read(shared, &mut readers[node], node, process, log, index);
        } else {
            append(shared, &mut clients[log], process, log);
        }
        think(&mut random);
    }
}

/// A short random pause between operations, so clients interleave.
fn think(random: &mut Random) {
    std::thread::sleep(Duration::from_micros(random.below(4_000)));
}

/// Whether the cluster serves the key-value store: `Some(reason)` when it
/// answered that it does not (the server before the state machine was
/// integrated), `None` when it serves it.
pub fn kv_not_served(shared: &Shared) -> Option<String> {
    let Ok(mut client) = Client::new(&shared.addresses, shared.options.clone()) else {
        return Some("no client".into());
    };
    let mut last = String::new();
    for _ in 0..5 {
        match client.get(b"nemesis-probe", false) {
            Ok(_) => return None,
            Err(ClientError::Reply(reply)) if reply.kind == ErrorKind::Invalid => {
                return Some(reply.message);
            }
            Err(error) => last = error.to_string(),
        }
    }
    Some(format!("no answer to a probe: {last}"))
}

/// The key-value key named `key` on the wire.
fn key_bytes(key: u64) -> Vec<u8> {
    format!("nemesis-k{key}").into_bytes()
}

/// A value read back; something not ours reads as `u64::MAX`, which no
/// client wrote, so the checker flags it.
fn value_of(bytes: &[u8]) -> u64 {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(u64::MAX)
}

/// How a key-value write that returned an error ended: writes carry a
/// session and the client retries them, so after a retry an error proves
/// nothing: `info`, except for refusals that precede any attempt.
fn kv_error_kind(error: &ClientError) -> EventKind {
    match error {
        ClientError::Reply(reply)
            if matches!(reply.kind, ErrorKind::Invalid | ErrorKind::TooLarge(_)) =>
        {
            EventKind::Fail
        }
        _ => EventKind::Info,
    }
}

/// A client doing get / put / cas / delete on a few keys at a time.
pub fn kv_worker(shared: &Arc<Shared>, process: ProcessId, seed: u64) {
    let mut random = Random::new(seed);
    let Ok(mut client) = Client::new(&shared.addresses, shared.options.clone()) else {
        return;
    };
    // The last value this client saw per key, to aim its compare-and-sets.
    let mut seen: std::collections::HashMap<u64, Option<u64>> = std::collections::HashMap::new();
    while !shared.stopped() {
        let count = shared.kv_operations.fetch_add(1, Ordering::Relaxed);
        let key = (count / KV_OPS_PER_GENERATION) * KV_KEYS + random.below(KV_KEYS);
        let choice = random.below(20);
        let (invoke, outcome) = if choice < 8 {
            kv_get(shared, &mut client, process, key)
        } else if choice < 14 {
            let value = shared.identity();
            let invoke = KvOp::Put { key, value };
            shared.recorder.invoke(process, NemesisOp::Kv(invoke));
            (
                invoke,
                client
                    .put(&key_bytes(key), value.to_string().as_bytes())
                    .map(|()| invoke),
            )
        } else if choice < 19 {
            let from = seen.get(&key).copied().flatten();
            let to = shared.identity();
            let invoke = KvOp::Cas {
                key,
                from,
                to: Some(to),
            };
            shared.recorder.invoke(process, NemesisOp::Kv(invoke));
            let expected = from.map(|value| value.to_string().into_bytes());
            match client.cas(
                &key_bytes(key),
                expected.as_deref(),
                to.to_string().as_bytes(),
            ) {
                Ok(CasOutcome::Swapped) => (invoke, Ok(invoke)),
                Ok(CasOutcome::Mismatch(current)) => {
                    seen.insert(key, current.as_deref().map(value_of));
                    shared
                        .recorder
                        .complete(process, EventKind::Fail, NemesisOp::Kv(invoke));
                    think(&mut random);
                    continue;
                }
                Err(error) => (invoke, Err(error)),
            }
        } else {
            let invoke = KvOp::Delete { key };
            shared.recorder.invoke(process, NemesisOp::Kv(invoke));
            (invoke, client.delete(&key_bytes(key)).map(|()| invoke))
        };
        match outcome {
            Ok(done) => {
                if let KvOp::Get { value, .. } = done {
                    seen.insert(key, value);
                }
                if let KvOp::Cas { to, .. } = done {
                    seen.insert(key, to);
                }
                shared
                    .recorder
                    .complete(process, EventKind::Ok, NemesisOp::Kv(done));
            }
            Err(error) => {
                shared
                    .recorder
                    .complete(process, kv_error_kind(&error), NemesisOp::Kv(invoke));
            }
        }
        think(&mut random);
    }
}

fn kv_get(
    shared: &Shared,
    client: &mut Client,
    process: ProcessId,
    key: u64,
) -> (KvOp, Result<KvOp, ClientError>) {
    let invoke = KvOp::Get { key, value: None };
    shared.recorder.invoke(process, NemesisOp::Kv(invoke));
    let answer = client.get(&key_bytes(key), false).map(|value| KvOp::Get {
        key,
        value: value.as_deref().map(value_of),
    });
    (invoke, answer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Term;
    use crate::wire::encode_batch;

    /// Operation texts round-trip through the history format.
    #[test]
    fn op_text_round_trip() {
        let ops = [
            NemesisOp::Log {
                log: 0,
                op: LogOp::Append {
                    payload: 17,
                    index: None,
                },
            },
            NemesisOp::Log {
                log: 1,
                op: LogOp::Read {
                    index: LogIndex(40),
                    payload: Some(3),
                },
            },
            NemesisOp::Kv(KvOp::Cas {
                key: 3,
                from: None,
                to: Some(19),
            }),
        ];
        for op in ops {
            assert_eq!(op.to_string().parse::<NemesisOp>(), Ok(op), "{op}");
        }
        assert_eq!(ops[0].to_string(), "log a append 17 nil");
        assert!("log c read 1 nil".parse::<NemesisOp>().is_err());
        assert!("kv jump 1".parse::<NemesisOp>().is_err());
    }

    /// Client payloads read back as their identity, a no-op as its term
    /// and index, anything else as foreign.
    #[test]
    fn identities_of_stored_entries() {
        let data = encode_batch(
            BatchKind::Data,
            Term(3),
            LogIndex(7),
            &[payload_of(42), b"junk".to_vec()],
        );
        let noop = encode_batch(BatchKind::Noop, Term(4), LogIndex(9), &[b""]);
        let entries = entries_of(&[data, noop], LogIndex(1)).unwrap();
        assert_eq!(entries[0], (LogIndex(7), 42));
        assert_eq!(entries[1].0, LogIndex(8));
        assert_eq!(entries[1].1, IDENTITY_FOREIGN | (3 << 32) | 8);
        assert_eq!(entries[2], (LogIndex(9), IDENTITY_NOOP | (4 << 32) | 9));
        assert!(is_server_entry(entries[2].1));
        assert!(!is_server_entry(entries[1].1) && !is_server_entry(42));
    }
}
