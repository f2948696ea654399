//! The log on disk: segment files written through io_uring.
//!
//! ```text
//!  <dir>/lock                         flock: one process per log directory
//!  <dir>/hard-state                   see `hard_state`
//!  <dir>/durable                      see `durable_mark`: what was reported durable
//!  <dir>/00000000000000000001.log     segment: records from index 1
//!  <dir>/00000000000000052213.log     segment: records from index 52213 (active)
//! ```
//!
//! A segment is named by the first index it holds (20 digits, so names sort
//! by index), preallocated to `segment_bytes` with `fallocate` (writes into
//! it never allocate, so a full disk shows only when a segment is created),
//! and holds whole records back to back, then zeros (see `record`).
//!
//! # Writing
//!
//! ```text
//!  append ──► staging buffer (heap, bounded) ──flush──► write ─link─► fdatasync
//!                                                         one pair per file per turn
//!  poll ◄── completions: written mark advances; synced index advances over
//!           the prefix of finished syncs; durable index follows the
//!           durable mark's writes (see `mark`)
//! ```
//!
//! Appends are copied into a staging buffer; `flush` hands it to one io_uring
//! write linked to one `fdatasync` of the file (the link makes the sync start
//! after the write, so it covers it). Syncs finish over a prefix in flush
//! order; an index is reported durable once the durable mark, written and
//! synced after it, says so too (see `mark`).
//!
//! Memory is bounded by what the buffers hold, not by the bytes in them:
//! the staging buffer, the buffers of chunks queued or in flight and the
//! spare buffers kept for reuse together have at most
//! [`WRITE_QUEUE_BYTES_MAX`] of capacity (appends beyond it are refused with
//! back-pressure), never the log. A turn that fills less than half of its
//! staging buffer is copied into a buffer of its own size, so many small
//! turns in flight do not each pin a large buffer.
//!
//! Writes into one file are issued one at a time, in offset order (the
//! next once the previous completed, which is usually during its own
//! submit): a killed process then never leaves a hole before bytes it
//! wrote, which recovery could not tell from corruption. A power cut can
//! still reorder unsynced pages: recovery then refuses to open (safe).
//!
//! A new segment receives data only once every earlier segment is durable
//! (its writes wait in the queue for that), so a torn record can only be in
//! the last segment; recovery refuses a torn record anywhere else.
//!
//! `drop_prefix` deletes whole segments and issues one fsync of the
//! directory through the ring, collected like the data syncs: the removal
//! is durable once it completes, and its failure is fail-stop too.
//!
//! # Reading
//!
//! Bytes already written are read through a read-only map of the segment
//! (and can be handed to `sendfile`/`splice` by file and offset); bytes
//! still queued or in flight are read from their buffer.
//!
//! # Index
//!
//! Per segment: batch starts, each its offset and its first index relative
//! to the segment's (two `u32`s); per log, the indexes where the term
//! changes. Both are rebuilt on open by scanning (and verifying) every
//! segment.
//!
//! The index is dense (every batch) where bytes may still be in buffers and
//! sparse where they are all in the file, so its memory does not grow with
//! the log: a segment that is sealed and written keeps one entry per
//! [`INDEX_STRIDE_BYTES`] of file (the first batch starting in each
//! stride), and a read there walks the records from the entry before it,
//! verifying each (at most a stride more than it returns):
//!
//! ```text
//!   sealed, written:  ▼ stride 0      ▼ stride 1        ▼ stride 2
//!                     │b│b│b│b│b│b│b│b│b│b│b│b│b│b│b│b│b│b│b│b│b│ ...
//!   active:           ▼ ▼ ▼ ▼ ▼ ▼ ▼ ▼ ▼   (every batch: may be in buffers)
//! ```
//!
//! A sealed segment is made sparse at the roll after the one that sealed
//! it (by then its writes have landed), or on open; a truncation into a
//! sparse segment cuts the index there and later appends index densely.

use std::cell::Cell;
use std::collections::VecDeque;
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use nix::fcntl::{FallocateFlags, fallocate};

use bytes::Bytes;

use crate::constants::{
    MAPPED_READ_BYTES_RELEASE, SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN, WRITE_HEADROOM_BYTES,
    WRITE_QUEUE_BYTES_MAX,
};
use crate::io::{Link, OpId, Ring, SharedRing};
use crate::raft::action::TERM_UNKNOWN;
use crate::storage::durable_mark::{self, Slot};
use crate::storage::hard_state::{self, sync_directory};
use crate::storage::planted::{self, StorageBug};
use crate::storage::{
    Checksum, Durability, FileSpan, HardState, LogStorage, ReadRange, Reserve, SegmentInfo,
    StorageError, check_stored,
};
use crate::types::{LogIndex, Term};

mod ahead;
mod file;
mod mark;
mod recover;
mod reserve;
mod truncate;
mod write;

use self::ahead::{HardStateWrite, Prepared};
use self::file::{Segment, Source};
use self::mark::MarkWriter;
pub use self::reserve::Reservation;
use self::truncate::Unlinking;
use self::write::{Chunk, Staging, Sync};
use crate::constants::{INDEX_STRIDE_BYTES, LOCK_ATTEMPTS_MAX};

/// Suffix of segment file names.
const SEGMENT_SUFFIX: &str = ".log";

/// Suffix of files being prepared (removed on open).
const TEMP_SUFFIX: &str = ".tmp";

/// Name of the lock file.
const LOCK_NAME: &str = "lock";

/// How a [`SegmentLog`] is laid out.
#[derive(Clone, Copy, Debug)]
pub struct SegmentOptions {
    /// Size of each segment file (preallocated).
    pub segment_bytes: u64,
    /// Write zeros over each new segment (through the ring, ahead of its
    /// roll) instead of only reserving its blocks: appends then overwrite
    /// written blocks, so a sync has no extent to convert from unwritten
    /// and no journal commit to wait for. Costs the segment's size in disk
    /// writes once per segment.
    pub zero_fill: bool,
}

impl Default for SegmentOptions {
    fn default() -> Self {
        Self {
            segment_bytes: SEGMENT_BYTES_MAX,
            zero_fill: false,
        }
    }
}

/// The io_uring segment store; see the module docs.
#[derive(Debug)]
pub struct SegmentLog {
    dir: PathBuf,
    dir_file: Rc<File>,
    _lock: File,
    options: SegmentOptions,
    ring: SharedRing,
    segments: VecDeque<Segment>,
    next_segment_id: u64,
    /// (first index, term) where each term starts.
    terms: Vec<(LogIndex, Term)>,
    /// Queued bytes for the active segment, ending at its `end`.
    staging: Staging,
    chunks: VecDeque<Chunk>,
    syncs: VecDeque<Sync>,
    /// Bytes in the file (of a segment, up to an index) whose sync waits
    /// for the one in flight (group commit; see `submit_chunks`).
    deferred_sync: Option<(u64, LogIndex)>,
    /// Segments removed by truncations, being unlinked (see `truncate`).
    unlinks: VecDeque<Unlinking>,
    /// Data syncs issued so far (group commit shows in how few).
    syncs_issued: u64,
    hard_state: HardState,
    /// Stored since the last flush.
    hard_state_queued: Option<HardState>,
    /// Flushed, waiting for the write in flight to finish.
    hard_state_flushed: Option<HardState>,
    hard_state_write: Option<HardStateWrite>,
    /// Segments were removed: the directory needs an fsync.
    dir_sync_queued: bool,
    /// The directory's fsync in flight.
    dir_sync: Option<OpId>,
    /// The next segment's file, made ahead (see [`Prepared`]).
    next: Option<Prepared>,
    /// Files prepared so far (names them apart).
    prepared_count: u64,
    /// A preparation failed (a full disk?): the next roll creates its
    /// segment itself, which reports the error, and preparing resumes.
    prepare_paused: bool,
    /// Every entry up to this index is synced in its segment (reported
    /// durable once the durable mark says so too: see `mark`).
    synced: LogIndex,
    /// The durable mark (`storage::durable_mark`) and its writes.
    mark: MarkWriter,
    durability: Durability,
    failed: Option<String>,
    /// An open reservation (segment id, offset, length).
    reserved: Option<(u64, u64, u64)>,
    /// Bytes read through segment maps since their pages were last
    /// released (see [`MAPPED_READ_BYTES_RELEASE`]).
    mapped_reads: Cell<u64>,
    /// What recovery found damaged and cut, one line each, naming the
    /// file (see [`LogStorage::damage_report`]).
    damage: Vec<String>,
    /// The durable mark found at open, as the end of the log this node may
    /// have acknowledged up to (`raft::HardState::acked_end`); `None` when
    /// it does not read or does not know its term.
    acked_end: Option<(Term, LogIndex)>,
}

impl SegmentLog {
    /// Opens (or creates) the log in `dir` with a ring of its own.
    pub fn open_standalone(dir: &Path, options: SegmentOptions) -> Result<Self, StorageError> {
        let ring = Ring::new().map_err(|error| StorageError::io("io_uring_setup", dir, error))?;
        Self::open(dir, options, Rc::new(std::cell::RefCell::new(ring)))
    }

    /// Opens (or creates) the log in `dir`, submitting onto `ring`.
    ///
    /// Verifies every record of every segment. A torn final record is cut
    /// off; any other damage, a missing segment or an overlapping one fails
    /// with [`StorageError::Corrupt`] naming the file and byte offset.
    pub fn open(
        dir: &Path,
        options: SegmentOptions,
        ring: SharedRing,
    ) -> Result<Self, StorageError> {
        assert!(
            (SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&options.segment_bytes),
            "segment size out of range"
        );
        hard_state::create_dir_durably(dir)
            .map_err(|error| StorageError::io("create", dir, error))?;
        let lock = lock_directory(dir)?;
        let dir_file = File::open(dir).map_err(|error| StorageError::io("open", dir, error))?;
        let loaded = hard_state::load(dir)?;
        let (mark_file, mark_found) = durable_mark::open(dir)?;
        let mark_slot = match mark_found {
            durable_mark::Found::Mark(slot) => slot,
            durable_mark::Found::Nothing | durable_mark::Found::Unknown(_) => Slot {
                seq: 0,
                index: LogIndex::ZERO,
                term: Term::ZERO,
            },
        };
        // What this node may have acknowledged up to, should recovery find
        // damage: the mark's entry, when the mark reads and knows its term
        // (no mark: a log from before it, taken as unknown).
        let acked_end = match &mark_found {
            durable_mark::Found::Mark(slot) if slot.term != TERM_UNKNOWN => {
                Some((slot.term, slot.index))
            }
            _ => None,
        };
        let hard_state = match &loaded {
            hard_state::Loaded::State(state) => *state,
            hard_state::Loaded::Missing | hard_state::Loaded::Lost(_) => HardState::default(),
        };
        let mut log = Self {
            dir: dir.to_path_buf(),
            dir_file: Rc::new(dir_file),
            _lock: lock,
            options,
            ring,
            segments: VecDeque::new(),
            next_segment_id: 0,
            terms: Vec::new(),
            staging: Staging::default(),
            chunks: VecDeque::new(),
            syncs: VecDeque::new(),
            deferred_sync: None,
            unlinks: VecDeque::new(),
            syncs_issued: 0,
            hard_state,
            hard_state_queued: None,
            hard_state_flushed: None,
            hard_state_write: None,
            dir_sync_queued: false,
            dir_sync: None,
            next: None,
            prepared_count: 0,
            prepare_paused: false,
            synced: LogIndex::ZERO,
            mark: MarkWriter::new(mark_file, mark_slot),
            durability: Durability {
                index: LogIndex::ZERO,
                hard_state,
            },
            failed: None,
            reserved: None,
            mapped_reads: Cell::new(0),
            damage: Vec::new(),
            acked_end,
        };
        let torn_cut = log.recover()?;
        log.check_mark(&mark_found, torn_cut)?;
        let lost = match loaded {
            hard_state::Loaded::State(_) => None,
            // A new log; gone under entries, it was lost (a node writes its
            // term before it takes an entry).
            hard_state::Loaded::Missing if log.last_index() == LogIndex::ZERO => None,
            hard_state::Loaded::Missing => {
                Some("the file is gone but the log holds entries".to_owned())
            }
            hard_state::Loaded::Lost(reason) => Some(reason),
        };
        if let Some(reason) = lost {
            log.mark_lost(&reason)?;
        }
        Ok(log)
    }

    /// The directory of this log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Paths of the segment files, oldest first.
    pub fn segment_paths(&self) -> Vec<PathBuf> {
        self.segments
            .iter()
            .map(|segment| segment.path.clone())
            .collect()
    }

    /// The ring this store submits onto.
    pub fn ring(&self) -> &SharedRing {
        &self.ring
    }

    fn take_segment_id(&mut self) -> u64 {
        self.next_segment_id += 1;
        self.next_segment_id
    }

    /// Creates and preallocates a new empty segment under a temp name: it
    /// gets its real name (`name_segment`) only when its first write is
    /// issued, which is after every earlier segment is durable. A crash
    /// before that leaves a temp file that open removes, never a named
    /// segment after a gap.
    fn create_segment(&mut self, first: LogIndex) -> Result<Segment, StorageError> {
        let temp = self
            .dir
            .join(format!("{}{TEMP_SUFFIX}", segment_name(first)));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)
            .map_err(|error| StorageError::io("create", &temp, error))?;
        if let Err(error) = preallocate(&file, &temp, self.options.segment_bytes) {
            let _ = fs::remove_file(&temp);
            return Err(error);
        }
        file.sync_all()
            .map_err(|error| StorageError::io("fsync", &temp, error))?;
        Ok(Segment::empty(
            self.take_segment_id(),
            first,
            false,
            temp,
            Rc::new(file),
            self.options.segment_bytes,
        ))
    }

    /// Gives a new segment its real name, durably.
    fn name_segment(&self, segment: &mut Segment) -> Result<(), StorageError> {
        if segment.named {
            return Ok(());
        }
        let path = self.dir.join(segment_name(segment.first));
        fs::rename(&segment.path, &path)
            .map_err(|error| StorageError::io("rename", &path, error))?;
        sync_directory(&self.dir)?;
        segment.path = path;
        segment.named = true;
        Ok(())
    }

    fn note_term(&mut self, index: LogIndex, term: Term) {
        if self.terms.last().is_none_or(|(_, last)| *last != term) {
            self.terms.push((index, term));
        }
    }

    fn check_failed(&self) -> Result<(), StorageError> {
        match &self.failed {
            Some(reason) => Err(StorageError::Failed(reason.clone())),
            None => Ok(()),
        }
    }

    fn last_term(&self) -> Term {
        self.terms.last().map_or(Term::ZERO, |(_, term)| *term)
    }

    /// Counts `bytes` about to be read through a segment map; past
    /// [`MAPPED_READ_BYTES_RELEASE`], unmaps every segment's pages from the
    /// process first, so replication and reads never make the log's whole
    /// files resident in its memory.
    fn note_mapped_read(&self, bytes: u64) {
        let total = self.mapped_reads.get() + bytes;
        if total <= MAPPED_READ_BYTES_RELEASE {
            self.mapped_reads.set(total);
            return;
        }
        for segment in &self.segments {
            if let Some(map) = segment.map.get() {
                map.release_resident();
            }
        }
        self.mapped_reads.set(bytes);
    }

    fn active(&self) -> &Segment {
        self.segments.back().expect("at least one segment")
    }

    /// The segment of id `id`, if the log still has it (a truncation
    /// removes segments that may have writes in flight).
    fn segment_by_id(&mut self, id: u64) -> Option<&mut Segment> {
        self.segments.iter_mut().find(|segment| segment.id == id)
    }

    fn remove_segment_file(path: &Path) -> Result<(), StorageError> {
        fs::remove_file(path).map_err(|error| StorageError::io("remove", path, error))
    }
}

impl LogStorage for SegmentLog {
    fn writable_bytes(&self) -> u64 {
        if self.reserved.is_some() || self.failed.is_some() {
            return 0;
        }
        (WRITE_QUEUE_BYTES_MAX as u64)
            .saturating_sub(self.held_bytes() + WRITE_HEADROOM_BYTES as u64)
    }

    fn reserve(&mut self, len: u64) -> Result<Reserve, StorageError> {
        SegmentLog::reserve(self, len)
    }

    fn reserved_bytes(&self, reservation: &Reservation) -> Result<&[u8], StorageError> {
        SegmentLog::reserved_bytes(self, reservation)
    }

    fn complete_reservation(&mut self, reservation: Reservation) -> Result<LogIndex, StorageError> {
        SegmentLog::complete_reservation(self, reservation)
    }

    fn abort_reservation(&mut self, reservation: Reservation) -> Result<(), StorageError> {
        SegmentLog::abort_reservation(self, reservation)
    }

    fn append(&mut self, frame: &[u8]) -> Result<LogIndex, StorageError> {
        let last = self.admit(frame, Checksum::Verify)?;
        self.staging.copy.extend_from_slice(frame);
        Ok(last)
    }

    fn append_shared(&mut self, frame: Bytes) -> Result<LogIndex, StorageError> {
        let last = self.admit(&frame, Checksum::VerifiedByCaller)?;
        self.staging.push(frame);
        Ok(last)
    }

    fn store_hard_state(&mut self, state: HardState) -> Result<(), StorageError> {
        self.check_failed()?;
        self.hard_state = state;
        self.hard_state_queued = Some(state);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StorageError> {
        self.check_failed()?;
        self.stage();
        if let Some(state) = self.hard_state_queued.take() {
            self.hard_state_flushed = Some(state);
        }
        let ring = Rc::clone(&self.ring);
        let mut ring = ring.borrow_mut();
        self.advance(&mut ring)
    }

    fn poll(&mut self) -> Result<Durability, StorageError> {
        self.check_failed()?;
        let ring = Rc::clone(&self.ring);
        let mut ring = ring.borrow_mut();
        self.advance(&mut ring)?;
        Ok(self.durability)
    }

    fn sync_all(&mut self) -> Result<Durability, StorageError> {
        self.flush()?;
        // After a flush or poll, pending work has an operation in flight
        // (see `advance`), so each wait returns.
        while self.busy() {
            self.ring
                .borrow_mut()
                .wait_for_completion()
                .map_err(|error| StorageError::io("io_uring_enter", &self.dir, error))?;
            self.poll()?;
        }
        Ok(self.durability)
    }

    fn durability(&self) -> Durability {
        self.durability
    }

    fn first_index(&self) -> LogIndex {
        self.segments.front().expect("at least one segment").first
    }

    fn last_index(&self) -> LogIndex {
        self.active().last
    }

    fn term_at(&self, index: LogIndex) -> Option<Term> {
        if index == LogIndex::ZERO {
            return Some(Term::ZERO);
        }
        if index < self.first_index() || index > self.last_index() {
            return None;
        }
        let position = self.terms.partition_point(|(start, _)| *start <= index);
        Some(self.terms[position - 1].1)
    }

    fn read(&self, from: LogIndex, max_bytes: usize) -> Result<ReadRange<'_>, StorageError> {
        self.check_failed()?;
        check_stored(from, self.first_index(), self.last_index())?;
        let at = self
            .segments
            .partition_point(|segment| segment.first <= from)
            - 1;
        let segment = &self.segments[at];
        let start_position = segment.position(from);
        if start_position < segment.dense_from {
            return self.read_sparse(segment, start_position, from, max_bytes);
        }
        let start = u64::from(segment.batches[start_position].offset);
        let source = self.source(segment, start);
        let limit = source.limit();
        let mut position = start_position;
        while position + 1 < segment.batches.len() {
            let next_end = segment.batch_end(position + 1);
            if next_end > limit || next_end - start > max_bytes as u64 {
                break;
            }
            position += 1;
        }
        let end = segment.batch_end(position);
        let first = segment.batch_first(start_position);
        let last = segment.batch_last(position);
        match source {
            Source::Piece {
                piece, start: at, ..
            } => {
                let range = (start - at) as usize..(end - at) as usize;
                return Ok(ReadRange {
                    first,
                    last,
                    bytes: &piece[range.clone()],
                    file: None,
                    shared: Some(piece.slice(range)),
                });
            }
            Source::Copy { bytes, start: at } => {
                return Ok(ReadRange {
                    first,
                    last,
                    bytes: &bytes[(start - at) as usize..(end - at) as usize],
                    file: None,
                    shared: None,
                });
            }
            Source::File { .. } => {}
        }
        self.note_mapped_read(end - start);
        segment.walk_range(start, end, first, |_| true)?;
        let bytes = &segment.mapping()?.bytes()[start as usize..end as usize];
        Ok(ReadRange {
            first,
            last,
            bytes,
            file: Some(FileSpan {
                file: &segment.file,
                offset: start,
            }),
            shared: None,
        })
    }

    fn truncate_suffix(&mut self, from: LogIndex) -> Result<(), StorageError> {
        self.check_failed()?;
        if from == self.last_index().next() {
            return Ok(());
        }
        check_stored(from, self.first_index(), self.last_index())?;
        self.truncate_without_blocking(from)
    }

    fn drop_prefix(&mut self, up_to: LogIndex) -> Result<(), StorageError> {
        self.check_failed()?;
        while self.segments.len() > 1 {
            let oldest = &self.segments[0];
            let pending = self.chunks.iter().any(|chunk| chunk.segment == oldest.id)
                || self.syncs.iter().any(|sync| sync.segment == oldest.id);
            if oldest.last > up_to || pending {
                break;
            }
            let segment = self.segments.pop_front().expect("more than one");
            Self::remove_segment_file(&segment.path)?;
            self.dir_sync_queued = true;
        }
        let first = self.first_index();
        let keep = self.terms.partition_point(|(start, _)| *start <= first);
        if keep > 1 {
            self.terms.drain(..keep - 1);
        }
        if let Some(entry) = self.terms.first_mut() {
            entry.0 = entry.0.max(first);
        }
        // The removal is made durable by a directory fsync issued now and
        // collected like the other syncs (a failure is fail-stop).
        let ring = Rc::clone(&self.ring);
        self.advance(&mut ring.borrow_mut())
    }

    fn reset(&mut self, next: LogIndex) -> Result<(), StorageError> {
        self.check_failed()?;
        // Prepare the new segment under a temp name, remove the old ones
        // newest first, then name the new one: a crash midway leaves a
        // prefix of the old log (the snapshot covers the rest) or nothing.
        let temp = self
            .dir
            .join(format!("{}{TEMP_SUFFIX}", segment_name(next)));
        let path = self.dir.join(segment_name(next));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)
            .map_err(|error| StorageError::io("create", &temp, error))?;
        if let Err(error) = preallocate(&file, &temp, self.options.segment_bytes).and_then(|()| {
            file.sync_all()
                .map_err(|error| StorageError::io("fsync", &temp, error))
        }) {
            let _ = fs::remove_file(&temp);
            return Err(no_space_or(error));
        }
        self.finish_issued()?;
        // A crash below may leave any prefix of the old log, or none: the
        // mark goes to zero first, so that none reads as damage, and to
        // the new log's end once it is in place.
        self.mark
            .store_blocking(&self.dir, LogIndex::ZERO, Term::ZERO)?;
        while let Some(segment) = self.segments.pop_back() {
            Self::remove_segment_file(&segment.path)?;
        }
        sync_directory(&self.dir)?;
        fs::rename(&temp, &path).map_err(|error| StorageError::io("rename", &path, error))?;
        if !planted::is_planted(StorageBug::NoNewSegmentDirectorySync) {
            sync_directory(&self.dir)?;
        }
        let segment = Segment::empty(
            self.take_segment_id(),
            next,
            true,
            path,
            Rc::new(file),
            self.options.segment_bytes,
        );
        self.segments.push_back(segment);
        self.terms.clear();
        // The new log's end is a snapshot's, whose term is not kept here.
        self.mark
            .store_blocking(&self.dir, next.prev(), TERM_UNKNOWN)?;
        self.synced = next.prev();
        self.durability.index = next.prev();
        Ok(())
    }

    fn hard_state(&self) -> HardState {
        self.hard_state
    }

    fn segments(&self) -> Vec<SegmentInfo> {
        self.segments
            .iter()
            .map(|segment| SegmentInfo {
                first: segment.first,
                last: segment.last,
                bytes: segment.end,
                modified_ms: segment.modified_ms,
            })
            .collect()
    }

    /// Without building the segment list: the gauges and the disk quota
    /// read it every tick.
    fn damage_found(&self) -> u64 {
        self.damage.len() as u64
    }

    fn damage_report(&self) -> Vec<String> {
        self.damage.clone()
    }

    fn stored_bytes(&self) -> u64 {
        self.segments.iter().map(|segment| segment.end).sum()
    }
}

impl Drop for SegmentLog {
    fn drop(&mut self) {
        // In-flight operations own their buffers and files in the ring; a
        // shared ring outlives this store and completes them on its own.
        self.abandon_pending();
        let mut ring = self.ring.borrow_mut();
        if let Some(write) = self.hard_state_write.take() {
            write.abandon(&mut ring);
        }
        if let Some(op) = self.dir_sync.take() {
            ring.abandon(op);
        }
        if let Some(prepared) = self.next.take() {
            prepared.discard(&mut ring);
        }
    }
}

/// Takes the directory's lock file, refusing a second opener.
fn lock_directory(dir: &Path) -> Result<File, StorageError> {
    let path = dir.join(LOCK_NAME);
    let lock = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|error| StorageError::io("create", &path, error))?;
    // A process forked elsewhere in this program (a child being spawned)
    // briefly shares the open file description of a lock just released, so
    // a reopen right after a close can find it still held: retry a while.
    let mut attempts = 0;
    loop {
        match lock.try_lock() {
            Ok(()) => return Ok(lock),
            Err(std::fs::TryLockError::WouldBlock) if attempts < LOCK_ATTEMPTS_MAX => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(error) => {
                return Err(StorageError::io(
                    "lock (is another process using this log?)",
                    &path,
                    std::io::Error::other(error.to_string()),
                ));
            }
        }
    }
}

/// Reserves `bytes` of disk for `file`.
fn preallocate(file: &File, path: &Path, bytes: u64) -> Result<(), StorageError> {
    fallocate(file, FallocateFlags::empty(), 0, bytes as i64)
        .map_err(|errno| StorageError::io("fallocate", path, std::io::Error::from(errno)))
}

/// [`StorageError::NoSpace`] for an IO error that is ENOSPC, else `error`.
fn no_space_or(error: StorageError) -> StorageError {
    match error {
        StorageError::Io { source, .. } if source.raw_os_error() == Some(nix::libc::ENOSPC) => {
            StorageError::NoSpace
        }
        other => other,
    }
}

fn segment_name(first: LogIndex) -> String {
    format!("{:020}{SEGMENT_SUFFIX}", first.get())
}

/// The segment files of the log directory `dir` by first index, as they
/// are now (nothing removed; none when it cannot be read): for readers
/// beside the store (the scrubber, the fault harness).
pub fn segment_files(dir: &Path) -> Vec<(LogIndex, PathBuf)> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<(LogIndex, PathBuf)> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name();
            let first = parse_segment_name(name.to_str()?.strip_suffix(SEGMENT_SUFFIX)?)?;
            Some((first, entry.path()))
        })
        .collect();
    files.sort();
    files
}

fn parse_segment_name(stem: &str) -> Option<LogIndex> {
    if stem.len() != 20 || !stem.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    stem.parse()
        .ok()
        .map(LogIndex)
        .filter(|first| *first > LogIndex::ZERO)
}

fn c_path(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).expect("paths hold no NUL")
}

fn describe(result: i32) -> String {
    if result < 0 {
        std::io::Error::from_raw_os_error(-result).to_string()
    } else {
        format!("{result} bytes")
    }
}

/// `fdatasync` of a segment, or `fsync` of a directory (for the bugs named
/// after directories), through the ring; a no-op where `bug` is planted
/// (test builds only, see [`planted`]).
fn sync_unless_planted(
    ring: &mut Ring,
    file: &Rc<File>,
    bug: StorageBug,
    link: Link,
) -> std::io::Result<OpId> {
    if planted::is_planted(bug) {
        return ring.nop(link);
    }
    match bug {
        StorageBug::NoFdatasync => ring.fdatasync(file, link),
        StorageBug::NoHardStateDirectorySync | StorageBug::NoNewSegmentDirectorySync => {
            ring.fsync(file, link)
        }
        StorageBug::NoDurableMark => unreachable!("not a sync"),
    }
}

#[cfg(test)]
pub(crate) mod tests;
