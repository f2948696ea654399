//! What leaves a core: the groups' messages and answers queued on their
//! connections (pieces and file spans, counted per path), stored batches
//! spliced file → pipe → socket, sends and recvs posted, idle connections
//! retired.

use std::rc::Rc;

use super::{OUTBOX_BYTES_MAX, Owner, Shard};
use crate::server::connection::{FileSend, Role};
use crate::server::group::{ClientOut, Piece};
use crate::server::metrics::{Counters, PayloadPath};

impl Shard {
    /// Posts the next step of a file span's trip to a client: file → pipe,
    /// then pipe → socket, until the span is sent.
    pub(super) fn file_next(&mut self, slot: usize) {
        let Some(entry) = self.slots[slot].as_mut() else {
            return;
        };
        if entry.pipe.is_none() {
            match crate::io::splice_pipe() {
                Ok((read, write)) => entry.pipe = Some((Rc::new(read), Rc::new(write))),
                Err(error) => {
                    tracing::warn!(%error, "no pipe for a read; closing the connection");
                    entry.connection.closed = true;
                    entry.connection.file_send = None;
                    return;
                }
            }
        }
        let generation = entry.generation;
        let (pipe_read, pipe_write) = entry.pipe.clone().expect("made above");
        let socket = Rc::clone(&entry.connection.socket);
        let Some(send) = entry.connection.file_send.as_ref() else {
            return;
        };
        let submitted = if send.in_pipe > 0 {
            self.ring
                .borrow_mut()
                .splice_notify(&pipe_read, &socket, None, send.in_pipe as u32)
                .map(|op| (op, Owner::FileOut(slot, generation)))
        } else if send.span.len > 0 {
            let len = send.span.len.min(crate::constants::PIPE_BYTES as u64) as u32;
            let file = Rc::clone(&send.span.file);
            self.ring
                .borrow_mut()
                .splice_at(&file, send.span.offset, &pipe_write, len)
                .map(|op| (op, Owner::FileIn(slot, generation)))
        } else {
            entry.connection.file_send = None;
            return;
        };
        match submitted {
            Ok((op, owner)) => {
                self.ops.insert(op, owner);
            }
            Err(error) => {
                tracing::warn!(%error, "could not submit a read splice; closing the connection");
                entry.connection.closed = true;
                entry.connection.file_send = None;
            }
        }
    }

    /// File → pipe completed with `result`.
    pub(super) fn file_in(&mut self, slot: usize, generation: u64, result: i32) {
        let Some(send) = self.file_step(slot, generation, result) else {
            return;
        };
        let moved = result as u64;
        send.in_pipe += moved;
        send.span.offset += moved;
        send.span.len -= moved;
        self.file_next(slot);
    }

    /// Pipe → socket completed with `result`.
    pub(super) fn file_out(&mut self, slot: usize, generation: u64, result: i32) {
        let Some(send) = self.file_step(slot, generation, result) else {
            return;
        };
        send.in_pipe -= result as u64;
        self.file_next(slot);
    }

    /// The file send of the connection in `slot`, if it is still the one
    /// of `generation` and the step that ended with `result` moved bytes; a
    /// failed step closes the connection (a client gone, a file unreadable).
    fn file_step(&mut self, slot: usize, generation: u64, result: i32) -> Option<&mut FileSend> {
        let entry = self.slots[slot]
            .as_mut()
            .filter(|entry| entry.generation == generation)?;
        entry.connection.file_send.as_ref()?;
        if result <= 0 {
            tracing::debug!(
                errno = -result,
                "sending stored batches ended early; closing the connection"
            );
            entry.connection.closed = true;
            entry.connection.file_send = None;
            return None;
        }
        entry.connection.file_send.as_mut()
    }

    pub(super) fn deliver(&mut self) {
        let mut out = std::mem::take(&mut self.out);
        let counters = &self.metrics.counters;
        Counters::add(
            &counters.leader_changes,
            std::mem::take(&mut out.leader_changes),
        );
        Counters::add(
            &counters.repaired_batches,
            std::mem::take(&mut out.repaired_batches),
        );
        for (micros, entries) in out.syncs.drain(..) {
            counters.record_sync(micros, entries);
        }
        counters.take_tally(&mut out.payload);
        self.follow_membership(&mut out);
        for (peer, message) in out.peers.drain(..) {
            let Some(link) = self.links.iter().position(|link| link.id == peer) else {
                continue;
            };
            let Some(slot) = self.links[link].connection else {
                continue; // Not connected: Raft tolerates the loss.
            };
            if self.links[link].connecting {
                continue;
            }
            if let Some(entry) = self.slots[slot].as_mut() {
                if entry.connection.queued() > OUTBOX_BYTES_MAX {
                    // The peer stopped reading (paused, partitioned): drop the
                    // connection rather than buffer without bound; Raft
                    // resends what matters after the reconnect.
                    tracing::warn!(peer = %peer, "peer not reading; dropping its connection");
                    entry.connection.closed = true;
                    continue;
                }
                entry.connection.queue(&message.header);
                let replicated = self.metrics.counters.payload(PayloadPath::Replicate);
                for piece in message.pieces {
                    replicated.add_payload(piece.len());
                    match piece {
                        Piece::Shared(bytes) => entry.connection.queue_shared(bytes),
                        Piece::File(span) => {
                            replicated.add_from_file(span.len);
                            entry.connection.queue_file(span);
                        }
                        Piece::Copied(bytes) => {
                            replicated.add_copied(bytes.len() as u64);
                            entry.connection.queue_shared(bytes);
                        }
                    }
                }
            }
        }
        for (to, piece) in out.clients.drain(..) {
            if let Some(entry) = self.slots.get_mut(to.connection).and_then(Option::as_mut)
                && entry.generation == to.generation
            {
                if entry.connection.queued() > OUTBOX_BYTES_MAX {
                    tracing::warn!("client not reading its answers; closing its connection");
                    entry.connection.closed = true;
                    continue;
                }
                let read = self.metrics.counters.payload(PayloadPath::Read);
                match piece {
                    ClientOut::Bytes(bytes) => entry.connection.queue(&bytes),
                    ClientOut::Shared(bytes) => {
                        read.add_payload(bytes.len() as u64);
                        entry.connection.queue_shared(bytes);
                    }
                    ClientOut::Copied(bytes) => {
                        read.add_payload(bytes.len() as u64);
                        read.add_copied(bytes.len() as u64);
                        entry.connection.queue_shared(bytes);
                    }
                    ClientOut::File(span) => {
                        read.add_payload(span.len);
                        read.add_from_file(span.len);
                        entry.connection.queue_file(span);
                    }
                }
            }
        }
        self.out = out;
    }

    /// Posts what a connection needs, and retires it when it is done.
    pub(super) fn service(&mut self, slot: usize) {
        let Some(entry) = self.slots[slot].as_mut() else {
            return;
        };
        if !entry.connection.closed && entry.connection.next_file_span().is_some() {
            self.file_next(slot);
        }
        let Some(entry) = self.slots[slot].as_mut() else {
            return;
        };
        let mut ring = self.ring.borrow_mut();
        if !entry.connection.closed {
            match entry.connection.post_send(&mut ring) {
                Ok(Some(op)) => {
                    self.ops.insert(op, Owner::Send(slot));
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(%error, "could not post a send");
                    entry.connection.closed = true;
                }
            }
        }
        let flushed = entry.connection.queued() == 0 && entry.connection.send.is_none();
        if entry.connection.close_after_flush && flushed {
            entry.connection.closed = true;
        }
        let connecting = matches!(entry.connection.role, Role::PeerOut(_))
            && self
                .links
                .iter()
                .any(|link| link.connection == Some(slot) && link.connecting);
        if !entry.connection.closed
            && entry.handoff_to.is_none()
            && !connecting
            && !entry.blocked
            && entry.splice.is_none()
        {
            let want = entry
                .connection
                .need(0)
                .unwrap_or(0)
                .max(entry.connection.waiting_for);
            let frugal = entry.connection.frugal;
            match entry.connection.post_recv(&mut ring, want, frugal) {
                Ok(Some(op)) => {
                    self.ops.insert(op, Owner::Recv(slot));
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(%error, "could not post a recv");
                    entry.connection.closed = true;
                }
            }
            // Frames that straddled two receive blocks were copied.
            let copied = entry.connection.take_copied();
            if copied > 0 {
                let path = match entry.connection.role {
                    Role::PeerIn(_) => PayloadPath::Follower,
                    _ => PayloadPath::Ingest,
                };
                self.metrics.counters.payload(path).add_copied(copied);
            }
        }
        drop(ring);
        self.retire(slot);
    }

    /// Drops a closed idle connection, or hands an idle one to its core.
    pub(super) fn retire(&mut self, slot: usize) {
        let Some(entry) = self.slots[slot].as_ref() else {
            return;
        };
        if !entry.connection.idle() || entry.splice.is_some() {
            if entry.connection.closed || entry.handoff_to.is_some() {
                // Stop reading so the connection becomes idle.
                if let Some(op) = entry.connection.recv {
                    self.ring.borrow_mut().cancel(op);
                }
            }
            return;
        }
        let flushed = entry.connection.queued() == 0;
        if entry.connection.closed {
            let entry = self.slots[slot].take().expect("present");
            self.free_slots.push(slot);
            self.forget_address(entry.from);
            for group in self.groups.values_mut() {
                group.forget_connection(slot, entry.generation);
            }
            if let Some(link) = self
                .links
                .iter()
                .position(|link| link.connection == Some(slot))
            {
                tracing::info!(peer = %self.links[link].id, "peer connection closed");
                self.backoff(link);
            }
            return;
        }
        if let Some(core) = entry.handoff_to
            && flushed
        {
            let entry = self.slots[slot].take().expect("present");
            self.free_slots.push(slot);
            self.forget_address(entry.from);
            self.hand_off(core, entry.connection, entry.from);
        }
    }
}
