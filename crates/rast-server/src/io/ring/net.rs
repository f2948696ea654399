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

use bytes::{Bytes, BytesMut};
use nix::libc;

use super::{IOVECS_MAX, Keep, Link, OpId, Owned, Ring, SlotState, iovecs_of};

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

    /// Receives at most `len_max` bytes into the spare capacity of
    /// `block` (which must have some); `take_owned` returns the byte count
    /// (0 at end of stream) and the block, its length grown by the bytes
    /// received.
    pub fn recv_block(
        &mut self,
        socket: &Rc<File>,
        mut block: BytesMut,
        len_max: usize,
    ) -> io::Result<OpId> {
        let spare = block.spare_capacity_mut();
        assert!(!spare.is_empty(), "recv into a full block");
        assert!(len_max > 0, "recv of nothing");
        let len = u32::try_from(spare.len().min(len_max)).unwrap_or(u32::MAX);
        let address = spare.as_mut_ptr().cast::<u8>();
        let entry = opcode::Recv::new(types::Fd(socket.as_raw_fd()), address, len).build();
        self.push_notify(entry, Self::keep_file(socket), Some(Owned::Block(block)))
    }

    /// Sends `pieces` back to back with one `sendmsg` (at most
    /// [`IOVECS_MAX`] iovecs); the result is the bytes sent (maybe fewer:
    /// send the rest again). The operation keeps the pieces alive.
    pub fn send_pieces(&mut self, socket: &Rc<File>, pieces: Vec<Bytes>) -> io::Result<OpId> {
        let iovecs = iovecs_of(&pieces);
        if iovecs.is_empty() || iovecs.len() > IOVECS_MAX {
            return Err(io::Error::other("sendmsg of no or too many iovecs"));
        }
        // SAFETY: an all-zero msghdr is a valid empty one (no name, no
        // control data); the iovec fields are set below.
        let mut message: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        message.msg_iov = iovecs.as_ptr().cast_mut();
        message.msg_iovlen = iovecs.len();
        let entry = opcode::SendMsg::new(types::Fd(socket.as_raw_fd()), &raw const *message)
            .flags(libc::MSG_NOSIGNAL as u32)
            .build();
        let keep = Keep {
            file: Some(Rc::clone(socket)),
            pieces,
            iovecs: Some(iovecs),
            message: Some(message),
            ..Keep::default()
        };
        self.push_notify(entry, keep, None)
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
        self.push_notify(entry, Self::keep_file(eventfd), Some(Owned::Vec(buffer)))
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

    /// Reports `op` (any operation) through `drain_ready` when it
    /// completes — at once if its completion was already reaped.
    pub fn notify(&mut self, op: OpId) {
        let slot = &mut self.slots[op.slot()];
        assert_eq!(slot.generation, op.generation(), "notify of a stale op");
        match &mut slot.state {
            SlotState::InFlight { notify, .. } => *notify = true,
            SlotState::Done { .. } => self.ready.push(op),
            SlotState::Free => panic!("notify of a freed op"),
        }
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
    pub fn take_owned(&mut self, op: OpId) -> Option<(i32, Option<Owned>)> {
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
        owned: Option<Owned>,
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
        // does not move while the slot holds the Vec or the block: no other
        // handle of a block can grow into its spare capacity while this one
        // shares the allocation), into the keep's pieces, iovecs and message
        // header, the timespec box or nothing; the descriptors it names are kept open by the slot's
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
        let mut block = BytesMut::with_capacity(64);
        block.extend_from_slice(b">");
        let recv = ring.recv_block(&socket, block, usize::MAX).unwrap();
        while ring.in_flight() > 0 {
            ring.submit_and_wait(1).unwrap();
        }
        let (count, buffer) = ring.take_owned(recv).unwrap();
        assert_eq!(count, 4);
        let Some(Owned::Block(block)) = buffer else {
            panic!("the recv hands its block back");
        };
        // The received bytes follow what the block held; its length grew.
        assert_eq!(&block[..], b">ping");

        // Two pieces, one of them split from the same allocation as the
        // other: one sendmsg sends them in order.
        let mut answer = BytesMut::from(&b"pong!"[..]).freeze();
        let head = answer.split_to(2);
        let send = ring
            .send_pieces(&socket, vec![head, answer.slice(..2)])
            .unwrap();
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
