//! The Raft state machine: inputs in, actions out, nothing else.
//!
//! Control flow lives in the public entry points (`step`, `tick`, `propose`,
//! `replicate`, `read_index`, `persisted`, ...); each ends in
//! `Core::finish`, which reports commit and role changes and checks the
//! output bound. `step` handles terms for every role (Raft §5.1, pre-vote
//! §9.6, leases §6.2), then dispatches by role to `step_leader`,
//! `step_candidate`, `step_follower`.
//!
//! The code is split the same way, one module per concern: `terms` (every
//! role), `follower`, `candidate`, `leader` and its ReadIndex rounds
//! (`reads`), `membership` and `snapshot`. `Core`, its state, its inputs
//! and the helpers every role uses stay here.
//!
//! # Damaged nodes
//!
//! Raft assumes an acknowledged entry stays on the acknowledging node's
//! disk. When recovery cuts bytes that may have been acknowledged (a bit
//! flip in the last record looks like a torn write), that fails, and the
//! node's vote could elect a leader that lacks a committed entry
//! ("Protocol-Aware Recovery", FAST 2018). So such a node restarts with
//! [`HardState::after_damage`] — the next term, no vote, the mark
//! `damaged_in`, the highest term its lost acknowledgements can be from,
//! and `acked_end`, the last entry of the log it may have acknowledged up
//! to (what its durable mark said). It still appends and acknowledges:
//! its acknowledgements are of entries it holds now.
//!
//! It still votes, but only for a candidate whose log is at least as up
//! to date as `acked_end` (and, as always, as its log now), and it
//! campaigns only once its own log is (its vote for itself passes the
//! same check). That is the vote its undamaged self would give, checked
//! against the log it had:
//!
//! ```text
//!  acked_end = (T, M)   every entry this node acknowledged is at an index
//!                       ≤ M of the log it had then, which ended at (T, M)
//!  Raft's vote check    needs only that the voter's log holds what it
//!                       acknowledged: compared with (T, M), a candidate
//!                       at least as up to date holds every committed
//!                       entry of that log (Raft §5.4.3, unchanged)
//!  repaired since       its log now is compared too: what it took after
//!                       the damage is checked as usual
//! ```
//!
//! So a cluster with a majority of damaged voters still elects a leader
//! when one holds what they acknowledged (and waits, electing none, when
//! no one does) — a damaged one too, once a leader's entries have brought
//! its log past that end (else two damaged nodes of three, whose logs are
//! ahead of the third's, would wait for good). A damaged node whose mark
//! was lost as well (`acked_end` unknown) grants no vote (nor pre-vote)
//! and never campaigns.
//!
//! The mark ends when the entry at this node's commit index (held here,
//! and committed) has a term after the mark, or a leader's snapshot of
//! such a term is installed. Why that is enough:
//!
//! ```text
//!  damaged_in = t     every lost acknowledgement was given in a term ≤ t
//!  term bump t → t+1  a leader of term ≤ t is answered with t+1 and steps
//!                     down: no leader counts a lost acknowledgement in a
//!                     later term (progress restarts with each leader)
//!  leader L, term > t elected by votes that each checked what the voter
//!                     acknowledged (above), so it holds every entry
//!                     committed in terms ≤ t, each below L's first entry
//!                     of its term
//!  committed (i, T>t) held here ⇒ by log matching this log equals L's up
//!                     to i, so it holds every entry committed in terms ≤ t
//! ```
//!
//! From then on its log is as good as any follower's: the mark is cleared
//! (persisted lazily: a node that is damaged a little longer is still
//! safe). It never elects a leader without an acknowledged entry.
//!
//! # A lost hard state
//!
//! The hard state is kept twice in its file, so one damaged copy costs
//! nothing. With both gone (or the file gone under a log that holds
//! entries) the node no longer knows its term and vote, and Raft's two
//! promises are at risk: it may vote a second time in a term it voted in,
//! and it may acknowledge a leader of a term below one it had already
//! moved past (whose majority counted on it refusing that leader). It
//! restarts with [`HardState::lost`] (mark [`TERM_UNKNOWN`]) and acts on no
//! message — no vote, no acknowledgement — until it has heard a message
//! from *every* other voter, asking each with a pre-vote request of term
//! 0 (which any node answers with its own term) every election timeout.
//! Then it takes the damage mark `bound`, the highest term heard or in its
//! log, and the term `bound + 1`, and goes on as a damaged node (above).
//! Why every voter:
//!
//! ```text
//!  term T this node knew  it learnt T from a message of T, whose sender
//!                         (a candidate or a leader) had made T durable
//!  terms never go down    that sender's term now is ≥ T, so the highest
//!                         term heard from every other voter is ≥ T
//!  bound ≥ every such T   every lost vote and every lost refusal was in a
//!                         term ≤ bound: the damaged node's rule applies
//! ```
//!
//! A majority would not do: a candidate that got this node's vote in T
//! and has not won yet knows T alone, and could still win with that vote.
//! So with one other voter down as well, the node waits for it.
//!
//! # A majority lost entries
//!
//! When the voters that acknowledged an entry were all damaged and lost
//! it, no log holds it and the damaged voters' votes elect no one: the
//! cluster would wait for good. A damaged node that may not campaign
//! tells the voters what it waits for (`RepairWait`, each election
//! timeout) and, having heard every voter's vote rule since the last
//! leader, tells when none could win and its entries are on no voter:
//! it emits [`Action::MajorityLost`] naming them, and the runtime stops
//! its copy of the log for an operator (module `lost`).

use crate::raft::action::TERM_UNKNOWN;

mod candidate;
mod follower;
mod leader;
mod lost;
mod membership;
mod reads;
mod snapshot;
mod terms;

use crate::constants::{
    ACTIONS_PER_STEP_MAX, APPEND_MESSAGE_BATCHES_MAX, APPEND_MESSAGE_BYTES_MAX, COALESCE_READY_MIN,
    ELECTION_TICKS, HEARTBEAT_TICKS, HELD_MESSAGES_MAX, INFLIGHT_BYTES_MAX, INFLIGHT_MESSAGES_MAX,
    PROMOTE_LAG_ENTRIES_MAX, READ_ROUNDS_INFLIGHT_MAX, READS_PENDING_MAX, TICK_MS,
};
use crate::raft::action::{Action, HardState, Role};
use crate::raft::log::{Boundary, Log, RunLimits};
use crate::raft::message::{Body, Message, Outgoing, OutgoingBody, RequestVote};
use crate::raft::progress::Progress;
use crate::raft::quorum::Membership;
use crate::random::Random;
use crate::types::{LogIndex, NodeId, Term};
use crate::wire::BatchKind;
use std::collections::VecDeque;

/// A known Raft bug the core can be told to have, so the simulator's
/// checkers can be shown to catch it. Test builds only.
#[cfg(feature = "planted-bugs")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlantedBug {
    /// Commit an entry of an earlier term once a majority holds it
    /// (Raft §5.4.2, figure 8), without an entry of the current term.
    CommitPreviousTermByCounting,
    /// Grant a vote without checking that the candidate's log is at least
    /// as up to date.
    VoteWithoutLogCheck,
    /// Acknowledge appended entries before they are durable.
    AcknowledgeBeforeDurable,
    /// Forget the vote of the current term on restart.
    ForgetVoteOnRestart,
    /// Vote while damaged as if nothing was lost: after a recovery that
    /// cut entries this node may have acknowledged, its vote checks only
    /// its cut log, not the end of what it may have acknowledged.
    VoteWhileDamaged,
    /// A node whose hard state was lost acts at once, from its log's last
    /// term with no vote, instead of first hearing every voter's term (see
    /// "A lost hard state").
    ActOnLostHardState,
    /// Not a core bug: the simulator's recovery cuts a damaged tail (entries
    /// this node may have acknowledged) without marking the node damaged,
    /// as a store that takes every damaged last record for a torn write.
    CutWithoutMark,
    /// Not a core bug: the simulator's key-value runtime applies every
    /// committed request without its session check, so a retried request
    /// that was already applied is applied again.
    DoubleApply,
}

/// How a core behaves; fixed for its life.
#[derive(Clone, Debug)]
pub struct Config {
    /// This node.
    pub id: NodeId,
    /// Base election timeout; each wait is drawn from `[base, 2 * base)`.
    pub timeout_ms_election: u64,
    /// Interval between a leader's heartbeats.
    pub interval_ms_heartbeat: u64,
    /// Run a pre-vote before a real election (§9.6), so a node that was
    /// partitioned away cannot disrupt a healthy leader when it rejoins.
    pub pre_vote: bool,
    /// A leader steps down when it has not heard from a quorum for an
    /// election timeout; voters ignore vote requests while they hear a leader.
    pub check_quorum: bool,
    /// Seed of the core's randomness (election timeouts).
    pub seed: u64,
    /// Messages in flight per peer.
    pub inflight_messages_max: usize,
    /// Bytes in flight per peer.
    pub inflight_bytes_max: u64,
    /// Batch bytes per AppendEntries (a single larger batch still goes).
    pub append_message_bytes_max: u64,
    /// Batches per AppendEntries.
    pub append_message_batches_max: usize,
    /// Largest lag, in entries, of a learner this leader promotes.
    pub promote_lag_entries_max: u64,
    /// Committed batches that must be ready before the log coalesces them
    /// into runs (see module `log`); at least this many, and at least as
    /// many as the uncommitted records each pass moves.
    pub coalesce_ready_min: usize,
    /// The planted bug, if any (test builds only).
    #[cfg(feature = "planted-bugs")]
    pub planted_bug: Option<PlantedBug>,
}

impl Config {
    /// The production configuration for node `id`.
    pub fn new(id: NodeId, seed: u64) -> Self {
        Self {
            id,
            timeout_ms_election: u64::from(ELECTION_TICKS) * TICK_MS,
            interval_ms_heartbeat: u64::from(HEARTBEAT_TICKS) * TICK_MS,
            pre_vote: true,
            check_quorum: true,
            seed,
            inflight_messages_max: INFLIGHT_MESSAGES_MAX,
            inflight_bytes_max: INFLIGHT_BYTES_MAX,
            append_message_bytes_max: APPEND_MESSAGE_BYTES_MAX,
            append_message_batches_max: APPEND_MESSAGE_BATCHES_MAX,
            promote_lag_entries_max: PROMOTE_LAG_ENTRIES_MAX,
            coalesce_ready_min: COALESCE_READY_MIN,
            #[cfg(feature = "planted-bugs")]
            planted_bug: None,
        }
    }

    /// How far the log coalesces old batches: runs that fit half of one
    /// AppendEntries (see module `log`).
    pub fn run_limits(&self) -> RunLimits {
        RunLimits::for_messages(
            self.append_message_batches_max,
            self.append_message_bytes_max.min(self.inflight_bytes_max),
            self.coalesce_ready_min,
        )
    }

    fn check(&self) {
        assert_ne!(self.id, NodeId::ZERO, "node id 0 means none");
        assert!(self.interval_ms_heartbeat > 0);
        assert!(self.interval_ms_heartbeat < self.timeout_ms_election);
        assert!(self.inflight_messages_max > 0 && self.inflight_bytes_max > 0);
        assert!((1..=APPEND_MESSAGE_BATCHES_MAX).contains(&self.append_message_batches_max));
        assert!(self.append_message_bytes_max > 0);
    }
}

/// What a node recovered from its storage at start.
#[derive(Clone, Copy, Debug)]
pub struct Restart<'a> {
    /// The durable hard state (all zero on first start).
    pub hard_state: HardState,
    /// Last index covered by the snapshot (zero: none).
    pub snapshot_index: LogIndex,
    /// Its term.
    pub snapshot_term: Term,
    /// The membership as of the snapshot and the recovered log.
    pub membership: Membership,
    /// The recovered batches after the snapshot, all durable (runs of them
    /// may come coalesced, see [`Boundary::try_merge`]).
    pub batches: &'a [Boundary],
    /// The current time.
    pub now_ms: u64,
}

/// Why a proposal was refused (nothing was appended).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// Not the leader; `leader` is the known one (zero: unknown).
    #[error("not the leader (leader: {leader})")]
    NotLeader {
        /// The known leader.
        leader: NodeId,
    },
    /// A leadership transfer is in progress.
    #[error("leadership transfer in progress")]
    Transferring,
    /// Too many uncommitted proposals (back-pressure).
    #[error("too many uncommitted proposals")]
    TooMany,
    /// An empty or oversized batch, or a kind the core reserves.
    #[error("invalid proposal")]
    Invalid,
}

/// What installing a leader's snapshot does to this node's log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotInstall {
    /// Nothing: the snapshot is not ahead of the commit index (or this
    /// node leads).
    Ignore,
    /// The log holds the snapshot's last entry (same index and term),
    /// durable: only the prefix up to it is dropped, the entries after it
    /// stay.
    KeepLog,
    /// The log is discarded and restarts after the snapshot.
    ResetLog,
}

/// Why a ReadIndex request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// Not the leader.
    #[error("not the leader (leader: {leader})")]
    NotLeader {
        /// The known leader.
        leader: NodeId,
    },
    /// Too many reads waiting.
    #[error("too many pending reads")]
    TooMany,
}

/// Why a leadership transfer was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    /// Not the leader.
    #[error("not the leader")]
    NotLeader,
    /// The target is not a voter of the configuration (or is this node).
    #[error("the target is not another voter")]
    NotVoter,
}

/// A peer of this node and the leader's progress towards it.
#[derive(Clone, Debug)]
struct Peer {
    id: NodeId,
    progress: Progress,
    /// Its answer in the current (pre-)election.
    vote: Option<bool>,
}

/// ReadIndex bookkeeping of a leader.
#[derive(Clone, Debug, Default)]
struct Reads {
    /// Last round started (heartbeats carry it). Monotonic for the core's
    /// life, so the runtime can key reads by round across terms.
    round_started: u64,
    /// Reads waiting for round `round_started + 1`.
    collecting: usize,
    /// Rounds started and not yet confirmed: (round, read index).
    rounds: VecDeque<(u64, LogIndex)>,
}

/// Which kind of campaign.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Campaign {
    PreVote,
    Vote,
    Transfer,
}

/// One node's Raft state machine. See the module docs.
#[derive(Clone, Debug)]
pub struct Core {
    config: Config,
    role: Role,
    term: Term,
    vote: NodeId,
    leader: NodeId,
    /// Term and vote last reported durable; messages wait while they differ.
    hard_state_durable: HardState,
    /// Nonzero: this node's storage lost entries it may have acknowledged
    /// in terms up to this one; it votes and campaigns only as
    /// `acked_end` allows, until repaired (see "Damaged nodes" below).
    damaged_in: Term,
    /// While damaged: the end of the log it may have acknowledged up to
    /// (`HardState::acked_end`); it votes only for logs at least as up to
    /// date. `None`: unknown, and it does not vote.
    acked_end: Option<(Term, LogIndex)>,
    log: Log,
    commit: LogIndex,
    membership: Membership,
    /// The committed configuration and the uncommitted config batches after
    /// it (the latest one in the log is in force, committed or not).
    membership_committed: Membership,
    /// Where `membership_committed` came from: its entry's index, or the
    /// snapshot's index when it came with the snapshot.
    membership_committed_at: LogIndex,
    memberships_uncommitted: Vec<(LogIndex, Membership)>,
    peers: Vec<Peer>,
    /// This node granted itself a (pre-)vote in the current campaign.
    self_granted: bool,
    random: Random,
    now_ms: u64,
    elapsed_ms_election: u64,
    elapsed_ms_heartbeat: u64,
    timeout_ms_election_randomized: u64,
    /// Follower: highest index verified equal to the leader's in this term.
    verified_index: LogIndex,
    /// Follower: highest match index acknowledged to the leader.
    acknowledged_index: LogIndex,
    held: Vec<Outgoing>,
    reads: Reads,
    transfer_to: NodeId,
    /// Leader: some proposal is not sent yet because no `replicate` (or
    /// tick) ran since it, or because the last one stopped at its per-call
    /// message bound for a peer that could take more.
    proposals_unsent: bool,
    /// While the hard state is lost ([`TERM_UNKNOWN`]): the highest term
    /// heard from each other node (see "A lost hard state").
    heard_while_lost: Vec<(NodeId, Term)>,
    /// While damaged: each other voter's vote rule, as heard since the
    /// last leader's message (see "A majority lost entries").
    heard_ends: Vec<lost::HeardEnd>,
    /// Election timeouts in a row at which no voter could be elected.
    lost_rounds: u32,
    /// `Action::MajorityLost` was emitted (once in a core's life).
    lost_reported: bool,
    /// What was last reported in `Apply` and `RoleChanged`.
    reported_commit: LogIndex,
    reported_role: (Role, Term, NodeId),
}

impl Core {
    /// A core starting from what storage recovered. It starts as a follower.
    pub fn new(config: Config, restart: &Restart<'_>) -> Self {
        config.check();
        let mut log = Log::new(restart.snapshot_index, restart.snapshot_term);
        log.set_run_limits(config.run_limits());
        for batch in restart.batches {
            log.append(*batch);
        }
        log.mark_all_durable();
        // Recovered entries may be coalesced before they commit: a
        // truncation into a run cuts it at a real boundary (module `log`).
        log.coalesce(log.last_index());
        let mut hard_state = restart.hard_state;
        hard_state.commit = LogIndex::ZERO;
        #[cfg(feature = "planted-bugs")]
        if config.planted_bug == Some(PlantedBug::ActOnLostHardState) && hard_state.is_lost() {
            hard_state.damaged_in = Term::ZERO;
        }
        #[cfg(feature = "planted-bugs")]
        if config.planted_bug == Some(PlantedBug::ForgetVoteOnRestart) {
            hard_state.vote = NodeId::ZERO;
        }
        let random = Random::new(config.seed ^ config.id.get().wrapping_mul(0x9e37_79b9));
        let mut core = Self {
            role: Role::Follower,
            term: hard_state.term,
            vote: hard_state.vote,
            leader: NodeId::ZERO,
            hard_state_durable: hard_state,
            damaged_in: hard_state.damaged_in,
            acked_end: hard_state.acked_end,
            log,
            // Commit restarts at the snapshot: a restarted node relearns it
            // from the leader (the hard state's commit is only a hint, and
            // storage may have kept it without an unsynced truncation).
            commit: restart.snapshot_index,
            membership: restart.membership,
            membership_committed: restart.membership,
            membership_committed_at: restart.snapshot_index,
            memberships_uncommitted: Vec::new(),
            peers: Vec::with_capacity(crate::constants::NODES_MAX),
            self_granted: false,
            random,
            now_ms: restart.now_ms,
            elapsed_ms_election: 0,
            elapsed_ms_heartbeat: 0,
            timeout_ms_election_randomized: config.timeout_ms_election,
            verified_index: LogIndex::ZERO,
            acknowledged_index: LogIndex::ZERO,
            held: Vec::with_capacity(HELD_MESSAGES_MAX),
            reads: Reads {
                rounds: VecDeque::with_capacity(READ_ROUNDS_INFLIGHT_MAX),
                ..Reads::default()
            },
            transfer_to: NodeId::ZERO,
            proposals_unsent: false,
            heard_while_lost: Vec::new(),
            heard_ends: Vec::new(),
            lost_rounds: 0,
            lost_reported: false,
            reported_commit: restart.snapshot_index,
            reported_role: (Role::Follower, hard_state.term, NodeId::ZERO),
            config,
        };
        core.rebuild_peers();
        core.reset_election_timer();
        core
    }

    // ------------------------------------------------------------------
    // Observers.

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.config.id
    }

    /// Current role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Current term.
    pub fn term(&self) -> Term {
        self.term
    }

    /// Vote in the current term (zero: none).
    pub fn vote(&self) -> NodeId {
        self.vote
    }

    /// Known leader (zero: none).
    pub fn leader(&self) -> NodeId {
        self.leader
    }

    /// Commit index.
    pub fn commit_index(&self) -> LogIndex {
        self.commit
    }

    /// The log's boundaries.
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// The configuration in force.
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// The current hard state.
    pub fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.commit,
            damaged_in: self.damaged_in,
            acked_end: self.acked_end,
        }
    }

    /// The leader's progress towards `id`.
    pub fn progress(&self, id: NodeId) -> Option<&Progress> {
        self.peer_position(id)
            .map(|position| &self.peers[position].progress)
    }

    /// The configuration (for tests and the simulator's planted bugs).
    pub fn config(&self) -> &Config {
        &self.config
    }

    // ------------------------------------------------------------------
    // Inputs.

    /// Time passes: `now_ms` is the current time (a clock that jumps back
    /// is treated as standing still; one that jumps forward fires timers
    /// once, not once per missed interval).
    pub fn tick(&mut self, now_ms: u64, actions: &mut Vec<Action>) {
        let start = actions.len();
        let elapsed = now_ms.saturating_sub(self.now_ms);
        self.now_ms = self.now_ms.max(now_ms);
        self.elapsed_ms_election = self.elapsed_ms_election.saturating_add(elapsed);
        self.elapsed_ms_heartbeat = self.elapsed_ms_heartbeat.saturating_add(elapsed);
        if self.role == Role::Leader {
            self.tick_leader(actions);
        } else if self.elapsed_ms_election >= self.timeout_ms_election_randomized {
            self.elapsed_ms_election = 0;
            if self.damaged_in == TERM_UNKNOWN {
                self.probe_terms(actions);
                self.rebuild_if_heard_all(actions);
            } else if self.promotable() {
                let campaign = if self.config.pre_vote {
                    Campaign::PreVote
                } else {
                    Campaign::Vote
                };
                self.campaign(campaign, actions);
            } else if !self.trusted() && self.membership.is_voter(self.config.id) {
                self.wait_for_repair(actions);
            }
        }
        self.finish(start, actions);
    }

    /// A message arrived.
    pub fn step(&mut self, message: &Message<'_>, actions: &mut Vec<Action>) {
        let start = actions.len();
        if message.to == self.config.id && message.from != self.config.id {
            if self.damaged_in == TERM_UNKNOWN {
                self.hear_while_lost(message.from, message.term, actions);
            } else {
                self.hear_end(message);
                // A waiting node's word changes nothing but what is heard.
                if !matches!(message.body, Body::RepairWait(_)) {
                    self.step_term(message, actions);
                }
            }
        }
        self.finish(start, actions);
    }

    /// Proposes a batch of `count` entries of `kind` taking `bytes` bytes.
    /// On success the core emits `AppendProposal` and returns the term and
    /// first index the caller stamps into the batch. Nothing is sent yet:
    /// the next [`Core::replicate`] sends the batch to the followers,
    /// together with every other batch proposed before it.
    pub fn propose(
        &mut self,
        kind: BatchKind,
        count: u32,
        bytes: u32,
        actions: &mut Vec<Action>,
    ) -> Result<(Term, LogIndex), ProposeError> {
        if matches!(kind, BatchKind::Noop | BatchKind::Config) {
            return Err(ProposeError::Invalid);
        }
        self.propose_batch(kind, count, bytes, None, actions)
    }

    /// Sends the followers the batches proposed since the last call: each
    /// peer gets what its state allows (its inflight window, the message
    /// byte and batch limits, at most `APPENDS_PER_PEER_PER_CALL_MAX`
    /// messages), so the proposals of one batch of inputs leave as one
    /// AppendEntries per peer instead of one each. Call it once after a
    /// batch of proposals: the server once per event-loop turn, after every
    /// input of the turn. Does nothing when nothing proposed is unsent, or
    /// when this node does not lead.
    ///
    /// Forgetting it costs latency, never liveness: the leader's next
    /// `tick` sends what is unsent, and each acknowledgement that opens a
    /// peer's window sends it more as always.
    pub fn replicate(&mut self, actions: &mut Vec<Action>) {
        let start = actions.len();
        if self.role == Role::Leader && self.proposals_unsent {
            self.replicate_unsent(actions);
        }
        self.finish(start, actions);
    }

    /// Asks for a linearizable read. Returns the round the read joined; an
    /// `Action::ReadReady` covering that round tells when and at which index
    /// to serve it.
    pub fn read_index(&mut self, actions: &mut Vec<Action>) -> Result<u64, ReadError> {
        if self.role != Role::Leader {
            return Err(ReadError::NotLeader {
                leader: self.leader,
            });
        }
        if self.reads.collecting >= READS_PENDING_MAX {
            return Err(ReadError::TooMany);
        }
        let start = actions.len();
        self.reads.collecting += 1;
        let round = self.reads.round_started + 1;
        if self.reads.rounds.is_empty() {
            self.start_read_round(actions);
        }
        self.finish(start, actions);
        Ok(round)
    }

    /// Storage made the log durable up to `up_to`, whose term was `term`.
    pub fn persisted(&mut self, up_to: LogIndex, term: Term, actions: &mut Vec<Action>) {
        let start = actions.len();
        if self.log.persisted(up_to, term) {
            match self.role {
                Role::Leader => {
                    if self.maybe_commit() {
                        self.after_commit(actions);
                    }
                }
                Role::Follower => self.acknowledge(actions),
                Role::PreCandidate | Role::Candidate => {}
            }
        }
        self.finish(start, actions);
    }

    /// Storage made `hard_state` durable. Releases the messages held for it.
    pub fn hard_state_persisted(&mut self, hard_state: HardState, actions: &mut Vec<Action>) {
        let start = actions.len();
        if hard_state.term >= self.hard_state_durable.term {
            self.hard_state_durable.term = hard_state.term;
            self.hard_state_durable.vote = hard_state.vote;
        }
        if !self.hard_state_pending() {
            let term = self.term;
            for message in self.held.drain(..) {
                if message.term >= term {
                    actions.push(Action::Send(message));
                }
            }
            if self.role == Role::Candidate {
                self.poll(actions);
            }
        }
        self.finish(start, actions);
    }

    /// Starts handing leadership to `to` (§3.10): stop accepting
    /// proposals, bring `to` up to date, then tell it to campaign at once.
    /// Abandoned after an election timeout.
    pub fn transfer_leadership(
        &mut self,
        to: NodeId,
        actions: &mut Vec<Action>,
    ) -> Result<(), TransferError> {
        if self.role != Role::Leader {
            return Err(TransferError::NotLeader);
        }
        let Some(position) = self.peer_position(to) else {
            return Err(TransferError::NotVoter);
        };
        if !self.membership.is_voter(to) {
            return Err(TransferError::NotVoter);
        }
        let start = actions.len();
        self.transfer_to = to;
        self.elapsed_ms_election = 0;
        let last = self.log.last_index();
        let progress = &mut self.peers[position].progress;
        if progress.match_index == last {
            self.send(to, OutgoingBody::TimeoutNow, actions);
        } else {
            // Whatever is in flight may be lost: resend from what matches,
            // so the transfer does not wait for stall detection.
            if progress.next_index > last {
                let next = progress.match_index.next();
                progress.become_probe(self.log.batch_start(next));
            }
            self.replicate_to(position, actions);
        }
        self.finish(start, actions);
        Ok(())
    }

    /// Starts an election now (admin, tests), if this node may.
    pub fn campaign_now(&mut self, actions: &mut Vec<Action>) {
        let start = actions.len();
        if self.role != Role::Leader && self.promotable() {
            self.campaign(Campaign::Vote, actions);
        }
        self.finish(start, actions);
    }

    // ------------------------------------------------------------------
    // Shared helpers.

    fn become_follower(&mut self, term: Term, leader: NodeId, actions: &mut Vec<Action>) {
        if self.role == Role::Leader {
            self.abort_reads(actions);
        }
        let new_term = term > self.term;
        if new_term {
            self.term = term;
            self.vote = NodeId::ZERO;
            self.persist_hard_state(actions);
        }
        if new_term || leader != self.leader {
            self.verified_index = LogIndex::ZERO;
            self.acknowledged_index = LogIndex::ZERO;
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.transfer_to = NodeId::ZERO;
        self.proposals_unsent = false;
        self.reset_election_timer();
    }

    /// Whether this node may campaign: a voter whose storage lost nothing
    /// it may have acknowledged (or that has been repaired since), or
    /// whose log is again at least as up to date as the end of what it
    /// may have acknowledged: its own vote passes the check every other
    /// voter's does (see "Damaged nodes").
    fn promotable(&self) -> bool {
        self.membership.is_voter(self.config.id)
            && self.covers_acked((self.log.last_term(), self.log.last_index()))
    }

    /// Whether this node may vote and campaign: false from a recovery that
    /// cut bytes it may have acknowledged ([`HardState::after_damage`])
    /// until it holds a committed entry of a later term.
    pub fn trusted(&self) -> bool {
        self.damaged_in == Term::ZERO
    }

    /// Whether a log ending at `last` (term, index) holds everything this
    /// node may have acknowledged: always when it is undamaged (its own
    /// log is checked beside), when damaged only if `last` is at least as
    /// up to date as the end it may have acknowledged up to (unknown:
    /// never). See "Damaged nodes".
    fn covers_acked(&self, last: (Term, LogIndex)) -> bool {
        self.trusted()
            || (self.damaged_in != TERM_UNKNOWN && self.acked_end.is_some_and(|end| last >= end))
    }

    /// Ends the damage once the entry at the commit index (held here and
    /// committed) is of a term after the damage; see "Damaged nodes".
    fn check_repaired(&mut self, actions: &mut Vec<Action>) {
        if self.damaged_in != Term::ZERO
            && self
                .log
                .term_at(self.commit)
                .is_some_and(|term| term > self.damaged_in)
        {
            self.damaged_in = Term::ZERO;
            self.acked_end = None;
            self.heard_ends.clear();
            self.lost_rounds = 0;
            self.persist_hard_state(actions);
        }
    }

    /// A lost hard state: asks every voter not heard yet for its term, with
    /// a pre-vote request of term 0 (refused, at the voter's term, by any
    /// node past term 0; it changes nothing there).
    fn probe_terms(&mut self, actions: &mut Vec<Action>) {
        let request = RequestVote {
            last_index: self.log.last_index(),
            last_term: self.log.last_term(),
            pre_vote: true,
            leadership_transfer: false,
        };
        for position in 0..self.peers.len() {
            let id = self.peers[position].id;
            if self.membership.is_voter(id)
                && !self.heard_while_lost.iter().any(|(heard, _)| *heard == id)
            {
                self.send_at(Term::ZERO, id, OutgoingBody::RequestVote(request), actions);
            }
        }
    }

    /// A lost hard state: notes the term of a message (which is otherwise
    /// not acted on); see "A lost hard state".
    fn hear_while_lost(&mut self, from: NodeId, term: Term, actions: &mut Vec<Action>) {
        match self.heard_while_lost.iter_mut().find(|(id, _)| *id == from) {
            Some((_, heard)) => *heard = (*heard).max(term),
            None => self.heard_while_lost.push((from, term)),
        }
        self.rebuild_if_heard_all(actions);
    }

    /// A lost hard state: once every other voter is heard (at once when
    /// there is none), rebuilds the hard state as a damaged node's.
    fn rebuild_if_heard_all(&mut self, actions: &mut Vec<Action>) {
        let id = self.config.id;
        let heard_all = self
            .membership
            .members()
            .as_slice()
            .iter()
            .filter(|node| **node != id && self.membership.is_voter(**node))
            .all(|node| self.heard_while_lost.iter().any(|(heard, _)| heard == node));
        if !heard_all {
            return;
        }
        let bound = self
            .heard_while_lost
            .iter()
            .map(|(_, term)| *term)
            .fold(self.term.max(self.log.last_term()), Term::max);
        self.heard_while_lost.clear();
        self.term = bound.next();
        self.vote = NodeId::ZERO;
        self.damaged_in = bound;
        self.acked_end = None;
        self.persist_hard_state(actions);
        self.reset_election_timer();
    }

    fn reset_election_timer(&mut self) {
        self.elapsed_ms_election = 0;
        let base = self.config.timeout_ms_election;
        self.timeout_ms_election_randomized = base + self.random.below(base);
    }

    fn advance_commit(&mut self, commit: LogIndex) {
        assert!(commit > self.commit, "commit only moves forward");
        assert!(commit <= self.log.last_index(), "commit only held entries");
        self.commit = commit;
        if self
            .memberships_uncommitted
            .first()
            .is_some_and(|(index, _)| *index <= commit)
        {
            let split = self
                .memberships_uncommitted
                .partition_point(|(index, _)| *index <= commit);
            (self.membership_committed_at, self.membership_committed) =
                self.memberships_uncommitted[split - 1];
            self.memberships_uncommitted.drain(..split);
        }
    }

    /// Asks storage for the current hard state. Consecutive requests
    /// coalesce: a newer hard state supersedes one not yet handed over.
    fn persist_hard_state(&mut self, actions: &mut Vec<Action>) {
        let hard_state = self.hard_state();
        match actions.last_mut() {
            Some(Action::PersistHardState(pending)) => *pending = hard_state,
            _ => actions.push(Action::PersistHardState(hard_state)),
        }
    }

    fn hard_state_pending(&self) -> bool {
        self.hard_state_durable.term != self.term || self.hard_state_durable.vote != self.vote
    }

    fn send(&mut self, to: NodeId, body: OutgoingBody, actions: &mut Vec<Action>) {
        self.send_at(self.term, to, body, actions);
    }

    /// Emits a message, or holds it while term or vote are not durable.
    fn send_at(&mut self, term: Term, to: NodeId, body: OutgoingBody, actions: &mut Vec<Action>) {
        if to == NodeId::ZERO {
            return;
        }
        let message = Outgoing {
            from: self.config.id,
            to,
            term,
            body,
        };
        if !self.hard_state_pending() {
            actions.push(Action::Send(message));
        } else if self.held.len() < HELD_MESSAGES_MAX {
            self.held.push(message);
        }
    }

    fn peer_position(&self, id: NodeId) -> Option<usize> {
        self.peers.iter().position(|peer| peer.id == id)
    }

    /// Ends every input: report commit and role changes, check the bound.
    fn finish(&mut self, start: usize, actions: &mut Vec<Action>) {
        if self.commit > self.reported_commit {
            self.reported_commit = self.commit;
            actions.push(Action::Apply { up_to: self.commit });
            self.log.coalesce(self.commit);
        }
        let role = (self.role, self.term, self.leader);
        if role != self.reported_role {
            self.reported_role = role;
            actions.push(Action::RoleChanged {
                role: self.role,
                term: self.term,
                leader: self.leader,
            });
        }
        assert!(
            actions.len() - start <= ACTIONS_PER_STEP_MAX,
            "one call emitted {} actions",
            actions.len() - start
        );
        if cfg!(debug_assertions) {
            self.check();
        }
    }

    /// Asserts the core's invariants (cheap ones always, in debug builds
    /// after every input).
    pub fn check(&self) {
        assert!(self.commit <= self.log.last_index());
        assert!(self.commit >= self.log.snapshot_index());
        assert!(self.held.len() <= HELD_MESSAGES_MAX);
        if self.role == Role::Leader {
            assert_eq!(self.leader, self.config.id);
            assert!(!self.hard_state_pending(), "a leader's term is durable");
            for peer in &self.peers {
                peer.progress.check();
            }
        }
        if self.role == Role::Candidate {
            assert_eq!(self.vote, self.config.id);
        }
    }
}
