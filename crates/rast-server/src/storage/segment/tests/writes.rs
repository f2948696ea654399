//! Tests of the write path: appends in turns shaped like the server's
//! event loop, through segment rolls and segments made ahead, spliced
//! reservations, the bounded write buffers, group commit of syncs, and the
//! fail-stop after a failed write, sync or rename.
//!
//! Why apart from recovery: these drive a live store through its io_uring
//! work and check what is in flight, held and reported durable at each
//! turn, not what a reopen finds on a damaged disk.

use super::*;
use crate::io::Link;
use crate::storage::segment::write::ChunkState;

/// Reserves `len` bytes, waiting (as a server's loop does, a turn at a
/// time) while the store answers `NotYet`; returns the reservation and how
/// many times it was not ready.
fn reserve_ready(log: &mut SegmentLog, len: u64) -> (Rc<File>, Reservation, usize) {
    let mut waits = 0;
    loop {
        match log.reserve(len).unwrap() {
            Reserve::Ready(file, reservation) => return (file, reservation, waits),
            Reserve::NotYet => {
                waits += 1;
                assert!(waits < 10_000, "a reservation never became ready");
                let ring = Rc::clone(log.ring());
                if ring.borrow().in_flight() > 0 {
                    ring.borrow_mut().submit_and_wait(1).unwrap();
                }
                log.poll().unwrap();
            }
            Reserve::Unsupported => panic!("the segment store takes reservations"),
        }
    }
}

/// Batches spliced from a pipe into a reservation (as a follower moves
/// them from its socket) join the log: readable, durable after a flush,
/// there after a reopen; a bad spliced batch, found by the caller's check
/// of the reserved bytes, is aborted: zeroed, and the log goes on.
#[test]
fn spliced_batches_join_the_log() {
    use std::io::Write as _;
    let dir = TempDir::new("splice");
    let mut log = SegmentLog::open_standalone(&dir.0, SMALL).unwrap();
    let mut frames = append_batches(&mut log, 1, &[2], 64);
    let spliced = [make_batch(2, 3, 4, 64), make_batch(2, 7, 1, 64)];
    let bytes: Vec<u8> = spliced.concat();
    let (reader, mut writer) = std::io::pipe().unwrap();
    writer.write_all(&bytes).unwrap();
    let reader = Rc::new(File::from(std::os::fd::OwnedFd::from(reader)));
    let (file, reservation, _) = reserve_ready(&mut log, bytes.len() as u64);
    assert!(matches!(
        log.append(&make_batch(2, 3, 1, 8)),
        Err(StorageError::Reserved)
    ));
    let ring = Rc::clone(log.ring());
    let op = ring
        .borrow_mut()
        .splice(
            &reader,
            None,
            &file,
            Some(reservation.offset()),
            bytes.len() as u32,
            Link::None,
        )
        .unwrap();
    assert_eq!(ring.borrow_mut().wait(op).unwrap(), bytes.len() as i32);
    assert_eq!(log.complete_reservation(reservation).unwrap(), LogIndex(7));
    frames.extend(spliced.iter().cloned());
    assert_eq!(read_all(&log, 1 << 20), frames);
    assert_eq!(log.sync_all().unwrap().index, LogIndex(7));
    // A damaged batch is refused and leaves no trace.
    let mut bad = make_batch(2, 8, 1, 64);
    let at = bad.len() - 1;
    bad[at] ^= 1;
    let (file, reservation, _) = reserve_ready(&mut log, bad.len() as u64);
    std::os::unix::fs::FileExt::write_all_at(&*file, &bad, reservation.offset()).unwrap();
    let reserved = log.reserved_bytes(&reservation).unwrap();
    assert_eq!(reserved, &bad[..]);
    assert!(
        crate::wire::BatchView::parse(reserved)
            .unwrap()
            .verify_checksum()
            .is_err()
    );
    log.abort_reservation(reservation).unwrap();
    frames.extend(append_batches(&mut log, 2, &[1], 64));
    log.sync_all().unwrap();
    drop(log);
    let log = SegmentLog::open_standalone(&dir.0, SMALL).unwrap();
    assert_eq!(read_all(&log, 1 << 20), frames);
}

/// Appending through many segment rolls in turns shaped like the server's
/// event loop (wait for a completion, append a few batches, flush, poll)
/// never leaves the store with flushed work unfinished while nothing of it
/// is in flight — the state in which the 4 GiB benchmark hung at its first
/// roll — and durability reaches the last index and the last hard state.
/// Another ring user's submit between flush and poll (the network's) is
/// part of each turn, and so is a new hard state (a commit index). Writes
/// into one segment are never in flight two at a time (a killed process
/// could leave a hole before bytes it wrote).
#[test]
fn turns_through_rolls_keep_work_in_flight() {
    let dir = TempDir::new("turns");
    let mut log = SegmentLog::open_standalone(&dir.0, SMALL).unwrap();
    let ring = Rc::clone(log.ring());
    let check = |log: &SegmentLog, when: &str, turn: usize| {
        assert!(
            !log.busy() || ring.borrow().in_flight() > 0,
            "turn {turn}, after {when}: unfinished work and nothing in flight \
             ({} chunks, {} syncs)",
            log.chunks.len(),
            log.syncs.len(),
        );
        // Writes into one file go one at a time, in offset order.
        for segment in &log.segments {
            let writing = log
                .chunks
                .iter()
                .filter(|chunk| {
                    chunk.segment == segment.id && matches!(chunk.state, ChunkState::Writing(_))
                })
                .count();
            assert!(
                writing <= 1,
                "turn {turn}, after {when}: {writing} writes in flight"
            );
        }
    };
    // About 4.4 KiB per batch: 14 batches per 64 KiB segment, so three
    // per turn roll a segment every five turns or so.
    let turns = 150;
    let hard_state = |turn: usize| HardState {
        term: Term(1),
        vote: crate::types::NodeId(1),
        commit: LogIndex(turn as u64),
        ..HardState::default()
    };
    for turn in 0..turns {
        if ring.borrow().in_flight() > 0 {
            ring.borrow_mut().submit_and_wait(1).unwrap();
        }
        append_batches(&mut log, 1, &[8, 8, 8], 512);
        log.store_hard_state(hard_state(turn)).unwrap();
        log.flush().unwrap();
        check(&log, "flush", turn);
        ring.borrow_mut().submit().unwrap();
        check(&log, "another submit", turn);
        log.poll().unwrap();
        check(&log, "poll", turn);
    }
    assert!(log.segments.len() > 25, "{} segments", log.segments.len());
    let last = log.last_index();
    let done = Durability {
        index: last,
        hard_state: hard_state(turns - 1),
    };
    // Everything becomes durable, and then nothing is left to do (a
    // preparation or a sync may still finish after the durable marks
    // reach the end: waited for, not raced).
    for _ in 0..1000 {
        if log.poll().unwrap() == done && !log.busy() {
            break;
        }
        check(&log, "final poll", turns);
        if ring.borrow().in_flight() == 0 {
            break;
        }
        ring.borrow_mut().submit_and_wait(1).unwrap();
    }
    assert_eq!(log.durability(), done);
    assert!(!log.busy());
}

/// The bytes held for writing never exceed their budget: appends without
/// a flush are taken until the budget cannot hold more, are then refused
/// with back-pressure (having taken at least a largest frame's worth), and
/// work again once the writes complete. A shared frame is held as the
/// handle it came in, not copied.
#[test]
fn write_buffers_stay_within_their_budget() {
    use crate::constants::FRAME_BYTES_MAX;
    let dir = TempDir::new("budget");
    let mut log = SegmentLog::open_standalone(&dir.0, SegmentOptions::default()).unwrap();
    let frame = bytes::Bytes::from(make_batch(1, 1, 1, 64));
    log.append_shared(frame.clone()).unwrap();
    log.stage();
    let chunk = log.chunks.back().unwrap();
    assert_eq!(chunk.pieces.pieces.len(), 1);
    assert_eq!(
        chunk.pieces.pieces[0].as_ptr(),
        frame.as_ptr(),
        "the store holds the caller's memory"
    );
    assert!(log.staging.is_empty());
    log.sync_all().unwrap();
    let mut appended = 0;
    let refused = loop {
        let frame = make_batch(1, log.last_index().next().get(), 8, 8192);
        match log.append(&frame) {
            Ok(_) => appended += frame.len(),
            Err(error) => break error,
        }
        assert!(log.held_bytes() <= WRITE_QUEUE_BYTES_MAX as u64);
    };
    assert!(
        matches!(refused, StorageError::Backpressure { .. }),
        "{refused}"
    );
    assert!(appended >= FRAME_BYTES_MAX, "only {appended} bytes taken");
    log.sync_all().unwrap();
    append_batches(&mut log, 1, &[8], 8192);
    assert_eq!(log.sync_all().unwrap().index, log.last_index());
}

/// Outside batches taken only while `writable_bytes` allows them (as the
/// server does for clients and peers) are never refused, across segment
/// rolls too, and leave room for the appends a node makes on its own: with
/// the buffers as full as the check lets them get, a new leader's no-op
/// and a configuration-sized batch are still taken. (A roll once handed
/// the grown staging buffer to the old segment at its capacity, more than
/// `writable_bytes` had counted: 1 MiB appends were refused and the log
/// stopped.)
#[test]
fn the_write_budget_keeps_headroom_for_a_nodes_own_appends() {
    use crate::constants::WRITE_HEADROOM_BYTES;
    let dir = TempDir::new("headroom");
    let options = SegmentOptions {
        segment_bytes: 3 * 1024 * 1024,
        zero_fill: false,
    };
    let mut log = SegmentLog::open_standalone(&dir.0, options).unwrap();
    // Ever smaller batches, each taken while it fits, fill the budget as
    // far as the check allows.
    for entry_bytes in [256 * 1024, 4096, 64, 0] {
        loop {
            let frame = make_batch(1, log.last_index().next().get(), 1, entry_bytes);
            if log.writable_bytes() < frame.len() as u64 {
                break;
            }
            log.append(&frame).expect("within writable_bytes");
        }
    }
    for (count, bytes) in [(1, 0), (1, 1000)] {
        let own = make_batch(2, log.last_index().next().get(), count, bytes);
        assert!(own.len() < WRITE_HEADROOM_BYTES);
        log.append(&own)
            .unwrap_or_else(|error| panic!("a node's own append refused: {error}"));
    }
    assert_eq!(log.sync_all().unwrap().index, log.last_index());
}

/// A failed sync stops the store for good (fail-stop), whichever operation
/// failed — an fdatasync (EIO), a write (short), the hard state's fsync
/// (EIO), injected through the ring as a failing disk would report them:
/// what the failure covered is never reported durable, every later call
/// fails, the ring drains, and a reopened store holds everything reported
/// durable before.
#[test]
fn a_failed_sync_or_write_stops_the_store() {
    use crate::io::ring::Fault;
    use nix::libc::EIO;
    for (fault, result) in [
        (Fault::Fdatasync, -EIO),
        (Fault::Write, 100),
        (Fault::Fsync, -EIO),
    ] {
        let dir = TempDir::new("fail-stop");
        let mut log = SegmentLog::open_standalone(&dir.0, SMALL).unwrap();
        let frames = append_batches(&mut log, 1, &[2, 3], 64);
        let before = log.sync_all().unwrap();
        assert_eq!(before.index, LogIndex(5));
        log.ring().borrow_mut().inject(fault, result);
        append_batches(&mut log, 1, &[4], 64);
        log.store_hard_state(HardState {
            term: Term(3),
            vote: crate::types::NodeId(2),
            commit: LogIndex(5),
            ..HardState::default()
        })
        .unwrap();
        let error = log.sync_all().unwrap_err();
        assert!(
            matches!(error, StorageError::Failed(_)),
            "{fault:?}: {error}"
        );
        match fault {
            Fault::Fsync => assert_eq!(log.durability().hard_state, before.hard_state),
            _ => assert_eq!(log.durability().index, before.index, "{fault:?}"),
        }
        let failed = |result: Result<(), StorageError>| {
            assert!(
                matches!(result, Err(StorageError::Failed(_))),
                "{fault:?}: {result:?}"
            );
        };
        let next = make_batch(1, log.last_index().next().get(), 1, 64);
        failed(log.append(&next).map(drop));
        failed(log.store_hard_state(HardState::default()));
        failed(log.flush());
        failed(log.poll().map(drop));
        failed(log.sync_all().map(drop));
        failed(log.read(LogIndex(1), 1 << 20).map(drop));
        failed(log.truncate_suffix(LogIndex(3)));
        failed(log.drop_prefix(LogIndex(5)));
        failed(log.reset(LogIndex(100)));
        let ring = Rc::clone(log.ring());
        drop(log);
        while ring.borrow().in_flight() > 0 {
            ring.borrow_mut().submit_and_wait(1).unwrap();
        }
        let log = SegmentLog::open_standalone(&dir.0, SMALL).unwrap();
        assert!(log.last_index() >= before.index, "{fault:?}");
        assert_eq!(read_all(&log, 1 << 20)[..2], frames, "{fault:?}");
    }
}

/// Dropping whole segments issues a directory fsync without blocking, so
/// the removal is durable once `sync_all` (or a later `poll`) returns; a
/// failure of that fsync stops the store like any failed sync.
#[test]
fn drop_prefix_syncs_the_directory() {
    use crate::io::ring::Fault;
    for fail in [false, true] {
        let dir = TempDir::new("drop-sync");
        let mut log = SegmentLog::open_standalone(&dir.0, SMALL).unwrap();
        append_batches(&mut log, 1, &[3; 60], 1000);
        log.sync_all().unwrap();
        let segments = log.segments.len();
        assert!(segments >= 3, "{segments} segments");
        if fail {
            log.ring()
                .borrow_mut()
                .inject(Fault::Fsync, -nix::libc::EIO);
        }
        let middle = log.segments[1].last;
        log.drop_prefix(middle).unwrap();
        assert_eq!(log.segments.len(), segments - 2);
        assert!(log.dir_sync.is_some(), "the directory fsync is in flight");
        let result = log.sync_all();
        if fail {
            assert!(matches!(result, Err(StorageError::Failed(_))), "{result:?}");
        } else {
            result.unwrap();
            assert!(log.dir_sync.is_none() && !log.busy());
        }
    }
}

/// Once the active segment is half full, the next segment's file is made
/// ahead (created, then preallocated and synced through the ring), so the
/// roll takes it as is; it gets its real name through the ring, linked
/// ahead of its first write. A reopen finds every batch and no temp file.
#[test]
fn rolls_take_the_segment_prepared_ahead() {
    let dir = TempDir::new("prepared");
    let mut log = SegmentLog::open_standalone(&dir.0, SMALL).unwrap();
    let mut frames = Vec::new();
    while log.active().end < SMALL.segment_bytes / 2 {
        frames.extend(append_batches(&mut log, 1, &[4], 1000));
        log.flush().unwrap();
    }
    log.sync_all().unwrap();
    let prepared = log
        .next
        .as_ref()
        .expect("prepared at half full")
        .path
        .clone();
    assert!(prepared.exists());
    let first_segment = log.segments[0].id;
    while log.segments.len() == 1 {
        frames.extend(append_batches(&mut log, 1, &[4], 1000));
    }
    let active = log.active();
    assert_eq!(active.path, prepared, "the roll took the prepared file");
    assert!(!active.named);
    assert!(log.next.is_none());
    log.sync_all().unwrap();
    let active = log.active();
    assert!(active.named && active.id != first_segment);
    assert_eq!(active.path, dir.0.join(segment_name(active.first)));
    assert!(!prepared.exists());
    while log.segments.len() < 4 {
        frames.extend(append_batches(&mut log, 1, &[4], 1000));
        log.flush().unwrap();
        log.poll().unwrap();
    }
    log.sync_all().unwrap();
    drop(log);
    let log = SegmentLog::open_standalone(&dir.0, SMALL).unwrap();
    assert_eq!(read_all(&log, 1 << 20), frames);
    let temps = fs::read_dir(&dir.0)
        .unwrap()
        .filter(|entry| {
            let name = entry.as_ref().unwrap().file_name();
            name.to_string_lossy().ends_with(TEMP_SUFFIX)
        })
        .count();
    assert_eq!(temps, 0);
}

/// A failed rename of a new segment (reported through the ring) stops the
/// store before anything in that segment is reported durable.
#[test]
fn a_failed_segment_rename_stops_the_store() {
    use crate::io::ring::Fault;
    let dir = TempDir::new("rename-fail");
    let mut log = SegmentLog::open_standalone(&dir.0, SMALL).unwrap();
    while log.segments.len() == 1 {
        append_batches(&mut log, 1, &[4], 1000);
    }
    let old_last = log.segments[0].last;
    log.ring()
        .borrow_mut()
        .inject(Fault::Rename, -nix::libc::EIO);
    let error = log.sync_all().unwrap_err();
    assert!(
        matches!(&error, StorageError::Failed(reason) if reason.contains("naming")),
        "{error}"
    );
    assert!(log.durability().index <= old_last);
    assert!(matches!(log.poll(), Err(StorageError::Failed(_))));
}

/// A reservation never blocks: one that needs a new segment answers
/// `NotYet` while the next file is made and named through the ring (older
/// segments durable first), then is ready; bytes spliced into it and
/// aborted are zeroed before the appends after them land, so a reopen
/// finds exactly the appended batches.
#[test]
fn reservations_at_a_roll_wait_without_blocking() {
    let dir = TempDir::new("reserve-roll");
    let mut log = SegmentLog::open_standalone(&dir.0, SMALL).unwrap();
    // Fill the first segment nearly to its end.
    let mut frames = append_batches(&mut log, 1, &[1; 12], 4096);
    let big = make_batch(1, log.last_index().next().get(), 2, 12 * 1024);
    assert!(log.active().end + big.len() as u64 > SMALL.segment_bytes);
    let segments_before = log.segments.len();
    let (file, reservation, waits) = reserve_ready(&mut log, big.len() as u64);
    assert!(waits > 0, "a roll into an unnamed segment must wait");
    assert_eq!(log.segments.len(), segments_before + 1);
    assert_eq!(
        reservation.offset(),
        0,
        "the reservation opens the new segment"
    );
    assert!(log.active().named);
    // Valid bytes, given up on (the core did not take them): zeroed.
    std::os::unix::fs::FileExt::write_all_at(&*file, &big, reservation.offset()).unwrap();
    log.abort_reservation(reservation).unwrap();
    let next = log.last_index().next().get();
    frames.extend(append_batches(&mut log, 2, &[1], 64));
    assert_eq!(log.sync_all().unwrap().index, LogIndex(next));
    drop(log);
    let log = SegmentLog::open_standalone(&dir.0, SMALL).unwrap();
    assert_eq!(read_all(&log, 1 << 20), frames);
    let tail = &log.active().mapping().unwrap().bytes()[64 * 2..big.len()];
    assert!(
        tail.iter().all(|byte| *byte == 0),
        "the aborted bytes after the last batch are zeroed"
    );
}

/// Group commit across turns: data flushed while a sync of its file is in
/// flight is written without a sync of its own, and one sync issued when
/// that one ends covers all of it. The ring holds back the completions of
/// fdatasyncs while fifty turns run, so the first sync stays in flight (a
/// slow disk, made deterministic): those turns issue exactly one sync, and
/// the one issued after it covers the other forty-nine.
#[test]
fn flushes_during_a_sync_share_the_next_one() {
    let dir = TempDir::new("group-commit");
    let mut log = SegmentLog::open_standalone(&dir.0, SegmentOptions::default()).unwrap();
    let turns = 50;
    let ring = Rc::clone(log.ring());
    ring.borrow_mut().hold_syncs(true);
    for _ in 0..turns {
        append_batches(&mut log, 1, &[1], 64);
        log.flush().unwrap();
        log.poll().unwrap();
    }
    // Each chunk's write waits for the one before it: let them all land.
    while !log.chunks.is_empty() {
        ring.borrow_mut().wait_for_completion().unwrap();
        log.poll().unwrap();
    }
    let (syncs_held, durable_held) = (log.syncs_issued, log.durability().index);
    // Released before asserting: a store dropped while its syncs are held
    // would wait for them forever.
    ring.borrow_mut().hold_syncs(false);
    assert_eq!(
        syncs_held, 1,
        "turns flushed while the first sync was in flight issued syncs of their own"
    );
    assert_eq!(durable_held, LogIndex(0), "no sync was reaped");
    assert_eq!(log.sync_all().unwrap().index, log.last_index());
    assert_eq!(log.syncs_issued, 2, "one deferred sync covers the rest");
    let last = log.last_index();
    drop(log);
    let log = SegmentLog::open_standalone(&dir.0, SegmentOptions::default()).unwrap();
    assert_eq!(log.last_index(), last);
}
