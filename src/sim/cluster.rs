//! One simulated run: nodes running the real core over a fake network, disk
//! and clock, a nemesis, clients, and the checkers — all from one seed.
//!
//! ```text
//!   event queue (time, sequence) ── Tick ── Deliver ── SyncDone ── Restart
//!        │                          Client ── ClientTimeout ── Nemesis ── Heal
//!        ▼
//!   node: Core ◄─ inputs     actions ─► SimDisk (issue, sync) / network / apply
//!                                        │
//!                                        └─► Checker (after every event)
//! ```
//!
//! Snapshots: in most seeds each node snapshots both its state machines
//! every few dozen applied entries and compacts its log below the snapshot
//! ([`super::snapshot`]); a leader whose follower needs compacted entries
//! streams its snapshot in chunks (`Action::SendSnapshot`), resent from the
//! follower's answered offset after loss, restarted after the follower's
//! crash; a restarted node starts from its snapshot and the log after it.
//!
//! A run has two phases. Until `Heal`, the nemesis injects faults while
//! clients append and read. At `Heal`, every fault stops and crashed nodes
//! restart; from then on a leader must be elected and probe appends must
//! commit within the liveness bound.
//!
//! With `churn`, the run also changes its membership during the faulty
//! phase: spare nodes start with an empty log and a configuration that does
//! not include them; the leader adds learners, promotes them, removes and
//! replaces voters (itself included) and transfers leadership, each change
//! through the core's own rules (refusals are part of the test). A removed
//! node may be added again with its disk as it was: a node id is never
//! reused with a wiped disk (a member that missed the removal still counts
//! that id as a voter, and a forgotten vote would let it win an election
//! with a stale log; etcd forbids reusing ids for the same reason).
//!
//! Replication batching: a node calls `Core::replicate` after its
//! proposals in one of three ways, drawn per seed ([`Replication`]): after
//! each proposal, once at the end of a short "turn" (so proposals that
//! arrive meanwhile leave as one AppendEntries per peer, as in the server),
//! or never (the leader's tick sends them: the core's safety net).
//!
//! Churn runs take snapshots too: a snapshot records the configuration
//! committed as of its index (the core's `membership_at`; a node skips a
//! snapshot while it does not know it), and a node that installs a snapshot
//! or restarts from one starts from that configuration and the
//! configuration entries after it. A spare node that joined through
//! InstallSnapshot learns its configuration only that way.

mod snapshots;

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};
use std::rc::Rc;

use crate::check::linearizable::KvOp;
use crate::constants::{BATCH_ENTRIES_MAX, NODES_MAX};
use crate::kv::{KvResponse, StateMachine};
use crate::raft::{
    Action, AppendEntries, Body, Change, Config, Core, InstallSnapshot, Membership, Message,
    OutgoingBody, ProposeError, Restart, Role, SnapshotResponse,
};
use crate::random::Random;
use crate::sim::checker::{Checker, HistoryEntry, Operation, Outcome, Violation};
use crate::sim::disk::{BatchRef, DiskOperation, DurableView, SimBatch, SimDisk};
use crate::sim::kv::{KvEntry, KvOutcome};
use crate::sim::snapshot::{Chunk, Receiving, Sending};
use crate::types::{LogIndex, NodeId, Term};
use crate::wire::client::{KvCommand, KvOperation, decode_kv_command, encode_kv_command};
use crate::wire::{BatchKind, BatchView};

/// Operation numbers at or above this are key-value operations (minus it).
const KV_TAG: usize = 1 << 40;

/// Simulated milliseconds between a node's ticks.
const TICK_MS: u64 = 10;
/// Election timeout base of the simulated nodes (10 ticks, as in the server).
const ELECTION_MS: u64 = 100;
/// Heartbeat interval of the simulated nodes.
const HEARTBEAT_MS: u64 = 10;
/// A client gives up on an operation after this long (outcome: info).
const CLIENT_TIMEOUT_MS: u64 = 600;
/// Appends the liveness probe must get committed after the heal.
const PROBE_APPENDS: usize = 3;
/// Events one run may take: a bound on a run that stopped making progress.
const EVENTS_MAX: u64 = 20_000_000;
/// A leader resends a snapshot stream from the acknowledged offset when
/// nothing was acknowledged for this long.
const SNAPSHOT_RESEND_MS: u64 = 60;
/// A leader gives a snapshot stream up after this long (the core then
/// probes again and asks for a new one if still needed).
const SNAPSHOT_GIVE_UP_MS: u64 = 2_000;
/// With [`Replication::Turn`], a node's turn ends (it calls `replicate`)
/// at most this long after its first proposal of the turn: long enough for
/// other clients' proposals to join it, short beside the heartbeat.
const TURN_MS_MAX: u64 = 3;

/// When a node calls `Core::replicate` after proposing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Replication {
    /// After each proposal: every proposal leaves in a message of its own
    /// while the window is open.
    #[default]
    EachProposal,
    /// Once per turn: a turn starts with a node's proposal and ends up to
    /// [`TURN_MS_MAX`] later; the proposals of the turn leave together.
    Turn,
    /// Never: the leader's next tick sends the proposals.
    TickOnly,
}

impl Replication {
    /// The pattern of `seed`, from a stream of its own: a third of the
    /// seeds after each proposal, half once per turn, a sixth by ticks.
    fn for_seed(seed: u64) -> Self {
        match Random::new(seed ^ 0x7e91_1ca7).below(6) {
            0 | 1 => Self::EachProposal,
            2..=4 => Self::Turn,
            _ => Self::TickOnly,
        }
    }
}

/// How a run is shaped.
#[derive(Clone, Debug)]
pub struct Options {
    /// Voters in the cluster (3 or 5).
    pub nodes: usize,
    /// Length of the faulty phase.
    pub nemesis_ms: u64,
    /// After the heal, a leader and the probe appends within this bound.
    pub liveness_bound_ms: u64,
    /// Concurrent clients.
    pub clients: u32,
    /// Concurrent key-value clients (each with its own session).
    pub kv_clients: u32,
    /// Print a trace of the run (role changes, faults, node states) to
    /// standard error: for replaying a failing seed.
    pub trace: bool,
    /// Run the exact (exponential, budgeted) linearizability search on the
    /// seeds that are multiples of this; the fast log checker runs on all.
    pub exact_search_every: u64,
    /// Change the membership during the faulty phase, with
    /// [`CHURN_SPARES`] spare nodes (see the module docs). Snapshots are
    /// drawn as in other runs; each records its configuration.
    pub churn: bool,
    /// Snapshot every this many applied entries (0: never), instead of the
    /// seed's own draw.
    pub snapshot_every: Option<u64>,
    /// When nodes call `Core::replicate`, instead of the seed's own draw.
    pub replication: Option<Replication>,
    /// The bug planted in every node, if any.
    #[cfg(feature = "planted-bugs")]
    pub planted_bug: Option<crate::raft::PlantedBug>,
}

/// Nodes outside the initial configuration in a churn run.
pub const CHURN_SPARES: usize = 2;

impl Options {
    /// The default shape for `seed`: 3 nodes for even seeds, 5 for odd.
    pub fn for_seed(seed: u64) -> Self {
        Self {
            nodes: if seed.is_multiple_of(2) { 3 } else { 5 },
            nemesis_ms: 4_000,
            liveness_bound_ms: 5_000,
            clients: 3,
            kv_clients: 3,
            exact_search_every: 16,
            trace: false,
            churn: false,
            snapshot_every: None,
            replication: None,
            #[cfg(feature = "planted-bugs")]
            planted_bug: None,
        }
    }
}

/// What a successful run measured.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Voters.
    pub nodes: usize,
    /// Events processed.
    pub events: u64,
    /// Entries committed.
    pub committed: u64,
    /// Client appends acknowledged.
    pub appends_acknowledged: u64,
    /// Client reads answered.
    pub reads_answered: u64,
    /// Crashes injected.
    pub crashes: u64,
    /// Leaders elected (terms led).
    pub elections: u64,
    /// Entries committed before the heal.
    pub committed_before_heal: u64,
    /// Heal to a leader with a commit of its term, simulated ms.
    pub liveness_leader_ms: u64,
    /// Heal to every probe append committed, simulated ms.
    pub liveness_commit_ms: u64,
    /// Operations judged by the `check` checkers.
    pub history_operations: usize,
    /// The exact search proved the history linearizable (false: it ran out
    /// of budget; the fast log checker passed either way).
    pub linearizable: bool,
    /// The client history.
    pub history: Vec<HistoryEntry>,
    /// Key-value operations that completed ok.
    pub kv_ok: u64,
    /// Key-value operations judged by `check_kv`.
    pub kv_operations: usize,
    /// `check_kv` proved the key-value history linearizable.
    pub kv_linearizable: bool,
    /// Cas operations answered ok whose request was committed more than
    /// once (a retry after the first copy was applied) and took effect once.
    pub kv_cas_retried_applied_once: u64,
    /// Of those, the ones retried after their leader crashed.
    pub kv_cas_retried_after_crash: u64,
    /// The key-value history.
    pub kv_history: Vec<KvEntry>,
    /// Configuration entries committed (churn runs).
    pub membership_changes: u64,
    /// Promotions the leader refused because the learner lagged.
    pub promotions_refused: u64,
    /// The configuration in force at the end.
    pub membership: Membership,
    /// Snapshots taken (each followed by a compaction of the log).
    pub snapshots_taken: u64,
    /// Snapshots installed from a leader's stream.
    pub snapshots_installed: u64,
    /// Snapshot chunks sent.
    pub snapshot_chunks_sent: u64,
    /// Nodes restarted from a snapshot (not from index 1).
    pub restarts_from_snapshot: u64,
    /// Most records of one core's log that were runs of coalesced batches.
    pub run_records_max: u64,
    /// Checks that found a run cut by a truncation or a compaction (its
    /// batch count an upper bound).
    pub runs_cut_seen: u64,
    /// Snapshots put off because the node's core no longer knew the
    /// configuration as of the applied index (a later one had committed).
    pub snapshots_deferred: u64,
    /// Snapshots taken that record a configuration other than the initial
    /// one.
    pub snapshots_taken_changed: u64,
    /// Snapshots installed that record a configuration other than the
    /// initial one.
    pub snapshots_installed_changed: u64,
    /// When the nodes called `Core::replicate`.
    pub replication: Replication,
    /// `replicate` calls that sent two or more proposals at once.
    pub replicates_grouped: u64,
}

/// A failed run: the property violated and when.
#[derive(Clone, Debug)]
pub struct Failure {
    /// The seed (replay it with `RAST_SIM_SEED`).
    pub seed: u64,
    /// Simulated time of the violation.
    pub time_ms: u64,
    /// The violation.
    pub violation: Violation,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "seed {} failed at {} ms: {}: {}",
            self.seed, self.time_ms, self.violation.property, self.violation.detail
        )
    }
}

/// Runs one seed.
pub fn run(seed: u64, options: &Options) -> Result<Report, Failure> {
    let mut simulation = Simulation::new(seed, options);
    match simulation.run() {
        Ok(()) => Ok(simulation.report()),
        Err(violation) => Err(Failure {
            seed,
            time_ms: simulation.now,
            violation,
        }),
    }
}

/// A message on the simulated wire: an AppendEntries carries its batches.
#[derive(Clone, Debug)]
struct Envelope {
    from: NodeId,
    to: NodeId,
    term: Term,
    body: EnvelopeBody,
}

#[derive(Clone, Debug)]
enum EnvelopeBody {
    Append {
        prev_index: LogIndex,
        prev_term: Term,
        leader_commit: LogIndex,
        batches: Vec<BatchRef>,
    },
    Other(OutgoingBody),
    InstallSnapshot(Chunk),
    SnapshotResponse(SnapshotResponse),
}

#[derive(Debug)]
enum Event {
    Tick(usize),
    Deliver(Box<Envelope>),
    SyncDone {
        node: usize,
        life: u64,
    },
    Crash {
        node: usize,
        life: u64,
    },
    Restart(usize),
    Client(u32),
    ClientTimeout(usize),
    KvClient(u32),
    KvAttempt(usize),
    KvGiveUp(usize),
    /// The end of a node's turn ([`Replication::Turn`]).
    Replicate(usize),
    Nemesis,
    Churn,
    Heal,
}

struct Scheduled {
    time: u64,
    sequence: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.time, self.sequence) == (other.time, other.sequence)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: the heap pops the earliest.
        (other.time, other.sequence).cmp(&(self.time, self.sequence))
    }
}

struct Node {
    id: NodeId,
    core: Option<Core>,
    disk: SimDisk,
    /// Incremented at each crash: completions of an earlier life are void.
    life: u64,
    clock_offset_ms: u64,
    disk_latency_ms: (u64, u64),
    disk_stalled_until: u64,
    applied: LogIndex,
    /// (operation, term, first index) of appends proposed here.
    proposals: Vec<(usize, Term, LogIndex)>,
    /// (round, operation) of reads waiting for their round.
    reads_waiting: VecDeque<(u64, usize)>,
    /// (read index, operation) of reads waiting for apply.
    reads_ready: Vec<(LogIndex, usize)>,
    /// The key-value machine, fed the committed entries in order.
    kv: StateMachine,
    /// (kv operation, term, index) of key-value writes proposed here.
    kv_proposals: Vec<(usize, Term, LogIndex)>,
    /// Starts outside every configuration (a spare).
    outside: bool,
    /// Leader: snapshot streams to followers.
    sending: Vec<Sending>,
    /// Follower: the snapshot being received (memory only: a crash loses it).
    receiving: Option<Receiving>,
    /// Proposals made since the node last called `replicate`.
    proposals_unsent: u32,
    /// An `Event::Replicate` is queued for this node.
    replicate_scheduled: bool,
}

impl Node {
    /// Node `id`, down until its first start; `outside` every configuration
    /// at first (a spare).
    fn new(id: NodeId, clock_offset_ms: u64, outside: bool) -> Self {
        Self {
            id,
            core: None,
            disk: SimDisk::default(),
            life: 0,
            clock_offset_ms,
            disk_latency_ms: (1, 3),
            disk_stalled_until: 0,
            applied: LogIndex::ZERO,
            proposals: Vec::new(),
            reads_waiting: VecDeque::new(),
            reads_ready: Vec::new(),
            kv: StateMachine::new(),
            kv_proposals: Vec::new(),
            outside,
            sending: Vec::new(),
            receiving: None,
            proposals_unsent: 0,
            replicate_scheduled: false,
        }
    }
}

struct Faults {
    drop_percent: u64,
    duplicate_percent: u64,
    delay_ms: (u64, u64),
    /// `blocked[from][to]`: messages from → to are lost.
    blocked: [[bool; NODES_MAX]; NODES_MAX],
}

impl Faults {
    fn calm() -> Self {
        Self {
            drop_percent: 0,
            duplicate_percent: 0,
            delay_ms: (1, 4),
            blocked: [[false; NODES_MAX]; NODES_MAX],
        }
    }
}

struct Client {
    operation: Option<usize>,
    leader_guess: usize,
}

struct KvClient {
    /// Session sequence of the last write.
    sequence: u64,
    operation: Option<usize>,
    leader_guess: usize,
}

struct Simulation {
    seed: u64,
    options: Options,
    random: Random,
    now: u64,
    sequence: u64,
    queue: BinaryHeap<Scheduled>,
    nodes: Vec<Node>,
    /// The initial configuration.
    membership: Membership,
    /// The latest committed configuration entry: (index, configuration);
    /// index zero for the initial one.
    config_committed: (LogIndex, Membership),
    /// Every committed configuration entry in index order, from the initial
    /// one at index zero (what a snapshot at an index must record).
    configs_committed: Vec<(LogIndex, Membership)>,
    membership_changes: u64,
    promotions_refused: u64,
    faults: Faults,
    clients: Vec<Client>,
    checker: Checker,
    next_value: u64,
    healed: bool,
    heal_ms: u64,
    leader_ms: Option<u64>,
    probes: Vec<Option<usize>>,
    probes_done_ms: Option<u64>,
    crashes: u64,
    elections: u64,
    committed_before_heal: u64,
    verdict: crate::sim::history::HistoryVerdict,
    next_trace_ms: u64,
    events: u64,
    actions: Vec<Action>,
    kv_clients: Vec<KvClient>,
    kv_history: Vec<KvEntry>,
    /// The next value a put or cas writes.
    kv_next_value: u64,
    /// State hash of the key-value machine at each applied index seen.
    kv_states: std::collections::HashMap<u64, u64>,
    /// Highest index any node applied (entries above it are applied for
    /// the first time: their effects are counted).
    kv_applied_max: LogIndex,
    /// (session id, sequence) → kv operation.
    kv_requests: std::collections::HashMap<(u64, u64), usize>,
    kv_verdict: crate::sim::kv::KvVerdict,
    /// Take a snapshot once this many entries were applied past the last
    /// one (0: never, the log is never compacted).
    snapshot_every: u64,
    /// Bytes per InstallSnapshot chunk.
    snapshot_chunk_bytes: u64,
    snapshots_taken: u64,
    snapshots_installed: u64,
    snapshot_chunks_sent: u64,
    restarts_from_snapshot: u64,
    run_records_max: u64,
    runs_cut_seen: u64,
    snapshots_deferred: u64,
    snapshots_taken_changed: u64,
    snapshots_installed_changed: u64,
    replication: Replication,
    replicates_grouped: u64,
}

impl Simulation {
    fn new(seed: u64, options: &Options) -> Self {
        assert!((1..=NODES_MAX).contains(&options.nodes));
        let ids: Vec<NodeId> = (1..=options.nodes as u64).map(NodeId).collect();
        let membership = Membership::with_voters(&ids).expect("valid voters");
        let spares = if options.churn { CHURN_SPARES } else { 0 };
        assert!(options.nodes + spares <= NODES_MAX);
        let all: Vec<NodeId> = (1..=(options.nodes + spares) as u64).map(NodeId).collect();
        let mut random = Random::new(seed);
        let nodes = all
            .iter()
            .map(|id| {
                let clock_offset_ms = random.below(1_000);
                Node::new(*id, clock_offset_ms, id.get() > options.nodes as u64)
            })
            .collect();
        // Per-seed snapshot shape, from its own stream: a quarter of the
        // seeds never compact; the rest snapshot every few to few hundred
        // entries, with chunks small enough that a transfer takes many.
        let mut shape = Random::new(seed ^ 0x5a95_4a07);
        let snapshot_every = match shape.below(4) {
            0 => 0,
            1 => shape.between(4, 20),
            2 => shape.between(20, 80),
            _ => shape.between(80, 300),
        };
        let snapshot_every = options.snapshot_every.unwrap_or(snapshot_every);
        let snapshot_chunk_bytes = shape.between(64, 2_048);
        let clients = (0..options.clients)
            .map(|_| Client {
                operation: None,
                leader_guess: random.below(options.nodes as u64) as usize,
            })
            .collect();
        let kv_clients = (0..options.kv_clients)
            .map(|_| KvClient {
                sequence: 0,
                operation: None,
                leader_guess: random.below(options.nodes as u64) as usize,
            })
            .collect();
        Self {
            seed,
            options: options.clone(),
            random,
            now: 0,
            sequence: 0,
            queue: BinaryHeap::new(),
            nodes,
            membership,
            config_committed: (LogIndex::ZERO, membership),
            configs_committed: vec![(LogIndex::ZERO, membership)],
            membership_changes: 0,
            promotions_refused: 0,
            faults: Faults::calm(),
            clients,
            checker: Checker::default(),
            next_value: 1,
            healed: false,
            heal_ms: options.nemesis_ms,
            leader_ms: None,
            probes: vec![None; PROBE_APPENDS],
            probes_done_ms: None,
            crashes: 0,
            elections: 0,
            committed_before_heal: 0,
            verdict: crate::sim::history::HistoryVerdict::default(),
            next_trace_ms: 0,
            events: 0,
            actions: Vec::with_capacity(crate::constants::ACTIONS_PER_STEP_MAX),
            kv_clients,
            kv_history: Vec::new(),
            kv_next_value: 1,
            kv_states: std::collections::HashMap::new(),
            kv_applied_max: LogIndex::ZERO,
            kv_requests: std::collections::HashMap::new(),
            kv_verdict: crate::sim::kv::KvVerdict::default(),
            snapshot_every,
            snapshot_chunk_bytes,
            snapshots_taken: 0,
            snapshots_installed: 0,
            snapshot_chunks_sent: 0,
            restarts_from_snapshot: 0,
            run_records_max: 0,
            runs_cut_seen: 0,
            snapshots_deferred: 0,
            snapshots_taken_changed: 0,
            snapshots_installed_changed: 0,
            replication: options
                .replication
                .unwrap_or_else(|| Replication::for_seed(seed)),
            replicates_grouped: 0,
        }
    }

    fn report(&self) -> Report {
        let history = &self.checker.history;
        Report {
            seed: self.seed,
            nodes: self.nodes.len(),
            events: self.events,
            committed: self.checker.committed_length().get(),
            appends_acknowledged: history
                .iter()
                .filter(|entry| matches!(entry.outcome, Outcome::Appended { .. }))
                .count() as u64,
            reads_answered: history
                .iter()
                .filter(|entry| matches!(entry.outcome, Outcome::Read { .. }))
                .count() as u64,
            crashes: self.crashes,
            elections: self.elections,
            committed_before_heal: self.committed_before_heal,
            liveness_leader_ms: self.leader_ms.unwrap_or(u64::MAX),
            liveness_commit_ms: self.probes_done_ms.unwrap_or(u64::MAX),
            history_operations: self.verdict.operations,
            linearizable: self.verdict.linearizable,
            history: history.clone(),
            kv_ok: self
                .kv_history
                .iter()
                .filter(|entry| matches!(entry.outcome, KvOutcome::Ok(_)))
                .count() as u64,
            kv_operations: self.kv_verdict.operations,
            kv_linearizable: self.kv_verdict.linearizable,
            kv_cas_retried_applied_once: self
                .kv_history
                .iter()
                .filter(|entry| {
                    matches!(entry.outcome, KvOutcome::Ok(KvOp::Cas { .. }))
                        && entry.answered_from_session
                        && entry.effects == 1
                })
                .count() as u64,
            kv_cas_retried_after_crash: self
                .kv_history
                .iter()
                .filter(|entry| {
                    matches!(entry.outcome, KvOutcome::Ok(KvOp::Cas { .. }))
                        && entry.answered_from_session
                        && entry.lost_to_crash
                        && entry.effects == 1
                })
                .count() as u64,
            kv_history: self.kv_history.clone(),
            membership_changes: self.membership_changes,
            promotions_refused: self.promotions_refused,
            membership: self.config_committed.1,
            snapshots_taken: self.snapshots_taken,
            snapshots_installed: self.snapshots_installed,
            snapshot_chunks_sent: self.snapshot_chunks_sent,
            restarts_from_snapshot: self.restarts_from_snapshot,
            run_records_max: self.run_records_max,
            runs_cut_seen: self.runs_cut_seen,
            snapshots_deferred: self.snapshots_deferred,
            snapshots_taken_changed: self.snapshots_taken_changed,
            snapshots_installed_changed: self.snapshots_installed_changed,
            replication: self.replication,
            replicates_grouped: self.replicates_grouped,
        }
    }

    fn schedule(&mut self, delay_ms: u64, event: Event) {
        self.sequence += 1;
        self.queue.push(Scheduled {
            time: self.now + delay_ms,
            sequence: self.sequence,
            event,
        });
    }

    fn run(&mut self) -> Result<(), Violation> {
        for node in 0..self.nodes.len() {
            self.restart(node);
            let phase = self.random.below(TICK_MS);
            self.schedule(phase, Event::Tick(node));
        }
        for client in 0..self.options.clients {
            let delay = self.random.between(50, 300);
            self.schedule(delay, Event::Client(client));
        }
        for client in 0..self.options.kv_clients {
            let delay = self.random.between(50, 300);
            self.schedule(delay, Event::KvClient(client));
        }
        let first_fault = self.random.between(100, 400);
        self.schedule(first_fault, Event::Nemesis);
        if self.options.churn {
            let first_change = self.random.between(200, 600);
            self.schedule(first_change, Event::Churn);
        }
        self.schedule(self.heal_ms, Event::Heal);
        let end = self.heal_ms + self.options.liveness_bound_ms;
        while let Some(scheduled) = self.queue.pop() {
            if scheduled.time > end || self.probes_done_ms.is_some() {
                break;
            }
            self.now = scheduled.time;
            self.events += 1;
            assert!(
                self.events < EVENTS_MAX,
                "seed {}: run stopped making progress",
                self.seed
            );
            self.handle(scheduled.event)?;
            if self.options.trace && self.now >= self.next_trace_ms {
                self.trace_nodes();
                self.next_trace_ms = self.now + 500;
            }
            if self.healed {
                self.liveness_step()?;
            }
        }
        self.finish()
    }

    fn handle(&mut self, event: Event) -> Result<(), Violation> {
        match event {
            Event::Tick(node) => {
                self.schedule(TICK_MS, Event::Tick(node));
                let now = self.now + self.nodes[node].clock_offset_ms;
                self.with_core(node, |core, actions| core.tick(now, actions))?;
                self.snapshot_streams_tick(node)?;
            }
            Event::Deliver(envelope) => self.deliver(&envelope)?,
            Event::SyncDone { node, life } => self.sync_done(node, life)?,
            Event::Crash { node, life } => {
                if !self.healed && self.nodes[node].life == life {
                    self.crash_for_a_while(node)?;
                }
            }
            Event::Restart(node) => {
                if self.nodes[node].core.is_none() {
                    self.restart(node);
                }
            }
            Event::Client(client) => self.client_invoke(client)?,
            Event::ClientTimeout(operation) => self.complete(operation, Outcome::Info),
            Event::KvClient(client) => self.kv_invoke(client)?,
            Event::KvAttempt(operation) => self.kv_attempt(operation)?,
            Event::KvGiveUp(operation) => self.kv_complete(operation, KvOutcome::Info),
            Event::Replicate(node) => self.replicate(node)?,
            Event::Nemesis => {
                if !self.healed {
                    self.nemesis()?;
                    let delay = self.random.between(20, 200);
                    self.schedule(delay, Event::Nemesis);
                }
            }
            Event::Churn => {
                if !self.healed {
                    self.churn()?;
                    let delay = self.random.between(50, 300);
                    self.schedule(delay, Event::Churn);
                }
            }
            Event::Heal => self.heal(),
        }
        Ok(())
    }

    // ------------------------------------------------------------------
    // Nodes.

    fn config(&self, id: NodeId) -> Config {
        let mut config = Config::new(id, self.seed.wrapping_mul(31).wrapping_add(id.get()));
        config.timeout_ms_election = ELECTION_MS;
        config.interval_ms_heartbeat = HEARTBEAT_MS;
        // Per-seed shape, drawn from its own stream so it is independent of
        // the cluster size: one-batch messages (which split a new leader's
        // catch-up from its no-op) in a third of the seeds; pre-vote and
        // check-quorum each on in three seeds of four.
        let mut shape = Random::new(self.seed ^ 0x5eed_5a9e);
        config.append_message_batches_max = match shape.below(3) {
            0 => 1,
            1 => 2 + shape.below(6) as usize,
            _ => 64,
        };
        config.inflight_messages_max = 1 + shape.below(8) as usize;
        // Promotion needs a learner close behind; the simulated logs are
        // short, so the production bound would admit any learner.
        config.promote_lag_entries_max = 8;
        config.pre_vote = !shape.chance(1, 4);
        config.check_quorum = !shape.chance(1, 4);
        // Simulated logs are short: coalesce them early and often.
        config.coalesce_ready_min = 1 + shape.below(8) as usize;
        #[cfg(feature = "planted-bugs")]
        {
            config.planted_bug = self.options.planted_bug;
        }
        config
    }

    fn restart(&mut self, node: usize) {
        self.trace(|| format!("restart node {}", node + 1));
        let id = self.nodes[node].id;
        let config = self.config(id);
        // After a crash the written state is what recovery found.
        // Start from the snapshot and the log after it.
        let recovered = self.nodes[node].disk.written();
        let snapshot = recovered.snapshot.clone();
        let (snapshot_index, snapshot_term) = snapshot
            .as_ref()
            .map_or((LogIndex::ZERO, Term::ZERO), |snapshot| {
                (snapshot.index, snapshot.term)
            });
        // Coalesced as the daemon's recovery does (`RunLimits::push`).
        let mut summaries = Vec::new();
        for batch in &recovered.batches {
            if batch.summary.first_index > snapshot_index {
                let boundary = crate::raft::Boundary::from(&batch.summary);
                config.run_limits().push(&mut summaries, boundary);
            }
        }
        let configs: Vec<(LogIndex, Membership)> = recovered
            .batches
            .iter()
            .filter(|batch| batch.summary.first_index > snapshot_index)
            .filter_map(|batch| {
                batch
                    .membership
                    .map(|membership| (batch.summary.first_index, membership))
            })
            .collect();
        assert!(
            summaries
                .first()
                .is_none_or(|first| first.first_index == snapshot_index.next()),
            "the log continues the snapshot"
        );
        // The configuration as of the snapshot is the one it records;
        // without a snapshot, the initial one, or none for a node that
        // starts outside. `configs` (above the snapshot) carry the rest.
        let membership = match &snapshot {
            Some(snapshot) => snapshot.membership,
            None if self.nodes[node].outside => Membership::default(),
            None => self.membership,
        };
        let restart = Restart {
            hard_state: recovered.hard_state,
            snapshot_index,
            snapshot_term,
            membership,
            batches: &summaries,
            now_ms: self.now + self.nodes[node].clock_offset_ms,
        };
        let mut kv = StateMachine::new();
        if let Some(snapshot) = &snapshot {
            kv.restore_from(&snapshot.kv[..])
                .expect("a stored snapshot restores");
            self.restarts_from_snapshot += 1;
        }
        let mut core = Core::new(config, &restart);
        core.restore_configs(&configs);
        let state = &mut self.nodes[node];
        state.core = Some(core);
        state.applied = snapshot_index;
        state.kv = kv;
    }

    fn crash(&mut self, node: usize) -> Result<(), Violation> {
        if self.nodes[node].core.is_none() {
            return Ok(());
        }
        self.trace(|| format!("crash node {}", node + 1));
        self.trace_nodes();
        let state = &mut self.nodes[node];
        state.core = None;
        state.life += 1;
        state.disk.crash(&mut self.random);
        state.sending.clear();
        state.receiving = None;
        state.proposals_unsent = 0;
        let proposals = std::mem::take(&mut state.proposals);
        let kv_proposals = std::mem::take(&mut state.kv_proposals);
        let reads: Vec<usize> = state
            .reads_waiting
            .drain(..)
            .map(|(_, operation)| operation)
            .chain(state.reads_ready.drain(..).map(|(_, operation)| operation))
            .collect();
        for (operation, _, _) in proposals {
            self.complete(operation, Outcome::Info);
        }
        for (operation, _, _) in kv_proposals {
            self.kv_history[operation].lost_to_crash = true;
            self.kv_retry(operation);
        }
        for operation in reads {
            self.complete(operation, Outcome::Fail);
        }
        self.crashes += 1;
        self.check_committed_durable()
    }

    /// Committed entries survive crashes, judged against the latest
    /// committed configuration C (at index k; nodes outside it no longer
    /// count): every committed entry is durable on a majority of C's
    /// voters, and the entries up to k on a majority of its outgoing half
    /// too. After k, entries commit under C or under the one allowed step
    /// after it (in force once appended), whose quorums always include a
    /// majority of C's voters but not of C's outgoing half.
    fn check_committed_durable(&self) -> Result<(), Violation> {
        let (index, membership) = self.config_committed;
        let durable_of = |half: crate::raft::NodeSet| -> Vec<DurableView<'_>> {
            half.as_slice()
                .iter()
                .map(|id| self.nodes[(id.get() - 1) as usize].disk.durable())
                .collect()
        };
        self.checker
            .committed_durable(&durable_of(membership.voters))?;
        if membership.is_joint() {
            self.checker
                .committed_durable_through(&durable_of(membership.voters_outgoing), index)?;
        }
        Ok(())
    }

    /// Runs `input` on the node's core (if up) and executes its actions.
    fn with_core(
        &mut self,
        node: usize,
        input: impl FnOnce(&mut Core, &mut Vec<Action>),
    ) -> Result<(), Violation> {
        let mut actions = std::mem::take(&mut self.actions);
        actions.clear();
        if let Some(core) = self.nodes[node].core.as_mut() {
            input(core, &mut actions);
        }
        let result = self.execute(node, &actions, None, None);
        self.actions = actions;
        result
    }

    fn deliver(&mut self, envelope: &Envelope) -> Result<(), Violation> {
        let node = (envelope.to.get() - 1) as usize;
        if self.nodes[node].core.is_none() {
            return Ok(());
        }
        let mut summaries = Vec::new();
        let mut configs = Vec::new();
        let body = match &envelope.body {
            EnvelopeBody::Append {
                prev_index,
                prev_term,
                leader_commit,
                batches,
            } => {
                summaries.extend(batches.iter().map(|batch| batch.summary));
                configs.extend(batches.iter().filter_map(|batch| batch.membership));
                Body::AppendEntries(AppendEntries {
                    prev_index: *prev_index,
                    prev_term: *prev_term,
                    leader_commit: *leader_commit,
                    batches: &summaries,
                    configs: &configs,
                })
            }
            EnvelopeBody::Other(other) => incoming_body(*other),
            EnvelopeBody::InstallSnapshot(chunk) => Body::InstallSnapshot(InstallSnapshot {
                last_index: chunk.index,
                last_term: chunk.term,
            }),
            EnvelopeBody::SnapshotResponse(response) => Body::SnapshotResponse(*response),
        };
        let message = Message {
            from: envelope.from,
            to: envelope.to,
            term: envelope.term,
            body,
        };
        let mut actions = std::mem::take(&mut self.actions);
        actions.clear();
        self.nodes[node]
            .core
            .as_mut()
            .expect("checked up")
            .step(&message, &mut actions);
        let batches = match &envelope.body {
            EnvelopeBody::Append { batches, .. } => Some(batches.as_slice()),
            _ => None,
        };
        let result = self.execute(node, &actions, batches, None);
        self.actions = actions;
        result?;
        match &envelope.body {
            EnvelopeBody::InstallSnapshot(chunk) => {
                self.snapshot_chunk_received(node, envelope.from, envelope.term, chunk)
            }
            EnvelopeBody::SnapshotResponse(response) => {
                self.snapshot_response_received(node, envelope.from, envelope.term, *response)
            }
            _ => Ok(()),
        }
    }

    fn sync_done(&mut self, node: usize, life: u64) -> Result<(), Violation> {
        if self.nodes[node].life != life || self.nodes[node].core.is_none() {
            return Ok(());
        }
        let report = self.nodes[node].disk.complete_sync();
        if let Some(hard_state) = report.hard_state {
            self.with_core(node, |core, actions| {
                core.hard_state_persisted(hard_state, actions);
            })?;
        }
        if let Some((index, term)) = report.log {
            self.with_core(node, |core, actions| core.persisted(index, term, actions))?;
        }
        self.start_sync(node);
        Ok(())
    }

    fn start_sync(&mut self, node: usize) {
        let state = &mut self.nodes[node];
        if !state.disk.start_sync() {
            return;
        }
        let (low, high) = state.disk_latency_ms;
        let life = state.life;
        let stalled = state.disk_stalled_until.saturating_sub(self.now);
        let latency = stalled + self.random.between(low, high);
        self.schedule(latency, Event::SyncDone { node, life });
    }

    /// Executes a call's actions in order (see `Action`'s contract).
    fn execute(
        &mut self,
        node: usize,
        actions: &[Action],
        received: Option<&[BatchRef]>,
        proposal: Option<&BatchRef>,
    ) -> Result<(), Violation> {
        for action in actions {
            match *action {
                Action::PersistHardState(hard_state) => {
                    self.nodes[node]
                        .disk
                        .issue(DiskOperation::HardState(hard_state));
                }
                Action::Truncate { from } => {
                    self.nodes[node].disk.issue(DiskOperation::Truncate(from));
                }
                Action::AppendProposal { first_index, .. } => {
                    let batch = proposal.expect("a proposal action follows propose");
                    assert_eq!(batch.summary.first_index, first_index);
                    self.store(node, std::slice::from_ref(batch))?;
                }
                Action::AppendNoop { term, index } => {
                    let batch = Rc::new(SimBatch::new(BatchKind::Noop, term, index, &[0]));
                    self.store(node, &[batch])?;
                }
                Action::AppendReceived { skip, .. } => {
                    let batches = received.expect("received batches come with a message");
                    self.store(node, &batches[skip as usize..])?;
                }
                Action::Send(outgoing) => self.send(node, outgoing),
                Action::Apply { up_to } => self.apply(node, up_to)?,
                Action::ReadReady {
                    through_round,
                    index,
                } => self.reads_ready(node, through_round, index),
                Action::ReadsAborted { through_round } => {
                    while let Some(&(round, operation)) = self.nodes[node].reads_waiting.front() {
                        if round > through_round {
                            break;
                        }
                        self.nodes[node].reads_waiting.pop_front();
                        self.complete(operation, Outcome::Fail);
                    }
                }
                Action::SendSnapshot { to } => self.snapshot_stream_start(node, to),
                Action::RoleChanged { role, term, leader } => {
                    self.role_changed(node, role, term, leader)?;
                }
            }
        }
        self.start_sync(node);
        self.check_node(node)?;
        self.leave_joint_if_due(node)
    }

    fn store(&mut self, node: usize, batches: &[BatchRef]) -> Result<(), Violation> {
        let id = self.nodes[node].id;
        let mut previous = self.nodes[node]
            .disk
            .written()
            .entry(
                batches
                    .first()
                    .map_or(LogIndex::ZERO, |b| b.summary.first_index.prev()),
            )
            .map_or(Term::ZERO, |(term, _)| term);
        for batch in batches {
            self.checker.batch_stored(id, batch, previous)?;
            previous = batch.summary.term;
        }
        self.nodes[node]
            .disk
            .issue(DiskOperation::Append(batches.to_vec()));
        Ok(())
    }

    fn send(&mut self, node: usize, outgoing: crate::raft::Outgoing) {
        let body = match outgoing.body {
            OutgoingBody::AppendEntries(range) => {
                let batches = if range.batches > 0 {
                    self.nodes[node]
                        .disk
                        .read(range.first_index, range.last_index)
                } else {
                    Vec::new()
                };
                // `range.batches` counts exactly, or bounds from above when
                // the range starts inside a coalesced run.
                assert!(
                    (1..=range.batches as usize).contains(&batches.len()) || range.batches == 0,
                    "range {range:?}: {} batches",
                    batches.len()
                );
                EnvelopeBody::Append {
                    prev_index: range.prev_index,
                    prev_term: range.prev_term,
                    leader_commit: range.leader_commit,
                    batches,
                }
            }
            other => EnvelopeBody::Other(other),
        };
        let envelope = Envelope {
            from: outgoing.from,
            to: outgoing.to,
            term: outgoing.term,
            body,
        };
        self.transmit(node, envelope);
    }

    /// Puts a message on the simulated wire, through the network faults.
    fn transmit(&mut self, from: usize, envelope: Envelope) {
        let to = (envelope.to.get() - 1) as usize;
        if self.faults.blocked[from][to] || self.random.chance(self.faults.drop_percent, 100) {
            return;
        }
        let copies = if self.random.chance(self.faults.duplicate_percent, 100) {
            2
        } else {
            1
        };
        let mut envelope = Some(Box::new(envelope));
        for copy in 0..copies {
            let (low, high) = self.faults.delay_ms;
            let delay = self.random.between(low, high);
            let message = if copy + 1 == copies {
                envelope.take().expect("one left")
            } else {
                envelope.clone().expect("one left")
            };
            self.schedule(delay, Event::Deliver(message));
        }
    }

    fn apply(&mut self, node: usize, up_to: LogIndex) -> Result<(), Violation> {
        let id = self.nodes[node].id;
        let from = self.nodes[node].applied;
        if up_to <= from {
            return Err(Violation {
                property: "commit never regresses",
                detail: format!("node {id} applied up to {from}, then told to apply up to {up_to}"),
            });
        }
        if let Some(core) = &self.nodes[node].core
            && core.role() == Role::Leader
        {
            let term = self.nodes[node]
                .disk
                .written()
                .entry(up_to)
                .map(|(term, _)| term);
            if term != Some(core.term()) {
                return Err(Violation {
                    property: "a leader commits only entries of its term",
                    detail: format!(
                        "leader {id} of term {} committed up to {up_to}, of term {term:?}",
                        core.term()
                    ),
                });
            }
        }
        for index in from.get() + 1..=up_to.get() {
            let entry = self.nodes[node]
                .disk
                .written()
                .entry(LogIndex(index))
                .expect("committed entries are stored");
            self.checker.applied(id, LogIndex(index), entry)?;
        }
        self.note_committed_configs(node, from, up_to);
        let answers = self.apply_kv(node, from, up_to)?;
        self.nodes[node].applied = up_to;
        let kv_proposals = std::mem::take(&mut self.nodes[node].kv_proposals);
        let mut kv_still = Vec::with_capacity(kv_proposals.len());
        for (operation, term, index) in kv_proposals {
            if index > up_to {
                kv_still.push((operation, term, index));
                continue;
            }
            let entry = self.nodes[node].disk.written().entry(index);
            let answer = answers.iter().find(|(at, _)| *at == index);
            match answer {
                Some((_, response)) if entry.map(|(entry_term, _)| entry_term) == Some(term) => {
                    let outcome = self.kv_outcome(operation, response);
                    self.kv_complete(operation, outcome);
                }
                _ => self.kv_retry(operation),
            }
        }
        self.nodes[node].kv_proposals = kv_still;
        let proposals = std::mem::take(&mut self.nodes[node].proposals);
        let mut still = Vec::with_capacity(proposals.len());
        for (operation, term, first_index) in proposals {
            if first_index > up_to {
                still.push((operation, term, first_index));
                continue;
            }
            let entry = self.nodes[node].disk.written().entry(first_index);
            let outcome = if entry.map(|(entry_term, _)| entry_term) == Some(term) {
                Outcome::Appended { index: first_index }
            } else {
                Outcome::Fail
            };
            self.complete(operation, outcome);
        }
        self.nodes[node].proposals = still;
        self.serve_reads(node);
        self.maybe_snapshot(node)
    }

    fn reads_ready(&mut self, node: usize, through_round: u64, index: LogIndex) {
        let state = &mut self.nodes[node];
        while let Some(&(round, operation)) = state.reads_waiting.front() {
            if round > through_round {
                break;
            }
            state.reads_waiting.pop_front();
            state.reads_ready.push((index, operation));
        }
        self.serve_reads(node);
    }

    fn serve_reads(&mut self, node: usize) {
        let applied = self.nodes[node].applied;
        let ready = std::mem::take(&mut self.nodes[node].reads_ready);
        let mut still = Vec::new();
        for (index, operation) in ready {
            if index > applied {
                still.push((index, operation));
                continue;
            }
            if operation >= KV_TAG {
                let operation = operation - KV_TAG;
                if let KvOp::Get { key, .. } = self.kv_history[operation].op {
                    let value = self.nodes[node]
                        .kv
                        .get(&key.to_le_bytes())
                        .map(crate::sim::kv::decode_value);
                    self.kv_complete(operation, KvOutcome::Ok(KvOp::Get { key, value }));
                }
                continue;
            }
            let last_value = self.nodes[node]
                .disk
                .written()
                .entry(index)
                .map_or(0, |(_, value)| value);
            self.complete(
                operation,
                Outcome::Read {
                    length: index,
                    last_value,
                },
            );
        }
        self.nodes[node].reads_ready = still;
    }

    fn role_changed(
        &mut self,
        node: usize,
        role: Role,
        term: Term,
        leader: NodeId,
    ) -> Result<(), Violation> {
        let id = self.nodes[node].id;
        self.trace(|| format!("node {id}: {role:?} term {term} leader {leader}"));
        self.nemesis_on_role_change(node, role);
        if role == Role::Leader {
            self.elections += 1;
            self.checker.leader_elected(term, id)?;
            self.checker
                .leader_log(id, term, self.nodes[node].disk.written())?;
        } else {
            // Streams of a former leader stop; the core forgot them.
            self.nodes[node].sending.clear();
            for (operation, _, _) in std::mem::take(&mut self.nodes[node].proposals) {
                self.complete(operation, Outcome::Info);
            }
            for (operation, _, _) in std::mem::take(&mut self.nodes[node].kv_proposals) {
                self.kv_retry(operation);
            }
        }
        if leader != NodeId::ZERO {
            for client in &mut self.clients {
                if client.leader_guess == node {
                    client.leader_guess = (leader.get() - 1) as usize;
                }
            }
            for client in &mut self.kv_clients {
                if client.leader_guess == node {
                    client.leader_guess = (leader.get() - 1) as usize;
                }
            }
        }
        Ok(())
    }

    /// Per-event checks of one node: the core and its storage agree.
    fn check_node(&mut self, node: usize) -> Result<(), Violation> {
        let state = &self.nodes[node];
        let Some(core) = &state.core else {
            return Ok(());
        };
        let written = state.disk.written();
        if core.log().last_index() != written.last_index()
            || core.log().last_term() != written.last_term()
        {
            return Err(Violation {
                property: "core and storage agree",
                detail: format!(
                    "node {}: core last {}@{}, storage last {}@{}",
                    state.id,
                    core.log().last_index(),
                    core.log().last_term(),
                    written.last_index(),
                    written.last_term()
                ),
            });
        }
        // Every record of the core's log (a batch, or a run of coalesced
        // ones) has real batch boundaries at both ends and one term, and
        // counts at least the batches it covers.
        let log = core.log();
        log.check();
        let (mut runs, mut cut) = (0u64, 0u64);
        for record in log.batches_in(log.first_index(), log.last_index()) {
            let first = written.position(record.first_index);
            let last = written.position(record.last_index());
            let starts = first.map(|position| {
                let stored = &written.batches[position].summary;
                (stored.first_index, stored.term)
            });
            let ends = last.map(|position| {
                let stored = &written.batches[position].summary;
                (stored.last_index(), stored.term)
            });
            let compacted = written.snapshot_index();
            let covered = first.zip(last).map(|(first, last)| last - first + 1);
            let agrees = (record.first_index <= compacted
                || starts == Some((record.first_index, record.term)))
                && (record.last_index() <= compacted
                    || ends == Some((record.last_index(), record.term)))
                && covered.is_none_or(|covered| covered <= record.batches as usize);
            if !agrees {
                return Err(Violation {
                    property: "the core's log records storage's batches",
                    detail: format!(
                        "node {}: {record:?}, storage {starts:?} {ends:?}, {covered:?} batches",
                        state.id
                    ),
                });
            }
            runs += u64::from(record.is_run());
            cut += u64::from(covered.is_some_and(|covered| covered < record.batches as usize));
        }
        self.run_records_max = self.run_records_max.max(runs);
        self.runs_cut_seen += cut;
        if core.hard_state().term < state.disk.written().hard_state.term {
            return Err(Violation {
                property: "term never regresses",
                detail: format!("node {} term below its stored term", state.id),
            });
        }
        Ok(())
    }

    // ------------------------------------------------------------------
    // Clients.

    fn client_invoke(&mut self, client: u32) -> Result<(), Violation> {
        if self.healed || self.clients[client as usize].operation.is_some() {
            return Ok(());
        }
        let node = self.clients[client as usize].leader_guess;
        let operation = if self.random.chance(7, 10) {
            let count = self.random.between(1, 4) as u32;
            let first_value = self.next_value;
            self.next_value += u64::from(count);
            Operation::Append { first_value, count }
        } else {
            Operation::Read
        };
        let index = self.invoke(client, operation);
        self.clients[client as usize].operation = Some(index);
        self.submit(node, index)?;
        Ok(())
    }

    fn invoke(&mut self, client: u32, operation: Operation) -> usize {
        self.checker.history.push(HistoryEntry {
            client,
            operation,
            invoked_ms: self.now,
            completed_ms: u64::MAX,
            outcome: Outcome::Info,
        });
        let index = self.checker.history.len() - 1;
        self.schedule(CLIENT_TIMEOUT_MS, Event::ClientTimeout(index));
        index
    }

    /// Sends operation `index` to `node`: refused at once unless it leads.
    fn submit(&mut self, node: usize, index: usize) -> Result<(), Violation> {
        let operation = self.checker.history[index].operation;
        let leader = self.nodes[node].core.as_ref().map(Core::leader);
        let is_leader = self.nodes[node]
            .core
            .as_ref()
            .is_some_and(|core| core.role() == Role::Leader);
        if !is_leader {
            self.redirect(index, leader);
            self.complete(index, Outcome::Fail);
            return Ok(());
        }
        match operation {
            Operation::Append { first_value, count } => {
                self.propose(node, index, first_value, count)
            }
            Operation::Read => {
                let mut actions = std::mem::take(&mut self.actions);
                actions.clear();
                let core = self.nodes[node].core.as_mut().expect("leader is up");
                let result = core.read_index(&mut actions);
                if let Ok(round) = result {
                    self.nodes[node].reads_waiting.push_back((round, index));
                }
                let executed = self.execute(node, &actions, None, None);
                self.actions = actions;
                if result.is_err() {
                    self.complete(index, Outcome::Fail);
                }
                executed
            }
        }
    }

    fn propose(
        &mut self,
        node: usize,
        index: usize,
        first_value: u64,
        count: u32,
    ) -> Result<(), Violation> {
        assert!(count <= BATCH_ENTRIES_MAX);
        let mut actions = std::mem::take(&mut self.actions);
        actions.clear();
        // The frame's size does not depend on the stamped term and index:
        // encode it first, tell the core its size, stamp what it assigns.
        let values: Vec<u64> = (first_value..first_value + u64::from(count)).collect();
        let unstamped = SimBatch::new(BatchKind::Data, Term::ZERO, LogIndex::ZERO, &values);
        let core = self.nodes[node].core.as_mut().expect("leader is up");
        let result = core.propose(
            BatchKind::Data,
            count,
            unstamped.summary.bytes,
            &mut actions,
        );
        let accepted = result.is_ok();
        let executed = match result {
            Ok((term, first_index)) => {
                let mut batch = unstamped;
                crate::wire::BatchMut::parse(&mut batch.frame)
                    .expect("our own frame")
                    .stamp(term, first_index);
                batch.summary.term = term;
                batch.summary.first_index = first_index;
                let batch = Rc::new(batch);
                self.nodes[node].proposals.push((index, term, first_index));
                self.execute(node, &actions, None, Some(&batch))
            }
            Err(error) => {
                let leader = match error {
                    ProposeError::NotLeader { leader } => Some(leader),
                    _ => None,
                };
                self.redirect(index, leader);
                self.complete(index, Outcome::Fail);
                self.execute(node, &actions, None, None)
            }
        };
        self.actions = actions;
        executed?;
        if accepted {
            self.proposed(node)?;
        }
        Ok(())
    }

    /// `node` proposed a batch: send it now, at the end of the node's turn,
    /// or leave it to the tick, as the seed's [`Replication`] says.
    fn proposed(&mut self, node: usize) -> Result<(), Violation> {
        match self.replication {
            Replication::EachProposal => {
                self.nodes[node].proposals_unsent += 1;
                self.replicate(node)
            }
            Replication::Turn => {
                let state = &mut self.nodes[node];
                state.proposals_unsent += 1;
                if !state.replicate_scheduled {
                    state.replicate_scheduled = true;
                    let delay = self.random.below(TURN_MS_MAX + 1);
                    self.schedule(delay, Event::Replicate(node));
                }
                Ok(())
            }
            Replication::TickOnly => Ok(()),
        }
    }

    /// Ends `node`'s turn: its core sends what was proposed since the last
    /// call.
    fn replicate(&mut self, node: usize) -> Result<(), Violation> {
        let state = &mut self.nodes[node];
        state.replicate_scheduled = false;
        if std::mem::take(&mut state.proposals_unsent) >= 2 {
            self.replicates_grouped += 1;
        }
        self.with_core(node, Core::replicate)
    }

    fn redirect(&mut self, operation: usize, leader: Option<NodeId>) {
        let client = self.checker.history[operation].client as usize;
        let guess = match leader {
            Some(leader) if leader != NodeId::ZERO => (leader.get() - 1) as usize,
            _ => self.random.below(self.nodes.len() as u64) as usize,
        };
        if client < self.clients.len() {
            self.clients[client].leader_guess = guess;
        }
    }

    /// Records the outcome of an operation (the first one only) and lets
    /// its client go on.
    fn complete(&mut self, operation: usize, outcome: Outcome) {
        if operation >= KV_TAG {
            // A key-value get's attempt failed (its reads are answered in
            // `serve_reads`): try again.
            self.kv_retry(operation - KV_TAG);
            return;
        }
        let entry = &mut self.checker.history[operation];
        if entry.completed_ms != u64::MAX {
            return;
        }
        entry.completed_ms = self.now;
        entry.outcome = outcome;
        let client = entry.client;
        if let Some(probe) = self
            .probes
            .iter()
            .position(|probe| *probe == Some(operation))
            && !matches!(outcome, Outcome::Appended { .. })
        {
            self.probes[probe] = None;
        }
        if (client as usize) < self.clients.len()
            && self.clients[client as usize].operation == Some(operation)
        {
            self.clients[client as usize].operation = None;
            let think = self.random.between(1, 30);
            self.schedule(think, Event::Client(client));
        }
    }

    // ------------------------------------------------------------------
    // Key-value clients.

    /// Applies the committed entries `from + 1 ..= up_to` to the node's
    /// key-value machine; returns the answer of each kv entry. Checks that
    /// every machine has the same state at the same index, and counts each
    /// request's effects the first time any node applies its entry.
    fn apply_kv(
        &mut self,
        node: usize,
        from: LogIndex,
        up_to: LogIndex,
    ) -> Result<Vec<(LogIndex, KvResponse)>, Violation> {
        let batches: Vec<BatchRef> = self.nodes[node]
            .disk
            .written()
            .batches
            .iter()
            .filter(|batch| batch.summary.last_index() > from && batch.summary.first_index <= up_to)
            .cloned()
            .collect();
        #[cfg(feature = "planted-bugs")]
        let skip_sessions = self.options.planted_bug == Some(crate::raft::PlantedBug::DoubleApply);
        #[cfg(not(feature = "planted-bugs"))]
        let skip_sessions = false;
        let first_time = self.kv_applied_max;
        let mut answers = Vec::new();
        let mut seen = Vec::new();
        let kv = &mut self.nodes[node].kv;
        let failed = |error: crate::kv::ApplyError| Violation {
            property: "kv state machine applies every committed entry",
            detail: error.to_string(),
        };
        for batch in &batches {
            if batch.summary.kind != BatchKind::Kv {
                let last = batch.summary.last_index().min(up_to);
                if last > kv.applied_index() {
                    kv.advance(last).map_err(failed)?;
                }
                continue;
            }
            let view = BatchView::parse(&batch.frame).expect("stored frames are valid");
            let mut index = batch.summary.first_index;
            let mut error = None;
            view.for_each_entry(|payload| {
                if error.is_none() && index > kv.applied_index() && index <= up_to {
                    let mut command = decode_kv_command(payload).expect("our own commands");
                    let request = (command.client_id, command.sequence);
                    let duplicate = matches!(
                        kv.sessions().check(command.client_id, command.sequence),
                        crate::kv::session::Check::Duplicate(_)
                    );
                    if skip_sessions {
                        // The planted bug: no session check at all.
                        command.client_id = 0;
                    }
                    match kv.apply(index, &command) {
                        Ok(response) => {
                            seen.push((index, request, duplicate, response.clone()));
                            answers.push((index, response));
                        }
                        Err(apply_error) => error = Some(apply_error),
                    }
                }
                index = index.next();
                Ok(())
            })
            .expect("stored frames are valid");
            if let Some(error) = error {
                return Err(failed(error));
            }
        }
        let hash = crate::sim::kv::state_hash(kv)?;
        if let Some(previous) = self.kv_states.insert(up_to.get(), hash)
            && previous != hash
        {
            return Err(Violation {
                property: "kv state machine safety",
                detail: format!(
                    "node {} has a different key-value state at index {up_to}",
                    node + 1
                ),
            });
        }
        for (index, request, duplicate, response) in seen {
            let Some(&operation) = self.kv_requests.get(&request) else {
                continue;
            };
            let entry = &mut self.kv_history[operation];
            if duplicate {
                entry.answered_from_session = true;
            }
            if index > first_time && !duplicate && crate::sim::kv::took_effect(&response) {
                entry.effects += 1;
            }
        }
        self.kv_applied_max = self.kv_applied_max.max(up_to);
        Ok(answers)
    }

    fn kv_invoke(&mut self, client: u32) -> Result<(), Violation> {
        if self.healed || self.kv_clients[client as usize].operation.is_some() {
            return Ok(());
        }
        let key = self.random.between(1, crate::sim::kv::KEYS);
        let op = match self.random.below(10) {
            0..4 => KvOp::Get { key, value: None },
            4..7 => {
                let value = self.kv_next_value;
                self.kv_next_value += 1;
                KvOp::Put { key, value }
            }
            _ => {
                let to = self.kv_next_value;
                self.kv_next_value += 1;
                // Expect a recent value (often the current one), or absent.
                let from = if self.random.chance(1, 5) || to < 2 {
                    None
                } else {
                    Some(to - 1 - self.random.below(3.min(to - 1)))
                };
                KvOp::Cas {
                    key,
                    from,
                    to: Some(to),
                }
            }
        };
        let state = &mut self.kv_clients[client as usize];
        let sequence = if matches!(op, KvOp::Get { .. }) {
            0
        } else {
            state.sequence += 1;
            state.sequence
        };
        self.kv_history.push(KvEntry {
            client,
            op,
            sequence,
            invoked_ms: self.now,
            completed_ms: u64::MAX,
            outcome: KvOutcome::Info,
            attempts: 0,
            effects: 0,
            answered_from_session: false,
            lost_to_crash: false,
        });
        let operation = self.kv_history.len() - 1;
        if sequence != 0 {
            self.kv_requests
                .insert((kv_session(client), sequence), operation);
        }
        self.kv_clients[client as usize].operation = Some(operation);
        self.schedule(crate::sim::kv::GIVE_UP_MS, Event::KvGiveUp(operation));
        self.kv_attempt(operation)
    }

    /// One attempt of a key-value operation at the client's guess of the
    /// leader; a refused or lost attempt is retried (`kv_retry`).
    fn kv_attempt(&mut self, operation: usize) -> Result<(), Violation> {
        let entry = &mut self.kv_history[operation];
        if entry.completed_ms != u64::MAX || self.healed {
            return Ok(());
        }
        entry.attempts += 1;
        let (client, op, sequence) = (entry.client, entry.op, entry.sequence);
        let node = self.kv_clients[client as usize].leader_guess;
        let is_leader = self.nodes[node]
            .core
            .as_ref()
            .is_some_and(|core| core.role() == Role::Leader);
        if !is_leader {
            let leader = self.nodes[node].core.as_ref().map(Core::leader);
            self.kv_redirect(client, leader);
            self.kv_retry(operation);
            return Ok(());
        }
        let command = match op {
            KvOp::Get { .. } => {
                let mut actions = std::mem::take(&mut self.actions);
                actions.clear();
                let core = self.nodes[node].core.as_mut().expect("leader is up");
                let result = core.read_index(&mut actions);
                if let Ok(round) = result {
                    self.nodes[node]
                        .reads_waiting
                        .push_back((round, operation + KV_TAG));
                }
                let executed = self.execute(node, &actions, None, None);
                self.actions = actions;
                if result.is_err() {
                    self.kv_retry(operation);
                }
                return executed;
            }
            KvOp::Put { key, value } => {
                (key, KvOperation::Put(crate::sim::kv::encode_value(value)))
            }
            KvOp::Cas { key, from, to } => (
                key,
                KvOperation::Cas {
                    expected: from.map(crate::sim::kv::encode_value),
                    new: crate::sim::kv::encode_value(to.unwrap_or(0)),
                },
            ),
            KvOp::Delete { key } => (key, KvOperation::Delete),
        };
        let command = KvCommand {
            client_id: kv_session(client),
            sequence,
            key: command.0.to_le_bytes().to_vec(),
            operation: command.1,
            time_ms: self.now + self.nodes[node].clock_offset_ms,
        };
        let payload = encode_kv_command(&command);
        let unstamped = SimBatch::kv(Term::ZERO, LogIndex::ZERO, &[payload]);
        let mut actions = std::mem::take(&mut self.actions);
        actions.clear();
        let core = self.nodes[node].core.as_mut().expect("leader is up");
        let result = core.propose(BatchKind::Kv, 1, unstamped.summary.bytes, &mut actions);
        let accepted = result.is_ok();
        let executed = match result {
            Ok((term, first_index)) => {
                let mut batch = unstamped;
                crate::wire::BatchMut::parse(&mut batch.frame)
                    .expect("our own frame")
                    .stamp(term, first_index);
                batch.summary.term = term;
                batch.summary.first_index = first_index;
                let batch = Rc::new(batch);
                self.nodes[node]
                    .kv_proposals
                    .push((operation, term, first_index));
                self.execute(node, &actions, None, Some(&batch))
            }
            Err(error) => {
                let leader = match error {
                    ProposeError::NotLeader { leader } => Some(leader),
                    _ => None,
                };
                self.kv_redirect(client, leader);
                self.kv_retry(operation);
                self.execute(node, &actions, None, None)
            }
        };
        self.actions = actions;
        executed?;
        if accepted {
            self.proposed(node)?;
        }
        Ok(())
    }

    /// Schedules another attempt of the operation (same session sequence).
    fn kv_retry(&mut self, operation: usize) {
        if self.kv_history[operation].completed_ms != u64::MAX {
            return;
        }
        let delay = self.random.between(5, 40);
        self.schedule(delay, Event::KvAttempt(operation));
    }

    fn kv_redirect(&mut self, client: u32, leader: Option<NodeId>) {
        let guess = match leader {
            Some(leader) if leader != NodeId::ZERO => (leader.get() - 1) as usize,
            _ => self.random.below(self.nodes.len() as u64) as usize,
        };
        self.kv_clients[client as usize].leader_guess = guess;
    }

    /// The outcome a write's answer means.
    fn kv_outcome(&self, operation: usize, response: &KvResponse) -> KvOutcome {
        let op = self.kv_history[operation].op;
        match response {
            KvResponse::Done | KvResponse::CasApplied => KvOutcome::Ok(op),
            KvResponse::CasMismatch(_) => KvOutcome::Fail,
            // Expired or stale session: the request's fate is unknown.
            KvResponse::Refused(_) => KvOutcome::Info,
        }
    }

    /// Records the outcome of a key-value operation (the first one only)
    /// and lets its client go on.
    fn kv_complete(&mut self, operation: usize, outcome: KvOutcome) {
        let entry = &mut self.kv_history[operation];
        if entry.completed_ms != u64::MAX {
            return;
        }
        entry.completed_ms = self.now;
        entry.outcome = outcome;
        let client = entry.client as usize;
        if self.kv_clients[client].operation == Some(operation) {
            self.kv_clients[client].operation = None;
            let think = self.random.between(1, 30);
            self.schedule(think, Event::KvClient(client as u32));
        }
    }

    // ------------------------------------------------------------------
    // Nemesis and liveness.

    fn nemesis(&mut self) -> Result<(), Violation> {
        let nodes = self.nodes.len();
        let node = self.random.below(nodes as u64) as usize;
        let fault = self.random.below(13);
        self.trace(|| format!("nemesis: fault {fault} at node {}", node + 1));
        match fault {
            0 => self.faults.drop_percent = self.random.below(30),
            1 => self.faults.duplicate_percent = self.random.below(15),
            2 => {
                let high = self.random.between(2, 80);
                self.faults.delay_ms = (1, high);
            }
            3 => self.partition_symmetric(),
            4 => {
                let other = self.random.below(nodes as u64) as usize;
                self.faults.blocked[node][other] = node != other;
            }
            5 => self.faults.blocked = [[false; NODES_MAX]; NODES_MAX],
            6 | 7 => {
                let target = if self.random.chance(1, 2) {
                    self.leader_position().unwrap_or(node)
                } else {
                    node
                };
                self.crash_for_a_while(target)?;
            }
            8 => {
                let slow = self.random.between(10, 150);
                self.nodes[node].disk_latency_ms = (slow / 2, slow);
            }
            9 => self.nodes[node].disk_stalled_until = self.now + self.random.between(50, 800),
            10 => self.nodes[node].clock_offset_ms += self.random.between(20, 400),
            11 => {
                if let Some(leader) = self.leader_position() {
                    let to = NodeId(self.random.between(1, nodes as u64));
                    self.with_core(leader, |core, actions| {
                        let _ = core.transfer_leadership(to, actions);
                    })?;
                }
            }
            _ => {
                for state in &mut self.nodes {
                    state.disk_latency_ms = (1, 3);
                }
                self.faults.drop_percent = 0;
                self.faults.duplicate_percent = 0;
            }
        }
        Ok(())
    }

    // ------------------------------------------------------------------
    // Membership churn.

    /// One membership step at the current leader, through the core's rules:
    /// add a learner (a spare, or a removed node), promote a learner,
    /// remove a node (the leader too), replace a voter by a learner, or
    /// transfer leadership. A refused change is fine (that the core
    /// refuses is part of what runs); nothing is forced.
    fn churn(&mut self) -> Result<(), Violation> {
        let Some(leader) = self.leader_position() else {
            return Ok(());
        };
        let core = self.nodes[leader].core.as_ref().expect("leader is up");
        let membership = *core.membership();
        let members = membership.members();
        let pick = |random: &mut Random, ids: &[NodeId]| -> Option<NodeId> {
            (!ids.is_empty()).then(|| ids[random.below(ids.len() as u64) as usize])
        };
        let outside: Vec<NodeId> = self
            .nodes
            .iter()
            .map(|node| node.id)
            .filter(|id| !members.contains(*id))
            .collect();
        let learners = membership.learners.as_slice().to_vec();
        let voters = membership.voters.as_slice().to_vec();
        let change = match self.random.below(10) {
            0..=2 => match pick(&mut self.random, &outside) {
                Some(id) => Change::AddLearner(id),
                None => return Ok(()),
            },
            3..=4 => match pick(&mut self.random, &learners) {
                Some(id) => Change::Promote(id),
                None => return Ok(()),
            },
            // Removing a voter keeps at least three, so the nemesis (which
            // crashes one node at a time) still leaves a quorum most of
            // the time; a learner may always go.
            5..=6 => {
                let removable: Vec<NodeId> = if voters.len() > 3 {
                    members.as_slice().to_vec()
                } else {
                    learners.clone()
                };
                match pick(&mut self.random, &removable) {
                    Some(id) => Change::Remove(id),
                    None => return Ok(()),
                }
            }
            7..=8 => match (
                pick(&mut self.random, &learners),
                pick(&mut self.random, &voters),
            ) {
                (Some(add), Some(remove)) => Change::Replace { add, remove },
                _ => return Ok(()),
            },
            _ => {
                if let Some(to) = pick(&mut self.random, &voters) {
                    self.trace(|| format!("churn: transfer leadership to {to}"));
                    self.with_core(leader, |core, actions| {
                        let _ = core.transfer_leadership(to, actions);
                    })?;
                }
                return Ok(());
            }
        };
        let core = self.nodes[leader].core.as_ref().expect("leader is up");
        match core.plan_change(change) {
            Ok(next) => {
                self.trace(|| format!("churn: {change:?} → {next:?}"));
                self.propose_config(leader, next)
            }
            Err(error) => {
                self.trace(|| format!("churn: {change:?} refused: {error}"));
                if matches!(error, crate::raft::ChangeError::NotCaughtUp { .. }) {
                    self.promotions_refused += 1;
                }
                Ok(())
            }
        }
    }

    /// A leader whose joint configuration committed proposes leaving it.
    fn leave_joint_if_due(&mut self, node: usize) -> Result<(), Violation> {
        let due = self.nodes[node]
            .core
            .as_ref()
            .and_then(Core::leave_joint_due);
        match due {
            Some(membership) => {
                self.trace(|| format!("node {}: leave joint → {membership:?}", node + 1));
                self.propose_config(node, membership)
            }
            None => Ok(()),
        }
    }

    /// Proposes configuration `membership` at leader `node`.
    fn propose_config(&mut self, node: usize, membership: Membership) -> Result<(), Violation> {
        let mut actions = std::mem::take(&mut self.actions);
        actions.clear();
        let unstamped = SimBatch::config(Term::ZERO, LogIndex::ZERO, membership);
        let core = self.nodes[node].core.as_mut().expect("leader is up");
        let result = core.propose_membership(membership, unstamped.summary.bytes, &mut actions);
        let accepted = result.is_ok();
        let executed = match result {
            Ok((term, first_index)) => {
                self.trace(|| format!("node {}: config at {first_index}@{term}", node + 1));
                let mut batch = unstamped;
                crate::wire::BatchMut::parse(&mut batch.frame)
                    .expect("our own frame")
                    .stamp(term, first_index);
                batch.summary.term = term;
                batch.summary.first_index = first_index;
                self.execute(node, &actions, None, Some(&Rc::new(batch)))
            }
            Err(error) => {
                self.trace(|| format!("node {}: config refused: {error}", node + 1));
                self.execute(node, &actions, None, None)
            }
        };
        self.actions = actions;
        executed?;
        if accepted {
            self.proposed(node)?;
        }
        Ok(())
    }

    /// Notes the configuration entries that `node` just applied: the latest
    /// committed one decides which disks must hold the committed entries.
    fn note_committed_configs(&mut self, node: usize, from: LogIndex, up_to: LogIndex) {
        let latest = self.nodes[node]
            .disk
            .written()
            .batches
            .iter()
            .filter(|batch| batch.summary.first_index > from && batch.summary.first_index <= up_to)
            .filter_map(|batch| Some((batch.summary.first_index, batch.membership?)))
            .filter(|(index, _)| *index > self.config_committed.0)
            .collect::<Vec<_>>();
        if let Some(last) = latest.last() {
            self.membership_changes += latest.len() as u64;
            self.configs_committed.extend_from_slice(&latest);
            self.config_committed = *last;
            self.trace(|| format!("node {}: configuration committed {last:?}", node + 1));
        }
    }

    /// The configuration committed as of `index`: the latest committed
    /// configuration entry at or below it. Complete up to any applied
    /// index: whichever node applied an entry first noted the
    /// configurations up to it (a node that skipped entries by installing a
    /// snapshot got it from one that applied them).
    fn config_committed_at(&self, index: LogIndex) -> Membership {
        let after = self
            .configs_committed
            .partition_point(|(at, _)| *at <= index);
        self.configs_committed[after - 1].1
    }

    /// Crashes `node` and schedules its restart: half the time at once (a
    /// process restart, which races with elections), else after a while.
    fn crash_for_a_while(&mut self, node: usize) -> Result<(), Violation> {
        self.crash(node)?;
        let downtime = if self.random.chance(1, 2) {
            self.random.between(1, 40)
        } else {
            self.random.between(40, 800)
        };
        self.schedule(downtime, Event::Restart(node));
        Ok(())
    }

    /// Faults aimed at elections, the most delicate moments: a new leader
    /// is sometimes crashed before it replicates its first entries (which
    /// makes the figure 8 histories of Raft §5.4.2 common), and a node is
    /// sometimes restarted while a candidate collects votes.
    fn nemesis_on_role_change(&mut self, node: usize, role: Role) {
        if self.healed {
            return;
        }
        let life = self.nodes[node].life;
        match role {
            Role::Leader if self.random.chance(1, 3) => {
                let delay = self.random.between(1, 30);
                self.schedule(delay, Event::Crash { node, life });
            }
            Role::Candidate if self.random.chance(1, 4) => {
                let victim = self.random.below(self.nodes.len() as u64) as usize;
                let victim_life = self.nodes[victim].life;
                let delay = self.random.between(0, 5);
                self.schedule(
                    delay,
                    Event::Crash {
                        node: victim,
                        life: victim_life,
                    },
                );
            }
            _ => {}
        }
    }

    fn partition_symmetric(&mut self) {
        let nodes = self.nodes.len();
        let mut side = [false; NODES_MAX];
        for slot in side.iter_mut().take(nodes) {
            *slot = self.random.chance(1, 2);
        }
        for from in 0..nodes {
            for to in 0..nodes {
                self.faults.blocked[from][to] = side[from] != side[to];
            }
        }
    }

    fn leader_position(&self) -> Option<usize> {
        self.nodes
            .iter()
            .filter_map(|node| node.core.as_ref())
            .filter(|core| core.role() == Role::Leader)
            .max_by_key(|core| core.term())
            .map(|core| (core.id().get() - 1) as usize)
    }

    fn trace(&self, line: impl FnOnce() -> String) {
        if self.options.trace {
            eprintln!("{:>6} ms  {}", self.now, line());
        }
    }

    /// Traces every node's state.
    fn trace_nodes(&self) {
        if !self.options.trace {
            return;
        }
        for node in &self.nodes {
            let line = node.core.as_ref().map_or_else(
                || format!("node {}: down", node.id),
                |core| {
                    format!(
                        "node {}: {:?} term {} vote {} leader {} commit {} last {}@{} durable {} \
                         disk {} snapshot {} (stalled until {})",
                        node.id,
                        core.role(),
                        core.term(),
                        core.vote(),
                        core.leader(),
                        core.commit_index(),
                        core.log().last_index(),
                        core.log().last_term(),
                        core.log().durable_index(),
                        node.disk.durable().index(),
                        node.disk.written().snapshot_index(),
                        node.disk_stalled_until,
                    )
                },
            );
            self.trace(|| line);
        }
    }

    fn heal(&mut self) {
        self.trace(|| "heal".to_string());
        self.trace_nodes();
        self.healed = true;
        self.committed_before_heal = self.checker.committed_length().get();
        self.faults = Faults::calm();
        for node in 0..self.nodes.len() {
            self.nodes[node].disk_latency_ms = (1, 3);
            self.nodes[node].disk_stalled_until = 0;
            if self.nodes[node].core.is_none() {
                self.restart(node);
            }
        }
    }

    /// After the heal: note when a working leader exists, keep the probe
    /// appends submitted to it, note when they all committed.
    fn liveness_step(&mut self) -> Result<(), Violation> {
        let Some(leader) = self.leader_position() else {
            return Ok(());
        };
        let core = self.nodes[leader].core.as_ref().expect("leader is up");
        if core.log().term_at(core.commit_index()) != Some(core.term()) {
            return Ok(());
        }
        if self.leader_ms.is_none() {
            self.leader_ms = Some(self.now - self.heal_ms);
        }
        for probe in 0..PROBE_APPENDS {
            if self.probes[probe].is_none() {
                let first_value = self.next_value;
                self.next_value += 1;
                let operation = self.invoke(
                    u32::MAX,
                    Operation::Append {
                        first_value,
                        count: 1,
                    },
                );
                self.probes[probe] = Some(operation);
                self.submit(leader, operation)?;
            }
        }
        let done = self.probes.iter().all(|probe| {
            probe.is_some_and(|operation| {
                matches!(
                    self.checker.history[operation].outcome,
                    Outcome::Appended { .. }
                ) && self.checker.history[operation].completed_ms != u64::MAX
            })
        });
        if done {
            self.probes_done_ms = Some(self.now - self.heal_ms);
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), Violation> {
        if self.leader_ms.is_none() || self.probes_done_ms.is_none() {
            return Err(Violation {
                property: "liveness",
                detail: format!(
                    "{} ms after the heal: leader after {:?} ms, probes committed: {:?}",
                    self.options.liveness_bound_ms,
                    self.leader_ms,
                    self.probes
                        .iter()
                        .map(|probe| probe.map(|operation| self.checker.history[operation].outcome))
                        .collect::<Vec<_>>()
                ),
            });
        }
        self.check_committed_durable()?;
        self.checker.check_history()?;
        self.kv_verdict = crate::sim::kv::check(&self.kv_history)?;
        let exact = self
            .seed
            .is_multiple_of(self.options.exact_search_every.max(1));
        self.verdict = crate::sim::history::check_history(&self.checker, exact)?;
        Ok(())
    }
}

/// The session id of key-value client `client` (never 0: no session).
fn kv_session(client: u32) -> u64 {
    u64::from(client) + 1
}

/// An outgoing body (not an AppendEntries: those travel with their
/// batches) as the receiver steps it.
fn incoming_body(body: OutgoingBody) -> Body<'static> {
    assert!(
        !matches!(body, OutgoingBody::AppendEntries(_)),
        "appends travel with their batches"
    );
    body.incoming(&[], &[])
}
