//! A follower's receive path for large batches: socket → pipe → log file,
//! never through user space.
//!
//! ```text
//!  AppendEntries header read (frugally: the batches stay in the socket)
//!     │ group.reserve(batch bytes) ── NotYet: the connection waits a turn
//!     ▼ Ready(file, reservation)
//!  head: batch bytes already in the inbox ── ring write at the reservation's offset
//!  rest: socket ──splice──► pipe ──splice──► file (after the head landed:
//!        writes into the file stay in offset order)
//!     ▼ every byte in the file
//!  group.step_spliced: verify (checksums, summaries) through the map, then
//!  the core; a bad batch aborts the reservation (zeroed) and the
//!  connection closes, the log keeps serving
//! ```
//!
//! One transfer per connection, one per group at a time (a group's other
//! messages wait for it). A transfer that fails mid-way waits for its
//! operations on the file to land before its reservation is aborted, so
//! nothing it wrote lands after the zeroing. A transfer with no progress
//! for [`SPLICE_STALL_MS`] (a partitioned leader that never sends the
//! rest) is abandoned the same way.

use std::fs::File;
use std::rc::Rc;

use bytes::Bytes;

use super::{Owner, Shard};
use crate::constants::SPLICE_STALL_MS;
use crate::io::Link;
use crate::net::codec;
use crate::raft::BatchSummary;
use crate::server::metrics::PayloadPath;
use crate::storage::Reserve;
use crate::storage::segment::Reservation;

/// An AppendEntries whose batch bytes are being spliced into the log file.
#[derive(Debug)]
pub(super) struct Splice {
    header: codec::PeerHeader,
    summaries: Vec<BatchSummary>,
    file: Rc<File>,
    reservation: Option<Reservation>,
    /// Bytes in the file.
    written: u64,
    /// The write of the bytes that were already in the inbox, while in
    /// flight: its bytes.
    head: Option<u64>,
    /// Bytes in the pipe, not yet in the file.
    in_pipe: u64,
    /// The splice in flight (socket → pipe or pipe → file), if any.
    pipe_op: Option<crate::io::OpId>,
    /// Batch bytes of the message.
    total: u64,
    /// When a byte last moved.
    progress_ms: u64,
    /// Why it is being abandoned, once it is (it ends when nothing of it is
    /// in flight).
    failed: Option<String>,
}

/// What came of trying to start a transfer.
pub(super) enum Start {
    /// Under way.
    UnderWay,
    /// The store is finishing what must land first: wait a turn.
    NotYet,
    /// The store has no file: receive into the buffer.
    Unsupported,
}

impl Shard {
    /// Starts splicing an AppendEntries' batch bytes into its group's log
    /// file: the bytes already received are written from the inbox through
    /// the ring, the rest go socket → pipe → file.
    pub(super) fn start_splice(
        &mut self,
        slot: usize,
        header_bytes: usize,
        header: codec::PeerHeader,
        total: u64,
    ) -> Result<Start, String> {
        let group = self.group(header.group, None)?;
        let (file, reservation) = match group.reserve(total) {
            Reserve::Ready(file, reservation) => (file, reservation),
            Reserve::NotYet => return Ok(Start::NotYet),
            Reserve::Unsupported => return Ok(Start::Unsupported),
        };
        let now = self.now_ms();
        let entry = self.slots[slot].as_mut().expect("present");
        if entry.pipe.is_none() {
            match crate::io::splice_pipe() {
                Ok((read, write)) => entry.pipe = Some((Rc::new(read), Rc::new(write))),
                Err(error) => {
                    if let Some(group) = self.groups.get_mut(&header.group) {
                        let mut out = std::mem::take(&mut self.out);
                        group.abort_splice(reservation, &mut out);
                        self.out = out;
                    }
                    return Err(format!("pipe: {error}"));
                }
            }
        }
        entry.connection.consume(header_bytes);
        let head = entry.connection.unread().len().min(total as usize);
        let head_bytes: Bytes = entry.connection.take(head).freeze();
        let generation = entry.generation;
        let follower = self.metrics.counters.payload(PayloadPath::Follower);
        follower.add_payload(total);
        follower.add_spliced(total - head as u64);
        let mut splice = Box::new(Splice {
            header,
            summaries: self.summaries.clone(),
            file,
            reservation: Some(reservation),
            written: 0,
            head: None,
            in_pipe: 0,
            pipe_op: None,
            total,
            progress_ms: now,
            failed: None,
        });
        if head > 0 {
            let offset = splice.reservation.as_ref().expect("open").offset();
            let submitted = self.ring.borrow_mut().writev_at(
                &splice.file,
                vec![head_bytes],
                offset,
                Link::None,
            );
            match submitted {
                Ok(op) => {
                    self.ring.borrow_mut().notify(op);
                    self.ops.insert(op, Owner::SpliceHead(slot, generation));
                    splice.head = Some(head as u64);
                }
                Err(error) => splice.failed = Some(format!("submitting the head write: {error}")),
            }
        }
        let entry = self.slots[slot].as_mut().expect("present");
        entry.splice = Some(splice);
        self.splicing.insert(header.group);
        self.splice_next(slot);
        Ok(Start::UnderWay)
    }

    /// Posts the next step of a connection's transfer, finishes it, or —
    /// abandoned and with nothing in flight — ends it.
    pub(super) fn splice_next(&mut self, slot: usize) {
        let Some(entry) = self.slots[slot].as_mut() else {
            return;
        };
        let generation = entry.generation;
        let (pipe_read, pipe_write) = entry.pipe.clone().expect("made at start");
        let socket = Rc::clone(&entry.connection.socket);
        let Some(splice) = entry.splice.as_deref() else {
            return;
        };
        let step = next_step(splice);
        let submitted = match step {
            Step::Wait => return,
            Step::EndAbandoned => return self.end_abandoned_splice(slot),
            Step::Finish => return self.finish_splice(slot),
            Step::PipeToFile { offset, len } => {
                let file = Rc::clone(&splice.file);
                self.ring
                    .borrow_mut()
                    .splice_notify(&pipe_read, &file, Some(offset), len)
                    .map(|op| (op, Owner::SpliceOut(slot, generation)))
            }
            Step::SocketToPipe { len } => self
                .ring
                .borrow_mut()
                .splice_notify(&socket, &pipe_write, None, len)
                .map(|op| (op, Owner::SpliceIn(slot, generation))),
        };
        match submitted {
            Ok((op, owner)) => {
                self.ops.insert(op, owner);
                if let Some(splice) = self.splice_of(slot, generation) {
                    splice.pipe_op = Some(op);
                }
            }
            Err(error) => {
                self.abandon_splice(slot, &format!("submitting a splice: {error}"));
                self.splice_next(slot);
            }
        }
    }

    /// The transfer of the connection in `slot`, if it is still the one of
    /// `generation`.
    fn splice_of(&mut self, slot: usize, generation: u64) -> Option<&mut Splice> {
        self.slots[slot]
            .as_mut()
            .filter(|entry| entry.generation == generation)?
            .splice
            .as_deref_mut()
    }

    /// The head write completed with `result`.
    pub(super) fn spliced_head(&mut self, slot: usize, generation: u64, result: i32) {
        let now = self.now_ms();
        let Some(splice) = self.splice_of(slot, generation) else {
            return;
        };
        let head = splice.head.take().expect("a head write in flight");
        let landed = result >= 0 && result as u64 == head;
        if landed {
            splice.written += head;
            splice.progress_ms = now;
        } else {
            self.abandon_splice(slot, &format!("writing the received head: result {result}"));
        }
        self.splice_next(slot);
    }

    /// Socket → pipe completed with `result`.
    pub(super) fn spliced_in(&mut self, slot: usize, generation: u64, result: i32) {
        let now = self.now_ms();
        let Some(splice) = self.splice_of(slot, generation) else {
            return;
        };
        splice.pipe_op = None;
        if result > 0 {
            splice.in_pipe += result as u64;
            splice.progress_ms = now;
        } else {
            let reason = if result == 0 {
                "peer closed mid-batch".to_owned()
            } else {
                format!("splice from socket: errno {}", -result)
            };
            self.abandon_splice(slot, &reason);
        }
        self.splice_next(slot);
    }

    /// Pipe → file completed with `result`.
    pub(super) fn spliced_out(&mut self, slot: usize, generation: u64, result: i32) {
        let now = self.now_ms();
        let Some(splice) = self.splice_of(slot, generation) else {
            return;
        };
        splice.pipe_op = None;
        if result > 0 {
            splice.written += result as u64;
            splice.in_pipe -= result as u64;
            splice.progress_ms = now;
        } else {
            self.abandon_splice(slot, &format!("splice into the log: errno {}", -result));
        }
        self.splice_next(slot);
    }

    /// Every byte is in the file: the group verifies and steps the message,
    /// and completes (or aborts) the reservation; the connection and any
    /// connection waiting on the group resume.
    fn finish_splice(&mut self, slot: usize) {
        let entry = self.slots[slot].as_mut().expect("present");
        let mut splice = entry.splice.take().expect("splicing");
        let group_id = splice.header.group;
        let reservation = splice.reservation.take().expect("open");
        let mut out = std::mem::take(&mut self.out);
        if let Some(group) = self.groups.get_mut(&group_id)
            && let Err(error) =
                group.step_spliced(&splice.header, &splice.summaries, reservation, &mut out)
            && let Some(entry) = self.slots[slot].as_mut()
        {
            tracing::warn!(%error, "bad spliced batches refused; closing the peer connection");
            entry.connection.closed = true;
        }
        self.out = out;
        self.unsplice(group_id);
        self.resume(slot);
    }

    /// A transfer failed mid-way: the connection closes at once (the
    /// leader resends after it reconnects); the reservation is aborted once
    /// nothing of the transfer is in flight (a splice from the socket is
    /// cancelled).
    pub(super) fn abandon_splice(&mut self, slot: usize, reason: &str) {
        let Some(entry) = self.slots[slot].as_mut() else {
            return;
        };
        entry.connection.closed = true;
        let Some(splice) = entry.splice.as_mut() else {
            return;
        };
        if splice.failed.is_some() {
            return;
        }
        tracing::warn!(%reason, "splice abandoned; closing the peer connection");
        splice.failed = Some(reason.to_owned());
        if let Some(op) = splice.pipe_op {
            self.ring.borrow_mut().cancel(op);
        }
    }

    /// Ends an abandoned transfer with nothing in flight: its reservation
    /// is aborted (zeroed), and the group's other messages proceed.
    fn end_abandoned_splice(&mut self, slot: usize) {
        let Some(entry) = self.slots[slot].as_mut() else {
            return;
        };
        let Some(mut splice) = entry.splice.take() else {
            return;
        };
        let group_id = splice.header.group;
        if let (Some(group), Some(reservation)) =
            (self.groups.get_mut(&group_id), splice.reservation.take())
        {
            let mut out = std::mem::take(&mut self.out);
            group.abort_splice(reservation, &mut out);
            self.out = out;
        }
        self.unsplice(group_id);
    }

    /// Abandons transfers that moved no byte for [`SPLICE_STALL_MS`].
    pub(super) fn abandon_stalled_splices(&mut self, now: u64) {
        for slot in 0..self.slots.len() {
            let stalled = self.slots[slot]
                .as_ref()
                .and_then(|entry| entry.splice.as_ref())
                .is_some_and(|splice| {
                    splice.failed.is_none() && now >= splice.progress_ms + SPLICE_STALL_MS
                });
            if stalled {
                self.abandon_splice(slot, "no batch bytes arrived for a while");
                self.splice_next(slot);
            }
        }
    }
}

/// What a transfer does next.
enum Step {
    /// An operation of it is in flight (or the head must land first).
    Wait,
    /// Abandoned, and nothing of it is in flight.
    EndAbandoned,
    /// Every byte is in the file.
    Finish,
    /// Move the pipe's bytes into the file at `offset`.
    PipeToFile { offset: u64, len: u32 },
    /// Move up to `len` bytes from the socket into the pipe.
    SocketToPipe { len: u32 },
}

fn next_step(splice: &Splice) -> Step {
    if splice.pipe_op.is_some() {
        return Step::Wait;
    }
    if splice.failed.is_some() {
        return if splice.head.is_none() {
            Step::EndAbandoned
        } else {
            Step::Wait
        };
    }
    let received = splice.written + splice.head.unwrap_or(0) + splice.in_pipe;
    if splice.in_pipe > 0 {
        if splice.head.is_some() {
            // Pipe → file waits for the head: writes into the file land
            // in offset order.
            return Step::Wait;
        }
        let offset = splice.reservation.as_ref().expect("open").offset() + splice.written;
        return Step::PipeToFile {
            offset,
            len: splice.in_pipe as u32,
        };
    }
    if received < splice.total {
        let len = (splice.total - received).min(crate::constants::PIPE_BYTES as u64) as u32;
        return Step::SocketToPipe { len };
    }
    if splice.head.is_none() {
        Step::Finish
    } else {
        Step::Wait
    }
}
