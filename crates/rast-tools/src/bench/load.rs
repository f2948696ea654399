//! The load generator: one thread per client, each with its own connection
//! to the leader of its log.
//!
//! * Closed loop (`--inflight M`): a client keeps M requests outstanding and
//!   sends the next one as each answer arrives; latency is answer − send.
//! * Open loop (`--rate R`): each client sends on a fixed schedule
//!   (R ÷ clients per second) whatever the answers do, from one thread, while
//!   another thread receives. Latency is measured from the *intended* send
//!   time, so a stall is charged to every request it delayed (coordinated
//!   omission corrected, as in wrk2). `--inflight` caps what is outstanding.
//!
//! Only requests sent after the warm-up and before the end are recorded.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::BenchError;
use super::link::{self, Link, Writer};
use crate::client::ClientOptions;
use crate::random::Random;
use crate::types::{LogIndex, Term};
use crate::wire::client::{ErrorKind, KvCommand, KvOperation, RequestBody, ResponseBody};
use crate::wire::{BatchKind, encode_batch};

/// Largest latency a histogram records (ns); longer ones saturate.
const LATENCY_NS_MAX: u64 = 120_000_000_000;

/// A new latency histogram (ns, 3 significant digits).
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3).expect("valid histogram bounds")
}

/// What every client does.
#[derive(Clone, Debug)]
pub struct Workload {
    /// Client threads (connections).
    pub clients: u32,
    /// Requests outstanding per client (closed loop), or the cap (open loop).
    pub inflight: u32,
    /// Total requests per second across clients; `None`: closed loop.
    pub rate: Option<f64>,
    /// Bytes per entry.
    pub payload: usize,
    /// Entries per append request.
    pub batch: u32,
    /// Log names; client `i` uses log `i % logs.len()`.
    pub logs: Vec<String>,
    /// Percent of requests that are key-value operations instead of appends.
    pub kv_percent: u32,
    /// Percent of key-value operations that are gets (the rest are puts).
    pub kv_get_percent: u32,
    /// Distinct keys the key-value operations touch.
    pub keys: u64,
    /// Measured time (after the warm-up); `None` with an operation count.
    pub duration: Option<Duration>,
    /// Measured requests to complete; `None` with a duration.
    pub operations: Option<u64>,
    /// Unrecorded time before measuring.
    pub warmup: Duration,
}

/// Counters the clients and the progress line share.
#[derive(Debug)]
pub struct Shared {
    /// Requests sent now are recorded.
    pub measuring: AtomicBool,
    /// Clients stop sending.
    pub stop: AtomicBool,
    /// Measured requests claimed (count mode).
    pub claimed: AtomicU64,
    /// Measured requests answered successfully.
    pub completed: AtomicU64,
    /// Measured entries answered successfully.
    pub entries: AtomicU64,
    /// Error answers and lost requests.
    pub errors: AtomicU64,
    /// Latencies since the progress line last looked, per client.
    pub interval: Vec<Mutex<Histogram<u64>>>,
    /// The first error answer, for the report.
    pub first_error: Mutex<Option<String>>,
}

impl Shared {
    /// Shared state for `clients` clients.
    pub fn new(clients: u32) -> Self {
        Self {
            measuring: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            claimed: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            entries: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            interval: (0..clients).map(|_| Mutex::new(histogram())).collect(),
            first_error: Mutex::new(None),
        }
    }
}

/// What one client measured.
#[derive(Debug)]
pub struct ClientOutcome {
    /// Latencies of measured requests (ns).
    pub latencies: Histogram<u64>,
    /// The last error that broke its connection, if any.
    pub last_error: Option<String>,
}

/// One request as sent: when it was (meant to be) sent, whether it counts,
/// and how many entries it carries.
#[derive(Clone, Copy, Debug)]
struct Sent {
    at: Instant,
    measured: bool,
    entries: u32,
}

/// What a client thread needs.
#[derive(Clone, Debug)]
pub struct ClientPlan {
    /// Its number, 0-based.
    pub index: u32,
    /// Its log.
    pub log: String,
    /// Node addresses (to find the leader again after a failure).
    pub addresses: Vec<String>,
    /// The leader of its log when the run started.
    pub leader: String,
    /// Handshake settings.
    pub options: ClientOptions,
}

/// Runs one client until the shared stop flag (or its count) ends it.
pub fn run_client(
    plan: &ClientPlan,
    workload: &Workload,
    shared: &Shared,
) -> Result<ClientOutcome, BenchError> {
    let mut generator = Generator::new(plan.index, workload);
    let mut latencies = histogram();
    let mut leader = plan.leader.clone();
    let mut last_error = None;
    while !shared.stop.load(Ordering::Relaxed) {
        let outcome = match workload.rate {
            None => closed_loop(
                plan,
                &leader,
                workload,
                shared,
                &mut generator,
                &mut latencies,
            ),
            Some(rate) => open_loop(
                plan,
                &leader,
                workload,
                rate,
                shared,
                &mut generator,
                &mut latencies,
            ),
        };
        match outcome {
            Ok(()) => break,
            Err(error) => {
                // The leader moved or the connection broke: what was in
                // flight is lost (counted as errors by the loop); find the
                // leader again and go on.
                last_error = Some(error.to_string());
                std::thread::sleep(Duration::from_millis(50));
                if let Ok(found) = super::find_leader(
                    &plan.addresses,
                    &plan.log,
                    &plan.options,
                    Duration::from_secs(2),
                ) {
                    leader = found;
                }
            }
        }
    }
    Ok(ClientOutcome {
        latencies,
        last_error,
    })
}

/// Makes each client's requests.
struct Generator {
    batch: Vec<u8>,
    batch_entries: u32,
    value: Vec<u8>,
    client_id: u64,
    sequence: u64,
    random: Random,
    kv_percent: u32,
    kv_get_percent: u32,
    keys: u64,
}

impl Generator {
    fn new(index: u32, workload: &Workload) -> Self {
        let payloads: Vec<Vec<u8>> = (0..workload.batch)
            .map(|entry| {
                let mut payload = vec![b'r'; workload.payload];
                for (offset, byte) in entry.to_le_bytes().iter().enumerate() {
                    if let Some(slot) = payload.get_mut(offset) {
                        *slot = *byte;
                    }
                }
                payload
            })
            .collect();
        Self {
            batch: encode_batch(BatchKind::Data, Term(0), LogIndex(0), &payloads),
            batch_entries: workload.batch,
            value: vec![b'v'; workload.payload],
            client_id: 0x6265_6e63_6800_0000 | u64::from(index),
            sequence: 0,
            random: Random::new(0x9e37_79b9_7f4a_7c15 ^ u64::from(index)),
            kv_percent: workload.kv_percent,
            kv_get_percent: workload.kv_get_percent,
            keys: workload.keys.max(1),
        }
    }

    /// Deterministic per client.
    fn next_random(&mut self) -> u64 {
        self.random.next_u64()
    }

    /// The next request: its body, whether the batch frame follows it, and
    /// the entries it carries.
    fn next(&mut self) -> (RequestBody, bool, u32) {
        if self.kv_percent > 0 && (self.next_random() % 100) < u64::from(self.kv_percent) {
            let key = format!("key-{:08}", self.next_random() % self.keys).into_bytes();
            if (self.next_random() % 100) < u64::from(self.kv_get_percent) {
                return (RequestBody::Get { key, stale: false }, false, 1);
            }
            self.sequence += 1;
            let command = KvCommand {
                client_id: self.client_id,
                sequence: self.sequence,
                key,
                operation: KvOperation::Put(self.value.clone()),
                time_ms: 0,
            };
            (RequestBody::Write(command), false, 1)
        } else {
            (RequestBody::Append, true, self.batch_entries)
        }
    }

    /// Queues a request made by [`Self::next`].
    fn send(
        &self,
        writer: &mut Writer,
        request_id: u64,
        log: &str,
        body: RequestBody,
        with_batch: bool,
    ) -> Result<(), BenchError> {
        writer.send(
            request_id,
            log,
            body,
            with_batch.then_some(self.batch.as_slice()),
        )?;
        Ok(())
    }
}

/// Whether a client may send one more request, and whether it is measured.
fn admit(workload: &Workload, shared: &Shared) -> Option<bool> {
    if shared.stop.load(Ordering::Relaxed) {
        return None;
    }
    let measured = shared.measuring.load(Ordering::Relaxed);
    if measured
        && let Some(limit) = workload.operations
        && shared.claimed.fetch_add(1, Ordering::Relaxed) >= limit
    {
        return None;
    }
    Some(measured)
}

/// Accounts one answer.
fn record(
    sent: Sent,
    body: &ResponseBody,
    shared: &Shared,
    interval: &Mutex<Histogram<u64>>,
    latencies: &mut Histogram<u64>,
) -> Result<(), BenchError> {
    let failed = match body {
        ResponseBody::Error(reply) => Some(reply),
        _ => None,
    };
    if sent.measured {
        if let Some(reply) = failed {
            shared.errors.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut first) = shared.first_error.lock() {
                first.get_or_insert_with(|| reply.message.clone());
            }
        } else {
            let nanos = (sent.at.elapsed().as_nanos() as u64).clamp(1, LATENCY_NS_MAX);
            latencies.saturating_record(nanos);
            if let Ok(mut interval) = interval.lock() {
                interval.saturating_record(nanos);
            }
            shared.completed.fetch_add(1, Ordering::Relaxed);
            shared
                .entries
                .fetch_add(u64::from(sent.entries), Ordering::Relaxed);
        }
    }
    match failed {
        Some(reply) if matches!(reply.kind, ErrorKind::NotLeader { .. }) => Err(BenchError::Setup(
            format!("leader moved: {}", reply.message),
        )),
        _ => Ok(()),
    }
}

fn lost(pending: usize, measured: impl Iterator<Item = bool>, shared: &Shared) {
    let lost = measured.filter(|measured| *measured).count();
    debug_assert!(lost <= pending);
    shared.errors.fetch_add(lost as u64, Ordering::Relaxed);
}

fn closed_loop(
    plan: &ClientPlan,
    leader: &str,
    workload: &Workload,
    shared: &Shared,
    generator: &mut Generator,
    latencies: &mut Histogram<u64>,
) -> Result<(), BenchError> {
    let mut link = Link::open(leader, &plan.options)?;
    let interval = &shared.interval[plan.index as usize];
    let mut pending: HashMap<u64, Sent> = HashMap::with_capacity(workload.inflight as usize);
    let mut next_id = 1u64;
    let outcome = (|| -> Result<(), BenchError> {
        loop {
            while pending.len() < workload.inflight as usize {
                let Some(measured) = admit(workload, shared) else {
                    break;
                };
                let at = Instant::now();
                let (body, with_batch, entries) = generator.next();
                generator.send(&mut link.writer, next_id, &plan.log, body, with_batch)?;
                pending.insert(
                    next_id,
                    Sent {
                        at,
                        measured,
                        entries,
                    },
                );
                next_id += 1;
            }
            if pending.is_empty() {
                return Ok(());
            }
            if !link.reader.has_buffered() {
                link.writer.flush()?;
            }
            let response = link.reader.receive()?;
            if let Some(sent) = pending.remove(&response.request_id) {
                record(sent, &response.body, shared, interval, latencies)?;
            }
        }
    })();
    if outcome.is_err() {
        lost(
            pending.len(),
            pending.values().map(|sent| sent.measured),
            shared,
        );
    }
    outcome
}

#[allow(clippy::too_many_arguments)]
fn open_loop(
    plan: &ClientPlan,
    leader: &str,
    workload: &Workload,
    rate: f64,
    shared: &Shared,
    generator: &mut Generator,
    latencies: &mut Histogram<u64>,
) -> Result<(), BenchError> {
    let Link {
        mut writer,
        reader,
        stream,
    } = Link::open(leader, &plan.options)?;
    let per_client = (rate / f64::from(workload.clients)).max(0.001);
    let gap = Duration::from_secs_f64(1.0 / per_client);
    let pending: Mutex<HashMap<u64, Sent>> = Mutex::new(HashMap::new());
    let receiving_done = AtomicBool::new(false);
    let interval = &shared.interval[plan.index as usize];
    std::thread::scope(|scope| {
        let receiver = scope.spawn(|| -> (Histogram<u64>, Result<(), BenchError>) {
            let mut reader = reader;
            let mut local = histogram();
            loop {
                match reader.receive() {
                    Ok(response) => {
                        let sent = pending
                            .lock()
                            .ok()
                            .and_then(|mut map| map.remove(&response.request_id));
                        if let Some(sent) = sent
                            && let Err(error) =
                                record(sent, &response.body, shared, interval, &mut local)
                        {
                            return (local, Err(error));
                        }
                    }
                    // The sender shuts the socket to end this loop.
                    Err(error) => {
                        if receiving_done.load(Ordering::Relaxed) {
                            return (local, Ok(()));
                        }
                        return (local, Err(error));
                    }
                }
            }
        });
        let sending = send_on_schedule(
            &mut writer,
            &pending,
            workload,
            gap,
            shared,
            generator,
            &plan.log,
        );
        // Let answers drain, then stop the receiver.
        let drain_until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < drain_until
            && !receiver.is_finished()
            && pending.lock().is_ok_and(|map| !map.is_empty())
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        receiving_done.store(true, Ordering::Relaxed);
        link::shut(&stream);
        let (local, receiving) = receiver.join().expect("receiver thread");
        latencies.add(&local).expect("same histogram bounds");
        if let Ok(map) = pending.lock() {
            lost(map.len(), map.values().map(|sent| sent.measured), shared);
        }
        sending.and(receiving)
    })
}

/// The open-loop sender: request k is due at start + k × gap.
fn send_on_schedule(
    writer: &mut Writer,
    pending: &Mutex<HashMap<u64, Sent>>,
    workload: &Workload,
    gap: Duration,
    shared: &Shared,
    generator: &mut Generator,
    log: &str,
) -> Result<(), BenchError> {
    let started = Instant::now();
    let mut next_id = 1u64;
    let mut due_number = 0u32;
    loop {
        let due = started + gap * due_number;
        let now = Instant::now();
        if due > now {
            writer.flush()?;
            std::thread::sleep((due - now).min(Duration::from_millis(1)));
            continue;
        }
        let outstanding = pending.lock().map_or(0, |map| map.len());
        if outstanding >= workload.inflight as usize {
            // Over the cap: the schedule keeps running, so the wait is
            // charged to the requests that were due meanwhile.
            writer.flush()?;
            std::thread::sleep(Duration::from_micros(50));
            if shared.stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            continue;
        }
        let Some(measured) = admit(workload, shared) else {
            writer.flush()?;
            return Ok(());
        };
        let (body, with_batch, entries) = generator.next();
        let sent = Sent {
            at: due,
            measured,
            entries,
        };
        // Insert before sending so the receiver always finds it.
        if let Ok(mut map) = pending.lock() {
            map.insert(next_id, sent);
        }
        generator.send(writer, next_id, log, body, with_batch)?;
        next_id += 1;
        due_number = due_number.saturating_add(1);
    }
}
