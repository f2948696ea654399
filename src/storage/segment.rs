//! The log on disk: segment files written through io_uring.
//!
//! ```text
//!  <dir>/lock                         flock: one process per log directory
//!  <dir>/hard-state                   see `hard_state`
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
//!  poll ◄── completions: written mark advances; durable index advances over
//!           the prefix of finished syncs
//! ```
//!
//! Appends are copied into a staging buffer; `flush` hands it to one io_uring
//! write linked to one `fdatasync` of the file (the link makes the sync start
//! after the write, so it covers it). Durability is reported over the prefix
//! of finished syncs in flush order.
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

use std::cell::{Cell, OnceCell};
use std::collections::VecDeque;
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use nix::fcntl::{FallocateFlags, fallocate};

use bytes::{Bytes, BytesMut};

use crate::constants::{
    MAPPED_READ_BYTES_RELEASE, SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN, WRITE_HEADROOM_BYTES,
    WRITE_QUEUE_BYTES_MAX,
};
use crate::io::ring::IOVECS_MAX;
use crate::io::{Link, Mapping, OpId, Ring, SharedRing};
use crate::storage::hard_state::{self, sync_directory};
use crate::storage::record::{self, RecordMeta};
use crate::storage::{
    Checksum, Durability, FileSpan, HardState, LogStorage, ReadRange, Reserve, SegmentInfo,
    StorageError, check_append, unix_ms, unix_now_ms,
};
use crate::types::{LogIndex, Term};

/// Suffix of segment file names.
const SEGMENT_SUFFIX: &str = ".log";
/// Suffix of files being prepared (removed on open).
const TEMP_SUFFIX: &str = ".tmp";
/// Name of the lock file.
const LOCK_NAME: &str = "lock";
/// Tries at taking the directory lock, 10 ms apart.
const LOCK_ATTEMPTS_MAX: u32 = 100;
/// A sealed, written segment keeps one index entry per this many bytes of
/// file: 8 bytes of memory per 64 KiB of log, and a read walks at most
/// this much more than it returns.
pub const INDEX_STRIDE_BYTES: u64 = 64 * 1024;

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

/// The zeros a segment is filled with, a write at a time.
static ZEROS: [u8; 1024 * 1024] = [0; 1024 * 1024];

/// One batch in a segment's index.
#[derive(Clone, Copy, Debug)]
struct BatchEntry {
    /// Byte offset of the frame in the file.
    offset: u32,
    /// First index minus the segment's first index.
    delta: u32,
}

/// One segment file.
#[derive(Debug)]
struct Segment {
    /// Increases with every segment this store creates or opens.
    id: u64,
    first: LogIndex,
    /// Last index stored (`first - 1` when empty).
    last: LogIndex,
    /// False while the file has its temp name (see `create_segment`).
    named: bool,
    path: PathBuf,
    file: Rc<File>,
    /// File size (preallocated).
    file_bytes: u64,
    /// Offset past the last record, queued ones included.
    end: u64,
    /// Every byte below this offset is in the file (writes completed).
    written: u64,
    /// Batch starts: every batch from `dense_from` on, and before it
    /// (bytes all in the file) possibly only one per stride (module docs).
    batches: Vec<BatchEntry>,
    /// Position in `batches` from which every batch has an entry.
    dense_from: usize,
    /// Made on the first read of written bytes.
    map: OnceCell<Mapping>,
    /// Unix-epoch ms of the last append into it (the file's mtime for a
    /// segment recovered and not appended to since).
    modified_ms: u64,
}

impl Segment {
    /// The batch holding `index` (which the segment must hold).
    fn position(&self, index: LogIndex) -> usize {
        let delta = index.get() - self.first.get();
        self.batches
            .partition_point(|batch| u64::from(batch.delta) <= delta)
            - 1
    }

    fn batch_end(&self, position: usize) -> u64 {
        self.batches
            .get(position + 1)
            .map_or(self.end, |next| u64::from(next.offset))
    }

    fn batch_last(&self, position: usize) -> LogIndex {
        self.batches.get(position + 1).map_or(self.last, |next| {
            LogIndex(self.first.get() + u64::from(next.delta) - 1)
        })
    }

    fn batch_first(&self, position: usize) -> LogIndex {
        LogIndex(self.first.get() + u64::from(self.batches[position].delta))
    }

    /// Keeps one index entry per stride of the file (all of it written):
    /// see "Index" in the module docs.
    fn make_sparse(&mut self) {
        debug_assert_eq!(self.written, self.end, "sparse only where written");
        if self.dense_from == self.batches.len() {
            return;
        }
        let mut stride = u64::MAX;
        self.batches.retain(|entry| {
            let this = u64::from(entry.offset) / INDEX_STRIDE_BYTES;
            let first_in_stride = this != stride;
            stride = this;
            first_in_stride
        });
        self.batches.shrink_to_fit();
        self.dense_from = self.batches.len();
    }

    /// Where the sparse part of the index ends: the offset of the first
    /// densely indexed batch (or the end).
    fn sparse_end(&self) -> u64 {
        self.batches
            .get(self.dense_from)
            .map_or(self.end, |entry| u64::from(entry.offset))
    }

    /// Walks the written records from the index entry at `position` (in
    /// the sparse part), verifying each, and calls `visit` with each
    /// record's metadata until it returns false or the sparse part ends.
    fn walk(
        &self,
        position: usize,
        visit: impl FnMut(&RecordMeta) -> bool,
    ) -> Result<(), StorageError> {
        let offset = u64::from(self.batches[position].offset);
        self.walk_range(offset, self.sparse_end(), self.batch_first(position), visit)
    }

    /// Walks the written records in `offset..end` of the file, the first
    /// of them starting at index `next`, verifying each (see `walk`).
    fn walk_range(
        &self,
        mut offset: u64,
        end: u64,
        mut next: LogIndex,
        mut visit: impl FnMut(&RecordMeta) -> bool,
    ) -> Result<(), StorageError> {
        let bytes = self.mapping()?.bytes();
        while offset < end {
            let meta = record::check(
                &bytes[offset as usize..end as usize],
                offset,
                next,
                Term::ZERO,
            )
            .map_err(|fault| StorageError::Corrupt {
                path: self.path.clone(),
                offset,
                reason: format!("on read: {fault:?}"),
            })?;
            if !visit(&meta) {
                break;
            }
            offset += u64::from(meta.bytes);
            next = meta.last.next();
        }
        Ok(())
    }

    /// The offset of the batch that starts at `index` (held here), if one
    /// does.
    fn batch_offset(&self, index: LogIndex) -> Result<Option<u64>, StorageError> {
        let position = self.position(index);
        if position >= self.dense_from {
            return Ok((self.batch_first(position) == index)
                .then(|| u64::from(self.batches[position].offset)));
        }
        let mut found = None;
        self.walk(position, |meta| {
            if meta.first == index {
                found = Some(meta.offset);
            }
            meta.last < index
        })?;
        Ok(found)
    }

    fn mapping(&self) -> Result<&Mapping, StorageError> {
        if self.map.get().is_none() {
            let map = Mapping::new(&self.file, self.file_bytes)
                .map_err(|error| StorageError::io("mmap", &self.path, error))?;
            let _ = self.map.set(map);
        }
        Ok(self.map.get().expect("just set"))
    }
}

/// Where a queued chunk of bytes is.
#[derive(Clone, Debug, PartialEq, Eq)]
enum ChunkState {
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
struct Chunk {
    segment: u64,
    offset: u64,
    /// Bytes (the pieces', or a splice's).
    len: u64,
    last: LogIndex,
    /// The bytes, as the shared pieces they arrived in; empty for spliced
    /// bytes.
    pieces: Pieces,
    state: ChunkState,
    /// Written without a sync of its own (one was in flight): once in the
    /// file, it waits for the next (`SegmentLog::defer_sync`).
    sync_deferred: bool,
}

impl Chunk {
    fn end(&self) -> u64 {
        self.offset + self.len
    }

    /// Gives up on its writes still in flight.
    fn abandon(self, ring: &mut Ring) {
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
struct Pieces {
    pieces: Vec<Bytes>,
    ends: Vec<u64>,
}

impl Pieces {
    fn bytes(&self) -> u64 {
        self.ends.last().copied().unwrap_or(0)
    }

    fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    fn push(&mut self, piece: Bytes) {
        let end = self.bytes() + piece.len() as u64;
        self.pieces.push(piece);
        self.ends.push(end);
    }

    /// The piece holding byte `at` (from the first piece's start) and the
    /// offset its first byte is at.
    fn holding(&self, at: u64) -> (&Bytes, u64) {
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
struct Staging {
    pieces: Pieces,
    /// Copied bytes after the pieces (sealed into a piece before the next
    /// shared one, and when staged).
    copy: BytesMut,
    /// Index of the last batch staged.
    last: LogIndex,
}

impl Staging {
    fn bytes(&self) -> u64 {
        self.pieces.bytes() + self.copy.len() as u64
    }

    fn is_empty(&self) -> bool {
        self.pieces.is_empty() && self.copy.is_empty()
    }

    fn push(&mut self, piece: Bytes) {
        self.seal_copy();
        self.pieces.push(piece);
    }

    fn seal_copy(&mut self) {
        if !self.copy.is_empty() {
            let piece = self.copy.split().freeze();
            self.pieces.push(piece);
        }
    }

    fn clear(&mut self) {
        self.pieces = Pieces::default();
        self.copy.clear();
    }
}

/// The expected result of a chunk operation whose result does not matter.
const RESULT_IGNORED: u64 = u64::MAX;

/// `fallocate` mode that zeroes a range by deallocating it, keeping the
/// file's size (so maps of it stay valid).
const PUNCH_KEEP_SIZE: i32 = nix::libc::FALLOC_FL_PUNCH_HOLE | nix::libc::FALLOC_FL_KEEP_SIZE;

/// Most linked vectored writes one chunk is written with: a turn's pieces
/// beyond that many iovecs go into another chunk, written after it.
const CHUNK_WRITES_MAX: usize = 8;

/// The next bytes of the active segment, handed to a caller that writes
/// whole batches there itself (a follower splicing socket → pipe → file).
#[derive(Debug, PartialEq, Eq)]
pub struct Reservation {
    segment: u64,
    offset: u64,
    len: u64,
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

/// A sync in flight.
#[derive(Debug)]
struct Sync {
    /// The fdatasync; `None` for a segment's naming issued on its own (see
    /// `SegmentLog::reserve`), which is all such a sync waits for.
    op: Option<OpId>,
    segment: u64,
    /// Last index it covers.
    index: LogIndex,
    done: bool,
    /// The segment's naming, linked ahead of its first write.
    naming: Option<Naming>,
}

impl Sync {
    /// Its own completion and its naming's are all in.
    fn finished(&self) -> bool {
        self.done
            && self
                .naming
                .as_ref()
                .is_none_or(|naming| naming.results.iter().all(Option::is_some))
    }

    /// Gives up on whatever of it is still in flight.
    fn abandon(self, ring: &mut Ring) {
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
struct Naming {
    ops: [OpId; 2],
    results: [Option<i32>; 2],
}

/// A segment file made ahead of its roll, all through the ring: created
/// empty under a temp name (`openat`), then preallocated and synced, so
/// the roll finds it ready instead of blocking on `open`, `fallocate` and
/// `fsync`.
#[derive(Debug)]
struct Prepared {
    path: PathBuf,
    /// The `openat` while in flight, then its result (the descriptor or
    /// `-errno`) until the file is adopted.
    open: Option<OpId>,
    file: Option<Rc<File>>,
    /// fallocate, the zero-filling writes (if any), fsync: issued once the
    /// file is open, each with the result it must have (`RESULT_IGNORED`:
    /// any success).
    ops: Option<Vec<(OpId, u64)>>,
    results: Vec<Option<i32>>,
    /// The `openat` failed with this result.
    open_failed: Option<i32>,
}

impl Prepared {
    /// Takes whatever results have come; true once all have (or the open
    /// failed).
    fn collect(&mut self, ring: &mut Ring) -> bool {
        if let Some(op) = self.open
            && let Some(result) = ring.take(op)
        {
            self.open = None;
            if result >= 0 {
                self.file = Some(Rc::new(crate::io::ring::adopt_file(result)));
            } else {
                self.open_failed = Some(result);
            }
        }
        if self.open_failed.is_some() {
            return true;
        }
        let Some(ops) = &self.ops else {
            return false;
        };
        for ((op, _), result) in ops.iter().zip(self.results.iter_mut()) {
            if result.is_none() {
                *result = ring.take(*op);
            }
        }
        self.results.iter().all(Option::is_some)
    }

    /// Once the file is open, issues its preallocation and sync (once);
    /// returns how many operations it queued.
    fn preallocate(
        &mut self,
        ring: &mut Ring,
        bytes: u64,
        zero_fill: bool,
    ) -> Result<usize, StorageError> {
        let Some(file) = self.file.clone() else {
            return Ok(0);
        };
        if self.ops.is_some() {
            return Ok(0);
        }
        let io = |error| StorageError::io("submit", &self.path, error);
        let zero_writes = if zero_fill {
            bytes.div_ceil(ZEROS.len() as u64)
        } else {
            0
        };
        ring.reserve(zero_writes as usize + 2).map_err(io)?;
        let mut ops = Vec::with_capacity(zero_writes as usize + 2);
        ops.push((
            ring.fallocate(&file, 0, bytes, Link::Next).map_err(io)?,
            RESULT_IGNORED,
        ));
        for write in 0..zero_writes {
            let offset = write * ZEROS.len() as u64;
            let len = (bytes - offset).min(ZEROS.len() as u64);
            let zeros = Bytes::from_static(&ZEROS[..len as usize]);
            ops.push((
                ring.writev_at(&file, vec![zeros], offset, Link::Next)
                    .map_err(io)?,
                len,
            ));
        }
        ops.push((ring.fsync(&file, Link::None).map_err(io)?, 0));
        let issued = ops.len();
        self.results = vec![None; issued];
        self.ops = Some(ops);
        Ok(issued)
    }

    fn succeeded(&self) -> bool {
        let Some(ops) = &self.ops else {
            return false;
        };
        self.open_failed.is_none()
            && ops.iter().zip(&self.results).all(|((_, len), result)| {
                result.is_some_and(|result| {
                    result >= 0 && (*len == RESULT_IGNORED || result as u64 == *len)
                })
            })
    }

    /// Gives the file up: abandons what is in flight (the ring closes the
    /// descriptor of an abandoned open), removes the file.
    fn discard(self, ring: &mut Ring) {
        if let Some(op) = self.open {
            ring.abandon_open(op);
        }
        if let Some(ops) = self.ops {
            for ((op, _), result) in ops.iter().zip(self.results) {
                if result.is_none() {
                    ring.abandon(*op);
                }
            }
        }
        let _ = fs::remove_file(&self.path);
    }
}

/// A hard state replacement in flight, all through the ring: open the temp
/// file, then write it, fsync, rename over the real one, fsync the
/// directory.
#[derive(Debug)]
struct HardStateWrite {
    state: HardState,
    /// The temp file's `openat` while in flight.
    open: Option<OpId>,
    /// The `openat` failed with this result.
    open_failed: Option<i32>,
    /// The open temp file, until the chain is issued.
    file: Option<Rc<File>>,
    /// Write, fsync, rename, fsync of the directory, once the file is open.
    ops: Option<[OpId; 4]>,
    results: [Option<i32>; 4],
}

impl HardStateWrite {
    /// Gives up on whatever of it is in flight (the ring closes the
    /// descriptor an abandoned open returns: the store is failing or being
    /// dropped).
    fn abandon(self, ring: &mut Ring) {
        if let Some(op) = self.open {
            ring.abandon_open(op);
        }
        if let Some(ops) = self.ops {
            for (op, result) in ops.iter().zip(self.results) {
                if result.is_none() {
                    ring.abandon(*op);
                }
            }
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
    durability: Durability,
    failed: Option<String>,
    /// An open reservation (segment id, offset, length).
    reserved: Option<(u64, u64, u64)>,
    /// Bytes read through segment maps since their pages were last
    /// released (see [`MAPPED_READ_BYTES_RELEASE`]).
    mapped_reads: Cell<u64>,
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
        fs::create_dir_all(dir).map_err(|error| StorageError::io("create", dir, error))?;
        let lock = lock_directory(dir)?;
        let dir_file = File::open(dir).map_err(|error| StorageError::io("open", dir, error))?;
        let hard_state = hard_state::load(dir)?;
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
            durability: Durability {
                index: LogIndex::ZERO,
                hard_state,
            },
            failed: None,
            reserved: None,
            mapped_reads: Cell::new(0),
        };
        log.recover()?;
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

    fn recover(&mut self) -> Result<(), StorageError> {
        let names = self.list_segments()?;
        if names.is_empty() {
            let mut segment = self.create_segment(LogIndex(1))?;
            self.name_segment(&mut segment)?;
            self.segments.push_back(segment);
        }
        let count = names.len();
        for (position, (first, path)) in names.into_iter().enumerate() {
            let segment = self.recover_segment(first, path, position + 1 == count)?;
            self.segments.push_back(segment);
        }
        let active = self.segments.back().expect("at least one segment");
        // What survived the last run may not be on stable storage yet.
        active
            .file
            .sync_data()
            .map_err(|error| StorageError::io("fdatasync", &active.path, error))?;
        sync_directory(&self.dir)?;
        self.durability.index = self.last_index();
        Ok(())
    }

    /// Segment files by first index; stray temp files are removed.
    fn list_segments(&self) -> Result<Vec<(LogIndex, PathBuf)>, StorageError> {
        let entries =
            fs::read_dir(&self.dir).map_err(|error| StorageError::io("list", &self.dir, error))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|error| StorageError::io("list", &self.dir, error))?;
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(TEMP_SUFFIX) {
                fs::remove_file(&path).map_err(|error| StorageError::io("remove", &path, error))?;
            } else if let Some(stem) = name.strip_suffix(SEGMENT_SUFFIX) {
                let first = parse_segment_name(stem).ok_or_else(|| StorageError::Corrupt {
                    path: path.clone(),
                    offset: 0,
                    reason: "a .log file whose name is not a 20-digit first index".into(),
                })?;
                names.push((first, path));
            }
        }
        names.sort();
        Ok(names)
    }

    fn recover_segment(
        &mut self,
        first: LogIndex,
        path: PathBuf,
        is_last: bool,
    ) -> Result<Segment, StorageError> {
        let corrupt = |offset: u64, reason: String| StorageError::Corrupt {
            path: path.clone(),
            offset,
            reason,
        };
        if let Some(previous) = self.segments.back()
            && previous.last.next() != first
        {
            return Err(corrupt(
                0,
                format!(
                    "segment starts at index {first} but the previous one ends at {}: \
                     a segment is missing, duplicated or overlapping",
                    previous.last
                ),
            ));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|error| StorageError::io("open", &path, error))?;
        let metadata = file
            .metadata()
            .map_err(|error| StorageError::io("stat", &path, error))?;
        let file_bytes = metadata.len();
        // Read before the tail is cleared or the file preallocated, which
        // would move it.
        let modified_ms = metadata.modified().map_or(0, unix_ms);
        let floor = self.terms.last().map_or(Term::ZERO, |(_, term)| *term);
        let map = Mapping::new(&file, file_bytes)
            .map_err(|error| StorageError::io("mmap", &path, error))?;
        map.advise_sequential();
        let mut batches = Vec::new();
        let mut last = first.prev();
        let mut terms = Vec::new();
        let scanned = record::scan(map.bytes(), first, floor, |meta: RecordMeta| {
            batches.push(BatchEntry {
                offset: meta.offset as u32,
                delta: (meta.first.get() - first.get()) as u32,
            });
            last = meta.last;
            terms.push((meta.first, meta.term));
        })
        .map_err(|error| corrupt(error.offset, error.reason))?;
        drop(map);
        if let Some(reason) = &scanned.torn
            && !is_last
        {
            return Err(corrupt(
                scanned.end,
                format!("damaged record in a sealed segment: {reason}"),
            ));
        }
        let mut segment = Segment {
            id: self.take_segment_id(),
            first,
            last,
            named: true,
            path,
            file: Rc::new(file),
            file_bytes,
            end: scanned.end,
            written: scanned.end,
            batches,
            dense_from: 0,
            map: OnceCell::new(),
            modified_ms,
        };
        if let Some(reason) = scanned.torn {
            tracing::warn!(path = %segment.path.display(), offset = scanned.end, %reason,
                "cutting a torn final record");
            clear_tail(&segment, scanned.end)?;
        }
        if !is_last {
            segment.make_sparse();
        }
        if is_last && file_bytes < self.options.segment_bytes {
            preallocate(&segment.file, &segment.path, self.options.segment_bytes)?;
            segment.file_bytes = self.options.segment_bytes;
        }
        for (index, term) in terms {
            self.note_term(index, term);
        }
        Ok(segment)
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
        Ok(Segment {
            id: self.take_segment_id(),
            first,
            last: first.prev(),
            named: false,
            path: temp,
            file: Rc::new(file),
            file_bytes: self.options.segment_bytes,
            end: 0,
            written: 0,
            batches: Vec::new(),
            dense_from: 0,
            map: OnceCell::new(),
            modified_ms: unix_now_ms(),
        })
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

    fn segment_by_id(&mut self, id: u64) -> &mut Segment {
        self.segments
            .iter_mut()
            .find(|segment| segment.id == id)
            .expect("chunk of a live segment")
    }

    /// Moves the staged pieces into chunks for the active segment (each
    /// written with at most [`CHUNK_WRITES_MAX`] linked vectored writes).
    fn stage(&mut self) {
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
            });
            offset += len;
        }
        debug_assert_eq!(offset, end);
    }

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
                    index: self.durability.index.max(self.last_index()),
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
    fn not_yet(&mut self) -> Result<Reserve, StorageError> {
        self.flush()?;
        Ok(Reserve::NotYet)
    }

    /// Whether the next segment's file is ready for a roll; starts making
    /// it (through the ring) when it is not under way.
    fn next_ready(&mut self) -> Result<bool, StorageError> {
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
        });
        Ok(())
    }

    /// Starts a new segment for a batch that does not fit the active one:
    /// the file prepared ahead if there is one (waiting for it in the rare
    /// case it is not ready yet), else one made now.
    fn roll(&mut self, first: LogIndex) -> Result<(), StorageError> {
        // The staging buffer goes to the old segment's writes at its
        // length, not its capacity: `writable_bytes` counted only its
        // bytes, so an append it allowed must still fit after the roll.
        self.stage();
        let segment = match self.take_prepared(first)? {
            Some(segment) => segment,
            None => self.create_segment(first).map_err(no_space_or)?,
        };
        // Sealed segments whose writes have all landed index sparsely.
        for sealed in &mut self.segments {
            if sealed.written == sealed.end {
                sealed.make_sparse();
            }
        }
        self.segments.push_back(segment);
        self.prepare_paused = false;
        Ok(())
    }

    /// The prepared file as the segment starting at `first`, once its
    /// preallocation and sync are done; `None` if there is none or it
    /// failed (then removed).
    fn take_prepared(&mut self, first: LogIndex) -> Result<Option<Segment>, StorageError> {
        let Some(mut prepared) = self.next.take() else {
            return Ok(None);
        };
        let ring = Rc::clone(&self.ring);
        let mut ring = ring.borrow_mut();
        while !prepared.collect(&mut ring) {
            if let Err(error) = prepared.preallocate(
                &mut ring,
                self.options.segment_bytes,
                self.options.zero_fill,
            ) {
                prepared.discard(&mut ring);
                return Err(error);
            }
            if let Err(error) = ring.wait_for_completion() {
                prepared.discard(&mut ring);
                return Err(StorageError::io("io_uring_enter", &self.dir, error));
            }
        }
        if !prepared.succeeded() {
            tracing::warn!(path = %prepared.path.display(), ?prepared,
                "preparing a segment failed; creating it at the roll");
            prepared.discard(&mut ring);
            return Ok(None);
        }
        Ok(Some(Segment {
            id: self.take_segment_id(),
            first,
            last: first.prev(),
            named: false,
            path: prepared.path,
            file: prepared.file.expect("a prepared file is open"),
            file_bytes: self.options.segment_bytes,
            end: 0,
            written: 0,
            batches: Vec::new(),
            dense_from: 0,
            map: OnceCell::new(),
            modified_ms: unix_now_ms(),
        }))
    }

    /// Makes the next segment's file ahead once the active segment is half
    /// full (or `now`), all through the ring: an `openat` first, then, once
    /// it is open, `fallocate` and `fsync`. Returns how many operations it
    /// queued.
    fn prepare_next(&mut self, ring: &mut Ring, now: bool) -> Result<usize, StorageError> {
        if let Some(prepared) = &mut self.next {
            prepared.collect(ring);
            return prepared.preallocate(ring, self.options.segment_bytes, self.options.zero_fill);
        }
        if self.prepare_paused || (!now && self.active().end < self.options.segment_bytes / 2) {
            return Ok(0);
        }
        self.prepared_count += 1;
        let path = self
            .dir
            .join(format!("next-{}{TEMP_SUFFIX}", self.prepared_count));
        let open = ring
            .openat(
                c_path(&path),
                nix::libc::O_RDWR | nix::libc::O_CREAT | nix::libc::O_TRUNC,
                0o644,
            )
            .map_err(|error| StorageError::io("submit", &path, error))?;
        self.next = Some(Prepared {
            path,
            open: Some(open),
            file: None,
            ops: None,
            results: Vec::new(),
            open_failed: None,
        });
        Ok(1)
    }

    /// Takes the prepared file's results; a failure (a full disk) pauses
    /// preparing until the next roll, which then creates its own segment.
    fn collect_prepared(&mut self, ring: &mut Ring) {
        let Some(prepared) = &mut self.next else {
            return;
        };
        if prepared.collect(ring) && !prepared.succeeded() {
            let prepared = self.next.take().expect("checked");
            tracing::warn!(path = %prepared.path.display(), ?prepared,
                "preparing a segment failed; the roll will create it");
            prepared.discard(ring);
            self.prepare_paused = true;
        }
    }

    /// True when no bytes or syncs of a segment older than `segment` are
    /// pending: writes to `segment` may start.
    fn older_segments_durable(&self, segment: u64) -> bool {
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
    fn earlier_writes_done(&self, position: usize) -> bool {
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
    fn advance(&mut self, ring: &mut Ring) -> Result<(), StorageError> {
        loop {
            ring.reap();
            self.collect(ring)?;
            let issued = self.submit_chunks(ring)?
                + self.submit_deferred_sync(ring)?
                + self.submit_hard_state(ring)?
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
    fn flushed_work_pending(&self) -> bool {
        !self.chunks.is_empty()
            || !self.syncs.is_empty()
            || self.deferred_sync.is_some()
            || self.hard_state_flushed.is_some()
            || self.hard_state_write.is_some()
            || self.dir_sync_queued
            || self.dir_sync.is_some()
    }

    /// Issues the directory's fsync after segments were removed, unless one
    /// is in flight (the next covers what this one might not); returns how
    /// many operations it queued.
    fn submit_dir_sync(&mut self, ring: &mut Ring) -> Result<usize, StorageError> {
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
    fn submit_chunks(&mut self, ring: &mut Ring) -> Result<usize, StorageError> {
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
                ring.reserve(3).map_err(io)?;
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
                ring.reserve(groups.len() + 1).map_err(io)?;
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
            let sync = ring.fdatasync(&segment.file, Link::None).map_err(io)?;
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
        }
        Ok(issued)
    }

    /// A sync of `segment` is issued and has not completed.
    fn sync_in_flight(&self, segment: u64) -> bool {
        self.syncs
            .iter()
            .any(|sync| sync.segment == segment && sync.op.is_some() && !sync.done)
    }

    /// Bytes of `segment` up to index `last` are in the file and wait for
    /// the sync in flight to end before a sync of their own.
    fn defer_sync(&mut self, segment: u64, last: LogIndex) {
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
    fn submit_deferred_sync(&mut self, ring: &mut Ring) -> Result<usize, StorageError> {
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
        let sync = ring
            .fdatasync(&segment.file, Link::None)
            .map_err(|error| StorageError::io("submit", &segment.path, error))?;
        self.syncs_issued += 1;
        self.deferred_sync = None;
        self.syncs.push_back(Sync {
            op: Some(sync),
            segment: segment_id,
            index,
            done: false,
            naming: None,
        });
        Ok(1)
    }

    /// Before a new segment's first write: queues its rename to its real
    /// name and a directory fsync, linked ahead of that write (which the
    /// caller queues next), after making room for the whole chain. Every
    /// earlier segment is durable by then (the barrier), so a named
    /// segment never follows a gap. Just makes room for a named one.
    fn submit_naming(
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
        let sync = ring.fsync(dir_file, Link::Next).map_err(io)?;
        segment.path = path;
        segment.named = true;
        Ok(Some(Naming {
            ops: [rename, sync],
            results: [None; 2],
        }))
    }

    /// Issues the flushed hard state unless a write is in flight; returns
    /// how many operations it queued.
    fn submit_hard_state(&mut self, ring: &mut Ring) -> Result<usize, StorageError> {
        let temp = self.dir.join(hard_state::TEMP_NAME);
        if let Some(write) = &mut self.hard_state_write {
            // Its temp file is open: write, sync, rename, sync the
            // directory, linked.
            if write.ops.is_some() || write.open.is_some() || write.open_failed.is_some() {
                return Ok(0);
            }
            let Some(file) = write.file.take() else {
                return Ok(0);
            };
            let path = self.dir.join(hard_state::FILE_NAME);
            let buffer = Rc::new(hard_state::encode(write.state));
            let io = |error| StorageError::io("submit", &temp, error);
            ring.reserve(4).map_err(io)?;
            let write_op = ring
                .write_at(&file, &buffer, 0..buffer.len(), 0, Link::Next)
                .map_err(io)?;
            let sync = ring.fsync(&file, Link::Next).map_err(io)?;
            let rename = ring
                .rename(c_path(&temp), c_path(&path), Link::Next)
                .map_err(io)?;
            let sync_dir = ring.fsync(&self.dir_file, Link::None).map_err(io)?;
            write.ops = Some([write_op, sync, rename, sync_dir]);
            return Ok(4);
        }
        let Some(state) = self.hard_state_flushed.take() else {
            return Ok(0);
        };
        let open = ring
            .openat(
                c_path(&temp),
                nix::libc::O_WRONLY | nix::libc::O_CREAT | nix::libc::O_TRUNC,
                0o644,
            )
            .map_err(|error| StorageError::io("submit", &temp, error))?;
        self.hard_state_write = Some(HardStateWrite {
            state,
            open: Some(open),
            open_failed: None,
            file: None,
            ops: None,
            results: [None; 4],
        });
        Ok(1)
    }

    /// Takes finished completions and advances the marks.
    fn collect(&mut self, ring: &mut Ring) -> Result<(), StorageError> {
        self.collect_prepared(ring);
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
        while self
            .chunks
            .front()
            .is_some_and(|chunk| chunk.state == ChunkState::Written)
        {
            let chunk = self.chunks.pop_front().expect("front exists");
            let end = chunk.end();
            let segment = self.segment_by_id(chunk.segment);
            debug_assert_eq!(segment.written, chunk.offset);
            segment.written = end;
        }
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
            self.durability.index = self.durability.index.max(sync.index);
        }
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

    fn collect_hard_state(&mut self, ring: &mut Ring) -> Result<(), StorageError> {
        let Some(write) = &mut self.hard_state_write else {
            return Ok(());
        };
        if let Some(op) = write.open
            && let Some(result) = ring.take(op)
        {
            write.open = None;
            if result >= 0 {
                write.file = Some(Rc::new(crate::io::ring::adopt_file(result)));
            } else {
                write.open_failed = Some(result);
            }
        }
        let results = if let Some(result) = write.open_failed {
            // As if the chain had failed at its first step: the old file
            // is intact.
            [Some(result), None, None, None].map(|result| result.or(Some(-nix::libc::ECANCELED)))
        } else if let Some(ops) = write.ops {
            for (op, result) in ops.iter().zip(write.results.iter_mut()) {
                if result.is_none() {
                    *result = ring.take(*op);
                }
            }
            write.results
        } else {
            return Ok(());
        };
        if results.iter().any(Option::is_none) {
            return Ok(());
        }
        let state = write.state;
        self.hard_state_write = None;
        let results = results.map(|result| result.expect("all present"));
        let no_space = results.contains(&-nix::libc::ENOSPC);
        if results.iter().all(|result| *result >= 0) && results[0] as usize > 0 {
            self.durability.hard_state = state;
            Ok(())
        } else if no_space {
            // The old file is intact (the rename never ran): try again at
            // the next flush unless a newer state replaced this one.
            if self.hard_state_flushed.is_none() {
                self.hard_state_queued.get_or_insert(state);
            }
            Err(StorageError::NoSpace)
        } else {
            let reason = format!("hard state replacement failed: {results:?}");
            Err(self.fail(ring, reason))
        }
    }

    /// Stops the store for good (fail-stop): in-flight operations are
    /// abandoned, every later call fails.
    fn fail(&mut self, ring: &mut Ring, reason: String) -> StorageError {
        tracing::error!(dir = %self.dir.display(), %reason, "log storage failed; stopping it");
        for chunk in self.chunks.drain(..) {
            chunk.abandon(ring);
        }
        for sync in self.syncs.drain(..) {
            sync.abandon(ring);
        }
        self.deferred_sync = None;
        if let Some(write) = self.hard_state_write.take() {
            write.abandon(ring);
        }
        if let Some(op) = self.dir_sync.take() {
            ring.abandon(op);
        }
        self.failed = Some(reason.clone());
        StorageError::Failed(reason)
    }

    /// Anything queued, in flight or waiting.
    fn busy(&self) -> bool {
        !self.staging.is_empty() || self.hard_state_queued.is_some() || self.flushed_work_pending()
    }

    /// Abandons every pending write and sync (their results no longer
    /// matter: the bytes are being discarded).
    fn abandon_pending(&mut self) {
        let ring = Rc::clone(&self.ring);
        let mut ring = ring.borrow_mut();
        for chunk in self.chunks.drain(..) {
            chunk.abandon(&mut ring);
        }
        for sync in self.syncs.drain(..) {
            sync.abandon(&mut ring);
        }
        self.deferred_sync = None;
        self.staging.clear();
    }

    /// Drops the bytes not yet issued and waits for the operations already
    /// issued (the log is being discarded): no rename still in flight may
    /// name a segment after the old ones are removed.
    fn finish_issued(&mut self) -> Result<(), StorageError> {
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
                return Ok(());
            }
            ring.wait_for_completion()
                .map_err(|error| StorageError::io("io_uring_enter", &self.dir, error))?;
        }
    }

    /// Checks a frame appended next (see [`LogStorage::append`]), rolls to
    /// a new segment if it does not fit, and indexes it; the caller stages
    /// its bytes. Returns its last index.
    fn admit(&mut self, frame: &[u8], checksum: Checksum) -> Result<LogIndex, StorageError> {
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
    fn held_bytes(&self) -> u64 {
        self.staging.bytes()
            + self
                .chunks
                .iter()
                .map(|chunk| chunk.pieces.bytes())
                .sum::<u64>()
    }

    /// Refuses `bytes` more when the write budget cannot hold them.
    fn check_budget(&self, bytes: u64) -> Result<(), StorageError> {
        let held = self.held_bytes();
        if held + bytes > WRITE_QUEUE_BYTES_MAX as u64 {
            return Err(StorageError::Backpressure { bytes: held });
        }
        Ok(())
    }

    fn remove_segment_file(path: &Path) -> Result<(), StorageError> {
        fs::remove_file(path).map_err(|error| StorageError::io("remove", path, error))
    }

    /// `read` in the sparse part of a segment's index: walks the records
    /// from the entry at `position` to the batch holding `from`, then takes
    /// whole batches up to `max_bytes` (at least one) or the sparse part's
    /// end. Every record walked is verified.
    fn read_sparse<'a>(
        &'a self,
        segment: &'a Segment,
        position: usize,
        from: LogIndex,
        max_bytes: usize,
    ) -> Result<ReadRange<'a>, StorageError> {
        let mut range: Option<(u64, u64, LogIndex, LogIndex)> = None;
        segment.walk(position, |meta| {
            let end = meta.offset + u64::from(meta.bytes);
            match &mut range {
                None if meta.last < from => true,
                None => {
                    range = Some((meta.offset, end, meta.first, meta.last));
                    true
                }
                Some((start, range_end, _, last)) => {
                    if end - *start > max_bytes as u64 {
                        return false;
                    }
                    *range_end = end;
                    *last = meta.last;
                    true
                }
            }
        })?;
        let (start, end, first, last) = range.ok_or_else(|| StorageError::Corrupt {
            path: segment.path.clone(),
            offset: u64::from(segment.batches[position].offset),
            reason: format!("on read: no record holds index {from} where the index puts it"),
        })?;
        // Count every page walked, not only those returned.
        self.note_mapped_read(end - u64::from(segment.batches[position].offset));
        Ok(ReadRange {
            first,
            last,
            bytes: &segment.mapping()?.bytes()[start as usize..end as usize],
            file: Some(FileSpan {
                file: &segment.file,
                offset: start,
            }),
            shared: None,
        })
    }

    /// Where the bytes at `offset` of `segment` are, and how far that
    /// source reaches.
    fn source(&self, segment: &Segment, offset: u64) -> Source<'_> {
        if offset < segment.written {
            return Source::File {
                limit: segment.written,
            };
        }
        if segment.id == self.active().id && !self.staging.is_empty() {
            let copy_start = segment.end - self.staging.copy.len() as u64;
            if offset >= copy_start {
                return Source::Copy {
                    bytes: &self.staging.copy,
                    start: copy_start,
                };
            }
            let start = copy_start - self.staging.pieces.bytes();
            if offset >= start {
                let (piece, at) = self.staging.pieces.holding(offset - start);
                return Source::Piece {
                    piece,
                    start: start + at,
                };
            }
        }
        let chunk = self
            .chunks
            .iter()
            .find(|chunk| {
                chunk.segment == segment.id && chunk.offset <= offset && offset < chunk.end()
            })
            .expect("unwritten bytes are queued");
        if chunk.pieces.is_empty() {
            // Spliced: already in the file.
            return Source::File { limit: chunk.end() };
        }
        let (piece, at) = chunk.pieces.holding(offset - chunk.offset);
        Source::Piece {
            piece,
            start: chunk.offset + at,
        }
    }
}

/// Where bytes of a segment are (see `SegmentLog::source`).
enum Source<'a> {
    /// In the file, up to `limit`.
    File { limit: u64 },
    /// In a shared piece whose first byte is at offset `start`.
    Piece { piece: &'a Bytes, start: u64 },
    /// Copied into the staging buffer, whose first byte is at `start`.
    Copy { bytes: &'a [u8], start: u64 },
}

impl Source<'_> {
    /// The offset this source reaches to.
    fn limit(&self) -> u64 {
        match self {
            Source::File { limit } => *limit,
            Source::Piece { piece, start } => start + piece.len() as u64,
            Source::Copy { bytes, start } => start + bytes.len() as u64,
        }
    }
}

/// Splits `pieces` into runs of at most `iovecs_max` iovecs each (see
/// [`crate::io::ring::iovecs_of`]: pieces back to back in memory share one).
fn iovec_groups(pieces: &[Bytes], iovecs_max: usize) -> Vec<std::ops::Range<usize>> {
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
        if from < self.first_index() {
            return Err(StorageError::Compacted {
                index: from,
                first: self.first_index(),
            });
        }
        if from > self.last_index() {
            return Err(StorageError::Beyond {
                index: from,
                last: self.last_index(),
            });
        }
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
            Source::Piece { piece, start: at } => {
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
        if from < self.first_index() {
            return Err(StorageError::Compacted {
                index: from,
                first: self.first_index(),
            });
        }
        if from > self.last_index() {
            return Err(StorageError::Beyond {
                index: from,
                last: self.last_index(),
            });
        }
        let at = self
            .segments
            .partition_point(|segment| segment.first <= from)
            - 1;
        let Some(cut) = self.segments[at].batch_offset(from)? else {
            return Err(StorageError::NotBatchBoundary(from));
        };
        // Let everything in flight land first, so nothing writes past the
        // cut afterwards.
        self.sync_all()?;
        // Later segments go first, newest first: a crash midway leaves a
        // longer log, never one with a gap.
        while self.segments.len() > 1 && self.active().first >= from {
            let segment = self.segments.pop_back().expect("more than one");
            Self::remove_segment_file(&segment.path)?;
        }
        sync_directory(&self.dir)?;
        let segment = self.segments.back_mut().expect("at least one segment");
        if from <= segment.last {
            clear_tail(segment, cut)?;
            let kept = segment
                .batches
                .partition_point(|entry| u64::from(entry.offset) < cut);
            segment.batches.truncate(kept);
            segment.dense_from = segment.dense_from.min(kept);
            segment.end = cut;
            segment.written = cut;
            segment.last = from.prev();
        }
        while self.terms.last().is_some_and(|(start, _)| *start >= from) {
            self.terms.pop();
        }
        self.durability.index = self.durability.index.min(from.prev());
        Ok(())
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
        while let Some(segment) = self.segments.pop_back() {
            Self::remove_segment_file(&segment.path)?;
        }
        sync_directory(&self.dir)?;
        fs::rename(&temp, &path).map_err(|error| StorageError::io("rename", &path, error))?;
        sync_directory(&self.dir)?;
        let segment = Segment {
            id: self.take_segment_id(),
            first: next,
            last: next.prev(),
            named: true,
            path,
            file: Rc::new(file),
            file_bytes: self.options.segment_bytes,
            end: 0,
            written: 0,
            batches: Vec::new(),
            dense_from: 0,
            map: OnceCell::new(),
            modified_ms: unix_now_ms(),
        };
        self.segments.push_back(segment);
        self.terms.clear();
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

/// Zeroes `segment` from `offset` to its end (punching the blocks out and
/// reserving them again, keeping the size, so maps stay valid) and syncs it.
fn clear_tail(segment: &Segment, offset: u64) -> Result<(), StorageError> {
    let len = segment.file_bytes.saturating_sub(offset);
    if len > 0 {
        let punch = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
        fallocate(&*segment.file, punch, offset as i64, len as i64).map_err(|errno| {
            StorageError::io("punch hole", &segment.path, std::io::Error::from(errno))
        })?;
        // Reserving again only matters for a later full disk; a failure
        // leaves a hole that a write fills as it goes.
        let _ = fallocate(
            &*segment.file,
            FallocateFlags::empty(),
            offset as i64,
            len as i64,
        );
    }
    segment
        .file
        .sync_all()
        .map_err(|error| StorageError::io("fsync", &segment.path, error))
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

#[cfg(test)]
#[path = "segment_tests.rs"]
pub(crate) mod tests;
