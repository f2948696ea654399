//! One TCP connection on a core: a receive buffer the ring fills, a send
//! queue the ring drains, and nothing else.
//!
//! ```text
//!  inbox:  [ consumed │ unread frames … │ free space for the next recv ]
//!          0          consumed          filled                      len
//!  outbox: bytes queued while a send is in flight; swapped in when it ends
//!  later:  what follows the outbox: file spans (stored batches, sent by
//!          splice file → pipe → socket) and the bytes queued after them
//! ```
//!
//! While a recv or send is in flight its buffer belongs to the ring (moved
//! in, handed back with the result), so the connection cannot touch it.

use std::fs::File;
use std::rc::Rc;

use crate::constants::FRAME_BYTES_MAX;
use crate::io::{OpId, Ring};
use crate::wire::{FrameLength, WireError, frame_length};

/// Initial receive buffer; it grows to hold the largest frame seen.
const INBOX_BYTES_INITIAL: usize = 64 * 1024;
/// The least a frugal recv asks for (see [`Connection::post_recv`]): room
/// for a peer message's header, or several small messages.
pub const FRUGAL_RECV_BYTES: usize = 4096;

/// Largest receive buffer: a whole AppendEntries (header plus batches).
pub const INBOX_BYTES_MAX: usize = 2 * FRAME_BYTES_MAX;

/// Bytes of a file to send without copying them into user space.
#[derive(Clone, Debug)]
pub struct FileSpan {
    /// The file (a duplicate descriptor: it stays valid whatever the log
    /// does meanwhile).
    pub file: Rc<File>,
    /// Offset of the first byte.
    pub offset: u64,
    /// Bytes to send.
    pub len: u64,
}

/// Something queued after the outbox.
#[derive(Debug)]
enum Later {
    Bytes(Vec<u8>),
    File(FileSpan),
}

/// A file span being spliced to the socket.
#[derive(Debug)]
pub struct FileSend {
    /// What is left of the span (offset advanced past what is in the pipe).
    pub span: FileSpan,
    /// Bytes in the pipe not yet in the socket.
    pub in_pipe: u64,
}

/// What the other end is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Accepted; its Hello not read yet.
    Handshake,
    /// A client.
    Client,
    /// An incoming peer connection (it sends us messages).
    PeerIn(u64),
    /// Our outgoing connection to a peer (we send it messages).
    PeerOut(u64),
}

/// A connection's state.
#[derive(Debug)]
pub struct Connection {
    /// The socket.
    pub socket: Rc<File>,
    /// What the other end is.
    pub role: Role,
    inbox: Option<Vec<u8>>,
    consumed: usize,
    filled: usize,
    /// The recv in flight.
    pub recv: Option<OpId>,
    outbox: Vec<u8>,
    later: std::collections::VecDeque<Later>,
    /// The file span being spliced out, if any.
    pub file_send: Option<FileSend>,
    spare: Option<Vec<u8>>,
    /// The send in flight and the bytes of its buffer not yet sent.
    pub send: Option<OpId>,
    sending: usize,
    /// Close once the outbox is flushed (after a refusal).
    pub close_after_flush: bool,
    /// Stop reading: closed by the peer, an error, or a refusal.
    pub closed: bool,
    /// Unread bytes the next step waits for (a frame and the bytes after
    /// it), when more than the next frame's header: what the next recv
    /// should bring.
    pub waiting_for: usize,
    /// Read only what the next step needs (see [`Connection::post_recv`]):
    /// set by a splicing follower while the batches it receives are large
    /// enough to splice.
    pub frugal: bool,
}

impl Connection {
    /// A connection over `socket`, with `buffered` bytes already read.
    pub fn new(socket: Rc<File>, role: Role, buffered: &[u8]) -> Self {
        let mut inbox = vec![0u8; INBOX_BYTES_INITIAL.max(buffered.len() * 2)];
        inbox[..buffered.len()].copy_from_slice(buffered);
        Self {
            socket,
            role,
            inbox: Some(inbox),
            consumed: 0,
            filled: buffered.len(),
            recv: None,
            outbox: Vec::new(),
            later: std::collections::VecDeque::new(),
            file_send: None,
            spare: None,
            send: None,
            sending: 0,
            close_after_flush: false,
            closed: false,
            waiting_for: 0,
            frugal: false,
        }
    }

    /// The unread bytes.
    pub fn unread(&self) -> &[u8] {
        match &self.inbox {
            Some(inbox) => &inbox[self.consumed..self.filled],
            None => &[],
        }
    }

    /// Marks `bytes` of the unread bytes as processed.
    pub fn consume(&mut self, bytes: usize) {
        assert!(self.consumed + bytes <= self.filled);
        self.consumed += bytes;
    }

    /// Bytes needed before the next frame (plus `trailing` bytes after it)
    /// can be processed, so the inbox can grow; errors for hostile sizes.
    pub fn need(&self, trailing: u64) -> Result<usize, WireError> {
        let unread = self.unread();
        let frame = match frame_length(unread)? {
            FrameLength::NeedHeader(need) => need,
            FrameLength::Complete { frame_bytes, .. } => frame_bytes,
        };
        let total = (frame as u64).saturating_add(trailing);
        if total > INBOX_BYTES_MAX as u64 {
            return Err(WireError::FrameTooLarge {
                bytes: total,
                limit: INBOX_BYTES_MAX,
            });
        }
        Ok(total as usize)
    }

    /// Posts a recv unless one is in flight, the connection is closed, or
    /// the inbox is with the ring. `want` is the number of unread bytes the
    /// next step needs (the inbox grows to hold them). With `frugal`, the
    /// recv takes only what `want` lacks (at least [`FRUGAL_RECV_BYTES`]),
    /// leaving what follows in the socket — for a follower that splices
    /// batch bytes socket → file, every byte read into the inbox is a byte
    /// copied.
    pub fn post_recv(
        &mut self,
        ring: &mut Ring,
        want: usize,
        frugal: bool,
    ) -> std::io::Result<Option<OpId>> {
        if self.recv.is_some() || self.closed {
            return Ok(None);
        }
        let Some(mut inbox) = self.inbox.take() else {
            return Ok(None);
        };
        // Compact: move unread bytes to the front.
        if self.consumed > 0 {
            inbox.copy_within(self.consumed..self.filled, 0);
            self.filled -= self.consumed;
            self.consumed = 0;
        }
        let wanted = want.max(self.filled + 1).max(INBOX_BYTES_INITIAL);
        if inbox.len() < wanted {
            inbox.resize(
                wanted.next_power_of_two().min(INBOX_BYTES_MAX.max(wanted)),
                0,
            );
        }
        let len_max = if frugal {
            want.saturating_sub(self.filled).max(FRUGAL_RECV_BYTES)
        } else {
            usize::MAX
        };
        let op = ring.recv(&self.socket, inbox, self.filled, len_max)?;
        self.recv = Some(op);
        Ok(Some(op))
    }

    /// Takes back the inbox after a recv completed with `result`; returns
    /// false when the stream ended or failed.
    pub fn recv_done(&mut self, result: i32, buffer: Option<Vec<u8>>) -> bool {
        self.recv = None;
        self.inbox = buffer;
        if result <= 0 {
            self.closed = true;
            return false;
        }
        self.filled += result as usize;
        true
    }

    /// Queues bytes to send.
    pub fn queue(&mut self, bytes: &[u8]) {
        match self.later.back_mut() {
            None => self.outbox.extend_from_slice(bytes),
            Some(Later::Bytes(tail)) => tail.extend_from_slice(bytes),
            Some(Later::File(_)) => self.later.push_back(Later::Bytes(bytes.to_vec())),
        }
    }

    /// Queues a file span to send after what is queued.
    pub fn queue_file(&mut self, span: FileSpan) {
        if span.len > 0 {
            self.later.push_back(Later::File(span));
        }
    }

    /// Bytes queued and not yet handed to the kernel (file spans included).
    pub fn queued(&self) -> usize {
        let later: u64 = self
            .later
            .iter()
            .map(|item| match item {
                Later::Bytes(bytes) => bytes.len() as u64,
                Later::File(span) => span.len,
            })
            .sum();
        self.outbox.len() + later as usize
    }

    /// When nothing is being sent and a file span is next, takes it out of
    /// the queue: the caller splices it (file → pipe → socket) and reports
    /// progress through `file_send`.
    pub fn next_file_span(&mut self) -> Option<&mut FileSend> {
        if self.send.is_some() || self.file_send.is_some() || !self.outbox.is_empty() {
            return None;
        }
        if let Some(Later::File(_)) = self.later.front() {
            let Some(Later::File(span)) = self.later.pop_front() else {
                unreachable!("checked above");
            };
            self.file_send = Some(FileSend { span, in_pipe: 0 });
            return self.file_send.as_mut();
        }
        None
    }

    /// Posts a send of the queued bytes unless a send (or a file span) is
    /// in flight.
    pub fn post_send(&mut self, ring: &mut Ring) -> std::io::Result<Option<OpId>> {
        if self.send.is_some() || self.file_send.is_some() {
            return Ok(None);
        }
        if self.outbox.is_empty()
            && let Some(Later::Bytes(_)) = self.later.front()
        {
            let Some(Later::Bytes(bytes)) = self.later.pop_front() else {
                unreachable!("checked above");
            };
            self.outbox = bytes;
        }
        if self.outbox.is_empty() {
            return Ok(None);
        }
        let mut buffer = self.spare.take().unwrap_or_default();
        buffer.clear();
        std::mem::swap(&mut buffer, &mut self.outbox);
        self.sending = buffer.len();
        let op = ring.send(&self.socket, buffer, 0, self.sending)?;
        self.send = Some(op);
        Ok(Some(op))
    }

    /// Takes back the send buffer; a short send puts the rest back in front
    /// of the queue. Returns false when the socket failed.
    pub fn send_done(&mut self, result: i32, buffer: Option<Vec<u8>>) -> bool {
        self.send = None;
        let Some(mut buffer) = buffer else {
            self.closed = true;
            return false;
        };
        if result < 0 {
            self.closed = true;
            self.outbox.clear();
            return false;
        }
        let sent = result as usize;
        if sent < self.sending {
            // Put the unsent tail in front of whatever was queued meanwhile.
            let mut rest = buffer[sent..self.sending].to_vec();
            rest.extend_from_slice(&self.outbox);
            self.outbox = rest;
        }
        buffer.clear();
        self.spare = Some(buffer);
        true
    }

    /// No operation is in flight: the connection can be dropped or handed
    /// to another core.
    pub fn idle(&self) -> bool {
        self.recv.is_none() && self.send.is_none() && self.file_send.is_none()
    }
}
