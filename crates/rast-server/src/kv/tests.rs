//! Unit and property tests of the key-value state machine.

use proptest::prelude::*;

use super::*;
use crate::constants::{SESSION_EXPIRY_MS, SESSIONS_MAX};
use crate::types::Term;
use crate::wire::client::encode_kv_command;
use crate::wire::encode_batch;

fn command(client_id: u64, sequence: u64, key: &str, operation: KvOperation) -> KvCommand {
    KvCommand {
        client_id,
        sequence,
        key: key.as_bytes().to_vec(),
        operation,
        time_ms: 0,
    }
}

fn put(value: &str) -> KvOperation {
    KvOperation::Put(value.as_bytes().to_vec())
}

fn cas(expected: Option<&str>, new: &str) -> KvOperation {
    KvOperation::Cas {
        expected: expected.map(|value| value.as_bytes().to_vec()),
        new: new.as_bytes().to_vec(),
    }
}

/// A machine with a cursor, so tests read as a list of commands.
struct Driver {
    machine: StateMachine,
    index: u64,
}

impl Driver {
    fn new() -> Self {
        Self {
            machine: StateMachine::new(),
            index: 0,
        }
    }

    fn apply(&mut self, command: &KvCommand) -> KvResponse {
        self.index += 1;
        self.machine
            .apply(LogIndex(self.index), command)
            .expect("apply succeeds")
    }

    fn at(&mut self, time_ms: u64, mut command: KvCommand) -> KvResponse {
        command.time_ms = time_ms;
        self.apply(&command)
    }

    fn value(&self, key: &str) -> Option<&str> {
        self.machine
            .get(key.as_bytes())
            .map(|value| std::str::from_utf8(value).unwrap())
    }
}

/// put, get and delete do what they say and advance the applied index.
#[test]
fn put_get_delete() {
    let mut driver = Driver::new();
    assert_eq!(
        driver.apply(&command(0, 0, "a", put("1"))),
        KvResponse::Done
    );
    assert_eq!(driver.value("a"), Some("1"));
    assert_eq!(
        driver.apply(&command(0, 0, "a", KvOperation::Delete)),
        KvResponse::Done
    );
    assert_eq!(driver.value("a"), None);
    assert_eq!(
        driver.apply(&command(0, 0, "a", KvOperation::Delete)),
        KvResponse::Done
    );
    assert_eq!(driver.machine.applied_index(), LogIndex(3));
}

/// cas with `expected: None` succeeds only on an absent key; a cas that
/// expects a value fails on an absent key and says it was absent.
#[test]
fn cas_with_absent() {
    let mut driver = Driver::new();
    assert_eq!(
        driver.apply(&command(0, 0, "k", cas(Some("x"), "y"))),
        KvResponse::CasMismatch(Current::Absent)
    );
    assert_eq!(
        driver.apply(&command(0, 0, "k", cas(None, "1"))),
        KvResponse::CasApplied
    );
    assert_eq!(driver.value("k"), Some("1"));
    assert_eq!(
        driver.apply(&command(0, 0, "k", cas(None, "2"))),
        KvResponse::CasMismatch(Current::Value(b"1".to_vec()))
    );
    assert_eq!(
        driver.apply(&command(0, 0, "k", cas(Some("1"), "2"))),
        KvResponse::CasApplied
    );
    assert_eq!(driver.value("k"), Some("2"));
    // An empty value is a value, not absence.
    assert_eq!(driver.apply(&command(0, 0, "e", put(""))), KvResponse::Done);
    assert_eq!(
        driver.apply(&command(0, 0, "e", cas(None, "z"))),
        KvResponse::CasMismatch(Current::Value(Vec::new()))
    );
    assert_eq!(
        driver.apply(&command(0, 0, "e", cas(Some(""), "z"))),
        KvResponse::CasApplied
    );
}

/// Keys and values at the limit are accepted; one byte over is refused with
/// no effect (the entry still counts as applied).
#[test]
fn size_limits() {
    let mut driver = Driver::new();
    let key_max = "k".repeat(KEY_BYTES_MAX);
    let value_max = vec![7u8; VALUE_BYTES_MAX];
    let mut at_limit = command(0, 0, &key_max, KvOperation::Put(value_max.clone()));
    assert_eq!(driver.apply(&at_limit), KvResponse::Done);

    let long_key = "k".repeat(KEY_BYTES_MAX + 1);
    assert_eq!(
        driver.apply(&command(0, 0, &long_key, put("v"))),
        KvResponse::Refused(Refusal::KeyTooLarge {
            bytes: KEY_BYTES_MAX + 1,
            limit: KEY_BYTES_MAX
        })
    );
    let mut long_value = value_max.clone();
    long_value.push(0);
    at_limit.operation = KvOperation::Put(long_value.clone());
    assert!(matches!(
        driver.apply(&at_limit),
        KvResponse::Refused(Refusal::ValueTooLarge { .. })
    ));
    at_limit.operation = KvOperation::Cas {
        expected: Some(long_value),
        new: Vec::new(),
    };
    assert!(matches!(
        driver.apply(&at_limit),
        KvResponse::Refused(Refusal::ValueTooLarge { .. })
    ));
    assert_eq!(
        driver.machine.get(key_max.as_bytes()),
        Some(value_max.as_slice())
    );
    assert_eq!(driver.machine.len(), 1);
    assert_eq!(driver.machine.applied_index(), LogIndex(4));
}

/// A retried sequence returns the recorded response and is not applied
/// again: client 1's put, retried after client 2 overwrote the key, leaves
/// client 2's value; a retried cas answers "applied" although the value no
/// longer matches.
#[test]
fn retried_sequence_returns_recorded_response() {
    let mut driver = Driver::new();
    assert_eq!(
        driver.apply(&command(1, 1, "x", put("1"))),
        KvResponse::Done
    );
    assert_eq!(
        driver.apply(&command(2, 1, "x", put("2"))),
        KvResponse::Done
    );
    assert_eq!(
        driver.apply(&command(1, 1, "x", put("1"))),
        KvResponse::Done
    );
    assert_eq!(
        driver.value("x"),
        Some("2"),
        "the retry did not apply again"
    );

    assert_eq!(
        driver.apply(&command(1, 2, "x", cas(Some("2"), "3"))),
        KvResponse::CasApplied
    );
    assert_eq!(
        driver.apply(&command(1, 2, "x", cas(Some("2"), "3"))),
        KvResponse::CasApplied
    );
    assert_eq!(driver.value("x"), Some("3"));

    // A failed cas is recorded with the value it saw.
    assert_eq!(
        driver.apply(&command(2, 2, "x", cas(Some("9"), "4"))),
        KvResponse::CasMismatch(Current::Value(b"3".to_vec()))
    );
    driver.apply(&command(1, 3, "x", put("9")));
    assert_eq!(
        driver.apply(&command(2, 2, "x", cas(Some("9"), "4"))),
        KvResponse::CasMismatch(Current::Value(b"3".to_vec())),
        "the retry answers what the first attempt saw, and does not swap now"
    );
    assert_eq!(driver.value("x"), Some("9"));
    driver.machine.sessions().check_invariants();
}

/// A failed cas that saw a value larger than a session records answers its
/// retry with "not retained" rather than keeping the value.
#[test]
fn large_mismatch_values_are_not_retained() {
    let mut driver = Driver::new();
    let big = "v".repeat(SESSION_VALUE_BYTES_MAX + 1);
    driver.apply(&command(0, 0, "k", put(&big)));
    let first = driver.apply(&command(5, 1, "k", cas(Some("other"), "w")));
    assert_eq!(
        first,
        KvResponse::CasMismatch(Current::Value(big.into_bytes()))
    );
    let retry = driver.apply(&command(5, 1, "k", cas(Some("other"), "w")));
    assert_eq!(retry, KvResponse::CasMismatch(Current::NotRetained));
}

/// A sequence older than the session's last is refused clearly, and so is
/// a first request numbered above 1 (its session may have been lost).
#[test]
fn stale_and_unknown_sequences_are_refused() {
    let mut driver = Driver::new();
    driver.apply(&command(7, 1, "a", put("1")));
    driver.apply(&command(7, 2, "a", put("2")));
    assert_eq!(
        driver.apply(&command(7, 1, "a", put("1"))),
        KvResponse::Refused(Refusal::StaleSequence {
            sequence: 1,
            last: 2
        })
    );
    assert_eq!(driver.value("a"), Some("2"));
    assert_eq!(
        driver.apply(&command(8, 5, "a", put("8"))),
        KvResponse::Refused(Refusal::SessionExpired { client_id: 8 })
    );
    assert_eq!(driver.value("a"), Some("2"));
    // Gaps are fine: a request refused before the log leaves a hole.
    assert_eq!(
        driver.apply(&command(7, 9, "a", put("3"))),
        KvResponse::Done
    );
}

/// Sessions expire by log time, at exactly the bound: a session last active
/// at t survives a command stamped t + SESSION_EXPIRY_MS and is gone at one
/// more millisecond; a stamp from a slow clock never moves log time back.
#[test]
fn sessions_expire_deterministically_by_log_time() {
    let mut driver = Driver::new();
    let start = 1_000_000;
    driver.at(start, command(1, 1, "a", put("1")));
    driver.at(start, command(2, 1, "b", put("1")));
    // Client 2 stays active; client 1 goes idle.
    driver.at(start + SESSION_EXPIRY_MS / 2, command(2, 2, "b", put("2")));
    // A lagging leader clock: log time stays where it was.
    driver.at(5, command(0, 0, "c", put("1")));
    assert_eq!(driver.machine.log_time_ms(), start + SESSION_EXPIRY_MS / 2);

    driver.at(start + SESSION_EXPIRY_MS, command(0, 0, "c", put("2")));
    assert!(
        driver.machine.sessions().get(1).is_some(),
        "at the bound: alive"
    );
    driver.at(start + SESSION_EXPIRY_MS + 1, command(0, 0, "c", put("3")));
    assert!(
        driver.machine.sessions().get(1).is_none(),
        "past the bound: expired"
    );
    assert!(driver.machine.sessions().get(2).is_some());
    // The session's next request is refused: it might be a retry of one
    // applied before (not a first request numbered 1, which opens a new
    // session; see the session module docs).
    assert_eq!(
        driver.at(start + SESSION_EXPIRY_MS + 1, command(1, 2, "a", put("1"))),
        KvResponse::Refused(Refusal::SessionExpired { client_id: 1 })
    );
    // The same log applied elsewhere expires at the same entry.
    let mut replay = Driver::new();
    replay.at(start, command(1, 1, "a", put("1")));
    replay.at(start, command(2, 1, "b", put("1")));
    replay.at(start + SESSION_EXPIRY_MS / 2, command(2, 2, "b", put("2")));
    replay.at(5, command(0, 0, "c", put("1")));
    replay.at(start + SESSION_EXPIRY_MS, command(0, 0, "c", put("2")));
    replay.at(start + SESSION_EXPIRY_MS + 1, command(0, 0, "c", put("3")));
    replay.at(start + SESSION_EXPIRY_MS + 1, command(1, 2, "a", put("1")));
    assert_eq!(replay.machine, driver.machine);
}

/// A full table evicts the least recently active session (by log time, then
/// client id), and only that one.
#[test]
fn full_session_table_evicts_least_recently_active() {
    let mut driver = Driver::new();
    for client in 1..=SESSIONS_MAX as u64 {
        driver.at(client, command(client, 1, "k", put("v")));
    }
    // Client 1 becomes the most recently active by retrying.
    driver.at(SESSIONS_MAX as u64 + 1, command(1, 1, "k", put("v")));
    assert_eq!(driver.machine.sessions().len(), SESSIONS_MAX);
    driver.at(SESSIONS_MAX as u64 + 2, command(u64::MAX, 1, "k", put("v")));
    assert_eq!(driver.machine.sessions().len(), SESSIONS_MAX);
    assert!(driver.machine.sessions().get(1).is_some());
    assert!(
        driver.machine.sessions().get(2).is_none(),
        "client 2 was idle longest"
    );
    assert!(driver.machine.sessions().get(u64::MAX).is_some());
    driver.machine.sessions().check_invariants();
}

/// An apply that panics (the test hook) comes back as an error instead of
/// unwinding into the caller; the entry is not applied and every later
/// apply, advance, snapshot and restore is refused: the machine never skips
/// the entry nor diverges.
#[test]
fn panicking_apply_stops_the_machine() {
    let mut driver = Driver::new();
    driver.apply(&command(0, 0, "ok", put("1")));
    driver.machine.panic_on_key(Some(b"boom".to_vec()));
    let error = driver
        .machine
        .apply(LogIndex(2), &command(0, 0, "boom", put("1")))
        .unwrap_err();
    assert!(
        matches!(&error, ApplyError::Panicked { index: LogIndex(2), message } if message.contains("injected panic")),
        "{error}"
    );
    assert_eq!(
        driver.machine.applied_index(),
        LogIndex(1),
        "entry 2 not applied"
    );
    let failure = driver.machine.failure().expect("stopped").clone();
    assert_eq!(failure.index, LogIndex(2));

    // Everything after is refused, including a harmless command and the
    // same index again.
    for index in [2, 3] {
        assert!(matches!(
            driver
                .machine
                .apply(LogIndex(index), &command(0, 0, "ok", put("2"))),
            Err(ApplyError::Stopped {
                index: LogIndex(2),
                ..
            })
        ));
    }
    assert!(driver.machine.advance(LogIndex(3)).is_err());
    assert!(matches!(
        driver.machine.snapshot_to(Vec::new()),
        Err(SnapshotError::Failed(_))
    ));
    assert_eq!(driver.machine.get(b"ok"), Some(b"1".as_slice()));
    assert_eq!(driver.machine.applied_index(), LogIndex(1));
}

/// The caller's bug of applying an index twice is an error that changes
/// nothing (the machine keeps working).
#[test]
fn already_applied_index_is_refused() {
    let mut driver = Driver::new();
    driver.apply(&command(0, 0, "a", put("1")));
    assert_eq!(
        driver
            .machine
            .apply(LogIndex(1), &command(0, 0, "a", put("2"))),
        Err(ApplyError::AlreadyApplied {
            index: LogIndex(1),
            applied: LogIndex(1)
        })
    );
    assert_eq!(driver.value("a"), Some("1"));
    assert!(driver.machine.failure().is_none());
}

/// A stored kv batch applies entry by entry with consecutive indexes; a
/// malformed payload is refused (not a failure); other kinds only advance
/// the applied index; a batch already partly applied skips what is done.
#[test]
fn apply_batch_walks_entries() {
    let mut machine = StateMachine::new();
    let noop = encode_batch(BatchKind::Noop, Term(1), LogIndex(1), &[b""]);
    machine
        .apply_batch(&BatchView::parse(&noop).unwrap(), |_, _| panic!("no kv"))
        .unwrap();
    assert_eq!(machine.applied_index(), LogIndex(1));

    let entries = [
        encode_kv_command(&command(0, 0, "a", put("1"))),
        b"not a command".to_vec(),
        encode_kv_command(&command(0, 0, "a", cas(Some("1"), "2"))),
    ];
    let batch = encode_batch(BatchKind::Kv, Term(1), LogIndex(2), &entries);
    let mut answers = Vec::new();
    machine
        .apply_batch(&BatchView::parse(&batch).unwrap(), |index, response| {
            answers.push((index.get(), response));
        })
        .unwrap();
    assert_eq!(
        answers,
        vec![
            (2, KvResponse::Done),
            (3, KvResponse::Refused(Refusal::Malformed)),
            (4, KvResponse::CasApplied),
        ]
    );
    assert_eq!(machine.applied_index(), LogIndex(4));
    assert_eq!(machine.get(b"a"), Some(b"2".as_slice()));

    // Applying the same batch again (after a snapshot at 4) does nothing.
    machine
        .apply_batch(&BatchView::parse(&batch).unwrap(), |_, _| panic!("skipped"))
        .unwrap();
}

/// A machine with some of everything: keys, sessions of each recorded
/// response kind, log time.
fn sample_machine() -> StateMachine {
    let mut driver = Driver::new();
    driver.at(10, command(0, 0, "plain", put("p")));
    driver.at(20, command(1, 1, "a", put("1")));
    driver.at(30, command(2, 1, "a", cas(Some("1"), "2")));
    driver.at(40, command(3, 1, "a", cas(Some("x"), "3")));
    driver.at(50, command(4, 1, "missing", cas(Some("x"), "3")));
    driver.at(60, command(0, 0, "big", put(&"b".repeat(2000))));
    driver.at(70, command(5, 1, "big", cas(None, "3")));
    driver.at(75, command(5, 1, "big", cas(None, "3")));
    driver.machine
}

/// Snapshot → restore gives an equal machine (map, sessions, applied index,
/// log time) whose snapshot is byte-identical, and whose sessions still
/// answer retries from the record.
#[test]
fn snapshot_round_trip_includes_sessions() {
    let machine = sample_machine();
    let mut bytes = Vec::new();
    let written = machine.snapshot_to(&mut bytes).unwrap();
    assert_eq!(written, bytes.len() as u64);
    assert_eq!(written, machine.snapshot_len());

    let mut restored = StateMachine::new();
    restored.restore_from(bytes.as_slice()).unwrap();
    assert_eq!(restored, machine);
    let mut again = Vec::new();
    restored.snapshot_to(&mut again).unwrap();
    assert_eq!(again, bytes, "deterministic: equal state, equal bytes");

    let mut original = machine;
    let retry = command(2, 1, "a", cas(Some("1"), "2"));
    let next = LogIndex(original.applied_index().get() + 1);
    assert_eq!(
        restored.apply(next, &retry).unwrap(),
        KvResponse::CasApplied
    );
    assert_eq!(
        original.apply(next, &retry).unwrap(),
        KvResponse::CasApplied
    );
    assert_eq!(restored, original);
}

/// Every flipped byte and every truncation of a snapshot is refused with an
/// error (never a panic), and the machine restoring it is left unchanged.
#[test]
fn damaged_snapshots_are_refused() {
    let machine = sample_machine();
    let mut bytes = Vec::new();
    machine.snapshot_to(&mut bytes).unwrap();
    let mut target = StateMachine::new();
    target
        .apply(LogIndex(1), &command(0, 0, "t", put("1")))
        .unwrap();
    let before = target.clone();
    for position in 0..bytes.len() {
        let mut damaged = bytes.clone();
        damaged[position] ^= 0x20;
        assert!(
            target.restore_from(damaged.as_slice()).is_err(),
            "flip at {position}"
        );
        assert!(
            target.restore_from(&bytes[..position]).is_err(),
            "cut at {position}"
        );
    }
    assert_eq!(target, before);
}

/// A snapshot behind the applied index is refused (applied never moves
/// backwards); one at or ahead of it is installed.
#[test]
fn snapshot_behind_applied_is_refused() {
    let machine = sample_machine();
    let mut bytes = Vec::new();
    machine.snapshot_to(&mut bytes).unwrap();
    let mut ahead = StateMachine::new();
    for index in 1..=machine.applied_index().get() + 1 {
        ahead.advance(LogIndex(index)).unwrap();
    }
    assert!(matches!(
        ahead.restore_from(bytes.as_slice()),
        Err(SnapshotError::Behind { .. })
    ));
    let mut level = StateMachine::new();
    level.advance(machine.applied_index()).unwrap();
    level.restore_from(bytes.as_slice()).unwrap();
    assert_eq!(level, machine);
}

/// A lying length or count in a snapshot costs at most the bytes sent: a
/// header claiming 2^64 keys over a short stream fails at once.
#[test]
fn hostile_counts_do_not_allocate() {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&snapshot::MAGIC);
    bytes.extend_from_slice(&1u64.to_le_bytes());
    bytes.extend_from_slice(&0u64.to_le_bytes());
    bytes.extend_from_slice(&u64::MAX.to_le_bytes());
    bytes.extend_from_slice(&0u64.to_le_bytes());
    bytes.extend_from_slice(&(KEY_BYTES_MAX as u32).to_le_bytes());
    bytes.extend_from_slice(&(VALUE_BYTES_MAX as u32).to_le_bytes());
    let mut machine = StateMachine::new();
    assert!(machine.restore_from(bytes.as_slice()).is_err());
    bytes[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(
        machine.restore_from(bytes.as_slice()),
        Err(SnapshotError::Corrupt(_))
    ));
}

/// One step of a generated workload.
#[derive(Clone, Debug)]
struct Step {
    client: u64,
    /// 0: next sequence, 1: retry the last, 2: a stale one.
    sequence_choice: u8,
    key: u8,
    operation: u8,
    value: u8,
    expected: Option<u8>,
    advance_ms: u64,
}

fn step_strategy() -> impl Strategy<Value = Step> {
    (
        0u64..4,
        prop_oneof![6 => Just(0u8), 3 => Just(1u8), 1 => Just(2u8)],
        0u8..3,
        0u8..3,
        0u8..4,
        proptest::option::of(0u8..4),
        prop_oneof![8 => 0u64..1_000, 1 => Just(SESSION_EXPIRY_MS + 1)],
    )
        .prop_map(
            |(client, sequence_choice, key, operation, value, expected, advance_ms)| Step {
                client,
                sequence_choice,
                key,
                operation,
                value,
                expected,
                advance_ms,
            },
        )
}

/// Turns steps into commands, numbering each client's requests.
fn commands(steps: &[Step]) -> Vec<KvCommand> {
    let mut next = [1u64; 4];
    let mut time = 1_000u64;
    steps
        .iter()
        .map(|step| {
            time += step.advance_ms;
            let slot = step.client as usize;
            let sequence = match (step.client, step.sequence_choice) {
                (0, _) => 0,
                (_, 0) => {
                    next[slot] += 1;
                    next[slot] - 1
                }
                (_, 1) => next[slot].saturating_sub(1).max(1),
                _ => next[slot].saturating_sub(2).max(1),
            };
            let operation = match step.operation {
                0 => KvOperation::Put(vec![step.value]),
                1 => KvOperation::Delete,
                _ => KvOperation::Cas {
                    expected: step.expected.map(|value| vec![value]),
                    new: vec![step.value],
                },
            };
            KvCommand {
                client_id: step.client,
                sequence,
                key: vec![b'k', step.key],
                operation,
                time_ms: time,
            }
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Arbitrary bytes as a snapshot or as an entry payload give an error
    /// or a refusal, never a panic, and a failed restore changes nothing.
    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
        with_magic in any::<bool>(),
    ) {
        let mut bytes = bytes;
        if with_magic {
            let mut framed = snapshot::MAGIC.to_vec();
            framed.append(&mut bytes);
            bytes = framed;
        }
        let mut machine = sample_machine();
        let before = machine.clone();
        if machine.restore_from(bytes.as_slice()).is_err() {
            prop_assert_eq!(&machine, &before);
        }
        let next = LogIndex(machine.applied_index().get() + 1);
        let _ = machine.apply_payload(next, &bytes);
        prop_assert!(machine.failure().is_none());
    }

    /// Snapshot and restore at any point of any workload: the restored
    /// machine equals the original, snapshots byte-identically, and gives the
    /// same responses for the rest of the workload (sessions survive).
    #[test]
    fn snapshot_at_any_point_continues_identically(
        steps in proptest::collection::vec(step_strategy(), 1..80),
        cut in 0usize..80,
    ) {
        let commands = commands(&steps);
        let cut = cut.min(commands.len());
        let mut original = StateMachine::new();
        for (position, command) in commands[..cut].iter().enumerate() {
            original.apply(LogIndex(position as u64 + 1), command).unwrap();
        }
        let mut bytes = Vec::new();
        original.snapshot_to(&mut bytes).unwrap();
        let mut restored = StateMachine::new();
        restored.restore_from(bytes.as_slice()).unwrap();
        prop_assert_eq!(&restored, &original);
        for (position, command) in commands.iter().enumerate().skip(cut) {
            let index = LogIndex(position as u64 + 1);
            prop_assert_eq!(
                original.apply(index, command).unwrap(),
                restored.apply(index, command).unwrap()
            );
        }
        let (mut left, mut right) = (Vec::new(), Vec::new());
        original.snapshot_to(&mut left).unwrap();
        restored.snapshot_to(&mut right).unwrap();
        prop_assert_eq!(left, right);
        original.sessions().check_invariants();
    }

    /// A request answered as a duplicate never changes the map, and a
    /// session's response to a retry equals its first response (up to a
    /// value too large to retain).
    #[test]
    fn duplicates_never_apply_twice(
        steps in proptest::collection::vec(step_strategy(), 1..120),
    ) {
        let mut machine = StateMachine::new();
        let mut first: std::collections::HashMap<(u64, u64), KvResponse> =
            std::collections::HashMap::new();
        for (position, command) in commands(&steps).iter().enumerate() {
            let before = machine.data.clone();
            // What the table will say once this command's log time expired
            // idle sessions.
            let mut probe = machine.sessions().clone();
            probe.expire(machine.log_time_ms().max(command.time_ms));
            let known = command.client_id != 0
                && matches!(
                    probe.check(command.client_id, command.sequence),
                    session::Check::Duplicate(_)
                );
            let response = machine
                .apply(LogIndex(position as u64 + 1), command)
                .unwrap();
            if known {
                prop_assert_eq!(&machine.data, &before, "a duplicate changed the map");
                prop_assert_eq!(
                    Some(&response),
                    first.get(&(command.client_id, command.sequence))
                );
            } else if command.client_id != 0 && !matches!(response, KvResponse::Refused(_)) {
                first.insert((command.client_id, command.sequence), response);
            }
        }
        machine.sessions().check_invariants();
    }
}
