//! Real faults against the segment store: a process killed at random
//! moments while it appends, and a disk that fills up.
//!
//! The crash test re-runs this test binary as the child (the `crash_child`
//! test, which does nothing unless `RAST_CRASH_CHILD_DIR` is set). Rounds:
//! `RAST_CRASH_ROUNDS` (default 50).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rast::storage::conformance::make_batch;
use rast::storage::segment::{SegmentLog, SegmentOptions};
use rast::storage::{LogStorage, StorageError};
use rast::types::LogIndex;
use rast::wire::BatchView;

const CHILD_DIR_VARIABLE: &str = "RAST_CRASH_CHILD_DIR";
const OPTIONS: SegmentOptions = SegmentOptions {
    segment_bytes: 1024 * 1024,
    zero_fill: false,
};
/// Segments the child keeps (it drops older ones as a snapshot would).
const SEGMENTS_KEPT: u64 = 4;

fn temp_dir(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("rast-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&path);
    std::fs::create_dir_all(&path).unwrap();
    path
}

/// The batch starting at `first`: its shape derives from the index alone,
/// so the parent can regenerate and compare every byte.
fn batch_at(first: u64) -> Vec<u8> {
    let count = 1 + (first % 7) as u32;
    let entry_bytes = 16 + (first.wrapping_mul(13) % 300) as usize;
    make_batch(1, first, count, entry_bytes)
}

/// The child: appends forever, a few batches per turn, and prints every
/// durable index it is told about (one line each, flushed) until killed.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR_VARIABLE) else {
        return;
    };
    let mut log = SegmentLog::open_standalone(Path::new(&dir), OPTIONS).unwrap();
    let mut stdout = std::io::stdout().lock();
    let mut reported = LogIndex::ZERO;
    let mut turn = 0u64;
    loop {
        turn += 1;
        for _ in 0..=(turn % 5) {
            let frame = batch_at(log.last_index().next().get());
            match log.append(&frame) {
                Ok(_) | Err(StorageError::Backpressure { .. }) => {}
                Err(error) => panic!("append: {error}"),
            }
        }
        log.flush().unwrap();
        if log.ring().borrow().in_flight() > 0 {
            log.ring().borrow_mut().submit_and_wait(1).unwrap();
        }
        let durable = log.poll().unwrap().index;
        if durable > reported {
            reported = durable;
            writeln!(stdout, "durable {}", durable.get()).unwrap();
            stdout.flush().unwrap();
        }
        if turn.is_multiple_of(64) {
            let keep_from = log.last_index().get().saturating_sub(SEGMENTS_KEPT * 2_000);
            log.drop_prefix(LogIndex(keep_from)).unwrap();
        }
    }
}

/// xorshift64*: the parent's kill timing, reproducible from the round.
fn random(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// Runs one child for a random moment, SIGKILLs it, and returns the
/// highest index it reported durable.
fn run_child(dir: &Path, delay: Duration) -> u64 {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR_VARIABLE, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut highest = 0u64;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(index) = line.strip_prefix("durable ") {
                highest = highest.max(index.parse().unwrap());
            }
        }
        highest
    });
    std::thread::sleep(delay);
    child.kill().unwrap();
    child.wait().unwrap();
    reader.join().unwrap()
}

/// Reopens the log and checks every batch it holds is intact and exactly
/// the one the child appended, and that it reaches `durable`.
fn verify(dir: &Path, durable: u64) -> u64 {
    let log = SegmentLog::open_standalone(dir, OPTIONS)
        .unwrap_or_else(|error| panic!("reopen after kill: {error}"));
    assert!(
        log.last_index().get() >= durable,
        "reported durable up to {durable} but the log ends at {}",
        log.last_index()
    );
    let mut next = log.first_index();
    while next <= log.last_index() {
        let range = log.read(next, 1 << 20).unwrap();
        let mut rest = range.bytes;
        while !rest.is_empty() {
            let view = BatchView::parse(rest).unwrap();
            assert_eq!(
                view.bytes(),
                &batch_at(view.first_index().get())[..],
                "batch at {}",
                view.first_index()
            );
            rest = &rest[view.len()..];
        }
        next = range.last.next();
    }
    log.last_index().get()
}

/// A child appending and reporting durable indexes is SIGKILLed at random
/// moments; after each kill the reopened log holds every reported-durable
/// batch intact (and only batches the child wrote).
#[test]
fn killed_appender_loses_nothing_reported_durable() {
    let rounds: u64 = std::env::var("RAST_CRASH_ROUNDS")
        .ok()
        .and_then(|rounds| rounds.parse().ok())
        .unwrap_or(50);
    let dir = temp_dir("crash");
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut durable_max = 0;
    let started = Instant::now();
    let mut last_seen = 0;
    for round in 0..rounds {
        let delay = Duration::from_micros(2_000 + random(&mut state) % 40_000);
        durable_max = durable_max.max(run_child(&dir, delay));
        last_seen = verify(&dir, durable_max);
        assert!(
            started.elapsed() < Duration::from_secs(60 + rounds),
            "round {round}: too slow"
        );
    }
    assert!(
        durable_max > 0,
        "no child ever reported durability: the test tested nothing"
    );
    eprintln!(
        "crash test: {rounds} rounds in {:.1?}, durable up to {durable_max}, log ends at {last_seen}",
        started.elapsed()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Unmounts a test mount when dropped.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// On a full disk (a small tmpfs) appends that need a new segment fail
/// with `NoSpace`; earlier batches stay durable and readable, and appends
/// resume once space is freed.
#[test]
fn full_disk_refuses_appends_and_recovers() {
    let path = temp_dir("enospc");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=6m", "tmpfs"])
        .arg(&path)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !mounted {
        assert!(
            !effective_user_is_root(),
            "mounting a tmpfs failed although running as root"
        );
        eprintln!("SKIPPED full_disk_refuses_appends_and_recovers: mounting a tmpfs needs root");
        return;
    }
    let mount = Mount(path);
    let filler = mount.0.join("filler");
    std::fs::write(&filler, vec![1u8; 2 * 1024 * 1024]).unwrap();
    let dir = mount.0.join("log");
    let mut log = SegmentLog::open_standalone(&dir, OPTIONS).unwrap();
    let mut appended = Vec::new();
    let refused = loop {
        let frame = batch_at(log.last_index().next().get());
        match log.append(&frame) {
            Ok(_) => appended.push(frame),
            Err(error) => break error,
        }
        log.sync_all().unwrap();
        assert!(appended.len() < 100_000, "the disk never filled");
    };
    assert!(matches!(refused, StorageError::NoSpace), "{refused}");
    assert!(appended.len() > 100);
    // Nothing earlier is harmed: durable, readable, and still refusing.
    let last = log.last_index();
    assert_eq!(log.sync_all().unwrap().index, last);
    assert_eq!(read_all_frames(&log), appended);
    let frame = batch_at(last.next().get());
    assert!(matches!(log.append(&frame), Err(StorageError::NoSpace)));
    // Space returns: appends resume.
    std::fs::remove_file(&filler).unwrap();
    log.append(&frame).unwrap();
    appended.push(frame);
    log.sync_all().unwrap();
    drop(log);
    let log = SegmentLog::open_standalone(&dir, OPTIONS).unwrap();
    assert_eq!(read_all_frames(&log), appended);
    drop(log);
    drop(mount);
}

fn effective_user_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1).map(|id| id == "0"))
            .unwrap_or(false)
    })
}

fn read_all_frames(log: &SegmentLog) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    let mut next = log.first_index();
    while next <= log.last_index() {
        let range = log.read(next, 1 << 20).unwrap();
        let mut rest = range.bytes;
        while !rest.is_empty() {
            let view = BatchView::parse(rest).unwrap();
            frames.push(view.bytes().to_vec());
            rest = &rest[view.len()..];
        }
        next = range.last.next();
    }
    frames
}
