//! Truncating a suffix (a follower's conflict) without blocking: the cut
//! takes effect in memory at once, and on disk through the ring, in an
//! order a crash cannot break:
//!
//! ```text
//!  truncate_suffix(from)
//!    memory: batches, terms, ends and durability cut at once; staged bytes
//!            past the cut dropped; writes already issued past it marked so
//!            neither reads nor the written mark use them
//!    disk:   unlink the later segments, newest first ─► fsync the directory
//!            ─► (writes already issued land) ─► punch the cut segment's tail
//!            ─► fsync ─► appends after the cut are written
//! ```
//!
//! Until the later segments are gone the cut segment's tail is not zeroed
//! (a crash then leaves a longer log, never a gap before a later segment),
//! and every append after the cut is written, and reported durable, only
//! after the zeroing: a crash before that finds the old suffix, as if the
//! truncation had not happened, and the leader repeats it.

use std::collections::VecDeque;

use super::write::{Chunk, ChunkState, Pieces};
use super::{SegmentLog, c_path};
use crate::io::{Link, OpId, Ring};
use crate::storage::StorageError;
use crate::types::LogIndex;

/// Later segments' files being removed: unlinks newest first, then an
/// fsync of the directory, linked; each op's result once it came. Issued
/// once the durable mark is at or below the kept log (see `mark`).
#[derive(Debug)]
pub(super) struct Unlinking {
    /// The files, newest first, until issued.
    pub(super) paths: Vec<std::ffi::CString>,
    pub(super) ops: Vec<OpId>,
    pub(super) results: Vec<Option<i32>>,
}

impl Unlinking {
    /// Takes whatever results have come; true once all have.
    pub(super) fn collect(&mut self, ring: &mut Ring) -> bool {
        if self.ops.is_empty() {
            return false;
        }
        for (op, result) in self.ops.iter().zip(self.results.iter_mut()) {
            if result.is_none() {
                *result = ring.take(*op);
            }
        }
        self.results.iter().all(Option::is_some)
    }

    /// Gives up on what is still in flight.
    pub(super) fn abandon(self, ring: &mut Ring) {
        for (op, result) in self.ops.iter().zip(self.results) {
            if result.is_none() {
                ring.abandon(*op);
            }
        }
    }
}

impl SegmentLog {
    /// See the module docs. `from` is a batch start inside the log.
    pub(super) fn truncate_without_blocking(&mut self, from: LogIndex) -> Result<(), StorageError> {
        let at = self
            .segments
            .partition_point(|segment| segment.first <= from)
            - 1;
        let Some(cut) = self.segments[at].batch_offset(from)? else {
            return Err(StorageError::NotBatchBoundary(from));
        };
        // Staged bytes become chunks, so one rule trims them all.
        self.stage();
        // A segment that starts at the cut goes whole, unless it is the
        // only one.
        let keep = if at > 0 && self.segments[at].first == from {
            at
        } else {
            at + 1
        };
        let doomed: Vec<_> = self.segments.drain(keep..).collect();
        let doomed_ids: Vec<u64> = doomed.iter().map(|segment| segment.id).collect();
        self.unlink_newest_first(doomed.iter().rev().map(|segment| c_path(&segment.path)));
        // Chunks of removed segments not issued yet are dropped; issued ones
        // land in unlinked files.
        self.chunks.retain(|chunk| {
            !(doomed_ids.contains(&chunk.segment)
                && matches!(
                    chunk.state,
                    ChunkState::Staged | ChunkState::Spliced | ChunkState::Clear(_)
                ))
        });
        let cut_segment = self.segments.back_mut().expect("at least one segment");
        if from <= cut_segment.last {
            let old_end = cut_segment.end;
            let kept = cut_segment
                .batches
                .partition_point(|entry| u64::from(entry.offset) < cut);
            cut_segment.batches.truncate(kept);
            cut_segment.dense_from = cut_segment.dense_from.min(kept);
            cut_segment.end = cut;
            cut_segment.written = cut_segment.written.min(cut);
            cut_segment.last = from.prev();
            let id = cut_segment.id;
            self.trim_chunks(id, cut, from.prev());
            self.chunks.push_back(Chunk {
                segment: id,
                offset: cut,
                len: 0,
                last: LogIndex::ZERO,
                pieces: Pieces::default(),
                state: ChunkState::Clear(old_end - cut),
                sync_deferred: false,
                cut_at: None,
            });
        }
        while self.terms.last().is_some_and(|(start, _)| *start >= from) {
            self.terms.pop();
        }
        // No sync in flight may report what was cut as durable, and the
        // disk work waits for the mark to come down to the kept log.
        let kept_last = from.prev();
        for sync in &mut self.syncs {
            sync.index = sync.index.min(kept_last);
        }
        if let Some((_, index)) = &mut self.deferred_sync {
            *index = (*index).min(kept_last);
        }
        self.synced = self.synced.min(kept_last);
        self.durability.index = self.durability.index.min(kept_last);
        self.mark.limit_to(kept_last);
        let ring = std::rc::Rc::clone(&self.ring);
        self.advance(&mut ring.borrow_mut())
    }

    /// Trims the chunks of segment `id` at byte `cut`, where index
    /// `kept_last` ends: those not issued yet lose their bytes past it
    /// (whole batches: the cut is a batch start); those issued are marked,
    /// so that neither reads nor the written mark take their bytes past it.
    fn trim_chunks(&mut self, id: u64, cut: u64, kept_last: LogIndex) {
        let mut kept = VecDeque::with_capacity(self.chunks.len());
        for mut chunk in self.chunks.drain(..) {
            if chunk.segment != id || chunk.end() <= cut {
                kept.push_back(chunk);
                continue;
            }
            match chunk.state {
                ChunkState::Staged if chunk.offset < cut => {
                    chunk.pieces.truncate(cut - chunk.offset);
                    chunk.len = cut - chunk.offset;
                    chunk.last = chunk.last.min(kept_last);
                    kept.push_back(chunk);
                }
                // Not issued, wholly past the cut: dropped (a spliced
                // chunk's bytes are zeroed with the rest of the tail).
                ChunkState::Staged | ChunkState::Spliced => {}
                ChunkState::Writing(_) | ChunkState::Written | ChunkState::Clear(_) => {
                    chunk.cut_at = Some(chunk.cut_at.map_or(cut, |earlier| earlier.min(cut)));
                    kept.push_back(chunk);
                }
            }
        }
        self.chunks = kept;
    }

    /// Queues the removal of `paths` (newest first) and an fsync of the
    /// directory after them (see [`SegmentLog::submit_unlinks`]).
    fn unlink_newest_first(&mut self, paths: impl Iterator<Item = std::ffi::CString>) {
        let paths: Vec<_> = paths.collect();
        if !paths.is_empty() {
            self.unlinks.push_back(Unlinking {
                paths,
                ops: Vec::new(),
                results: Vec::new(),
            });
        }
    }

    /// Issues the queued removals, linked, once the durable mark is at or
    /// below the kept log; returns how many operations it queued.
    pub(super) fn submit_unlinks(&mut self, ring: &mut Ring) -> Result<usize, StorageError> {
        if !self.mark.settled() {
            return Ok(0);
        }
        let mut issued = 0;
        for unlinking in self
            .unlinks
            .iter_mut()
            .filter(|unlinking| unlinking.ops.is_empty())
        {
            let io = |error| StorageError::io("submit", &self.dir, error);
            ring.reserve(unlinking.paths.len() + 1).map_err(io)?;
            for path in std::mem::take(&mut unlinking.paths) {
                unlinking
                    .ops
                    .push(ring.unlinkat(path, Link::Next).map_err(io)?);
            }
            unlinking
                .ops
                .push(ring.fsync(&self.dir_file, Link::None).map_err(io)?);
            unlinking.results = vec![None; unlinking.ops.len()];
            issued += unlinking.ops.len();
        }
        Ok(issued)
    }

    /// Takes the unlinks' results; a failure is fail-stop (the log on disk
    /// would not be the one in memory).
    pub(super) fn collect_unlinks(&mut self, ring: &mut Ring) -> Result<(), StorageError> {
        while let Some(unlinking) = self.unlinks.front_mut() {
            if !unlinking.collect(ring) {
                return Ok(());
            }
            let unlinking = self.unlinks.pop_front().expect("front exists");
            if unlinking
                .results
                .iter()
                .any(|result| result.is_some_and(|result| result < 0))
            {
                let reason = format!(
                    "removing truncated segments failed: {:?}",
                    unlinking.results
                );
                return Err(self.fail(ring, reason));
            }
        }
        Ok(())
    }
}
