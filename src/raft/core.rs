//! The Raft state machine: inputs in, actions out, nothing else.
//!
//! Control flow lives in the public entry points (`step`, `tick`, `propose`,
//! `replicate`, `read_index`, `persisted`, ...); each ends in
//! [`Core::finish`], which reports commit and role changes and checks the
//! output bound. `step` handles terms for every role (Raft §5.1, pre-vote
//! §9.6, leases §6.2), then dispatches by role to `step_leader`,
//! `step_candidate`, `step_follower`.

use crate::constants::{
    ACTIONS_PER_STEP_MAX, APPEND_MESSAGE_BATCHES_MAX, APPEND_MESSAGE_BYTES_MAX,
    APPENDS_PER_PEER_PER_CALL_MAX, BATCH_ENTRIES_MAX, COALESCE_READY_MIN, ELECTION_TICKS,
    HEARTBEAT_TICKS, HELD_MESSAGES_MAX, INFLIGHT_BYTES_MAX, INFLIGHT_MESSAGES_MAX,
    NOOP_BATCH_BYTES, PROGRESS_STALL_HEARTBEATS, PROMOTE_LAG_ENTRIES_MAX, PROPOSALS_PENDING_MAX,
    READ_ROUNDS_INFLIGHT_MAX, READS_PENDING_MAX, TICK_MS,
};
use crate::raft::action::{Action, HardState, Role};
use crate::raft::change::{self, Change, ChangeError};
use crate::raft::inflights::Inflights;
use crate::raft::log::{Boundary, Log, RunLimits};
use crate::raft::message::{
    AppendEntries, AppendRange, AppendResponse, Body, Heartbeat, HeartbeatResponse, Message,
    Outgoing, OutgoingBody, RequestVote, VoteResponse,
};
use crate::raft::progress::{Progress, ProgressState};
use crate::raft::quorum::{Membership, VoteResult};
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
            if self.promotable() {
                let campaign = if self.config.pre_vote {
                    Campaign::PreVote
                } else {
                    Campaign::Vote
                };
                self.campaign(campaign, actions);
            }
        }
        self.finish(start, actions);
    }

    /// A message arrived.
    pub fn step(&mut self, message: &Message<'_>, actions: &mut Vec<Action>) {
        let start = actions.len();
        if message.to == self.config.id && message.from != self.config.id {
            self.step_term(message, actions);
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

    /// The configuration a membership `change` leads to from the one in
    /// force, if this leader may start it now (see [`change`] for the
    /// rules). Nothing is proposed: the runtime encodes the result (with
    /// addresses) and hands it to [`Core::propose_membership`].
    pub fn plan_change(&self, change: Change) -> Result<Membership, ChangeError> {
        self.check_change_allowed()?;
        let last_index = self.log.last_index();
        let lag_max = self.config.promote_lag_entries_max;
        change::next(&self.membership, change, last_index, lag_max, |id| {
            self.progress(id)
                .map_or(LogIndex::ZERO, |progress| progress.match_index)
        })
    }

    /// Proposes a configuration batch (kind `config`) whose decoded content
    /// is `membership`. It is in force as soon as it is appended (Raft
    /// §4.1). Refused unless it is one allowed step from the configuration
    /// in force (entering or leaving a joint configuration, or a learner
    /// change) and no other configuration entry is uncommitted. Like
    /// [`Core::propose`], it is sent by the next [`Core::replicate`].
    pub fn propose_membership(
        &mut self,
        membership: Membership,
        bytes: u32,
        actions: &mut Vec<Action>,
    ) -> Result<(Term, LogIndex), ChangeError> {
        self.check_change_allowed()?;
        change::check_transition(&self.membership, &membership)?;
        Ok(self.propose_batch(BatchKind::Config, 1, bytes, Some(membership), actions)?)
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

    /// The configuration that ends the joint configuration in force, when
    /// this leader should propose it now: the joint entry has committed and
    /// nothing else is pending. The runtime proposes it with
    /// [`Core::propose_membership`] after each input that may commit (and
    /// on ticks, in case a proposal was refused by back-pressure).
    pub fn leave_joint_due(&self) -> Option<Membership> {
        if self.role != Role::Leader
            || self.transfer_to != NodeId::ZERO
            || !self.memberships_uncommitted.is_empty()
        {
            return None;
        }
        change::leave_joint(&self.membership_committed)
    }

    /// The latest committed configuration (the one in force may be newer).
    pub fn membership_committed(&self) -> &Membership {
        &self.membership_committed
    }

    /// The configuration as of the committed `index` (what a snapshot up to
    /// `index` records), when the core still knows it: `None` for an index
    /// above the commit index, or below the latest committed configuration
    /// entry (an older configuration is forgotten once a newer commits), or
    /// while no configuration is known at all. The last is a node started
    /// outside every configuration (empty, no voter): before the entry that
    /// added it commits, the configuration as of its commit index is in no
    /// entry it holds, and a committed configuration always has voters.
    pub fn membership_at(&self, index: LogIndex) -> Option<Membership> {
        (index <= self.commit
            && index >= self.membership_committed_at
            && !self.membership_committed.voters.is_empty())
        .then_some(self.membership_committed)
    }

    /// Whether a configuration entry is in the log but not committed yet.
    pub fn membership_pending(&self) -> bool {
        !self.memberships_uncommitted.is_empty()
    }

    /// Tells a core just built by [`Core::new`] which recovered batches are
    /// configuration entries: `(first index, membership)` in index order,
    /// all above the snapshot. `Restart::membership` is then the committed
    /// configuration as of the snapshot, and the latest of these is in
    /// force; each becomes committed when the commit index passes it.
    pub fn restore_configs(&mut self, configs: &[(LogIndex, Membership)]) {
        assert!(
            self.memberships_uncommitted.is_empty(),
            "configs are restored once, before any input"
        );
        let mut previous = self.log.snapshot_index();
        for (index, _) in configs {
            assert!(
                *index > previous && *index <= self.log.last_index(),
                "recovered config at {index} out of order or outside the log"
            );
            previous = *index;
        }
        self.memberships_uncommitted.extend_from_slice(configs);
        self.restore_membership();
    }

    fn check_change_allowed(&self) -> Result<(), ChangeError> {
        if self.role != Role::Leader {
            return Err(ChangeError::NotLeader {
                leader: self.leader,
            });
        }
        if self.transfer_to != NodeId::ZERO {
            return Err(ChangeError::Transferring);
        }
        if !self.memberships_uncommitted.is_empty() {
            return Err(ChangeError::InProgress);
        }
        Ok(())
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

    /// The runtime finished (or gave up) streaming a snapshot to `to`.
    pub fn snapshot_sent(&mut self, to: NodeId, success: bool, actions: &mut Vec<Action>) {
        let start = actions.len();
        if self.role == Role::Leader
            && let Some(position) = self.peer_position(to)
        {
            let progress = &mut self.peers[position].progress;
            if let ProgressState::Snapshot { pending } = progress.state {
                let next = if success {
                    pending.next()
                } else {
                    progress.match_index.next()
                };
                progress.become_probe(next);
                self.replicate_to(position, actions);
            }
        }
        self.finish(start, actions);
    }

    /// How a snapshot up to `index` (of `term`) received from the leader
    /// would be installed now; the runtime asks before it touches its disk
    /// and then calls [`Self::snapshot_installed`].
    pub fn snapshot_install(&self, index: LogIndex, term: Term) -> SnapshotInstall {
        if index <= self.commit || self.role == Role::Leader {
            SnapshotInstall::Ignore
        } else if self.log.term_at(index) == Some(term)
            && index <= self.log.durable_index()
            && self.log.is_batch_end(index)
        {
            SnapshotInstall::KeepLog
        } else {
            SnapshotInstall::ResetLog
        }
    }

    /// The runtime installed a snapshot up to `index` (of `term`) received
    /// from the leader, as [`Self::snapshot_install`] said. Ignored unless
    /// it is ahead of the commit index: a snapshot never moves commit
    /// backwards.
    pub fn snapshot_installed(
        &mut self,
        index: LogIndex,
        term: Term,
        membership: Membership,
        actions: &mut Vec<Action>,
    ) {
        let start = actions.len();
        match self.snapshot_install(index, term) {
            SnapshotInstall::Ignore => {}
            SnapshotInstall::KeepLog => {
                // Raft §7: the entries after a matching snapshot point stay
                // (this node may have acknowledged them).
                self.commit = index;
                self.log.compact(index);
                self.memberships_uncommitted.retain(|(at, _)| *at > index);
                self.installed(index, membership, actions);
            }
            SnapshotInstall::ResetLog => {
                // Nothing after `index` can have been acknowledged to this
                // leader: it matched nothing past its snapshot point.
                self.log.reset_to_snapshot(index, term);
                self.commit = index;
                self.memberships_uncommitted.clear();
                self.installed(index, membership, actions);
            }
        }
        self.finish(start, actions);
    }

    fn installed(&mut self, index: LogIndex, membership: Membership, actions: &mut Vec<Action>) {
        // The runtime installed the state up to `index` itself: no `Apply`
        // covers those entries (it would apply them twice).
        self.reported_commit = index;
        self.verified_index = self.verified_index.max(index);
        self.membership_committed = membership;
        self.membership_committed_at = index;
        self.restore_membership();
        self.acknowledge(actions);
    }

    /// Forgets the log up to `index` (a batch end at or below the commit and
    /// durable indexes), now covered by a snapshot.
    pub fn compact(&mut self, index: LogIndex) {
        assert!(index <= self.commit, "compact only committed entries");
        self.log.compact(index);
    }

    // ------------------------------------------------------------------
    // Terms: shared by every role.

    fn step_term(&mut self, message: &Message<'_>, actions: &mut Vec<Action>) {
        if message.term > self.term {
            match message.body {
                Body::RequestVote(request) => {
                    let in_lease = self.config.check_quorum
                        && self.leader != NodeId::ZERO
                        && self.elapsed_ms_election < self.config.timeout_ms_election;
                    if in_lease && !request.leadership_transfer {
                        return; // a leader is alive: no disruption (§6.2)
                    }
                    if !request.pre_vote {
                        self.become_follower(message.term, NodeId::ZERO, actions);
                    }
                }
                Body::VoteResponse(VoteResponse {
                    pre_vote: true,
                    granted: true,
                }) => {}
                Body::AppendEntries(_) | Body::Heartbeat(_) | Body::InstallSnapshot(_) => {
                    self.become_follower(message.term, message.from, actions);
                }
                _ => self.become_follower(message.term, NodeId::ZERO, actions),
            }
        } else if message.term < self.term {
            self.step_stale(message, actions);
            return;
        }
        if let Body::RequestVote(request) = message.body {
            self.step_request_vote(message.from, message.term, request, actions);
            return;
        }
        match self.role {
            Role::Leader => self.step_leader(message, actions),
            Role::PreCandidate | Role::Candidate => self.step_candidate(message, actions),
            Role::Follower => self.step_follower(message, actions),
        }
    }

    /// A message from an older term: never acted on. A stale leader is told
    /// the newer term (else, with pre-vote or check-quorum, it might never
    /// learn it); a stale pre-candidate is refused.
    fn step_stale(&mut self, message: &Message<'_>, actions: &mut Vec<Action>) {
        match message.body {
            Body::AppendEntries(_) | Body::Heartbeat(_)
                if self.config.check_quorum || self.config.pre_vote =>
            {
                let response = AppendResponse {
                    last_index: self.log.last_index(),
                    ..AppendResponse::default()
                };
                self.send(
                    message.from,
                    OutgoingBody::AppendResponse(response),
                    actions,
                );
            }
            Body::RequestVote(RequestVote { pre_vote: true, .. }) => {
                let response = VoteResponse {
                    granted: false,
                    pre_vote: true,
                };
                self.send(message.from, OutgoingBody::VoteResponse(response), actions);
            }
            _ => {}
        }
    }

    fn step_request_vote(
        &mut self,
        from: NodeId,
        term: Term,
        request: RequestVote,
        actions: &mut Vec<Action>,
    ) {
        let can_vote = self.vote == from
            || (self.vote == NodeId::ZERO && self.leader == NodeId::ZERO)
            || (request.pre_vote && term > self.term);
        let up_to_date = (request.last_term, request.last_index)
            >= (self.log.last_term(), self.log.last_index());
        #[cfg(feature = "planted-bugs")]
        let up_to_date =
            up_to_date || self.config.planted_bug == Some(PlantedBug::VoteWithoutLogCheck);
        let granted = can_vote && up_to_date;
        let response = VoteResponse {
            granted,
            pre_vote: request.pre_vote,
        };
        if granted && request.pre_vote {
            // Answer at the candidate's future term; change nothing here.
            self.send_at(term, from, OutgoingBody::VoteResponse(response), actions);
        } else {
            if granted {
                self.vote = from;
                self.reset_election_timer();
                self.persist_hard_state(actions);
            }
            self.send(from, OutgoingBody::VoteResponse(response), actions);
        }
    }

    // ------------------------------------------------------------------
    // Roles.

    fn step_leader(&mut self, message: &Message<'_>, actions: &mut Vec<Action>) {
        let Some(position) = self.peer_position(message.from) else {
            return;
        };
        match message.body {
            Body::AppendResponse(response) => {
                self.peers[position].progress.recent_active = true;
                if response.success {
                    self.leader_append_accepted(position, response, actions);
                } else {
                    self.leader_append_rejected(position, response, actions);
                }
            }
            Body::HeartbeatResponse(response) => {
                self.leader_heartbeat_response(position, response, actions);
            }
            Body::SnapshotResponse(_) => self.peers[position].progress.recent_active = true,
            // Another leader in our term cannot exist; votes are late.
            _ => {}
        }
    }

    fn step_candidate(&mut self, message: &Message<'_>, actions: &mut Vec<Action>) {
        match message.body {
            Body::VoteResponse(response) => {
                let pre_vote = self.role == Role::PreCandidate;
                let expected_term = if pre_vote && response.granted {
                    self.term.next()
                } else {
                    self.term
                };
                if response.pre_vote != pre_vote || message.term != expected_term {
                    return;
                }
                if let Some(position) = self.peer_position(message.from) {
                    self.peers[position].vote = Some(response.granted);
                    self.poll(actions);
                }
            }
            Body::AppendEntries(_) | Body::Heartbeat(_) | Body::InstallSnapshot(_) => {
                self.become_follower(message.term, message.from, actions);
                self.step_follower(message, actions);
            }
            _ => {}
        }
    }

    fn step_follower(&mut self, message: &Message<'_>, actions: &mut Vec<Action>) {
        match message.body {
            Body::AppendEntries(append) => {
                self.heard_from_leader(message.from, actions);
                self.follower_append(message.term, &append, actions);
            }
            Body::Heartbeat(heartbeat) => {
                self.heard_from_leader(message.from, actions);
                self.follower_heartbeat(heartbeat, actions);
            }
            Body::InstallSnapshot(_) => self.heard_from_leader(message.from, actions),
            Body::TimeoutNow if self.promotable() => {
                self.campaign(Campaign::Transfer, actions);
            }
            _ => {}
        }
    }

    // ------------------------------------------------------------------
    // Follower.

    fn heard_from_leader(&mut self, from: NodeId, actions: &mut Vec<Action>) {
        self.elapsed_ms_election = 0;
        if self.leader != from {
            self.become_follower(self.term, from, actions);
        }
    }

    /// The index this follower may acknowledge: durable, and verified equal
    /// to the leader's log in this term.
    fn acknowledgeable(&self) -> LogIndex {
        #[cfg(feature = "planted-bugs")]
        if self.config.planted_bug == Some(PlantedBug::AcknowledgeBeforeDurable) {
            return self.verified_index;
        }
        self.log.durable_index().min(self.verified_index)
    }

    /// Sends an acknowledgement if more became acknowledgeable.
    fn acknowledge(&mut self, actions: &mut Vec<Action>) {
        let match_index = self.acknowledgeable();
        if self.role != Role::Follower
            || self.leader == NodeId::ZERO
            || match_index <= self.acknowledged_index
        {
            return;
        }
        self.acknowledged_index = match_index;
        let response = AppendResponse {
            success: true,
            match_index,
            last_index: self.verified_index,
            ..AppendResponse::default()
        };
        self.send(self.leader, OutgoingBody::AppendResponse(response), actions);
    }

    fn follower_append(
        &mut self,
        term: Term,
        append: &AppendEntries<'_>,
        actions: &mut Vec<Action>,
    ) {
        if !append_is_well_formed(term, append) {
            return; // outside bytes never panic the core: drop it
        }
        let prev_matches = append.prev_index < self.log.first_index().prev()
            || self.log.term_at(append.prev_index) == Some(append.prev_term);
        if !prev_matches {
            let (hint_index, hint_term) = if append.prev_index > self.log.last_index() {
                (self.log.last_index(), self.log.last_term())
            } else {
                self.log
                    .find_conflict_by_term(append.prev_index, append.prev_term)
            };
            let response = AppendResponse {
                success: false,
                rejected_index: append.prev_index,
                hint_index,
                hint_term,
                last_index: self.log.last_index(),
                ..AppendResponse::default()
            };
            self.send(self.leader, OutgoingBody::AppendResponse(response), actions);
            return;
        }
        if !self.follower_store(append, actions) {
            return; // a leader's batches that do not fit our log: dropped
        }
        let last = append.last_index();
        self.verified_index = self.verified_index.max(last).min(self.log.last_index());
        let commit = append.leader_commit.min(last);
        if commit > self.commit {
            self.advance_commit(commit);
        }
        let match_index = self.acknowledgeable();
        self.acknowledged_index = self.acknowledged_index.max(match_index);
        let response = AppendResponse {
            success: true,
            match_index,
            last_index: self.verified_index,
            ..AppendResponse::default()
        };
        self.send(self.leader, OutgoingBody::AppendResponse(response), actions);
    }

    /// Stores the batches of an accepted AppendEntries that are not already
    /// present, truncating a conflicting suffix first. Whole batches only.
    /// Returns false, changing nothing, when the batches cannot come from
    /// an honest leader: a conflict at or below the commit index or inside
    /// one of our batches, or a batch across our last entry or snapshot
    /// (outside bytes never panic the core).
    fn follower_store(&mut self, append: &AppendEntries<'_>, actions: &mut Vec<Action>) -> bool {
        let mut skip = 0usize;
        let mut conflict = None;
        for batch in append.batches {
            if batch.last_index() <= self.log.snapshot_index() {
                skip += 1;
                continue;
            }
            match self.log.term_at(batch.first_index) {
                Some(term) if term == batch.term => {
                    // Equal (index, term) means the same batch (inside a
                    // run its bounds are not known here).
                    let same = self.log.batch_at(batch.first_index).is_some_and(|stored| {
                        stored.is_run()
                            || (stored.first_index == batch.first_index
                                && stored.count == batch.count)
                    });
                    if !same {
                        return false;
                    }
                    skip += 1;
                }
                Some(_) => {
                    conflict = Some(batch.first_index);
                    break;
                }
                None => break,
            }
        }
        let honest = match conflict {
            Some(from) => {
                from > self.commit
                    && from > self.log.snapshot_index()
                    && self.log.is_batch_start(from)
            }
            None => append
                .batches
                .get(skip)
                .is_none_or(|first| first.first_index == self.log.last_index().next()),
        };
        if !honest {
            return false;
        }
        if let Some(from) = conflict {
            self.log.truncate_from(from);
            self.memberships_uncommitted
                .retain(|(index, _)| *index < from);
            self.restore_membership();
            actions.push(Action::Truncate { from });
        }
        let Some(first) = append.batches.get(skip) else {
            return true;
        };
        let mut configs = append.configs.iter();
        for (position, batch) in append.batches.iter().enumerate() {
            let config = (batch.kind == BatchKind::Config).then(|| configs.next());
            if position < skip {
                continue;
            }
            self.log.append(Boundary::from(batch));
            if let Some(Some(membership)) = config {
                self.memberships_uncommitted
                    .push((batch.first_index, *membership));
                self.set_membership(*membership);
            }
        }
        actions.push(Action::AppendReceived {
            skip: skip as u32,
            first_index: first.first_index,
            last_index: append.last_index(),
        });
        true
    }

    fn follower_heartbeat(&mut self, heartbeat: Heartbeat, actions: &mut Vec<Action>) {
        // The leader caps the commit at what this node matches.
        let commit = heartbeat.leader_commit.min(self.log.last_index());
        if commit > self.commit {
            self.advance_commit(commit);
        }
        let response = HeartbeatResponse {
            read_round: heartbeat.read_round,
            match_index: self.acknowledgeable(),
        };
        self.send(
            self.leader,
            OutgoingBody::HeartbeatResponse(response),
            actions,
        );
    }

    // ------------------------------------------------------------------
    // Candidate.

    fn campaign(&mut self, campaign: Campaign, actions: &mut Vec<Action>) {
        for peer in &mut self.peers {
            peer.vote = None;
        }
        self.self_granted = true;
        let request_term = if campaign == Campaign::PreVote {
            self.role = Role::PreCandidate;
            self.leader = NodeId::ZERO;
            self.reset_election_timer();
            self.term.next()
        } else {
            self.term = self.term.next();
            self.vote = self.config.id;
            self.role = Role::Candidate;
            self.leader = NodeId::ZERO;
            self.verified_index = LogIndex::ZERO;
            self.acknowledged_index = LogIndex::ZERO;
            self.reset_election_timer();
            self.persist_hard_state(actions);
            self.term
        };
        let request = RequestVote {
            last_index: self.log.last_index(),
            last_term: self.log.last_term(),
            pre_vote: campaign == Campaign::PreVote,
            leadership_transfer: campaign == Campaign::Transfer,
        };
        for position in 0..self.peers.len() {
            let id = self.peers[position].id;
            if self.membership.is_voter(id) {
                self.send_at(
                    request_term,
                    id,
                    OutgoingBody::RequestVote(request),
                    actions,
                );
            }
        }
        self.poll(actions);
    }

    /// Counts the votes. The candidate's own vote counts only once durable,
    /// so no node leads a term it could forget having voted in.
    fn poll(&mut self, actions: &mut Vec<Action>) {
        let self_vote = match self.role {
            Role::PreCandidate => Some(self.self_granted),
            Role::Candidate if !self.hard_state_pending() => Some(self.self_granted),
            _ => None,
        };
        let id = self.config.id;
        let peers = &self.peers;
        let result = self.membership.vote_result(|voter| {
            if voter == id {
                self_vote
            } else {
                peers
                    .iter()
                    .find(|peer| peer.id == voter)
                    .and_then(|peer| peer.vote)
            }
        });
        match (result, self.role) {
            (VoteResult::Won, Role::PreCandidate) => self.campaign(Campaign::Vote, actions),
            (VoteResult::Won, Role::Candidate) => self.become_leader(actions),
            (VoteResult::Lost, Role::PreCandidate | Role::Candidate) => {
                self.become_follower(self.term, NodeId::ZERO, actions);
            }
            _ => {}
        }
    }

    // ------------------------------------------------------------------
    // Leader.

    fn become_leader(&mut self, actions: &mut Vec<Action>) {
        assert!(!self.hard_state_pending(), "lead only a durable term");
        self.role = Role::Leader;
        self.leader = self.config.id;
        self.transfer_to = NodeId::ZERO;
        self.elapsed_ms_election = 0;
        self.elapsed_ms_heartbeat = 0;
        self.reads.collecting = 0;
        self.reads.rounds.clear();
        let next = self.log.last_index().next();
        for peer in &mut self.peers {
            peer.progress.match_index = LogIndex::ZERO;
            peer.progress.become_probe(next);
            peer.progress.recent_active = false;
            peer.progress.read_round_acked = 0;
        }
        // A no-op of the new term lets everything before it commit (§5.4.2)
        // and makes ReadIndex possible (§6.4).
        let index = next;
        self.log.append(Boundary {
            first_index: index,
            term: self.term,
            count: 1,
            bytes: NOOP_BATCH_BYTES,
            kind: BatchKind::Noop,
            batches: 1,
        });
        actions.push(Action::AppendNoop {
            term: self.term,
            index,
        });
        // The no-op leaves now: every peer probes, one message each.
        self.proposals_unsent = false;
        for position in 0..self.peers.len() {
            self.replicate_to(position, actions);
        }
    }

    fn propose_batch(
        &mut self,
        kind: BatchKind,
        count: u32,
        bytes: u32,
        membership: Option<Membership>,
        actions: &mut Vec<Action>,
    ) -> Result<(Term, LogIndex), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if self.transfer_to != NodeId::ZERO {
            return Err(ProposeError::Transferring);
        }
        if count == 0 || count > BATCH_ENTRIES_MAX {
            return Err(ProposeError::Invalid);
        }
        if self.log.batches_after(self.commit) >= PROPOSALS_PENDING_MAX {
            return Err(ProposeError::TooMany);
        }
        let start = actions.len();
        let first_index = self.log.last_index().next();
        self.log.append(Boundary {
            first_index,
            term: self.term,
            count,
            bytes,
            kind,
            batches: 1,
        });
        actions.push(Action::AppendProposal {
            term: self.term,
            first_index,
            count,
        });
        if let Some(membership) = membership {
            self.memberships_uncommitted.push((first_index, membership));
            self.set_membership(membership);
        }
        // Sent by `replicate`, with whatever else this batch of inputs
        // proposes: one message per peer rather than one per proposal.
        self.proposals_unsent = true;
        self.finish(start, actions);
        Ok((self.term, first_index))
    }

    /// Sends every peer what its state allows; remembers whether a peer
    /// still could take more (it hit the per-call message bound), so the
    /// next `replicate` or tick goes on.
    fn replicate_unsent(&mut self, actions: &mut Vec<Action>) {
        for position in 0..self.peers.len() {
            self.replicate_to(position, actions);
        }
        self.proposals_unsent = (0..self.peers.len()).any(|position| self.can_send(position));
    }

    /// Whether `send_append` would send to the peer at `position` now.
    fn can_send(&self, position: usize) -> bool {
        let progress = &self.peers[position].progress;
        !progress.is_paused()
            && (progress.state != ProgressState::Replicate
                || progress.next_index <= self.log.last_index())
    }

    fn tick_leader(&mut self, actions: &mut Vec<Action>) {
        if self.elapsed_ms_election >= self.config.timeout_ms_election {
            self.elapsed_ms_election = 0;
            if self.config.check_quorum {
                let id = self.config.id;
                let peers = &self.peers;
                let active = self.membership.has_quorum(|voter| {
                    voter == id
                        || peers
                            .iter()
                            .any(|peer| peer.id == voter && peer.progress.recent_active)
                });
                if !active {
                    self.become_follower(self.term, NodeId::ZERO, actions);
                    return;
                }
                for peer in &mut self.peers {
                    peer.progress.recent_active = false;
                }
            }
            self.transfer_to = NodeId::ZERO;
        }
        if self.elapsed_ms_heartbeat >= self.config.interval_ms_heartbeat {
            self.elapsed_ms_heartbeat = 0;
            if self.reads.collecting > 0 && self.can_start_read_round() {
                self.start_read_round(actions);
            } else {
                self.broadcast_heartbeat(actions);
            }
            self.probe_stalled_peers(actions);
        }
        // A runtime that never calls `replicate` still gets its proposals
        // out, a tick late. After the stall probes, so that a peer they just
        // reset gets its one probe, not appends the reset would void.
        if self.proposals_unsent {
            self.replicate_unsent(actions);
        }
    }

    /// A peer whose window has not moved for several heartbeats lost
    /// messages: probe again from what it matches.
    fn probe_stalled_peers(&mut self, actions: &mut Vec<Action>) {
        for position in 0..self.peers.len() {
            let progress = &mut self.peers[position].progress;
            if progress.state != ProgressState::Replicate || progress.inflights.count() == 0 {
                continue;
            }
            progress.stalled_heartbeats += 1;
            if progress.stalled_heartbeats >= PROGRESS_STALL_HEARTBEATS {
                let next = progress.match_index.next();
                progress.become_probe(next);
                self.replicate_to(position, actions);
            }
        }
    }

    fn leader_append_accepted(
        &mut self,
        position: usize,
        response: AppendResponse,
        actions: &mut Vec<Action>,
    ) {
        // An honest follower acknowledges whole batches of this leader's
        // log; anything else is not an answer to this leader: ignore it.
        if !self.log.is_batch_end(response.match_index)
            || !self.log.is_batch_end(response.last_index)
        {
            return;
        }
        let last = self.log.last_index();
        let progress = &mut self.peers[position].progress;
        let advanced = progress.update_match(response.match_index);
        match progress.state {
            ProgressState::Probe => {
                let next = response.last_index.next().max(progress.match_index.next());
                progress.become_replicate(next);
            }
            ProgressState::Snapshot { pending } if progress.match_index >= pending => {
                let next = progress.match_index.next();
                progress.become_probe(next);
            }
            _ => {}
        }
        if advanced && self.maybe_commit() {
            self.after_commit(actions);
        }
        let id = self.peers[position].id;
        if self.transfer_to == id && self.peers[position].progress.match_index == last {
            self.send(id, OutgoingBody::TimeoutNow, actions);
        }
        self.replicate_to(position, actions);
    }

    fn leader_append_rejected(
        &mut self,
        position: usize,
        response: AppendResponse,
        actions: &mut Vec<Action>,
    ) {
        let progress = &self.peers[position].progress;
        let stale = match progress.state {
            ProgressState::Replicate => response.rejected_index <= progress.match_index,
            ProgressState::Probe => response.rejected_index != progress.next_index.prev(),
            ProgressState::Snapshot { .. } => true,
        };
        if stale {
            return;
        }
        // The follower's hint names its last entry that could match; our
        // own last entry at or below it with a term no higher is the
        // candidate point, and we send from the start of our batch holding
        // the entry after it, never below what matches.
        let (index, _) = self
            .log
            .find_conflict_by_term(response.hint_index, response.hint_term);
        let next = self.log.batch_start(index.next());
        self.peers[position].progress.become_probe(next);
        self.replicate_to(position, actions);
    }

    fn leader_heartbeat_response(
        &mut self,
        position: usize,
        response: HeartbeatResponse,
        actions: &mut Vec<Action>,
    ) {
        let last = self.log.last_index();
        let progress = &mut self.peers[position].progress;
        progress.recent_active = true;
        progress.read_round_acked = progress.read_round_acked.max(response.read_round);
        let advanced = self.log.is_batch_end(response.match_index)
            && progress.update_match(response.match_index);
        if progress.state == ProgressState::Probe {
            progress.probe_sent = false;
        }
        if advanced && self.maybe_commit() {
            self.after_commit(actions);
        }
        if self.peers[position].progress.match_index < last {
            self.replicate_to(position, actions);
        }
        self.confirm_reads(actions);
    }

    /// Advances the commit index to what a quorum has durable, but only
    /// onto an entry of this term (§5.4.2): earlier entries commit with it.
    fn maybe_commit(&mut self) -> bool {
        let id = self.config.id;
        let durable = self.log.durable_index();
        let peers = &self.peers;
        let quorum_index = self.membership.committed_index(|voter| {
            if voter == id {
                durable
            } else {
                peers
                    .iter()
                    .find(|peer| peer.id == voter)
                    .map_or(LogIndex::ZERO, |peer| peer.progress.match_index)
            }
        });
        if quorum_index <= self.commit {
            return false;
        }
        let current_term = self.log.term_at(quorum_index) == Some(self.term);
        #[cfg(feature = "planted-bugs")]
        let current_term = current_term
            || self.config.planted_bug == Some(PlantedBug::CommitPreviousTermByCounting);
        if !current_term {
            return false;
        }
        self.advance_commit(quorum_index);
        true
    }

    fn after_commit(&mut self, actions: &mut Vec<Action>) {
        if !self.membership_committed.is_voter(self.config.id) {
            self.step_down_removed(actions);
            return;
        }
        if self.reads.collecting > 0 && self.reads.rounds.is_empty() {
            self.start_read_round(actions);
        }
    }

    /// A committed configuration no longer counts this leader as a voter
    /// (Raft §4.2.2): it stops leading. A voter of the configuration that
    /// holds the whole log is told to campaign at once, so the cluster does
    /// not wait an election timeout for a new leader.
    fn step_down_removed(&mut self, actions: &mut Vec<Action>) {
        let last = self.log.last_index();
        let successor = self
            .peers
            .iter()
            .filter(|peer| self.membership.is_voter(peer.id))
            .find(|peer| peer.progress.match_index == last)
            .map(|peer| peer.id);
        if let Some(successor) = successor {
            self.send(successor, OutgoingBody::TimeoutNow, actions);
        }
        self.become_follower(self.term, NodeId::ZERO, actions);
    }

    /// Sends to the peer at `position` as much as its state allows.
    fn replicate_to(&mut self, position: usize, actions: &mut Vec<Action>) {
        for _ in 0..APPENDS_PER_PEER_PER_CALL_MAX {
            if !self.send_append(position, actions) {
                break;
            }
        }
    }

    /// Sends one AppendEntries to the peer at `position`; false if paused
    /// or there is nothing to send.
    fn send_append(&mut self, position: usize, actions: &mut Vec<Action>) -> bool {
        let progress = &self.peers[position].progress;
        if progress.is_paused() {
            return false;
        }
        let next = progress.next_index;
        let replicating = progress.state == ProgressState::Replicate;
        let last = self.log.last_index();
        if replicating && next > last {
            return false;
        }
        let to = self.peers[position].id;
        let prev = next.prev();
        let Some(prev_term) = self
            .log
            .term_at(prev)
            .filter(|_| next >= self.log.first_index())
        else {
            let pending = self.log.snapshot_index();
            self.peers[position].progress.become_snapshot(pending);
            actions.push(Action::SendSnapshot { to });
            return false;
        };
        debug_assert!(self.log.is_batch_start(next), "next {next} starts a batch");
        let bytes_max = self
            .config
            .append_message_bytes_max
            .min(self.config.inflight_bytes_max);
        let run = self
            .log
            .run_from(next, self.config.append_message_batches_max, bytes_max);
        let range = AppendRange {
            prev_index: prev,
            prev_term,
            leader_commit: self.commit,
            first_index: next,
            last_index: run.last_index,
            batches: run.batches,
            bytes: run.bytes,
        };
        self.peers[position]
            .progress
            .sent(run.last_index, run.bytes);
        self.send(to, OutgoingBody::AppendEntries(range), actions);
        true
    }

    fn broadcast_heartbeat(&mut self, actions: &mut Vec<Action>) {
        for position in 0..self.peers.len() {
            let peer = &self.peers[position];
            let heartbeat = Heartbeat {
                leader_commit: peer.progress.match_index.min(self.commit),
                read_round: self.reads.round_started,
            };
            let to = peer.id;
            self.send(to, OutgoingBody::Heartbeat(heartbeat), actions);
        }
    }

    // ------------------------------------------------------------------
    // ReadIndex (§6.4), batched: every read that arrives while a round is
    // in flight joins the next round, so one heartbeat round serves many.

    fn can_start_read_round(&self) -> bool {
        self.reads.rounds.len() < READ_ROUNDS_INFLIGHT_MAX
            && self.log.term_at(self.commit) == Some(self.term)
    }

    fn start_read_round(&mut self, actions: &mut Vec<Action>) {
        if self.reads.collecting == 0 || !self.can_start_read_round() {
            return;
        }
        self.reads.round_started += 1;
        self.reads.collecting = 0;
        self.reads
            .rounds
            .push_back((self.reads.round_started, self.commit));
        self.elapsed_ms_heartbeat = 0;
        self.broadcast_heartbeat(actions);
        self.confirm_reads(actions);
    }

    fn confirm_reads(&mut self, actions: &mut Vec<Action>) {
        let mut confirmed = None;
        while let Some(&(round, index)) = self.reads.rounds.front() {
            let id = self.config.id;
            let peers = &self.peers;
            let quorum = self.membership.has_quorum(|voter| {
                voter == id
                    || peers
                        .iter()
                        .any(|peer| peer.id == voter && peer.progress.read_round_acked >= round)
            });
            if !quorum {
                break;
            }
            self.reads.rounds.pop_front();
            confirmed = Some((round, index));
        }
        if let Some((through_round, index)) = confirmed {
            actions.push(Action::ReadReady {
                through_round,
                index,
            });
            if self.reads.collecting > 0 && self.reads.rounds.is_empty() {
                self.start_read_round(actions);
            }
        }
    }

    fn abort_reads(&mut self, actions: &mut Vec<Action>) {
        if self.reads.collecting > 0 {
            self.reads.round_started += 1;
        }
        if self.reads.collecting > 0 || !self.reads.rounds.is_empty() {
            actions.push(Action::ReadsAborted {
                through_round: self.reads.round_started,
            });
        }
        self.reads.collecting = 0;
        self.reads.rounds.clear();
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

    fn promotable(&self) -> bool {
        self.membership.is_voter(self.config.id)
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

    fn restore_membership(&mut self) {
        let membership = self
            .memberships_uncommitted
            .last()
            .map_or(self.membership_committed, |(_, membership)| *membership);
        self.set_membership(membership);
    }

    fn set_membership(&mut self, membership: Membership) {
        if membership != self.membership {
            self.membership = membership;
            self.rebuild_peers();
        }
    }

    /// One peer per member other than this node; progress kept for those
    /// that stay.
    fn rebuild_peers(&mut self) {
        let members = self.membership.members();
        self.peers.retain(|peer| members.contains(peer.id));
        let next = self.log.last_index().next();
        for id in members.as_slice() {
            if *id != self.config.id && !self.peers.iter().any(|peer| peer.id == *id) {
                let inflights = Inflights::new(
                    self.config.inflight_messages_max,
                    self.config.inflight_bytes_max,
                );
                self.peers.push(Peer {
                    id: *id,
                    progress: Progress::new(next, inflights),
                    vote: None,
                });
            }
        }
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

/// Whether an AppendEntries' summaries are consistent: contiguous from
/// `prev + 1`, non-empty batches, terms between `prev_term` and the
/// message's term and never decreasing, one membership per config batch.
fn append_is_well_formed(term: Term, append: &AppendEntries<'_>) -> bool {
    if append.batches.len() > APPEND_MESSAGE_BATCHES_MAX || append.prev_term > term {
        return false;
    }
    let mut expected = append.prev_index.next();
    let mut previous_term = append.prev_term;
    let mut configs = 0;
    for batch in append.batches {
        if batch.first_index != expected
            || batch.count == 0
            || batch.count > BATCH_ENTRIES_MAX
            || batch.term < previous_term
            || batch.term > term
        {
            return false;
        }
        if batch.kind == BatchKind::Config {
            configs += 1;
        }
        expected = batch.last_index().next();
        previous_term = batch.term;
    }
    configs == append.configs.len()
}
