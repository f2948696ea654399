//! Committed batches for clients: reads, tails that follow the log as it
//! commits, and the answers to appends once their entries commit; batches
//! go out as file spans or shared memory, never copied.

use super::replicate::piece_of;
use super::{ClientOut, Group, GroupError, Outbound, Piece, ReplyTo, Tail};
use crate::constants::{APPEND_MESSAGE_BYTES_MAX, TAILS_PER_CONNECTION_MAX, TAILS_PER_LOG_MAX};
use crate::storage::StorageError;
use crate::types::LogIndex;
use crate::wire::client::{ErrorKind, ResponseBody};
use crate::wire::{BatchView, split_frame};

impl Group {
    /// Serves a read of committed entries from `from`.
    pub fn read(&mut self, from: LogIndex, max_entries: u32, reply: ReplyTo, out: &mut Outbound) {
        if let Some(first) = self.compacted_below(from) {
            refuse_compacted(reply, first, "read", out);
            return;
        }
        match self.committed_batches(from, max_entries) {
            Ok((_, pieces, count)) => {
                out.reply(reply, ResponseBody::Batches(count));
                out.clients
                    .extend(pieces.into_iter().map(|piece| (reply, piece)));
            }
            Err(GroupError::Storage(StorageError::Compacted { first, .. })) => {
                refuse_compacted(reply, first, "read", out);
            }
            Err(error) => {
                out.error(reply, ErrorKind::Unavailable, error.to_string());
                self.fail_if_damaged(&error, out);
            }
        }
    }

    /// The first index still stored, if `from` is below it (those entries
    /// were dropped after a snapshot or by retention).
    pub(super) fn compacted_below(&self, from: LogIndex) -> Option<LogIndex> {
        let first = self.storage.first_index();
        (from.max(LogIndex(1)) < first).then_some(first)
    }

    /// Starts following the log from `from` (0: from the first entry the
    /// log still keeps).
    pub fn tail(&mut self, from: LogIndex, max_entries: u32, reply: ReplyTo, out: &mut Outbound) {
        let from = if from == LogIndex::ZERO {
            self.storage.first_index()
        } else {
            from
        };
        if let Some(first) = self.compacted_below(from) {
            refuse_compacted(reply, first, "tail", out);
            return;
        }
        let of_connection = self
            .tails
            .iter()
            .filter(|tail| {
                tail.reply.connection == reply.connection
                    && tail.reply.generation == reply.generation
            })
            .count();
        if of_connection >= TAILS_PER_CONNECTION_MAX || self.tails.len() >= TAILS_PER_LOG_MAX {
            out.error(
                reply,
                ErrorKind::TooLarge(TAILS_PER_CONNECTION_MAX as u64),
                format!(
                    "too many tails of log {} (at most {TAILS_PER_CONNECTION_MAX} per connection, {TAILS_PER_LOG_MAX} in all)",
                    self.name
                ),
            );
            return;
        }
        self.tails.push(Tail {
            reply,
            next: from.max(LogIndex(1)),
            max_entries,
        });
        self.serve_tails(out);
    }

    /// Whether the connection follows this log.
    pub fn has_tail_of(&self, connection: usize, generation: u64) -> bool {
        self.tails
            .iter()
            .any(|tail| tail.reply.connection == connection && tail.reply.generation == generation)
    }

    /// Forgets the tails of a closed connection.
    pub fn forget_connection(&mut self, connection: usize, generation: u64) {
        self.tails.retain(|tail| {
            !(tail.reply.connection == connection && tail.reply.generation == generation)
        });
    }

    /// Entries up to `up_to` are committed: answer appends, feed tails.
    pub(super) fn committed(&mut self, up_to: LogIndex, out: &mut Outbound) {
        let mut responses = self.apply_kv(up_to, out);
        while let Some(pending) = self.pending.front().copied() {
            if pending.last_index > up_to {
                break;
            }
            self.pending.pop_front();
            if pending.write {
                self.answer_write(pending, &mut responses, out);
            } else if self.storage.term_at(pending.last_index) == Some(pending.term) {
                out.reply(
                    pending.reply,
                    ResponseBody::Appended {
                        first_index: pending.first_index.get(),
                        count: pending.count,
                        term: pending.term.get(),
                    },
                );
            } else {
                out.error(
                    pending.reply,
                    ErrorKind::NotLeader {
                        leader: self.core.leader().get(),
                        address: self.address_of(self.core.leader()),
                    },
                    "the entry was replaced by a new leader; it was not committed",
                );
            }
        }
        self.serve_tails(out);
    }

    pub(super) fn serve_tails(&mut self, out: &mut Outbound) {
        let mut tails = std::mem::take(&mut self.tails);
        for tail in &mut tails {
            if tail.next > self.core.commit_index() {
                continue;
            }
            match self.committed_batches(tail.next, tail.max_entries) {
                Ok((next, pieces, count)) if count > 0 => {
                    out.reply(tail.reply, ResponseBody::Batches(count));
                    out.clients
                        .extend(pieces.into_iter().map(|piece| (tail.reply, piece)));
                    tail.next = next;
                }
                Ok(_) => {}
                Err(error) => {
                    out.error(tail.reply, ErrorKind::Unavailable, error.to_string());
                    self.fail_if_damaged(&error, out);
                }
            }
        }
        self.tails.extend(tails);
    }

    /// A read that found damage (see [`StorageError::is_damage`]) stops
    /// the group to be reopened and repaired.
    fn fail_if_damaged(&mut self, error: &GroupError, out: &mut Outbound) {
        if let GroupError::Storage(error) = error
            && error.is_damage()
        {
            self.fail_damaged(&error.to_string(), out);
        }
    }

    /// Whole committed batches from the one holding `from`: (next index,
    /// the frames as file spans where they are in a file, else as shared
    /// handles, batch count).
    pub(super) fn committed_batches(
        &self,
        from: LogIndex,
        max_entries: u32,
    ) -> Result<(LogIndex, Vec<ClientOut>, u32), GroupError> {
        let commit = self.core.commit_index();
        let mut pieces = Vec::new();
        let mut count = 0u32;
        let mut entries = 0u64;
        let mut bytes_total = 0usize;
        let mut next = from.max(LogIndex(1)).max(self.storage.first_index());
        while next <= commit
            && bytes_total < APPEND_MESSAGE_BYTES_MAX as usize
            && (max_entries == 0 || entries < u64::from(max_entries))
        {
            let read = self.storage.read(next, APPEND_MESSAGE_BYTES_MAX as usize)?;
            // The prefix of whole committed batches within the limits.
            let mut rest = read.bytes;
            let mut taken = 0usize;
            while let Some((frame, tail)) = split_frame(rest)? {
                let view = BatchView::parse(frame)?;
                let full = bytes_total + taken >= APPEND_MESSAGE_BYTES_MAX as usize
                    || (max_entries > 0 && entries >= u64::from(max_entries));
                if view.last_index() > commit || full {
                    break;
                }
                rest = tail;
                taken += frame.len();
                count += 1;
                entries += u64::from(view.count());
                next = view.last_index().next();
            }
            if taken == 0 {
                break;
            }
            bytes_total += taken;
            pieces.push(match piece_of(&read, taken, self.file_pieces) {
                Piece::File(span) => ClientOut::File(span),
                Piece::Shared(bytes) => ClientOut::Shared(bytes),
                Piece::Copied(bytes) => ClientOut::Copied(bytes),
            });
        }
        Ok((next, pieces, count))
    }
}

/// Answers a read or tail (`verb`) below the first index still stored.
pub(super) fn refuse_compacted(reply: ReplyTo, first: LogIndex, verb: &str, out: &mut Outbound) {
    out.error(
        reply,
        ErrorKind::Compacted(first.get()),
        format!("entries below {first} are compacted; {verb} from {first} on"),
    );
}
