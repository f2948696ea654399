//! The replicated log's storage: batches of entries in append-only segment
//! files, the hard state beside them, and recovery.
//!
//! # The contract ([`LogStorage`])
//!
//! Records are whole `EntryBatch` frames, the bytes exactly as they came off
//! the network, already stamped with term and first index. The store never
//! re-encodes them. Every operation works on whole batches: a batch is the
//! atomic unit of appending, truncating and dropping.
//!
//! The server is pipelined: it asks for writes and never waits for them.
//!
//! ```text
//!  event-loop turn:  append(b1) append(b2) store_hard_state(h)   queued
//!                    flush()                                      one write per file,
//!                                                                 one fdatasync per file
//!  a later turn:     poll() ─► Durability { index: last of b2, hard_state: h }
//! ```
//!
//! * `append` queues a batch after the last index; it is readable at once
//!   (from the queue) and durable only once a `poll` says so.
//! * `flush` issues everything queued: the writes and one sync per log file
//!   (group commit). It never blocks on the disk.
//! * `poll` collects finished syncs and reports how far the log (and the
//!   hard state) are durable. Durability only ever covers a prefix.
//! * A failed sync is fatal for the store (fail-stop): the kernel may have
//!   dropped the dirty pages, so a retry could report lost bytes durable.
//! * Running out of space refuses appends with [`StorageError::NoSpace`];
//!   nothing already written is touched and appends work again once space
//!   returns.
//!
//! Truncating a suffix (a follower's conflict) takes effect at once for
//! reads, appends and durability, and on disk before anything appended after
//! it is reported durable; resetting the log (a snapshot install) is rare and
//! takes effect durably before it returns.
//!
//! # Implementations
//!
//! * [`memory::MemoryLog`]: bytes in memory, with written and durable bytes
//!   kept apart so a simulated crash loses exactly what a real one may, and
//!   sync completion timing in the caller's hands (the simulator's).
//! * [`segment::SegmentLog`]: segment files written through io_uring.
//!
//! Beside a log, [`snapshot_file`] keeps its state machine's snapshots
//! (atomic, checksummed files); once one is durable the log drops the
//! segments below it (`drop_prefix`).
//!
//! Both pass [`conformance`], the suite any log storage must pass.
//!
//! A log with no state machine (a plain log) has no snapshot to drop its
//! prefix below; [`retention`] decides from [`LogStorage::segments`] how
//! much of it may go by size and by age.

#[doc(hidden)]
pub mod conformance;
pub mod durable_mark;
pub mod hard_state;
pub mod memory;
pub mod planted;
pub mod reading;
pub mod record;
pub mod retention;
pub mod segment;
pub mod snapshot_file;

use std::fs::File;
use std::path::PathBuf;
use std::rc::Rc;

use bytes::Bytes;

use crate::constants::READ_CHUNK_BYTES;
use crate::types::{LogIndex, Term};
use crate::wire::{BatchView, WireError, split_frame};

/// The durable part of a Raft node's state (schema `HardState`): the
/// core's own type, which the stores keep as it is.
pub use crate::raft::HardState;

/// How far a store is durable: what `poll` reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Durability {
    /// Every entry up to and including this index is on stable storage.
    pub index: LogIndex,
    /// The last hard state known to be on stable storage.
    pub hard_state: HardState,
}

/// A run of whole batches returned by [`LogStorage::read`].
///
/// The bytes are the stored frames back to back. When they are already in a
/// file (written, not only queued), `file` says where, so the caller can hand
/// the range to `sendfile` or `splice` instead of copying `bytes`; when they
/// are still in the shared memory they were appended from, `shared` is a
/// handle on exactly these bytes, to send without copying.
#[derive(Clone, Debug)]
pub struct ReadRange<'a> {
    /// First index of the first batch (at or below the index asked for).
    pub first: LogIndex,
    /// Last index of the last batch.
    pub last: LogIndex,
    /// The frames.
    pub bytes: &'a [u8],
    /// Where the same bytes sit in a file, if they do.
    pub file: Option<FileSpan<'a>>,
    /// The same bytes as a shared handle, if they are in shared memory.
    pub shared: Option<Bytes>,
}

/// A byte range of an open file.
#[derive(Clone, Copy, Debug)]
pub struct FileSpan<'a> {
    /// The file (clone the `Rc` to keep it open past the read).
    pub file: &'a Rc<File>,
    /// Offset of the first byte.
    pub offset: u64,
}

/// One unit a store drops its prefix by (a segment file, or a batch for a
/// store in memory), as [`LogStorage::segments`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    /// First index the segment holds (or would hold, when empty).
    pub first: LogIndex,
    /// Last index the segment holds; `first - 1` when it is empty.
    pub last: LogIndex,
    /// Bytes of the records in it (queued ones included).
    pub bytes: u64,
    /// Unix-epoch milliseconds of the last append into it (as of the turn
    /// that queued it for writing: stores may stamp a turn at once); for a
    /// segment recovered at open and not appended to since, its file's
    /// mtime.
    pub modified_ms: u64,
}

impl SegmentInfo {
    /// True when the segment holds no entry.
    pub fn is_empty(&self) -> bool {
        self.last < self.first
    }
}

/// Milliseconds since the Unix epoch by the wall clock (0 before it).
pub(crate) fn unix_now_ms() -> u64 {
    unix_ms(std::time::SystemTime::now())
}

/// `time` in milliseconds since the Unix epoch (0 before it).
pub(crate) fn unix_ms(time: std::time::SystemTime) -> u64 {
    time.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}

/// Everything that can go wrong in the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// An IO call failed.
    #[error("{operation} {path}: {source}")]
    Io {
        /// What was being done.
        operation: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Stored bytes are damaged where a torn write cannot explain it; the
    /// store refuses to open rather than drop entries that may be committed.
    #[error("corrupt log: {path} at byte offset {offset}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Byte offset of the damaged record within the file.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A page of a log file did not read (EIO) while the store served it
    /// from its map: damage of the records there, to be cut and repaired
    /// as recovery does (see `io::mapping`).
    #[error(
        "{path}: the bytes at offset {offset} do not read (EIO): damage, to be cut and repaired"
    )]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Byte offset of the page within the file.
        offset: u64,
    },
    /// The disk is full: appends are refused until space returns.
    #[error("no space left on the log's disk: appends refused")]
    NoSpace,
    /// The store failed earlier (a sync error) and refuses all work.
    #[error("log storage failed and stopped: {0}")]
    Failed(String),
    /// The batch handed to `append` is not a valid stamped batch.
    #[error("invalid batch: {0}")]
    InvalidBatch(#[from] WireError),
    /// The batch does not continue the log.
    #[error("batch starts at index {got} but the log continues at {expected}")]
    NotContiguous {
        /// The next index of the log.
        expected: LogIndex,
        /// The batch's first index.
        got: LogIndex,
    },
    /// A batch's term is below the term of the log's last batch.
    #[error("batch term {got} is below the log's last term {last}")]
    TermRegression {
        /// The log's last term.
        last: Term,
        /// The batch's term.
        got: Term,
    },
    /// The index is below the first index still stored.
    #[error("index {index} is compacted; the log starts at {first}")]
    Compacted {
        /// The index asked for.
        index: LogIndex,
        /// The first stored index.
        first: LogIndex,
    },
    /// The index is above the last index.
    #[error("index {index} is beyond the log's last index {last}")]
    Beyond {
        /// The index asked for.
        index: LogIndex,
        /// The last index.
        last: LogIndex,
    },
    /// A truncation point that is not the first index of a batch.
    #[error("index {0} is not the first index of a batch")]
    NotBatchBoundary(LogIndex),
    /// A reservation for spliced bytes is open: appends wait for it.
    #[error("a reservation is open: complete or abort it first")]
    Reserved,
    /// The buffers for queued and in-flight writes are full: poll, then
    /// try again.
    #[error("write buffers full ({bytes} bytes held for queued or in-flight writes)")]
    Backpressure {
        /// Buffer bytes held for queued or in-flight writes.
        bytes: u64,
    },
}

impl StorageError {
    /// Damage in the log's files found while it serves (a record that
    /// does not verify, a page that does not read): the group is reopened
    /// and repaired, not stopped for good.
    pub fn is_damage(&self) -> bool {
        matches!(self, Self::Unreadable { .. } | Self::Corrupt { .. })
    }
}

impl StorageError {
    /// An IO error on `path` during `operation`.
    pub(crate) fn io(
        operation: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Self::Io {
            operation,
            path: path.into(),
            source,
        }
    }
}

/// Checks a frame handed to `append`: exactly one valid, sealed batch of at
/// least one entry, stamped with a term (not 0), that continues the log at
/// `next` without lowering the term below `last_term`. Returns the batch's first index, last index and
/// term.
pub(crate) fn check_append(
    frame: &[u8],
    next: LogIndex,
    last_term: Term,
    checksum: Checksum,
) -> Result<(LogIndex, LogIndex, Term), StorageError> {
    let view = crate::wire::BatchView::parse(frame)?;
    if view.len() != frame.len() {
        return Err(WireError::TrailingBytes {
            frame: view.len(),
            have: frame.len(),
        }
        .into());
    }
    match checksum {
        Checksum::Verify => view.verify_checksum()?,
        Checksum::VerifiedByCaller => debug_assert!(view.verify_checksum().is_ok()),
    }
    if view.count() == 0 {
        return Err(WireError::Malformed("a stored batch needs at least one entry".into()).into());
    }
    if view.first_index() != next {
        return Err(StorageError::NotContiguous {
            expected: next,
            got: view.first_index(),
        });
    }
    if view.term() == Term::ZERO {
        return Err(
            WireError::Malformed("a stored batch needs a stamped term (not 0)".into()).into(),
        );
    }
    if view.term() < last_term {
        return Err(StorageError::TermRegression {
            last: last_term,
            got: view.term(),
        });
    }
    Ok((view.first_index(), view.last_index(), view.term()))
}

/// What [`LogStorage::reserve`] answers.
#[derive(Debug)]
pub enum Reserve {
    /// The file and the reserved range: write there now.
    Ready(Rc<File>, segment::Reservation),
    /// Not now: the store is finishing what must land first (issued); ask
    /// again after a later `poll`.
    NotYet,
    /// This store has no file to write into (it keeps batches in memory).
    Unsupported,
}

/// `index` is in `first..=last` (the stored indexes), or the error that says
/// on which side it is not.
pub(crate) fn check_stored(
    index: LogIndex,
    first: LogIndex,
    last: LogIndex,
) -> Result<(), StorageError> {
    if index < first {
        return Err(StorageError::Compacted { index, first });
    }
    if index > last {
        return Err(StorageError::Beyond { index, last });
    }
    Ok(())
}

/// Whether [`check_append`] verifies a frame's checksum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Checksum {
    /// Verify it (a frame from anywhere).
    Verify,
    /// The caller verified it where the bytes entered the node
    /// ([`LogStorage::append_shared`]); verified again only in debug builds.
    VerifiedByCaller,
}

/// A replicated log's storage: what the Raft runtime (and the simulator)
/// drive. See the module docs for the pipelining contract.
pub trait LogStorage {
    /// Queues one stamped, sealed `EntryBatch` frame after the last index and
    /// returns the batch's last index. The batch must hold at least one
    /// entry, continue the log (`first_index == last_index() + 1`) and not
    /// lower the term. Readable at once; durable once `poll` says so.
    fn append(&mut self, frame: &[u8]) -> Result<LogIndex, StorageError>;

    /// [`LogStorage::append`] of a shared frame whose checksum the caller
    /// has verified (at the edge: a client's batch when it arrived, a
    /// leader's when the message was checked): a store that can keeps the
    /// handle and writes the file from it, copying nothing. The store still
    /// checks the frame's structure, index and term.
    fn append_shared(&mut self, frame: Bytes) -> Result<LogIndex, StorageError> {
        self.append(&frame)
    }

    /// Queues a new hard state, made durable by the next `flush`. Later
    /// calls before that flush replace it.
    fn store_hard_state(&mut self, state: HardState) -> Result<(), StorageError>;

    /// Issues every queued write and one sync per log file. Never blocks on
    /// the disk; completions arrive through `poll`.
    fn flush(&mut self) -> Result<(), StorageError>;

    /// Collects finished syncs without blocking and reports durability.
    fn poll(&mut self) -> Result<Durability, StorageError>;

    /// Blocks until everything flushed so far is durable (tests, tools,
    /// shutdown). Flushes first.
    fn sync_all(&mut self) -> Result<Durability, StorageError>;

    /// The durability last reported by `poll` (or `sync_all`).
    fn durability(&self) -> Durability;

    /// First index stored. `last_index() + 1` when the log is empty.
    fn first_index(&self) -> LogIndex;

    /// Last index appended (durable or not).
    fn last_index(&self) -> LogIndex;

    /// Term of the entry at `index`: `Some(Term::ZERO)` for index 0, `None`
    /// outside `first_index()..=last_index()`.
    fn term_at(&self, index: LogIndex) -> Option<Term>;

    /// Whole batches from the one holding `from`, up to about `max_bytes`
    /// (always at least one batch). A range never spans two files; read on
    /// from `range.last + 1`.
    fn read(&self, from: LogIndex, max_bytes: usize) -> Result<ReadRange<'_>, StorageError>;

    /// Removes every batch from `from` on (a follower's conflict). `from`
    /// must be the first index of a batch, above the first index. It takes
    /// effect at once (reads, the next append's index; durability is
    /// clamped below `from`) and is on stable storage before anything
    /// appended after it is reported durable: a crash in between finds the
    /// log as it was, never a mix.
    fn truncate_suffix(&mut self, from: LogIndex) -> Result<(), StorageError>;

    /// Lets the store discard batches whose entries are all at or below
    /// `up_to` (covered by a snapshot). It may keep some (it drops whole
    /// segments); `first_index()` says what is left.
    fn drop_prefix(&mut self, up_to: LogIndex) -> Result<(), StorageError>;

    /// Discards the whole log; the next append must start at `next` (a
    /// snapshot up to `next - 1` was installed). Durable when it returns.
    fn reset(&mut self, next: LogIndex) -> Result<(), StorageError>;

    /// The last hard state stored (durable or not).
    fn hard_state(&self) -> HardState;

    /// The units `drop_prefix` drops whole, oldest first: contiguous, and
    /// together covering `first_index()..=last_index()`; an empty one has
    /// `last == first - 1`. A store without segments reports none, and
    /// then never drops anything by retention (see [`retention`]).
    fn segments(&self) -> Vec<SegmentInfo> {
        Vec::new()
    }

    /// Damaged records recovery found and cut when this store was opened
    /// (the node was marked damaged for them); 0 for a store without
    /// files.
    fn damage_found(&self) -> u64 {
        0
    }

    /// What recovery found damaged and cut when this store was opened, one
    /// line each naming the file and where; empty for a store without
    /// files.
    fn damage_report(&self) -> Vec<String> {
        Vec::new()
    }

    /// Bytes of the records stored: the sum of the segments' bytes.
    fn stored_bytes(&self) -> u64 {
        self.segments().iter().map(|segment| segment.bytes).sum()
    }

    /// Bytes of outside batches (a client's, a leader's) to accept now:
    /// `append` refuses with [`StorageError::Backpressure`] only beyond
    /// this plus [`crate::constants::WRITE_HEADROOM_BYTES`], the room kept
    /// for appends the node makes on its own. Callers wait for a `poll` to
    /// free room instead of asking.
    fn writable_bytes(&self) -> u64 {
        u64::MAX
    }

    /// Reserves the next `len` bytes of the log file for whole batches the
    /// caller writes there itself (a follower splicing socket → pipe →
    /// file); [`Reserve::Unsupported`] when this store has no file (in
    /// memory). Appends are refused until the reservation is completed or
    /// aborted. Never blocks: [`Reserve::NotYet`] asks to try again after a
    /// later `poll`.
    fn reserve(&mut self, len: u64) -> Result<Reserve, StorageError> {
        let _ = len;
        Ok(Reserve::Unsupported)
    }

    /// The bytes of the open reservation as they are in the file now, for
    /// the caller to verify before they count.
    fn reserved_bytes(&self, reservation: &segment::Reservation) -> Result<&[u8], StorageError> {
        let _ = reservation;
        Err(StorageError::Failed(
            "this store takes no reservations".into(),
        ))
    }

    /// The reserved bytes are written and verified by the caller: adds
    /// their batches.
    fn complete_reservation(
        &mut self,
        reservation: segment::Reservation,
    ) -> Result<LogIndex, StorageError> {
        let _ = reservation;
        Err(StorageError::Failed(
            "this store takes no reservations".into(),
        ))
    }

    /// Gives a reservation up; its bytes are zeroed.
    fn abort_reservation(&mut self, reservation: segment::Reservation) -> Result<(), StorageError> {
        let _ = reservation;
        Err(StorageError::Failed(
            "this store takes no reservations".into(),
        ))
    }
}
/// Visits the stored batches of `storage` from the one holding `from` on,
/// in order, while `visit` returns true, reading [`READ_CHUNK_BYTES`] at a
/// time. The one walk over stored batches of the daemon's groups
/// (applying, building AppendEntries, snapshots, replays).
pub fn visit_batches<E: From<StorageError> + From<WireError>>(
    storage: &dyn LogStorage,
    from: LogIndex,
    mut visit: impl FnMut(&BatchView<'_>, &[u8]) -> Result<bool, E>,
) -> Result<(), E> {
    let mut next = from.max(storage.first_index());
    while next <= storage.last_index() {
        let read = storage.read(next, READ_CHUNK_BYTES)?;
        let before = next;
        let mut rest = read.bytes;
        while let Some((frame, tail)) = split_frame(rest)? {
            rest = tail;
            let view = BatchView::parse(frame)?;
            if view.last_index() < next {
                continue;
            }
            if !visit(&view, frame)? {
                return Ok(());
            }
            next = view.last_index().next();
        }
        if next == before {
            break;
        }
    }
    Ok(())
}
