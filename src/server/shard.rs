//! One core's event loop: its ring, connections, peer links and groups.
//!
//! A loop turn:
//!
//! ```text
//!  submit_and_wait(1) ─► drain ready ops ─► accept / recv / send / connect / tick / wake
//!        ▲                                   │ frames → groups (step, propose, read, tail)
//!        │                                   ▼
//!  post recvs & sends ◄─ deliver outbound ◄─ each group: flush (one sync per file), poll durability
//! ```
//!
//! Storage completions arrive on the same ring; the groups collect them in
//! their `turn`. Nothing here blocks except `submit_and_wait`.

use std::collections::HashMap;
use std::fs::File;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use crossbeam_channel::{Receiver, Sender, TrySendError};

mod splice;

use self::splice::{Splice, Start};
use super::connection::{Connection, Role};
use super::group::{ClientOut, Group, Outbound, Piece, ReplyTo};
use super::metrics::PayloadPath;
use super::{ServerError, Settings, StorageMode, stopping};
use crate::constants::TICK_MS;
use crate::io::ring::Owned;
use crate::io::{OpId, Ring, SharedRing};
use crate::net::codec::{self, PeerBody};
use crate::raft::{self, BatchSummary};
use crate::storage::LogStorage;
use crate::storage::memory::{MemoryLog, SyncMode};
use crate::storage::segment::{SegmentLog, SegmentOptions};
use crate::types::{LogId, LogIndex, NodeId};
use crate::wire::client::{
    self as protocol, ErrorKind, Hello, HelloResponse, Request, RequestBody, ResponseBody,
};
use crate::wire::{BatchView, FrameLength, WireError, frame_length};

/// Connections waiting in a core's handoff queue, at most.
const HANDOFF_QUEUE_MAX: usize = 1024;

/// How often groups stopped by a full disk are considered for reopening.
const REOPEN_INTERVAL_MS: u64 = 1000;

/// Free bytes the data directory's file system needs before a group
/// stopped by a full disk is reopened: room for two segments.
const REOPEN_FREE_BYTES_MIN: u64 = 2 * crate::constants::SEGMENT_BYTES_MAX;

/// Longest wait between reconnect attempts to a peer.
const RECONNECT_MS_MAX: u64 = 1000;

/// Bytes queued for one connection beyond which its reader is considered
/// gone (paused, partitioned, or never reading) and the connection is
/// dropped instead of buffering more: twice a peer's inflight window.
const OUTBOX_BYTES_MAX: usize = 2 * crate::constants::INFLIGHT_BYTES_MAX as usize;

/// Batch bytes of an AppendEntries from which a follower splices them
/// (socket → pipe → file) instead of receiving them into a buffer: below
/// it, the extra system calls cost more than the copy saves.
pub const SPLICE_BYTES_MIN: u64 = 64 * 1024;

/// A connection moving to the core that owns its traffic.
#[derive(Debug)]
pub struct Handoff {
    socket: OwnedFd,
    unread: Vec<u8>,
    role: Role,
}

/// The channels and wake-up descriptors between cores.
#[derive(Debug)]
pub struct Wiring {
    senders: Vec<Sender<Handoff>>,
    receivers: Vec<Receiver<Handoff>>,
    eventfds: Vec<Arc<OwnedFd>>,
}

/// One core's end of the wiring.
#[derive(Debug)]
pub struct CoreWiring {
    senders: Vec<Sender<Handoff>>,
    receiver: Receiver<Handoff>,
    eventfds: Vec<Arc<OwnedFd>>,
}

impl Wiring {
    /// Channels and eventfds for `cores` cores.
    pub fn new(cores: u32) -> Result<Self, ServerError> {
        let mut senders = Vec::new();
        let mut receivers = Vec::new();
        let mut eventfds = Vec::new();
        for _ in 0..cores {
            let (sender, receiver) = crossbeam_channel::bounded(HANDOFF_QUEUE_MAX);
            senders.push(sender);
            receivers.push(receiver);
            let eventfd =
                nix::sys::eventfd::EventFd::from_flags(nix::sys::eventfd::EfdFlags::EFD_CLOEXEC)
                    .map_err(|errno| ServerError::Io {
                        what: "creating an eventfd".into(),
                        source: errno.into(),
                    })?;
            eventfds.push(Arc::new(OwnedFd::from(eventfd)));
        }
        Ok(Self {
            senders,
            receivers,
            eventfds,
        })
    }

    /// Core `index`'s end.
    pub fn for_core(&self, index: u32) -> CoreWiring {
        CoreWiring {
            senders: self.senders.clone(),
            receiver: self.receivers[index as usize].clone(),
            eventfds: self.eventfds.clone(),
        }
    }
}

/// Who owns an operation in flight.
#[derive(Clone, Copy, Debug)]
enum Owner {
    Accept,
    Timer,
    Wake,
    Recv(usize),
    Send(usize),
    Connect(usize),
    /// The write of a spliced message's bytes already received, for the
    /// connection in the slot of that generation.
    SpliceHead(usize, u64),
    /// Socket → pipe.
    SpliceIn(usize, u64),
    /// Pipe → file.
    SpliceOut(usize, u64),
    /// Stored batches, file → pipe, for a client.
    FileIn(usize, u64),
    /// Pipe → socket.
    FileOut(usize, u64),
}

/// A connection slot: the connection and its generation.
#[derive(Debug)]
struct Slot {
    connection: Connection,
    generation: u64,
    /// Hand to this core once idle.
    handoff_to: Option<u32>,
    /// Waiting for a group's splice (from another connection) to finish.
    blocked: bool,
    /// The AppendEntries being spliced from this connection.
    splice: Option<Box<Splice>>,
    /// The connection's splice pipe (read end, write end), made on first use.
    pipe: Option<(Rc<File>, Rc<File>)>,
}

/// Our outgoing link to one peer.
#[derive(Debug)]
struct PeerLink {
    id: NodeId,
    address: String,
    connection: Option<usize>,
    connecting: bool,
    retry_at_ms: u64,
    backoff_ms: u64,
}

/// One core's server state.
pub struct Shard {
    index: u32,
    settings: Arc<Settings>,
    ring: SharedRing,
    listener: Rc<File>,
    wake: Rc<File>,
    wiring: CoreWiring,
    slots: Vec<Option<Slot>>,
    free_slots: Vec<usize>,
    next_generation: u64,
    ops: HashMap<OpId, Owner>,
    groups: HashMap<LogId, Group>,
    /// Groups with a splice in flight: their other messages wait.
    splicing: std::collections::HashSet<LogId>,
    links: Vec<PeerLink>,
    /// Groups closed after a full disk, to open again (see
    /// `reopen_groups`), with their names.
    reopening: Vec<(LogId, String)>,
    /// When `reopen_groups` runs next.
    reopen_at_ms: u64,
    started: Instant,
    ready: Vec<OpId>,
    summaries: Vec<BatchSummary>,
    out: Outbound,
    metrics: Arc<super::metrics::Metrics>,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Shard")
            .field("index", &self.index)
            .field("groups", &self.groups.len())
            .finish_non_exhaustive()
    }
}

impl Shard {
    /// Sets up core `index`: its listener, ring, and the logs it owns.
    pub fn new(
        index: u32,
        settings: Arc<Settings>,
        wiring: CoreWiring,
        metrics: Arc<super::metrics::Metrics>,
    ) -> Result<Self, ServerError> {
        let listener =
            crate::io::listen_reuseport(settings.listen).map_err(|source| ServerError::Io {
                what: format!("listening on {}", settings.listen),
                source,
            })?;
        let ring = Ring::new().map_err(|source| ServerError::Io {
            what: "creating an io_uring".into(),
            source,
        })?;
        let wake = wiring.eventfds[index as usize]
            .as_fd()
            .try_clone_to_owned()
            .map_err(|source| ServerError::Io {
                what: "duplicating the eventfd".into(),
                source,
            })?;
        let links = settings
            .peers
            .iter()
            .filter(|(id, _)| *id != settings.id)
            .map(|(id, address)| PeerLink {
                id: *id,
                address: address.clone(),
                connection: None,
                connecting: false,
                retry_at_ms: 0,
                backoff_ms: 50,
            })
            .collect();
        let mut shard = Self {
            index,
            ring: Rc::new(std::cell::RefCell::new(ring)),
            listener: Rc::new(File::from(listener)),
            wake: Rc::new(File::from(wake)),
            wiring,
            slots: Vec::new(),
            free_slots: Vec::new(),
            next_generation: 1,
            ops: HashMap::new(),
            groups: HashMap::new(),
            splicing: std::collections::HashSet::new(),
            links,
            reopening: Vec::new(),
            reopen_at_ms: 0,
            started: Instant::now(),
            ready: Vec::new(),
            summaries: Vec::new(),
            out: Outbound::default(),
            settings,
            metrics,
        };
        for name in shard.settings.logs.clone() {
            let id = LogId::from_name(&name);
            if shard.owner_of(id) == index {
                shard
                    .group(id, Some(&name))
                    .map_err(ServerError::Settings)?;
            }
        }
        shard.open_logs_on_disk();
        Ok(shard)
    }

    /// Opens, before the loop starts, every other log of this core found in
    /// the data directory (logs created at run time by a request): their
    /// recovery scans and syncs happen here, not on the loop at their first
    /// request, and the node takes part in their groups from the start.
    fn open_logs_on_disk(&mut self) {
        if self.settings.storage != StorageMode::Disk {
            return;
        }
        let Ok(entries) = std::fs::read_dir(&self.settings.data) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(id) = name
                .to_str()
                .filter(|name| name.len() == 16)
                .and_then(|name| u64::from_str_radix(name, 16).ok())
                .map(LogId)
            else {
                continue;
            };
            if self.owner_of(id) != self.index || self.groups.contains_key(&id) {
                continue;
            }
            if let Err(error) = self.group(id, None) {
                tracing::error!(log = %format!("{:016x}", id.get()), %error, "opening a log found on disk");
            }
        }
    }

    /// Runs until a stop signal, then syncs every log and returns.
    pub fn run(mut self) -> Result<(), ServerError> {
        let io_error = |what: &str| {
            let what = what.to_owned();
            move |source| ServerError::Io { what, source }
        };
        self.arm(Owner::Accept).map_err(io_error("arming accept"))?;
        self.arm(Owner::Timer)
            .map_err(io_error("arming the tick"))?;
        self.arm(Owner::Wake)
            .map_err(io_error("arming the wake-up"))?;
        while !stopping() {
            self.ring
                .borrow_mut()
                .submit_and_wait(1)
                .map_err(io_error("waiting on the ring"))?;
            self.ring.borrow_mut().drain_ready(&mut self.ready);
            let ready = std::mem::take(&mut self.ready);
            for op in &ready {
                if let Some(owner) = self.ops.remove(op) {
                    self.complete(owner, *op);
                }
            }
            self.ready = ready;
            self.ready.clear();
            self.end_turn();
        }
        self.shutdown();
        Ok(())
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn owner_of(&self, id: LogId) -> u32 {
        (id.get() % u64::from(self.settings.cores)) as u32
    }

    /// Arms the accept, tick or wake-up operation.
    fn arm(&mut self, owner: Owner) -> std::io::Result<()> {
        let op = {
            let mut ring = self.ring.borrow_mut();
            match owner {
                Owner::Accept => ring.accept(&self.listener)?,
                Owner::Timer => ring.timeout(Duration::from_millis(TICK_MS))?,
                Owner::Wake => ring.read_eventfd(&self.wake)?,
                _ => unreachable!("only loop operations are armed"),
            }
        };
        self.ops.insert(op, owner);
        Ok(())
    }

    fn complete(&mut self, owner: Owner, op: OpId) {
        let Some((result, buffer)) = self.ring.borrow_mut().take_owned(op) else {
            return;
        };
        match owner {
            Owner::Accept => {
                if result >= 0 {
                    let socket = crate::io::adopt_socket(result);
                    self.insert(Connection::new(Rc::new(socket), Role::Handshake, &[]), None);
                } else {
                    tracing::warn!(errno = -result, "accept failed");
                }
                self.rearm(Owner::Accept);
            }
            Owner::Timer => {
                self.tick();
                self.rearm(Owner::Timer);
            }
            Owner::Wake => {
                self.receive_handoffs();
                self.rearm(Owner::Wake);
            }
            Owner::Recv(slot) => self.received(slot, result, buffer),
            Owner::Send(slot) => {
                if let Some(entry) = self.slots[slot].as_mut()
                    && !entry.connection.send_done(result)
                {
                    tracing::debug!(slot, errno = -result, "send failed; closing");
                }
            }
            Owner::Connect(slot) => self.connected(slot, result),
            Owner::SpliceHead(slot, generation) => self.spliced_head(slot, generation, result),
            Owner::SpliceIn(slot, generation) => self.spliced_in(slot, generation, result),
            Owner::SpliceOut(slot, generation) => self.spliced_out(slot, generation, result),
            Owner::FileIn(slot, generation) => self.file_in(slot, generation, result),
            Owner::FileOut(slot, generation) => self.file_out(slot, generation, result),
        }
    }

    fn rearm(&mut self, owner: Owner) {
        if let Err(error) = self.arm(owner) {
            tracing::error!(%error, ?owner, "could not re-arm a loop operation");
        }
    }

    fn insert(&mut self, connection: Connection, link: Option<usize>) -> usize {
        let generation = self.next_generation;
        self.next_generation += 1;
        let slot = Slot {
            connection,
            generation,
            handoff_to: None,
            blocked: false,
            splice: None,
            pipe: None,
        };
        let index = if let Some(index) = self.free_slots.pop() {
            self.slots[index] = Some(slot);
            index
        } else {
            self.slots.push(Some(slot));
            self.slots.len() - 1
        };
        if let Some(link) = link {
            self.links[link].connection = Some(index);
        }
        index
    }

    fn tick(&mut self) {
        let now = self.now_ms();
        self.abandon_stalled_splices(now);
        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as u64);
        for group in self.groups.values_mut() {
            group.tick(now, &mut self.out);
            // A splice still moving bytes into the log owns its tail: a
            // snapshot install (which may reset the log) waits for it.
            if !self.splicing.contains(&group.id) {
                group.snapshot_tick(now, unix_ms, &mut self.out);
            }
        }
        if now >= self.reopen_at_ms {
            self.reopen_at_ms = now + REOPEN_INTERVAL_MS;
            self.reopen_groups();
        }
        let gauges = self.groups.values().map(Group::gauges).collect();
        self.metrics.publish(self.index, gauges);
        for link in 0..self.links.len() {
            let entry = &self.links[link];
            if entry.connection.is_none() && !entry.connecting && now >= entry.retry_at_ms {
                self.connect(link);
            }
        }
    }

    /// Reopens the groups stopped by a full disk once it has room again, as
    /// a restart would: the store recovers from its files, the core from
    /// the store, and the node rejoins its cluster for that log. Waits
    /// until no write of a dropped store is still in the kernel.
    fn reopen_groups(&mut self) {
        // A store in memory reopened would be empty: a node that forgot
        // its log and its vote. Only files come back.
        if self.settings.storage != StorageMode::Disk {
            return;
        }
        let stopped: Vec<(LogId, String)> = self
            .groups
            .values()
            // A splice still moving bytes into the closed store's file
            // (begun before the failure) must end first: its reservation
            // and its writes belong to that store.
            .filter(|group| group.reopenable() && !self.splicing.contains(&group.id))
            .map(|group| (group.id, group.name.clone()))
            .collect();
        if stopped.is_empty() && self.reopening.is_empty() {
            return;
        }
        if !stopped.is_empty() && !self.disk_has_room() {
            return;
        }
        // Close them now; open them once no write of theirs is in flight.
        for (id, name) in stopped {
            if let Some(mut group) = self.groups.remove(&id) {
                group.close(&mut self.out);
            }
            self.reopening.push((id, name));
        }
        if self.ring.borrow().abandoned_in_flight() > 0 {
            return;
        }
        for (id, name) in std::mem::take(&mut self.reopening) {
            match self.group(id, Some(&name)) {
                Ok(_) => tracing::info!(log = %name, "log reopened: the disk has room again"),
                Err(error) => tracing::error!(log = %name, %error, "reopening the log"),
            }
        }
    }

    /// Whether the data directory's file system has room to reopen a log
    /// stopped by a full disk.
    fn disk_has_room(&self) -> bool {
        match nix::sys::statvfs::statvfs(&self.settings.data) {
            Ok(stats) => stats.blocks_available() * stats.fragment_size() >= REOPEN_FREE_BYTES_MIN,
            Err(errno) => {
                tracing::warn!(%errno, "checking free space of the data directory");
                false
            }
        }
    }

    /// Opens our outgoing connection to a peer.
    fn connect(&mut self, link: usize) {
        let address: SocketAddr = match self.links[link].address.parse() {
            Ok(address) => address,
            Err(error) => {
                tracing::error!(peer = %self.links[link].id, address = %self.links[link].address, %error, "bad peer address");
                self.links[link].retry_at_ms = u64::MAX;
                return;
            }
        };
        let socket = match crate::io::tcp_socket(address) {
            Ok(socket) => Rc::new(socket),
            Err(error) => {
                tracing::warn!(%error, "could not create a socket");
                self.backoff(link);
                return;
            }
        };
        let role = Role::PeerOut(self.links[link].id.get());
        let slot = self.insert(Connection::new(Rc::clone(&socket), role, &[]), Some(link));
        let submitted = self.ring.borrow_mut().connect(&socket, address);
        match submitted {
            Ok(op) => {
                self.ops.insert(op, Owner::Connect(slot));
                self.links[link].connecting = true;
            }
            Err(error) => {
                tracing::warn!(%error, "could not submit a connect");
                self.links[link].connection = None;
                self.slots[slot] = None;
                self.free_slots.push(slot);
                self.backoff(link);
            }
        }
    }

    fn backoff(&mut self, link: usize) {
        let now = self.now_ms();
        let entry = &mut self.links[link];
        entry.connecting = false;
        entry.connection = None;
        entry.retry_at_ms = now + entry.backoff_ms;
        entry.backoff_ms = (entry.backoff_ms * 2).min(RECONNECT_MS_MAX);
    }

    fn connected(&mut self, slot: usize, result: i32) {
        let Some(link) = self
            .links
            .iter()
            .position(|link| link.connection == Some(slot))
        else {
            return;
        };
        self.links[link].connecting = false;
        if result < 0 {
            tracing::debug!(peer = %self.links[link].id, errno = -result, "connect failed");
            if let Some(entry) = self.slots[slot].as_mut() {
                entry.connection.closed = true;
            }
            self.backoff(link);
            return;
        }
        self.links[link].backoff_ms = 50;
        tracing::info!(peer = %self.links[link].id, core = self.index, "connected to peer");
        let hello = protocol::encode_hello(&Hello {
            protocol_version: protocol::PROTOCOL_VERSION,
            cluster_id: self.settings.cluster_id.clone(),
            node_id: self.settings.id.get(),
            token: self.settings.token.clone(),
            core: self.index,
            cores: self.settings.cores,
        });
        if let Some(entry) = self.slots[slot].as_mut() {
            entry.connection.queue(&hello);
        }
    }

    fn received(&mut self, slot: usize, result: i32, buffer: Option<Owned>) {
        let Some(entry) = self.slots[slot].as_mut() else {
            return;
        };
        if !entry.connection.recv_done(result, buffer) {
            return;
        }
        if let Err(reason) = self.process(slot) {
            let Some(entry) = self.slots[slot].as_mut() else {
                return;
            };
            tracing::warn!(slot, role = ?entry.connection.role, %reason, "closing connection");
            entry.connection.closed = true;
        }
    }

    /// Handles every complete frame in a connection's inbox.
    fn process(&mut self, slot: usize) -> Result<(), String> {
        loop {
            let Some(entry) = self.slots[slot].as_ref() else {
                return Ok(());
            };
            if entry.connection.closed
                || entry.handoff_to.is_some()
                || entry.blocked
                || entry.splice.is_some()
            {
                return Ok(());
            }
            let role = entry.connection.role;
            let consumed = match role {
                Role::Handshake => self.process_hello(slot)?,
                Role::Client => self.process_client(slot)?,
                Role::PeerIn(_) => self.process_peer(slot)?,
                Role::PeerOut(_) => self.process_hello_response(slot)?,
            };
            if consumed == 0 {
                return Ok(());
            }
        }
    }

    /// The next complete frame (and `extra` bytes after it): its length, or
    /// `None` when more bytes are needed.
    fn complete_frame(connection: &Connection) -> Result<Option<usize>, String> {
        match frame_length(connection.unread()).map_err(|error| error.to_string())? {
            FrameLength::Complete { frame_bytes, .. }
                if connection.unread().len() >= frame_bytes =>
            {
                Ok(Some(frame_bytes))
            }
            _ => Ok(None),
        }
    }

    fn process_hello(&mut self, slot: usize) -> Result<usize, String> {
        let entry = self.slots[slot].as_mut().expect("present");
        let Some(length) = Self::complete_frame(&entry.connection)? else {
            return Ok(0);
        };
        let hello = protocol::decode_hello(&entry.connection.unread()[..length])
            .map_err(|error| format!("bad hello: {error}"))?;
        entry.connection.consume(length);
        let refusal = if hello.protocol_version != protocol::PROTOCOL_VERSION {
            Some(format!(
                "protocol version {} (this node speaks {})",
                hello.protocol_version,
                protocol::PROTOCOL_VERSION
            ))
        } else if hello.cluster_id != self.settings.cluster_id {
            Some(format!(
                "cluster id {:?} does not match this node's {:?}",
                hello.cluster_id, self.settings.cluster_id
            ))
        } else if hello.token != self.settings.token {
            Some("wrong token".to_owned())
        } else if hello.node_id != 0 && hello.cores != self.settings.cores {
            Some(format!(
                "peer runs {} cores, this node {}: every node needs the same --cores",
                hello.cores, self.settings.cores
            ))
        } else if hello.node_id == self.settings.id.get() {
            // Membership changes at run time, so any node presenting the
            // cluster id and token may link; only the configurations in the
            // logs decide who votes.
            Some(format!("node {} is this node", hello.node_id))
        } else {
            None
        };
        let answer = match &refusal {
            Some(reason) => HelloResponse::Refused(reason.clone()),
            None => HelloResponse::Ok(self.settings.id.get()),
        };
        entry
            .connection
            .queue(&protocol::encode_hello_response(&answer));
        if let Some(reason) = refusal {
            tracing::warn!(%reason, "refused a connection");
            entry.connection.close_after_flush = true;
            return Ok(0);
        }
        if hello.node_id == 0 {
            entry.connection.role = Role::Client;
        } else {
            entry.connection.role = Role::PeerIn(hello.node_id);
            if hello.core != self.index {
                entry.handoff_to = Some(hello.core);
            }
        }
        Ok(length)
    }

    fn process_hello_response(&mut self, slot: usize) -> Result<usize, String> {
        let entry = self.slots[slot].as_mut().expect("present");
        let Some(length) = Self::complete_frame(&entry.connection)? else {
            return Ok(0);
        };
        let answer = protocol::decode_hello_response(&entry.connection.unread()[..length])
            .map_err(|error| format!("bad hello response: {error}"))?;
        entry.connection.consume(length);
        match answer {
            HelloResponse::Ok(_) => Ok(length),
            HelloResponse::Refused(reason) => Err(format!("peer refused us: {reason}")),
        }
    }

    fn process_peer(&mut self, slot: usize) -> Result<usize, String> {
        let entry = self.slots[slot].as_mut().expect("present");
        entry.connection.waiting_for = 0;
        let Some(length) = Self::complete_frame(&entry.connection)? else {
            return Ok(0);
        };
        let header = codec::decode(&entry.connection.unread()[..length], &mut self.summaries)
            .map_err(|error| format!("bad peer message: {error}"))?;
        let trailing = match header.body {
            PeerBody::AppendEntries { batch_bytes, .. } => batch_bytes,
            _ => 0,
        };
        let need = entry
            .connection
            .need(trailing)
            .map_err(|error| error.to_string())?;
        // While messages are large, read no further than each message's end
        // (a splicing follower: its header), into a block with room for it.
        if matches!(header.body, PeerBody::AppendEntries { .. }) {
            entry.connection.read_frames_of(need);
        }
        let Role::PeerIn(node) = entry.connection.role else {
            unreachable!("peer frames come on peer connections");
        };
        if header.from.get() != node || header.to != self.settings.id {
            return Err(format!(
                "message from {} to {} on the connection of node {node}",
                header.from, header.to
            ));
        }
        if (header.group.get() % u64::from(self.settings.cores)) as u32 != self.index {
            return Err(format!(
                "group {:x} belongs to another core",
                header.group.get()
            ));
        }
        if self.splicing.contains(&header.group) {
            entry.blocked = true;
            return Ok(0);
        }
        let buffered = entry.connection.unread().len() >= need;
        if !buffered
            && trailing >= SPLICE_BYTES_MIN
            && self.settings.zero_copy == super::ZeroCopy::Splice
        {
            match self.start_splice(slot, length, header, trailing)? {
                Start::UnderWay => return Ok(0),
                Start::NotYet => {
                    // The store finishes what must land first: this
                    // connection waits (its bytes stay in the socket) and
                    // tries again at the end of a turn.
                    let entry = self.slots[slot].as_mut().expect("present");
                    entry.blocked = true;
                    return Ok(0);
                }
                Start::Unsupported => {}
            }
        }
        if !buffered {
            let entry = self.slots[slot].as_mut().expect("present");
            entry.connection.waiting_for = need;
            return Ok(0);
        }
        if let Some(group) = self.groups.get(&header.group)
            && group.storage().writable_bytes() < trailing
        {
            let entry = self.slots[slot].as_mut().expect("present");
            entry.blocked = true;
            return Ok(0);
        }
        let entry = self.slots[slot].as_mut().expect("present");
        // The batch bytes are taken from the inbox as they are (no copy);
        // a snapshot chunk's bytes are inside its frame: the group reads
        // them from the whole frame.
        let bytes = if matches!(header.body, PeerBody::InstallSnapshot(_)) {
            entry.connection.take(need).freeze()
        } else {
            entry.connection.consume(length);
            entry.connection.take(need - length).freeze()
        };
        if matches!(header.body, PeerBody::AppendEntries { .. }) {
            let follower = self.metrics.counters.payload(PayloadPath::Follower);
            follower.add_payload(bytes.len() as u64);
        }
        let summaries = std::mem::take(&mut self.summaries);
        let mut out = std::mem::take(&mut self.out);
        let outcome = match self.group(header.group, None) {
            Ok(group) => group
                .step(&header, &summaries, &bytes, &mut out)
                .map_err(|error| format!("bad batches: {error}")),
            Err(reason) => {
                tracing::warn!(%reason, "dropping a peer message");
                Ok(())
            }
        };
        self.out = out;
        self.summaries = summaries;
        outcome.map(|()| need)
    }

    fn process_client(&mut self, slot: usize) -> Result<usize, String> {
        let entry = self.slots[slot].as_mut().expect("present");
        let Some(length) = Self::complete_frame(&entry.connection)? else {
            return Ok(0);
        };
        let request = protocol::decode_request(&entry.connection.unread()[..length])
            .map_err(|error| format!("bad request: {error}"))?;
        // An append carries its batch frame right after the request.
        let mut batch_bytes = None;
        if request.body == RequestBody::Append {
            let rest = &entry.connection.unread()[length..];
            match frame_length(rest) {
                Ok(FrameLength::Complete { frame_bytes, .. }) if rest.len() >= frame_bytes => {
                    entry.connection.read_frames_of(length + frame_bytes);
                    batch_bytes = Some(frame_bytes);
                }
                Ok(FrameLength::Complete { frame_bytes, .. }) => {
                    entry.connection.read_frames_of(length + frame_bytes);
                    // Room for the whole frame in one block: the next recv
                    // brings the rest right after what is here.
                    entry.connection.waiting_for = length + frame_bytes;
                    return Ok(0);
                }
                Ok(FrameLength::NeedHeader(need)) => {
                    entry.connection.waiting_for = length + need;
                    return Ok(0);
                }
                Err(error) => return Err(format!("bad batch frame: {error}")),
            }
        }
        entry.connection.waiting_for = 0;
        let name = if !request.log.is_empty() {
            request.log.clone()
        } else if matches!(
            request.body,
            RequestBody::Get { .. } | RequestBody::Write(_)
        ) {
            super::group::KV_LOG.to_owned()
        } else {
            "default".to_owned()
        };
        let id = LogId::from_name(&name);
        let owner = (id.get() % u64::from(self.settings.cores)) as u32;
        if owner != self.index {
            entry.handoff_to = Some(owner);
            return Ok(0);
        }
        let consumed = length + batch_bytes.unwrap_or(0);
        if let Some(frame_bytes) = batch_bytes
            && let Some(group) = self.groups.get(&id)
            && group.storage().writable_bytes() < frame_bytes as u64
        {
            // The write queue is full: stop reading this client until a
            // sync frees room (TCP pushes back on it meanwhile).
            let entry = self.slots[slot].as_mut().expect("present");
            entry.blocked = true;
            return Ok(0);
        }
        let entry = self.slots[slot].as_mut().expect("present");
        entry.connection.consume(length);
        // The batch frame is taken from the inbox as it is: checked, sealed
        // and stamped in place, then written and sent from there.
        let batch = batch_bytes.map(|frame_bytes| entry.connection.take(frame_bytes));
        if let Some(frame_bytes) = batch_bytes {
            let ingest = self.metrics.counters.payload(PayloadPath::Ingest);
            ingest.add_payload(frame_bytes as u64);
        }
        let reply = ReplyTo {
            connection: slot,
            generation: entry.generation,
            request_id: request.request_id,
        };
        self.handle_request(&name, id, &request, batch, reply);
        Ok(consumed)
    }

    fn handle_request(
        &mut self,
        name: &str,
        id: LogId,
        request: &Request,
        batch: Option<BytesMut>,
        reply: ReplyTo,
    ) {
        if let Err(reason) = check_log_name(name) {
            self.out.error(reply, ErrorKind::Invalid, reason);
            return;
        }
        let mut out = std::mem::take(&mut self.out);
        let metrics = Arc::clone(&self.metrics);
        match self.group(id, Some(name)) {
            Ok(group) => {
                Self::serve_request(&metrics.counters, group, request, batch, reply, &mut out);
            }
            Err(reason) => out.error(reply, ErrorKind::Unavailable, reason),
        }
        self.out = out;
    }

    fn serve_request(
        counters: &super::metrics::Counters,
        group: &mut Group,
        request: &Request,
        batch: Option<BytesMut>,
        reply: ReplyTo,
        out: &mut Outbound,
    ) {
        match &request.body {
            RequestBody::Append => {
                let mut frame = batch.expect("append carries a batch");
                match check_client_batch(&mut frame) {
                    Ok(count) => {
                        super::metrics::Counters::add(&counters.entries_appended, u64::from(count));
                        group.propose(frame, reply, out);
                    }
                    Err(error) => out.error(reply, ErrorKind::Invalid, error.to_string()),
                }
            }
            RequestBody::Read {
                from_index,
                max_entries,
            } => group.read(LogIndex(*from_index), *max_entries, reply, out),
            RequestBody::Tail {
                from_index,
                max_entries,
            } => group.tail(LogIndex(*from_index), *max_entries, reply, out),
            RequestBody::Status => {
                let status = group.status();
                out.reply(reply, ResponseBody::Status(status));
            }
            RequestBody::Get { key, stale } => group.get(key.clone(), *stale, reply, out),
            RequestBody::Write(command) => group.write(command.clone(), reply, out),
            RequestBody::Admin(request) => group.admin(request, reply, out),
        }
    }

    /// The group `id`, created (and its storage opened) on first use.
    fn group(&mut self, id: LogId, name: Option<&str>) -> Result<&mut Group, String> {
        if !self.groups.contains_key(&id) {
            if let Some(position) = self.reopening.iter().position(|(closed, _)| *closed == id) {
                // Closed after a full disk: opened again only once no write
                // of the closed store is in flight.
                if self.ring.borrow().abandoned_in_flight() > 0 {
                    return Err("the log is being reopened; retry".into());
                }
                self.reopening.swap_remove(position);
            }
            if self.groups.len() >= crate::constants::GROUPS_PER_CORE_MAX {
                return Err(format!(
                    "too many logs on this core (limit {})",
                    crate::constants::GROUPS_PER_CORE_MAX
                ));
            }
            if let Some(name) = name {
                check_log_name(name)?;
            }
            let name = name.map_or_else(|| format!("{:016x}", id.get()), str::to_owned);
            let storage: Box<dyn LogStorage> = match self.settings.storage {
                StorageMode::Memory => Box::new(MemoryLog::new(SyncMode::Immediate)),
                StorageMode::Disk => Box::new(
                    SegmentLog::open(
                        &self.settings.data.join(format!("{:016x}", id.get())),
                        SegmentOptions {
                            segment_bytes: self.settings.segment_bytes,
                            zero_fill: self.settings.zero_fill,
                        },
                        Rc::clone(&self.ring),
                    )
                    .map_err(|error| format!("opening log {name}: {error}"))?,
                ),
            };
            // A joining node starts outside every configuration.
            let voters: Vec<NodeId> = if self.settings.join {
                Vec::new()
            } else {
                self.settings.peers.iter().map(|(id, _)| *id).collect()
            };
            let seed = id.get() ^ self.settings.id.get().rotate_left(17);
            let config = raft::Config::new(self.settings.id, seed);
            let mut group = Group::open(
                id,
                name.clone(),
                config,
                &voters,
                self.settings.peers.clone(),
                storage,
                self.now_ms(),
            )
            .map_err(|error| format!("opening log {name}: {error}"))?;
            if self.settings.storage == StorageMode::Disk {
                let dir = self
                    .settings
                    .data
                    .join(format!("{:016x}", id.get()))
                    .join("snapshots");
                let now = self.now_ms();
                if let Some(index) = group
                    .enable_snapshots(dir, self.settings.snapshots, now)
                    .map_err(|error| format!("opening log {name}: {error}"))?
                {
                    tracing::info!(log = %name, %index, "restarted from a snapshot");
                }
            }
            if let Some(key) = &self.settings.fault_kv_panic_key {
                group.inject_kv_panic(key.clone());
            }
            tracing::info!(log = %name, core = self.index, "log opened");
            self.groups.insert(id, group);
        }
        Ok(self.groups.get_mut(&id).expect("inserted above"))
    }

    /// A group's splice ended: connections blocked on it resume.
    fn unsplice(&mut self, group: LogId) {
        self.splicing.remove(&group);
        for slot in 0..self.slots.len() {
            if let Some(entry) = self.slots[slot].as_mut()
                && entry.blocked
            {
                entry.blocked = false;
                self.resume(slot);
            }
        }
    }

    /// Processes whatever a connection has buffered.
    fn resume(&mut self, slot: usize) {
        if let Err(reason) = self.process(slot)
            && let Some(entry) = self.slots[slot].as_mut()
        {
            tracing::warn!(slot, %reason, "closing connection");
            entry.connection.closed = true;
        }
    }

    /// Posts the next step of a file span's trip to a client: file → pipe,
    /// then pipe → socket, until the span is sent.
    fn file_next(&mut self, slot: usize) {
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
            let len = send.span.len.min(crate::io::PIPE_BYTES as u64) as u32;
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

    fn file_in(&mut self, slot: usize, generation: u64, result: i32) {
        let Some(entry) = self.slots[slot]
            .as_mut()
            .filter(|entry| entry.generation == generation)
        else {
            return;
        };
        let Some(send) = entry.connection.file_send.as_mut() else {
            return;
        };
        if result <= 0 {
            tracing::warn!(
                errno = -result,
                "splice from the log failed; closing the connection"
            );
            entry.connection.closed = true;
            entry.connection.file_send = None;
            return;
        }
        let moved = result as u64;
        send.in_pipe += moved;
        send.span.offset += moved;
        send.span.len -= moved;
        self.file_next(slot);
    }

    fn file_out(&mut self, slot: usize, generation: u64, result: i32) {
        let Some(entry) = self.slots[slot]
            .as_mut()
            .filter(|entry| entry.generation == generation)
        else {
            return;
        };
        let Some(send) = entry.connection.file_send.as_mut() else {
            return;
        };
        if result <= 0 {
            tracing::debug!(errno = -result, "client went away mid-read");
            entry.connection.closed = true;
            entry.connection.file_send = None;
            return;
        }
        send.in_pipe -= result as u64;
        self.file_next(slot);
    }

    /// End of a turn: groups flush and learn durability; outbound frames go
    /// to their connections; recvs and sends are posted; idle connections
    /// are closed or handed off.
    fn end_turn(&mut self) {
        for group in self.groups.values_mut() {
            group.turn(&mut self.out);
        }
        // Connections that waited for room (or a splice) try again; those
        // still waiting block themselves anew.
        let mut resumed = false;
        for slot in 0..self.slots.len() {
            if let Some(entry) = self.slots[slot].as_mut()
                && entry.blocked
            {
                entry.blocked = false;
                resumed = true;
                self.resume(slot);
            }
        }
        if resumed {
            // What they proposed goes out (and to the disk) in this turn
            // too, not at the next wake-up, which may be a tick away.
            for group in self.groups.values_mut() {
                group.turn(&mut self.out);
            }
        }
        self.deliver();
        for slot in 0..self.slots.len() {
            self.service(slot);
        }
    }

    fn deliver(&mut self) {
        let mut out = std::mem::take(&mut self.out);
        let counters = &self.metrics.counters;
        super::metrics::Counters::add(
            &counters.leader_changes,
            std::mem::take(&mut out.leader_changes),
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

    /// Keeps the peer links in step with the configurations in force: a
    /// link to every member of a group on this core (an added node is
    /// connected at the next tick), none to a node no group here counts.
    fn follow_membership(&mut self, out: &mut Outbound) {
        for (id, address) in out.members.drain(..) {
            if id == self.settings.id {
                continue;
            }
            if let Some(link) = self.links.iter_mut().find(|link| link.id == id) {
                if link.address != address {
                    tracing::info!(peer = %id, %address, "peer address changed");
                    link.address = address;
                    link.retry_at_ms = 0;
                }
            } else {
                tracing::info!(peer = %id, %address, "linking to a new member");
                self.links.push(PeerLink {
                    id,
                    address,
                    connection: None,
                    connecting: false,
                    retry_at_ms: 0,
                    backoff_ms: 50,
                });
            }
        }
        for id in out.removed.drain(..) {
            let member = self
                .groups
                .values()
                .any(|group| group.linked_members().contains(id));
            if member {
                continue;
            }
            let Some(link) = self.links.iter().position(|link| link.id == id) else {
                continue;
            };
            tracing::info!(peer = %id, "dropping the link to a removed node");
            let link = self.links.remove(link);
            if let Some(slot) = link.connection
                && let Some(entry) = self.slots[slot].as_mut()
            {
                entry.connection.closed = true;
            }
        }
    }

    /// Posts what a connection needs, and retires it when it is done.
    fn service(&mut self, slot: usize) {
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
    fn retire(&mut self, slot: usize) {
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
            self.hand_off(core, entry.connection);
        }
    }

    fn hand_off(&mut self, core: u32, connection: Connection) {
        let unread = connection.unread().to_vec();
        let role = connection.role;
        let Ok(file) = Rc::try_unwrap(connection.socket) else {
            tracing::error!("connection still referenced at handoff; dropping it");
            return;
        };
        let handoff = Handoff {
            socket: OwnedFd::from(file),
            unread,
            role,
        };
        let Some(sender) = self.wiring.senders.get(core as usize) else {
            tracing::warn!(
                core,
                "handoff to a core that does not exist; dropping the connection"
            );
            return;
        };
        match sender.try_send(handoff) {
            Ok(()) => {
                let eventfd = &self.wiring.eventfds[core as usize];
                if let Err(error) = nix::unistd::write(eventfd.as_fd(), &1u64.to_ne_bytes()) {
                    tracing::error!(%error, "could not wake core {core}");
                }
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                tracing::warn!(core, "handoff queue full; dropping the connection");
            }
        }
    }

    fn receive_handoffs(&mut self) {
        while let Ok(handoff) = self.wiring.receiver.try_recv() {
            let socket = Rc::new(File::from(handoff.socket));
            let slot = self.insert(Connection::new(socket, handoff.role, &handoff.unread), None);
            if let Err(reason) = self.process(slot)
                && let Some(entry) = self.slots[slot].as_mut()
            {
                tracing::warn!(%reason, "closing a handed-off connection");
                entry.connection.closed = true;
            }
        }
    }

    /// Stops: syncs every log so nothing written is left unsynced.
    fn shutdown(&mut self) {
        for group in self.groups.values_mut() {
            if let Err(error) = group.sync_all() {
                tracing::error!(log = %group.name, %error, "final sync failed");
            }
        }
        tracing::info!(core = self.index, "core stopped");
    }
}

/// A log name is 1 to `LOG_NAME_BYTES_MAX` bytes of `[A-Za-z0-9._-]`.
fn check_log_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= crate::constants::LOG_NAME_BYTES_MAX
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid log name {name:?}: 1 to {} characters of A-Z a-z 0-9 . _ -",
            crate::constants::LOG_NAME_BYTES_MAX
        ))
    }
}

/// Checks a client's batch at the edge: one valid frame whose payloads are
/// well formed; seals it if the client left the checksum zero, verifies it
/// otherwise.
fn check_client_batch(frame: &mut [u8]) -> Result<u32, WireError> {
    let view = BatchView::parse(frame)?;
    view.validate()?;
    let count = view.count();
    if view.checksum() == 0 {
        crate::wire::BatchMut::parse(frame)?.seal();
    } else {
        view.verify_checksum()?;
    }
    Ok(count)
}
