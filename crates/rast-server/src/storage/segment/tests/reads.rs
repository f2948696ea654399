//! Tests of reads and truncation: where read bytes come from (file or
//! memory), mapped reads releasing their pages, the sparse index of sealed
//! segments, and truncations that cut the log in memory at once and reach
//! the disk later.
//!
//! Why apart: these check what a reader sees of the log, before and after
//! it is cut, across reopens, rather than the write path itself.

use super::*;
use crate::storage::segment::write::ChunkState;

/// Reads of written bytes come from the file, with its descriptor and
/// offset for sendfile; reads of queued bytes come from memory.
#[test]
fn reads_name_the_file_once_written() {
    let dir = TempDir::new("read-file");
    let mut log = SegmentLog::open_standalone(&dir.0, SMALL).unwrap();
    let frames = append_batches(&mut log, 1, &[2, 2], 64);
    let queued = log.read(LogIndex(1), 1 << 20).unwrap();
    assert!(queued.file.is_none());
    assert_eq!(queued.bytes.len(), frames[0].len() + frames[1].len());
    log.sync_all().unwrap();
    let range = log.read(LogIndex(3), 1 << 20).unwrap();
    let span = range.file.expect("written bytes are in the file");
    assert_eq!(span.offset, frames[0].len() as u64);
    assert_eq!(range.bytes, &frames[1][..]);
}

/// Resident kilobytes of the mapping holding `address`, from
/// /proc/self/smaps (`None` when no mapping holds it).
fn resident_kib_of_mapping(address: usize) -> Option<u64> {
    let smaps = fs::read_to_string("/proc/self/smaps").unwrap();
    let mut inside = false;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((start, end)) = first.split_once('-')
            && let (Ok(start), Ok(end)) = (
                usize::from_str_radix(start, 16),
                usize::from_str_radix(end, 16),
            )
        {
            inside = (start..end).contains(&address);
            continue;
        }
        if inside && let Some(rest) = line.strip_prefix("Rss:") {
            return rest.trim().trim_end_matches("kB").trim().parse().ok();
        }
    }
    None
}

/// Reads through the segment maps do not pile up in the process's
/// resident memory: past `MAPPED_READ_BYTES_RELEASE` read bytes the maps'
/// pages are released, and every read still returns the stored bytes.
#[test]
fn mapped_reads_release_their_pages() {
    let dir = TempDir::new("mapped-release");
    let mut log = SegmentLog::open_standalone(&dir.0, SegmentOptions::default()).unwrap();
    // About 16 MiB in one segment, in batches of 64 KiB.
    let frames = append_batches(&mut log, 1, &[16; 256], 4096);
    log.sync_all().unwrap();
    let total: usize = frames.iter().map(Vec::len).sum();
    let range = log.read(LogIndex(1), usize::MAX).unwrap();
    assert!(range.file.is_some(), "read through the map");
    assert_eq!(range.bytes.len(), total);
    let address = range.bytes.as_ptr() as usize;
    let touched: u64 = range
        .bytes
        .iter()
        .step_by(4096)
        .map(|b| u64::from(*b))
        .sum();
    assert!(touched > 0);
    let resident_full = resident_kib_of_mapping(address).expect("mapped");
    assert!(
        resident_full * 1024 >= total as u64 / 2,
        "{resident_full} KiB resident after reading {total} bytes"
    );
    // Read it again and again, past the release threshold: each read
    // still returns the stored frames.
    let rounds = MAPPED_READ_BYTES_RELEASE / total as u64 + 1;
    for _ in 0..rounds {
        assert_eq!(read_all(&log, usize::MAX), frames);
    }
    // A release happens at the start of a read, which then maps only its
    // own range again (the kernel maps a large folio at a time: up to 2 MiB
    // around it).
    let mut resident_after = resident_kib_of_mapping(address).expect("mapped");
    assert!(
        resident_after <= resident_full,
        "{resident_after} > {resident_full}"
    );
    let before = log.mapped_reads.get();
    log.mapped_reads.set(MAPPED_READ_BYTES_RELEASE);
    let small = log.read(LogIndex(1), 1).unwrap();
    assert_eq!(small.bytes, &frames[0][..]);
    resident_after = resident_kib_of_mapping(address).expect("mapped");
    assert!(
        resident_after <= 4096 && resident_after < resident_full / 2,
        "{resident_after} KiB still resident after a release (read {before} bytes since)"
    );
}

/// Index entries held over every segment.
fn index_entries(log: &SegmentLog) -> usize {
    log.segments
        .iter()
        .map(|segment| segment.batches.len())
        .sum()
}

/// Segment options with room for many small batches per stride.
const MEDIUM: SegmentOptions = SegmentOptions {
    segment_bytes: 4 * INDEX_STRIDE_BYTES,
    zero_fill: false,
};

/// Sealed segments index sparsely (one entry per stride), and reads from
/// any index, truncation at a batch start in a sparse segment (refused
/// inside a batch) and reopening all still see every batch exactly.
#[test]
fn sealed_segments_index_sparsely_and_read_exactly() {
    let dir = TempDir::new("sparse");
    let mut log = SegmentLog::open_standalone(&dir.0, MEDIUM).unwrap();
    // 1 to 3 entries of 40 bytes: ~100-200 bytes per batch, over a
    // dozen segments.
    let sizes: Vec<u32> = (0..20_000).map(|batch| 1 + batch % 3).collect();
    let mut frames = Vec::new();
    for chunk in sizes.chunks(100) {
        frames.extend(append_batches(&mut log, 1, chunk, 40));
        log.flush().unwrap();
        log.sync_all().unwrap();
    }
    let segments = log.segments.len();
    assert!(segments >= 8, "{segments} segments");
    let dense_bound = |log: &SegmentLog| {
        let strides = (MEDIUM.segment_bytes / INDEX_STRIDE_BYTES) as usize;
        let active = &log.segments[log.segments.len() - 1];
        let previous = &log.segments[log.segments.len() - 2];
        (log.segments.len() - 2) * strides + active.batches.len() + previous.batches.len()
    };
    assert!(
        index_entries(&log) <= dense_bound(&log),
        "{} entries for {} batches",
        index_entries(&log),
        frames.len()
    );
    assert!(index_entries(&log) < frames.len() / 4);
    assert_eq!(read_all(&log, 1), frames, "one batch per read");
    assert_eq!(read_all(&log, 64 * 1024), frames, "many per read");
    // Every index, not only batch starts, is found in its batch.
    let mut first = 1u64;
    for (frame, count) in frames.iter().zip(&sizes) {
        for index in first..first + u64::from(*count) {
            let range = log.read(LogIndex(index), 1).unwrap();
            assert_eq!((range.first, range.bytes), (LogIndex(first), &frame[..]));
        }
        first += u64::from(*count);
    }
    // Truncate inside a sparse (sealed, written) segment: at a batch start.
    let sparse = &log.segments[2];
    assert!(sparse.dense_from == sparse.batches.len() && sparse.batches.len() < 10);
    let starts: Vec<u64> = sizes
        .iter()
        .scan(1u64, |next, count| {
            let start = *next;
            *next += u64::from(*count);
            Some(start)
        })
        .collect();
    let cut_batch = (0..sizes.len())
        .find(|batch| starts[*batch] > sparse.first.get() + 50 && sizes[*batch] > 1)
        .expect("a batch of several entries");
    let cut = starts[cut_batch];
    assert!(matches!(
        log.truncate_suffix(LogIndex(cut + 1)),
        Err(StorageError::NotBatchBoundary(index)) if index == LogIndex(cut + 1)
    ));
    log.truncate_suffix(LogIndex(cut)).unwrap();
    frames.truncate(cut_batch);
    assert_eq!(log.last_index(), LogIndex(cut - 1));
    assert_eq!(read_all(&log, 4096), frames);
    frames.extend(append_batches(&mut log, 2, &[2; 500], 40));
    log.flush().unwrap();
    log.sync_all().unwrap();
    assert_eq!(read_all(&log, 4096), frames);
    drop(log);
    let log = SegmentLog::open_standalone(&dir.0, MEDIUM).unwrap();
    assert_eq!(read_all(&log, 1), frames, "after reopening");
    let last = log.segments.len() - 1;
    assert!(
        log.segments.iter().take(last).all(
            |segment| segment.dense_from == segment.batches.len() && segment.batches.len() <= 4
        ),
        "recovered sealed segments index sparsely"
    );
}

/// A truncation never waits for the disk: it cuts the log in memory at once
/// (later segments, the cut segment's tail, staged and in-flight bytes past
/// the cut), queues the unlinks and the zeroing, and appends after it are
/// readable at once and written after the zeroing; once synced, a reopen
/// finds exactly the kept batches and the new ones, one segment file.
#[test]
fn truncation_across_segments_does_not_wait() {
    let dir = TempDir::new("truncate-async");
    let mut log = SegmentLog::open_standalone(&dir.0, SMALL).unwrap();
    let mut frames = append_batches(&mut log, 1, &[1; 10], 2048);
    log.sync_all().unwrap();
    // More, over two more segments, flushed but not waited for.
    let lost = append_batches(&mut log, 1, &[1; 60], 2048);
    log.flush().unwrap();
    assert!(log.segments.len() >= 3, "{} segments", log.segments.len());
    let from = LogIndex(6);
    frames.truncate(5);
    log.truncate_suffix(from).unwrap();
    assert_eq!(log.last_index(), LogIndex(5));
    assert_eq!(log.segments.len(), 1);
    assert!(log.durability().index <= LogIndex(5));
    assert!(
        log.chunks
            .iter()
            .any(|chunk| matches!(chunk.state, ChunkState::Clear(_) | ChunkState::Writing(_)))
            || !log.unlinks.is_empty(),
        "the cut is left to the ring, not waited for"
    );
    assert_eq!(read_all(&log, 1 << 20), frames);
    // Appends after the cut (a new term) are readable at once, not the
    // bytes that were there.
    frames.extend(append_batches(&mut log, 2, &[1; 3], 2048));
    assert_eq!(read_all(&log, 1 << 20), frames);
    assert_eq!(log.sync_all().unwrap().index, LogIndex(8));
    assert!(log.unlinks.is_empty());
    drop(log);
    let log = SegmentLog::open_standalone(&dir.0, SMALL).unwrap();
    assert_eq!(read_all(&log, 1 << 20), frames);
    let files = fs::read_dir(&dir.0)
        .unwrap()
        .filter(|entry| {
            entry
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".log")
        })
        .count();
    assert_eq!(files, 1, "the later segments are gone");
    assert!(lost.len() > 50);
}

/// A truncation of staged and in-flight bytes inside the active segment,
/// then appends and another truncation before anything is synced: the
/// store ends up with exactly the batches kept, across a reopen.
#[test]
fn truncations_of_unsynced_bytes_compose() {
    let dir = TempDir::new("truncate-unsynced");
    let mut log = SegmentLog::open_standalone(&dir.0, SegmentOptions::default()).unwrap();
    let mut frames = append_batches(&mut log, 1, &[2; 20], 100);
    log.flush().unwrap();
    append_batches(&mut log, 1, &[2; 5], 100);
    log.truncate_suffix(LogIndex(31)).unwrap();
    frames.truncate(15);
    frames.extend(append_batches(&mut log, 2, &[3; 4], 100));
    log.flush().unwrap();
    log.truncate_suffix(LogIndex(37)).unwrap();
    frames.truncate(17);
    frames.extend(append_batches(&mut log, 3, &[1; 2], 100));
    // Not the bytes of the cut batches still being written under them.
    assert_eq!(read_all(&log, 1 << 20), frames);
    assert_eq!(log.sync_all().unwrap().index, LogIndex(38));
    drop(log);
    let log = SegmentLog::open_standalone(&dir.0, SegmentOptions::default()).unwrap();
    assert_eq!(read_all(&log, 1 << 20), frames);
}

/// A truncation below what the durable mark says makes the lowered mark
/// durable before the log shrinks on disk: while the mark's sync is held
/// back, the later segments are not unlinked and the cut tail is not
/// zeroed (a crash then finds the longer log under the old mark); once it
/// completes they are, and the shorter log reopens under the lower mark,
/// not damaged.
#[test]
fn a_truncation_lowers_the_durable_mark_before_the_log_shrinks() {
    let dir = TempDir::new("truncate-mark");
    let mut log = SegmentLog::open_standalone(&dir.0, SMALL).unwrap();
    log.store_hard_state(HardState {
        term: Term(1),
        ..HardState::default()
    })
    .unwrap();
    let mut frames = append_batches(&mut log, 1, &[1; 70], 2048);
    log.sync_all().unwrap();
    assert!(log.segments.len() >= 3, "{} segments", log.segments.len());
    let doomed = log.segment_paths().pop().unwrap();
    let ring = Rc::clone(log.ring());
    ring.borrow_mut().hold_syncs(true);
    let from = LogIndex(6);
    frames.truncate(5);
    log.truncate_suffix(from).unwrap();
    log.poll().unwrap();
    let unlinks_issued = log
        .unlinks
        .iter()
        .any(|unlinking| !unlinking.ops.is_empty());
    let zeroing_issued = !log
        .chunks
        .iter()
        .any(|chunk| matches!(chunk.state, ChunkState::Clear(_)));
    let settled = log.mark.settled();
    // Released before asserting: a store dropped while its syncs are held
    // would wait for them forever.
    ring.borrow_mut().hold_syncs(false);
    assert!(!settled, "the lowered mark is not durable yet");
    assert!(
        !unlinks_issued,
        "segments unlinked before the mark came down"
    );
    assert!(
        !zeroing_issued,
        "the cut tail zeroed before the mark came down"
    );
    assert!(doomed.exists());
    assert_eq!(log.sync_all().unwrap().index, LogIndex(5));
    assert!(!doomed.exists(), "unlinked once the mark came down");
    drop(log);
    let log = SegmentLog::open_standalone(&dir.0, SMALL).unwrap();
    assert_eq!(read_all(&log, 1 << 20), frames);
    assert_eq!(log.damage_found(), 0, "a truncation read as damage");
    assert_eq!(log.hard_state().damaged_in, Term::ZERO);
}
