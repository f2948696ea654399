//! Writing: appended batches staged as the shared pieces they arrived in,
//! written by chains of vectored writes and syncs through the ring (group
//! commit), and the next segment and the hard state made ahead; see the
//! module docs of `segment`.

use std::rc::Rc;

use bytes::{Bytes, BytesMut};

use super::file::BatchEntry;
use super::{SegmentLog, c_path, describe, segment_name, sync_unless_planted};
use crate::constants::CHUNK_WRITES_MAX;
use crate::constants::IOVECS_MAX;
use crate::constants::WRITE_QUEUE_BYTES_MAX;
use crate::io::{Link, OpId, Ring};
use crate::storage::planted;
use crate::storage::planted::StorageBug;
use crate::storage::{Checksum, LogStorage, StorageError, check_append, unix_now_ms};
use crate::types::LogIndex;

/// Where a queued chunk of bytes is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum ChunkState {
    /// Waiting for a flush (or for earlier segments to become durable).
    Staged,
    /// Its writes are in flight: a linked chain of vectored writes, each
    /// with the bytes it must write and its result once it came.
    Writing(Vec<(OpId, u64, Option<i32>)>),
    /// In the file.
    Written,
    /// Written into the file by someone else (a splice into a
    /// reservation); needs only its sync.
    Spliced,
    /// Zero this many bytes from the chunk's offset (an aborted
    /// reservation's), before any later write into the file.
    Clear(u64),
}

/// Bytes bound for one segment, from one turn.
#[derive(Debug)]
pub(super) struct Chunk {
    pub(super) segment: u64,
    pub(super) offset: u64,
    /// Bytes (the pieces', or a splice's).
    pub(super) len: u64,
    pub(super) last: LogIndex,
    /// The bytes, as the shared pieces they arrived in; empty for spliced
    /// bytes.
    pub(super) pieces: Pieces,
    pub(super) state: ChunkState,
    /// Written without a sync of its own (one was in flight): once in the
    /// file, it waits for the next (`SegmentLog::defer_sync`).
    pub(super) sync_deferred: bool,
    /// Issued before a truncation cut its segment at this byte: what it
    /// writes past the cut is not the log's (see `truncate`).
    pub(super) cut_at: Option<u64>,
}

impl Chunk {
    pub(super) fn end(&self) -> u64 {
        self.offset + self.len
    }

    /// Gives up on its writes still in flight.
    pub(super) fn abandon(self, ring: &mut Ring) {
        if let ChunkState::Writing(writes) = self.state {
            for (op, _, result) in writes {
                if result.is_none() {
                    ring.abandon(op);
                }
            }
        }
    }
}

/// Shared pieces of memory holding whole batches back to back, with each
/// piece's end (in bytes from the first piece's start) for lookups.
#[derive(Debug, Default)]
pub(super) struct Pieces {
    pub(super) pieces: Vec<Bytes>,
    pub(super) ends: Vec<u64>,
}

impl Pieces {
    pub(super) fn bytes(&self) -> u64 {
        self.ends.last().copied().unwrap_or(0)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    pub(super) fn push(&mut self, piece: Bytes) {
        let end = self.bytes() + piece.len() as u64;
        self.pieces.push(piece);
        self.ends.push(end);
    }

    /// Keeps the first `bytes` (a batch boundary: a piece past it is cut
    /// short, those after it dropped).
    pub(super) fn truncate(&mut self, bytes: u64) {
        let kept = self.ends.partition_point(|end| *end < bytes);
        self.pieces.truncate(kept + 1);
        self.ends.truncate(kept + 1);
        if let (Some(last), Some(end)) = (self.pieces.last_mut(), self.ends.last_mut())
            && *end > bytes
        {
            let start = *end - last.len() as u64;
            last.truncate((bytes - start) as usize);
            *end = bytes;
        }
        if self.pieces.last().is_some_and(Bytes::is_empty) {
            self.pieces.pop();
            self.ends.pop();
        }
    }

    /// The piece holding byte `at` (from the first piece's start) and the
    /// offset its first byte is at.
    pub(super) fn holding(&self, at: u64) -> (&Bytes, u64) {
        let position = self.ends.partition_point(|end| *end <= at);
        let start = if position == 0 {
            0
        } else {
            self.ends[position - 1]
        };
        (&self.pieces[position], start)
    }
}

/// Appended bytes not yet handed to a chunk: shared pieces in order, then
/// the bytes copied in by `append(&[u8])` since the last piece.
#[derive(Debug, Default)]
pub(super) struct Staging {
    pub(super) pieces: Pieces,
    /// Copied bytes after the pieces (sealed into a piece before the next
    /// shared one, and when staged).
    pub(super) copy: BytesMut,
    /// Index of the last batch staged.
    pub(super) last: LogIndex,
}

impl Staging {
    pub(super) fn bytes(&self) -> u64 {
        self.pieces.bytes() + self.copy.len() as u64
    }

    pub(super) fn is_empty(&self) -> bool {
        self.pieces.is_empty() && self.copy.is_empty()
    }

    pub(super) fn push(&mut self, piece: Bytes) {
        self.seal_copy();
        self.pieces.push(piece);
    }

    pub(super) fn seal_copy(&mut self) {
        if !self.copy.is_empty() {
            let piece = self.copy.split().freeze();
            self.pieces.push(piece);
        }
    }

    pub(super) fn clear(&mut self) {
        self.pieces = Pieces::default();
        self.copy.clear();
    }
}

/// The expected result of a chunk operation whose result does not matter.
pub(super) const RESULT_IGNORED: u64 = u64::MAX;

/// `fallocate` mode that zeroes a range by deallocating it, keeping the
/// file's size (so maps of it stay valid).
pub(super) const PUNCH_KEEP_SIZE: i32 =
    nix::libc::FALLOC_FL_PUNCH_HOLE | nix::libc::FALLOC_FL_KEEP_SIZE;

/// A sync in flight.
#[derive(Debug)]
pub(super) struct Sync {
    /// The fdatasync; `None` for a segment's naming issued on its own (see
    /// `SegmentLog::reserve`), which is all such a sync waits for.
    pub(super) op: Option<OpId>,
    pub(super) segment: u64,
    /// Last index it covers.
    pub(super) index: LogIndex,
    pub(super) done: bool,
    /// The segment's naming, linked ahead of its first write.
    pub(super) naming: Option<Naming>,
}

impl Sync {
    /// Its own completion and its naming's are all in.
    pub(super) fn finished(&self) -> bool {
        self.done
            && self
                .naming
                .as_ref()
                .is_none_or(|naming| naming.results.iter().all(Option::is_some))
    }

    /// Gives up on whatever of it is still in flight.
    pub(super) fn abandon(self, ring: &mut Ring) {
        if let Some(op) = self.op
            && !self.done
        {
            ring.abandon(op);
        }
        if let Some(naming) = self.naming {
            for (op, result) in naming.ops.iter().zip(naming.results) {
                if result.is_none() {
                    ring.abandon(*op);
                }
            }
        }
    }
}

/// A new segment's rename from its temp name to its real one and the
/// directory fsync after it, linked ahead of its first write.
#[derive(Debug)]
pub(super) struct Naming {
    pub(super) ops: [OpId; 2],
    pub(super) results: [Option<i32>; 2],
}

/// Splits `pieces` into runs of at most `iovecs_max` iovecs each (see
/// [`crate::io::ring::iovecs_of`]: pieces back to back in memory share one).
pub(super) fn iovec_groups(pieces: &[Bytes], iovecs_max: usize) -> Vec<std::ops::Range<usize>> {
    let mut groups = Vec::new();
    let mut start = 0;
    let mut iovecs = 0;
    let mut end: *const u8 = std::ptr::null();
    for (position, piece) in pieces.iter().enumerate() {
        if piece.as_ptr() != end || piece.is_empty() {
            if iovecs == iovecs_max {
                groups.push(start..position);
                start = position;
                iovecs = 0;
            }
            iovecs += 1;
        }
        end = piece.as_ptr().wrapping_add(piece.len());
    }
    if start < pieces.len() {
        groups.push(start..pieces.len());
    }
    groups
}

impl SegmentLog {
    /// Moves the staged pieces into chunks for the active segment (each
    /// written with at most [`CHUNK_WRITES_MAX`] linked vectored writes).
    pub(super) fn stage(&mut self) {
        if self.staging.is_empty() {
            return;
        }
        self.staging.seal_copy();
        let staged = std::mem::take(&mut self.staging.pieces);
        let active = self.segments.back().expect("at least one segment");
        let (id, end) = (active.id, active.end);
        let mut offset = end - staged.bytes();
        let groups = iovec_groups(&staged.pieces, CHUNK_WRITES_MAX * IOVECS_MAX);
        let chunks = groups.len();
        let mut pieces = staged.pieces.into_iter();
        for (position, group) in groups.into_iter().enumerate() {
            let mut chunk_pieces = Pieces::default();
            for piece in pieces.by_ref().take(group.len()) {
                chunk_pieces.push(piece);
            }
            let len = chunk_pieces.bytes();
            // Only the last chunk's end is known to be a batch end here
            // (a piece holds whole batches, so every chunk's end is one,
            // but only the last one's index is at hand): earlier chunks
            // report no index of their own, and their sync is the last's.
            let last = if position + 1 == chunks {
                self.staging.last
            } else {
                LogIndex::ZERO
            };
            self.chunks.push_back(Chunk {
                segment: id,
                offset,
                len,
                last,
                pieces: chunk_pieces,
                state: ChunkState::Staged,
                sync_deferred: false,
                cut_at: None,
            });
            offset += len;
        }
        debug_assert_eq!(offset, end);
    }

    /// True when no bytes or syncs of a segment older than `segment` are
    /// pending: writes to `segment` may start.
    pub(super) fn older_segments_durable(&self, segment: u64) -> bool {
        self.deferred_sync
            .is_none_or(|(deferred, _)| deferred >= segment)
            && self
                .chunks
                .front()
                .is_none_or(|chunk| chunk.segment >= segment)
            && self
                .syncs
                .front()
                .is_none_or(|sync| sync.segment >= segment)
    }

    /// True when every write queued before the chunk at `position` into the
    /// same segment has completed: writes into a file are issued one after
    /// the other in offset order, so a killed process never leaves a hole
    /// before bytes it wrote (the page cache keeps what was written, and a
    /// hole followed by records reads as corruption, not as a torn tail).
    /// A new segment's naming is linked ahead of its first write, so this
    /// also holds its later writes until it is named.
    pub(super) fn earlier_writes_done(&self, position: usize) -> bool {
        let segment = self.chunks[position].segment;
        self.chunks
            .range(..position)
            .all(|chunk| chunk.segment != segment || !matches!(chunk.state, ChunkState::Writing(_)))
    }

    /// Collects finished completions and issues the flushed work they
    /// unblock (a new segment's bytes once the older segments are durable,
    /// a hard state once the previous write finished), until nothing more
    /// can be issued.
    ///
    /// Afterwards, flushed work still pending has an operation of its own in
    /// flight whose completion no one has reaped: the one it waits for. So a
    /// caller that waits on the ring after `flush` or `poll` is woken, and
    /// its next `poll` moves on. (Deciding on stale completions, and issuing
    /// only at `flush`, is what hung the 4 GiB benchmark at its first roll:
    /// the new segment's bytes waited for a sync whose completion had
    /// already been reaped, with nothing left in flight.)
    pub(super) fn advance(&mut self, ring: &mut Ring) -> Result<(), StorageError> {
        loop {
            ring.reap();
            self.collect(ring)?;
            let issued = self.submit_chunks(ring)?
                + self.submit_deferred_sync(ring)?
                + self.submit_hard_state(ring)?
                + self.submit_mark(ring)?
                + self.submit_unlinks(ring)?
                + self.submit_dir_sync(ring)?
                + self.prepare_next(ring, false)?;
            if issued == 0 {
                break;
            }
            ring.submit()
                .map_err(|error| StorageError::io("io_uring_enter", &self.dir, error))?;
        }
        debug_assert!(
            !self.flushed_work_pending() || ring.in_flight() > 0,
            "flushed work pending with nothing in flight"
        );
        Ok(())
    }

    /// Flushed writes, syncs or hard state not yet finished.
    pub(super) fn flushed_work_pending(&self) -> bool {
        !self.chunks.is_empty()
            || !self.syncs.is_empty()
            || self.deferred_sync.is_some()
            || !self.unlinks.is_empty()
            || self.hard_state_flushed.is_some()
            || self.hard_state_write.is_some()
            || self.dir_sync_queued
            || self.dir_sync.is_some()
            || self.mark.pending(self.synced)
    }

    /// Issues the directory's fsync after segments were removed, unless one
    /// is in flight (the next covers what this one might not); returns how
    /// many operations it queued.
    pub(super) fn submit_dir_sync(&mut self, ring: &mut Ring) -> Result<usize, StorageError> {
        if !self.dir_sync_queued || self.dir_sync.is_some() {
            return Ok(0);
        }
        let op = ring
            .fsync(&self.dir_file, Link::None)
            .map_err(|error| StorageError::io("submit", &self.dir, error))?;
        self.dir_sync = Some(op);
        self.dir_sync_queued = false;
        Ok(1)
    }

    /// Issues the chunks whose older segments are durable; returns how
    /// many operations it queued.
    pub(super) fn submit_chunks(&mut self, ring: &mut Ring) -> Result<usize, StorageError> {
        let mut issued = 0;
        for position in 0..self.chunks.len() {
            let chunk = &self.chunks[position];
            if !matches!(
                chunk.state,
                ChunkState::Staged | ChunkState::Spliced | ChunkState::Clear(_)
            ) {
                continue;
            }
            if !self.older_segments_durable(chunk.segment) || !self.earlier_writes_done(position) {
                break;
            }
            if matches!(chunk.state, ChunkState::Clear(_))
                && (!self.unlinks.is_empty() || !self.mark.settled())
            {
                // A truncation's zeroing waits for the later segments to be
                // gone (a crash must leave a longer log, never a gap), and
                // for the durable mark to be at or below the kept log (see
                // `mark`).
                break;
            }
            let naming = self.submit_naming(ring, chunk.segment)?;
            let chunk = &self.chunks[position];
            // Group commit: while a sync of this file is in flight, data
            // is written without a sync of its own; one sync issued when
            // that one completes covers all of it (`submit_deferred_sync`).
            // The kernel would run the syncs one after the other anyway.
            let defer = naming.is_none()
                && !matches!(chunk.state, ChunkState::Clear(_))
                && self.sync_in_flight(chunk.segment);
            let segment = self
                .segments
                .iter()
                .find(|segment| segment.id == chunk.segment)
                .expect("chunk of a live segment");
            let io = |error| StorageError::io("submit", &segment.path, error);
            let state = if chunk.state == ChunkState::Spliced {
                ChunkState::Written
            } else if let ChunkState::Clear(len) = chunk.state {
                // Punch the bytes out, reserve the blocks again (only a
                // later full disk cares: its failure is tolerated, and the
                // hard link lets the sync run anyway), then the sync.
                ring.reserve(4).map_err(io)?;
                let punch = ring
                    .fallocate_mode(
                        &segment.file,
                        PUNCH_KEEP_SIZE,
                        chunk.offset,
                        len,
                        Link::Next,
                    )
                    .map_err(io)?;
                let again = ring
                    .fallocate(&segment.file, chunk.offset, len, Link::Hard)
                    .map_err(io)?;
                issued += 2;
                ChunkState::Writing(vec![(punch, 0, None), (again, RESULT_IGNORED, None)])
            } else {
                // One chain: the vectored writes in order, then the sync
                // (unless deferred: then the chain ends with the writes).
                let groups = iovec_groups(&chunk.pieces.pieces, IOVECS_MAX);
                ring.reserve(groups.len() + 2).map_err(io)?;
                let mut writes = Vec::with_capacity(groups.len());
                let mut offset = chunk.offset;
                let count = groups.len();
                for (position, group) in groups.into_iter().enumerate() {
                    let pieces = chunk.pieces.pieces[group].to_vec();
                    let len: u64 = pieces.iter().map(|piece| piece.len() as u64).sum();
                    let link = if defer && position + 1 == count {
                        Link::None
                    } else {
                        Link::Next
                    };
                    let write = ring
                        .writev_at(&segment.file, pieces, offset, link)
                        .map_err(io)?;
                    writes.push((write, len, None));
                    offset += len;
                }
                issued += writes.len();
                ChunkState::Writing(writes)
            };
            let (segment_id, last) = (chunk.segment, chunk.last);
            issued += if naming.is_some() { 2 } else { 0 };
            if defer {
                self.chunks[position].sync_deferred = true;
                self.chunks[position].state = state;
                if self.chunks[position].state == ChunkState::Written {
                    // Spliced: in the file already.
                    self.defer_sync(segment_id, last);
                }
                continue;
            }
            let rides = self.mark.can_ride();
            let link = if rides { Link::Next } else { Link::None };
            let sync = sync_unless_planted(ring, &segment.file, StorageBug::NoFdatasync, link)
                .map_err(io)?;
            issued += 1;
            self.syncs_issued += 1;
            self.chunks[position].state = state;
            self.syncs.push_back(Sync {
                op: Some(sync),
                segment: segment_id,
                index: last,
                done: false,
                naming,
            });
            if rides {
                issued += self.chain_mark(ring, last)?;
            }
        }
        Ok(issued)
    }

    /// A sync of `segment` is issued and has not completed.
    pub(super) fn sync_in_flight(&self, segment: u64) -> bool {
        self.syncs
            .iter()
            .any(|sync| sync.segment == segment && sync.op.is_some() && !sync.done)
    }

    /// Bytes of `segment` up to index `last` are in the file and wait for
    /// the sync in flight to end before a sync of their own.
    pub(super) fn defer_sync(&mut self, segment: u64, last: LogIndex) {
        let index = match self.deferred_sync {
            Some((deferred, index)) => {
                debug_assert_eq!(deferred, segment, "one segment is written at a time");
                index.max(last)
            }
            None => last,
        };
        self.deferred_sync = Some((segment, index));
    }

    /// Issues the sync deferred while another was in flight, once none is;
    /// returns how many operations it queued.
    pub(super) fn submit_deferred_sync(&mut self, ring: &mut Ring) -> Result<usize, StorageError> {
        let Some((segment_id, index)) = self.deferred_sync else {
            return Ok(0);
        };
        if self.sync_in_flight(segment_id) {
            return Ok(0);
        }
        let segment = self
            .segments
            .iter()
            .find(|segment| segment.id == segment_id)
            .expect("a deferred sync of a live segment");
        let rides = self.mark.can_ride();
        let link = if rides { Link::Next } else { Link::None };
        let io = |error| StorageError::io("submit", &segment.path, error);
        ring.reserve(2).map_err(io)?;
        let sync =
            sync_unless_planted(ring, &segment.file, StorageBug::NoFdatasync, link).map_err(io)?;
        self.syncs_issued += 1;
        self.deferred_sync = None;
        self.syncs.push_back(Sync {
            op: Some(sync),
            segment: segment_id,
            index,
            done: false,
            naming: None,
        });
        Ok(1 + if rides {
            self.chain_mark(ring, index)?
        } else {
            0
        })
    }

    /// Before a new segment's first write: queues its rename to its real
    /// name and a directory fsync, linked ahead of that write (which the
    /// caller queues next), after making room for the whole chain. Every
    /// earlier segment is durable by then (the barrier), so a named
    /// segment never follows a gap. Just makes room for a named one.
    pub(super) fn submit_naming(
        &mut self,
        ring: &mut Ring,
        segment_id: u64,
    ) -> Result<Option<Naming>, StorageError> {
        let dir = &self.dir;
        let dir_file = &self.dir_file;
        let segment = self
            .segments
            .iter_mut()
            .find(|segment| segment.id == segment_id)
            .expect("chunk of a live segment");
        let io = |error| StorageError::io("submit", &segment.path, error);
        if segment.named {
            ring.reserve(2).map_err(io)?;
            return Ok(None);
        }
        ring.reserve(4).map_err(io)?;
        let path = dir.join(segment_name(segment.first));
        let rename = ring
            .rename(c_path(&segment.path), c_path(&path), Link::Next)
            .map_err(io)?;
        let sync = sync_unless_planted(
            ring,
            dir_file,
            StorageBug::NoNewSegmentDirectorySync,
            Link::Next,
        )
        .map_err(io)?;
        segment.path = path;
        segment.named = true;
        Ok(Some(Naming {
            ops: [rename, sync],
            results: [None; 2],
        }))
    }

    /// Takes finished completions and advances the marks.
    pub(super) fn collect(&mut self, ring: &mut Ring) -> Result<(), StorageError> {
        self.collect_prepared(ring);
        self.collect_unlinks(ring)?;
        let mut failure = None;
        for sync in &mut self.syncs {
            let Some(naming) = &mut sync.naming else {
                continue;
            };
            for (op, result) in naming.ops.iter().zip(naming.results.iter_mut()) {
                if result.is_none() {
                    *result = ring.take(*op);
                }
            }
            if naming
                .results
                .iter()
                .any(|result| result.is_some_and(|result| result < 0))
            {
                failure = Some(format!(
                    "naming a new segment failed (rename, directory fsync): {:?}",
                    naming.results
                ));
            }
        }
        if let Some(reason) = failure {
            return Err(self.fail(ring, reason));
        }
        let mut failure = None;
        let mut written_unsynced = Vec::new();
        for chunk in &mut self.chunks {
            let ChunkState::Writing(writes) = &mut chunk.state else {
                continue;
            };
            for (op, _, result) in writes.iter_mut() {
                if result.is_none() {
                    *result = ring.take(*op);
                }
            }
            if writes.iter().all(|(_, _, result)| result.is_some()) {
                for (_, len, result) in writes.iter() {
                    let result = result.expect("all present");
                    if *len != RESULT_IGNORED && (result < 0 || result as u64 != *len) {
                        failure = Some(format!(
                            "write of {len} bytes (of {} at offset {}) returned {}",
                            chunk.len,
                            chunk.offset,
                            describe(result)
                        ));
                    }
                }
                chunk.state = ChunkState::Written;
                if chunk.sync_deferred {
                    written_unsynced.push((chunk.segment, chunk.last));
                }
            }
        }
        for (segment, last) in written_unsynced {
            self.defer_sync(segment, last);
        }
        if let Some(reason) = failure {
            return Err(self.fail(ring, reason));
        }
        self.retire_written_chunks();
        let mut failure = None;
        for sync in &mut self.syncs {
            if !sync.done
                && let Some(op) = sync.op
                && let Some(result) = ring.take(op)
            {
                sync.done = true;
                if result < 0 {
                    failure = Some(format!("fdatasync failed: {}", describe(result)));
                }
            }
        }
        if let Some(reason) = failure {
            return Err(self.fail(ring, reason));
        }
        while self.syncs.front().is_some_and(Sync::finished) {
            let sync = self.syncs.pop_front().expect("front exists");
            self.synced = self.synced.max(sync.index);
            if planted::is_planted(StorageBug::NoDurableMark) {
                self.durability.index = self.synced;
            }
        }
        self.collect_mark(ring)?;
        if let Some(op) = self.dir_sync
            && let Some(result) = ring.take(op)
        {
            self.dir_sync = None;
            if result < 0 {
                let reason = format!("fsync of the log directory failed: {}", describe(result));
                return Err(self.fail(ring, reason));
            }
        }
        self.collect_hard_state(ring)
    }

    /// Pops the chunks whose bytes are all in the file, in order, and
    /// moves each segment's written mark past them.
    fn retire_written_chunks(&mut self) {
        while self
            .chunks
            .front()
            .is_some_and(|chunk| chunk.state == ChunkState::Written)
        {
            let chunk = self.chunks.pop_front().expect("front exists");
            // A truncated segment's chunks land in an unlinked file.
            let Some(segment) = self.segment_by_id(chunk.segment) else {
                continue;
            };
            if chunk.len == 0 {
                // A zeroing (an aborted reservation's, a truncation's): the
                // file is the log's up to its offset.
                segment.written = chunk.offset;
            } else if let Some(cut) = chunk.cut_at {
                segment.written = segment.written.max(chunk.end().min(cut));
            } else {
                debug_assert_eq!(segment.written, chunk.offset);
                segment.written = chunk.end();
            }
        }
    }

    /// Stops the store for good (fail-stop): in-flight operations are
    /// abandoned, every later call fails.
    pub(super) fn fail(&mut self, ring: &mut Ring, reason: String) -> StorageError {
        tracing::error!(dir = %self.dir.display(), %reason, "log storage failed; stopping it");
        for chunk in self.chunks.drain(..) {
            chunk.abandon(ring);
        }
        for sync in self.syncs.drain(..) {
            sync.abandon(ring);
        }
        self.deferred_sync = None;
        for unlinking in self.unlinks.drain(..) {
            unlinking.abandon(ring);
        }
        if let Some(write) = self.hard_state_write.take() {
            write.abandon(ring);
        }
        if let Some(op) = self.dir_sync.take() {
            ring.abandon(op);
        }
        self.mark.abandon(ring);
        self.failed = Some(reason.clone());
        StorageError::Failed(reason)
    }

    /// Anything queued, in flight or waiting.
    pub(super) fn busy(&self) -> bool {
        !self.staging.is_empty() || self.hard_state_queued.is_some() || self.flushed_work_pending()
    }

    /// Abandons every pending write and sync (their results no longer
    /// matter: the bytes are being discarded).
    pub(super) fn abandon_pending(&mut self) {
        let ring = Rc::clone(&self.ring);
        let mut ring = ring.borrow_mut();
        for chunk in self.chunks.drain(..) {
            chunk.abandon(&mut ring);
        }
        for sync in self.syncs.drain(..) {
            sync.abandon(&mut ring);
        }
        self.deferred_sync = None;
        for unlinking in self.unlinks.drain(..) {
            unlinking.abandon(&mut ring);
        }
        self.mark.abandon(&mut ring);
        self.staging.clear();
    }

    /// Drops the bytes not yet issued and waits for the operations already
    /// issued (the log is being discarded): no rename still in flight may
    /// name a segment after the old ones are removed.
    pub(super) fn finish_issued(&mut self) -> Result<(), StorageError> {
        self.staging.clear();
        self.chunks.retain(|chunk| {
            !matches!(
                chunk.state,
                ChunkState::Staged | ChunkState::Spliced | ChunkState::Clear(_)
            )
        });
        let ring = Rc::clone(&self.ring);
        let mut ring = ring.borrow_mut();
        loop {
            ring.reap();
            self.collect(&mut ring)?;
            if self.chunks.is_empty() && self.syncs.is_empty() {
                // Written bytes whose sync was deferred are being
                // discarded with the rest.
                self.deferred_sync = None;
                return self
                    .mark
                    .finish(&mut ring)
                    .map_err(|error| StorageError::io("io_uring_enter", &self.dir, error));
            }
            ring.wait_for_completion()
                .map_err(|error| StorageError::io("io_uring_enter", &self.dir, error))?;
        }
    }

    /// Checks a frame appended next (see [`LogStorage::append`]), rolls to
    /// a new segment if it does not fit, and indexes it; the caller stages
    /// its bytes. Returns its last index.
    pub(super) fn admit(
        &mut self,
        frame: &[u8],
        checksum: Checksum,
    ) -> Result<LogIndex, StorageError> {
        self.check_failed()?;
        if self.reserved.is_some() {
            return Err(StorageError::Reserved);
        }
        let (first, last, term) =
            check_append(frame, self.last_index().next(), self.last_term(), checksum)?;
        let bytes = frame.len() as u64;
        if bytes > self.options.segment_bytes {
            return Err(StorageError::InvalidBatch(
                crate::wire::WireError::FrameTooLarge {
                    bytes,
                    limit: self.options.segment_bytes as usize,
                },
            ));
        }
        self.check_budget(bytes)?;
        if self.active().end + bytes > self.options.segment_bytes {
            self.roll(first)?;
        }
        let stamp = self.staging.is_empty();
        let segment = self.segments.back_mut().expect("at least one segment");
        if stamp {
            // A turn's appends are stamped at its first, once per turn: a
            // clock read per append would cost the hot path for a figure
            // retention reads in seconds.
            segment.modified_ms = unix_now_ms();
        }
        segment.batches.push(BatchEntry {
            offset: segment.end as u32,
            delta: (first.get() - segment.first.get()) as u32,
        });
        segment.end += bytes;
        segment.last = last;
        self.staging.last = last;
        self.note_term(first, term);
        Ok(last)
    }

    /// Bytes held for writing: staged, and queued or in flight in chunks
    /// (spliced bytes are in the file already). Bounded by
    /// [`WRITE_QUEUE_BYTES_MAX`] (appends beyond it are refused).
    pub(super) fn held_bytes(&self) -> u64 {
        self.staging.bytes()
            + self
                .chunks
                .iter()
                .map(|chunk| chunk.pieces.bytes())
                .sum::<u64>()
    }

    /// Refuses `bytes` more when the write budget cannot hold them.
    pub(super) fn check_budget(&self, bytes: u64) -> Result<(), StorageError> {
        let held = self.held_bytes();
        if held + bytes > WRITE_QUEUE_BYTES_MAX as u64 {
            return Err(StorageError::Backpressure { bytes: held });
        }
        Ok(())
    }
}
