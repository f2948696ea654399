//! One io_uring and the table of its operations in flight.
//!
//! ```text
//!  caller ── write_at / fdatasync / fallocate / rename / splice ──► slot (owns buffer, fd, paths)
//!                                                  │ user_data = generation << 32 | slot
//!                                                  ▼
//!  kernel ◄── submit ── SQ                 CQ ── reap ──► slot: Done(result)
//!  caller ◄── take(op) ── result, slot freed (its buffer, fd, paths dropped)
//! ```
//!
//! A slot keeps what the kernel reads or writes alive until the completion
//! is reaped, whatever the caller does meanwhile: `abandon` only marks the
//! slot so the completion frees it, and dropping the ring cancels what can
//! be cancelled and waits for every completion before freeing anything.
//!
//! # Wake-ups are never lost
//!
//! A ring is shared by everything on a core, and any of its users may reap
//! completions that belong to another (a store's `poll` reaps the network's,
//! one store's another's). A completion is a wake-up: every completion
//! reaped since the last wait counts towards the next one, so
//! `submit_and_wait(1)` returns at once when something was reaped in the
//! meantime, and the caller looks again instead of blocking on a completion
//! that already came. `submit` only submits. A caller waiting for its own
//! operation in the middle of a turn uses `wait_for_completion`, which
//! leaves the completions it reaps counted for the loop's next wait.
//! Waiting for more completions than there are operations in flight would
//! block forever: it panics.
//!
//! # One thread, deferred completion work
//!
//! A ring is made and used by one thread (a core's), so it is set up
//! `SINGLE_ISSUER | DEFER_TASKRUN` where the kernel has them (6.1 and
//! later): the kernel's completion work for network operations (retrying
//! a receive once data came, posting the completion) then runs when the
//! thread waits, in one batch, instead of interrupting it with an
//! inter-processor interrupt and a signal-like task-work run at every
//! packet. Completions then appear only at a wait (`submit_and_wait` with
//! a positive count, `wait_for_completion`), never at a bare `reap`: the
//! rule above already makes every caller wait before it looks for a
//! completion it has not seen. On an older kernel the ring falls back to
//! the default setup ([`Ring::deferred`] says which).

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use io_uring::{IoUring, opcode, squeue, types};
use nix::libc;

use crate::constants::IOVECS_MAX;
use crate::constants::RING_ENTRIES;

mod net;

/// `user_data` of cancel requests: their completions matter to no one.
const USER_DATA_CANCEL: u64 = u64::MAX;

/// Identifies one submitted operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OpId(u64);

impl OpId {
    fn slot(self) -> usize {
        (self.0 & 0xffff_ffff) as usize
    }

    fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }
}

/// Whether the next operation pushed waits for this one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// Independent.
    None,
    /// The next operation pushed starts only after this one succeeds; if
    /// this one fails (or writes short), the next completes with
    /// `-ECANCELED`.
    Next,
    /// The next operation pushed starts only after this one completes,
    /// whether it succeeded or not.
    Hard,
}

/// What an operation keeps alive for the kernel. Never read: holding it is
/// the point.
#[derive(Debug, Default)]
#[expect(dead_code, reason = "held only to keep memory and descriptors alive")]
struct Keep {
    file: Option<Rc<File>>,
    other_file: Option<Rc<File>>,
    buffer: Option<Rc<Vec<u8>>>,
    paths: Option<Box<(CString, CString)>>,
    timespec: Option<Box<types::Timespec>>,
    address: Option<Box<nix::sys::socket::SockaddrStorage>>,
    /// Shared buffers a vectored write or send reads from.
    pieces: Vec<Bytes>,
    /// The iovecs pointing into `pieces`.
    iovecs: Option<Box<[libc::iovec]>>,
    /// The message header of a `sendmsg`, pointing at `iovecs`.
    message: Option<Box<libc::msghdr>>,
    /// A path the operation reads (`openat`, `unlinkat`).
    path: Option<CString>,
    /// The result is a new descriptor (`openat`): if the operation is
    /// abandoned, the ring closes it.
    result_is_fd: bool,
}

/// A buffer an operation owns while the kernel may write into it, handed
/// back with the result ([`Ring::take_owned`]).
#[derive(Debug)]
pub enum Owned {
    /// A plain buffer (an eventfd's 8 bytes).
    Vec(Vec<u8>),
    /// A receive block: the kernel fills its spare capacity, and the
    /// completion extends its length by the bytes received (so the bytes
    /// it holds are always initialized).
    Block(BytesMut),
}

#[derive(Debug)]
enum SlotState {
    Free,
    InFlight {
        keep: Keep,
        /// A buffer the kernel reads or writes, handed back with the result.
        owned: Option<Owned>,
        abandoned: bool,
        /// Report the completion through `drain_ready` (event-loop ops).
        notify: bool,
    },
    Done {
        result: i32,
        owned: Option<Owned>,
    },
}

#[derive(Debug)]
struct Slot {
    generation: u32,
    state: SlotState,
}

/// An io_uring and its operations; see the module docs.
pub struct Ring {
    uring: IoUring,
    slots: Vec<Slot>,
    free: Vec<u32>,
    in_flight: usize,
    /// Abandoned operations whose completion has not arrived yet.
    abandoned_in_flight: usize,
    /// Completions reaped since the last wait returned: wake-ups the next
    /// wait counts (see the module docs).
    reaped_unwaited: usize,
    /// Completed operations that asked to be reported (see `net`).
    ready: Vec<OpId>,
    /// Test hook: faults waiting for their next operation of a kind, and
    /// the results operations will report instead of the kernel's.
    #[cfg(test)]
    faults: Faults,
}

/// Kinds of operation a test can make fail ([`Ring::inject`]).
#[cfg(test)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// The next `write_at`.
    Write,
    /// The next `fdatasync`.
    Fdatasync,
    /// The next `fsync`.
    Fsync,
    /// The next `rename`.
    Rename,
}

#[cfg(test)]
#[derive(Debug, Default)]
struct Faults {
    armed: Vec<(Fault, i32)>,
    ops: Vec<(OpId, i32)>,
    /// fdatasync (and `RWF_DSYNC` write) completions are held back
    /// ([`Ring::hold_syncs`]).
    hold_syncs: bool,
    /// fdatasyncs issued while holding: their completions are held.
    syncs: Vec<OpId>,
    /// Held completions, reaped once the hold ends.
    held: Vec<(OpId, i32)>,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Ring")
            .field("in_flight", &self.in_flight)
            .field("slots", &self.slots.len())
            .finish_non_exhaustive()
    }
}

impl Ring {
    /// A ring of [`RING_ENTRIES`] submission entries, for the calling
    /// thread only (see the module docs on deferred completion work).
    pub fn new() -> io::Result<Self> {
        let uring = match IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .build(RING_ENTRIES)
        {
            Ok(uring) => uring,
            Err(error) if error.raw_os_error() == Some(libc::EINVAL) => IoUring::new(RING_ENTRIES)?,
            Err(error) => return Err(error),
        };
        Ok(Self {
            uring,
            slots: Vec::new(),
            free: Vec::new(),
            in_flight: 0,
            abandoned_in_flight: 0,
            reaped_unwaited: 0,
            ready: Vec::new(),
            #[cfg(test)]
            faults: Faults::default(),
        })
    }

    /// Whether the ring defers completion work to its waits
    /// (`DEFER_TASKRUN`; false on a kernel older than 6.1).
    pub fn deferred(&self) -> bool {
        // Both flags are set together or not at all.
        self.uring.params().is_setup_single_issuer()
    }

    /// Operations submitted (or queued) whose completion was not reaped.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Abandoned operations still in the kernel (a dropped store's writes):
    /// a store reopened over the same files waits until there are none, so
    /// no stale write lands on what it writes.
    pub fn abandoned_in_flight(&self) -> usize {
        self.abandoned_in_flight
    }

    /// Makes room for `entries` submission entries, submitting what is
    /// queued if needed, so a linked chain is never split across two
    /// submissions.
    pub fn reserve(&mut self, entries: usize) -> io::Result<()> {
        assert!(entries <= RING_ENTRIES as usize);
        let free = {
            let submission = self.uring.submission();
            submission.capacity() - submission.len()
        };
        if free < entries {
            self.submit()?;
        }
        Ok(())
    }

    /// Writes `buffer[range]` to `file` at `offset`. The operation keeps
    /// the buffer and the file alive until its completion is reaped.
    pub fn write_at(
        &mut self,
        file: &Rc<File>,
        buffer: &Rc<Vec<u8>>,
        range: Range<usize>,
        offset: u64,
        link: Link,
    ) -> io::Result<OpId> {
        let op = self.push_write(file, buffer, range, offset, 0, link)?;
        #[cfg(test)]
        self.arm_fault(Fault::Write, op);
        Ok(op)
    }

    /// Queues a write of `buffer[range]` with `pwritev2` flags `flags`.
    fn push_write(
        &mut self,
        file: &Rc<File>,
        buffer: &Rc<Vec<u8>>,
        range: Range<usize>,
        offset: u64,
        flags: i32,
        link: Link,
    ) -> io::Result<OpId> {
        let bytes = &buffer[range];
        let len = u32::try_from(bytes.len()).map_err(|_| io::Error::other("write over 4 GiB"))?;
        let entry = opcode::Write::new(types::Fd(file.as_raw_fd()), bytes.as_ptr(), len)
            .offset(offset)
            .rw_flags(flags)
            .build();
        let keep = Keep {
            file: Some(Rc::clone(file)),
            buffer: Some(Rc::clone(buffer)),
            ..Keep::default()
        };
        self.push(entry, keep, link)
    }

    /// Writes `buffer[range]` to `file` at `offset` as `pwritev2` with
    /// `RWF_DSYNC`: durable when it completes, with no `fdatasync` of its
    /// own. On a file opened `O_DIRECT`, `range` and `offset` must be
    /// block-aligned; the write then goes to the device without the page
    /// cache and without a worker thread.
    pub fn write_at_dsync(
        &mut self,
        file: &Rc<File>,
        buffer: &Rc<Vec<u8>>,
        range: Range<usize>,
        offset: u64,
        link: Link,
    ) -> io::Result<OpId> {
        let op = self.push_write(file, buffer, range, offset, libc::RWF_DSYNC, link)?;
        #[cfg(test)]
        if self.faults.hold_syncs {
            self.faults.syncs.push(op);
        }
        Ok(op)
    }

    /// Writes `pieces`, back to back, to `file` at `offset` with one
    /// vectored write (pieces adjacent in memory share an iovec). At most
    /// [`IOVECS_MAX`] iovecs: a caller with more splits them over several
    /// writes, linked. The operation keeps the pieces and the file alive
    /// until its completion is reaped; the result is the bytes written.
    pub fn writev_at(
        &mut self,
        file: &Rc<File>,
        pieces: Vec<Bytes>,
        offset: u64,
        link: Link,
    ) -> io::Result<OpId> {
        let iovecs = iovecs_of(&pieces);
        if iovecs.len() > IOVECS_MAX {
            return Err(io::Error::other("vectored write of too many iovecs"));
        }
        let entry = opcode::Writev::new(
            types::Fd(file.as_raw_fd()),
            iovecs.as_ptr(),
            iovecs.len() as u32,
        )
        .offset(offset)
        .build();
        let keep = Keep {
            file: Some(Rc::clone(file)),
            pieces,
            iovecs: Some(iovecs),
            ..Keep::default()
        };
        let op = self.push(entry, keep, link)?;
        #[cfg(test)]
        self.arm_fault(Fault::Write, op);
        Ok(op)
    }

    /// `fdatasync(file)`.
    pub fn fdatasync(&mut self, file: &Rc<File>, link: Link) -> io::Result<OpId> {
        let entry = opcode::Fsync::new(types::Fd(file.as_raw_fd()))
            .flags(types::FsyncFlags::DATASYNC)
            .build();
        let op = self.push(entry, Self::keep_file(file), link)?;
        #[cfg(test)]
        {
            self.arm_fault(Fault::Fdatasync, op);
            if self.faults.hold_syncs {
                self.faults.syncs.push(op);
            }
        }
        Ok(op)
    }

    /// A no-op (it completes with 0), for a step a test leaves out.
    pub fn nop(&mut self, link: Link) -> io::Result<OpId> {
        self.push(opcode::Nop::new().build(), Keep::default(), link)
    }

    /// `fsync(file)` (directories too).
    pub fn fsync(&mut self, file: &Rc<File>, link: Link) -> io::Result<OpId> {
        let entry = opcode::Fsync::new(types::Fd(file.as_raw_fd())).build();
        let op = self.push(entry, Self::keep_file(file), link)?;
        #[cfg(test)]
        self.arm_fault(Fault::Fsync, op);
        Ok(op)
    }

    /// Test hook: the next operation of kind `fault` runs, but reports
    /// `result` (`-errno`, or a short byte count) instead of the kernel's,
    /// as a failing disk would.
    #[cfg(test)]
    pub(crate) fn inject(&mut self, fault: Fault, result: i32) {
        self.faults.armed.push((fault, result));
    }

    /// Test hook: while `hold` is set, the completions of fdatasyncs
    /// issued meanwhile are held back, so they look in flight however fast
    /// the disk is (a slow fdatasync, made deterministic); the first `reap`
    /// after the hold ends reports them.
    #[cfg(test)]
    pub(crate) fn hold_syncs(&mut self, hold: bool) {
        self.faults.hold_syncs = hold;
    }

    #[cfg(test)]
    fn arm_fault(&mut self, fault: Fault, op: OpId) {
        if let Some(at) = self
            .faults
            .armed
            .iter()
            .position(|(kind, _)| *kind == fault)
        {
            let (_, result) = self.faults.armed.remove(at);
            self.faults.ops.push((op, result));
        }
    }

    /// `fallocate(file, mode 0, offset, len)`: reserves blocks (and extends
    /// the size) without writing them.
    pub fn fallocate(
        &mut self,
        file: &Rc<File>,
        offset: u64,
        len: u64,
        link: Link,
    ) -> io::Result<OpId> {
        let entry = opcode::Fallocate::new(types::Fd(file.as_raw_fd()), len)
            .offset(offset)
            .build();
        self.push(entry, Self::keep_file(file), link)
    }

    /// `fallocate(file, mode, offset, len)` (punching a hole, say).
    pub fn fallocate_mode(
        &mut self,
        file: &Rc<File>,
        mode: i32,
        offset: u64,
        len: u64,
        link: Link,
    ) -> io::Result<OpId> {
        let entry = opcode::Fallocate::new(types::Fd(file.as_raw_fd()), len)
            .offset(offset)
            .mode(mode)
            .build();
        self.push(entry, Self::keep_file(file), link)
    }

    /// `openat(AT_FDCWD, path, flags, mode)` (close-on-exec added): the
    /// result is the new descriptor, which [`adopt_file`] takes.
    pub fn openat(&mut self, path: CString, flags: i32, mode: u32) -> io::Result<OpId> {
        let entry = opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), path.as_ptr())
            .flags(flags | libc::O_CLOEXEC)
            .mode(mode)
            .build();
        let keep = Keep {
            path: Some(path),
            result_is_fd: true,
            ..Keep::default()
        };
        self.push(entry, keep, Link::None)
    }

    /// `unlinkat(AT_FDCWD, path, 0)`: removes a file (absolute path).
    pub fn unlinkat(&mut self, path: CString, link: Link) -> io::Result<OpId> {
        let entry = opcode::UnlinkAt::new(types::Fd(libc::AT_FDCWD), path.as_ptr()).build();
        let keep = Keep {
            path: Some(path),
            ..Keep::default()
        };
        self.push(entry, keep, link)
    }

    /// `rename(from, to)` (absolute paths).
    pub fn rename(&mut self, from: CString, to: CString, link: Link) -> io::Result<OpId> {
        let paths = Box::new((from, to));
        let entry = opcode::RenameAt::new(
            types::Fd(libc::AT_FDCWD),
            paths.0.as_ptr(),
            types::Fd(libc::AT_FDCWD),
            paths.1.as_ptr(),
        )
        .build();
        let keep = Keep {
            paths: Some(paths),
            ..Keep::default()
        };
        let op = self.push(entry, keep, link)?;
        #[cfg(test)]
        self.arm_fault(Fault::Rename, op);
        Ok(op)
    }

    /// `splice(from, from_offset, to, to_offset, len)`; an offset of `None`
    /// is a pipe or socket end (no offset).
    pub fn splice(
        &mut self,
        from: &Rc<File>,
        from_offset: Option<u64>,
        to: &Rc<File>,
        to_offset: Option<u64>,
        len: u32,
        link: Link,
    ) -> io::Result<OpId> {
        let offset = |offset: Option<u64>| offset.map_or(-1, |offset| offset as i64);
        let entry = opcode::Splice::new(
            types::Fd(from.as_raw_fd()),
            offset(from_offset),
            types::Fd(to.as_raw_fd()),
            offset(to_offset),
            len,
        )
        .build();
        let keep = Keep {
            file: Some(Rc::clone(from)),
            other_file: Some(Rc::clone(to)),
            ..Keep::default()
        };
        self.push(entry, keep, link)
    }

    fn keep_file(file: &Rc<File>) -> Keep {
        Keep {
            file: Some(Rc::clone(file)),
            ..Keep::default()
        }
    }

    /// Queues one entry, its slot keeping `keep` alive.
    fn push(&mut self, entry: squeue::Entry, keep: Keep, link: Link) -> io::Result<OpId> {
        self.reserve(1)?;
        let op = self.allocate(keep);
        let flags = match link {
            Link::None => squeue::Flags::empty(),
            Link::Next => squeue::Flags::IO_LINK,
            Link::Hard => squeue::Flags::IO_HARDLINK,
        };
        let entry = entry.user_data(op.0).flags(flags);
        // SAFETY: everything the entry points at (buffer, paths) and the
        // file descriptors it names are owned by the slot just allocated,
        // which lives until this operation's completion is reaped (`take`,
        // an abandoned completion, or `Drop`, which waits for all).
        let pushed = unsafe { self.uring.submission().push(&entry) };
        if pushed.is_err() {
            // `reserve` made room; a full queue here is a bug, but the slot
            // must not leak a keep-alive for an entry never queued.
            self.release(op);
            return Err(io::Error::other("submission queue full after reserve"));
        }
        self.in_flight += 1;
        Ok(op)
    }

    fn allocate(&mut self, keep: Keep) -> OpId {
        let index = if let Some(index) = self.free.pop() {
            index as usize
        } else {
            self.slots.push(Slot {
                generation: 0,
                state: SlotState::Free,
            });
            self.slots.len() - 1
        };
        let slot = &mut self.slots[index];
        debug_assert!(matches!(slot.state, SlotState::Free));
        slot.generation = slot.generation.wrapping_add(1);
        slot.state = SlotState::InFlight {
            keep,
            owned: None,
            abandoned: false,
            notify: false,
        };
        OpId(u64::from(slot.generation) << 32 | index as u64)
    }

    fn release(&mut self, op: OpId) {
        release(&mut self.slots, &mut self.free, op);
    }

    /// Hands queued entries to the kernel without waiting. Completions stay
    /// in the completion queue for whoever reaps or waits next.
    pub fn submit(&mut self) -> io::Result<()> {
        loop {
            match self.uring.submit() {
                Ok(_) => return Ok(()),
                Err(error) if error.raw_os_error() == Some(libc::EINTR) => {}
                Err(error) if error.raw_os_error() == Some(libc::EBUSY) => {
                    // The completion queue is full: make room and retry.
                    self.reap();
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Hands queued entries to the kernel, waits until `want` completions
    /// have come since the last wait returned (those already reaped by
    /// anyone count), then reaps what is ready.
    ///
    /// Panics if that many can never come (fewer operations in flight):
    /// that wait would never return.
    pub fn submit_and_wait(&mut self, want: usize) -> io::Result<()> {
        let missing = want.saturating_sub(self.reaped_unwaited);
        assert!(
            missing <= self.in_flight,
            "waiting for {missing} more completions with {} operations in flight would block forever",
            self.in_flight
        );
        loop {
            match self.uring.submit_and_wait(missing) {
                Ok(_) => break,
                Err(error) if error.raw_os_error() == Some(libc::EINTR) => {}
                Err(error) if error.raw_os_error() == Some(libc::EBUSY) => {
                    // The completion queue is full: make room and retry.
                    self.reap();
                }
                Err(error) => return Err(error),
            }
        }
        self.reap();
        if want > 0 {
            self.reaped_unwaited = 0;
        }
        Ok(())
    }

    /// Blocks until at least one more completion arrives, then reaps what
    /// is ready. For a caller waiting on its own operation inside a loop
    /// turn: the completions it reaps may be someone else's, so they stay
    /// counted as wake-ups for the next `submit_and_wait`.
    ///
    /// Panics with nothing in flight (the wait would never return).
    pub fn wait_for_completion(&mut self) -> io::Result<()> {
        assert!(
            self.in_flight > 0,
            "waiting for a completion with nothing in flight would block forever"
        );
        loop {
            match self.uring.submit_and_wait(1) {
                Ok(_) => break,
                Err(error) if error.raw_os_error() == Some(libc::EINTR) => {}
                Err(error) if error.raw_os_error() == Some(libc::EBUSY) => {
                    self.reap();
                }
                Err(error) => return Err(error),
            }
        }
        self.reap();
        Ok(())
    }

    /// Moves ready completions into their slots; returns how many.
    pub fn reap(&mut self) -> usize {
        let Self {
            uring,
            slots,
            free,
            in_flight,
            abandoned_in_flight,
            reaped_unwaited,
            ready,
            #[cfg(test)]
            faults,
        } = self;
        let mut reaped = 0;
        #[cfg(test)]
        let held = if faults.hold_syncs {
            Vec::new()
        } else {
            std::mem::take(&mut faults.held)
        };
        #[cfg(not(test))]
        let held: [(OpId, i32); 0] = [];
        let arrived = uring
            .completion()
            .filter(|entry| entry.user_data() != USER_DATA_CANCEL)
            .map(|entry| (OpId(entry.user_data()), entry.result()));
        for (op, result) in held.into_iter().chain(arrived) {
            #[cfg(test)]
            let result = {
                if faults.hold_syncs && faults.syncs.contains(&op) {
                    faults.held.push((op, result));
                    continue;
                }
                faults.syncs.retain(|sync| *sync != op);
                match faults.ops.iter().position(|(faulty, _)| *faulty == op) {
                    Some(at) => faults.ops.remove(at).1,
                    None => result,
                }
            };
            reaped += 1;
            *in_flight -= 1;
            *reaped_unwaited += 1;
            match complete(slots, free, op, result) {
                Completed::Report => ready.push(op),
                Completed::Kept => {}
                Completed::Abandoned => *abandoned_in_flight -= 1,
            }
        }
        reaped
    }

    /// The result of `op` if its completion was reaped (freeing its slot),
    /// `None` while it is in flight. The result is the kernel's: bytes
    /// transferred or `-errno`.
    pub fn take(&mut self, op: OpId) -> Option<i32> {
        let slot = &self.slots[op.slot()];
        assert_eq!(slot.generation, op.generation(), "take of a stale op");
        match slot.state {
            SlotState::Done { result, .. } => {
                self.release(op);
                Some(result)
            }
            SlotState::InFlight { .. } => None,
            SlotState::Free => panic!("take of a freed op"),
        }
    }

    /// Blocks until `op` completes and returns its result.
    pub fn wait(&mut self, op: OpId) -> io::Result<i32> {
        loop {
            if let Some(result) = self.take(op) {
                return Ok(result);
            }
            self.wait_for_completion()?;
        }
    }

    /// Gives up on an `openat`: the descriptor it returned (or returns
    /// later) is closed.
    pub fn abandon_open(&mut self, op: OpId) {
        match self.take(op) {
            Some(result) if result >= 0 => drop(adopt_file(result)),
            Some(_) => {}
            None => self.abandon(op),
        }
    }

    /// Gives up on `op`: its result is thrown away when it arrives, and
    /// what it owns stays alive until then.
    pub fn abandon(&mut self, op: OpId) {
        let slot = &mut self.slots[op.slot()];
        assert_eq!(slot.generation, op.generation(), "abandon of a stale op");
        match &mut slot.state {
            SlotState::InFlight { abandoned, .. } => {
                if !*abandoned {
                    *abandoned = true;
                    self.abandoned_in_flight += 1;
                }
            }
            SlotState::Done { .. } => self.release(op),
            SlotState::Free => panic!("abandon of a freed op"),
        }
    }
}

/// Iovecs over `pieces` in order, skipping empty ones and merging pieces
/// that sit back to back in memory (batches received together).
pub fn iovecs_of(pieces: &[Bytes]) -> Box<[libc::iovec]> {
    let mut iovecs: Vec<libc::iovec> = Vec::with_capacity(pieces.len());
    for piece in pieces.iter().filter(|piece| !piece.is_empty()) {
        if let Some(last) = iovecs.last_mut()
            && last.iov_base.cast::<u8>().wrapping_add(last.iov_len) == piece.as_ptr().cast_mut()
        {
            last.iov_len += piece.len();
            continue;
        }
        iovecs.push(libc::iovec {
            iov_base: piece.as_ptr().cast_mut().cast(),
            iov_len: piece.len(),
        });
    }
    iovecs.into_boxed_slice()
}

/// How many iovecs `pieces` need (see [`iovecs_of`]).
pub fn iovec_count(pieces: &[Bytes]) -> usize {
    let mut count = 0;
    let mut end: *const u8 = std::ptr::null();
    for piece in pieces.iter().filter(|piece| !piece.is_empty()) {
        if piece.as_ptr() != end {
            count += 1;
        }
        end = piece.as_ptr().wrapping_add(piece.len());
    }
    count
}

/// Takes ownership of the descriptor an `openat` completion returned.
pub fn adopt_file(fd: i32) -> File {
    assert!(fd >= 0, "adopt_file of an error result");
    // SAFETY: the kernel just created this descriptor for us (an openat
    // completion, taken once); nothing else owns it.
    File::from(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// What became of a completion.
enum Completed {
    /// Its result waits for `take`, and it asked to be reported through
    /// `drain_ready`.
    Report,
    /// Its result waits for `take`.
    Kept,
    /// It was abandoned: its slot is free again.
    Abandoned,
}

/// Records the completion of `op`: its keep-alives are dropped (the kernel
/// is done with them) and its result waits for `take`, or the slot is freed
/// at once if the op was abandoned.
fn complete(slots: &mut [Slot], free: &mut Vec<u32>, op: OpId, result: i32) -> Completed {
    let slot = &mut slots[op.slot()];
    assert_eq!(
        slot.generation,
        op.generation(),
        "completion for a stale slot"
    );
    let SlotState::InFlight {
        abandoned,
        notify,
        ref mut owned,
        ref keep,
    } = slot.state
    else {
        panic!("completion for an operation not in flight");
    };
    if abandoned {
        if keep.result_is_fd && result >= 0 {
            // No one will take this descriptor: close it.
            drop(adopt_file(result));
        }
        release(slots, free, op);
        Completed::Abandoned
    } else {
        let mut owned = owned.take();
        if let Some(Owned::Block(block)) = &mut owned
            && result > 0
        {
            let received = result as usize;
            assert!(
                received <= block.capacity() - block.len(),
                "a recv reported more bytes than it was given room for"
            );
            // SAFETY: the kernel wrote `received` bytes into the spare
            // capacity right after the block's length (the recv was given
            // that address and at most that room), so they are initialized.
            unsafe { block.set_len(block.len() + received) };
        }
        slot.state = SlotState::Done { result, owned };
        if notify {
            Completed::Report
        } else {
            Completed::Kept
        }
    }
}

fn release(slots: &mut [Slot], free: &mut Vec<u32>, op: OpId) {
    slots[op.slot()].state = SlotState::Free;
    free.push(op.slot() as u32);
}

impl Drop for Ring {
    fn drop(&mut self) {
        if self.in_flight == 0 {
            return;
        }
        // Cancel what can be cancelled (sockets, pipes), then wait for every
        // completion: the kernel may still be using the slots' buffers.
        let cancel = opcode::AsyncCancel2::new(types::CancelBuilder::any())
            .build()
            .user_data(USER_DATA_CANCEL);
        // SAFETY: a cancel request points at no memory.
        let _ = unsafe { self.uring.submission().push(&cancel) };
        while self.in_flight > 0 {
            if let Err(error) = self.submit_and_wait(1) {
                // Freeing the buffers now could let the kernel write into
                // freed memory: leaking them is the only safe way out.
                tracing::error!(%error, "io_uring wait failed at shutdown; leaking its buffers");
                std::mem::forget(std::mem::take(&mut self.slots));
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests;
