//! The simulated runtime's half of snapshots: taking them and compacting,
//! streaming them to followers, receiving and installing them.
//!
//! ```text
//!  leader                                         follower
//!  Action::SendSnapshot{to} ─► Sending (window) ── chunk(offset, data) ──►
//!     ▲  rewind after SNAPSHOT_RESEND_MS              receive(): in-order prefix
//!     └── SnapshotResponse{next_offset, done} ◄────── answer every chunk
//!  done ─► core.snapshot_sent(to, true)               complete ─► verify, install:
//!                                                      disk (snapshot, log reset),
//!                                                      kv restore, snapshot_installed
//! ```
//!
//! Checks added here: a snapshot holds exactly the committed entries below
//! its index and records the configuration committed as of its index, and
//! a machine restored from it has the state every node had at that index.

use super::{Envelope, EnvelopeBody, SNAPSHOT_GIVE_UP_MS, SNAPSHOT_RESEND_MS, Simulation};
use crate::net::snapshot_stream::SendWindow;
use crate::raft::{Core, Role, SnapshotInstall, SnapshotResponse};
use crate::sim::checker::Violation;
use crate::sim::snapshot::{self, Chunk, Received, Sending, SimSnapshot};
use crate::types::{LogIndex, NodeId, Term};

impl Simulation {
    /// After an apply: snapshot both machines once `snapshot_every` entries
    /// were applied past the last snapshot, if the applied index is durable
    /// here and ends a batch; then compact the log below it.
    pub(super) fn maybe_snapshot(&mut self, node: usize) -> Result<(), Violation> {
        if self.snapshot_every == 0 {
            return Ok(());
        }
        let state = &self.nodes[node];
        let Some(core) = &state.core else {
            return Ok(());
        };
        let index = state.applied;
        let previous = state.disk.written().snapshot_index();
        if index < previous.next() || index.get() - previous.get() < self.snapshot_every {
            return Ok(());
        }
        if index > core.log().durable_index() || !core.log().is_batch_end(index) {
            return Ok(());
        }
        // The configuration as of `index`: unknown to the core once a later
        // configuration entry committed (the entries below it are applied
        // but not yet here); the next apply past it tries again.
        let Some(membership) = core.membership_at(index) else {
            self.snapshots_deferred += 1;
            return Ok(());
        };
        let term = state
            .disk
            .written()
            .entry(index)
            .expect("applied is stored")
            .0;
        let mut entries: Vec<(Term, u64)> = state
            .disk
            .snapshot()
            .map_or_else(Vec::new, |snapshot| snapshot.entries.to_vec());
        for at in previous.get() + 1..=index.get() {
            entries.push(
                state
                    .disk
                    .written()
                    .entry(LogIndex(at))
                    .expect("applied is stored"),
            );
        }
        let snapshot = SimSnapshot::take(index, term, membership, entries.into(), &state.kv)
            .map_err(|detail| Violation {
                property: "snapshots are taken of the applied state",
                detail,
            })?;
        self.check_snapshot_committed(node, &snapshot)?;
        self.trace(|| format!("node {}: snapshot at {index}, compact", node + 1));
        let state = &mut self.nodes[node];
        state.disk.take_snapshot(snapshot);
        state.core.as_mut().expect("checked up").compact(index);
        self.snapshots_taken += 1;
        self.snapshots_taken_changed += u64::from(membership != self.membership);
        Ok(())
    }

    /// A snapshot holds exactly the committed entries up to its index, and
    /// records the configuration committed as of its index.
    fn check_snapshot_committed(
        &self,
        node: usize,
        snapshot: &SimSnapshot,
    ) -> Result<(), Violation> {
        let committed = self.config_committed_at(snapshot.index);
        if snapshot.membership != committed {
            return Err(Violation {
                property: "snapshots record the committed configuration",
                detail: format!(
                    "node {}: snapshot at {} records {:?}, committed as of it {committed:?}",
                    node + 1,
                    snapshot.index,
                    snapshot.membership
                ),
            });
        }
        for (position, entry) in snapshot.entries.iter().enumerate() {
            let index = LogIndex(position as u64 + 1);
            if self.checker.committed_entry(index) != Some(*entry) {
                return Err(Violation {
                    property: "snapshots hold committed entries",
                    detail: format!(
                        "node {}: snapshot at {} has {entry:?} at {index}, committed {:?}",
                        node + 1,
                        snapshot.index,
                        self.checker.committed_entry(index)
                    ),
                });
            }
        }
        Ok(())
    }

    /// `Action::SendSnapshot`: (re)start streaming the latest snapshot.
    pub(super) fn snapshot_stream_start(&mut self, node: usize, to: NodeId) {
        let Some(snapshot) = self.nodes[node].disk.snapshot() else {
            unreachable!("the core asks for a snapshot only once the log is compacted")
        };
        let bytes: std::rc::Rc<[u8]> = snapshot.encode().into();
        let sending = Sending {
            to,
            index: snapshot.index,
            term: snapshot.term,
            window: SendWindow::new(bytes.len() as u64, self.now),
            bytes,
        };
        self.trace(|| {
            format!(
                "node {}: stream snapshot at {} ({} bytes) to {to}",
                node + 1,
                sending.index,
                sending.bytes.len()
            )
        });
        let streams = &mut self.nodes[node].sending;
        streams.retain(|stream| stream.to != to);
        streams.push(sending);
        self.snapshot_stream_send(node, to);
    }

    /// Sends the chunks the stream to `to` may have in flight.
    fn snapshot_stream_send(&mut self, node: usize, to: NodeId) {
        let Some(core) = &self.nodes[node].core else {
            return;
        };
        let (from, term) = (core.id(), core.term());
        let chunk_bytes = self.snapshot_chunk_bytes;
        let Some(stream) = self.nodes[node]
            .sending
            .iter_mut()
            .find(|stream| stream.to == to)
        else {
            return;
        };
        let chunks = stream.next_chunks(chunk_bytes);
        for chunk in chunks {
            self.snapshot_chunks_sent += 1;
            let envelope = Envelope {
                from,
                to,
                term,
                body: EnvelopeBody::InstallSnapshot(chunk),
            };
            self.transmit(node, envelope);
        }
    }

    /// Each leader tick: rewind streams that made no progress for a while,
    /// give up those that took too long.
    pub(super) fn snapshot_streams_tick(&mut self, node: usize) -> Result<(), Violation> {
        let now = self.now;
        let mut resend = Vec::new();
        let mut abandoned = Vec::new();
        self.nodes[node].sending.retain_mut(|stream| {
            if now - stream.window.started_ms >= SNAPSHOT_GIVE_UP_MS {
                abandoned.push(stream.to);
                false
            } else {
                if now - stream.window.progress_ms >= SNAPSHOT_RESEND_MS {
                    stream.rewind(now);
                    resend.push(stream.to);
                }
                true
            }
        });
        for to in resend {
            self.snapshot_stream_send(node, to);
        }
        for to in abandoned {
            self.with_core(node, |core, actions| core.snapshot_sent(to, false, actions))?;
        }
        Ok(())
    }

    /// A leader got a follower's answer to its stream.
    pub(super) fn snapshot_response_received(
        &mut self,
        node: usize,
        from: NodeId,
        term: Term,
        response: SnapshotResponse,
    ) -> Result<(), Violation> {
        let leads = self.nodes[node]
            .core
            .as_ref()
            .is_some_and(|core| core.role() == Role::Leader && core.term() == term);
        let now = self.now;
        let streams = &mut self.nodes[node].sending;
        let Some(position) = streams.iter().position(|stream| stream.to == from) else {
            return Ok(());
        };
        if !leads {
            return Ok(());
        }
        if response.done {
            streams.swap_remove(position);
            return self.with_core(node, |core, actions| {
                core.snapshot_sent(from, true, actions);
            });
        }
        streams[position].acknowledge(response.next_offset, now);
        self.snapshot_stream_send(node, from);
        Ok(())
    }

    /// A follower got a chunk (the core already stepped its header).
    pub(super) fn snapshot_chunk_received(
        &mut self,
        node: usize,
        from: NodeId,
        term: Term,
        chunk: &Chunk,
    ) -> Result<(), Violation> {
        let follows = self.nodes[node].core.as_ref().is_some_and(|core| {
            core.role() == Role::Follower && core.leader() == from && core.term() == term
        });
        if !follows {
            return Ok(());
        }
        let response = match snapshot::receive(&mut self.nodes[node].receiving, chunk) {
            Received::Need(next_offset) => SnapshotResponse {
                next_offset,
                done: false,
            },
            Received::Complete(bytes) => {
                let length = bytes.len() as u64;
                let snapshot = SimSnapshot::decode(&bytes).map_err(|detail| Violation {
                    property: "snapshot streams arrive intact",
                    detail: format!("node {}: {detail}", node + 1),
                })?;
                self.install_snapshot(node, snapshot)?;
                SnapshotResponse {
                    next_offset: length,
                    done: true,
                }
            }
        };
        let core = self.nodes[node].core.as_ref().expect("checked up");
        let envelope = Envelope {
            from: core.id(),
            to: from,
            term: core.term(),
            body: EnvelopeBody::SnapshotResponse(response),
        };
        self.transmit(node, envelope);
        Ok(())
    }

    /// Installs a verified snapshot, if it is ahead of the commit index:
    /// durable state first (the snapshot, then the log dropped below it or
    /// reset after it, as the core says), then the key-value machine, then
    /// the core.
    fn install_snapshot(&mut self, node: usize, snapshot: SimSnapshot) -> Result<(), Violation> {
        let core = self.nodes[node].core.as_ref().expect("checked up");
        let install = core.snapshot_install(snapshot.index, snapshot.term);
        if install == SnapshotInstall::Ignore {
            return Ok(());
        }
        self.check_snapshot_committed(node, &snapshot)?;
        let mut kv = self.nodes[node].kv.clone();
        kv.restore_from(&snapshot.kv[..])
            .map_err(|error| Violation {
                property: "snapshots restore",
                detail: format!("node {}: {error}", node + 1),
            })?;
        let hash = crate::sim::kv::state_hash(&kv)?;
        if let Some(previous) = self.kv_states.insert(snapshot.index.get(), hash)
            && previous != hash
        {
            return Err(Violation {
                property: "kv state machine safety",
                detail: format!(
                    "node {}: snapshot at {} restores another key-value state",
                    node + 1,
                    snapshot.index
                ),
            });
        }
        let (index, term) = (snapshot.index, snapshot.term);
        self.trace(|| {
            format!(
                "node {}: install snapshot at {index} ({install:?})",
                node + 1
            )
        });
        // The configuration as of the snapshot comes from the snapshot: the
        // entries after it (kept on `KeepLog`) carry the later ones, which
        // the core still holds.
        let membership = snapshot.membership;
        let state = &mut self.nodes[node];
        if install == SnapshotInstall::KeepLog {
            state.disk.take_snapshot(snapshot);
        } else {
            state.disk.install_snapshot(snapshot);
        }
        state.kv = kv;
        state.applied = index;
        self.snapshots_installed += 1;
        self.snapshots_installed_changed += u64::from(membership != self.membership);
        self.with_core(node, |core: &mut Core, actions| {
            core.snapshot_installed(index, term, membership, actions);
        })?;
        Ok(())
    }
}
