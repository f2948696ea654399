//! Event-loop operations: accept, recv, send, splice from a socket, timeouts
//! and eventfd reads, each reported through [`Ring::drain_ready`].
//!
//! A buffer the kernel fills or drains is *moved* into the operation and
//! handed back with its result by [`Ring::take_owned`], so no one can touch
//! it while the kernel may ([`Vec`]'s heap block does not move when the
//! `Vec` does). Sockets and eventfds are held as `Rc<File>` like files: the
//! operation keeps the descriptor open until its completion is reaped.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Duration;

use io_uring::{opcode, squeue, types};

use super::{Keep, Link, OpId, Ring, SlotState};

impl Ring {
    /// Accepts one connection on `listener`; the result is the new socket's
    /// descriptor (close-on-exec) or `-errno`.
    pub fn accept(&mut self, listener: &Rc<File>) -> io::Result<OpId> {
        let entry = opcode::Accept::new(
            types::Fd(listener.as_raw_fd()),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
        .flags(nix::libc::SOCK_CLOEXEC)
        .build();
        self.push_notify(entry, Self::keep_file(listener), None)
    }

    /// Receives at most `len_max` bytes into `buffer[start..]`;
    /// `take_owned` returns the byte count (0 at end of stream) and the
    /// buffer.
    pub fn recv(
        &mut self,
        socket: &Rc<File>,
        mut buffer: Vec<u8>,
        start: usize,
        len_max: usize,
    ) -> io::Result<OpId> {
        assert!(start < buffer.len(), "recv into a full buffer");
        assert!(len_max > 0, "recv of nothing");
        let space = &mut buffer[start..];
        let len = u32::try_from(space.len().min(len_max)).unwrap_or(u32::MAX);
        let entry =
            opcode::Recv::new(types::Fd(socket.as_raw_fd()), space.as_mut_ptr(), len).build();
        self.push_notify(entry, Self::keep_file(socket), Some(buffer))
    }

    /// Sends `buffer[start..end]`; `take_owned` returns the bytes sent (maybe
    /// fewer: send the rest again) and the buffer.
    pub fn send(
        &mut self,
        socket: &Rc<File>,
        buffer: Vec<u8>,
        start: usize,
        end: usize,
    ) -> io::Result<OpId> {
        let bytes = &buffer[start..end];
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        let entry = opcode::Send::new(types::Fd(socket.as_raw_fd()), bytes.as_ptr(), len)
            .flags(nix::libc::MSG_NOSIGNAL)
            .build();
        self.push_notify(entry, Self::keep_file(socket), Some(buffer))
    }

    /// Connects `socket` to `address`; the result is 0 or `-errno`.
    pub fn connect(
        &mut self,
        socket: &Rc<File>,
        address: std::net::SocketAddr,
    ) -> io::Result<OpId> {
        use nix::sys::socket::SockaddrLike;
        let address = Box::new(nix::sys::socket::SockaddrStorage::from(address));
        let entry = opcode::Connect::new(
            types::Fd(socket.as_raw_fd()),
            address.as_ptr(),
            address.len(),
        )
        .build();
        let keep = Keep {
            file: Some(Rc::clone(socket)),
            address: Some(address),
            ..Keep::default()
        };
        self.push_notify(entry, keep, None)
    }

    /// Reads 8 bytes from an eventfd (a cross-core wake-up).
    pub fn read_eventfd(&mut self, eventfd: &Rc<File>) -> io::Result<OpId> {
        let mut buffer = vec![0u8; 8];
        let entry =
            opcode::Read::new(types::Fd(eventfd.as_raw_fd()), buffer.as_mut_ptr(), 8).build();
        self.push_notify(entry, Self::keep_file(eventfd), Some(buffer))
    }

    /// Completes with `-ETIME` after `after`: the loop's tick.
    pub fn timeout(&mut self, after: Duration) -> io::Result<OpId> {
        let timespec = Box::new(
            types::Timespec::new()
                .sec(after.as_secs())
                .nsec(after.subsec_nanos()),
        );
        let entry = opcode::Timeout::new(&raw const *timespec).build();
        let keep = Keep {
            timespec: Some(timespec),
            ..Keep::default()
        };
        self.push_notify(entry, keep, None)
    }

    /// [`Ring::splice`], reported through `drain_ready`: socket → pipe
    /// (both offsets `None`) or pipe → file (at `to_offset`).
    pub fn splice_notify(
        &mut self,
        from: &Rc<File>,
        to: &Rc<File>,
        to_offset: Option<u64>,
        len: u32,
    ) -> io::Result<OpId> {
        let op = self.splice(from, None, to, to_offset, len, Link::None)?;
        if let SlotState::InFlight { notify, .. } = &mut self.slots[op.slot()].state {
            *notify = true;
        }
        Ok(op)
    }

    /// Splices `len` bytes of `file` from `offset` into a pipe, reported
    /// through `drain_ready` (the first leg of sending stored bytes).
    pub fn splice_at(
        &mut self,
        file: &Rc<File>,
        offset: u64,
        pipe: &Rc<File>,
        len: u32,
    ) -> io::Result<OpId> {
        let op = self.splice(file, Some(offset), pipe, None, len, Link::None)?;
        if let SlotState::InFlight { notify, .. } = &mut self.slots[op.slot()].state {
            *notify = true;
        }
        Ok(op)
    }

    /// Asks the kernel to cancel `op` (a recv on a connection being closed
    /// or handed off); its completion still arrives and must be taken.
    pub fn cancel(&mut self, op: OpId) {
        let entry = opcode::AsyncCancel::new(op.0)
            .build()
            .user_data(super::USER_DATA_CANCEL);
        if self.reserve(1).is_ok() {
            // SAFETY: a cancel request points at no memory.
            let _ = unsafe { self.uring.submission().push(&entry) };
        }
    }

    /// The result and the owned buffer of a completed event-loop op (freeing
    /// its slot); `None` while it is in flight.
    pub fn take_owned(&mut self, op: OpId) -> Option<(i32, Option<Vec<u8>>)> {
        let slot = &mut self.slots[op.slot()];
        assert_eq!(slot.generation, op.generation(), "take of a stale op");
        match &mut slot.state {
            SlotState::Done { result, owned } => {
                let answer = (*result, owned.take());
                self.release(op);
                Some(answer)
            }
            SlotState::InFlight { .. } => None,
            SlotState::Free => panic!("take of a freed op"),
        }
    }

    /// Moves the ids of completed event-loop ops into `into` (in completion
    /// order). Their results wait for `take_owned`.
    pub fn drain_ready(&mut self, into: &mut Vec<OpId>) {
        into.append(&mut self.ready);
    }

    /// Queues an entry whose completion is reported by `drain_ready`, its
    /// slot owning `keep` and `owned` until then.
    fn push_notify(
        &mut self,
        entry: squeue::Entry,
        keep: Keep,
        owned: Option<Vec<u8>>,
    ) -> io::Result<OpId> {
        // Allocate the slot first so the owned buffer sits in it before the
        // kernel can see the entry.
        self.reserve(1)?;
        let op = self.allocate(keep);
        if let SlotState::InFlight {
            owned: slot_owned,
            notify,
            ..
        } = &mut self.slots[op.slot()].state
        {
            *slot_owned = owned;
            *notify = true;
        }
        let entry = entry.user_data(op.0);
        // SAFETY: the entry points into the owned buffer (whose heap block
        // does not move while the slot holds the Vec), the timespec box or
        // nothing; the descriptors it names are kept open by the slot's
        // `keep`. The slot lives until the completion is reaped.
        let pushed = unsafe { self.uring.submission().push(&entry) };
        if pushed.is_err() {
            self.release(op);
            return Err(io::Error::other("submission queue full after reserve"));
        }
        self.in_flight += 1;
        Ok(op)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::OwnedFd;

    /// A socket pair through the ring: send, recv, and an accept, each
    /// reported once by `drain_ready`, with the buffers handed back.
    #[test]
    fn accept_recv_send_round_trip() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let listener = Rc::new(File::from(OwnedFd::from(listener)));
        let mut ring = Ring::new().unwrap();
        let accept = ring.accept(&listener).unwrap();
        let mut client = TcpStream::connect(address).unwrap();
        ring.submit_and_wait(1).unwrap();
        let mut ready = Vec::new();
        ring.drain_ready(&mut ready);
        assert_eq!(ready, vec![accept]);
        let (fd, _) = ring.take_owned(accept).unwrap();
        assert!(fd >= 0, "accept failed: {fd}");
        // SAFETY: the kernel just gave us this descriptor; we own it.
        let socket = Rc::new(unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) });

        client.write_all(b"ping").unwrap();
        let recv = ring.recv(&socket, vec![0u8; 64], 0, usize::MAX).unwrap();
        while ring.in_flight() > 0 {
            ring.submit_and_wait(1).unwrap();
        }
        let (count, buffer) = ring.take_owned(recv).unwrap();
        assert_eq!(count, 4);
        assert_eq!(&buffer.unwrap()[..4], b"ping");

        let send = ring.send(&socket, b"pong!".to_vec(), 0, 4).unwrap();
        while ring.in_flight() > 0 {
            ring.submit_and_wait(1).unwrap();
        }
        assert_eq!(ring.take_owned(send).unwrap().0, 4);
        let mut answer = [0u8; 4];
        client.read_exact(&mut answer).unwrap();
        assert_eq!(&answer, b"pong");
    }

    /// A timeout completes with -ETIME and is reported.
    #[test]
    fn timeout_fires() {
        let mut ring = Ring::new().unwrap();
        let op = ring.timeout(Duration::from_millis(1)).unwrap();
        ring.submit_and_wait(1).unwrap();
        let mut ready = Vec::new();
        ring.drain_ready(&mut ready);
        assert_eq!(ready, vec![op]);
        assert_eq!(ring.take_owned(op).unwrap().0, -nix::libc::ETIME);
    }
}
