//! Tests of the segment store: the conformance suite, and recovery from
//! every kind of damage the issue lists. The write path (`writes`) and
//! reads and truncation (`reads`) have modules of their own; the helpers
//! they share (`TempDir`, the small segment options) are here.

mod reads;
mod writes;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::*;
use crate::constants::SECTOR_BYTES;
use crate::storage::conformance::{self, Harness, append_batches, make_batch, read_all};

/// A directory under the system temp dir, removed when dropped.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn new(name: &str) -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "rast-{name}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Small segments, so the suite rolls segments and drops whole ones.
const SMALL: SegmentOptions = SegmentOptions {
    segment_bytes: SEGMENT_BYTES_MIN,
    zero_fill: false,
};

struct SegmentHarness {
    options: SegmentOptions,
    dirs: Vec<TempDir>,
}

impl Harness for SegmentHarness {
    type Log = SegmentLog;

    fn create(&mut self) -> SegmentLog {
        let dir = TempDir::new("conformance");
        let log = SegmentLog::open_standalone(&dir.0, self.options).unwrap();
        self.dirs.push(dir);
        log
    }

    fn reopen(&mut self, log: SegmentLog) -> Result<SegmentLog, StorageError> {
        let dir = log.dir().to_path_buf();
        drop(log);
        SegmentLog::open_standalone(&dir, self.options)
    }

    fn crash(&mut self, log: SegmentLog) -> Result<SegmentLog, StorageError> {
        // Unsynced writes that reached the page cache survive a process
        // crash; tear the tail as a power cut might: zero the last sectors.
        let dir = log.dir().to_path_buf();
        let durable_end = {
            let segment = log.active();
            let durable = log.durability().index;
            if durable >= segment.last {
                segment.end
            } else if durable < segment.first {
                0
            } else {
                // The end of the batch holding `durable` (the index may be
                // sparse here after a truncation into a sealed segment).
                let range = log.read(durable, 1).unwrap();
                let span = range.file.expect("durable bytes are in the file");
                span.offset + range.bytes.len() as u64
            }
        };
        let path = log.active().path.clone();
        drop(log);
        let bytes = fs::read(&path).unwrap();
        let written = bytes
            .iter()
            .rposition(|byte| *byte != 0)
            .map_or(0, |at| at + 1) as u64;
        let tear = (written.saturating_sub(700) / SECTOR_BYTES * SECTOR_BYTES).max(durable_end);
        let tear = tear.next_multiple_of(SECTOR_BYTES);
        if tear < written {
            zero_range(&path, tear, written - tear);
        }
        SegmentLog::open_standalone(&dir, SMALL)
    }
}

fn zero_range(path: &Path, offset: u64, len: u64) {
    use std::os::unix::fs::FileExt;
    let file = OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(&vec![0; len as usize], offset).unwrap();
}

fn flip_bit(path: &Path, offset: u64, bit: u8) {
    use std::os::unix::fs::FileExt;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, offset).unwrap();
    byte[0] ^= 1 << bit;
    file.write_all_at(&byte, offset).unwrap();
}

/// The segment store passes the conformance suite, with segments small
/// enough to roll and be dropped whole.
#[test]
fn conformance_suite() {
    conformance::run_all(&mut SegmentHarness {
        options: SMALL,
        dirs: Vec::new(),
    });
}

/// The same with segments made ahead by writing zeros over them
/// (`zero_fill`); and such a segment holds zeros after its records.
#[test]
fn conformance_suite_with_zero_filled_segments() {
    let options = SegmentOptions {
        zero_fill: true,
        ..SMALL
    };
    conformance::run_all(&mut SegmentHarness {
        options,
        dirs: Vec::new(),
    });
    let dir = TempDir::new("zero-fill");
    let mut log = SegmentLog::open_standalone(&dir.0, options).unwrap();
    let frames = append_batches(&mut log, 1, &[1; 40], 4096);
    log.sync_all().unwrap();
    assert!(
        log.segments.len() >= 2,
        "the log rolled into a prepared segment"
    );
    let second = &log.segments[1];
    let bytes = second.mapping().unwrap().bytes();
    assert!(bytes[second.end as usize..].iter().all(|byte| *byte == 0));
    assert_eq!(bytes.len() as u64, options.segment_bytes);
    assert_eq!(read_all(&log, 1 << 20), frames);
}

/// Writes `batches` batches of three entries of `entry_bytes` (a multiple
/// of 8, so no padding: every byte of a record is non-zero) in one or more
/// segments, synced and closed. Returns the frames and each record's
/// (segment path, offset).
fn build_log(
    dir: &Path,
    batches: usize,
    entry_bytes: usize,
) -> (Vec<Vec<u8>>, Vec<(PathBuf, u64)>) {
    let mut log = SegmentLog::open_standalone(dir, SMALL).unwrap();
    let frames = append_batches(&mut log, 1, &vec![3; batches], entry_bytes);
    // A node stores its term before it takes entries (a log without a
    // hard state opens as one that lost it).
    log.store_hard_state(HardState {
        term: Term(2),
        ..HardState::default()
    })
    .unwrap();
    log.sync_all().unwrap();
    let mut places = Vec::new();
    for segment in &log.segments {
        for batch in &segment.batches {
            places.push((segment.path.clone(), u64::from(batch.offset)));
        }
    }
    (frames, places)
}

/// Puts back exactly the files of `intact` (see [`files_of`]).
fn restore(dir: &Path, intact: &[(PathBuf, Vec<u8>)]) {
    for file in fs::read_dir(dir).unwrap() {
        let file = file.unwrap().path();
        if file.file_name().is_some_and(|name| name != "lock") {
            fs::remove_file(file).unwrap();
        }
    }
    for (file, bytes) in intact {
        fs::write(file, bytes).unwrap();
    }
}

/// Sets the durable mark of the log in `dir` to `index`, as the store
/// would have left it had it reported only that much durable (the logs
/// of these tests hold entries of term 1).
fn set_mark(dir: &Path, index: LogIndex) {
    use crate::storage::durable_mark::{self, Found, Slot};
    let (file, found) = durable_mark::open(dir).unwrap();
    let seq = match found {
        Found::Mark(slot) => slot.seq + 1,
        Found::Nothing | Found::Unknown(_) => 1,
    };
    let term = Term(u64::from(index > LogIndex::ZERO));
    durable_mark::store(&file, dir, Slot { seq, index, term }).unwrap();
}

/// Cutting the file anywhere inside the last record (as a crash during
/// its write would) loses exactly that record, silently when the durable
/// mark says it was never reported durable; cutting at its start loses
/// nothing else. The same cut under a mark that covers the record is
/// damage at rest: the node restarts damaged. Checked at every offset.
#[test]
fn truncated_last_record_is_cut_at_every_offset() {
    let dir = TempDir::new("truncate-every");
    let (frames, places) = build_log(&dir.0, 4, 64);
    let (path, offset) = places.last().unwrap().clone();
    let pristine = fs::read(&path).unwrap();
    let intact = files_of(&dir.0);
    let last_len = frames.last().unwrap().len() as u64;
    for cut in offset..offset + last_len {
        for reported in [LogIndex(9), LogIndex(12)] {
            restore(&dir.0, &intact);
            set_mark(&dir.0, reported);
            fs::write(&path, &pristine[..cut as usize]).unwrap();
            let log = SegmentLog::open_standalone(&dir.0, SMALL)
                .unwrap_or_else(|error| panic!("cut at {cut}: {error}"));
            assert_eq!(read_all(&log, 1 << 20), frames[..3], "cut at {cut}");
            assert_eq!(log.durability().index, LogIndex(9));
            assert_eq!(
                log.hard_state().damaged_in > Term::ZERO,
                reported > LogIndex(9),
                "cut at {cut} under a mark of {reported}: damaged exactly when the mark covers the cut"
            );
            drop(log);
        }
    }
}

/// A last record whose bytes stop at any sector boundary, zeros after
/// (a torn write into the preallocated file), is cut off too: silently
/// under a mark below it, as damage under a mark that covers it.
#[test]
fn zero_filled_tail_of_last_record_is_cut() {
    let dir = TempDir::new("zero-tail");
    let (frames, places) = build_log(&dir.0, 40, 512);
    let (path, offset) = places.last().unwrap().clone();
    let intact = files_of(&dir.0);
    let end = offset + frames.last().unwrap().len() as u64;
    let kept_last = LogIndex(3 * (frames.len() as u64 - 1));
    let mut tears = 0;
    for tear in (offset.next_multiple_of(SECTOR_BYTES)..end).step_by(SECTOR_BYTES as usize) {
        for reported in [kept_last, kept_last.next()] {
            restore(&dir.0, &intact);
            set_mark(&dir.0, reported);
            zero_range(&path, tear, end - tear);
            let mut log = SegmentLog::open_standalone(&dir.0, SMALL).unwrap();
            assert_eq!(read_all(&log, 1 << 20), frames[..frames.len() - 1]);
            assert_eq!(
                log.hard_state().damaged_in > Term::ZERO,
                reported > kept_last,
                "tear at {tear} under a mark of {reported}"
            );
            // The cut tail is gone for good: the log continues over it.
            let next = make_batch(2, log.last_index().next().get(), 1, 64);
            log.append(&next).unwrap();
            log.sync_all().unwrap();
        }
        tears += 1;
    }
    assert!(tears > 0, "the last record spans no sector boundary");
}

/// Every shape damage at rest can leave at the end of the log — the
/// shapes a power cut leaves too — is damage when the store had reported
/// the lost records durable: the last record zeroed whole, the last
/// segment truncated into its records or emptied, the last segment file
/// removed. The node restarts damaged and the log is cut where the
/// damage starts; with the planted bug `NoDurableMark` these read as a
/// power cut (see `storage_faults::a_lost_tail_*`).
#[test]
fn a_reported_tail_lost_at_rest_is_damage() {
    type Damage = Box<dyn Fn()>;
    let dir = TempDir::new("lost-tail");
    let (frames, places) = build_log(&dir.0, 60, 1000);
    let intact = files_of(&dir.0);
    let (last_path, last_offset) = places.last().unwrap().clone();
    let first_of_last = places
        .iter()
        .position(|(path, _)| *path == last_path)
        .unwrap();
    assert!(first_of_last > 0, "the log must span segments");
    let end = last_offset + frames.last().unwrap().len() as u64;
    let shapes: Vec<(&str, usize, Damage)> = vec![
        ("last record zeroed", frames.len() - 1, {
            let path = last_path.clone();
            Box::new(move || zero_range(&path, last_offset, end - last_offset))
        }),
        (
            "last segment truncated inside its last record",
            frames.len() - 1,
            {
                let path = last_path.clone();
                Box::new(move || {
                    let file = OpenOptions::new().write(true).open(&path).unwrap();
                    file.set_len(last_offset + 7).unwrap();
                })
            },
        ),
        ("last segment emptied", first_of_last, {
            let path = last_path.clone();
            Box::new(move || {
                let file = OpenOptions::new().write(true).open(&path).unwrap();
                file.set_len(0).unwrap();
            })
        }),
        ("last segment removed", first_of_last, {
            let path = last_path.clone();
            Box::new(move || fs::remove_file(&path).unwrap())
        }),
    ];
    for (shape, kept, damage) in shapes {
        restore(&dir.0, &intact);
        damage();
        let mut log = SegmentLog::open_standalone(&dir.0, SMALL)
            .unwrap_or_else(|error| panic!("{shape}: {error}"));
        assert_eq!(read_all(&log, 1 << 20), frames[..kept], "{shape}");
        assert!(
            log.hard_state().damaged_in > Term::ZERO,
            "{shape}: not marked damaged"
        );
        assert_eq!(log.damage_found(), 1, "{shape}: not counted");
        let next = make_batch(2, log.last_index().next().get(), 1, 64);
        log.append(&next).unwrap();
        assert_eq!(log.sync_all().unwrap().index, log.last_index(), "{shape}");
        drop(log);
        // Repaired (the mark now says the shorter log), it opens clean.
        let log = SegmentLog::open_standalone(&dir.0, SMALL).unwrap();
        assert_eq!(log.damage_found(), 0, "{shape}: reopened");
        drop(log);
    }
}

/// Offsets, within a record of `build_log`, of one byte in each region:
/// segment table (count, size), root pointer, term, first index, count,
/// checksum, kind, entries pointer, first list element, first payload
/// byte, last payload byte.
fn regions(frame_len: u64) -> Vec<(&'static str, u64)> {
    vec![
        ("segment count", 0),
        ("segment size", 4),
        ("root pointer", 8),
        ("term", 16),
        ("first index", 24),
        ("count", 32),
        ("checksum", 36),
        ("kind", 40),
        ("stamp check", 44),
        ("entries pointer", 48),
        ("list element", 56),
        ("payload first byte", 80),
        ("payload last byte", frame_len - 1),
    ]
}

/// Every file of `dir` (segments, hard state), to put back after a test
/// let recovery cut the log.
fn files_of(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<(PathBuf, Vec<u8>)> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.file_name().is_some_and(|name| name != "lock"))
        .map(|path| {
            let bytes = fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect();
    files.sort();
    files
}

/// A flipped bit anywhere in any record no longer stops the node: open
/// cuts the log at that record (every record before it stays, every one
/// after it goes: the leader sends them again) and the node restarts
/// damaged — a length grown in the very last record too, which has the
/// shape of a torn write but is under the durable mark.
#[test]
fn flipped_bits_in_any_record_cut_the_log_and_mark_the_node_damaged() {
    let dir = TempDir::new("flip");
    let (frames, places) = build_log(&dir.0, 60, 1000);
    assert!(
        places.iter().any(|(path, _)| *path != places[0].0),
        "the log must span segments"
    );
    {
        // A node that stored entries has a term (at term 0 it acknowledged
        // nothing, and nothing it loses needs a mark).
        let mut log = SegmentLog::open_standalone(&dir.0, SMALL).unwrap();
        log.store_hard_state(HardState {
            term: Term(3),
            ..HardState::default()
        })
        .unwrap();
        log.sync_all().unwrap();
    }
    let intact = files_of(&dir.0);
    for (record, (path, offset)) in places.iter().enumerate() {
        let frame_len = frames[record].len() as u64;
        for (region, within) in regions(frame_len) {
            for bit in [0u8, 5] {
                flip_bit(path, offset + within, bit);
                let log = SegmentLog::open_standalone(&dir.0, SMALL)
                    .unwrap_or_else(|error| panic!("record {record} {region} bit {bit}: {error}"));
                let kept = read_all(&log, 1 << 20);
                assert_eq!(kept.len(), record, "record {record} {region} bit {bit}");
                assert_eq!(kept, frames[..kept.len()], "record {record} {region}");
                assert_eq!(
                    log.hard_state().damaged_in,
                    Term(3),
                    "record {record} {region} bit {bit}: not marked damaged"
                );
                drop(log);
                for file in fs::read_dir(&dir.0).unwrap() {
                    let file = file.unwrap().path();
                    if file.extension().is_some_and(|ext| ext == "log") {
                        fs::remove_file(file).unwrap();
                    }
                }
                for (file, bytes) in &intact {
                    fs::write(file, bytes).unwrap();
                }
            }
        }
    }
    // Undamaged, it opens whole.
    let log = SegmentLog::open_standalone(&dir.0, SMALL).unwrap();
    assert_eq!(read_all(&log, 1 << 20), frames);
    assert_eq!(log.hard_state().damaged_in, Term::ZERO);
}

/// A flipped bit in the final record (but for its length, which reads as
/// a torn write: see `record`) is cut at open, and the node restarts
/// damaged: the next term, no vote, the damage mark of its old term,
/// durable in the hard-state file. Every record before it stays.
#[test]
fn a_damaged_final_record_restarts_the_node_damaged() {
    let dir = TempDir::new("flip-last");
    let (frames, places) = build_log(&dir.0, 20, 1000);
    {
        let mut log = SegmentLog::open_standalone(&dir.0, SMALL).unwrap();
        log.store_hard_state(HardState {
            term: Term(4),
            vote: crate::types::NodeId(2),
            commit: LogIndex(30),
            ..HardState::default()
        })
        .unwrap();
        assert_eq!(log.sync_all().unwrap().hard_state.term, Term(4));
    }
    let (path, offset) = places.last().unwrap().clone();
    let frame_len = frames.last().unwrap().len() as u64;
    let intact = std::fs::read(&path).unwrap();
    let hard_state_file = std::fs::read(dir.0.join(hard_state::FILE_NAME)).unwrap();
    let mark_file = std::fs::read(dir.0.join(durable_mark::FILE_NAME)).unwrap();
    for (region, within) in regions(frame_len) {
        if region == "segment size" {
            continue;
        }
        flip_bit(&path, offset + within, 5);
        let log = SegmentLog::open_standalone(&dir.0, SMALL)
            .unwrap_or_else(|error| panic!("{region}: {error}"));
        assert_eq!(
            read_all(&log, 1 << 20),
            frames[..frames.len() - 1],
            "{region}: every record before the damaged one stays"
        );
        let expected = HardState {
            term: Term(5),
            vote: crate::types::NodeId::ZERO,
            commit: LogIndex(30),
            damaged_in: Term(4),
            // The mark's entry: the last of the 20 batches of 3.
            acked_end: Some((Term(1), LogIndex(60))),
        };
        assert_eq!(log.hard_state(), expected, "{region}");
        drop(log);
        let stored = std::fs::read(dir.0.join(hard_state::FILE_NAME)).unwrap();
        assert_eq!(
            hard_state::decode(&stored).unwrap(),
            expected,
            "{region}: durable"
        );
        std::fs::write(&path, &intact).unwrap();
        std::fs::write(dir.0.join(hard_state::FILE_NAME), &hard_state_file).unwrap();
        std::fs::write(dir.0.join(durable_mark::FILE_NAME), &mark_file).unwrap();
    }
}

/// A copy of a segment where the next one should be fails open naming the
/// file that does not fit; a missing middle segment is damage.
#[test]
fn duplicated_segment_fails_open_and_a_missing_one_is_damage() {
    let dir = TempDir::new("segments");
    let (_, places) = build_log(&dir.0, 100, 1000);
    let mut paths: Vec<PathBuf> = places.iter().map(|(path, _)| path.clone()).collect();
    paths.dedup();
    assert!(
        paths.len() >= 3,
        "need three segments, have {}",
        paths.len()
    );
    // Duplicate: a copy of segment 1 named as if it came after the last.
    let log = SegmentLog::open_standalone(&dir.0, SMALL).unwrap();
    let after_last = dir.0.join(segment_name(log.last_index().next()));
    drop(log);
    fs::copy(&paths[1], &after_last).unwrap();
    let error = SegmentLog::open_standalone(&dir.0, SMALL).unwrap_err();
    assert!(
        matches!(&error, StorageError::Corrupt { path, offset: 0, .. } if *path == after_last),
        "{error}"
    );
    fs::remove_file(&after_last).unwrap();
    // Duplicate overlapping: a copy of segment 0 named one index later.
    let overlapping = dir.0.join(segment_name(LogIndex(2)));
    fs::copy(&paths[0], &overlapping).unwrap();
    let error = SegmentLog::open_standalone(&dir.0, SMALL).unwrap_err();
    assert!(
        matches!(&error, StorageError::Corrupt { path, .. } if *path == overlapping),
        "{error}"
    );
    fs::remove_file(&overlapping).unwrap();
    // Missing: the middle segment deleted. Entries this node may have
    // acknowledged are gone: damage, not a stray file. The log is cut
    // where the first segment ends, the node marked, the later segments
    // removed; the leader sends the rest again.
    let whole = SegmentLog::open_standalone(&dir.0, SMALL).unwrap();
    let first_end = whole.segments()[0].last;
    drop(whole);
    fs::remove_file(&paths[1]).unwrap();
    let log = SegmentLog::open_standalone(&dir.0, SMALL).unwrap();
    assert_eq!(log.last_index(), first_end);
    assert_ne!(log.hard_state().damaged_in, Term::ZERO, "marked damaged");
    assert_eq!(log.damage_found(), 1);
    assert!(!paths[2].exists(), "the segments after the gap are removed");
    assert_eq!(log.segment_paths(), vec![paths[0].clone()]);
}

/// A misdirected write: a whole record written over another place of the
/// log instead of its own, in the same segment or an earlier one. What it
/// overwrote may have been acknowledged, so it is damage (the node marked,
/// the log cut there), not a stray file that refuses the log.
#[test]
fn a_record_written_over_another_place_is_damage() {
    let dir = TempDir::new("misdirected");
    // Batches of the same size, so that one lands exactly over another.
    let (frames, places) = build_log(&dir.0, 40, 1000);
    let segment_of = |at: usize| places[at].0.clone();
    let first_segment = segment_of(0);
    let in_first = places
        .iter()
        .filter(|(path, _)| *path == first_segment)
        .count();
    assert!(
        in_first >= 4 && places.len() > in_first + 2,
        "{in_first} records in the first segment"
    );
    let files = files_of(&dir.0);
    // (victim record, record written over it): one of the same segment,
    // one of a later segment.
    for (victim, source) in [(2, in_first - 1), (1, in_first + 1)] {
        let (victim_path, victim_at) = places[victim].clone();
        let (source_path, source_at) = &places[source];
        let source_bytes = fs::read(source_path).unwrap();
        let at = *source_at as usize;
        let record = &source_bytes[at..at + frames[source].len()];
        assert_eq!(frames[victim].len(), record.len(), "same size");
        let file = fs::OpenOptions::new()
            .write(true)
            .open(&victim_path)
            .unwrap();
        std::os::unix::fs::FileExt::write_at(&file, record, victim_at).unwrap();
        drop(file);
        let log = SegmentLog::open_standalone(&dir.0, SMALL)
            .unwrap_or_else(|error| panic!("record {source} over {victim}: {error}"));
        assert_eq!(
            read_all(&log, 1 << 20),
            frames[..victim],
            "record {source} over {victim}: the records before it stay"
        );
        assert_ne!(log.hard_state().damaged_in, Term::ZERO, "marked damaged");
        assert_eq!(log.damage_found(), 1);
        drop(log);
        restore(&dir.0, &files);
    }
}

/// A second opener of the same directory is refused while the first holds
/// it.
#[test]
fn second_opener_is_refused() {
    let dir = TempDir::new("lock");
    let log = SegmentLog::open_standalone(&dir.0, SMALL).unwrap();
    assert!(SegmentLog::open_standalone(&dir.0, SMALL).is_err());
    drop(log);
    SegmentLog::open_standalone(&dir.0, SMALL).unwrap();
}

/// A segment recovered at open carries its file's mtime, so retention by
/// age outlives a restart: segments whose files are old are dropped up to
/// the limit, the young and the active one stay.
#[test]
fn recovered_segments_carry_their_mtime_into_retention() {
    use crate::storage::retention::{Retention, retention_point};
    use crate::storage::unix_now_ms;
    use std::time::{Duration, UNIX_EPOCH};

    const DAY_MS: u64 = 86_400_000;
    let dir = TempDir::new("retention-age");
    let mut log = SegmentLog::open_standalone(&dir.0, SMALL).unwrap();
    append_batches(&mut log, 1, &[10; 80], 200);
    log.sync_all().unwrap();
    let paths = log.segment_paths();
    assert!(paths.len() >= 3, "{} segments", paths.len());
    drop(log);
    // Ten days ago, in whole seconds (any file system keeps those).
    let old_ms = (unix_now_ms() - 10 * DAY_MS) / 1_000 * 1_000;
    for path in &paths[..2] {
        let file = OpenOptions::new().write(true).open(path).unwrap();
        file.set_modified(UNIX_EPOCH + Duration::from_millis(old_ms))
            .unwrap();
    }
    let mut log = SegmentLog::open_standalone(&dir.0, SMALL).unwrap();
    let segments = log.segments();
    assert_eq!(segments[0].modified_ms, old_ms);
    assert_eq!(segments[1].modified_ms, old_ms);
    assert!(segments[2].modified_ms > old_ms + 9 * DAY_MS);
    let retention = Retention {
        bytes_max: None,
        age_max_ms: Some(DAY_MS),
    };
    let now = unix_now_ms();
    // A limit inside the second segment keeps it.
    assert_eq!(
        retention_point(&segments, segments[1].last.prev(), &retention, now),
        Some(segments[0].last)
    );
    let point = retention_point(&segments, log.durability().index, &retention, now);
    assert_eq!(point, Some(segments[1].last));
    log.drop_prefix(point.unwrap()).unwrap();
    log.sync_all().unwrap();
    assert_eq!(log.first_index(), segments[2].first);
    assert_eq!(log.segments(), segments[2..]);
    assert!(!paths[0].exists() && !paths[1].exists());
}

/// Files too large to be what the store writes are refused or read as
/// lost, never read whole: a sparse segment file of 1 TiB refuses the
/// log naming it, and a hard-state file of 1 TiB is a lost hard state.
#[test]
fn oversized_files_do_not_size_an_allocation() {
    let dir = TempDir::new("oversized");
    let (frames, places) = build_log(&dir.0, 10, 100);
    assert!(!frames.is_empty());
    let segment = places[0].0.clone();
    fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(1 << 40)
        .unwrap();
    let error = SegmentLog::open_standalone(&dir.0, SMALL).unwrap_err();
    assert!(
        matches!(&error, StorageError::Corrupt { path, .. } if *path == segment),
        "{error}"
    );

    let dir = TempDir::new("oversized-hard-state");
    build_log(&dir.0, 10, 100);
    let file = dir.0.join(hard_state::FILE_NAME);
    fs::write(&file, [0u8; 8]).unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(1 << 40)
        .unwrap();
    let log = SegmentLog::open_standalone(&dir.0, SMALL).unwrap();
    assert!(log.hard_state().is_lost(), "{:?}", log.hard_state());
}
