//! The suite every [`LogStorage`] must pass: the real segment store and the
//! simulator's [`MemoryLog`](crate::storage::memory::MemoryLog) run the same
//! checks, so the simulator's disk cannot drift from the real one.
//!
//! Each check is a function taking a [`Harness`] that makes, reopens and
//! crashes logs of one implementation; each implementation's tests call
//! [`run_all`] (or the checks one by one) with its own harness.

use crate::storage::{LogStorage, SegmentInfo, StorageError, unix_now_ms};
use crate::types::{LogIndex, NodeId, Term};
use crate::wire::{BatchKind, BatchView, encode_batch};

use super::HardState;

/// Makes and remakes logs of one implementation for the checks.
pub trait Harness {
    /// The implementation under test.
    type Log: LogStorage;

    /// A new, empty log (first append at index 1).
    fn create(&mut self) -> Self::Log;

    /// Closes `log` (without syncing it first) and opens it again from
    /// what it left on its storage.
    fn reopen(&mut self, log: Self::Log) -> Result<Self::Log, StorageError>;

    /// Crashes `log` — everything not durable may be lost, whole or torn —
    /// and opens it again.
    fn crash(&mut self, log: Self::Log) -> Result<Self::Log, StorageError>;
}

/// Every check, in order.
pub fn run_all<H: Harness>(harness: &mut H) {
    empty_log(harness);
    append_then_read_back(harness);
    append_refuses_bad_batches(harness);
    durability_needs_flush_and_covers_a_prefix(harness);
    reopen_keeps_everything_synced(harness);
    truncate_suffix_at_batch_boundaries(harness);
    drop_prefix_keeps_the_suffix(harness);
    segments_cover_the_log(harness);
    reset_starts_after_a_snapshot(harness);
    hard_state_round_trip(harness);
    crash_keeps_everything_durable(harness);
}

/// A sealed batch of `count` entries of `entry_bytes` each, with contents
/// derived from the index so every batch is distinct.
pub fn make_batch(term: u64, first: u64, count: u32, entry_bytes: usize) -> Vec<u8> {
    let entries: Vec<Vec<u8>> = (0..u64::from(count))
        .map(|entry| {
            let index = first + entry;
            (0..entry_bytes)
                .map(|byte| (index.wrapping_mul(31) ^ byte as u64 ^ 0x5a) as u8 | 1)
                .collect()
        })
        .collect();
    encode_batch(BatchKind::Data, Term(term), LogIndex(first), &entries)
}

/// Appends batches of `sizes[i]` entries in `term` after the log's last
/// index and returns their frames.
pub fn append_batches<L: LogStorage>(
    log: &mut L,
    term: u64,
    sizes: &[u32],
    entry_bytes: usize,
) -> Vec<Vec<u8>> {
    sizes
        .iter()
        .map(|count| {
            let frame = make_batch(term, log.last_index().next().get(), *count, entry_bytes);
            let last = log.append(&frame).expect("append");
            assert_eq!(last, log.last_index());
            frame
        })
        .collect()
}

/// Reads the whole log back, range by range, checking each range is whole
/// batches in order; returns the frames.
pub fn read_all<L: LogStorage>(log: &L, max_bytes: usize) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    let mut next = log.first_index();
    while next <= log.last_index() {
        let range = log.read(next, max_bytes).expect("read");
        assert_eq!(range.first, next, "ranges start at batch boundaries here");
        assert!(range.last >= range.first);
        let mut rest = range.bytes;
        let mut expected = range.first;
        while !rest.is_empty() {
            let view = BatchView::parse(rest).expect("stored frame parses");
            view.verify_checksum().expect("stored frame checksum");
            assert_eq!(view.first_index(), expected);
            expected = view.last_index().next();
            frames.push(view.bytes().to_vec());
            rest = &rest[view.len()..];
        }
        assert_eq!(expected, range.last.next());
        next = range.last.next();
    }
    frames
}

/// An empty log: first index 1, last 0, term 0 at index 0, nothing to read.
pub fn empty_log<H: Harness>(harness: &mut H) {
    let log = harness.create();
    assert_eq!(log.first_index(), LogIndex(1));
    assert_eq!(log.last_index(), LogIndex(0));
    assert_eq!(log.term_at(LogIndex(0)), Some(Term(0)));
    assert_eq!(log.term_at(LogIndex(1)), None);
    assert!(matches!(
        log.read(LogIndex(1), 1 << 20),
        Err(StorageError::Beyond { .. })
    ));
    assert_eq!(log.durability().index, LogIndex(0));
}

/// Appended batches read back byte for byte at every range size, and every
/// index knows its term.
pub fn append_then_read_back<H: Harness>(harness: &mut H) {
    let mut log = harness.create();
    let mut frames = append_batches(&mut log, 1, &[1, 5, 3], 40);
    frames.extend(append_batches(&mut log, 2, &[2, 64, 1], 300));
    assert_eq!(log.last_index(), LogIndex(76));
    for max_bytes in [0, 100, 1000, 1 << 20] {
        assert_eq!(read_all(&log, max_bytes), frames, "max_bytes {max_bytes}");
    }
    log.sync_all().expect("sync");
    assert_eq!(read_all(&log, 1 << 20), frames);
    for index in 1..=9 {
        assert_eq!(log.term_at(LogIndex(index)), Some(Term(1)), "index {index}");
    }
    for index in 10..=76 {
        assert_eq!(log.term_at(LogIndex(index)), Some(Term(2)), "index {index}");
    }
    assert_eq!(log.term_at(LogIndex(77)), None);
    // A read from the middle of a batch starts at that batch.
    let range = log.read(LogIndex(4), 0).expect("read mid-batch");
    assert_eq!((range.first, range.last), (LogIndex(2), LogIndex(6)));
    assert_eq!(range.bytes, &frames[1][..]);
}

/// Gaps, overlaps, lower terms, empty batches, bad checksums and trailing
/// bytes are refused, and a refused batch changes nothing.
pub fn append_refuses_bad_batches<H: Harness>(harness: &mut H) {
    let mut log = harness.create();
    let frames = append_batches(&mut log, 3, &[2], 16);
    let gap = make_batch(3, 5, 1, 16);
    assert!(matches!(
        log.append(&gap),
        Err(StorageError::NotContiguous { .. })
    ));
    let overlap = make_batch(3, 2, 1, 16);
    assert!(matches!(
        log.append(&overlap),
        Err(StorageError::NotContiguous { .. })
    ));
    let lower = make_batch(2, 3, 1, 16);
    assert!(matches!(
        log.append(&lower),
        Err(StorageError::TermRegression { .. })
    ));
    let empty = make_batch(3, 3, 0, 16);
    assert!(matches!(
        log.append(&empty),
        Err(StorageError::InvalidBatch(_))
    ));
    let mut damaged = make_batch(3, 3, 1, 16);
    let last = damaged.len() - 1;
    damaged[last] ^= 1;
    assert!(matches!(
        log.append(&damaged),
        Err(StorageError::InvalidBatch(_))
    ));
    let mut trailing = make_batch(3, 3, 1, 16);
    trailing.extend_from_slice(&[0; 8]);
    assert!(matches!(
        log.append(&trailing),
        Err(StorageError::InvalidBatch(_))
    ));
    assert_eq!(log.last_index(), LogIndex(2));
    assert_eq!(read_all(&log, 1 << 20), frames);
}

/// Nothing is durable before a flush; after `sync_all` everything is; a
/// durable index is always the last index of some batch.
pub fn durability_needs_flush_and_covers_a_prefix<H: Harness>(harness: &mut H) {
    let mut log = harness.create();
    append_batches(&mut log, 1, &[3, 4], 8);
    assert_eq!(log.poll().expect("poll").index, LogIndex(0));
    let durability = log.sync_all().expect("sync");
    assert_eq!(durability.index, LogIndex(7));
    assert_eq!(log.durability().index, LogIndex(7));
    append_batches(&mut log, 1, &[2], 8);
    log.flush().expect("flush");
    let mut index = log.poll().expect("poll").index;
    assert!(index == LogIndex(7) || index == LogIndex(9), "{index}");
    index = log.sync_all().expect("sync").index;
    assert_eq!(index, LogIndex(9));
    // Polling again reports the same.
    assert_eq!(log.poll().expect("poll").index, LogIndex(9));
}

/// A log closed after `sync_all` reopens with every batch and its terms.
pub fn reopen_keeps_everything_synced<H: Harness>(harness: &mut H) {
    let mut log = harness.create();
    let mut frames = append_batches(&mut log, 1, &[1, 2, 3], 100);
    frames.extend(append_batches(&mut log, 4, &[10], 1000));
    log.sync_all().expect("sync");
    let log = harness.reopen(log).expect("reopen");
    assert_eq!(log.first_index(), LogIndex(1));
    assert_eq!(log.last_index(), LogIndex(16));
    assert_eq!(log.durability().index, LogIndex(16));
    assert_eq!(log.term_at(LogIndex(6)), Some(Term(1)));
    assert_eq!(log.term_at(LogIndex(7)), Some(Term(4)));
    assert_eq!(read_all(&log, 1 << 20), frames);
}

/// Truncating at a batch boundary removes the suffix durably, lowers
/// durability, and lets the log continue at the cut; a cut inside a batch is
/// refused.
pub fn truncate_suffix_at_batch_boundaries<H: Harness>(harness: &mut H) {
    let mut log = harness.create();
    let mut frames = append_batches(&mut log, 1, &[2, 3, 4], 64);
    log.sync_all().expect("sync");
    assert!(matches!(
        log.truncate_suffix(LogIndex(4)),
        Err(StorageError::NotBatchBoundary(_))
    ));
    log.truncate_suffix(LogIndex(3)).expect("truncate");
    frames.truncate(1);
    assert_eq!(log.last_index(), LogIndex(2));
    assert_eq!(log.durability().index, LogIndex(2));
    assert_eq!(log.term_at(LogIndex(3)), None);
    assert_eq!(read_all(&log, 1 << 20), frames);
    frames.extend(append_batches(&mut log, 2, &[5], 64));
    // Truncating queued, unflushed batches works too.
    append_batches(&mut log, 2, &[1], 64);
    log.truncate_suffix(LogIndex(8)).expect("truncate queued");
    log.sync_all().expect("sync");
    assert_eq!(log.durability().index, LogIndex(7));
    let log = harness.reopen(log).expect("reopen");
    assert_eq!(log.last_index(), LogIndex(7));
    assert_eq!(log.term_at(LogIndex(3)), Some(Term(2)));
    assert_eq!(read_all(&log, 1 << 20), frames);
    // Truncating everything leaves an empty log that continues at the cut.
    let mut log = log;
    log.truncate_suffix(LogIndex(1)).expect("truncate all");
    assert_eq!(log.last_index(), LogIndex(0));
    append_batches(&mut log, 3, &[1], 8);
    assert_eq!(log.term_at(LogIndex(1)), Some(Term(3)));
}

/// Dropping a prefix keeps every entry above it readable, starts the log at
/// a batch boundary at or below the cut, and lasts across a reopen.
pub fn drop_prefix_keeps_the_suffix<H: Harness>(harness: &mut H) {
    let mut log = harness.create();
    let frames = append_batches(&mut log, 1, &[10; 50], 200);
    log.sync_all().expect("sync");
    log.drop_prefix(LogIndex(255)).expect("drop prefix");
    check_prefix_dropped(&log, &frames, LogIndex(255));
    let log = harness.reopen(log).expect("reopen");
    check_prefix_dropped(&log, &frames, LogIndex(255));
}

fn check_prefix_dropped<L: LogStorage>(log: &L, frames: &[Vec<u8>], up_to: LogIndex) {
    let first = log.first_index();
    assert!(
        first <= up_to.next(),
        "first index {first} above {up_to} + 1"
    );
    assert_eq!(log.last_index(), LogIndex(500));
    let kept = read_all(log, 1 << 20);
    assert_eq!(&frames[frames.len() - kept.len()..], &kept[..]);
    assert_eq!(
        BatchView::parse(&kept[0]).expect("parse").first_index(),
        first
    );
    if first > LogIndex(1) {
        assert!(matches!(
            log.read(first.prev(), 1),
            Err(StorageError::Compacted { .. })
        ));
        assert_eq!(log.term_at(first.prev()), None);
    }
}

/// `segments` are contiguous, cover `first_index..=last_index`, count the
/// bytes of the records (queued ones too) and carry the time of their last
/// append; `drop_prefix` up to a segment's end removes exactly the segments
/// up to it; all of it holds across a reopen.
pub fn segments_cover_the_log<H: Harness>(harness: &mut H) {
    let mut log = harness.create();
    check_segments(&log);
    assert_eq!(log.stored_bytes(), 0);
    let before = unix_now_ms();
    append_batches(&mut log, 1, &[10; 40], 200);
    log.sync_all().expect("sync");
    append_batches(&mut log, 2, &[10; 40], 200);
    let after = unix_now_ms();
    // Queued batches count too.
    let segments = check_segments(&log);
    assert!(segments.len() >= 3, "{} segments", segments.len());
    for segment in segments.iter().filter(|segment| !segment.is_empty()) {
        assert!(
            (before..=after).contains(&segment.modified_ms),
            "{segment:?} not modified in {before}..={after}"
        );
    }
    log.sync_all().expect("sync");
    assert_eq!(check_segments(&log), segments);
    log.drop_prefix(segments[1].last).expect("drop prefix");
    assert_eq!(log.first_index(), segments[2].first);
    assert_eq!(check_segments(&log), segments[2..]);
    let log = harness.reopen(log).expect("reopen");
    let reopened = check_segments(&log);
    let shape = |segments: &[SegmentInfo]| -> Vec<_> {
        segments
            .iter()
            .filter(|segment| !segment.is_empty())
            .map(|segment| (segment.first, segment.last, segment.bytes))
            .collect()
    };
    assert_eq!(shape(&reopened), shape(&segments[2..]));
    // Recovered segments keep when they were written (a file's mtime:
    // allow for a coarse file-system clock).
    let now = unix_now_ms();
    for segment in reopened.iter().filter(|segment| !segment.is_empty()) {
        assert!(
            (before.saturating_sub(2_000)..=now + 2_000).contains(&segment.modified_ms),
            "{segment:?} not modified in {before}..={now} (±2 s)"
        );
    }
}

/// Checks `log.segments()` against the log and returns them.
fn check_segments<L: LogStorage>(log: &L) -> Vec<SegmentInfo> {
    let segments = log.segments();
    let (first, last) = (log.first_index(), log.last_index());
    let Some((oldest, newest)) = segments.first().zip(segments.last()) else {
        assert!(
            last < first,
            "no segments for a log holding {first}..={last}"
        );
        assert_eq!(log.stored_bytes(), 0);
        return segments;
    };
    assert_eq!(oldest.first, first, "{segments:?}");
    assert_eq!(newest.last, last, "{segments:?}");
    for pair in segments.windows(2) {
        assert_eq!(pair[1].first, pair[0].last.next(), "{segments:?}");
    }
    for segment in &segments {
        assert!(segment.last >= segment.first.prev(), "{segment:?}");
        assert_eq!(segment.is_empty(), segment.bytes == 0, "{segment:?}");
    }
    let frame_bytes: u64 = read_all(log, 1 << 20)
        .iter()
        .map(|frame| frame.len() as u64)
        .sum();
    assert_eq!(log.stored_bytes(), frame_bytes);
    assert_eq!(
        segments.iter().map(|segment| segment.bytes).sum::<u64>(),
        frame_bytes
    );
    segments
}

/// After a reset the log is empty and continues at the given index, across
/// a reopen too.
pub fn reset_starts_after_a_snapshot<H: Harness>(harness: &mut H) {
    let mut log = harness.create();
    append_batches(&mut log, 1, &[3, 3], 32);
    log.sync_all().expect("sync");
    log.reset(LogIndex(1001)).expect("reset");
    assert_eq!(log.first_index(), LogIndex(1001));
    assert_eq!(log.last_index(), LogIndex(1000));
    assert_eq!(log.term_at(LogIndex(3)), None);
    let mut log = harness.reopen(log).expect("reopen");
    assert_eq!(log.first_index(), LogIndex(1001));
    assert_eq!(log.last_index(), LogIndex(1000));
    let frames = append_batches(&mut log, 5, &[2], 32);
    log.sync_all().expect("sync");
    let log = harness.reopen(log).expect("reopen");
    assert_eq!(read_all(&log, 1 << 20), frames);
    assert_eq!(log.term_at(LogIndex(1002)), Some(Term(5)));
}

/// A stored hard state becomes durable with a flush and survives reopening.
pub fn hard_state_round_trip<H: Harness>(harness: &mut H) {
    let mut log = harness.create();
    assert_eq!(log.hard_state(), HardState::default());
    let state = HardState {
        term: Term(9),
        vote: NodeId(2),
        commit: LogIndex(0),
        ..HardState::default()
    };
    log.store_hard_state(state).expect("store");
    assert_eq!(log.hard_state(), state);
    assert_eq!(log.sync_all().expect("sync").hard_state, state);
    let newer = HardState {
        term: Term(10),
        ..state
    };
    log.store_hard_state(newer).expect("store");
    log.sync_all().expect("sync");
    let log = harness.reopen(log).expect("reopen");
    assert_eq!(log.hard_state(), newer);
    assert_eq!(log.durability().hard_state, newer);
}

/// A crash keeps every durable batch; whatever else survives is whole
/// batches continuing the durable ones, and the log accepts appends after.
pub fn crash_keeps_everything_durable<H: Harness>(harness: &mut H) {
    let mut log = harness.create();
    let frames = append_batches(&mut log, 1, &[4; 20], 100);
    let durable = log.sync_all().expect("sync").index;
    let extra = append_batches(&mut log, 2, &[4; 20], 100);
    log.flush().expect("flush");
    let mut log = harness.crash(log).expect("recover");
    assert!(log.last_index() >= durable);
    let survived = read_all(&log, 1 << 20);
    assert_eq!(&survived[..frames.len()], &frames[..]);
    assert_eq!(
        &survived[frames.len()..],
        &extra[..survived.len() - frames.len()]
    );
    let next = make_batch(3, log.last_index().next().get(), 1, 10);
    log.append(&next).expect("append after crash");
    log.sync_all().expect("sync after crash");
}
