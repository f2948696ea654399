//! InstallSnapshot over peer connections: a leader streams its latest
//! snapshot file to a follower too far behind; the follower writes it to
//! disk as it arrives, verifies it whole, and only then replaces its state.
//!
//! ```text
//!  leader                                            follower
//!  Action::SendSnapshot{to}                          chunk at `next`: write at
//!   └ open the file, window ─ chunk(offset, data) ─►   `next` of snapshot-N.recv
//!     (≤ SNAPSHOT_CHUNKS_INFLIGHT_MAX × 1 MiB)         answer next offset
//!   ◄── SnapshotResponse{next_offset} ────────────── any other: answer `next`
//!     move the window on; rewind after SNAPSHOT_RESEND_MS     last chunk: thread ─ fsync,
//!     without progress, give up after SNAPSHOT_GIVE_UP_MS      verify both checksums,
//!                                                     rename, restore machine
//!   ◄── SnapshotResponse{done} ───────────────────── tick: storage (drop below
//!  core.snapshot_sent(to, true): replicate after it   or reset after), machine,
//!                                                     core.snapshot_installed
//! ```
//!
//! Memory stays a few chunks at each end whatever the snapshot's size: the
//! leader reads each chunk from the file when it sends it, the follower
//! writes each chunk to its file when it arrives, and the state is rebuilt
//! from the file on a thread of its own (the shard keeps serving). The
//! partial file belongs to the group, not to a connection, so a stream
//! resumes from where it was after a dropped connection or a leader's
//! rewind; a new stream (another index or term) starts over.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::thread::JoinHandle;

use super::{Group, Outbound};
use crate::constants::SNAPSHOT_CHUNK_BYTES;
use crate::constants::{SNAPSHOT_GIVE_UP_MS, SNAPSHOT_RESEND_MS};
use crate::kv::StateMachine;
use crate::net::codec::{self, Envelope, PeerHeader, SnapshotChunk};
use crate::net::snapshot_stream::SendWindow;
use crate::raft::{InstallSnapshot, Role, SnapshotInstall, SnapshotResponse};
use crate::storage::hard_state;
use crate::storage::snapshot_file::{self, SnapshotMeta};
use crate::types::{LogIndex, NodeId, Term};
use crate::wire::WireError;

/// The snapshot streams of a group.
#[derive(Debug, Default)]
pub(super) struct Streams {
    sending: Vec<Sending>,
    /// Followers that asked for a snapshot when this node had none: given
    /// up at the next tick.
    unavailable: Vec<NodeId>,
    receiving: Option<Receiving>,
    installing: Option<Installing>,
    /// The stream installed last: (index, term, bytes). Its chunks, resent
    /// by a leader that missed the final answer, are answered `done`.
    installed: Option<(LogIndex, Term, u64)>,
    /// Bytes per chunk sent (0: `SNAPSHOT_CHUNK_BYTES`; tests use small
    /// chunks to make streams long).
    pub(super) chunk_bytes: u64,
}

impl Streams {
    /// Whether a snapshot is arriving or being installed here.
    pub(super) fn receiving_any(&self) -> bool {
        self.receiving.is_some() || self.installing.is_some()
    }
}

/// A leader's stream of its snapshot file to one follower.
#[derive(Debug)]
struct Sending {
    to: NodeId,
    snapshot: InstallSnapshot,
    file: File,
    window: SendWindow,
}

/// A follower's snapshot arriving from the leader.
#[derive(Debug)]
struct Receiving {
    snapshot: InstallSnapshot,
    total: u64,
    /// Every byte before this offset is in the file.
    next: u64,
    file: File,
    path: PathBuf,
}

/// A complete snapshot being verified and loaded on a thread.
#[derive(Debug)]
struct Installing {
    snapshot: InstallSnapshot,
    total: u64,
    thread: JoinHandle<Result<Loaded, String>>,
}

/// A verified snapshot, adopted as this node's file, and its state.
#[derive(Debug)]
struct Loaded {
    meta: SnapshotMeta,
    path: PathBuf,
    machine: Option<StateMachine>,
}

impl Group {
    fn envelope(&self, to: NodeId) -> Envelope {
        Envelope {
            group: self.id,
            from: self.core.id(),
            to,
            term: self.core.term(),
        }
    }

    /// `Action::SendSnapshot`: (re)start streaming the latest snapshot
    /// file to `to`.
    pub(super) fn stream_snapshot(&mut self, to: NodeId, out: &mut Outbound) {
        let streams = &mut self.snapshots.streams;
        streams.sending.retain(|stream| stream.to != to);
        let opened = self
            .snapshots
            .latest
            .as_ref()
            .ok_or_else(|| "no snapshot here".to_owned())
            .and_then(|(meta, path)| {
                let file =
                    File::open(path).map_err(|error| format!("{}: {error}", path.display()))?;
                let total = file
                    .metadata()
                    .map_err(|error| format!("{}: {error}", path.display()))?
                    .len();
                Ok((meta.index, meta.term, file, total))
            });
        match opened {
            Ok((last_index, last_term, file, total)) => {
                tracing::info!(log = %self.name, peer = %to, %last_index, bytes = total, "streaming a snapshot");
                self.snapshots.streams.sending.push(Sending {
                    to,
                    snapshot: InstallSnapshot {
                        last_index,
                        last_term,
                    },
                    file,
                    window: SendWindow::new(total, self.now_ms),
                });
                self.pump(to, out);
            }
            Err(reason) => {
                tracing::warn!(log = %self.name, peer = %to, %reason, "a peer needs a snapshot");
                self.snapshots.streams.unavailable.push(to);
            }
        }
    }

    /// Sends the chunks the window to `to` allows, read from the file now.
    fn pump(&mut self, to: NodeId, out: &mut Outbound) {
        let envelope = self.envelope(to);
        let Some(position) = self
            .snapshots
            .streams
            .sending
            .iter()
            .position(|stream| stream.to == to)
        else {
            return;
        };
        let chunk_bytes = match self.snapshots.streams.chunk_bytes {
            0 => SNAPSHOT_CHUNK_BYTES as u64,
            bytes => bytes,
        };
        let stream = &mut self.snapshots.streams.sending[position];
        let mut buffer = Vec::new();
        for range in stream.window.next_ranges(chunk_bytes) {
            buffer.resize(range.len as usize, 0);
            if let Err(error) = stream.file.read_exact_at(&mut buffer, range.offset) {
                tracing::error!(log = %self.name, peer = %to, %error, "reading a snapshot to send");
                // Resent after SNAPSHOT_RESEND_MS, given up after SNAPSHOT_GIVE_UP_MS.
                stream.window.rewind(stream.window.progress_ms);
                return;
            }
            let chunk = SnapshotChunk {
                snapshot: stream.snapshot,
                total_bytes: stream.window.total,
                offset: range.offset,
                data: &buffer,
                done: range.done,
            };
            out.peers
                .push((to, codec::encode_snapshot_chunk(envelope, &chunk).into()));
        }
    }

    /// A follower answered a stream (the core stepped the message).
    pub(super) fn snapshot_response(
        &mut self,
        from: NodeId,
        term: Term,
        response: SnapshotResponse,
        out: &mut Outbound,
    ) {
        let leads = self.core.role() == Role::Leader && self.core.term() == term;
        let streams = &mut self.snapshots.streams.sending;
        let Some(position) = streams.iter().position(|stream| stream.to == from) else {
            return;
        };
        if !leads {
            return;
        }
        if response.done {
            let stream = streams.swap_remove(position);
            tracing::info!(log = %self.name, peer = %from, index = %stream.snapshot.last_index, "snapshot installed by the peer");
            let mut actions = std::mem::take(&mut self.actions);
            self.core.snapshot_sent(from, true, &mut actions);
            self.execute(&mut actions, None, None, out);
            self.actions = actions;
            return;
        }
        streams[position]
            .window
            .acknowledge(response.next_offset, self.now_ms);
        self.pump(from, out);
    }

    /// A chunk of a leader's stream arrived (the core stepped its header):
    /// write it, answer with the offset needed next, and start the install
    /// once the file is complete. `frame` is the whole message.
    pub(super) fn snapshot_chunk(
        &mut self,
        header: &PeerHeader,
        frame: &[u8],
        out: &mut Outbound,
    ) -> Result<(), WireError> {
        let follows = self.core.role() == Role::Follower
            && self.core.leader() == header.from
            && self.core.term() == header.term;
        let Some(dir) = self.snapshots.dir.clone() else {
            return Ok(());
        };
        let answer = codec::with_snapshot_chunk(frame, |chunk| {
            if !follows {
                return None;
            }
            self.receive_chunk(&dir, &chunk)
        })?;
        if let Some(response) = answer {
            out.peers.push((
                header.from,
                codec::encode_snapshot_response(self.envelope(header.from), response).into(),
            ));
        }
        Ok(())
    }

    fn receive_chunk(
        &mut self,
        dir: &std::path::Path,
        chunk: &SnapshotChunk<'_>,
    ) -> Option<SnapshotResponse> {
        let streams = &mut self.snapshots.streams;
        let done = |total| SnapshotResponse {
            next_offset: total,
            done: true,
        };
        let need = |next_offset| SnapshotResponse {
            next_offset,
            done: false,
        };
        let (index, term) = (chunk.snapshot.last_index, chunk.snapshot.last_term);
        if streams.installed == Some((index, term, chunk.total_bytes))
            || self.core.snapshot_install(index, term) == SnapshotInstall::Ignore
        {
            // Installed already, or not ahead of what this node has.
            return Some(done(chunk.total_bytes));
        }
        if let Some(installing) = &streams.installing {
            // Its stream is whole here: say so (the leader stops resending
            // and waits); `done` follows when the install ends. Another
            // stream waits for the install.
            return (installing.snapshot == chunk.snapshot).then(|| need(installing.total));
        }
        let same = streams.receiving.as_ref().is_some_and(|receiving| {
            receiving.snapshot == chunk.snapshot && receiving.total == chunk.total_bytes
        });
        if !same {
            if let Some(old) = streams.receiving.take() {
                let _ = std::fs::remove_file(&old.path);
            }
            if chunk.offset != 0 {
                return Some(need(0));
            }
            if let Err(error) = hard_state::create_dir_durably(dir) {
                tracing::error!(log = %self.name, %error, "creating the snapshot directory");
                return None;
            }
            let path = snapshot_file::receive_path(dir, index);
            let file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path);
            match file {
                Ok(file) => {
                    tracing::info!(log = %self.name, %index, bytes = chunk.total_bytes, "receiving a snapshot");
                    streams.receiving = Some(Receiving {
                        snapshot: chunk.snapshot,
                        total: chunk.total_bytes,
                        next: 0,
                        file,
                        path,
                    });
                }
                Err(error) => {
                    tracing::error!(log = %self.name, path = %path.display(), %error, "creating a received snapshot");
                    return None;
                }
            }
        }
        let receiving = streams.receiving.as_mut().expect("set above");
        if chunk.offset != receiving.next {
            return Some(need(receiving.next));
        }
        if let Err(error) = receiving.file.write_all_at(chunk.data, chunk.offset) {
            tracing::error!(log = %self.name, path = %receiving.path.display(), %error, "writing a received snapshot");
            let old = streams.receiving.take().expect("receiving");
            let _ = std::fs::remove_file(&old.path);
            return Some(need(0));
        }
        receiving.next += chunk.data.len() as u64;
        if receiving.next < receiving.total {
            return Some(need(receiving.next));
        }
        let receiving = streams.receiving.take().expect("receiving");
        let dir = dir.to_path_buf();
        let kv = self.kv.is_some();
        let snapshot = receiving.snapshot;
        let thread = std::thread::Builder::new()
            .name("rast-install".into())
            .spawn(move || load(receiving, &dir, kv));
        match thread {
            Ok(thread) => {
                streams.installing = Some(Installing {
                    snapshot,
                    total: chunk.total_bytes,
                    thread,
                });
                None
            }
            Err(error) => {
                tracing::error!(log = %self.name, %error, "starting a snapshot install");
                Some(need(0))
            }
        }
    }

    /// Each tick: give up streams to followers that made no progress for
    /// too long, resend stalled ones, and finish an install whose thread
    /// is done.
    pub(super) fn streams_tick(&mut self, now_ms: u64, out: &mut Outbound) {
        let mut given_up = std::mem::take(&mut self.snapshots.streams.unavailable);
        let mut resend = Vec::new();
        let leading = self.core.role() == Role::Leader;
        self.snapshots.streams.sending.retain_mut(|stream| {
            let idle = now_ms.saturating_sub(stream.window.progress_ms);
            if !leading {
                false
            } else if idle >= SNAPSHOT_GIVE_UP_MS {
                given_up.push(stream.to);
                false
            } else {
                if idle >= SNAPSHOT_RESEND_MS {
                    stream.window.rewind(now_ms);
                    resend.push(stream.to);
                }
                true
            }
        });
        for to in resend {
            self.pump(to, out);
        }
        if !given_up.is_empty() {
            let mut actions = std::mem::take(&mut self.actions);
            for to in given_up {
                tracing::warn!(log = %self.name, peer = %to, "snapshot stream given up");
                self.core.snapshot_sent(to, false, &mut actions);
            }
            self.execute(&mut actions, None, None, out);
            self.actions = actions;
        }
        if self
            .snapshots
            .streams
            .installing
            .as_ref()
            .is_some_and(|installing| installing.thread.is_finished())
        {
            let installing = self.snapshots.streams.installing.take().expect("checked");
            let (snapshot, total) = (installing.snapshot, installing.total);
            match installing.thread.join() {
                Ok(Ok(loaded)) => self.install(loaded, total, out),
                Ok(Err(reason)) => {
                    tracing::error!(log = %self.name, index = %snapshot.last_index, %reason, "a received snapshot was refused");
                }
                Err(_) => {
                    tracing::error!(log = %self.name, "the snapshot install thread panicked");
                }
            }
        }
    }

    /// Replaces this node's state with a verified snapshot, as the core
    /// says: the log dropped below it (the log holds its last entry) or
    /// reset after it, then the machine, then the core. The file is
    /// already this node's snapshot, so a crash at any point restarts from
    /// it (see `log_after_snapshot`).
    fn install(&mut self, loaded: Loaded, total: u64, out: &mut Outbound) {
        let Loaded {
            meta,
            path,
            machine,
        } = loaded;
        let (index, term) = (meta.index, meta.term);
        let membership = match super::membership_of(&meta.members) {
            Ok(membership) => membership,
            Err(error) => {
                tracing::error!(log = %self.name, %error, "a received snapshot's configuration");
                return;
            }
        };
        let install = self.core.snapshot_install(index, term);
        let stored = match install {
            SnapshotInstall::Ignore => Ok(()),
            SnapshotInstall::KeepLog => self.storage.drop_prefix(index),
            SnapshotInstall::ResetLog => self.storage.reset(index.next()),
        };
        if let Err(error) = stored {
            self.fail_storage(&error, out);
            return;
        }
        tracing::info!(log = %self.name, %index, ?install, "snapshot installed");
        if self
            .snapshots
            .latest
            .as_ref()
            .is_none_or(|(latest, _)| latest.index < index)
        {
            self.snapshots.latest = Some((meta.clone(), path));
        }
        self.snapshots.streams.installed = Some((index, term, total));
        if install != SnapshotInstall::Ignore {
            if let (Some(current), Some(machine)) = (self.kv.as_mut(), machine) {
                *current = machine;
            }
            self.learn_addresses(&meta.members);
            self.durable_index = self.durable_index.max(index).min(self.storage.last_index());
            let mut actions = std::mem::take(&mut self.actions);
            self.core
                .snapshot_installed(index, term, membership, &mut actions);
            self.execute(&mut actions, None, None, out);
            self.actions = actions;
            self.snapshots.bytes_after_compaction = self.storage.stored_bytes();
        }
        let leader = self.core.leader();
        if leader != NodeId::ZERO && leader != self.core.id() {
            out.peers.push((
                leader,
                codec::encode_snapshot_response(
                    self.envelope(leader),
                    SnapshotResponse {
                        next_offset: total,
                        done: true,
                    },
                )
                .into(),
            ));
        }
    }
}

/// On the install thread: syncs the complete file, verifies it, makes it
/// this node's snapshot and loads the machine from it.
fn load(receiving: Receiving, dir: &std::path::Path, kv: bool) -> Result<Loaded, String> {
    let Receiving {
        snapshot,
        file,
        path,
        ..
    } = receiving;
    let failed = |error: &dyn std::fmt::Display| {
        let _ = std::fs::remove_file(&path);
        format!("{}: {error}", path.display())
    };
    file.sync_all().map_err(|error| failed(&error))?;
    drop(file);
    let (meta, path) = snapshot_file::adopt(dir, &path).map_err(|error| failed(&error))?;
    if (meta.index, meta.term) != (snapshot.last_index, snapshot.last_term) {
        let _ = std::fs::remove_file(&path);
        return Err(format!(
            "{}: the file is of index {} term {}, the stream said {} {}",
            path.display(),
            meta.index,
            meta.term,
            snapshot.last_index,
            snapshot.last_term
        ));
    }
    let machine = if kv {
        Some(super::snapshot::machine_from_file(&path, &meta)?)
    } else {
        None
    };
    Ok(Loaded {
        meta,
        path,
        machine,
    })
}
