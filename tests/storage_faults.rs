//! Real faults against the segment store: a process killed at random
//! moments while it appends, the power cut under it (the lazy filesystem,
//! `rast-lazyfs`), and a disk that fills up.
//!
//! The crash tests re-run this test binary as the child (the `crash_child`
//! test, which does nothing unless `RAST_CRASH_CHILD_DIR` is set). The
//! child appends to a log in `<dir>/log`, stores a new hard state every
//! turn, writes a snapshot file into `<dir>/snapshots` now and then, and
//! prints each durable index, hard-state term and snapshot index it is
//! told about. The parent kills it (and cuts the power), reopens, and
//! checks every reported-durable thing is there, intact.
//!
//! Rounds: `RAST_CRASH_ROUNDS` (default 50) and `RAST_POWER_ROUNDS`
//! (default 50).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rast::nemesis::lazyfs::{LazyMount, Tear};
use rast::random::Random;
use rast::storage::conformance::make_batch;
use rast::storage::segment::{SegmentLog, SegmentOptions};
use rast::storage::{HardState, LogStorage, StorageError, snapshot_file};
use rast::types::{LogIndex, NodeId, Term};
use rast::wire::BatchView;
use rast::wire::client::Members;

const CHILD_DIR_VARIABLE: &str = "RAST_CRASH_CHILD_DIR";
const OPTIONS: SegmentOptions = SegmentOptions {
    segment_bytes: 1024 * 1024,
    zero_fill: false,
};
/// Segments the child keeps (it drops older ones as a snapshot would).
const SEGMENTS_KEPT: u64 = 4;
/// The child writes a snapshot file every this many turns.
const SNAPSHOT_TURNS: u64 = 40;
/// The child stores a new hard state every this many turns: rarely, as a
/// node does (each store syncs the log's directory, which would otherwise
/// make a new segment's name durable every turn and hide a missing sync).
const HARD_STATE_TURNS: u64 = 61;

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

/// The body of the snapshot at `index`: derived from the index alone.
fn snapshot_body(index: u64) -> Vec<u8> {
    (0..1_000 + index % 5_000)
        .map(|byte| (byte ^ index) as u8)
        .collect()
}

/// The child: appends forever, a few batches per turn, a new hard state
/// every turn and a snapshot file every [`SNAPSHOT_TURNS`], and prints what
/// became durable (`durable <index>`, `hard <term>`, `snapshot <index>`;
/// one line each, flushed) until killed.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR_VARIABLE) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let mut log = SegmentLog::open_standalone(&dir.join("log"), OPTIONS).unwrap();
    let mut stdout = std::io::stdout().lock();
    let mut reported = LogIndex::ZERO;
    let mut term_reported = log.hard_state().term;
    let mut term = term_reported;
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
        if turn.is_multiple_of(HARD_STATE_TURNS) {
            term = Term(term.get() + 1);
            log.store_hard_state(HardState {
                term,
                vote: NodeId(term.get() % 3 + 1),
                commit: reported,
                damaged_in: Term::ZERO,
                acked_end: None,
            })
            .unwrap();
        }
        log.flush().unwrap();
        if log.ring().borrow().in_flight() > 0 {
            log.ring().borrow_mut().submit_and_wait(1).unwrap();
        }
        let durability = log.poll().unwrap();
        if durability.index > reported {
            reported = durability.index;
            writeln!(stdout, "durable {}", reported.get()).unwrap();
        }
        if durability.hard_state.term > term_reported {
            term_reported = durability.hard_state.term;
            writeln!(stdout, "hard {}", term_reported.get()).unwrap();
        }
        stdout.flush().unwrap();
        if turn.is_multiple_of(SNAPSHOT_TURNS) && reported > LogIndex::ZERO {
            let body = snapshot_body(reported.get());
            let members = Members {
                voters: vec![1],
                ..Members::default()
            };
            snapshot_file::write(&dir.join("snapshots"), reported, Term(1), members, |out| {
                out.write_all(&body).map(|()| body.len() as u64)
            })
            .unwrap();
            writeln!(stdout, "snapshot {}", reported.get()).unwrap();
            stdout.flush().unwrap();
        }
        if turn.is_multiple_of(64) {
            let keep_from = log.last_index().get().saturating_sub(SEGMENTS_KEPT * 2_000);
            log.drop_prefix(LogIndex(keep_from)).unwrap();
        }
    }
}

/// The highest of each thing a child reported durable.
#[derive(Clone, Copy, Debug, Default)]
struct Reported {
    index: u64,
    term: u64,
    snapshot: u64,
}

impl Reported {
    fn max(self, other: Reported) -> Reported {
        Reported {
            index: self.index.max(other.index),
            term: self.term.max(other.term),
            snapshot: self.snapshot.max(other.snapshot),
        }
    }
}

/// A power cut: the child's filesystem, how the last write tears, and
/// where the filesystem's report goes.
type Cut<'a> = (&'a mut LazyMount, Option<Tear>, &'a mut String);

/// Runs one child on `dir` for a random moment, SIGKILLs it, and returns
/// what it reported durable. `planted` names a storage bug to plant in it.
/// With `cut`, the power goes off first (the child, still running, can
/// make nothing more durable), then the child is killed, then the power
/// comes back.
fn run_child(dir: &Path, delay: Duration, planted: Option<&str>, cut: Option<Cut<'_>>) -> Reported {
    let mut command = Command::new(std::env::current_exe().unwrap());
    if let Some(bug) = planted {
        command.env(rast::storage::planted::VARIABLE, bug);
    }
    let mut child = command
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR_VARIABLE, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut reported = Reported::default();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let Some((what, value)) = line.split_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<u64>() else {
                continue;
            };
            match what {
                "durable" => reported.index = reported.index.max(value),
                "hard" => reported.term = reported.term.max(value),
                "snapshot" => reported.snapshot = reported.snapshot.max(value),
                _ => {}
            }
        }
        reported
    });
    std::thread::sleep(delay);
    if let Some((lazy, tear, report)) = cut {
        *report = lazy.power_off(tear).expect("power off");
        child.kill().unwrap();
        child.wait().unwrap();
        lazy.power_on().expect("power on");
    } else {
        child.kill().unwrap();
        child.wait().unwrap();
    }
    reader.join().unwrap()
}

/// Reopens the log, the hard state and the snapshots in `dir` and checks
/// every batch is intact and exactly the one the child appended, the log
/// reaches the reported index, the hard state the reported term, and the
/// newest snapshot the reported snapshot. Returns the log's last index.
fn verify(dir: &Path, reported: Reported) -> Result<u64, String> {
    let log = SegmentLog::open_standalone(&dir.join("log"), OPTIONS)
        .map_err(|error| format!("reopen: {error}"))?;
    // A crash loses only what was never reported durable: it never reads
    // as damage (the durable mark says what was).
    if log.damage_found() > 0 || log.hard_state().damaged_in > Term::ZERO {
        return Err(format!(
            "a crash read as damage (found {}, damaged in term {})",
            log.damage_found(),
            log.hard_state().damaged_in
        ));
    }
    if log.last_index().get() < reported.index {
        return Err(format!(
            "reported durable up to {} but the log ends at {}",
            reported.index,
            log.last_index()
        ));
    }
    if log.hard_state().term.get() < reported.term {
        return Err(format!(
            "hard state of term {} reported durable, {} found",
            reported.term,
            log.hard_state().term
        ));
    }
    let mut next = log.first_index();
    while next <= log.last_index() {
        let range = log
            .read(next, 1 << 20)
            .map_err(|error| format!("read {next}: {error}"))?;
        let mut rest = range.bytes;
        while !rest.is_empty() {
            let view =
                BatchView::parse(rest).map_err(|error| format!("batch at {next}: {error}"))?;
            if view.bytes() != &batch_at(view.first_index().get())[..] {
                return Err(format!(
                    "batch at {} is not the one appended",
                    view.first_index()
                ));
            }
            rest = &rest[view.len()..];
        }
        next = range.last.next();
    }
    let snapshot = snapshot_file::latest(&dir.join("snapshots"))
        .map_err(|error| format!("snapshots: {error}"))?;
    let snapshot_index = snapshot.as_ref().map_or(0, |(meta, _)| meta.index.get());
    if snapshot_index < reported.snapshot {
        return Err(format!(
            "snapshot {} reported durable, newest found {snapshot_index}",
            reported.snapshot
        ));
    }
    if let Some((meta, path)) = snapshot {
        let mut body = Vec::new();
        let mut reader = snapshot_file::body_reader(&path, &meta)
            .map_err(|error| format!("snapshot body: {error}"))?;
        std::io::Read::read_to_end(&mut reader, &mut body)
            .map_err(|error| format!("snapshot body: {error}"))?;
        if body != snapshot_body(meta.index.get()) {
            return Err(format!("snapshot {} has another body", meta.index));
        }
    }
    Ok(log.last_index().get())
}

/// How the rounds of a crash test end each child.
#[derive(Debug)]
enum Crash<'a> {
    /// SIGKILL only: the page cache keeps every write.
    Kill,
    /// SIGKILL, then the power: only what was synced survives.
    Power(&'a mut LazyMount),
}

/// Runs `rounds` children on `dir`, each ended by `crash` after a random
/// moment drawn from `seed`, and verifies after each. The first failure
/// is returned, naming its round.
fn crash_rounds(
    dir: &Path,
    rounds: u64,
    seed: u64,
    mut crash: Crash<'_>,
    planted: Option<&str>,
) -> Result<Reported, String> {
    let mut random = Random::new(seed);
    let mut reported = Reported::default();
    let started = Instant::now();
    let mut last_seen = 0;
    for round in 0..rounds {
        let delay = Duration::from_micros(2_000 + random.next_u64() % 60_000);
        let mut report = String::new();
        let cut = match &mut crash {
            Crash::Kill => None,
            Crash::Power(lazy) => {
                let tear = Tear::draw(&mut random);
                Some((&mut **lazy, tear, &mut report))
            }
        };
        reported = reported.max(run_child(dir, delay, planted, cut));
        last_seen = verify(dir, reported)
            .map_err(|error| format!("seed {seed:#x} round {round} ({report}): {error}"))?;
        assert!(
            started.elapsed() < Duration::from_secs(60 + 2 * rounds),
            "round {round}: too slow"
        );
    }
    eprintln!(
        "{rounds} rounds in {:.1?}: durable up to {}, log ends at {last_seen}, hard state term {}, snapshot {}",
        started.elapsed(),
        reported.index,
        reported.term,
        reported.snapshot
    );
    Ok(reported)
}

fn rounds_from(variable: &str) -> u64 {
    std::env::var(variable)
        .ok()
        .and_then(|rounds| rounds.parse().ok())
        .unwrap_or(50)
}

fn assert_tested(reported: Reported) {
    assert!(
        reported.index > 0 && reported.term > 0 && reported.snapshot > 0,
        "a child never reported durability of each kind ({reported:?}): the test tested nothing"
    );
}

/// A child appending and reporting durable indexes is SIGKILLed at random
/// moments; after each kill the reopened log holds every reported-durable
/// batch intact (and only batches the child wrote).
#[test]
fn killed_appender_loses_nothing_reported_durable() {
    let dir = temp_dir("crash");
    let reported = crash_rounds(
        &dir,
        rounds_from("RAST_CRASH_ROUNDS"),
        0x9e37_79b9_7f4a_7c15,
        Crash::Kill,
        None,
    )
    .unwrap_or_else(|failure| panic!("{failure}"));
    assert_tested(reported);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The same, on the lazy filesystem, and after each kill the power is cut
/// (sometimes tearing the last write): only what was synced, file and
/// directory, survives; every reported-durable thing must be in it.
#[test]
fn power_cut_loses_nothing_reported_durable() {
    let Some((mut lazy, dir)) = common::lazy::mount("power-store") else {
        return;
    };
    let root = lazy.path().to_path_buf();
    let seed = std::env::var("RAST_POWER_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or(0x05ee_d0f9_03e4_u64);
    let reported = crash_rounds(
        &root,
        rounds_from("RAST_POWER_ROUNDS"),
        seed,
        Crash::Power(&mut lazy),
        None,
    )
    .unwrap_or_else(|failure| panic!("{failure}"));
    assert_tested(reported);
    drop(lazy);
    let _ = std::fs::remove_dir_all(dir);
}

/// Regression (the power rounds' round 0): a log opened in a directory
/// that did not exist, appended to and synced, survives a power cut with
/// every synced batch; so does a snapshot written into a new directory.
/// Until the directories were created durably, the cut took both away.
#[test]
fn new_directories_survive_a_power_cut() {
    let Some((mut lazy, dir)) = common::lazy::mount("power-new-dirs") else {
        return;
    };
    let root = lazy.path().join("data/log");
    let mut log = SegmentLog::open_standalone(&root, OPTIONS).unwrap();
    let mut frames = Vec::new();
    for _ in 0..20 {
        let frame = batch_at(log.last_index().next().get());
        log.append(&frame).unwrap();
        frames.push(frame);
    }
    let durable = log.sync_all().unwrap().index;
    assert_eq!(durable, log.last_index());
    let members = Members {
        voters: vec![1],
        ..Members::default()
    };
    let body = snapshot_body(durable.get());
    snapshot_file::write(&root.join("snapshots"), durable, Term(1), members, |out| {
        out.write_all(&body).map(|()| body.len() as u64)
    })
    .unwrap();
    drop(log);
    lazy.cut(None).unwrap();
    let log = SegmentLog::open_standalone(&root, OPTIONS).unwrap();
    assert_eq!(read_all_frames(&log), frames);
    let (meta, _) = snapshot_file::latest(&root.join("snapshots"))
        .unwrap()
        .expect("the snapshot survived");
    assert_eq!(meta.index, durable);
    drop(log);
    drop(lazy);
    let _ = std::fs::remove_dir_all(dir);
}

/// Small segments, so a test on the lazy filesystem has several.
const LAZY_OPTIONS: SegmentOptions = SegmentOptions {
    segment_bytes: 64 * 1024,
    zero_fill: false,
};

/// A store on a fresh lazy filesystem (`None` where FUSE is missing),
/// with the hard state of the term its batches are written in
/// (`batch_at` makes term 1): the mount, its directory, the log's
/// directory, the store.
fn log_on_lazy(name: &str) -> Option<(LazyMount, PathBuf, PathBuf, SegmentLog)> {
    let (lazy, dir) = common::lazy::mount(name)?;
    let root = lazy.path().join("log");
    let mut log = SegmentLog::open_standalone(&root, LAZY_OPTIONS).unwrap();
    log.store_hard_state(HardState {
        term: Term(1),
        vote: NodeId(1),
        commit: LogIndex::ZERO,
        damaged_in: Term::ZERO,
        acked_end: None,
    })
    .unwrap();
    Some((lazy, dir, root, log))
}

/// A latent sector error (reads of a block fail with EIO) in a sealed
/// segment is damage of the records there, not a stop: the store opens,
/// marked damaged (it may have acknowledged what it cannot read), with
/// the log cut before the unreadable block, and takes appends from there.
/// Before, the scan read the file through a map, where the EIO is a
/// SIGBUS that ends the process.
#[test]
fn an_unreadable_block_mid_log_is_damage_not_a_stop() {
    let Some((mut lazy, dir, root, mut log)) = log_on_lazy("eio-mid-log") else {
        return;
    };
    let options = LAZY_OPTIONS;
    let mut frames = Vec::new();
    while log.segments().len() < 4 {
        let frame = batch_at(log.last_index().next().get());
        log.append(&frame).unwrap();
        frames.push(frame);
        log.sync_all().unwrap();
    }
    let segments = log.segment_paths();
    drop(log);
    // The second segment's second 4 KiB block does not read any more.
    let victim = &segments[1];
    let relative = victim.strip_prefix(lazy.path()).unwrap().to_path_buf();
    lazy.make_unreadable(&relative, 4096, 4096).unwrap();
    assert!(
        std::fs::read(victim).is_err(),
        "the injected error is seen by reads"
    );

    let mut log = SegmentLog::open_standalone(&root, options).unwrap();
    assert!(
        log.hard_state().damaged_in > Term::ZERO,
        "the store is marked damaged"
    );
    let kept = read_all_frames(&log);
    assert!(
        kept.len() < frames.len() && frames.starts_with(&kept),
        "the log is cut before the unreadable block, the rest intact ({} of {} batches kept)",
        kept.len(),
        frames.len()
    );
    let first_of_victim = LogIndex(
        victim
            .file_stem()
            .and_then(|stem| stem.to_str())
            .and_then(|stem| stem.parse().ok())
            .unwrap(),
    );
    assert!(
        log.last_index() >= first_of_victim,
        "the blocks before it are kept"
    );
    assert_eq!(
        log.segment_paths().len(),
        2,
        "the later segments are removed"
    );
    // Appends go on from the cut (the leader sends the rest again).
    let frame = batch_at(log.last_index().next().get());
    log.append(&frame).unwrap();
    assert_eq!(log.sync_all().unwrap().index, log.last_index());
    drop(log);
    let log = SegmentLog::open_standalone(&root, options).unwrap();
    assert_eq!(
        read_all_frames(&log).len(),
        kept.len() + 1,
        "a clean reopen keeps them"
    );
    drop(log);
    drop(lazy);
    let _ = std::fs::remove_dir_all(dir);
}

/// Each durability rule of the store, broken on purpose (a planted
/// storage bug), makes the power-cut rounds fail: the harness sees what
/// the bug loses. (`cargo test --features planted-bugs --test storage_faults`.)
#[cfg(feature = "planted-bugs")]
#[test]
fn power_cuts_catch_every_planted_storage_bug() {
    use rast::storage::planted::StorageBug;
    /// Rounds tried per bug before giving up (each is caught far sooner).
    const ROUNDS_MAX: u64 = 500;
    for bug in StorageBug::ALL
        .into_iter()
        .filter(|bug| bug.lost_by_power_cuts())
    {
        let name = format!("power-planted-{}", bug.name());
        let Some((mut lazy, dir)) = common::lazy::mount(&name) else {
            return;
        };
        let root = lazy.path().to_path_buf();
        let outcome = crash_rounds(
            &root,
            ROUNDS_MAX,
            0x0bad_5eed,
            Crash::Power(&mut lazy),
            Some(bug.name()),
        );
        match outcome {
            Err(failure) => eprintln!("{bug:?} caught: {failure}"),
            Ok(reported) => panic!("{bug:?} not caught in {ROUNDS_MAX} power cuts ({reported:?})"),
        }
        drop(lazy);
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// A block that stops reading while the store serves it from its map (a
/// follower's catch-up, a client's read) is damage, not a SIGBUS that
/// ends the process: the read fails with `Unreadable` naming the file, the
/// process lives on, and the next open finds the block, marks the store
/// damaged and cuts the log before it.
#[test]
fn a_block_unreadable_while_served_from_the_map_is_damage_not_a_crash() {
    let Some((mut lazy, dir, root, mut log)) = log_on_lazy("eio-mapped") else {
        return;
    };
    let options = LAZY_OPTIONS;
    while log.segments().len() < 4 {
        log.append(&batch_at(log.last_index().next().get()))
            .unwrap();
        log.sync_all().unwrap();
    }
    // The second segment, read once through its map (pages resident).
    let victim = log.segment_paths()[1].clone();
    let first_of_victim = log.segments()[1].first;
    assert!(log.read(first_of_victim, 1 << 20).is_ok());
    let relative = victim.strip_prefix(lazy.path()).unwrap().to_path_buf();
    lazy.make_unreadable(&relative, 4096, 4096).unwrap();
    // Read it all again through the same map: the bad block faults.
    let mut next = first_of_victim;
    let error = loop {
        match log.read(next, 1 << 20) {
            Ok(range) => {
                assert!(
                    range.last < log.segments()[1].last,
                    "the whole segment read back although a block of it does not read"
                );
                next = range.last.next();
            }
            Err(error) => break error,
        }
    };
    assert!(
        matches!(&error, StorageError::Unreadable { path, .. } if *path == victim),
        "{error}"
    );
    drop(log);
    let log = SegmentLog::open_standalone(&root, options).unwrap();
    assert!(log.hard_state().damaged_in > Term::ZERO, "marked damaged");
    assert!(log.last_index() < LogIndex(first_of_victim.get() + 100));
    drop(log);
    drop(lazy);
    let _ = std::fs::remove_dir_all(dir);
}

/// The directory a [`lost_tail_child`] works in.
const LOST_TAIL_DIR_VARIABLE: &str = "RAST_LOST_TAIL_DIR";

/// Appends batches, has them reported durable, then zeroes the last
/// batch's bytes while the store is closed (damage at rest with the shape
/// of a power cut's tear) and reopens: true when the store opens marked
/// damaged, as it must (the batch was reported durable).
fn lost_tail_reads_as_damage(dir: &Path) -> bool {
    let mut log = SegmentLog::open_standalone(dir, OPTIONS).unwrap();
    log.store_hard_state(HardState {
        term: Term(1),
        ..HardState::default()
    })
    .unwrap();
    for _ in 0..20 {
        log.append(&batch_at(log.last_index().next().get()))
            .unwrap();
    }
    let last = log.last_index();
    assert_eq!(log.sync_all().unwrap().index, last, "reported durable");
    let path = log.segment_paths().pop().unwrap();
    let end = log.segments().last().unwrap().bytes;
    drop(log);
    let last_len = batch_at(last.get()).len() as u64;
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &vec![0; last_len as usize], end - last_len)
        .unwrap();
    drop(file);
    let log = SegmentLog::open_standalone(dir, OPTIONS).unwrap();
    assert!(log.last_index() < last, "the zeroed batch is cut");
    log.hard_state().damaged_in > Term::ZERO
}

/// The child of [`planted_no_durable_mark_lets_a_lost_tail_read_as_a_tear`]:
/// prints what [`lost_tail_reads_as_damage`] found.
#[test]
fn lost_tail_child() {
    let Some(dir) = std::env::var_os(LOST_TAIL_DIR_VARIABLE) else {
        return;
    };
    println!("damaged {}", lost_tail_reads_as_damage(Path::new(&dir)));
}

/// A batch reported durable and then lost at rest at the very end of the
/// log is damage, though it has a tear's shape: the durable mark says it
/// was reported.
#[test]
fn a_lost_tail_reported_durable_is_damage() {
    let dir = temp_dir("lost-tail");
    assert!(
        lost_tail_reads_as_damage(&dir),
        "read as a power cut's tear"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// With the durable mark left out (the planted bug `NoDurableMark`), the
/// same loss reads as a power cut's tear: the check above is what catches
/// a store that reports durability without the mark.
#[cfg(feature = "planted-bugs")]
#[test]
fn planted_no_durable_mark_lets_a_lost_tail_read_as_a_tear() {
    use rast::storage::planted::StorageBug;
    let dir = temp_dir("lost-tail-planted");
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "lost_tail_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(LOST_TAIL_DIR_VARIABLE, &dir)
        .env(
            rast::storage::planted::VARIABLE,
            StorageBug::NoDurableMark.name(),
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "the child failed: {stdout}");
    assert!(
        stdout.contains("damaged false"),
        "the planted bug was not caught by the check: {stdout}"
    );
    let _ = std::fs::remove_dir_all(dir);
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
