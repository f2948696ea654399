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
//! Storage damage (`Options::damage`): now and then a crashed node restarts
//! having lost its last durable batches, acknowledged ones included, with
//! the damage mark of `HardState::after_damage` — one damaged node at a
//! time, the fault model a Raft cluster with repair can survive, and now
//! and then a second one while an undamaged voter holds what both
//! acknowledged (then the damaged voters' votes elect it). The checkers
//! then show that the core's rules (no campaign until repaired, votes
//! only for logs that cover what the voter acknowledged) keep every
//! committed entry. In a tenth of those seeds the second damage may go
//! past what can be survived: then the nodes must say that a majority lost
//! entries, and only when it is true (module `lost`).
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
//!
//! The run is one `Simulation`, its event loop here; its parts are modules
//! of their own: `nodes` (the runtime around each core), `clients` and
//! `kv_clients` (the two workloads and their histories), `nemesis` (faults,
//! heal, liveness), `churn` (membership changes) and `snapshots`.

mod churn;
mod clients;
mod kv_clients;
mod lost;
mod nemesis;
mod nodes;
mod snapshots;

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};

use crate::check::linearizable::KvOp;
use crate::constants::NODES_MAX;
use crate::kv::StateMachine;
use crate::raft::{Action, Core, Membership, OutgoingBody, Role, SnapshotResponse};
use crate::random::Random;
use crate::sim::checker::{Checker, HistoryEntry, Outcome, Violation};
use crate::sim::disk::{BatchRef, SimDisk};
use crate::sim::kv::{KvEntry, KvOutcome};
use crate::sim::snapshot::{Chunk, Receiving, Sending};
use crate::types::{LogIndex, NodeId, Term};

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
    /// `TURN_MS_MAX` later; the proposals of the turn leave together.
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
    /// Storage damage: now and then a crashed node restarts having lost
    /// its last durable batches, acknowledged ones included (what recovery
    /// cutting a damaged final record does), with the damage mark of
    /// `HardState::after_damage`; at most one damaged node at a time,
    /// but for a second one now and then when an undamaged voter holds
    /// what both acknowledged (without `churn`).
    pub damage: bool,
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
            damage: true,
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
    /// Of the restarts, those with storage damage (`Options::damage`).
    pub damaged_restarts: u64,
    /// Of the restarts, those that lost the hard state (`Options::damage`).
    pub lost_hard_states: u64,
    /// Of the restarts, those that lost their snapshot, and with it the
    /// log after it (`Options::damage`).
    pub lost_snapshots: u64,
    /// Of the damaged restarts, those while another node was damaged
    /// too (`Options::damage`).
    pub second_damages: u64,
    /// Times a node said a majority lost entries it had acknowledged (in
    /// majority-loss seeds; each was checked true).
    pub majority_losses: u64,
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
    /// The damage its storage takes at its next restart.
    damage_on_restart: Damage,
}

/// Damage a node's storage takes at its next restart (one kind at a
/// time; see `Cluster::maybe_damage`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Damage {
    #[default]
    None,
    /// Its last this many durable batches.
    Batches(usize),
    /// Its last this many durable batches, while another node is damaged
    /// already: done only if an undamaged voter holds what every damaged
    /// node acknowledged (see `Simulation::second_damage_recoverable`).
    AlsoBatches(usize),
    /// Its snapshot, and with it the log after it.
    Snapshot,
    /// Its whole hard state.
    HardState,
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
            damage_on_restart: Damage::None,
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
    /// Draws of the damage fault, apart from `random` so that turning it
    /// off leaves every other draw of a seed as it was.
    damage_random: Random,
    /// Damaged restarts injected.
    damaged_restarts: u64,
    /// Restarts that lost the hard state.
    lost_hard_states: u64,
    /// Restarts that lost the snapshot.
    lost_snapshots: u64,
    /// Damaged restarts while another node was damaged.
    second_damages: u64,
    /// A majority-loss seed: a second damaged node also where no undamaged
    /// voter holds what the damaged ones acknowledged (module `lost`).
    lose_majority: bool,
    /// `Action::MajorityLost` said, each true when said.
    majority_losses: u64,
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
            damage_random: Random::new(seed ^ 0xda3a_9e00),
            damaged_restarts: 0,
            lost_hard_states: 0,
            lost_snapshots: 0,
            second_damages: 0,
            // A tenth of the damage seeds, from a stream of its own.
            lose_majority: options.damage
                && !options.churn
                && Random::new(seed ^ 0x1057_3a10).chance(1, 10),
            majority_losses: 0,
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
            damaged_restarts: self.damaged_restarts,
            lost_hard_states: self.lost_hard_states,
            lost_snapshots: self.lost_snapshots,
            second_damages: self.second_damages,
            majority_losses: self.majority_losses,
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
    // Helpers every part uses.

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
                         disk {} snapshot {} (stalled until {}){}",
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
                        if core.trusted() {
                            String::new()
                        } else {
                            format!(
                                " damaged in {} acked end {:?}",
                                core.hard_state().damaged_in,
                                core.hard_state().acked_end
                            )
                        },
                    )
                },
            );
            self.trace(|| line);
        }
    }
}
