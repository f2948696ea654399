//! A local stand-in for Maelstrom: runs `rast-maelstrom` processes, routes
//! their messages through a faulty network, plays lin-kv clients, and checks
//! the history for linearizability with [`crate::check`].
//!
//! ```text
//!             stdin ┌──────────────┐ stdout
//!   ┌──────────────►│ rast-maelstrom│──────────────┐   one reader thread
//!   │               └──────────────┘              │   per node → channel
//!   │  ... n nodes                                 ▼
//!  ┌┴─────────────────────────────────────────────────┐
//!  │ harness loop (one thread)                         │
//!  │  network: per message drop (loss), delay (0..d), │
//!  │           partitions (blocked pairs)             │
//!  │  nemesis: partition / heal on a seeded schedule  │
//!  │  clients: one op in flight each, random node,    │
//!  │           timeout → info; history recorded       │
//!  └──────────────────────────────────────────────────┘
//! ```
//!
//! Everything random comes from one seed (the processes' timing does not,
//! so a run is reproducible in its faults, not in its interleaving). Clients
//! talk to nodes without loss (as in Maelstrom, faults are between nodes).
//!
//! How replies become history outcomes (Maelstrom's rules): `*_ok` → ok; a
//! read of a missing key (20) → ok, nothing read; a cas refused with 20 or
//! 22 → fail with a compare mismatch; other definite errors (11, 12, ...) →
//! no effect, the operation is left out; indefinite errors and timeouts →
//! info.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use serde_json::{Value, json};

use crate::check::history::{EventKind, History, HistoryError, ProcessId};
use crate::check::linearizable::{FailedCas, KvOp, KvSearch, check_kv};
use crate::check::wgl::Budget;
use crate::maelstrom::protocol::{Envelope, code, is_definite};
use crate::random::Random;

/// Everything that can stop a harness run (a non-linearizable history is
/// not an error: it is in the report).
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// A process could not be started or talked to.
    #[error("process: {0}")]
    Io(#[from] std::io::Error),
    /// A node said something that is not a Maelstrom message.
    #[error("node {node} wrote a line that is not a message: {line}")]
    Garbage {
        /// The node.
        node: String,
        /// The line.
        line: String,
    },
    /// The cluster did not do something in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The recorded history broke the history model (a harness bug).
    #[error("history: {0}")]
    History(#[from] HistoryError),
    /// A scenario saw an answer it must not.
    #[error("unexpected: {0}")]
    Unexpected(String),
}

/// A running `rast-maelstrom` process.
struct Process {
    child: Child,
    stdin: Option<ChildStdin>,
}

/// A message waiting in the network.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    at: Instant,
    sequence: u64,
    node: usize,
    line: String,
}

/// The network's fault settings.
#[derive(Clone, Copy, Debug)]
pub struct Faults {
    /// Messages between nodes dropped, per thousand.
    pub loss_per_mille: u64,
    /// Largest delay added to a message between nodes.
    pub delay_ms_max: u64,
}

/// Message counts.
#[derive(Clone, Copy, Debug, Default)]
pub struct NetworkStats {
    /// Messages between nodes delivered.
    pub delivered: u64,
    /// Dropped by loss.
    pub lost: u64,
    /// Dropped by a partition.
    pub cut: u64,
}

/// `rast-maelstrom` processes and the network between them.
pub struct Cluster {
    ids: Vec<String>,
    processes: Vec<Process>,
    inbound: Receiver<(usize, String)>,
    queue: BinaryHeap<Reverse<InFlight>>,
    sequence: u64,
    /// `blocked[a][b]`: messages from a to b are cut.
    blocked: Vec<Vec<bool>>,
    faults: Faults,
    random: Random,
    next_msg_id: u64,
    /// Counts, for the report.
    pub stats: NetworkStats,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Cluster")
            .field("ids", &self.ids)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for process in &mut self.processes {
            process.stdin.take();
            let _ = process.child.kill();
            let _ = process.child.wait();
        }
    }
}

impl Cluster {
    /// Starts `nodes` processes of `binary` (not yet initialized).
    pub fn spawn(
        binary: &Path,
        nodes: usize,
        seed: u64,
        faults: Faults,
    ) -> Result<Self, HarnessError> {
        let (sender, inbound) = crossbeam_channel::unbounded();
        let mut processes = Vec::with_capacity(nodes);
        for node in 0..nodes {
            let mut child = Command::new(binary)
                .env("RAST_MAELSTROM_SEED", (seed + node as u64).to_string())
                .env(
                    "RAST_LOG",
                    std::env::var("RAST_LOG").unwrap_or_else(|_| "error".into()),
                )
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()?;
            let stdout = child.stdout.take().expect("piped");
            let sender = sender.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if sender.send((node, line)).is_err() {
                        break;
                    }
                }
            });
            let stdin = child.stdin.take();
            processes.push(Process { child, stdin });
        }
        Ok(Self {
            ids: (1..=nodes).map(|n| format!("n{n}")).collect(),
            processes,
            inbound,
            queue: BinaryHeap::new(),
            sequence: 0,
            blocked: vec![vec![false; nodes]; nodes],
            faults,
            random: Random::new(seed ^ 0x6d61_656c),
            next_msg_id: 1,
            stats: NetworkStats::default(),
        })
    }

    /// Node ids ("n1", ...).
    pub fn ids(&self) -> &[String] {
        &self.ids
    }

    /// Sends Maelstrom's `init` to every node and waits for every `init_ok`.
    pub fn init(&mut self) -> Result<(), HarnessError> {
        let mut waiting = Vec::new();
        for node in 0..self.ids.len() {
            let body = json!({"type": "init", "node_id": self.ids[node], "node_ids": self.ids});
            waiting.push(self.send("c0", node, body));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while !waiting.is_empty() {
            if Instant::now() > deadline {
                return Err(HarnessError::Timeout("init_ok".into()));
            }
            for envelope in self.poll(Duration::from_millis(10))? {
                waiting.retain(|msg_id| envelope.in_reply_to() != Some(*msg_id));
            }
        }
        Ok(())
    }

    /// Sends `body` from `client` to `node` (at once: clients have a
    /// perfect link); returns the message id the answer will carry.
    pub fn send(&mut self, client: &str, node: usize, mut body: Value) -> u64 {
        let msg_id = self.next_msg_id;
        self.next_msg_id += 1;
        body["msg_id"] = msg_id.into();
        let line = Envelope {
            src: client.into(),
            dest: self.ids[node].clone(),
            body,
        }
        .to_line();
        self.write(node, &line);
        msg_id
    }

    /// Cuts the network into `groups` (node indexes); nodes in no group
    /// are isolated.
    pub fn partition(&mut self, groups: &[Vec<usize>]) {
        let nodes = self.ids.len();
        let group_of = |node: usize| groups.iter().position(|group| group.contains(&node));
        for from in 0..nodes {
            for to in 0..nodes {
                self.blocked[from][to] =
                    from != to && (group_of(from).is_none() || group_of(from) != group_of(to));
            }
        }
    }

    /// Heals every partition.
    pub fn heal(&mut self) {
        self.partition(&[(0..self.ids.len()).collect()]);
    }

    /// Kills a node (SIGKILL): its memory is gone; it never restarts.
    pub fn kill(&mut self, node: usize) {
        let process = &mut self.processes[node];
        process.stdin.take();
        let _ = process.child.kill();
        let _ = process.child.wait();
    }

    /// Routes for up to `wait`: node-to-node messages go through the faulty
    /// network, due ones are delivered; returns the messages for clients.
    pub fn poll(&mut self, wait: Duration) -> Result<Vec<Envelope>, HarnessError> {
        let deadline = Instant::now() + wait;
        let mut for_clients = Vec::new();
        loop {
            self.deliver_due();
            let next_due = self
                .queue
                .peek()
                .map_or(deadline, |next| next.0.at.min(deadline));
            match self
                .inbound
                .recv_timeout(next_due.saturating_duration_since(Instant::now()))
            {
                Ok((node, line)) => {
                    let envelope = Envelope::parse(&line).map_err(|_| HarnessError::Garbage {
                        node: self.ids[node].clone(),
                        line: line.clone(),
                    })?;
                    match self.ids.iter().position(|id| *id == envelope.dest) {
                        Some(to) => self.route(node, to, line),
                        None => for_clients.push(envelope),
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(HarnessError::Unexpected("every node exited".into()));
                }
            }
            if Instant::now() >= deadline {
                self.deliver_due();
                return Ok(for_clients);
            }
        }
    }

    fn route(&mut self, from: usize, to: usize, line: String) {
        if self.blocked[from][to] {
            self.stats.cut += 1;
            return;
        }
        if self.random.chance(self.faults.loss_per_mille, 1000) {
            self.stats.lost += 1;
            return;
        }
        let delay = Duration::from_millis(self.random.below(self.faults.delay_ms_max + 1));
        self.sequence += 1;
        self.queue.push(Reverse(InFlight {
            at: Instant::now() + delay,
            sequence: self.sequence,
            node: to,
            line,
        }));
    }

    fn deliver_due(&mut self) {
        let now = Instant::now();
        while self.queue.peek().is_some_and(|next| next.0.at <= now) {
            let Reverse(message) = self.queue.pop().expect("peeked");
            self.stats.delivered += 1;
            self.write(message.node, &message.line);
        }
    }

    fn write(&mut self, node: usize, line: &str) {
        let process = &mut self.processes[node];
        if let Some(stdin) = process.stdin.as_mut()
            && writeln!(stdin, "{line}")
                .and_then(|()| stdin.flush())
                .is_err()
        {
            // The node died: like a crashed machine, it just stops answering.
            process.stdin = None;
        }
    }

    /// Asks every node for `rast_status`; returns the leader a majority of
    /// live nodes agree on, if any.
    pub fn leader(&mut self) -> Result<Option<usize>, HarnessError> {
        let live: Vec<usize> = (0..self.ids.len())
            .filter(|node| self.processes[*node].stdin.is_some())
            .collect();
        let asked: Vec<u64> = live
            .iter()
            .map(|node| self.send("c0", *node, json!({"type": "rast_status"})))
            .collect();
        let mut votes = vec![0usize; self.ids.len()];
        let mut answered = 0;
        let deadline = Instant::now() + Duration::from_secs(1);
        while answered < asked.len() && Instant::now() < deadline {
            for envelope in self.poll(Duration::from_millis(10))? {
                if envelope.in_reply_to().is_some_and(|id| asked.contains(&id)) {
                    answered += 1;
                    let leader = envelope.body["leader"].as_str().unwrap_or("");
                    if let Some(node) = self.ids.iter().position(|id| id == leader) {
                        votes[node] += 1;
                    }
                }
            }
        }
        Ok(votes.iter().position(|count| *count > self.ids.len() / 2))
    }

    /// Waits until a majority agrees on a leader.
    pub fn wait_for_leader(&mut self, within: Duration) -> Result<usize, HarnessError> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(leader) = self.leader()? {
                return Ok(leader);
            }
            self.poll(Duration::from_millis(50))?;
        }
        Err(HarnessError::Timeout("no leader".into()))
    }

    /// Sends `body` to `node` and waits for its answer.
    pub fn call(
        &mut self,
        node: usize,
        body: Value,
        within: Duration,
    ) -> Result<Value, HarnessError> {
        let msg_id = self.send("c0", node, body);
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            for envelope in self.poll(Duration::from_millis(5))? {
                if envelope.in_reply_to() == Some(msg_id) {
                    return Ok(envelope.body);
                }
            }
        }
        Err(HarnessError::Timeout(format!(
            "no answer from n{}",
            node + 1
        )))
    }
}

/// The shape of a lin-kv run.
#[derive(Clone, Debug)]
pub struct Options {
    /// The `rast-maelstrom` binary.
    pub binary: PathBuf,
    /// Nodes (3 or 5).
    pub nodes: usize,
    /// Concurrent clients.
    pub clients: usize,
    /// Keys the clients use (each is checked on its own).
    pub keys: u64,
    /// Length of the faulty phase.
    pub faulty: Duration,
    /// After the heal, clients go on this long on a healthy network.
    pub healthy: Duration,
    /// Network faults between nodes.
    pub faults: Faults,
    /// Partitions during the faulty phase (a new one or a heal every
    /// 0.5-1.5 s).
    pub partitions: bool,
    /// A client's pause between operations.
    pub think: Duration,
    /// A client gives up on an operation after this (outcome: info).
    pub timeout: Duration,
    /// The seed of every choice the harness makes.
    pub seed: u64,
    /// Reads ask for the local copy (`"stale": true`): not linearizable,
    /// so a run with it shows that the check can fail.
    pub stale_reads: bool,
}

impl Options {
    /// A run of `nodes` nodes with loss, delay and partitions, sized to
    /// finish in about 15 s.
    pub fn faulty(binary: PathBuf, nodes: usize, seed: u64) -> Self {
        Self {
            binary,
            nodes,
            clients: 8,
            keys: 6,
            faulty: Duration::from_secs(8),
            healthy: Duration::from_secs(3),
            faults: Faults {
                loss_per_mille: 50,
                delay_ms_max: 20,
            },
            partitions: true,
            think: Duration::from_millis(20),
            timeout: Duration::from_secs(3),
            seed,
            stale_reads: false,
        }
    }
}

/// What a run did.
#[derive(Debug)]
pub struct Report {
    /// Operations that completed ok.
    pub ok: u64,
    /// Failed definitely (cas mismatch, or refused and left out).
    pub failed: u64,
    /// Unknown outcome (indefinite error or timeout).
    pub unknown: u64,
    /// Ok operations invoked after the heal (liveness).
    pub ok_after_heal: u64,
    /// Partitions the nemesis made.
    pub partitions: u64,
    /// Network counts.
    pub network: NetworkStats,
    /// The history the checker judged.
    pub history: History<KvOp>,
    /// The checker's answer.
    pub search: KvSearch,
    /// Wall time of the run.
    pub elapsed: Duration,
}

/// One event before the history is assembled (definite failures other than
/// cas mismatches are left out, invoke and all).
struct Staged {
    time_ns: u64,
    process: u64,
    kind: EventKind,
    op: KvOp,
    operation: usize,
}

/// A client's operation in flight.
struct Pending {
    msg_id: u64,
    op: KvOp,
    operation: usize,
    deadline: Instant,
    after_heal: bool,
}

/// Runs a lin-kv workload against a fresh cluster and checks the history.
pub fn run(options: &Options) -> Result<Report, HarnessError> {
    let started = Instant::now();
    let mut cluster = Cluster::spawn(&options.binary, options.nodes, options.seed, options.faults)?;
    cluster.init()?;
    cluster.wait_for_leader(Duration::from_secs(10))?;
    let mut workload = Workload::new(options, started);
    let phase_start = Instant::now();
    let heal_at = phase_start + options.faulty;
    let stop_at = heal_at + options.healthy;
    let mut healed = !options.partitions;
    let mut next_nemesis = phase_start + Duration::from_millis(workload.random.between(500, 1500));
    loop {
        let now = Instant::now();
        if !healed && now >= heal_at {
            cluster.heal();
            healed = true;
        } else if !healed && now >= next_nemesis {
            nemesis(
                &mut cluster,
                &mut workload.random,
                options.nodes,
                &mut workload.report,
            );
            next_nemesis = now + Duration::from_millis(workload.random.between(500, 1500));
        }
        if now >= stop_at && workload.idle() {
            break;
        }
        if now < stop_at {
            workload.invoke(&mut cluster, healed);
        }
        for envelope in cluster.poll(Duration::from_millis(2))? {
            workload.complete(&envelope);
        }
        workload.time_out();
    }
    workload.report.network = cluster.stats;
    drop(cluster);
    workload.finish()
}

/// The clients of a run and what they recorded.
struct Workload<'a> {
    options: &'a Options,
    started: Instant,
    random: Random,
    staged: Vec<Staged>,
    /// Per operation: left out of the history (a definite error).
    left_out: Vec<bool>,
    pending: Vec<Option<Pending>>,
    next_op_at: Vec<Instant>,
    report: Report,
}

impl<'a> Workload<'a> {
    fn new(options: &'a Options, started: Instant) -> Self {
        Self {
            options,
            started,
            random: Random::new(options.seed),
            staged: Vec::new(),
            left_out: Vec::new(),
            pending: (0..options.clients).map(|_| None).collect(),
            next_op_at: vec![Instant::now(); options.clients],
            report: Report {
                ok: 0,
                failed: 0,
                unknown: 0,
                ok_after_heal: 0,
                partitions: 0,
                network: NetworkStats::default(),
                history: History::new(),
                search: KvSearch {
                    verdict: crate::check::wgl::Verdict::Linearizable,
                    key: None,
                    steps: 0,
                    keys: 0,
                },
                elapsed: Duration::ZERO,
            },
        }
    }

    fn idle(&self) -> bool {
        self.pending.iter().all(Option::is_none)
    }

    fn time_ns(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    fn stage(&mut self, process: usize, kind: EventKind, op: KvOp, operation: usize) {
        self.staged.push(Staged {
            time_ns: self.time_ns(),
            process: process as u64,
            kind,
            op,
            operation,
        });
    }

    /// Every idle client whose pause is over invokes a random operation at
    /// a random node.
    fn invoke(&mut self, cluster: &mut Cluster, healed: bool) {
        let now = Instant::now();
        for client in 0..self.options.clients {
            if self.pending[client].is_some() || now < self.next_op_at[client] {
                continue;
            }
            let (op, body) = self.random_operation();
            let node = self.random.below(self.options.nodes as u64) as usize;
            let operation = self.left_out.len();
            self.left_out.push(false);
            self.stage(client, EventKind::Invoke, op, operation);
            let msg_id = cluster.send(&format!("c{}", client + 1), node, body);
            self.pending[client] = Some(Pending {
                msg_id,
                op,
                operation,
                deadline: Instant::now() + self.options.timeout,
                after_heal: healed,
            });
        }
    }

    fn random_operation(&mut self) -> (KvOp, Value) {
        let random = &mut self.random;
        let key = random.below(self.options.keys);
        match random.below(10) {
            0..=3 => (
                KvOp::Get { key, value: None },
                json!({"type": "read", "key": key, "stale": self.options.stale_reads}),
            ),
            4..=6 => {
                let value = random.below(5);
                (
                    KvOp::Put { key, value },
                    json!({"type": "write", "key": key, "value": value}),
                )
            }
            _ => {
                let (from, to) = (random.below(5), random.below(5));
                (
                    KvOp::Cas {
                        key,
                        from: Some(from),
                        to: Some(to),
                    },
                    json!({"type": "cas", "key": key, "from": from, "to": to}),
                )
            }
        }
    }

    /// A node answered a client.
    fn complete(&mut self, envelope: &Envelope) {
        let Some(client) = envelope
            .dest
            .strip_prefix('c')
            .and_then(|n| n.parse::<usize>().ok())
            .and_then(|n| n.checked_sub(1))
        else {
            return;
        };
        let Some(Some(waiting)) = self.pending.get(client) else {
            return;
        };
        if envelope.in_reply_to() != Some(waiting.msg_id) {
            return; // a late answer to an operation that timed out
        }
        let waiting = self.pending[client].take().expect("checked");
        let (kind, op) = outcome(&waiting.op, &envelope.body);
        match kind {
            None => {
                self.left_out[waiting.operation] = true;
                self.report.failed += 1;
            }
            Some(EventKind::Ok) => {
                self.report.ok += 1;
                self.report.ok_after_heal += u64::from(waiting.after_heal);
            }
            Some(EventKind::Fail) => self.report.failed += 1,
            Some(_) => self.report.unknown += 1,
        }
        if let Some(kind) = kind {
            self.stage(client, kind, op, waiting.operation);
        }
        self.next_op_at[client] = Instant::now() + self.options.think;
    }

    /// Operations past their deadline end as info.
    fn time_out(&mut self) {
        let now = Instant::now();
        for client in 0..self.options.clients {
            if self.pending[client]
                .as_ref()
                .is_some_and(|waiting| waiting.deadline <= now)
            {
                let waiting = self.pending[client].take().expect("checked");
                self.report.unknown += 1;
                self.stage(client, EventKind::Info, waiting.op, waiting.operation);
                self.next_op_at[client] = now + self.options.think;
            }
        }
    }

    /// Builds the history (without the operations left out) and checks it.
    fn finish(mut self) -> Result<Report, HarnessError> {
        for event in std::mem::take(&mut self.staged) {
            if self.left_out[event.operation] {
                continue;
            }
            self.report.history.push(crate::check::history::Event {
                time_ns: event.time_ns,
                process: ProcessId(event.process),
                kind: event.kind,
                op: event.op,
            })?;
        }
        self.report.search = check_kv(
            &self.report.history.operations(),
            FailedCas::CompareMismatch,
            &Budget::DEFAULT,
        );
        self.report.elapsed = self.started.elapsed();
        Ok(self.report)
    }
}

/// A new partition or a heal: isolate one node, or cut a random minority
/// off, or heal.
fn nemesis(cluster: &mut Cluster, random: &mut Random, nodes: usize, report: &mut Report) {
    match random.below(3) {
        0 => cluster.heal(),
        choice => {
            let mut order: Vec<usize> = (0..nodes).collect();
            for position in (1..nodes).rev() {
                order.swap(position, random.below(position as u64 + 1) as usize);
            }
            let minority = if choice == 1 {
                1
            } else {
                1 + random.below(((nodes - 1) / 2) as u64) as usize
            };
            let (small, large) = order.split_at(minority);
            cluster.partition(&[small.to_vec(), large.to_vec()]);
            report.partitions += 1;
        }
    }
}

/// The history event for an answer: `None` leaves the operation out (a
/// definite error: it had no effect).
pub(crate) fn outcome(invoked: &KvOp, answer: &Value) -> (Option<EventKind>, KvOp) {
    let kind = answer["type"].as_str().unwrap_or("");
    match (invoked, kind) {
        (KvOp::Get { key, .. }, "read_ok") => (
            Some(EventKind::Ok),
            KvOp::Get {
                key: *key,
                value: answer["value"].as_u64(),
            },
        ),
        (KvOp::Put { .. }, "write_ok") | (KvOp::Cas { .. }, "cas_ok") => {
            (Some(EventKind::Ok), *invoked)
        }
        (_, "error") => {
            let error = answer["code"].as_u64().unwrap_or(code::CRASH);
            match (invoked, error) {
                (KvOp::Get { key, .. }, code::KEY_DOES_NOT_EXIST) => (
                    Some(EventKind::Ok),
                    KvOp::Get {
                        key: *key,
                        value: None,
                    },
                ),
                (KvOp::Cas { .. }, code::KEY_DOES_NOT_EXIST | code::PRECONDITION_FAILED) => {
                    (Some(EventKind::Fail), *invoked)
                }
                (_, error) if is_definite(error) => (None, *invoked),
                _ => (Some(EventKind::Info), *invoked),
            }
        }
        _ => (Some(EventKind::Info), *invoked),
    }
}

/// What the crash scenario saw.
#[derive(Debug)]
pub struct CrashReport {
    /// The leader that was killed after it applied the cas.
    pub killed: String,
    /// Attempts until the retry got an answer.
    pub retries: u32,
    /// The answer to the retry (cas_ok when exactly-once holds).
    pub retry_answer: Value,
    /// The value read afterwards.
    pub value_after: Value,
    /// The answer to the same retry without a session (error 22: the
    /// reason sessions exist).
    pub retry_without_session: Value,
}

/// A cas retried across a leader crash is applied exactly once.
///
/// With a session (client 41): write key 1 = 0, then cas 0 → 1 at the
/// leader; the harness drops the leader's `cas_ok` and SIGKILLs it, so the
/// client sees nothing. The client retries the same request (same session
/// and sequence) at the survivors until one answers: a new leader that
/// already applied the cas answers `cas_ok` from the session, where a
/// second application would have answered 22 (the value is 1 by then).
/// The control, run first on a healthy cluster: the same drop-and-retry
/// without a session gets 22.
pub fn cas_retry_across_leader_crash(
    binary: &Path,
    seed: u64,
) -> Result<CrashReport, HarnessError> {
    let within = Duration::from_secs(5);
    let faults = Faults {
        loss_per_mille: 0,
        delay_ms_max: 2,
    };
    let mut cluster = Cluster::spawn(binary, 3, seed, faults)?;
    cluster.init()?;
    let leader = cluster.wait_for_leader(Duration::from_secs(10))?;

    // Control: no session, the reply is lost, the retry is applied again.
    expect_type(
        &cluster.call(
            leader,
            json!({"type": "write", "key": 2, "value": 0}),
            within,
        )?,
        "write_ok",
    )?;
    let cas = json!({"type": "cas", "key": 2, "from": 0, "to": 1});
    expect_type(&cluster.call(leader, cas.clone(), within)?, "cas_ok")?;
    let retry_without_session = cluster.call(leader, cas, within)?;

    // With a session.
    let write = json!({"type": "write", "key": 1, "value": 0, "client_id": 41, "seq": 1});
    expect_type(&cluster.call(leader, write, within)?, "write_ok")?;
    let cas = json!({"type": "cas", "key": 1, "from": 0, "to": 1, "client_id": 41, "seq": 2});
    let msg_id = cluster.send("c9", leader, cas.clone());
    let deadline = Instant::now() + within;
    'drop_reply: loop {
        if Instant::now() > deadline {
            return Err(HarnessError::Timeout(
                "the leader did not answer the cas".into(),
            ));
        }
        for envelope in cluster.poll(Duration::from_millis(1))? {
            if envelope.in_reply_to() == Some(msg_id) {
                expect_type(&envelope.body, "cas_ok")?;
                cluster.kill(leader);
                break 'drop_reply;
            }
        }
    }
    let survivors: Vec<usize> = (0..3).filter(|node| *node != leader).collect();
    let mut retries = 0u32;
    let deadline = Instant::now() + Duration::from_secs(20);
    let retry_answer = loop {
        if Instant::now() > deadline {
            return Err(HarnessError::Timeout(
                "the retry never got an answer".into(),
            ));
        }
        let node = survivors[retries as usize % survivors.len()];
        retries += 1;
        match cluster.call(node, cas.clone(), Duration::from_millis(1500)) {
            Ok(answer) if answer["type"] == "error" && !is_definite_final(&answer) => {
                cluster.poll(Duration::from_millis(100))?;
            }
            Ok(answer) => break answer,
            Err(HarnessError::Timeout(_)) => {}
            Err(error) => return Err(error),
        }
    };
    let read = json!({"type": "read", "key": 1});
    let value_after = cluster.call(survivors[0], read, within)?;
    Ok(CrashReport {
        killed: cluster.ids()[leader].clone(),
        retries,
        retry_answer,
        value_after: value_after["value"].clone(),
        retry_without_session,
    })
}

/// An error that answers the cas for good (20 or 22), as opposed to "retry"
/// (11) or "unknown" (0).
fn is_definite_final(answer: &Value) -> bool {
    matches!(
        answer["code"].as_u64(),
        Some(code::KEY_DOES_NOT_EXIST | code::PRECONDITION_FAILED)
    )
}

fn expect_type(answer: &Value, kind: &str) -> Result<(), HarnessError> {
    if answer["type"] == kind {
        Ok(())
    } else {
        Err(HarnessError::Unexpected(format!(
            "wanted {kind}, got {answer}"
        )))
    }
}
