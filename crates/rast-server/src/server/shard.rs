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
use std::os::fd::{AsFd, OwnedFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

mod outbound;
mod peers;
mod requests;
mod splice;

use self::requests::check_log_name;
use self::splice::Splice;
use super::connection::{Connection, Role};
use super::group::{Group, Outbound};
use super::metrics::Counters;
use super::scrub::{DamageReport, DamageReports};
use super::{ServerError, Settings, StorageMode, stopping};
use crate::constants::{
    ACCEPT_BACKOFF_MS, CONNECTIONS_PER_ADDRESS_MAX, CONNECTIONS_PER_CORE_MAX, HANDOFF_QUEUE_MAX,
    HANDSHAKE_MS_MAX, IDLE_SCAN_MS, OUTBOX_BYTES_MAX, RECONNECT_MS_MAX, REOPEN_FREE_BYTES_MIN,
    REOPEN_INTERVAL_MS, SPLICE_BYTES_MIN,
};
use crate::constants::{DAMAGE_QUEUE_MAX, TICK_MS};
use crate::io::ring::Owned;
use crate::io::{OpId, Ring, SharedRing};
use crate::raft::{self, BatchSummary};
use crate::storage::LogStorage;
use crate::storage::memory::{MemoryLog, SyncMode};
use crate::storage::segment::{SegmentLog, SegmentOptions};
use crate::types::{LogId, NodeId};
use crate::wire::{FrameLength, frame_length};

/// A connection moving to the core that owns its traffic.
#[derive(Debug)]
pub struct Handoff {
    socket: OwnedFd,
    unread: Vec<u8>,
    /// The connection's TLS session, if it is encrypted.
    tls: Option<Box<rustls::Connection>>,
    role: Role,
    /// The address it came from: counted on the receiving core as it was
    /// on the accepting one.
    from: Option<std::net::IpAddr>,
}

/// The channels and wake-up descriptors between cores.
#[derive(Debug)]
pub struct Wiring {
    senders: Vec<Sender<Handoff>>,
    receivers: Vec<Receiver<Handoff>>,
    eventfds: Vec<Arc<OwnedFd>>,
    damage_senders: Vec<Sender<DamageReport>>,
    damage_receivers: Vec<Receiver<DamageReport>>,
}

/// One core's end of the wiring.
#[derive(Debug)]
pub struct CoreWiring {
    senders: Vec<Sender<Handoff>>,
    receiver: Receiver<Handoff>,
    eventfds: Vec<Arc<OwnedFd>>,
    /// Damage the scrubber found in this core's logs.
    damage: Receiver<DamageReport>,
}

impl Wiring {
    /// Channels and eventfds for `cores` cores.
    pub fn new(cores: u32) -> Result<Self, ServerError> {
        let mut senders = Vec::new();
        let mut receivers = Vec::new();
        let mut eventfds = Vec::new();
        let (mut damage_senders, mut damage_receivers) = (Vec::new(), Vec::new());
        for _ in 0..cores {
            let (sender, receiver) = crossbeam_channel::bounded(DAMAGE_QUEUE_MAX);
            damage_senders.push(sender);
            damage_receivers.push(receiver);
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
            damage_senders,
            damage_receivers,
        })
    }

    /// Where the scrubber reports damage (to the core owning the log).
    pub fn damage_reports(&self) -> DamageReports {
        DamageReports::new(self.damage_senders.clone())
    }

    /// Core `index`'s end.
    pub fn for_core(&self, index: u32) -> CoreWiring {
        CoreWiring {
            senders: self.senders.clone(),
            receiver: self.receivers[index as usize].clone(),
            eventfds: self.eventfds.clone(),
            damage: self.damage_receivers[index as usize].clone(),
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
    /// When it was opened (the shard's clock): a handshake not done
    /// [`HANDSHAKE_MS_MAX`] later closes it.
    opened_ms: u64,
    /// When it last received bytes: a client silent for the idle time
    /// (`Settings::client_idle_ms`) and following no log is closed.
    active_ms: u64,
    /// The address an accepted connection came from (counted against
    /// [`CONNECTIONS_PER_ADDRESS_MAX`] until the slot is freed).
    from: Option<std::net::IpAddr>,
    /// A refused handshake's answer and when to send it
    /// ([`crate::constants::HANDSHAKE_REFUSAL_DELAY_MS`] after the Hello).
    refusal: Option<(u64, Vec<u8>)>,
    /// The handshake was refused: nothing more it sends is processed.
    refused: bool,
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
    /// When accepting resumes after running out of descriptors (`None`:
    /// the accept is armed).
    accept_at_ms: Option<u64>,
    /// When idle client connections are looked for next.
    idle_scan_at_ms: u64,
    /// Accepted connections open here, by the address they came from.
    per_address: std::collections::HashMap<std::net::IpAddr, usize>,
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
            accept_at_ms: None,
            idle_scan_at_ms: 0,
            per_address: std::collections::HashMap::new(),
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
                    let from = crate::io::peer_ip(&socket);
                    if self.admits(from) {
                        let socket = Rc::new(socket);
                        let connection = match &self.settings.tls {
                            None => Some(Connection::new(socket, Role::Handshake, &[])),
                            Some(tls) => match tls.accept() {
                                Ok(session) => Some(Connection::with_tls(
                                    socket,
                                    Role::Handshake,
                                    &[],
                                    session,
                                )),
                                Err(error) => {
                                    tracing::warn!(%error, "could not start a TLS session");
                                    None
                                }
                            },
                        };
                        if let Some(connection) = connection {
                            self.insert_from(connection, from);
                        }
                    }
                } else {
                    tracing::warn!(errno = -result, "accept failed");
                    if -result == nix::libc::EMFILE || -result == nix::libc::ENFILE {
                        // Out of descriptors: accepting again at once would
                        // fail again at once. Resume on a later tick.
                        self.accept_at_ms = Some(self.now_ms() + ACCEPT_BACKOFF_MS);
                        return;
                    }
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

    /// Whether log `id` is open here, or closed for a reopening.
    fn has_log(&self, id: LogId) -> bool {
        self.groups.contains_key(&id) || self.reopening.iter().any(|(closed, _)| *closed == id)
    }

    /// Connections open on this core.
    fn connections(&self) -> usize {
        self.slots.len() - self.free_slots.len()
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
            opened_ms: self.now_ms(),
            active_ms: self.now_ms(),
            from: None,
            refusal: None,
            refused: false,
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
        self.close_slow_handshakes(now);
        self.send_refusals(now);
        if now >= self.idle_scan_at_ms {
            self.idle_scan_at_ms = now + IDLE_SCAN_MS;
            self.close_idle_clients(now);
        }
        if self.accept_at_ms.is_some_and(|at| now >= at) {
            self.accept_at_ms = None;
            self.rearm(Owner::Accept);
        }
        let unix_ms = crate::storage::unix_now_ms();
        for group in self.groups.values_mut() {
            group.tick(now, &mut self.out);
            // A splice still moving bytes into the log owns its tail: a
            // snapshot install (which may reset the log) waits for it.
            if !self.splicing.contains(&group.id) {
                group.snapshot_tick(now, unix_ms, &mut self.out);
            }
        }
        self.take_damage_reports();
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

    /// Closes client connections silent for the idle time that follow no
    /// log.
    fn close_idle_clients(&mut self, now: u64) {
        let idle_ms = self.settings.client_idle_ms;
        for (slot, entry) in self.slots.iter_mut().enumerate() {
            let Some(entry) = entry else { continue };
            if matches!(entry.connection.role, Role::Client(_))
                && !entry.connection.closed
                && now.saturating_sub(entry.active_ms) > idle_ms
                && !self
                    .groups
                    .values()
                    .any(|group| group.has_tail_of(slot, entry.generation))
            {
                tracing::debug!(slot, "closing a client connection idle too long");
                entry.connection.closed = true;
            }
        }
    }

    /// Whether one more connection from `from` fits this core's limits
    /// ([`CONNECTIONS_PER_CORE_MAX`], [`CONNECTIONS_PER_ADDRESS_MAX`]); says
    /// why not in the log.
    fn admits(&self, from: Option<std::net::IpAddr>) -> bool {
        if self.connections() >= CONNECTIONS_PER_CORE_MAX {
            tracing::warn!(
                limit = CONNECTIONS_PER_CORE_MAX,
                "too many connections on this core; closing a new one"
            );
            return false;
        }
        let of_address = from.map_or(0, |ip| self.per_address.get(&ip).copied().unwrap_or(0));
        if of_address >= CONNECTIONS_PER_ADDRESS_MAX {
            tracing::warn!(
                address = ?from,
                limit = CONNECTIONS_PER_ADDRESS_MAX,
                "too many connections from one address; closing a new one"
            );
            return false;
        }
        true
    }

    /// Inserts a connection that came from `from`, counted against it.
    fn insert_from(&mut self, connection: Connection, from: Option<std::net::IpAddr>) -> usize {
        let slot = self.insert(connection, None);
        if let Some(ip) = from {
            *self.per_address.entry(ip).or_insert(0) += 1;
            if let Some(entry) = self.slots[slot].as_mut() {
                entry.from = Some(ip);
            }
        }
        slot
    }

    /// Frees a slot's count against its address.
    fn forget_address(&mut self, from: Option<std::net::IpAddr>) {
        if let Some(ip) = from
            && let Some(count) = self.per_address.get_mut(&ip)
        {
            *count -= 1;
            if *count == 0 {
                self.per_address.remove(&ip);
            }
        }
    }

    /// Sends the refusals of refused handshakes whose delay is over; each
    /// connection closes once its refusal is out.
    fn send_refusals(&mut self, now: u64) {
        for entry in self.slots.iter_mut().flatten() {
            if entry.refusal.as_ref().is_some_and(|(at, _)| now >= *at) {
                let (_, frame) = entry.refusal.take().expect("checked");
                entry.connection.queue(&frame);
                entry.connection.close_after_flush = true;
            }
        }
    }

    /// Closes connections still in their handshake [`HANDSHAKE_MS_MAX`]
    /// after they were opened.
    fn close_slow_handshakes(&mut self, now: u64) {
        for entry in self.slots.iter_mut().flatten() {
            if entry.connection.role == Role::Handshake
                && !entry.connection.closed
                && now.saturating_sub(entry.opened_ms) > HANDSHAKE_MS_MAX
            {
                tracing::debug!("closing a connection that did not complete its handshake in time");
                entry.connection.closed = true;
            }
        }
    }

    /// Stops the groups the scrubber found damage in, to be reopened
    /// (`reopen_groups`): recovery then cuts the log at the damage and the
    /// leader repairs it.
    fn take_damage_reports(&mut self) {
        while let Ok((id, what)) = self.wiring.damage.try_recv() {
            if let Some(group) = self.groups.get_mut(&id) {
                group.fail_damaged(&what, &mut self.out);
            }
        }
    }

    /// Reopens the groups stopped by a full disk once it has room again,
    /// or by damage the scrubber found, as a restart would: the store
    /// recovers from its files, the core from the store, and the node
    /// rejoins its cluster for that log. Waits until no write of a dropped
    /// store is still in the kernel.
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
        let need_room = stopped
            .iter()
            .any(|(id, _)| self.groups.get(id).is_some_and(Group::reopen_needs_room));
        if need_room && !self.disk_has_room() {
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
                Ok(_) => tracing::info!(log = %name, "log reopened"),
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

    fn received(&mut self, slot: usize, result: i32, buffer: Option<Owned>) {
        let Some(entry) = self.slots[slot].as_mut() else {
            return;
        };
        if !entry.connection.recv_done(result, buffer) {
            return;
        }
        entry.active_ms = self.started.elapsed().as_millis() as u64;
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
                || entry.refused
            {
                return Ok(());
            }
            let role = entry.connection.role;
            let consumed = match role {
                Role::Handshake => self.process_hello(slot)?,
                Role::Client(access) => self.process_client(slot, access)?,
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
            group.set_tls_mode(self.settings.tls_mode());
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
            let found = group.take_damage_found();
            if found > 0 {
                Counters::add(&self.metrics.counters.corruptions_found, found);
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
