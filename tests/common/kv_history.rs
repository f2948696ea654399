//! Key-value histories recorded by test clients and judged by both
//! linearizability checkers (ours and todc-utils' WGL).

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rast::check::history::{EventKind, History, ProcessId};
use rast::check::linearizable::{FailedCas, KvOp, ReferenceLimits, check_kv, check_kv_reference};
use rast::check::wgl::{Budget, Verdict};
use rast::client::{CasOutcome, Client, ClientError, ClientOptions};

/// Starts `workers` client threads over `addresses`, each running get, put
/// and cas on `keys` shared keys and recording every operation in `history`
/// (times from `started`), for as long as `keep_going` says. More keys keep
/// each key's history within the reference checker's limits on a fast
/// machine.
pub fn spawn_workers(
    addresses: &[String],
    workers: u64,
    keys: u64,
    history: &Arc<Mutex<History<KvOp>>>,
    started: Instant,
    keep_going: impl Fn() -> bool + Clone + Send + 'static,
) -> Vec<JoinHandle<()>> {
    (0..workers)
        .map(|worker| {
            let history = Arc::clone(history);
            let addresses = addresses.to_vec();
            let keep_going = keep_going.clone();
            std::thread::spawn(move || {
                let options = ClientOptions {
                    deadline: Duration::from_secs(5),
                    timeout: Duration::from_secs(2),
                    ..ClientOptions::default()
                };
                let mut client = Client::new(&addresses, options).unwrap();
                let mut counter = 0u64;
                while keep_going() {
                    counter += 1;
                    let key = (worker + counter) % keys;
                    let value = worker * 1_000_000 + counter;
                    let choice = (worker * 7 + counter * 13) % 4;
                    run_one(&history, &mut client, worker, key, value, choice, started);
                }
            })
        })
        .collect()
}

pub fn record(
    history: &Mutex<History<KvOp>>,
    started: Instant,
    worker: u64,
    kind: Option<EventKind>,
    op: KvOp,
) {
    let mut history = history.lock().unwrap();
    let time_ns = started.elapsed().as_nanos() as u64;
    let process = ProcessId(worker);
    match kind {
        None => history.invoke(time_ns, process, op).unwrap(),
        Some(kind) => history.complete(time_ns, process, kind, op).unwrap(),
    }
}

/// Runs one operation and records its invocation and completion.
pub fn run_one(
    history: &Mutex<History<KvOp>>,
    client: &mut Client,
    worker: u64,
    key: u64,
    value: u64,
    choice: u64,
    started: Instant,
) {
    let key_bytes = key.to_string().into_bytes();
    let parse = |bytes: Vec<u8>| {
        String::from_utf8(bytes)
            .ok()
            .and_then(|text| text.parse().ok())
    };
    match choice {
        0 | 1 => {
            let op = KvOp::Get { key, value: None };
            record(history, started, worker, None, op);
            match client.get(&key_bytes, false) {
                Ok(found) => {
                    let op = KvOp::Get {
                        key,
                        value: found.and_then(parse),
                    };
                    record(history, started, worker, Some(EventKind::Ok), op);
                }
                Err(_) => record(history, started, worker, Some(EventKind::Fail), op),
            }
        }
        2 => {
            let op = KvOp::Put { key, value };
            record(history, started, worker, None, op);
            let kind = match client.put(&key_bytes, value.to_string().as_bytes()) {
                Ok(()) => EventKind::Ok,
                Err(error) => indeterminate(&error),
            };
            record(history, started, worker, Some(kind), op);
        }
        _ => {
            // cas from the last value this worker might have seen: read first.
            let current = client.get(&key_bytes, true).ok().flatten().and_then(parse);
            let op = KvOp::Cas {
                key,
                from: current,
                to: Some(value),
            };
            record(history, started, worker, None, op);
            let expected = current.map(|value| value.to_string().into_bytes());
            let kind = match client.cas(
                &key_bytes,
                expected.as_deref(),
                value.to_string().as_bytes(),
            ) {
                Ok(CasOutcome::Swapped) => EventKind::Ok,
                Ok(CasOutcome::Mismatch(_)) => EventKind::Fail,
                Err(error) => indeterminate(&error),
            };
            record(history, started, worker, Some(kind), op);
        }
    }
}

/// A write whose outcome the client cannot know is `info`; one refused
/// before it reached the log is `fail`.
pub fn indeterminate(error: &ClientError) -> EventKind {
    match error {
        ClientError::Reply(reply)
            if matches!(
                reply.kind,
                rast::wire::client::ErrorKind::TooLarge(_) | rast::wire::client::ErrorKind::Invalid
            ) =>
        {
            EventKind::Fail
        }
        _ => EventKind::Info,
    }
}

/// Asserts that at least `completed_min` operations completed and that the
/// history is linearizable per key by both checkers.
pub fn check(history: &History<KvOp>, completed_min: usize) {
    let operations = history.operations();
    let completed = operations
        .iter()
        .filter(|operation| matches!(operation.outcome, rast::check::history::Outcome::Ok(_)))
        .count();
    assert!(
        completed > completed_min,
        "too few operations completed: {completed}"
    );
    let search = check_kv(&operations, FailedCas::CompareMismatch, &Budget::DEFAULT);
    assert!(
        matches!(search.verdict, Verdict::Linearizable),
        "not linearizable on key {:?}: {}\nhistory:\n{}",
        search.key,
        search.verdict,
        history.to_text().unwrap_or_default()
    );
    let reference = check_kv_reference(
        &operations,
        FailedCas::CompareMismatch,
        ReferenceLimits {
            calls_max: 20_000,
            unknown_max: 8,
        },
    );
    println!("{completed} operations completed; reference checker: {reference:?}");
    assert!(
        reference.linearizable && reference.keys_checked > 0,
        "the reference checker disagrees: {reference:?}"
    );
}
