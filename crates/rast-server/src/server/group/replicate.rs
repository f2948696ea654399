//! Batches between a leader and its followers: an AppendEntries built from
//! the stored batches as they are held (shared memory or file spans, never
//! copied together), and a follower's received batches checked before the
//! core sees them — buffered, or spliced into a reservation of the log file.

use bytes::Bytes;

use super::{Group, GroupError, Outbound, PeerFrame, Piece};
use crate::constants::APPEND_MESSAGE_BYTES_MAX;
use crate::net::codec::{self, PeerBody, PeerHeader};
use crate::raft::{self, Action, AppendEntries, BatchSummary, Body, Message, OutgoingBody};
use crate::server::connection::FileSpan;
use crate::server::metrics::PayloadPath;
use crate::storage;
use crate::storage::segment::Reservation;
use crate::wire::{BatchKind, BatchView, WireError, split_frame};

impl Group {
    /// Reserves `len` bytes of the log file for batches a follower splices
    /// from the socket ([`storage::Reserve`]); `Unsupported` when the store
    /// cannot (in memory) or the group failed.
    pub fn reserve(&mut self, len: u64) -> storage::Reserve {
        if self.failed.is_some() {
            return storage::Reserve::Unsupported;
        }
        match self.storage.reserve(len) {
            Ok(reserved) => reserved,
            Err(error) => {
                tracing::debug!(log = %self.name, %error, "no reservation; receiving into a buffer");
                storage::Reserve::Unsupported
            }
        }
    }

    /// Steps an AppendEntries whose batch frames were spliced into the
    /// `reservation` of the log file.
    ///
    /// The bytes are verified first, read through the file's map (checksums
    /// and each frame against its summary, as for buffered batches): a bad
    /// batch aborts the reservation (its bytes zeroed) and is an error (the
    /// caller closes the connection); the core never sees it and the log
    /// keeps serving. In the steady state (the core appends every batch,
    /// nothing truncated) the reservation is then completed, the bytes never
    /// entering user space; otherwise the bytes the core wants are copied
    /// out of the map (counted), the reservation aborted, and the message
    /// handled as if buffered.
    pub fn step_spliced(
        &mut self,
        header: &PeerHeader,
        batches: &[BatchSummary],
        reservation: Reservation,
        out: &mut Outbound,
    ) -> Result<(), WireError> {
        let checked = match self.storage.reserved_bytes(&reservation) {
            Ok(bytes) => check_received(batches, bytes),
            Err(error) => {
                self.abort_splice(reservation, out);
                self.fail_storage(&error, out);
                return Ok(());
            }
        };
        if let Err(error) = checked {
            self.abort_splice(reservation, out);
            return Err(error);
        }
        let simple_kinds = !batches.iter().any(|batch| batch.kind == BatchKind::Config);
        if simple_kinds
            && let PeerBody::AppendEntries {
                prev_index,
                prev_term,
                leader_commit,
                ..
            } = header.body
        {
            let message = Message {
                from: header.from,
                to: header.to,
                term: header.term,
                body: Body::AppendEntries(AppendEntries {
                    prev_index,
                    prev_term,
                    leader_commit,
                    batches,
                    configs: &[],
                }),
            };
            let mut actions = std::mem::take(&mut self.actions);
            self.core.step(&message, &mut actions);
            let last = batches.last().map(BatchSummary::last_index);
            let first = batches.first().map(|batch| batch.first_index);
            let appends_all = actions.iter().any(|action| {
                matches!(action, Action::AppendReceived { skip: 0, first_index, last_index }
                    if Some(*first_index) == first && Some(*last_index) == last)
            });
            let truncates = actions
                .iter()
                .any(|action| matches!(action, Action::Truncate { .. }));
            if appends_all && !truncates {
                let count = u32::try_from(batches.len()).unwrap_or(u32::MAX);
                self.spliced = Some((reservation, count));
                self.execute(&mut actions, None, None, out);
                if let Some((reservation, _)) = self.spliced.take() {
                    // No AppendReceived consumed it (cannot happen: checked).
                    self.abort_splice(reservation, out);
                }
            } else {
                let bytes = self.take_back(reservation, out);
                self.execute(&mut actions, None, bytes.as_ref(), out);
            }
            self.actions = actions;
            return Ok(());
        }
        match self.take_back(reservation, out) {
            Some(bytes) => self.step(header, batches, &bytes, out),
            None => Ok(()),
        }
    }

    /// Drops a reservation whose splice failed or whose bytes were bad.
    pub fn abort_splice(&mut self, reservation: Reservation, out: &mut Outbound) {
        if let Err(error) = self.storage.abort_reservation(reservation) {
            self.fail_storage(&error, out);
        }
    }

    /// Copies a reservation's (verified) bytes out of the file's map and
    /// aborts it: the rare message whose batches the core does not take
    /// whole. The copy is counted in `out`.
    pub(super) fn take_back(
        &mut self,
        reservation: Reservation,
        out: &mut Outbound,
    ) -> Option<Bytes> {
        let bytes = match self.storage.reserved_bytes(&reservation) {
            Ok(bytes) => Bytes::copy_from_slice(bytes),
            Err(error) => {
                self.abort_splice(reservation, out);
                self.fail_storage(&error, out);
                return None;
            }
        };
        out.payload
            .path(PayloadPath::Follower)
            .add_copied(bytes.len() as u64);
        self.abort_splice(reservation, out);
        Some(bytes)
    }

    /// Sends a message; an AppendEntries carries the stored batches, as
    /// handles on the memory they arrived in, or file spans once written:
    /// never copied together (see [`PeerFrame`]).
    pub(super) fn send(
        &mut self,
        message: &raft::Outgoing,
        out: &mut Outbound,
    ) -> Result<(), GroupError> {
        let OutgoingBody::AppendEntries(range) = message.body else {
            out.peers.push((
                message.to,
                PeerFrame {
                    header: codec::encode(self.id, message, &[]),
                    pieces: Vec::new(),
                },
            ));
            return Ok(());
        };
        let mut summaries = Vec::with_capacity(range.batches as usize);
        let mut pieces = Vec::new();
        let mut next = range.first_index;
        while next <= range.last_index {
            let read = self.storage.read(next, APPEND_MESSAGE_BYTES_MAX as usize)?;
            let mut rest = read.bytes;
            let mut taken = 0usize;
            let before = next;
            while let Some((frame, tail)) = split_frame(rest)? {
                let view = BatchView::parse(frame)?;
                if view.first_index() > range.last_index {
                    break;
                }
                rest = tail;
                if view.last_index() < next {
                    // Before the range (a read starts at the batch holding
                    // `next`, which is a batch start: cannot happen).
                    taken += frame.len();
                    continue;
                }
                summaries.push(summary_of(&view)?);
                taken += frame.len();
                next = view.last_index().next();
            }
            if next == before {
                break;
            }
            let skipped = read.bytes.len() - rest.len() - taken;
            debug_assert_eq!(skipped, 0);
            pieces.push(piece_of(&read, taken, self.file_pieces));
        }
        out.peers.push((
            message.to,
            PeerFrame {
                header: codec::encode(self.id, message, &summaries),
                pieces,
            },
        ));
        Ok(())
    }
}

/// Checks the batch frames that followed an AppendEntries against its
/// summaries before the core sees the message: each frame parses, carries
/// a valid checksum and says what its summary says, and together they fill
/// the bytes exactly. Bad bytes from a peer close its connection; they never
/// reach storage, where a refusal would have to stop the group.
pub(super) fn check_received(batches: &[BatchSummary], bytes: &[u8]) -> Result<(), WireError> {
    let mut rest = bytes;
    for summary in batches {
        let Some((frame, tail)) = split_frame(rest)? else {
            return Err(WireError::Malformed(
                "AppendEntries batches end early".into(),
            ));
        };
        rest = tail;
        let view = BatchView::parse(frame)?;
        view.verify_checksum()?;
        if summary_of(&view)? != *summary {
            return Err(WireError::Malformed(format!(
                "batch at index {} disagrees with its summary",
                view.first_index()
            )));
        }
    }
    if !rest.is_empty() {
        return Err(WireError::Malformed(
            "bytes after the AppendEntries batches".into(),
        ));
    }
    Ok(())
}

/// The first `taken` bytes of a read, as the store holds them: a file span,
/// a handle on shared memory, or (from a store that has neither) a copy.
pub(super) fn piece_of(read: &storage::ReadRange<'_>, taken: usize, files: bool) -> Piece {
    if let Some(span) = read.file.as_ref().filter(|_| files) {
        Piece::File(FileSpan {
            file: std::rc::Rc::clone(span.file),
            offset: span.offset,
            len: taken as u64,
        })
    } else if let Some(shared) = &read.shared {
        Piece::Shared(shared.slice(..taken))
    } else {
        Piece::Copied(Bytes::copy_from_slice(&read.bytes[..taken]))
    }
}

/// The summary of a stored batch.
pub(super) fn summary_of(view: &BatchView<'_>) -> Result<BatchSummary, WireError> {
    Ok(BatchSummary {
        term: view.term(),
        first_index: view.first_index(),
        count: view.count(),
        bytes: view.len() as u32,
        kind: view.kind()?,
    })
}
