//! Peer links and the handshake: outgoing connections to the members of
//! this core's groups (with back-off), the Hello and its answer, messages
//! from peers handed to their groups, connections moved to the core that
//! owns their traffic.

use std::fs::File;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::rc::Rc;

use crossbeam_channel::TrySendError;

use super::splice::Start;
use super::{Handoff, Owner, PeerLink, RECONNECT_MS_MAX, SPLICE_BYTES_MIN, Shard};
use crate::constants::{HANDSHAKE_BYTES_MAX, HANDSHAKE_REFUSAL_DELAY_MS};
use crate::net::codec::{self, PeerBody};
use crate::server::ZeroCopy;
use crate::server::connection::{Access, Connection, Role};
use crate::server::group::Outbound;
use crate::server::metrics::PayloadPath;
use crate::server::tls;
use crate::server::tls::ADMIN_NAME;
use crate::types::NodeId;
use crate::wire::client::{self as protocol, Hello, HelloResponse};
use crate::wire::{FrameLength, frame_length};

impl Shard {
    /// Opens our outgoing connection to a peer.
    pub(super) fn connect(&mut self, link: usize) {
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
        let connection = match &self.settings.tls {
            None => Connection::new(Rc::clone(&socket), role, &[]),
            Some(tls) => match tls.dial(self.links[link].id) {
                Ok(session) => Connection::with_tls(Rc::clone(&socket), role, &[], session),
                Err(error) => {
                    tracing::error!(%error, "could not start a TLS session to a peer");
                    self.backoff(link);
                    return;
                }
            },
        };
        let slot = self.insert(connection, Some(link));
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

    pub(super) fn backoff(&mut self, link: usize) {
        let now = self.now_ms();
        let entry = &mut self.links[link];
        entry.connecting = false;
        entry.connection = None;
        entry.retry_at_ms = now + entry.backoff_ms;
        entry.backoff_ms = (entry.backoff_ms * 2).min(RECONNECT_MS_MAX);
    }

    pub(super) fn connected(&mut self, slot: usize, result: i32) {
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
            token: if self.settings.peer_token.is_empty() {
                self.settings.token.clone()
            } else {
                self.settings.peer_token.clone()
            },
            core: self.index,
            cores: self.settings.cores,
        });
        if let Some(entry) = self.slots[slot].as_mut() {
            entry.connection.queue(&hello);
        }
    }

    pub(super) fn process_hello(&mut self, slot: usize) -> Result<usize, String> {
        let now = self.now_ms();
        let entry = self.slots[slot].as_mut().expect("present");
        // Checked before the frame is complete: nothing an unauthenticated
        // peer claims may make this node hold more than a Hello's worth.
        if let Ok(FrameLength::Complete { frame_bytes, .. }) =
            frame_length(entry.connection.unread())
            && frame_bytes > HANDSHAKE_BYTES_MAX
        {
            return Err(format!(
                "a {frame_bytes}-byte frame before the handshake (limit {HANDSHAKE_BYTES_MAX})"
            ));
        }
        let Some(length) = Self::complete_frame(&entry.connection)? else {
            return Ok(0);
        };
        let hello = protocol::decode_hello(&entry.connection.unread()[..length])
            .map_err(|error| format!("bad hello: {error}"))?;
        entry.connection.consume(length);
        let access = credential(&self.settings, &hello, entry.connection.tls());
        let refusal = if hello.protocol_version != protocol::PROTOCOL_VERSION {
            Some(format!(
                "protocol version {} (this node speaks {})",
                hello.protocol_version,
                protocol::PROTOCOL_VERSION
            ))
        } else if hello.cluster_id != self.settings.cluster_id || access.is_none() {
            // One answer for both, naming neither: a caller learns nothing
            // about this node's cluster id or token from a refusal.
            Some("wrong cluster id or token".to_owned())
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
        } else if let Some(session) = entry.connection.tls()
            && hello.node_id != 0
            && !tls::certifies_node(session, NodeId(hello.node_id))
        {
            // With TLS a peer proves who it is: its certificate, signed by
            // the cluster's CA, names the node id its Hello claims.
            Some(format!(
                "no certificate of node {} (a peer presents its node certificate)",
                hello.node_id
            ))
        } else {
            None
        };
        let answer = match &refusal {
            Some(reason) => HelloResponse::Refused(reason.clone()),
            None => HelloResponse::Ok(self.settings.id.get()),
        };
        let frame = protocol::encode_hello_response(&answer);
        if let Some(reason) = refusal {
            // Answered later, not at once: a caller guessing tokens learns
            // each guess's fate only after the delay.
            tracing::warn!(%reason, "refused a connection");
            entry.refusal = Some((now + HANDSHAKE_REFUSAL_DELAY_MS, frame));
            entry.refused = true;
            return Ok(0);
        }
        entry.connection.queue(&frame);
        if hello.node_id == 0 {
            entry.connection.role = Role::Client(access.expect("refused above without one"));
        } else {
            entry.connection.role = Role::PeerIn(hello.node_id);
            if hello.core != self.index {
                entry.handoff_to = Some(hello.core);
            }
        }
        Ok(length)
    }

    pub(super) fn process_hello_response(&mut self, slot: usize) -> Result<usize, String> {
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

    pub(super) fn process_peer(&mut self, slot: usize) -> Result<usize, String> {
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
        if !self.links.iter().any(|link| link.id == header.from) {
            // Only a node this core links to (named at start, or counted
            // by one of its logs' configurations) speaks Raft to it: a
            // removed node, or one never added, is refused whatever
            // certificate or token it has.
            return Err(format!(
                "node {node} is a member of no log on this core; refusing its messages"
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
            && self.settings.zero_copy == ZeroCopy::Splice
            && self.settings.tls.is_none()
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

    /// Keeps the peer links in step with the configurations in force: a
    /// link to every member of a group on this core (an added node is
    /// connected at the next tick), none to a node no group here counts.
    pub(super) fn follow_membership(&mut self, out: &mut Outbound) {
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

    pub(super) fn hand_off(
        &mut self,
        core: u32,
        connection: Connection,
        from: Option<std::net::IpAddr>,
    ) {
        let mut connection = connection;
        let unread = connection.unread().to_vec();
        let role = connection.role;
        let tls = connection.take_tls().map(Box::new);
        let Ok(file) = Rc::try_unwrap(connection.socket) else {
            tracing::error!("connection still referenced at handoff; dropping it");
            return;
        };
        let handoff = Handoff {
            socket: OwnedFd::from(file),
            unread,
            tls,
            role,
            from,
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

    pub(super) fn receive_handoffs(&mut self) {
        while let Ok(handoff) = self.wiring.receiver.try_recv() {
            // The same limits as at accept: a connection moved here counts
            // against this core and its address (and is closed beyond them).
            if !self.admits(handoff.from) {
                continue;
            }
            let socket = Rc::new(File::from(handoff.socket));
            let connection = match handoff.tls {
                None => Connection::new(socket, handoff.role, &handoff.unread),
                Some(session) => {
                    Connection::with_tls(socket, handoff.role, &handoff.unread, *session)
                }
            };
            let slot = self.insert_from(connection, handoff.from);
            if let Err(reason) = self.process(slot)
                && let Some(entry) = self.slots[slot].as_mut()
            {
                tracing::warn!(%reason, "closing a handed-off connection");
                entry.connection.closed = true;
            }
        }
    }
}

/// What a Hello's credential earns: for a peer (node id set), its token
/// must be the peer token (`--peer-token-file`, else `--token-file`); a
/// client gets the strongest role its token or certificate proves (see
/// [`Access`]). `None`: refused.
///
/// ```text
///  admin token (--admin-token-file), or a certificate for admin.rast ─► Admin
///  the token (--token-file)  ─► Admin without an admin token, else ReadWrite
///  read-only token (--read-only-token-file) ─► ReadOnly
/// ```
fn credential(
    settings: &crate::server::Settings,
    hello: &Hello,
    session: Option<&rustls::Connection>,
) -> Option<Access> {
    if hello.node_id != 0 {
        let peer_token = if settings.peer_token.is_empty() {
            &settings.token
        } else {
            &settings.peer_token
        };
        return same_secret(&hello.token, peer_token).then_some(Access::Admin);
    }
    let admin_certificate = session.is_some_and(|session| tls::certifies_name(session, ADMIN_NAME));
    if admin_certificate
        || (!settings.admin_token.is_empty() && same_secret(&hello.token, &settings.admin_token))
    {
        Some(Access::Admin)
    } else if same_secret(&hello.token, &settings.token) {
        Some(if settings.admin_token.is_empty() {
            Access::Admin
        } else {
            Access::ReadWrite
        })
    } else if !settings.read_only_token.is_empty()
        && same_secret(&hello.token, &settings.read_only_token)
    {
        Some(Access::ReadOnly)
    } else {
        None
    }
}

/// Compares two secrets in time that depends on their lengths only, not
/// on where they first differ.
fn same_secret(presented: &[u8], expected: &[u8]) -> bool {
    let mut difference = u8::from(presented.len() != expected.len());
    for position in 0..presented.len().max(expected.len()) {
        let a = presented.get(position).copied().unwrap_or(0);
        let b = expected.get(position).copied().unwrap_or(0);
        difference |= a ^ b;
    }
    std::hint::black_box(difference) == 0
}

#[cfg(test)]
mod tests {
    use super::same_secret;

    /// Equal secrets match; a different byte anywhere, or a different
    /// length (a prefix too), does not.
    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"token", b"token"));
        assert!(same_secret(b"", b""));
        assert!(!same_secret(b"token", b"tokem"));
        assert!(!same_secret(b"Token", b"token"));
        assert!(!same_secret(b"tok", b"token"));
        assert!(!same_secret(b"token\0", b"token"));
        assert!(!same_secret(b"", b"token"));
    }
}
