//! What the core asks of its runtime, and the order it must be done in.

use crate::raft::message::Outgoing;
use crate::types::{LogIndex, NodeId, Term};

/// The durable part of a node's state (`HardState` in the schema).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    /// Current term.
    pub term: Term,
    /// Node voted for in `term` (zero: none).
    pub vote: NodeId,
    /// Commit index when written (a hint for restart; commit is never
    /// required to be durable for safety).
    pub commit: LogIndex,
    /// Nonzero: recovery cut bytes this node may have acknowledged while
    /// its term was at most this; the node votes and campaigns only as
    /// `acked_end` allows, until it holds a committed entry of a later
    /// term (see `raft::Core`, "damaged nodes"). [`Term::ZERO`]: undamaged;
    /// [`TERM_UNKNOWN`]: the hard state itself was lost.
    pub damaged_in: Term,
    /// While damaged: the last entry (term, index) of the log this node
    /// may have acknowledged before the damage, as its durable mark said.
    /// It votes only for a candidate whose log is at least as up to date
    /// as both this and its log now (`raft::Core`, "Damaged nodes").
    /// `None`: not known (the mark was lost too, or the hard state was),
    /// and a damaged node does not vote.
    pub acked_end: Option<(Term, LogIndex)>,
}

/// The damage mark of a node whose hard state was lost (every copy
/// unreadable): no bound is known yet on the terms it voted in. See
/// `raft::Core`, "A lost hard state".
pub const TERM_UNKNOWN: Term = Term(u64::MAX);

impl HardState {
    /// The hard state a node restarts with when its hard state was lost
    /// (both copies damaged, or the file gone under a log that holds
    /// entries): the log's last term, no vote, and the mark
    /// [`TERM_UNKNOWN`]. The node then acts on no message until it has
    /// heard every other voter's term (`raft::Core`, "A lost hard state").
    /// Write it durably before the core starts.
    pub fn lost(last_log_term: Term) -> Self {
        Self {
            term: last_log_term,
            vote: NodeId::ZERO,
            commit: LogIndex::ZERO,
            damaged_in: TERM_UNKNOWN,
            acked_end: None,
        }
    }

    /// Whether this is the state of a lost hard state not yet rebuilt.
    pub fn is_lost(&self) -> bool {
        self.damaged_in == TERM_UNKNOWN
    }

    /// The hard state a node restarts with when its recovery cut bytes it
    /// may have acknowledged (a damaged record, a lost tail): the next
    /// term, no vote, the damage mark — the highest term in which the
    /// lost entries can have been acknowledged — and `acked_end`, the end
    /// of the log it may have acknowledged up to (the durable mark's
    /// entry; `None` when unknown). The next term makes a leader of the
    /// current one (which may count the lost entries as held here) step
    /// down at this node's first answer; the mark keeps the node from
    /// voting for a log behind `acked_end`, and from campaigning while its
    /// own is, until it is repaired (see `raft::Core`, "Damaged nodes"). Damaged again
    /// before a repair, it keeps the higher end, or none if either is
    /// unknown. Write it durably before the core starts.
    #[must_use]
    pub fn after_damage(self, acked_end: Option<(Term, LogIndex)>) -> Self {
        // Damaged already (a lost hard state's end is unknown): both ends.
        let acked_end = if self.damaged_in == Term::ZERO {
            acked_end
        } else {
            self.acked_end.zip(acked_end).map(|(old, new)| old.max(new))
        };
        Self {
            term: self.term.next(),
            vote: NodeId::ZERO,
            commit: self.commit,
            damaged_in: self.term.max(self.damaged_in),
            acked_end,
        }
    }
}

/// A node's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Follows a leader (or waits for one). Learners are always followers.
    Follower,
    /// Asking for pre-votes: term unchanged.
    PreCandidate,
    /// Asking for votes in a new term.
    Candidate,
    /// Leads the term.
    Leader,
}

/// One thing for the runtime to do.
///
/// # Ordering contract
///
/// The runtime executes a call's actions as follows; nothing else is required
/// of it.
///
/// * **Storage actions** (`PersistHardState`, `Truncate`, `AppendProposal`,
///   `AppendNoop`, `AppendReceived`) go to the node's storage *in the order
///   emitted*, and their completions are reported in that order
///   (`persisted(up_to, term)` for the log, `hard_state_persisted` for the
///   hard state). The core never waits for them: it keeps taking inputs
///   while writes are in flight.
/// * **Messages** (`Send`) may leave at once, in parallel with the storage
///   actions of the same call and before they complete. The core makes that
///   safe itself: a message that depends on a term or vote not yet durable
///   is held inside the core and emitted only by the `hard_state_persisted`
///   call that reports it durable; a follower acknowledges only entries
///   reported durable; the leader counts itself only up to its durable index.
/// * **`Apply { up_to }`**: entries up to `up_to` are committed. They have
///   been handed to storage (maybe not yet durable locally: a quorum has them
///   durable) and may be applied once the preceding storage actions are
///   issued. `up_to` never decreases during the life of a core, and never
///   covers entries a `snapshot_installed` call handed over (the runtime
///   loaded their state from the snapshot).
/// * **`ReadReady`**: serve the reads of the rounds up to `through_round`
///   once the state machine has applied at least `index`.
/// * `AppendReceived` refers to the message passed to the `step` call that
///   emitted it; the runtime must execute it before stepping another message.
/// * **Proposals go out on `replicate`**: `propose` and `propose_membership`
///   emit only their storage action; the AppendEntries carrying the batch
///   are emitted by the next `Core::replicate` call (or, if the runtime
///   never makes one, by the leader's next `tick`). The runtime calls
///   `replicate` once after a batch of proposals (the server: once per
///   event-loop turn, after the turn's inputs), having executed the
///   proposals' `AppendProposal` first, as it executes every call's actions
///   before the next call: a message may then read the batches it carries
///   from storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Write term, vote (and commit) durably; report with
    /// `hard_state_persisted`.
    PersistHardState(HardState),
    /// Remove every stored entry from `from` on (a batch start, above the
    /// commit index).
    Truncate {
        /// First index removed.
        from: LogIndex,
    },
    /// Append the batch of the proposal just accepted by `propose`, stamped
    /// with `term` and `first_index`. It reaches the followers with the next
    /// `replicate` (see the ordering contract).
    AppendProposal {
        /// Its term.
        term: Term,
        /// Its first index.
        first_index: LogIndex,
        /// Its entry count.
        count: u32,
    },
    /// Append a no-op batch (one empty entry of kind `noop`) that the
    /// runtime builds, stamped with `term` and `index`: a new leader's first
    /// entry.
    AppendNoop {
        /// Its term.
        term: Term,
        /// Its index.
        index: LogIndex,
    },
    /// Append the batches of the AppendEntries just stepped, from its
    /// `skip`-th batch on (earlier ones are already stored).
    AppendReceived {
        /// Batches of the message to skip.
        skip: u32,
        /// First index appended.
        first_index: LogIndex,
        /// Last index appended.
        last_index: LogIndex,
    },
    /// Send a message.
    Send(Outgoing),
    /// Entries up to here are committed.
    Apply {
        /// Commit index.
        up_to: LogIndex,
    },
    /// ReadIndex rounds up to `through_round` are confirmed: serve their
    /// reads once the state machine has applied `index`.
    ReadReady {
        /// Last confirmed round (reads of earlier rounds included).
        through_round: u64,
        /// The read index.
        index: LogIndex,
    },
    /// Reads of rounds up to `through_round` will never be confirmed (the
    /// node stopped leading): fail them so clients retry elsewhere.
    ReadsAborted {
        /// Last aborted round.
        through_round: u64,
    },
    /// Stream the current snapshot to `to` (it needs entries no longer in
    /// the log); report the end with `snapshot_sent`.
    SendSnapshot {
        /// The follower.
        to: NodeId,
    },
    /// The role, term or known leader changed (redirect clients, fail
    /// proposals pending at a former leader as indeterminate).
    RoleChanged {
        /// New role.
        role: Role,
        /// Current term.
        term: Term,
        /// Known leader (zero: none).
        leader: NodeId,
    },
    /// This damaged node waits for entries that no voter holds, and no
    /// voter can be elected (`raft::Core`, "A majority lost entries"):
    /// stop this copy of the log and say what was lost. Emitted once; the
    /// core changes nothing else.
    MajorityLost {
        /// The end (term, index) of what this node may have acknowledged.
        acked_end: (Term, LogIndex),
        /// The most up to date log among the voters, which ends before it.
        best: (Term, LogIndex),
    },
}
