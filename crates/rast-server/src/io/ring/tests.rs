//! Tests of the ring: linked chains (and a failed link cancelling the
//! rest), abandoned operations keeping their buffers until completion,
//! waits and wake-ups, and a drop cancelling what is in flight.

use super::*;
use std::io::Read;

fn temp_file(name: &str) -> (std::path::PathBuf, Rc<File>) {
    let path = std::env::temp_dir().join(format!("rast-ring-{}-{name}", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    (path, Rc::new(file))
}

/// A linked write and fdatasync complete, in order, with the written
/// byte count and zero; the bytes are in the file.
#[test]
fn write_then_linked_fdatasync() {
    let (path, file) = temp_file("write");
    let mut ring = Ring::new().unwrap();
    let buffer = Rc::new(b"hello, ring".to_vec());
    ring.reserve(2).unwrap();
    let write = ring.write_at(&file, &buffer, 0..11, 5, Link::Next).unwrap();
    let sync = ring.fdatasync(&file, Link::None).unwrap();
    assert_eq!(ring.in_flight(), 2);
    assert_eq!(ring.wait(write).unwrap(), 11);
    assert_eq!(ring.wait(sync).unwrap(), 0);
    assert_eq!(ring.in_flight(), 0);
    // The op dropped its clone of the buffer with its completion.
    assert_eq!(Rc::strong_count(&buffer), 1);
    let mut contents = Vec::new();
    File::open(&path)
        .unwrap()
        .read_to_end(&mut contents)
        .unwrap();
    assert_eq!(&contents[5..], b"hello, ring");
    std::fs::remove_file(path).unwrap();
}

/// An abandoned op keeps its buffer until the completion is reaped,
/// then frees the slot for reuse under a new generation.
#[test]
fn abandoned_op_keeps_buffer_until_completion() {
    let (path, file) = temp_file("abandon");
    let mut ring = Ring::new().unwrap();
    let buffer = Rc::new(vec![7u8; 4096]);
    let write = ring
        .write_at(&file, &buffer, 0..4096, 0, Link::None)
        .unwrap();
    ring.abandon(write);
    ring.abandon(write); // twice is once
    assert_eq!(Rc::strong_count(&buffer), 2);
    assert_eq!(ring.abandoned_in_flight(), 1);
    while ring.in_flight() > 0 {
        ring.submit_and_wait(1).unwrap();
    }
    assert_eq!(Rc::strong_count(&buffer), 1);
    assert_eq!(ring.abandoned_in_flight(), 0);
    let next = ring.fdatasync(&file, Link::None).unwrap();
    assert_ne!(next, write);
    assert_eq!(ring.wait(next).unwrap(), 0);
    std::fs::remove_file(path).unwrap();
}

/// A failed link head cancels the rest of its chain.
#[test]
fn failed_link_cancels_the_chain() {
    let (path, file) = temp_file("chain");
    let read_only = Rc::new(File::open(&path).unwrap());
    let mut ring = Ring::new().unwrap();
    let buffer = Rc::new(vec![1u8; 16]);
    ring.reserve(2).unwrap();
    let write = ring
        .write_at(&read_only, &buffer, 0..16, 0, Link::Next)
        .unwrap();
    let sync = ring.fdatasync(&file, Link::None).unwrap();
    assert_eq!(ring.wait(write).unwrap(), -libc::EBADF);
    assert_eq!(ring.wait(sync).unwrap(), -libc::ECANCELED);
    drop(file);
    std::fs::remove_file(path).unwrap();
}

/// A completion reaped before a wait (by another user of a shared
/// ring) still wakes that wait: it returns at once instead of blocking
/// for a completion that already came. The wait after it blocks again.
#[test]
fn completion_reaped_early_wakes_the_next_wait() {
    let (path, file) = temp_file("wake");
    let mut ring = Ring::new().unwrap();
    // A no-op completes inside the submit, so a bare reap sees it even
    // on a ring that defers completion work to its waits.
    let nop = ring.nop(Link::None).unwrap();
    ring.submit().unwrap();
    assert_eq!(ring.reap(), 1);
    assert_eq!(ring.take(nop), Some(0));
    // Nothing in flight, but a completion came since the last wait.
    ring.submit_and_wait(1).unwrap();
    let next = ring.fdatasync(&file, Link::None).unwrap();
    assert_eq!(ring.wait(next).unwrap(), 0);
    std::fs::remove_file(path).unwrap();
}

/// A wait inside a turn for one's own operation leaves the completions
/// it reaps counted: the loop's next wait returns at once.
#[test]
fn waiting_for_an_op_keeps_wake_ups_for_the_loop() {
    let (path, file) = temp_file("keep-wake");
    let mut ring = Ring::new().unwrap();
    let first = ring.fdatasync(&file, Link::None).unwrap();
    let second = ring.fdatasync(&file, Link::None).unwrap();
    assert_eq!(ring.wait(second).unwrap(), 0);
    assert_eq!(ring.wait(first).unwrap(), 0);
    assert_eq!(ring.in_flight(), 0);
    ring.submit_and_wait(1).unwrap();
    std::fs::remove_file(path).unwrap();
}

/// Waiting for a completion with nothing in flight and none reaped
/// since the last wait would block forever: it panics instead.
#[test]
#[should_panic(expected = "would block forever")]
fn wait_with_nothing_in_flight_panics() {
    let mut ring = Ring::new().unwrap();
    ring.submit_and_wait(1).unwrap();
}

/// Dropping a ring with an operation that never completes by itself (a
/// read on an empty pipe) cancels it and returns.
#[test]
fn drop_cancels_and_waits() {
    let (reader, writer) = std::io::pipe().unwrap();
    let reader = Rc::new(File::from(std::os::fd::OwnedFd::from(reader)));
    let (path, file) = temp_file("drop");
    let mut ring = Ring::new().unwrap();
    ring.splice(&reader, None, &file, Some(0), 4096, Link::None)
        .unwrap();
    ring.submit().unwrap();
    assert_eq!(ring.in_flight(), 1);
    drop(ring);
    drop(writer);
    std::fs::remove_file(path).unwrap();
}
