//! Reservations: the next bytes of the active segment, for a follower
//! that splices batches socket → pipe → file; never waits (see `reserve`).

use std::rc::Rc;

use super::SegmentLog;
use super::file::BatchEntry;
use super::write::{Chunk, ChunkState, Pieces, Sync};
use crate::storage::record;
use crate::storage::{Checksum, LogStorage, Reserve, StorageError, unix_now_ms};
use crate::types::LogIndex;

/// The next bytes of the active segment, handed to a caller that writes
/// whole batches there itself (a follower splicing socket → pipe → file).
#[derive(Debug, PartialEq, Eq)]
pub struct Reservation {
    pub(super) segment: u64,
    pub(super) offset: u64,
    pub(super) len: u64,
}

impl Reservation {
    /// Where in the file the bytes go.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// How many bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True for an empty reservation.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl SegmentLog {
    /// Reserves the next `len` bytes of the active segment (of a new one if
    /// they do not fit) for whole batches the caller writes there itself —
    /// a follower splicing socket → pipe → file — starting at the next
    /// index. Appends are refused until [`Self::complete_reservation`] or
    /// [`Self::abort_reservation`].
    ///
    /// Never blocks. The caller writes into the file at once, so the
    /// reservation is [`Reserve::Ready`] only when nothing else is still to
    /// land in the active segment (its queued writes are in the file: a
    /// killed process must not leave a hole before bytes it wrote) and the
    /// segment is named durably (bytes in a file still under its temp name
    /// would be lost with it). Until then it issues what gets it there and
    /// answers [`Reserve::NotYet`]: ask again after a later `poll`.
    pub fn reserve(&mut self, len: u64) -> Result<Reserve, StorageError> {
        self.check_failed()?;
        if self.reserved.is_some() {
            return Err(StorageError::Reserved);
        }
        if len == 0 || len > self.options.segment_bytes {
            return Err(StorageError::InvalidBatch(
                crate::wire::WireError::FrameTooLarge {
                    bytes: len,
                    limit: self.options.segment_bytes as usize,
                },
            ));
        }
        if self.active().end + len > self.options.segment_bytes {
            if !self.next_ready()? {
                return self.not_yet();
            }
            self.roll(self.last_index().next())?;
        }
        self.stage();
        let id = self.active().id;
        if !self.active().named {
            // Named once every older segment is durable (the barrier):
            // its own naming, not linked to a write.
            if self.older_segments_durable(id) {
                let ring = Rc::clone(&self.ring);
                let mut ring = ring.borrow_mut();
                let naming = self.submit_naming(&mut ring, id)?;
                ring.submit()
                    .map_err(|error| StorageError::io("io_uring_enter", &self.dir, error))?;
                self.syncs.push_back(Sync {
                    op: None,
                    segment: id,
                    index: self.synced.max(self.last_index()),
                    done: true,
                    naming,
                });
            }
            return self.not_yet();
        }
        let pending = self
            .syncs
            .iter()
            .any(|sync| sync.segment == id && sync.op.is_none() && !sync.finished())
            || self.chunks.iter().any(|chunk| {
                chunk.segment == id
                    && !matches!(chunk.state, ChunkState::Written | ChunkState::Spliced)
            });
        if pending {
            return self.not_yet();
        }
        let active = self.active();
        debug_assert_eq!(active.written, active.end);
        let reservation = Reservation {
            segment: active.id,
            offset: active.end,
            len,
        };
        let file = Rc::clone(&active.file);
        self.reserved = Some((reservation.segment, reservation.offset, reservation.len));
        Ok(Reserve::Ready(file, reservation))
    }

    /// Issues whatever is queued (so a later `poll` finds progress) and
    /// answers [`Reserve::NotYet`].
    pub(super) fn not_yet(&mut self) -> Result<Reserve, StorageError> {
        self.flush()?;
        Ok(Reserve::NotYet)
    }

    /// Whether the next segment's file is ready for a roll; starts making
    /// it (through the ring) when it is not under way.
    pub(super) fn next_ready(&mut self) -> Result<bool, StorageError> {
        let ring = Rc::clone(&self.ring);
        let mut ring = ring.borrow_mut();
        if self.next.is_none() {
            self.prepare_paused = false;
            self.prepare_next(&mut ring, true)?;
            ring.submit()
                .map_err(|error| StorageError::io("io_uring_enter", &self.dir, error))?;
        }
        self.collect_prepared(&mut ring);
        Ok(match &mut self.next {
            Some(prepared) => prepared.collect(&mut ring),
            // Preparing failed (a full disk?): the roll makes the file
            // itself and reports the error.
            None => true,
        })
    }

    /// The bytes of the open reservation as they are in the file now (read
    /// through the map: the page cache, no copy), for the caller to check
    /// what it wrote there before it counts.
    pub fn reserved_bytes(&self, reservation: &Reservation) -> Result<&[u8], StorageError> {
        assert_eq!(
            self.reserved,
            Some((reservation.segment, reservation.offset, reservation.len)),
            "reading a reservation that is not the open one"
        );
        self.note_mapped_read(reservation.len);
        let active = self.active();
        let start = reservation.offset as usize;
        Ok(&active.mapping()?.bytes()[start..start + reservation.len as usize])
    }

    /// The reserved bytes are written, and the caller verified their
    /// checksums ([`Self::reserved_bytes`]): checks every batch's frame,
    /// index chain and term order and that they exactly fill the
    /// reservation, and adds them to the log. They are readable at once and
    /// durable once a later flush's sync completes. On a bad batch the
    /// reservation is aborted (its bytes zeroed) and the error says what was
    /// wrong.
    pub fn complete_reservation(
        &mut self,
        reservation: Reservation,
    ) -> Result<LogIndex, StorageError> {
        self.check_failed()?;
        assert_eq!(
            self.reserved,
            Some((reservation.segment, reservation.offset, reservation.len)),
            "completing a reservation that is not the open one"
        );
        let metas = {
            self.note_mapped_read(reservation.len);
            let active = self.active();
            let start = reservation.offset as usize;
            let bytes = &active.mapping()?.bytes()[start..start + reservation.len as usize];
            let mut metas = Vec::new();
            let mut next = self.last_index().next();
            let mut floor = self.last_term();
            let mut offset = 0usize;
            while offset < bytes.len() {
                match record::check_record(
                    &bytes[offset..],
                    (start + offset) as u64,
                    next,
                    floor,
                    Checksum::VerifiedByCaller,
                ) {
                    Ok(meta) => {
                        next = meta.last.next();
                        floor = meta.term;
                        offset += meta.bytes as usize;
                        metas.push(meta);
                    }
                    Err(fault) => {
                        let error = StorageError::Corrupt {
                            path: active.path.clone(),
                            offset: (start + offset) as u64,
                            reason: format!("spliced batch refused: {fault:?}"),
                        };
                        self.abort_reservation(reservation)?;
                        return Err(error);
                    }
                }
            }
            metas
        };
        self.reserved = None;
        let last = metas.last().expect("a non-empty reservation").last;
        for meta in &metas {
            self.note_term(meta.first, meta.term);
        }
        let segment = self.segments.back_mut().expect("at least one segment");
        for meta in &metas {
            segment.batches.push(BatchEntry {
                offset: meta.offset as u32,
                delta: (meta.first.get() - segment.first.get()) as u32,
            });
        }
        segment.end += reservation.len;
        segment.last = last;
        segment.modified_ms = unix_now_ms();
        self.chunks.push_back(Chunk {
            segment: reservation.segment,
            offset: reservation.offset,
            len: reservation.len,
            last,
            pieces: Pieces::default(),
            state: ChunkState::Spliced,
            sync_deferred: false,
            cut_at: None,
        });
        Ok(last)
    }

    /// Gives a reservation up: whatever was written into it is zeroed
    /// (through the ring, before any later write into the file: bytes of
    /// valid records left there could come back as log entries after a
    /// crash). Never blocks.
    #[expect(
        clippy::needless_pass_by_value,
        reason = "consumes the reservation so it cannot be used again"
    )]
    pub fn abort_reservation(&mut self, reservation: Reservation) -> Result<(), StorageError> {
        assert_eq!(
            self.reserved,
            Some((reservation.segment, reservation.offset, reservation.len)),
            "aborting a reservation that is not the open one"
        );
        self.reserved = None;
        debug_assert!(self.staging.is_empty(), "appends wait for the reservation");
        self.chunks.push_back(Chunk {
            segment: reservation.segment,
            offset: reservation.offset,
            len: 0,
            last: LogIndex::ZERO,
            pieces: Pieces::default(),
            state: ChunkState::Clear(reservation.len),
            sync_deferred: false,
            cut_at: None,
        });
        Ok(())
    }
}
