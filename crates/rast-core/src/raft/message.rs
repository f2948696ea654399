//! Peer messages as the core sees them, one to one with `PeerMessage` in
//! `schema/rast.capnp` (the codec in `wire` maps between the two).
//!
//! ```text
//!  schema PeerMessage              core
//!  ─────────────────────────────── ──────────────────────────────────────────
//!  group                           (the runtime routes by group)
//!  from, to, term                  Message::{from, to, term} / Outgoing
//!  appendEntries                   Body::AppendEntries (in: summaries only)
//!                                  OutgoingBody::AppendEntries (out: a range)
//!  appendResponse                  AppendResponse
//!  requestVote / voteResponse      RequestVote / VoteResponse
//!  heartbeat / heartbeatResponse   Heartbeat / HeartbeatResponse
//!  timeoutNow                      TimeoutNow
//!  installSnapshot                 InstallSnapshot (header fields)
//!  snapshotResponse                SnapshotResponse
//!  repairWait                      RepairWait
//! ```
//!
//! The payload bytes of an AppendEntries never reach the core. Incoming, the
//! core reads the batch *summaries* (term, first index, count, bytes, kind),
//! decides, and names which of the message's batches the runtime must write
//! (`Action::AppendReceived { skip, .. }`), so a runtime may splice the bytes
//! from socket to file without reading them. Outgoing, the core names the
//! range of batches to send (`AppendRange`); the runtime attaches the stored
//! summaries and frames.

use crate::raft::quorum::Membership;
use crate::types::{LogIndex, NodeId, Term};
use crate::wire::BatchKind;

/// What the core needs of one batch: mirrors `BatchSummary` in the schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchSummary {
    /// Term of every entry of the batch.
    pub term: Term,
    /// Index of the first entry.
    pub first_index: LogIndex,
    /// Number of entries (at least one).
    pub count: u32,
    /// Bytes of the framed batch.
    pub bytes: u32,
    /// What the entries mean.
    pub kind: BatchKind,
}

impl BatchSummary {
    /// Index of the last entry.
    #[inline]
    pub fn last_index(&self) -> LogIndex {
        LogIndex(self.first_index.get() + u64::from(self.count) - 1)
    }
}

/// An incoming message, borrowed from the runtime's receive buffer.
#[derive(Clone, Copy, Debug)]
pub struct Message<'a> {
    /// Sender.
    pub from: NodeId,
    /// Receiver (this node).
    pub to: NodeId,
    /// Sender's term.
    pub term: Term,
    /// The message itself.
    pub body: Body<'a>,
}

/// The kinds of incoming message.
#[derive(Clone, Copy, Debug)]
pub enum Body<'a> {
    /// Leader → follower: entries (summaries) after `prev`, and the commit.
    AppendEntries(AppendEntries<'a>),
    /// Follower → leader: the answer to an AppendEntries.
    AppendResponse(AppendResponse),
    /// Candidate → voter: a (pre-)vote request.
    RequestVote(RequestVote),
    /// Voter → candidate.
    VoteResponse(VoteResponse),
    /// Leader → follower: liveness, commit, ReadIndex round.
    Heartbeat(Heartbeat),
    /// Follower → leader.
    HeartbeatResponse(HeartbeatResponse),
    /// Leader → transferee: campaign now, ignoring leases.
    TimeoutNow,
    /// Leader → follower: the header of a snapshot being streamed.
    InstallSnapshot(InstallSnapshot),
    /// Follower → leader: progress of a snapshot stream.
    SnapshotResponse(SnapshotResponse),
    /// Damaged node → voters: what it waits for (changes no term).
    RepairWait(RepairWait),
}

/// An incoming AppendEntries: the header and the batch summaries.
#[derive(Clone, Copy, Debug)]
pub struct AppendEntries<'a> {
    /// Index of the entry just before the first batch.
    pub prev_index: LogIndex,
    /// Term of that entry.
    pub prev_term: Term,
    /// The leader's commit index.
    pub leader_commit: LogIndex,
    /// Summaries of the batches that follow, in order, contiguous from
    /// `prev_index + 1`. The runtime decodes them from the message's list
    /// into a reusable buffer (at most `APPEND_MESSAGE_BATCHES_MAX`).
    pub batches: &'a [BatchSummary],
    /// The membership of each batch of kind `config`, in order (the runtime
    /// reads those batches, which are small, and splices the rest).
    pub configs: &'a [Membership],
}

impl AppendEntries<'_> {
    /// Index of the last entry carried, or `prev_index` when empty.
    pub fn last_index(&self) -> LogIndex {
        self.batches
            .last()
            .map_or(self.prev_index, BatchSummary::last_index)
    }
}

/// Follower → leader: the answer to an AppendEntries (`AppendResponse`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AppendResponse {
    /// The prev check passed.
    pub success: bool,
    /// On success: durable and matching the leader up to here.
    pub match_index: LogIndex,
    /// On rejection: the `prev_index` that was rejected (stale answers are
    /// recognized by it).
    pub rejected_index: LogIndex,
    /// On rejection: the follower's last index at or below the rejected
    /// `prev_index` whose term is at most the leader's `prev_term`.
    pub hint_index: LogIndex,
    /// The term at `hint_index`.
    pub hint_term: Term,
    /// On success: the follower matches the leader up to here (in memory,
    /// maybe not yet durable), so the leader sends from the next index. On
    /// rejection: the follower's last index.
    pub last_index: LogIndex,
}

/// A (pre-)vote request (`RequestVote`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestVote {
    /// Candidate's last log index.
    pub last_index: LogIndex,
    /// Candidate's last log term.
    pub last_term: Term,
    /// A pre-vote: the voter changes neither term nor vote.
    pub pre_vote: bool,
    /// Sent after TimeoutNow: voters ignore their leader lease.
    pub leadership_transfer: bool,
}

/// A damaged node that may not campaign → every voter (`RepairWait`): the
/// end of its log and the end of what it may have acknowledged, which it
/// waits for a leader to hold. Receivers change no term; a damaged node
/// notes it to tell when no voter can be elected (`raft::Core`, "A
/// majority lost entries").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RepairWait {
    /// The sender's last log index.
    pub last_index: LogIndex,
    /// The sender's last log term.
    pub last_term: Term,
    /// The end (term, index) it votes for a log only at or past; `None`:
    /// unknown, it votes for no one.
    pub acked_end: Option<(Term, LogIndex)>,
}

/// A vote answer (`VoteResponse`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VoteResponse {
    /// The vote was granted.
    pub granted: bool,
    /// It answers a pre-vote.
    pub pre_vote: bool,
}

/// Leader → follower heartbeat (`Heartbeat`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    /// The leader's commit, capped at what the follower is known to match.
    pub leader_commit: LogIndex,
    /// The ReadIndex round this heartbeat confirms.
    pub read_round: u64,
}

/// Follower → leader (`HeartbeatResponse`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeartbeatResponse {
    /// The round of the heartbeat answered.
    pub read_round: u64,
    /// Durable and verified in this term up to here.
    pub match_index: LogIndex,
}

/// The header fields of an InstallSnapshot the core looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InstallSnapshot {
    /// The snapshot's last included index.
    pub last_index: LogIndex,
    /// Its term.
    pub last_term: Term,
}

/// Snapshot stream progress (`SnapshotResponse`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotResponse {
    /// Resume offset.
    pub next_offset: u64,
    /// The snapshot is installed.
    pub done: bool,
}

/// An outgoing message. The runtime adds the group and, for an
/// AppendEntries, the summaries and frames of the named range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outgoing {
    /// Sender (this node).
    pub from: NodeId,
    /// Receiver.
    pub to: NodeId,
    /// Sender's term.
    pub term: Term,
    /// The message itself.
    pub body: OutgoingBody,
}

/// The kinds of outgoing message; all but AppendEntries as incoming.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutgoingBody {
    /// Send the stored batches `range.first_index..=range.last_index`.
    AppendEntries(AppendRange),
    /// See [`AppendResponse`].
    AppendResponse(AppendResponse),
    /// See [`RequestVote`].
    RequestVote(RequestVote),
    /// See [`VoteResponse`].
    VoteResponse(VoteResponse),
    /// See [`Heartbeat`].
    Heartbeat(Heartbeat),
    /// See [`HeartbeatResponse`].
    HeartbeatResponse(HeartbeatResponse),
    /// Campaign now.
    TimeoutNow,
    /// See [`RepairWait`].
    RepairWait(RepairWait),
}

impl OutgoingBody {
    /// The body as its receiver steps it. An AppendEntries carries
    /// `batches`, the summaries of its range, and `configs`, the
    /// memberships of the config batches among them, in order (both are
    /// ignored for other messages).
    pub fn incoming<'a>(self, batches: &'a [BatchSummary], configs: &'a [Membership]) -> Body<'a> {
        match self {
            OutgoingBody::AppendEntries(range) => Body::AppendEntries(AppendEntries {
                prev_index: range.prev_index,
                prev_term: range.prev_term,
                leader_commit: range.leader_commit,
                batches,
                configs,
            }),
            OutgoingBody::AppendResponse(response) => Body::AppendResponse(response),
            OutgoingBody::RequestVote(request) => Body::RequestVote(request),
            OutgoingBody::VoteResponse(response) => Body::VoteResponse(response),
            OutgoingBody::Heartbeat(heartbeat) => Body::Heartbeat(heartbeat),
            OutgoingBody::HeartbeatResponse(response) => Body::HeartbeatResponse(response),
            OutgoingBody::TimeoutNow => Body::TimeoutNow,
            OutgoingBody::RepairWait(wait) => Body::RepairWait(wait),
        }
    }
}

/// An outgoing AppendEntries: which stored batches to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendRange {
    /// Index of the entry just before `first_index`.
    pub prev_index: LogIndex,
    /// Its term.
    pub prev_term: Term,
    /// The leader's commit index.
    pub leader_commit: LogIndex,
    /// First index sent: a batch start. `prev_index + 1`.
    pub first_index: LogIndex,
    /// Last index sent: a batch end, or `prev_index` for an empty probe.
    pub last_index: LogIndex,
    /// Number of whole batches in the range.
    pub batches: u32,
    /// Their bytes, as the core accounted them for flow control.
    pub bytes: u64,
}
