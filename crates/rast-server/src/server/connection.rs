//! One TCP connection on a core: a receive block the ring fills, a send
//! queue the ring drains, and nothing else.
//!
//! ```text
//!  inbox (one block of memory, shared):
//!   [ frames already taken ··· │ unread │ spare capacity: the next recv ]
//!     (each owned by the batch,   ▲
//!      write or send holding it)  consumed / taken from here
//!
//!  send queue:  [ piece │ piece │ file span │ piece … ]  + tail (small frames, coalesced)
//!               ▲ one sendmsg gathers the pieces at the front; a file span
//!                 goes file → pipe → socket by splice
//! ```
//!
//! Received bytes stay where the kernel put them: a frame is *taken* off
//! the front of the block ([`Connection::take`]) as a handle on the same
//! memory, which the caller stamps in place and hands on (to the log file's
//! vectored write, to every peer's send) without copying it. The block is
//! freed when the last handle goes. When the next step needs more room than
//! the block has left, the connection starts a new block, and only the
//! unread bytes — the start of a frame that did not fit — are copied into
//! it; `Connection::copied` counts them. A connection that receives large
//! frames starts a fresh block at a frame boundary instead, so in the
//! steady state nothing is copied.
//!
//! While a recv is in flight the block belongs to the ring (moved in,
//! handed back with the result), so the connection cannot touch it; a send
//! in flight holds handles on the pieces it sends.
//!
//! # With TLS
//!
//! A TLS connection ([`Connection::with_tls`]) puts a rustls session
//! between the socket and the same inbox and send queue:
//!
//! ```text
//!  socket ── recv ──► cipher block ── decrypt ──► inbox (frames as above)
//!  send queue ── encrypt ──► ciphertext ── one send ──► socket
//! ```
//!
//! The recv goes into a ciphertext block of the connection's own, so the
//! inbox never leaves it; frames are taken from the decrypted bytes as
//! without TLS. File spans cannot be encrypted by the kernel here (no
//! kernel TLS), so callers give a TLS connection bytes, not spans
//! (`Connection::queue_file` reads a span that arrives anyway).

use std::collections::VecDeque;
use std::fs::File;
use std::rc::Rc;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::constants::TLS_RECV_BYTES;
use crate::constants::{
    FRAME_BYTES_LARGE, FRUGAL_RECV_BYTES, INBOX_BLOCK_BYTES_MAX, INBOX_BYTES_INITIAL,
    INBOX_BYTES_MAX, RECV_ROOM_MIN, SEND_BYTES_MAX,
};
use crate::constants::{HANDSHAKE_BYTES_MAX, IOVECS_MAX};
use crate::io::ring::Owned;
use crate::io::{OpId, Ring};
use crate::wire::{FrameLength, WireError, frame_length};

/// Bytes of a file to send without copying them into user space.
#[derive(Clone, Debug)]
pub struct FileSpan {
    /// The file (it stays open whatever the log does meanwhile).
    pub file: Rc<File>,
    /// Offset of the first byte.
    pub offset: u64,
    /// Bytes to send.
    pub len: u64,
}

/// Something queued to send.
#[derive(Debug)]
enum Out {
    /// Bytes in memory: a small frame, or a shared piece of a batch.
    Bytes(Bytes),
    /// Bytes of a file.
    File(FileSpan),
}

impl Out {
    #[cfg(test)]
    fn len(&self) -> usize {
        match self {
            Out::Bytes(bytes) => bytes.len(),
            Out::File(span) => span.len as usize,
        }
    }
}

/// A file span being spliced to the socket.
#[derive(Debug)]
pub struct FileSend {
    /// What is left of the span (offset advanced past what is in the pipe).
    pub span: FileSpan,
    /// Bytes in the pipe not yet in the socket.
    pub in_pipe: u64,
}

/// What a client may do: its role, from the credential its handshake
/// presented (see `Shard::process_hello`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    /// Read, tail, get and status.
    ReadOnly,
    /// And append and write keys.
    ReadWrite,
    /// And administration: membership, leadership transfer, snapshots.
    Admin,
}

/// What the other end is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Accepted; its Hello not read yet.
    Handshake,
    /// A client, with what it may do.
    Client(Access),
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
    /// The receive block: unread bytes, then spare capacity. `None` while
    /// a recv is in flight.
    inbox: Option<BytesMut>,
    /// Size of the next receive block.
    block_bytes: usize,
    /// The size of the last message seen: at a message boundary the block
    /// keeps room for at least that much.
    expected: usize,
    /// The recv in flight.
    pub recv: Option<OpId>,
    /// Small frames queued since the last piece or span (coalesced).
    tail: BytesMut,
    /// What to send, in order, after `tail` is moved in.
    queue: VecDeque<Out>,
    /// Bytes in `queue` and `tail`.
    queued: usize,
    /// The file span being spliced out, if any.
    pub file_send: Option<FileSend>,
    /// The send in flight.
    pub send: Option<OpId>,
    /// Bytes handed to the send in flight.
    sending: usize,
    /// Unread bytes copied into a new block (frames that straddled two
    /// blocks) since the counter was last taken.
    copied: u64,
    /// Close once the outbox is flushed (after a refusal).
    pub close_after_flush: bool,
    /// Stop reading: closed by the peer, an error, or a refusal.
    pub closed: bool,
    /// Unread bytes the next step waits for (a frame and the bytes after
    /// it), when more than the next frame's header: what the next recv
    /// should bring.
    pub waiting_for: usize,
    /// Read only what the next step needs (see [`Connection::post_recv`]):
    /// set while the frames on the connection are large
    /// ([`Connection::read_frames_of`]).
    pub frugal: bool,
    /// The TLS session and its ciphertext buffers, if the connection is
    /// encrypted.
    tls: Option<Box<TlsLayer>>,
}

/// A TLS session over a connection (see the module docs).
#[derive(Debug)]
struct TlsLayer {
    session: rustls::Connection,
    /// The ciphertext receive block; `None` while a recv is in flight.
    block: Option<BytesMut>,
    /// Ciphertext not yet handed to a send.
    out: BytesMut,
    /// Ciphertext of the send in flight.
    sending: Bytes,
}

impl TlsLayer {
    /// Moves what the session has to send (records, handshake, alerts)
    /// into `out`; returns how many bytes it added.
    fn take_ciphertext(&mut self) -> usize {
        let before = self.out.len();
        while self.session.wants_write() {
            if self
                .session
                .write_tls(&mut (&mut self.out).writer())
                .is_err()
            {
                break;
            }
        }
        self.out.len() - before
    }
}

impl Connection {
    /// A connection over `socket`, with `buffered` bytes already read (a
    /// handed-off connection's; copied into its first block and counted).
    pub fn new(socket: Rc<File>, role: Role, buffered: &[u8]) -> Self {
        // Before its handshake a connection gets a block as small as a
        // Hello: nothing it claims makes it larger.
        let first = if role == Role::Handshake {
            HANDSHAKE_BYTES_MAX
        } else {
            INBOX_BYTES_INITIAL
        };
        let mut inbox = BytesMut::with_capacity(first.max(buffered.len() * 2));
        inbox.extend_from_slice(buffered);
        Self {
            socket,
            role,
            inbox: Some(inbox),
            block_bytes: INBOX_BYTES_INITIAL,
            expected: 0,
            recv: None,
            tail: BytesMut::new(),
            queue: VecDeque::new(),
            queued: 0,
            file_send: None,
            send: None,
            sending: 0,
            copied: buffered.len() as u64,
            close_after_flush: false,
            closed: false,
            waiting_for: 0,
            frugal: false,
            tls: None,
        }
    }

    /// A connection encrypted by `session` (a server session for an
    /// accepted socket, a client one for a dialed link), with `buffered`
    /// plaintext already decrypted (a handed-off connection's).
    pub fn with_tls(
        socket: Rc<File>,
        role: Role,
        buffered: &[u8],
        session: rustls::Connection,
    ) -> Self {
        let mut connection = Self::new(socket, role, buffered);
        connection.tls = Some(Box::new(TlsLayer {
            session,
            block: Some(BytesMut::with_capacity(TLS_RECV_BYTES)),
            out: BytesMut::new(),
            sending: Bytes::new(),
        }));
        connection
    }

    /// The TLS session, if the connection is encrypted.
    pub fn tls(&self) -> Option<&rustls::Connection> {
        self.tls.as_ref().map(|layer| &layer.session)
    }

    /// Takes the TLS session out (to hand the connection to another core).
    pub fn take_tls(&mut self) -> Option<rustls::Connection> {
        self.tls.take().map(|layer| layer.session)
    }

    /// The unread bytes.
    pub fn unread(&self) -> &[u8] {
        self.inbox.as_deref().unwrap_or_default()
    }

    /// Marks `bytes` of the unread bytes as processed.
    pub fn consume(&mut self, bytes: usize) {
        let inbox = self.inbox.as_mut().expect("unread bytes are in the inbox");
        assert!(bytes <= inbox.len());
        inbox.advance(bytes);
    }

    /// Takes the first `bytes` unread bytes as a handle on the same memory:
    /// no copy. The caller may change them (stamp a batch) before sharing.
    pub fn take(&mut self, bytes: usize) -> BytesMut {
        let inbox = self.inbox.as_mut().expect("unread bytes are in the inbox");
        assert!(bytes <= inbox.len());
        inbox.split_to(bytes)
    }

    /// Tells the connection the size of the message just seen (a request
    /// and its batch, a peer message and its batches). While messages are
    /// large ([`FRAME_BYTES_LARGE`] or more) recvs stop at each message's
    /// end (frugal), and at a message boundary a block keeps room for one
    /// as large as this: the next message then lands whole in one block,
    /// and nothing is copied. (A splicing follower also leaves the batch
    /// bytes in the socket this way.) Small messages are read greedily,
    /// many per recv.
    pub fn read_frames_of(&mut self, bytes: usize) {
        self.frugal = bytes >= FRAME_BYTES_LARGE;
        self.expected = bytes.min(INBOX_BYTES_MAX);
    }

    /// Bytes copied in user space since the last call (frames that
    /// straddled two receive blocks, bytes a handed-off connection brought).
    pub fn take_copied(&mut self) -> u64 {
        std::mem::take(&mut self.copied)
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
    /// next step needs. With `frugal`, the recv takes only what `want`
    /// lacks (at least [`FRUGAL_RECV_BYTES`]), leaving what follows in the
    /// socket — for a follower that splices batch bytes socket → file,
    /// every byte read into the inbox is a byte it must write itself.
    ///
    /// When the block has too little room left, a new one is started (see
    /// the module docs); only the unread bytes move, and are counted.
    pub fn post_recv(
        &mut self,
        ring: &mut Ring,
        want: usize,
        frugal: bool,
    ) -> std::io::Result<Option<OpId>> {
        if self.recv.is_some() || self.closed {
            return Ok(None);
        }
        if let Some(layer) = self.tls.as_mut() {
            // Decrypted bytes wait in the inbox: no more than the next step
            // may need (a Hello before the handshake).
            let limit = if self.role == Role::Handshake {
                HANDSHAKE_BYTES_MAX
            } else {
                INBOX_BYTES_MAX
            };
            let unread = self.inbox.as_ref().map_or(0, BytesMut::len);
            if unread >= limit.max(want) {
                return Ok(None);
            }
            let Some(mut block) = layer.block.take() else {
                return Ok(None);
            };
            block.clear();
            block.reserve(TLS_RECV_BYTES);
            return match ring.recv_block(&self.socket, block, TLS_RECV_BYTES) {
                Ok(op) => {
                    self.recv = Some(op);
                    Ok(Some(op))
                }
                Err(error) => {
                    layer.block = Some(BytesMut::new());
                    Err(error)
                }
            };
        }
        let Some(mut inbox) = self.inbox.take() else {
            return Ok(None);
        };
        let unread = inbox.len();
        let lacking = want.saturating_sub(unread);
        let mut room_min = if lacking > 0 {
            lacking
        } else if frugal {
            FRUGAL_RECV_BYTES
        } else {
            RECV_ROOM_MIN
        };
        if unread == 0 {
            // At a frame boundary a new block costs no copy: make sure the
            // next frame, if it is as large as the last, fits whole.
            room_min = room_min.max(self.expected.min(INBOX_BYTES_MAX));
        }
        if inbox.capacity() - unread < room_min {
            let size = (unread + room_min).max(self.block_bytes);
            let mut block = BytesMut::with_capacity(size);
            block.extend_from_slice(&inbox);
            self.copied += unread as u64;
            self.block_bytes = (self.block_bytes * 2).min(INBOX_BLOCK_BYTES_MAX);
            inbox = block;
        }
        let len_max = if frugal {
            lacking.max(FRUGAL_RECV_BYTES)
        } else {
            usize::MAX
        };
        match ring.recv_block(&self.socket, inbox, len_max) {
            Ok(op) => {
                self.recv = Some(op);
                Ok(Some(op))
            }
            Err(error) => {
                // The block went with the failed submission; start afresh
                // (the connection is closed by the caller).
                self.inbox = Some(BytesMut::new());
                Err(error)
            }
        }
    }

    /// Takes back the inbox after a recv completed with `result`; returns
    /// false when the stream ended or failed.
    pub fn recv_done(&mut self, result: i32, buffer: Option<Owned>) -> bool {
        self.recv = None;
        if self.tls.is_some() {
            return self.tls_received(result, buffer);
        }
        self.inbox = match buffer {
            Some(Owned::Block(block)) => Some(block),
            _ => Some(BytesMut::new()),
        };
        if result <= 0 {
            self.closed = true;
            return false;
        }
        true
    }

    /// Decrypts a TLS recv's ciphertext into the inbox; queues what the
    /// session has to say (handshake messages, alerts).
    fn tls_received(&mut self, result: i32, buffer: Option<Owned>) -> bool {
        let layer = self.tls.as_mut().expect("a TLS connection");
        let block = match buffer {
            Some(Owned::Block(block)) => block,
            _ => BytesMut::new(),
        };
        if result <= 0 {
            layer.block = Some(block);
            self.closed = true;
            return false;
        }
        let inbox = self.inbox.as_mut().expect("a TLS inbox stays here");
        let mut cipher = &block[..];
        let mut ok = true;
        while ok && !cipher.is_empty() {
            if layer.session.read_tls(&mut cipher).is_err() {
                ok = false;
                break;
            }
            match layer.session.process_new_packets() {
                Ok(_) => ok = drain_plaintext(&mut layer.session, inbox),
                Err(error) => {
                    tracing::debug!(%error, "TLS error; closing the connection");
                    ok = false;
                }
            }
        }
        // Whatever the session must send (handshake, alert), even when
        // closing.
        self.queued += layer.take_ciphertext();
        layer.block = Some(block);
        if !ok {
            self.close_after_flush = true;
            self.closed = self.queued == 0;
        }
        ok
    }

    /// Moves the plaintext at the front of the queue into the TLS session
    /// and its ciphertext into `out`.
    fn tls_encrypt(&mut self) {
        self.seal_tail();
        let layer = self.tls.as_mut().expect("a TLS connection");
        while let Some(Out::Bytes(front)) = self.queue.front_mut() {
            // rustls refuses only past its buffer limit: the rest waits.
            let written: usize =
                std::io::Write::write(&mut layer.session.writer(), front).unwrap_or_default();
            self.queued -= written;
            if written < front.len() {
                front.advance(written);
                if written == 0 {
                    break;
                }
            } else {
                self.queue.pop_front();
            }
            self.queued += layer.take_ciphertext();
        }
    }

    /// Queues bytes to send (a response, a message header): copied into
    /// the tail, where small frames are coalesced.
    pub fn queue(&mut self, bytes: &[u8]) {
        self.tail.extend_from_slice(bytes);
        self.queued += bytes.len();
    }

    /// Queues a shared piece (batch bytes) to send after what is queued,
    /// without copying it.
    pub fn queue_shared(&mut self, piece: Bytes) {
        if piece.is_empty() {
            return;
        }
        self.seal_tail();
        self.queued += piece.len();
        self.queue.push_back(Out::Bytes(piece));
    }

    /// Queues a file span to send after what is queued. A TLS connection
    /// reads it (a pread on the core's thread: its callers give it bytes
    /// instead, see the module docs).
    pub fn queue_file(&mut self, span: FileSpan) {
        if span.len == 0 {
            return;
        }
        if self.tls.is_some() {
            let mut bytes = vec![0; span.len as usize];
            match std::os::unix::fs::FileExt::read_exact_at(&*span.file, &mut bytes, span.offset) {
                Ok(()) => self.queue_shared(Bytes::from(bytes)),
                Err(error) => {
                    tracing::warn!(%error, "reading a file span for a TLS send; closing");
                    self.closed = true;
                }
            }
            return;
        }
        self.seal_tail();
        self.queued += span.len as usize;
        self.queue.push_back(Out::File(span));
    }

    /// Moves the coalesced small frames into the queue as one piece.
    fn seal_tail(&mut self) {
        if !self.tail.is_empty() {
            let piece = self.tail.split().freeze();
            self.queue.push_back(Out::Bytes(piece));
        }
    }

    /// Bytes queued and not yet sent (file spans included; the send in
    /// flight too).
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// When nothing is being sent and a file span is next, takes it out of
    /// the queue: the caller splices it (file → pipe → socket) and reports
    /// progress through `file_send`.
    pub fn next_file_span(&mut self) -> Option<&mut FileSend> {
        if self.send.is_some() || self.file_send.is_some() {
            return None;
        }
        if let Some(Out::File(_)) = self.queue.front() {
            let Some(Out::File(span)) = self.queue.pop_front() else {
                unreachable!("checked above");
            };
            self.queued -= span.len as usize;
            self.file_send = Some(FileSend { span, in_pipe: 0 });
            return self.file_send.as_mut();
        }
        None
    }

    /// Posts one gathered send of the pieces at the front of the queue
    /// unless a send (or a file span) is in flight.
    pub fn post_send(&mut self, ring: &mut Ring) -> std::io::Result<Option<OpId>> {
        if self.send.is_some() || self.file_send.is_some() {
            return Ok(None);
        }
        if self.tls.is_some() {
            self.tls_encrypt();
            let layer = self.tls.as_mut().expect("a TLS connection");
            if layer.out.is_empty() {
                return Ok(None);
            }
            let piece = layer.out.split().freeze();
            layer.sending = piece.clone();
            let op = ring.send_pieces(&self.socket, vec![piece])?;
            self.sending = layer.sending.len();
            self.send = Some(op);
            return Ok(Some(op));
        }
        if matches!(self.queue.front(), None | Some(Out::Bytes(_))) {
            self.seal_tail();
        }
        let mut pieces = Vec::new();
        let mut bytes = 0;
        for out in &self.queue {
            let Out::Bytes(piece) = out else {
                break;
            };
            if pieces.len() == IOVECS_MAX || (bytes > 0 && bytes + piece.len() > SEND_BYTES_MAX) {
                break;
            }
            bytes += piece.len();
            pieces.push(piece.clone());
        }
        if pieces.is_empty() {
            return Ok(None);
        }
        let op = ring.send_pieces(&self.socket, pieces)?;
        self.sending = bytes;
        self.send = Some(op);
        Ok(Some(op))
    }

    /// Takes back the send's result: what was sent leaves the queue (a
    /// piece sent in part keeps its rest at the front). Returns false when
    /// the socket failed.
    pub fn send_done(&mut self, result: i32) -> bool {
        self.send = None;
        if result < 0 {
            self.closed = true;
            self.queue.clear();
            self.tail.clear();
            self.queued = 0;
            return false;
        }
        let mut sent = (result as usize).min(self.sending);
        self.queued -= sent;
        if let Some(layer) = self.tls.as_mut() {
            // Ciphertext sent in part: the rest goes before anything newer.
            let sending = std::mem::take(&mut layer.sending);
            if sent < sending.len() {
                let mut rest = BytesMut::from(&sending[sent..]);
                rest.extend_from_slice(&layer.out);
                layer.out = rest;
            }
            return true;
        }
        while sent > 0 {
            let Some(Out::Bytes(front)) = self.queue.front_mut() else {
                unreachable!("a send takes pieces from the front");
            };
            if front.len() > sent {
                front.advance(sent);
                break;
            }
            sent -= front.len();
            self.queue.pop_front();
        }
        true
    }

    /// Whether nothing is left to send: no queued bytes, nothing in flight.
    pub fn flushed(&self) -> bool {
        self.queued == 0 && self.send.is_none()
    }

    /// No operation is in flight: the connection can be dropped or handed
    /// to another core.
    pub fn idle(&self) -> bool {
        self.recv.is_none() && self.send.is_none() && self.file_send.is_none()
    }

    /// Bytes of the queue's front item (tests).
    #[cfg(test)]
    fn front_len(&self) -> Option<usize> {
        self.queue.front().map(Out::len)
    }
}

/// Reads the session's decrypted bytes into the inbox; false when the
/// other end closed the session.
fn drain_plaintext(session: &mut rustls::Connection, inbox: &mut BytesMut) -> bool {
    const CHUNK: usize = 16 * 1024;
    loop {
        let start = inbox.len();
        inbox.resize(start + CHUNK, 0);
        let read = std::io::Read::read(&mut session.reader(), &mut inbox[start..]);
        match read {
            Ok(0) => {
                inbox.truncate(start);
                return false;
            }
            Ok(read) => inbox.truncate(start + read),
            Err(error) => {
                inbox.truncate(start);
                // WouldBlock: nothing more decrypted for now.
                return error.kind() == std::io::ErrorKind::WouldBlock;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::OwnedFd;

    /// A connected pair: our end as a `Connection`, the other as a stream.
    fn pair(role: Role) -> (Connection, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let other = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (ours, _) = listener.accept().unwrap();
        let socket = Rc::new(File::from(OwnedFd::from(ours)));
        (Connection::new(socket, role, &[]), other)
    }

    fn run(ring: &mut Ring, connection: &mut Connection) {
        while ring.in_flight() > 0 {
            ring.submit_and_wait(1).unwrap();
        }
        let mut ready = Vec::new();
        ring.drain_ready(&mut ready);
        for op in ready {
            let (result, owned) = ring.take_owned(op).unwrap();
            if Some(op) == connection.recv {
                connection.recv_done(result, owned);
            } else if Some(op) == connection.send {
                assert!(connection.send_done(result));
            }
        }
    }

    /// Frames taken from the inbox share its memory (no copy); a frame
    /// that does not fit the block's room moves to a new block, and only
    /// its received part is copied and counted.
    #[test]
    fn taken_frames_share_the_block_and_straddles_are_counted() {
        let mut ring = Ring::new().unwrap();
        let (mut connection, mut other) = pair(Role::Client(Access::ReadWrite));
        other.write_all(&[1u8; 1000]).unwrap();
        connection.post_recv(&mut ring, 0, false).unwrap();
        run(&mut ring, &mut connection);
        while connection.unread().len() < 1000 {
            connection.post_recv(&mut ring, 1000, false).unwrap();
            run(&mut ring, &mut connection);
        }
        let first = connection.take(600).freeze();
        let second = connection.take(400).freeze();
        // Back to back in the same block: taken, not copied.
        assert_eq!(first.as_ptr().wrapping_add(600), second.as_ptr());
        assert_eq!(connection.take_copied(), 0);
        // 100 bytes of a frame that needs more room than the block has.
        other.write_all(&[2u8; 100]).unwrap();
        connection.post_recv(&mut ring, 0, false).unwrap();
        run(&mut ring, &mut connection);
        assert_eq!(connection.unread().len(), 100);
        connection
            .post_recv(&mut ring, INBOX_BYTES_INITIAL * 2, false)
            .unwrap();
        assert_eq!(connection.take_copied(), 100, "the straddling start");
        other.write_all(&[3u8; 50]).unwrap();
        run(&mut ring, &mut connection);
        assert_eq!(&connection.unread()[..100], &[2u8; 100][..]);
        assert_eq!(&connection.unread()[100..], &[3u8; 50][..]);
        // The frames taken earlier are intact.
        assert!(first.iter().chain(second.iter()).all(|byte| *byte == 1));
    }

    /// While messages are large, a recv stops at the message's end, and at
    /// the boundary the next block has room for one as large: a stream of
    /// large messages is received without a byte copied.
    #[test]
    fn large_messages_land_whole_without_copies() {
        let mut ring = Ring::new().unwrap();
        let (mut connection, mut other) = pair(Role::Client(Access::ReadWrite));
        let message = 300 * 1024;
        let writer = std::thread::spawn(move || {
            for round in 0..4u8 {
                other.write_all(&vec![round; message]).unwrap();
            }
            other
        });
        // As after a first large message (that one may straddle: nothing
        // told the connection yet).
        connection.read_frames_of(message);
        for round in 0..4u8 {
            // At the boundary the next message's size is not known yet:
            // the first recv asks for what a header needs.
            connection.post_recv(&mut ring, 0, true).unwrap();
            run(&mut ring, &mut connection);
            connection.read_frames_of(message);
            while connection.unread().len() < message {
                connection.post_recv(&mut ring, message, true).unwrap();
                run(&mut ring, &mut connection);
            }
            assert_eq!(connection.unread().len(), message, "stopped at its end");
            let taken = connection.take(message);
            assert!(taken.iter().all(|byte| *byte == round));
        }
        assert_eq!(connection.take_copied(), 0);
        drop(writer.join().unwrap());
    }

    /// Small frames and shared pieces go out in queue order, gathered into
    /// one send; a file span waits its turn.
    #[test]
    fn queue_order_is_kept_across_pieces_and_spans() {
        let mut ring = Ring::new().unwrap();
        let (mut connection, mut other) = pair(Role::PeerOut(2));
        connection.queue(b"head");
        connection.queue_shared(Bytes::from_static(b"-piece-"));
        connection.queue(b"tail");
        let file = Rc::new(tempfile_with(b"FILE"));
        connection.queue_file(FileSpan {
            file,
            offset: 0,
            len: 4,
        });
        connection.queue(b"after");
        assert_eq!(connection.queued(), 4 + 7 + 4 + 4 + 5);
        connection.post_send(&mut ring).unwrap();
        run(&mut ring, &mut connection);
        let mut got = [0u8; 15];
        other.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"head-piece-tail");
        assert_eq!(connection.front_len(), Some(4));
        let span = connection.next_file_span().expect("the span is next");
        assert_eq!(span.span.len, 4);
        connection.file_send = None;
        connection.post_send(&mut ring).unwrap();
        run(&mut ring, &mut connection);
        let mut got = [0u8; 5];
        other.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"after");
        assert_eq!(connection.queued(), 0);
    }

    fn tempfile_with(bytes: &[u8]) -> File {
        let path = std::env::temp_dir().join(format!(
            "rast-connection-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::write(&path, bytes).unwrap();
        let file = File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        file
    }
}
