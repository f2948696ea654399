//! `PeerMessage` frames ⇄ the Raft core's messages.
//!
//! An AppendEntries travels as a header frame followed by the batch frames
//! themselves (exactly `batchBytes` bytes), so a follower can decide from the
//! header and then move the batch bytes without parsing them:
//!
//! ```text
//! ┌ PeerMessage{group, from, to, term, appendEntries{prev, commit,
//! │             batches: [BatchSummary…], batchBytes}} ┐ EntryBatch … EntryBatch
//! └────────────────────── one frame ───────────────────┘ └── batchBytes bytes ──┘
//! ```
//!
//! Decoding fills caller-owned buffers (summaries, memberships) so the
//! steady state allocates nothing per message.

use crate::constants::{APPEND_MESSAGE_BATCHES_MAX, INDEX_MAX};
use crate::raft::{
    AppendResponse, BatchSummary, Heartbeat, HeartbeatResponse, InstallSnapshot, Outgoing,
    OutgoingBody, RepairWait, RequestVote, SnapshotResponse, VoteResponse,
};
use crate::rast_capnp::{batch_summary, peer_message};
use crate::types::{LogId, LogIndex, NodeId, Term};
use crate::wire::{BatchKind, WireError, frame};

/// A decoded peer message; AppendEntries summaries live in the caller's
/// buffer passed to [`decode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerHeader {
    /// The Raft group.
    pub group: LogId,
    /// Sender.
    pub from: NodeId,
    /// Receiver.
    pub to: NodeId,
    /// Sender's term.
    pub term: Term,
    /// What it is.
    pub body: PeerBody,
}

/// The body of a decoded peer message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerBody {
    /// AppendEntries header; its summaries are in the decode buffer and
    /// `batch_bytes` bytes of batch frames follow on the stream.
    AppendEntries {
        /// Index before the first batch.
        prev_index: LogIndex,
        /// Its term.
        prev_term: Term,
        /// Leader's commit.
        leader_commit: LogIndex,
        /// Bytes of batch frames that follow.
        batch_bytes: u64,
    },
    /// See the core's type.
    AppendResponse(AppendResponse),
    /// See the core's type.
    RequestVote(RequestVote),
    /// See the core's type.
    VoteResponse(VoteResponse),
    /// See the core's type.
    Heartbeat(Heartbeat),
    /// See the core's type.
    HeartbeatResponse(HeartbeatResponse),
    /// Campaign now.
    TimeoutNow,
    /// Snapshot header fields.
    InstallSnapshot(InstallSnapshot),
    /// Snapshot stream progress.
    SnapshotResponse(SnapshotResponse),
    /// See the core's type.
    RepairWait(RepairWait),
}

/// Encodes an outgoing message of `group`. For an AppendEntries, `batches`
/// are the summaries of the stored batches in the range, whose frames the
/// caller writes right after this frame.
pub fn encode(group: LogId, message: &Outgoing, batches: &[BatchSummary]) -> Vec<u8> {
    // About 4 words a summary (a list element) after the message's own.
    let mut builder = crate::wire::frame::builder(64 + 4 * batches.len());
    let mut root = builder.init_root::<peer_message::Builder<'_>>();
    root.set_group(group.get());
    root.set_from(message.from.get());
    root.set_to(message.to.get());
    root.set_term(message.term.get());
    match &message.body {
        OutgoingBody::AppendEntries(range) => {
            let mut append = root.init_append_entries();
            append.set_prev_log_index(range.prev_index.get());
            append.set_prev_log_term(range.prev_term.get());
            append.set_leader_commit(range.leader_commit.get());
            append.set_batch_bytes(batches.iter().map(|batch| u64::from(batch.bytes)).sum());
            let mut list = append.init_batches(batches.len() as u32);
            for (position, batch) in batches.iter().enumerate() {
                let mut entry = list.reborrow().get(position as u32);
                entry.set_term(batch.term.get());
                entry.set_first_index(batch.first_index.get());
                entry.set_count(batch.count);
                entry.set_bytes(batch.bytes);
                entry.set_kind(batch.kind);
            }
        }
        OutgoingBody::AppendResponse(response) => {
            let mut out = root.init_append_response();
            out.set_success(response.success);
            out.set_match_index(response.match_index.get());
            out.set_hint_index(response.hint_index.get());
            out.set_hint_term(response.hint_term.get());
            out.set_last_index(response.last_index.get());
            out.set_rejected_index(response.rejected_index.get());
        }
        OutgoingBody::RequestVote(request) => {
            let mut out = root.init_request_vote();
            out.set_last_log_index(request.last_index.get());
            out.set_last_log_term(request.last_term.get());
            out.set_pre_vote(request.pre_vote);
            out.set_leadership_transfer(request.leadership_transfer);
        }
        OutgoingBody::VoteResponse(response) => {
            let mut out = root.init_vote_response();
            out.set_granted(response.granted);
            out.set_pre_vote(response.pre_vote);
        }
        OutgoingBody::Heartbeat(heartbeat) => {
            let mut out = root.init_heartbeat();
            out.set_leader_commit(heartbeat.leader_commit.get());
            out.set_read_round(heartbeat.read_round);
        }
        OutgoingBody::HeartbeatResponse(response) => {
            let mut out = root.init_heartbeat_response();
            out.set_read_round(response.read_round);
            out.set_match_index(response.match_index.get());
        }
        OutgoingBody::TimeoutNow => root.set_timeout_now(()),
        OutgoingBody::RepairWait(wait) => {
            let mut out = root.init_repair_wait();
            out.set_last_log_index(wait.last_index.get());
            out.set_last_log_term(wait.last_term.get());
            if let Some((term, index)) = wait.acked_end {
                out.set_acked_end_known(true);
                out.set_acked_end_term(term.get());
                out.set_acked_end_index(index.get());
            }
        }
    }
    frame::encode(&builder)
}

/// Who a snapshot-stream message is from and to (the `PeerMessage`
/// envelope fields).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// The Raft group.
    pub group: LogId,
    /// Sender.
    pub from: NodeId,
    /// Receiver.
    pub to: NodeId,
    /// Sender's term.
    pub term: Term,
}

fn envelope(root: &mut peer_message::Builder<'_>, envelope: Envelope) {
    root.set_group(envelope.group.get());
    root.set_from(envelope.from.get());
    root.set_to(envelope.to.get());
    root.set_term(envelope.term.get());
}

/// One chunk of an InstallSnapshot stream: the bytes of the snapshot file
/// at `offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotChunk<'a> {
    /// The snapshot's last index and term (identify the stream).
    pub snapshot: InstallSnapshot,
    /// Bytes of the whole stream.
    pub total_bytes: u64,
    /// Offset of `data` in the stream.
    pub offset: u64,
    /// The bytes.
    pub data: &'a [u8],
    /// The last chunk.
    pub done: bool,
}

/// Encodes an InstallSnapshot chunk. Every chunk carries the header's
/// index, term and total size, so a follower can resume a stream on any
/// chunk after a dropped connection.
pub fn encode_snapshot_chunk(to: Envelope, chunk: &SnapshotChunk<'_>) -> Vec<u8> {
    let mut builder = crate::wire::frame::builder(64);
    let mut root = builder.init_root::<peer_message::Builder<'_>>();
    envelope(&mut root, to);
    let mut install = root.init_install_snapshot();
    let mut header = install.reborrow().init_header();
    header.set_last_index(chunk.snapshot.last_index.get());
    header.set_last_term(chunk.snapshot.last_term.get());
    header.set_total_bytes(chunk.total_bytes);
    install.set_offset(chunk.offset);
    install.set_data(chunk.data);
    install.set_done(chunk.done);
    frame::encode(&builder)
}

/// Encodes a follower's answer to a snapshot stream.
pub fn encode_snapshot_response(to: Envelope, response: SnapshotResponse) -> Vec<u8> {
    let mut builder = crate::wire::frame::builder(64);
    let mut root = builder.init_root::<peer_message::Builder<'_>>();
    envelope(&mut root, to);
    let mut out = root.init_snapshot_response();
    out.set_next_offset(response.next_offset);
    out.set_done(response.done);
    frame::encode(&builder)
}

/// Reads the chunk of an InstallSnapshot frame (one [`decode`] said is
/// one) and hands it to `visit`, borrowing the frame's bytes.
pub fn with_snapshot_chunk<T>(
    bytes: &[u8],
    visit: impl FnOnce(SnapshotChunk<'_>) -> T,
) -> Result<T, WireError> {
    let message = frame::open(bytes)?;
    let root = message.get_root::<peer_message::Reader<'_>>()?;
    let peer_message::InstallSnapshot(install) = root.which()? else {
        return Err(WireError::Malformed("not an InstallSnapshot".into()));
    };
    let install = install?;
    let header = install.get_header()?;
    let data = install.get_data()?;
    let chunk = SnapshotChunk {
        snapshot: InstallSnapshot {
            last_index: LogIndex(header.get_last_index()),
            last_term: Term(header.get_last_term()),
        },
        total_bytes: header.get_total_bytes(),
        offset: install.get_offset(),
        data,
        done: install.get_done(),
    };
    let end = chunk.offset.checked_add(data.len() as u64);
    if end.is_none_or(|end| end > chunk.total_bytes || (chunk.done && end != chunk.total_bytes)) {
        return Err(WireError::Malformed(format!(
            "snapshot chunk at {} of {} bytes outside a stream of {}",
            chunk.offset,
            data.len(),
            chunk.total_bytes
        )));
    }
    Ok(visit(chunk))
}

/// Decodes a `PeerMessage` frame; AppendEntries summaries are written to
/// `batches` (cleared first), checked to be contiguous from `prev + 1` and
/// to add up to `batchBytes`.
pub fn decode(bytes: &[u8], batches: &mut Vec<BatchSummary>) -> Result<PeerHeader, WireError> {
    batches.clear();
    let message = frame::open(bytes)?;
    let root = message.get_root::<peer_message::Reader<'_>>()?;
    let body = match root.which()? {
        peer_message::AppendEntries(append) => decode_append(append?, batches)?,
        peer_message::AppendResponse(response) => {
            let response = response?;
            PeerBody::AppendResponse(AppendResponse {
                success: response.get_success(),
                match_index: LogIndex(response.get_match_index()),
                rejected_index: LogIndex(response.get_rejected_index()),
                hint_index: LogIndex(response.get_hint_index()),
                hint_term: Term(response.get_hint_term()),
                last_index: LogIndex(response.get_last_index()),
            })
        }
        peer_message::RequestVote(request) => {
            let request = request?;
            PeerBody::RequestVote(RequestVote {
                last_index: LogIndex(request.get_last_log_index()),
                last_term: Term(request.get_last_log_term()),
                pre_vote: request.get_pre_vote(),
                leadership_transfer: request.get_leadership_transfer(),
            })
        }
        peer_message::VoteResponse(response) => {
            let response = response?;
            PeerBody::VoteResponse(VoteResponse {
                granted: response.get_granted(),
                pre_vote: response.get_pre_vote(),
            })
        }
        peer_message::Heartbeat(heartbeat) => {
            let heartbeat = heartbeat?;
            PeerBody::Heartbeat(Heartbeat {
                leader_commit: LogIndex(heartbeat.get_leader_commit()),
                read_round: heartbeat.get_read_round(),
            })
        }
        peer_message::HeartbeatResponse(response) => {
            let response = response?;
            PeerBody::HeartbeatResponse(HeartbeatResponse {
                read_round: response.get_read_round(),
                match_index: LogIndex(response.get_match_index()),
            })
        }
        peer_message::TimeoutNow(()) => PeerBody::TimeoutNow,
        peer_message::InstallSnapshot(install) => {
            let header = install?.get_header()?;
            PeerBody::InstallSnapshot(InstallSnapshot {
                last_index: LogIndex(header.get_last_index()),
                last_term: Term(header.get_last_term()),
            })
        }
        peer_message::SnapshotResponse(response) => {
            let response = response?;
            PeerBody::SnapshotResponse(SnapshotResponse {
                next_offset: response.get_next_offset(),
                done: response.get_done(),
            })
        }
        peer_message::RepairWait(wait) => {
            let wait = wait?;
            PeerBody::RepairWait(RepairWait {
                last_index: LogIndex(wait.get_last_log_index()),
                last_term: Term(wait.get_last_log_term()),
                acked_end: wait.get_acked_end_known().then(|| {
                    (
                        Term(wait.get_acked_end_term()),
                        LogIndex(wait.get_acked_end_index()),
                    )
                }),
            })
        }
    };
    let header = PeerHeader {
        group: LogId(root.get_group()),
        from: NodeId(root.get_from()),
        to: NodeId(root.get_to()),
        term: Term(root.get_term()),
        body,
    };
    check_ranges(&header)?;
    Ok(header)
}

/// Refuses a message whose term or any index is above [`INDEX_MAX`], so no
/// arithmetic on them can overflow (a hostile peer's `u64::MAX`).
fn check_ranges(header: &PeerHeader) -> Result<(), WireError> {
    let indexes: &[u64] = match &header.body {
        PeerBody::AppendEntries {
            prev_index,
            prev_term,
            leader_commit,
            ..
        } => &[prev_index.get(), prev_term.get(), leader_commit.get()],
        PeerBody::AppendResponse(response) => &[
            response.match_index.get(),
            response.rejected_index.get(),
            response.hint_index.get(),
            response.hint_term.get(),
            response.last_index.get(),
        ],
        PeerBody::RequestVote(request) => &[request.last_index.get(), request.last_term.get()],
        PeerBody::Heartbeat(heartbeat) => &[heartbeat.leader_commit.get()],
        PeerBody::HeartbeatResponse(response) => &[response.match_index.get()],
        PeerBody::InstallSnapshot(install) => &[install.last_index.get(), install.last_term.get()],
        PeerBody::RepairWait(wait) => &[
            wait.last_index.get(),
            wait.last_term.get(),
            wait.acked_end.map_or(0, |(term, _)| term.get()),
            wait.acked_end.map_or(0, |(_, index)| index.get()),
        ],
        PeerBody::VoteResponse(_) | PeerBody::TimeoutNow | PeerBody::SnapshotResponse(_) => &[],
    };
    if let Some(value) = std::iter::once(header.term.get())
        .chain(indexes.iter().copied())
        .find(|value| *value > INDEX_MAX)
    {
        return Err(WireError::Malformed(format!(
            "a term or index of {value} (the limit is {INDEX_MAX})"
        )));
    }
    Ok(())
}

/// Reads an AppendEntries header, checking its summaries are contiguous
/// from `prev + 1`, within the limit, and add up to `batchBytes`.
fn decode_append(
    append: crate::rast_capnp::append_entries::Reader<'_>,
    batches: &mut Vec<BatchSummary>,
) -> Result<PeerBody, WireError> {
    let prev_index = LogIndex(append.get_prev_log_index());
    if prev_index.get() > INDEX_MAX {
        return Err(WireError::Malformed(format!(
            "prevLogIndex {prev_index} beyond the limit {INDEX_MAX}"
        )));
    }
    let list = append.get_batches()?;
    if list.len() as usize > APPEND_MESSAGE_BATCHES_MAX {
        return Err(WireError::Malformed(format!(
            "{} batches in one AppendEntries (limit {APPEND_MESSAGE_BATCHES_MAX})",
            list.len()
        )));
    }
    let mut next = prev_index.next();
    let mut total = 0u64;
    for entry in list {
        let summary = read_summary(entry)?;
        if summary.first_index != next || summary.count == 0 {
            return Err(WireError::Malformed(
                "AppendEntries batches are not contiguous".into(),
            ));
        }
        if summary.last_index().get() > INDEX_MAX || summary.term.get() > INDEX_MAX {
            return Err(WireError::Malformed(format!(
                "a batch at {} beyond the index or term limit {INDEX_MAX}",
                summary.first_index
            )));
        }
        next = summary.last_index().next();
        total += u64::from(summary.bytes);
        batches.push(summary);
    }
    if total != append.get_batch_bytes() {
        return Err(WireError::Malformed(
            "AppendEntries batchBytes disagrees with its batches".into(),
        ));
    }
    Ok(PeerBody::AppendEntries {
        prev_index,
        prev_term: Term(append.get_prev_log_term()),
        leader_commit: LogIndex(append.get_leader_commit()),
        batch_bytes: total,
    })
}

fn read_summary(entry: batch_summary::Reader<'_>) -> Result<BatchSummary, WireError> {
    let kind: BatchKind = entry.get_kind()?;
    Ok(BatchSummary {
        term: Term(entry.get_term()),
        first_index: LogIndex(entry.get_first_index()),
        count: entry.get_count(),
        bytes: entry.get_bytes(),
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::AppendRange;

    fn outgoing(body: OutgoingBody) -> Outgoing {
        Outgoing {
            from: NodeId(1),
            to: NodeId(2),
            term: Term(3),
            body,
        }
    }

    /// An AppendEntries header round trips with its summaries; a response
    /// and a vote request too.
    #[test]
    fn messages_round_trip() {
        let batches = [
            BatchSummary {
                term: Term(3),
                first_index: LogIndex(5),
                count: 2,
                bytes: 100,
                kind: BatchKind::Data,
            },
            BatchSummary {
                term: Term(3),
                first_index: LogIndex(7),
                count: 1,
                bytes: 64,
                kind: BatchKind::Config,
            },
        ];
        let range = AppendRange {
            prev_index: LogIndex(4),
            prev_term: Term(2),
            leader_commit: LogIndex(4),
            first_index: LogIndex(5),
            last_index: LogIndex(7),
            batches: 2,
            bytes: 164,
        };
        let bytes = encode(
            LogId(9),
            &outgoing(OutgoingBody::AppendEntries(range)),
            &batches,
        );
        let mut decoded = Vec::new();
        let header = decode(&bytes, &mut decoded).unwrap();
        assert_eq!(header.group, LogId(9));
        assert_eq!(header.term, Term(3));
        assert_eq!(
            header.body,
            PeerBody::AppendEntries {
                prev_index: LogIndex(4),
                prev_term: Term(2),
                leader_commit: LogIndex(4),
                batch_bytes: 164
            }
        );
        assert_eq!(decoded, batches);

        let response = AppendResponse {
            success: false,
            match_index: LogIndex(0),
            rejected_index: LogIndex(9),
            hint_index: LogIndex(3),
            hint_term: Term(1),
            last_index: LogIndex(6),
        };
        let bytes = encode(
            LogId(9),
            &outgoing(OutgoingBody::AppendResponse(response)),
            &[],
        );
        assert_eq!(
            decode(&bytes, &mut decoded).unwrap().body,
            PeerBody::AppendResponse(response)
        );
        let vote = RequestVote {
            last_index: LogIndex(8),
            last_term: Term(2),
            pre_vote: true,
            leadership_transfer: false,
        };
        let bytes = encode(LogId(9), &outgoing(OutgoingBody::RequestVote(vote)), &[]);
        assert_eq!(
            decode(&bytes, &mut decoded).unwrap().body,
            PeerBody::RequestVote(vote)
        );
    }

    /// Gaps between summaries, or a batchBytes that lies, are refused.
    #[test]
    fn inconsistent_append_headers_are_refused() {
        let mut batches = vec![BatchSummary {
            term: Term(1),
            first_index: LogIndex(2),
            count: 1,
            bytes: 10,
            kind: BatchKind::Data,
        }];
        let range = AppendRange {
            prev_index: LogIndex(0),
            prev_term: Term(0),
            leader_commit: LogIndex(0),
            first_index: LogIndex(1),
            last_index: LogIndex(2),
            batches: 1,
            bytes: 10,
        };
        let bytes = encode(
            LogId(1),
            &outgoing(OutgoingBody::AppendEntries(range)),
            &batches,
        );
        assert!(matches!(
            decode(&bytes, &mut batches),
            Err(WireError::Malformed(_))
        ));
    }

    /// A hostile peer's `u64::MAX` (or anything above `INDEX_MAX`) in any
    /// index or term is refused as malformed: no arithmetic on it can
    /// overflow (it once panicked at `prevLogIndex + 1`).
    #[test]
    fn indexes_and_terms_beyond_the_limit_are_refused() {
        let huge = LogIndex(u64::MAX);
        let summary = |first: u64| BatchSummary {
            term: Term(1),
            first_index: LogIndex(first),
            count: 3,
            bytes: 10,
            kind: BatchKind::Data,
        };
        let append = |prev: u64, commit: u64, batches: &[BatchSummary]| {
            let range = AppendRange {
                prev_index: LogIndex(prev),
                prev_term: Term(1),
                leader_commit: LogIndex(commit),
                first_index: LogIndex(prev.wrapping_add(1)),
                last_index: LogIndex(prev.wrapping_add(3)),
                batches: batches.len() as u32,
                bytes: 10 * batches.len() as u64,
            };
            encode(
                LogId(1),
                &outgoing(OutgoingBody::AppendEntries(range)),
                batches,
            )
        };
        let mut decoded = Vec::new();
        let limit = INDEX_MAX;
        let refused = [
            append(u64::MAX, 0, &[]),
            append(u64::MAX, 0, &[summary(0)]),
            append(limit, 0, &[summary(limit + 1)]),
            append(limit - 2, 0, &[summary(limit - 1)]),
            append(1, u64::MAX, &[]),
            encode(
                LogId(1),
                &outgoing(OutgoingBody::Heartbeat(Heartbeat {
                    leader_commit: huge,
                    read_round: 0,
                })),
                &[],
            ),
            encode(
                LogId(1),
                &outgoing(OutgoingBody::RequestVote(RequestVote {
                    last_index: huge,
                    last_term: Term(1),
                    pre_vote: false,
                    leadership_transfer: false,
                })),
                &[],
            ),
        ];
        for (case, bytes) in refused.iter().enumerate() {
            assert!(
                matches!(decode(bytes, &mut decoded), Err(WireError::Malformed(_))),
                "case {case} accepted"
            );
        }
        // At the limit exactly: accepted.
        let bytes = append(limit - 3, limit, &[summary(limit - 2)]);
        assert!(decode(&bytes, &mut decoded).is_ok());
        let mut outgoing_term = outgoing(OutgoingBody::TimeoutNow);
        outgoing_term.term = Term(u64::MAX);
        let bytes = encode(LogId(1), &outgoing_term, &[]);
        assert!(decode(&bytes, &mut decoded).is_err(), "a term of u64::MAX");
    }
}
