//! An in-memory log store for the simulator and for tests.
//!
//! It keeps three marks over one byte vector of records, so a simulated
//! crash loses exactly what a real one may:
//!
//! ```text
//!  bytes:  ┌──────── durable ───────┬──── written ────┬──── queued ────┐
//!          0                   durable_len       flushed_len       len()
//!           survives any crash    may survive,      lost by any crash
//!                                 whole or torn
//! ```
//!
//! * `append` adds to *queued*; `flush` turns queued into *written* and
//!   starts one sync covering it; a finished sync turns *written* into
//!   *durable* up to what it covered.
//! * When syncs finish is up to the owner: [`SyncMode::Immediate`] finishes
//!   them at the next `poll`; [`SyncMode::Manual`] only when the simulator
//!   calls [`MemoryLog::complete_sync`], so it can give the disk any latency.
//! * [`MemoryLog::crash`] returns the disk image a crash leaves — the
//!   durable bytes, optionally some written records and a torn partial
//!   record — and [`MemoryLog::open`] recovers from it with the same scan as
//!   the real store, cutting the torn tail off.
//! * Faults on demand: [`MemoryLog::fail_next_sync`] (fail-stop) and
//!   [`MemoryLog::set_capacity`] (disk full).

use std::collections::VecDeque;
use std::path::PathBuf;

use crate::search::partition_point_from_end;
use crate::storage::record::{self, RecordMeta};
use crate::storage::{
    Checksum, Durability, HardState, LogStorage, ReadRange, SegmentInfo, StorageError,
    check_append, check_stored, unix_now_ms,
};
use crate::types::{LogIndex, Term};

/// When flushed syncs finish.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncMode {
    /// At the next `poll`: a disk with no latency.
    Immediate,
    /// Only through [`MemoryLog::complete_sync`].
    Manual,
}

/// What a simulated crash leaves of the written (flushed, unsynced) bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Crash {
    /// Whole written batches past the durable mark that survive.
    pub keep_batches: usize,
    /// Bytes of the next written batch that survive as a torn record
    /// (clamped below that batch's length).
    pub torn_bytes: usize,
}

/// The stable storage of a [`MemoryLog`] after a crash.
#[derive(Clone, Debug, Default)]
pub struct MemoryDisk {
    /// Records, back to back, the first starting at `first_index`.
    pub bytes: Vec<u8>,
    /// Index the first record must start at.
    pub first_index: LogIndex,
    /// The durable hard state.
    pub hard_state: HardState,
    /// Per record, when it was appended (Unix-epoch ms), as a file's mtime
    /// keeps it across a crash; a record without one counts as appended
    /// at open.
    pub modified_ms: Vec<u64>,
}

/// One sync started by `flush` and not yet finished.
#[derive(Clone, Copy, Debug)]
struct PendingSync {
    /// Last index it covers.
    index: LogIndex,
    /// Bytes it covers.
    bytes: usize,
    /// The hard state it makes durable, if one was queued.
    hard_state: Option<HardState>,
}

/// An in-memory [`LogStorage`]; see the module docs.
#[derive(Debug)]
pub struct MemoryLog {
    /// Index the first record starts at (`last + 1` when empty).
    first_index: LogIndex,
    bytes: Vec<u8>,
    batches: Vec<RecordMeta>,
    /// Per batch, the Unix-epoch ms it was appended at.
    modified_ms: Vec<u64>,
    /// The clock appends are stamped with; `None`: the wall clock as of
    /// the last `flush` or `poll` (`wall_ms`), read once a turn rather
    /// than once an append.
    clock_ms: Option<u64>,
    wall_ms: u64,
    flushed_len: usize,
    flushed_index: LogIndex,
    durable_len: usize,
    durability: Durability,
    pending: VecDeque<PendingSync>,
    hard_state: HardState,
    hard_state_queued: Option<HardState>,
    mode: SyncMode,
    capacity: Option<usize>,
    fail_next_sync: bool,
    failed: Option<String>,
}

impl MemoryLog {
    /// An empty log whose first append is at index 1.
    pub fn new(mode: SyncMode) -> Self {
        Self::empty(LogIndex(1), HardState::default(), mode)
    }

    fn empty(first_index: LogIndex, hard_state: HardState, mode: SyncMode) -> Self {
        Self {
            first_index,
            bytes: Vec::new(),
            batches: Vec::new(),
            modified_ms: Vec::new(),
            clock_ms: None,
            wall_ms: unix_now_ms(),
            flushed_len: 0,
            flushed_index: first_index.prev(),
            durable_len: 0,
            durability: Durability {
                index: first_index.prev(),
                hard_state,
            },
            pending: VecDeque::new(),
            hard_state,
            hard_state_queued: None,
            mode,
            capacity: None,
            fail_next_sync: false,
            failed: None,
        }
    }

    /// Recovers a log from a crashed disk: verifies every record, cuts off
    /// a torn final record, and fails on corruption anywhere else.
    pub fn open(disk: MemoryDisk, mode: SyncMode) -> Result<Self, StorageError> {
        let mut log = Self::empty(disk.first_index, disk.hard_state, mode);
        let mut batches = Vec::new();
        let scanned = record::scan(&disk.bytes, disk.first_index, Term::ZERO, |meta| {
            batches.push(meta);
        })
        .map_err(|error| StorageError::Corrupt {
            path: PathBuf::from("<memory>"),
            offset: error.offset,
            reason: error.reason,
        })?;
        let mut bytes = disk.bytes;
        bytes.truncate(scanned.end as usize);
        let last = batches
            .last()
            .map_or(disk.first_index.prev(), |meta| meta.last);
        let now_ms = log.now_ms();
        log.modified_ms = (0..batches.len())
            .map(|position| disk.modified_ms.get(position).copied().unwrap_or(now_ms))
            .collect();
        log.bytes = bytes;
        log.batches = batches;
        log.flushed_len = log.bytes.len();
        log.durable_len = log.bytes.len();
        log.flushed_index = last;
        log.durability.index = last;
        Ok(log)
    }

    /// The disk a crash right now would leave (see [`Crash`]).
    pub fn crash(&self, crash: Crash) -> MemoryDisk {
        let written = self.batches_between(self.durable_len, self.flushed_len);
        let kept = &written[..crash.keep_batches.min(written.len())];
        let mut end = kept.last().map_or(self.durable_len, |meta| {
            meta.offset as usize + meta.bytes as usize
        });
        if let Some(next) = written.get(crash.keep_batches) {
            end += crash.torn_bytes.min(next.bytes as usize - 1);
        }
        let records = self
            .batches
            .partition_point(|meta| (meta.offset as usize) < end);
        MemoryDisk {
            bytes: self.bytes[..end].to_vec(),
            first_index: self.first_index,
            hard_state: self.durability.hard_state,
            modified_ms: self.modified_ms[..records].to_vec(),
        }
    }

    /// Finishes the oldest pending sync (in [`SyncMode::Manual`]); false
    /// when none is pending. A failure planted by `fail_next_sync` strikes
    /// here.
    pub fn complete_sync(&mut self) -> bool {
        let Some(sync) = self.pending.pop_front() else {
            return false;
        };
        if self.fail_next_sync {
            self.fail_next_sync = false;
            self.failed = Some("fdatasync failed (injected)".into());
            self.pending.clear();
            return true;
        }
        self.durable_len = self.durable_len.max(sync.bytes);
        self.durability.index = self.durability.index.max(sync.index);
        if let Some(state) = sync.hard_state {
            self.durability.hard_state = state;
        }
        true
    }

    /// Syncs started and not yet finished.
    pub fn pending_syncs(&self) -> usize {
        self.pending.len()
    }

    /// Makes the next sync to finish fail: the store then fails every call
    /// (fail-stop), as the real one does on an fdatasync error.
    pub fn fail_next_sync(&mut self) {
        self.fail_next_sync = true;
    }

    /// Limits the bytes of records the disk holds (`None`: unlimited).
    /// Appends past the limit fail with [`StorageError::NoSpace`].
    pub fn set_capacity(&mut self, capacity: Option<usize>) {
        self.capacity = capacity;
    }

    /// Pins the clock appends are stamped with (Unix-epoch ms), for a
    /// simulator or a test of retention by age; `None` goes back to the
    /// wall clock. Recovery (`open`) starts on the wall clock again.
    pub fn set_clock_ms(&mut self, now_ms: Option<u64>) {
        self.clock_ms = now_ms;
    }

    fn now_ms(&self) -> u64 {
        self.clock_ms.unwrap_or(self.wall_ms)
    }

    fn batches_between(&self, start: usize, end: usize) -> &[RecordMeta] {
        let from = self
            .batches
            .partition_point(|meta| (meta.offset as usize) < start);
        let to = self
            .batches
            .partition_point(|meta| (meta.offset as usize) < end);
        &self.batches[from..to]
    }

    fn check_failed(&self) -> Result<(), StorageError> {
        match &self.failed {
            Some(reason) => Err(StorageError::Failed(reason.clone())),
            None => Ok(()),
        }
    }

    fn last_term(&self) -> Term {
        self.batches.last().map_or(Term::ZERO, |meta| meta.term)
    }

    /// Position in `batches` of the batch holding `index`.
    fn position(&self, index: LogIndex) -> Result<usize, StorageError> {
        check_stored(index, self.first_index, self.last_index())?;
        Ok(partition_point_from_end(self.batches.len(), |at| {
            self.batches[at].last < index
        }))
    }

    /// Forgets the batches before position `keep_from`, shifting offsets.
    fn forget_front(&mut self, keep_from: usize) {
        let cut = self
            .batches
            .get(keep_from)
            .map_or(self.bytes.len(), |meta| meta.offset as usize);
        self.first_index = self
            .batches
            .get(keep_from)
            .map_or(self.last_index().next(), |meta| meta.first);
        self.batches.drain(..keep_from);
        self.modified_ms.drain(..keep_from);
        for meta in &mut self.batches {
            meta.offset -= cut as u64;
        }
        self.bytes.drain(..cut);
        self.flushed_len = self.flushed_len.saturating_sub(cut);
        self.durable_len = self.durable_len.saturating_sub(cut);
        for sync in &mut self.pending {
            sync.bytes = sync.bytes.saturating_sub(cut);
        }
    }
}

impl MemoryLog {
    /// `append`, with the checksum verified as `checksum` says.
    fn append_checked(
        &mut self,
        frame: &[u8],
        checksum: Checksum,
    ) -> Result<LogIndex, StorageError> {
        self.check_failed()?;
        let (first, last, term) =
            check_append(frame, self.last_index().next(), self.last_term(), checksum)?;
        if self
            .capacity
            .is_some_and(|capacity| self.bytes.len() + frame.len() > capacity)
        {
            return Err(StorageError::NoSpace);
        }
        self.batches.push(RecordMeta {
            offset: self.bytes.len() as u64,
            bytes: frame.len() as u32,
            first,
            last,
            term,
        });
        self.modified_ms.push(self.now_ms());
        self.bytes.extend_from_slice(frame);
        Ok(last)
    }
}

impl LogStorage for MemoryLog {
    fn append(&mut self, frame: &[u8]) -> Result<LogIndex, StorageError> {
        self.append_checked(frame, Checksum::Verify)
    }

    fn append_shared(&mut self, frame: bytes::Bytes) -> Result<LogIndex, StorageError> {
        self.append_checked(&frame, Checksum::VerifiedByCaller)
    }

    fn store_hard_state(&mut self, state: HardState) -> Result<(), StorageError> {
        self.check_failed()?;
        self.hard_state = state;
        self.hard_state_queued = Some(state);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StorageError> {
        self.check_failed()?;
        self.wall_ms = unix_now_ms();
        let hard_state = self.hard_state_queued.take();
        if self.flushed_len == self.bytes.len() && hard_state.is_none() {
            return Ok(());
        }
        self.flushed_len = self.bytes.len();
        self.flushed_index = self.last_index();
        self.pending.push_back(PendingSync {
            index: self.flushed_index,
            bytes: self.flushed_len,
            hard_state,
        });
        Ok(())
    }

    fn poll(&mut self) -> Result<Durability, StorageError> {
        self.check_failed()?;
        self.wall_ms = unix_now_ms();
        if self.mode == SyncMode::Immediate {
            while self.complete_sync() {}
        }
        self.check_failed()?;
        Ok(self.durability)
    }

    fn sync_all(&mut self) -> Result<Durability, StorageError> {
        self.flush()?;
        while self.complete_sync() {}
        self.check_failed()?;
        Ok(self.durability)
    }

    fn durability(&self) -> Durability {
        self.durability
    }

    fn first_index(&self) -> LogIndex {
        self.first_index
    }

    fn last_index(&self) -> LogIndex {
        self.batches
            .last()
            .map_or(self.first_index.prev(), |meta| meta.last)
    }

    fn term_at(&self, index: LogIndex) -> Option<Term> {
        if index == LogIndex::ZERO {
            return Some(Term::ZERO);
        }
        let position = self.position(index).ok()?;
        Some(self.batches[position].term)
    }

    fn read(&self, from: LogIndex, max_bytes: usize) -> Result<ReadRange<'_>, StorageError> {
        self.check_failed()?;
        let start = self.position(from)?;
        let mut end = start + 1;
        let mut bytes = self.batches[start].bytes as usize;
        while let Some(meta) = self.batches.get(end) {
            if bytes + meta.bytes as usize > max_bytes {
                break;
            }
            bytes += meta.bytes as usize;
            end += 1;
        }
        let offset = self.batches[start].offset as usize;
        Ok(ReadRange {
            first: self.batches[start].first,
            last: self.batches[end - 1].last,
            bytes: &self.bytes[offset..offset + bytes],
            file: None,
            shared: None,
        })
    }

    fn truncate_suffix(&mut self, from: LogIndex) -> Result<(), StorageError> {
        self.check_failed()?;
        if from == self.last_index().next() {
            return Ok(());
        }
        let position = self.position(from)?;
        if self.batches[position].first != from {
            return Err(StorageError::NotBatchBoundary(from));
        }
        let cut = self.batches[position].offset as usize;
        self.batches.truncate(position);
        self.modified_ms.truncate(position);
        self.bytes.truncate(cut);
        self.flushed_len = self.flushed_len.min(cut);
        self.durable_len = self.durable_len.min(cut);
        self.flushed_index = self.flushed_index.min(from.prev());
        self.durability.index = self.durability.index.min(from.prev());
        for sync in &mut self.pending {
            sync.bytes = sync.bytes.min(cut);
            sync.index = sync.index.min(from.prev());
        }
        Ok(())
    }

    fn drop_prefix(&mut self, up_to: LogIndex) -> Result<(), StorageError> {
        self.check_failed()?;
        // Only durable batches go: the disk image must stay a prefix chain.
        let droppable = self
            .batches
            .partition_point(|meta| meta.last <= up_to && meta.last <= self.durability.index);
        self.forget_front(droppable);
        Ok(())
    }

    fn reset(&mut self, next: LogIndex) -> Result<(), StorageError> {
        self.check_failed()?;
        let durable_hard_state = self.durability.hard_state;
        let queued = self.hard_state_queued;
        let (mode, capacity, clock_ms) = (self.mode, self.capacity, self.clock_ms);
        *self = Self::empty(next, self.hard_state, mode);
        self.durability.hard_state = durable_hard_state;
        self.hard_state_queued = queued;
        self.capacity = capacity;
        self.clock_ms = clock_ms;
        Ok(())
    }

    fn hard_state(&self) -> HardState {
        self.hard_state
    }

    /// The records held, counted without listing them (`segments` lists
    /// every batch).
    fn stored_bytes(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// One segment per batch: a memory log drops its prefix batch by batch.
    fn segments(&self) -> Vec<SegmentInfo> {
        self.batches
            .iter()
            .zip(&self.modified_ms)
            .map(|(meta, modified_ms)| SegmentInfo {
                first: meta.first,
                last: meta.last,
                bytes: u64::from(meta.bytes),
                modified_ms: *modified_ms,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::conformance::{self, Harness, append_batches, make_batch, read_all};

    /// Makes memory logs; "crash" keeps a few written batches and a torn
    /// piece of the next, so recovery has a tail to cut.
    struct MemoryHarness {
        mode: SyncMode,
    }

    impl Harness for MemoryHarness {
        type Log = MemoryLog;

        fn create(&mut self) -> MemoryLog {
            MemoryLog::new(self.mode)
        }

        fn reopen(&mut self, log: MemoryLog) -> Result<MemoryLog, StorageError> {
            let disk = log.crash(Crash {
                keep_batches: usize::MAX,
                torn_bytes: 0,
            });
            MemoryLog::open(disk, self.mode)
        }

        fn crash(&mut self, log: MemoryLog) -> Result<MemoryLog, StorageError> {
            let disk = log.crash(Crash {
                keep_batches: 3,
                torn_bytes: 50,
            });
            MemoryLog::open(disk, self.mode)
        }
    }

    /// The memory log passes the conformance suite with syncs finishing at
    /// the next poll.
    #[test]
    fn conformance_immediate() {
        conformance::run_all(&mut MemoryHarness {
            mode: SyncMode::Immediate,
        });
    }

    /// The memory log passes the conformance suite when syncs finish only
    /// when the simulator says.
    #[test]
    fn conformance_manual() {
        conformance::run_all(&mut MemoryHarness {
            mode: SyncMode::Manual,
        });
    }

    /// In manual mode durability moves one flushed sync at a time, in order,
    /// and a hard state becomes durable with the sync it was flushed with.
    #[test]
    fn manual_syncs_complete_in_order() {
        let mut log = MemoryLog::new(SyncMode::Manual);
        append_batches(&mut log, 1, &[2], 8);
        log.flush().unwrap();
        append_batches(&mut log, 1, &[3], 8);
        let state = HardState {
            term: Term(1),
            ..HardState::default()
        };
        log.store_hard_state(state).unwrap();
        log.flush().unwrap();
        assert_eq!(log.pending_syncs(), 2);
        assert_eq!(log.poll().unwrap().index, LogIndex(0));
        assert!(log.complete_sync());
        let durability = log.poll().unwrap();
        assert_eq!(durability.index, LogIndex(2));
        assert_eq!(durability.hard_state, HardState::default());
        assert!(log.complete_sync());
        let durability = log.poll().unwrap();
        assert_eq!(durability.index, LogIndex(5));
        assert_eq!(durability.hard_state, state);
        assert!(!log.complete_sync());
    }

    /// A crash loses queued and unsynced batches and cuts a torn record at
    /// every length, keeping exactly the durable ones plus whole written ones.
    #[test]
    fn crash_cuts_torn_tail_at_every_length() {
        let mut log = MemoryLog::new(SyncMode::Manual);
        let durable = append_batches(&mut log, 1, &[2, 2], 30);
        log.sync_all().unwrap();
        let written = append_batches(&mut log, 1, &[2, 2], 30);
        log.flush().unwrap();
        append_batches(&mut log, 1, &[2], 30);
        for keep in 0..=2 {
            for torn in 0..written[0].len() {
                let disk = log.crash(Crash {
                    keep_batches: keep,
                    torn_bytes: torn,
                });
                let recovered = MemoryLog::open(disk, SyncMode::Manual).unwrap();
                let mut expected = durable.clone();
                expected.extend(written.iter().take(keep).cloned());
                assert_eq!(read_all(&recovered, 1 << 20), expected, "{keep} {torn}");
            }
        }
    }

    /// A failed sync stops the store: every later call fails, nothing more
    /// becomes durable.
    #[test]
    fn failed_sync_is_fail_stop() {
        let mut log = MemoryLog::new(SyncMode::Manual);
        append_batches(&mut log, 1, &[2], 8);
        log.fail_next_sync();
        log.flush().unwrap();
        assert!(log.complete_sync());
        assert!(matches!(log.poll(), Err(StorageError::Failed(_))));
        assert!(matches!(
            log.append(&make_batch(1, 3, 1, 8)),
            Err(StorageError::Failed(_))
        ));
        assert!(matches!(log.sync_all(), Err(StorageError::Failed(_))));
        assert_eq!(log.durability().index, LogIndex(0));
    }

    /// One segment per batch, stamped with the pinned clock at its append;
    /// the stamps survive a crash and drive retention by age and by size.
    #[test]
    fn batch_times_survive_a_crash_and_drive_retention() {
        use crate::storage::retention::{Retention, retention_point};

        let mut log = MemoryLog::new(SyncMode::Immediate);
        log.set_clock_ms(Some(1_000));
        let frames = append_batches(&mut log, 1, &[2, 2], 8);
        log.set_clock_ms(Some(5_000));
        append_batches(&mut log, 1, &[2, 2], 8);
        log.sync_all().unwrap();
        let segments = log.segments();
        let shape: Vec<_> = segments
            .iter()
            .map(|segment| (segment.first.get(), segment.last.get(), segment.modified_ms))
            .collect();
        assert_eq!(
            shape,
            [(1, 2, 1_000), (3, 4, 1_000), (5, 6, 5_000), (7, 8, 5_000)]
        );
        assert_eq!(segments[0].bytes, frames[0].len() as u64);
        let mut log = MemoryLog::open(log.crash(Crash::default()), SyncMode::Immediate).unwrap();
        assert_eq!(log.segments(), segments);
        let by_age = Retention {
            bytes_max: None,
            age_max_ms: Some(2_000),
        };
        let limit = log.durability().index;
        let point = retention_point(&log.segments(), limit, &by_age, 6_000);
        assert_eq!(point, Some(LogIndex(4)));
        log.drop_prefix(point.unwrap()).unwrap();
        assert_eq!(log.first_index(), LogIndex(5));
        assert_eq!(log.segments(), segments[2..]);
        // A budget smaller than the last batch keeps only that one.
        let by_size = Retention {
            bytes_max: Some(1),
            age_max_ms: None,
        };
        let point = retention_point(&log.segments(), limit, &by_size, 6_000);
        assert_eq!(point, Some(LogIndex(6)));
        log.drop_prefix(point.unwrap()).unwrap();
        assert_eq!(log.segments(), segments[3..]);
        assert_eq!(log.stored_bytes(), segments[3].bytes);
    }

    /// A full disk refuses appends without harming what is stored, and
    /// appends resume when space returns.
    #[test]
    fn full_disk_refuses_appends_then_resumes() {
        let mut log = MemoryLog::new(SyncMode::Immediate);
        let frames = append_batches(&mut log, 1, &[2], 100);
        log.set_capacity(Some(log.stored_bytes() as usize + 10));
        let refused = make_batch(1, 3, 1, 100);
        assert!(matches!(log.append(&refused), Err(StorageError::NoSpace)));
        assert_eq!(read_all(&log, 1 << 20), frames);
        log.set_capacity(None);
        log.append(&refused).unwrap();
        assert_eq!(log.sync_all().unwrap().index, LogIndex(3));
    }
}
