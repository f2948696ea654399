//! The scrubber: sealed segments and snapshots re-verified in the
//! background, so damage at rest (a flipped bit, a latent sector error) is
//! found and repaired from the peers while the cluster still has healthy
//! copies, not when the entry is read years later.
//!
//! ```text
//!  scrubber thread (one per node, off the cores' loops, --scrub-bytes-per-sec)
//!   for each log directory <data>/<id>/:
//!     every sealed segment (not the last: it is being written) ─┐ verify each record
//!     the newest snapshot file                                  ─┤ (checksum, index chain,
//!                                                                 │  zeros after the end)
//!   damage found, still there after a fresh look ─► report (log id, where, what)
//!                                                   │ bounded channel of the owning core
//!  core (its tick): stop the group ◄───────────────┘
//!  core (reopen_groups): reopen it as a restart would ─► recovery cuts the log at
//!    the damage and marks the node damaged ─► the leader sends the cut entries again
//! ```
//!
//! Files are read with `O_DIRECT` where the file system allows it, so what
//! is verified is what is on the disk, not the page cache's copy of it;
//! reads are paced to the configured rate. A file written in the last
//! [`SCRUB_SETTLE_MS`] is skipped (a truncation may be under way), and a
//! finding is reported only if the file is unchanged since the read began,
//! so a race with the core's own writes reports nothing. A report the
//! core's recovery does not confirm costs a reopen, never an entry: the
//! scrubber only points, recovery decides (`storage::segment`).
//!
//! Counted at `/metrics`: `rast_scrub_bytes_total` here, and
//! `rast_corruptions_found_total` where recovery acts on damage.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::Sender;

use crate::constants::{FRAME_BYTES_MAX, SCRUB_PASS_PAUSE_MS, SCRUB_SETTLE_MS, WORD_BYTES};
use crate::server::metrics::{Counters, Metrics};
use crate::storage::reading::{self, READ_BLOCK_BYTES, READ_CHUNK_BYTES};
use crate::storage::record::{self, Fault};
use crate::storage::segment::segment_files;
use crate::storage::snapshot_file::{self, SnapshotFileError};
use crate::types::{LogId, LogIndex, Term};

/// Damage the scrubber found in a log's files: the log, and where and what.
pub type DamageReport = (LogId, String);

/// The sending side of the cores' damage channels: a report goes to the
/// core that owns the log.
#[derive(Clone, Debug)]
pub struct DamageReports {
    senders: Vec<Sender<DamageReport>>,
}

impl DamageReports {
    /// Reports over `senders`, one per core, in core order.
    pub fn new(senders: Vec<Sender<DamageReport>>) -> Self {
        Self { senders }
    }

    /// Tells the core that owns `log` (a full channel drops the report: the
    /// next pass finds the damage again).
    pub fn report(&self, log: LogId, what: String) {
        if self.senders.is_empty() {
            return;
        }
        let core = (log.get() % self.senders.len() as u64) as usize;
        let _ = self.senders[core].try_send((log, what));
    }
}

/// Starts the scrubber thread over `data` at `bytes_per_sec` (0: none is
/// started). It ends when the server stops.
pub fn spawn(
    data: PathBuf,
    bytes_per_sec: u64,
    reports: DamageReports,
    metrics: Arc<Metrics>,
) -> std::io::Result<()> {
    if bytes_per_sec == 0 {
        tracing::info!("scrubbing off (--scrub-bytes-per-sec 0)");
        return Ok(());
    }
    std::thread::Builder::new()
        .name("rast-scrub".into())
        .spawn(move || {
            let mut scrubber = Scrubber {
                data,
                pacer: Pacer::new(bytes_per_sec),
                reports,
                metrics,
            };
            while !crate::server::stopping() {
                scrubber.pass();
                Pacer::pause(Duration::from_millis(SCRUB_PASS_PAUSE_MS));
            }
        })
        .map(drop)
}

/// What a verification concluded.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every record checked out, zeros after them.
    Sound,
    /// The bytes at `offset` are damaged or do not read.
    Damaged {
        /// Byte offset of the damage in the file.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// Not verified (the file went away, an IO error that names no bytes,
    /// or the server is stopping).
    Skipped(String),
}

struct Scrubber {
    data: PathBuf,
    pacer: Pacer,
    reports: DamageReports,
    metrics: Arc<Metrics>,
}

impl Scrubber {
    /// One pass over every log directory.
    fn pass(&mut self) {
        self.pacer.restart();
        for (log, dir) in log_dirs(&self.data) {
            if crate::server::stopping() {
                return;
            }
            if let Some(what) = self.scrub_log(&dir) {
                tracing::error!(dir = %dir.display(), %what,
                    "scrubbing found damage: the log is reopened to repair it from its peers");
                self.reports.report(log, what);
            }
        }
    }

    /// Verifies a log's sealed segments and newest snapshot; the first
    /// damage found, described.
    fn scrub_log(&mut self, dir: &Path) -> Option<String> {
        let mut segments = segment_files(dir);
        // The last segment is being written.
        segments.pop();
        // The newest snapshot: the one a restart would use.
        let snapshot = snapshot_file::files(&dir.join("snapshots"))
            .pop()
            .map(|(_, path)| path);
        for (first, path) in segments {
            if let Some(what) = self.scrub_file(&path, |scrubber, file| {
                verify_segment(file, first, &mut scrubber.pacer, &scrubber.metrics.counters)
            }) {
                return Some(what);
            }
        }
        let path = snapshot?;
        self.scrub_file(&path, |scrubber, file| {
            verify_snapshot(file, &path, &mut scrubber.pacer, &scrubber.metrics.counters)
        })
    }

    /// Verifies one settled file with `verify`; a finding is returned only
    /// if the file is unchanged since the read began.
    fn scrub_file(
        &mut self,
        path: &Path,
        verify: impl FnOnce(&mut Self, &File) -> Verdict,
    ) -> Option<String> {
        let before = std::fs::metadata(path).ok()?;
        if !settled(&before) {
            return None;
        }
        let file = open_direct(path).ok()?;
        match verify(self, &file) {
            Verdict::Sound => None,
            Verdict::Skipped(reason) => {
                tracing::debug!(path = %path.display(), %reason, "not scrubbed");
                None
            }
            Verdict::Damaged { offset, reason } => {
                let after = std::fs::metadata(path).ok()?;
                let unchanged = after.ino() == before.ino()
                    && after.mtime() == before.mtime()
                    && after.mtime_nsec() == before.mtime_nsec()
                    && after.len() == before.len();
                unchanged.then(|| format!("{} at byte offset {offset}: {reason}", path.display()))
            }
        }
    }
}

/// Log directories: `<data>/<16 hex digits of the log id>`, by id.
pub fn log_dirs(data: &Path) -> Vec<(LogId, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(data) else {
        return Vec::new();
    };
    let mut dirs: Vec<(LogId, PathBuf)> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name();
            let name = name.to_str()?;
            if name.len() != 16 {
                return None;
            }
            let id = u64::from_str_radix(name, 16).ok()?;
            Some((LogId(id), entry.path()))
        })
        .collect();
    dirs.sort();
    dirs
}

/// Not written in the last [`SCRUB_SETTLE_MS`].
fn settled(metadata: &std::fs::Metadata) -> bool {
    metadata.modified().is_ok_and(|modified| {
        SystemTime::now()
            .duration_since(modified)
            .is_ok_and(|age| age >= Duration::from_millis(SCRUB_SETTLE_MS))
    })
}

/// Opens `path` for reading past the page cache, or through it where the
/// file system does not take `O_DIRECT`.
fn open_direct(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_DIRECT)
        .open(path)
        .or_else(|_| File::open(path))
}

/// Reads a file chunk by chunk into a block-aligned buffer (as `O_DIRECT`
/// needs), paced.
struct ChunkReader<'a> {
    file: &'a File,
    next: u64,
    eof: bool,
    /// Over-allocated by a block, so an aligned chunk fits inside.
    storage: Vec<u8>,
}

/// What the next chunk was.
enum Next<'a> {
    Bytes(&'a [u8]),
    End,
    Unreadable(u64),
}

impl<'a> ChunkReader<'a> {
    fn new(file: &'a File) -> Self {
        Self {
            file,
            next: 0,
            eof: false,
            storage: vec![0u8; READ_CHUNK_BYTES + READ_BLOCK_BYTES],
        }
    }

    fn chunk(&mut self, pacer: &mut Pacer, counters: &Counters) -> std::io::Result<Next<'_>> {
        if self.eof {
            return Ok(Next::End);
        }
        let start = self.storage.as_ptr().align_offset(READ_BLOCK_BYTES);
        let buffer = &mut self.storage[start..start + READ_CHUNK_BYTES];
        let chunk = reading::read_at(self.file, self.next, buffer)?;
        pacer.paid(chunk.read as u64);
        Counters::add(&counters.scrub_bytes, chunk.read as u64);
        self.next += chunk.read as u64;
        if let Some(at) = chunk.unreadable_at {
            return Ok(Next::Unreadable(at));
        }
        if chunk.read < READ_CHUNK_BYTES {
            self.eof = true;
        }
        if chunk.read == 0 {
            return Ok(Next::End);
        }
        Ok(Next::Bytes(&self.storage[start..start + chunk.read]))
    }
}

/// Verifies a sealed segment: records from index `first` on, each sound
/// and continuing the one before, then zeros to the end of the file.
/// Anything else is damage (a sealed segment was synced whole before the
/// next one was written, so it has no torn tail).
pub fn verify_segment(
    file: &File,
    first: LogIndex,
    pacer: &mut Pacer,
    counters: &Counters,
) -> Verdict {
    let mut reader = ChunkReader::new(file);
    let mut window: Vec<u8> = Vec::new();
    let mut window_at = 0u64;
    let mut position = 0usize;
    let mut expected = first;
    let mut floor = Term::ZERO;
    let mut zeros_from: Option<u64> = None;
    loop {
        if crate::server::stopping() {
            return Verdict::Skipped("stopping".into());
        }
        let rest = &window[position..];
        let offset = window_at + position as u64;
        if zeros_from.is_none() && rest.len() >= WORD_BYTES && record::is_zero(&rest[..WORD_BYTES])
        {
            zeros_from = Some(offset);
        }
        if let Some(end) = zeros_from {
            if let Some(at) = rest.iter().position(|byte| *byte != 0) {
                return Verdict::Damaged {
                    offset: offset + at as u64,
                    reason: format!("non-zero bytes after the records end at byte offset {end}"),
                };
            }
            position = window.len();
        } else {
            match record::check(rest, offset, expected, floor) {
                Ok(meta) => {
                    expected = meta.last.next();
                    floor = meta.term;
                    position += meta.bytes as usize;
                    continue;
                }
                Err(Fault::Invalid(reason)) => return Verdict::Damaged { offset, reason },
                Err(Fault::Incomplete) if rest.len() > FRAME_BYTES_MAX + READ_CHUNK_BYTES => {
                    return Verdict::Damaged {
                        offset,
                        reason: "a record longer than any frame".into(),
                    };
                }
                Err(Fault::Incomplete) => {}
            }
        }
        // More bytes: keep what is not verified yet, read the next chunk.
        window.drain(..position);
        window_at += position as u64;
        position = 0;
        match reader.chunk(pacer, counters) {
            Ok(Next::Bytes(bytes)) => window.extend_from_slice(bytes),
            Ok(Next::End) if record::is_zero(&window) => return Verdict::Sound,
            Ok(Next::End) => {
                return Verdict::Damaged {
                    offset: window_at,
                    reason: "the file ends inside a record".into(),
                };
            }
            Ok(Next::Unreadable(at)) => {
                return Verdict::Damaged {
                    offset: at,
                    reason: "the block does not read (EIO)".into(),
                };
            }
            Err(error) => return Verdict::Skipped(error.to_string()),
        }
    }
}

/// Verifies a snapshot file (header and body checksums), its bytes paced.
fn verify_snapshot(file: &File, path: &Path, pacer: &mut Pacer, counters: &Counters) -> Verdict {
    // Read once, paced and past the cache; then verified by the snapshot
    // reader (from the cache it just filled).
    let mut reader = ChunkReader::new(file);
    loop {
        if crate::server::stopping() {
            return Verdict::Skipped("stopping".into());
        }
        match reader.chunk(pacer, counters) {
            Ok(Next::Bytes(_)) => {}
            Ok(Next::End) => break,
            Ok(Next::Unreadable(at)) => {
                return Verdict::Damaged {
                    offset: at,
                    reason: "the block does not read (EIO)".into(),
                };
            }
            Err(error) => return Verdict::Skipped(error.to_string()),
        }
    }
    match snapshot_file::verify(path) {
        Ok(_) => Verdict::Sound,
        Err(SnapshotFileError::Damaged { reason, .. }) => Verdict::Damaged { offset: 0, reason },
        Err(error) => Verdict::Skipped(error.to_string()),
    }
}

/// Paces reads to a rate: after each chunk it sleeps until the bytes read
/// since the pass began are within the budget.
#[derive(Debug)]
pub struct Pacer {
    bytes_per_sec: u64,
    started: Instant,
    bytes: u64,
}

impl Pacer {
    /// A pacer at `bytes_per_sec` (at least 1).
    pub fn new(bytes_per_sec: u64) -> Self {
        Self {
            bytes_per_sec: bytes_per_sec.max(1),
            started: Instant::now(),
            bytes: 0,
        }
    }

    /// Starts a pass: time spent idle before it is not credit.
    fn restart(&mut self) {
        self.started = Instant::now();
        self.bytes = 0;
    }

    /// Counts `bytes` read and sleeps until they are within the rate.
    fn paid(&mut self, bytes: u64) {
        self.bytes += bytes;
        let due = Duration::from_secs_f64(self.bytes as f64 / self.bytes_per_sec as f64);
        if let Some(wait) = due.checked_sub(self.started.elapsed()) {
            Self::pause(wait);
        }
    }

    /// Sleeps `duration` in short slices, returning early when the server
    /// stops.
    fn pause(duration: Duration) {
        let until = Instant::now() + duration;
        while !crate::server::stopping() {
            let now = Instant::now();
            if now >= until {
                return;
            }
            std::thread::sleep((until - now).min(Duration::from_millis(100)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::LogStorage;
    use crate::storage::conformance::make_batch;
    use crate::storage::segment::tests::TempDir;
    use crate::storage::segment::{SegmentLog, SegmentOptions};

    /// A log of small segments; the path of its first (sealed) segment
    /// and that file's bytes.
    fn sealed_segment(dir: &TempDir) -> (PathBuf, Vec<u8>) {
        let options = SegmentOptions {
            segment_bytes: crate::constants::SEGMENT_BYTES_MIN,
            zero_fill: false,
        };
        let mut log = SegmentLog::open_standalone(&dir.0, options).unwrap();
        while log.segments().len() < 3 {
            let first = log.last_index().next().get();
            log.append(&make_batch(1 + first / 50, first, 3, 200))
                .unwrap();
            log.sync_all().unwrap();
        }
        let path = log.segment_paths()[0].clone();
        drop(log);
        let bytes = std::fs::read(&path).unwrap();
        (path, bytes)
    }

    fn verify(path: &Path) -> Verdict {
        let file = File::open(path).unwrap();
        verify_segment(
            &file,
            LogIndex(1),
            &mut Pacer::new(u64::MAX),
            &Counters::default(),
        )
    }

    /// A sealed segment as written verifies; a flip anywhere in its
    /// records, or a stray byte in the zeros after them, is damage, at the
    /// record it hit.
    #[test]
    fn every_flip_in_a_sealed_segment_is_found() {
        let dir = TempDir::new("scrub-verify");
        let (path, bytes) = sealed_segment(&dir);
        assert_eq!(verify(&path), Verdict::Sound);
        let end = bytes.iter().rposition(|byte| *byte != 0).unwrap() + 1;
        let mut records = Vec::new();
        record::scan(&bytes, LogIndex(1), Term::ZERO, |meta| records.push(meta)).unwrap();
        for at in (0..end).step_by(37).chain([end + 100, bytes.len() - 1]) {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x10;
            std::fs::write(&path, &damaged).unwrap();
            match verify(&path) {
                Verdict::Damaged { offset, .. } if at >= end => {
                    assert_eq!(offset, at as u64, "a stray byte after the records");
                }
                Verdict::Damaged { offset, .. } => {
                    let hit = records
                        .iter()
                        .find(|meta| {
                            (meta.offset..meta.offset + u64::from(meta.bytes))
                                .contains(&(at as u64))
                        })
                        .unwrap();
                    assert!(
                        offset <= hit.offset,
                        "flip at {at} found at {offset}, its record at {}",
                        hit.offset
                    );
                }
                other => panic!("a flip at byte {at} not found: {other:?}"),
            }
        }
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(verify(&path), Verdict::Sound);
    }

    /// The scrubber reads at the rate it is given, and counts what it read.
    #[test]
    fn reads_are_paced_and_counted() {
        let dir = TempDir::new("scrub-pace");
        let (path, bytes) = sealed_segment(&dir);
        let counters = Counters::default();
        let file = File::open(&path).unwrap();
        let rate = bytes.len() as u64 * 4; // the file in a quarter second
        let started = Instant::now();
        let verdict = verify_segment(&file, LogIndex(1), &mut Pacer::new(rate), &counters);
        assert_eq!(verdict, Verdict::Sound);
        assert!(
            started.elapsed() >= Duration::from_millis(240),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(
            counters
                .scrub_bytes
                .load(std::sync::atomic::Ordering::Relaxed),
            bytes.len() as u64
        );
    }
}
