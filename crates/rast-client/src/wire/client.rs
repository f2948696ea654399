//! The client protocol and the connection handshake as Rust values.
//!
//! A connection (client or peer) opens with a `Hello` frame answered by a
//! `HelloResponse`. A client then sends `ClientRequest` frames and receives
//! `ClientResponse` frames carrying the same `requestId`, in any order:
//!
//! ```text
//! client                                   node
//!   Hello{cluster, node 0, token}   ──►
//!                                   ◄──    HelloResponse{ok node | refused why}
//!   ClientRequest{id 1, append}     ──►
//!   EntryBatch frame                ──►    (the bytes that get stored)
//!   ClientRequest{id 2, read}       ──►
//!                                   ◄──    ClientResponse{id 1, appended}
//!                                   ◄──    ClientResponse{id 2, batches n}
//!                                   ◄──    n EntryBatch frames (stored bytes)
//! ```
//!
//! Requests and responses other than batches are small, so they decode into
//! owned values; batch frames stay borrowed ([`crate::wire::BatchView`]).

use crate::limits::{INDEX_MAX, MEMBERS_LIST_MAX};
use crate::rast_capnp::{
    admin_request, client_request, client_response, error, hello, hello_response, kv_command,
};
use crate::wire::{WireError, frame};

/// Protocol version spoken by this build (in `Hello`). 2: batches carry
/// `stampCheck`, which version 1 read as padding under the checksum.
pub const PROTOCOL_VERSION: u32 = 2;

/// The opening frame of every connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// `PROTOCOL_VERSION` of the sender.
    pub protocol_version: u32,
    /// Cluster id; a mismatch is refused.
    pub cluster_id: String,
    /// The sender's node id; 0 for a client.
    pub node_id: u64,
    /// Optional shared secret.
    pub token: Vec<u8>,
    /// A peer's sending core (0 for a client).
    pub core: u32,
    /// A peer's core count (0 for a client).
    pub cores: u32,
}

/// The answer to a `Hello`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HelloResponse {
    /// Accepted by the node with this id.
    Ok(u64),
    /// Refused, with the reason; the connection closes after this.
    Refused(String),
}

/// A key-value command as clients send it and the log stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvCommand {
    /// Exactly-once session id; 0 = no session.
    pub client_id: u64,
    /// Request number within the session.
    pub sequence: u64,
    /// The key.
    pub key: Vec<u8>,
    /// What to do with it.
    pub operation: KvOperation,
    /// Log time: the leader's clock (ms since the Unix epoch) when it put
    /// the command in the log; zero from a client (schema `timeMs`).
    pub time_ms: u64,
}

/// The write operations of the key-value state machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvOperation {
    /// Set the value.
    Put(Vec<u8>),
    /// Remove the key.
    Delete,
    /// Set `new` only if the current value is `expected` (`None`: absent).
    Cas {
        /// The value the key must hold; `None` means the key must be absent.
        expected: Option<Vec<u8>>,
        /// The value to set.
        new: Vec<u8>,
    },
}

/// Membership change and maintenance requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminRequest {
    /// Add a node as a learner.
    AddLearner {
        /// The node's id.
        id: u64,
        /// Its listening address.
        address: String,
    },
    /// Promote a caught-up learner to voter.
    Promote(u64),
    /// Remove a node.
    Remove(u64),
    /// Hand leadership to a node.
    TransferLeader(u64),
    /// Print the configuration.
    Members,
    /// Take a snapshot now.
    Snapshot,
}

/// What a client asks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestBody {
    /// Append the `EntryBatch` frame that follows this request.
    Append,
    /// Read committed entries from `from_index`.
    Read {
        /// First index wanted.
        from_index: u64,
        /// At most this many entries (0: as many as fit one response).
        max_entries: u32,
    },
    /// Read, then keep streaming entries as they commit.
    Tail {
        /// First index wanted.
        from_index: u64,
        /// Entries per response (0: as many as fit).
        max_entries: u32,
    },
    /// Read a key.
    Get {
        /// The key.
        key: Vec<u8>,
        /// Read locally without a ReadIndex round.
        stale: bool,
    },
    /// A key-value write (`put`, `cas` or `delete`).
    Write(KvCommand),
    /// Node status.
    Status,
    /// Administration.
    Admin(AdminRequest),
}

/// A client request with its id and target log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Echoed in the response; lets clients pipeline.
    pub request_id: u64,
    /// The named log; empty means `default`.
    pub log: String,
    /// What is asked.
    pub body: RequestBody,
}

/// A value read from the key-value state machine.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvValue {
    /// Whether the key exists.
    pub found: bool,
    /// The value (empty when absent).
    pub value: Vec<u8>,
    /// Read locally; may be behind the leader.
    pub stale: bool,
    /// The applied index the value was read at.
    pub index: u64,
}

/// One peer's replication state as the leader sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerStatus {
    /// Peer id.
    pub id: u64,
    /// Highest index known replicated there.
    pub match_index: u64,
    /// Next index to send.
    pub next_index: u64,
    /// "probe", "replicate" or "snapshot".
    pub state: String,
}

/// A node's view of one group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Status {
    /// This node.
    pub node_id: u64,
    /// "leader", "follower", "candidate", "pre-candidate" or "learner".
    pub role: String,
    /// Current term.
    pub term: u64,
    /// Known leader; 0 if none.
    pub leader: u64,
    /// First retained index.
    pub first_index: u64,
    /// Last index covered by the latest snapshot (0: none).
    pub snapshot_index: u64,
    /// Last index in the log.
    pub last_index: u64,
    /// Commit index.
    pub commit_index: u64,
    /// Applied index.
    pub applied_index: u64,
    /// Per-peer progress (leader only).
    pub peers: Vec<PeerStatus>,
    /// Non-empty when the group's state machine stopped.
    pub failed: String,
    /// How the node encrypts its connections: "off", "user-space" (TLS
    /// records made by the node's threads) or "kernel" (kernel TLS); empty
    /// from a node that does not say.
    pub tls: String,
    /// Nonzero while this node's copy of the log is damaged: recovery cut
    /// entries it may have acknowledged in terms up to this one, and it
    /// does not campaign until a leader has repaired it.
    pub damaged_in: u64,
    /// While damaged: the (term, index) of the last entry it may have
    /// acknowledged; it votes only for logs at least as up to date.
    /// `None`: unknown (it does not vote) or not damaged.
    pub acked_end: Option<(u64, u64)>,
}

/// A configuration as reported by `admin members`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Members {
    /// Voters.
    pub voters: Vec<u64>,
    /// Voters of the outgoing configuration during a joint change.
    pub voters_outgoing: Vec<u64>,
    /// Learners.
    pub learners: Vec<u64>,
    /// Addresses by node id.
    pub addresses: Vec<(u64, String)>,
}

/// Why a request failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Ask the leader instead.
    NotLeader {
        /// Its id, 0 if unknown.
        leader: u64,
        /// Its address, empty if unknown.
        address: String,
    },
    /// Below the first retained index, which is given.
    Compacted(u64),
    /// Over the size limit, which is given.
    TooLarge(u64),
    /// No quorum or shutting down: retry later.
    Unavailable,
    /// `cas` mismatch: the current value.
    PreconditionFailed(KvValue),
    /// No such key.
    NotFound,
    /// Malformed request.
    Invalid,
    /// Disk full: appends refused.
    NoSpace,
    /// The group's state machine stopped.
    Failed,
    /// The client session expired.
    SessionExpired,
    /// The connection's role may not do this (a read-only client's write,
    /// an admin request without the admin role).
    Forbidden,
}

/// A typed error with a human message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorReply {
    /// One line for a human.
    pub message: String,
    /// What kind, for a program.
    pub kind: ErrorKind,
}

/// What a node answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponseBody {
    /// The batch got indexes `first_index .. first_index + count`.
    Appended {
        /// First index assigned.
        first_index: u64,
        /// Entries appended.
        count: u32,
        /// Term they were appended in.
        term: u64,
    },
    /// This many `EntryBatch` frames follow.
    Batches(u32),
    /// A value read.
    Value(KvValue),
    /// A put or delete was applied.
    Done,
    /// A cas was applied (`found` true = it succeeded).
    CasResult(KvValue),
    /// Node status.
    Status(Status),
    /// The configuration.
    Members(Members),
    /// The request failed.
    Error(ErrorReply),
}

/// A response with the id of the request it answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// The request's id.
    pub request_id: u64,
    /// The answer.
    pub body: ResponseBody,
}

fn text(reader: capnp::Result<capnp::text::Reader<'_>>) -> Result<String, WireError> {
    reader?
        .to_string()
        .map_err(|error| WireError::Malformed(format!("text is not UTF-8: {error}")))
}

/// Encodes a `Hello` frame.
pub fn encode_hello(value: &Hello) -> Vec<u8> {
    let mut message = crate::wire::frame::builder(64);
    let mut root = message.init_root::<hello::Builder<'_>>();
    root.set_protocol_version(value.protocol_version);
    root.set_cluster_id(value.cluster_id.as_str());
    root.set_node_id(value.node_id);
    root.set_token(&value.token);
    root.set_core(value.core);
    root.set_cores(value.cores);
    frame::encode(&message)
}

/// Decodes a `Hello` frame.
pub fn decode_hello(bytes: &[u8]) -> Result<Hello, WireError> {
    let message = frame::open(bytes)?;
    let root = message.get_root::<hello::Reader<'_>>()?;
    Ok(Hello {
        protocol_version: root.get_protocol_version(),
        cluster_id: text(root.get_cluster_id())?,
        node_id: root.get_node_id(),
        token: root.get_token()?.to_vec(),
        core: root.get_core(),
        cores: root.get_cores(),
    })
}

/// Encodes a `HelloResponse` frame.
pub fn encode_hello_response(value: &HelloResponse) -> Vec<u8> {
    let mut message = crate::wire::frame::builder(64);
    let mut root = message.init_root::<hello_response::Builder<'_>>();
    match value {
        HelloResponse::Ok(id) => root.set_ok(*id),
        HelloResponse::Refused(why) => root.set_refused(why.as_str()),
    }
    frame::encode(&message)
}

/// Decodes a `HelloResponse` frame.
pub fn decode_hello_response(bytes: &[u8]) -> Result<HelloResponse, WireError> {
    let message = frame::open(bytes)?;
    let root = message.get_root::<hello_response::Reader<'_>>()?;
    Ok(match root.which()? {
        hello_response::Ok(id) => HelloResponse::Ok(id),
        hello_response::Refused(why) => HelloResponse::Refused(text(why)?),
    })
}

/// Writes a key-value command into a builder (shared by requests and the
/// log's `kv` batches).
pub fn build_kv_command(mut builder: kv_command::Builder<'_>, command: &KvCommand) {
    builder.set_client_id(command.client_id);
    builder.set_sequence(command.sequence);
    builder.set_key(&command.key);
    builder.set_time_ms(command.time_ms);
    match &command.operation {
        KvOperation::Put(value) => builder.set_put(value),
        KvOperation::Delete => builder.set_delete(()),
        KvOperation::Cas { expected, new } => {
            let mut cas = builder.init_cas();
            match expected {
                Some(value) => cas.set_expected(value),
                None => cas.set_expected_absent(true),
            }
            cas.set_new(new);
        }
    }
}

/// Reads a key-value command.
pub fn read_kv_command(reader: kv_command::Reader<'_>) -> Result<KvCommand, WireError> {
    let operation = match reader.which()? {
        kv_command::Put(value) => KvOperation::Put(value?.to_vec()),
        kv_command::Delete(()) => KvOperation::Delete,
        kv_command::Cas(cas) => {
            let cas = cas?;
            KvOperation::Cas {
                expected: if cas.get_expected_absent() {
                    None
                } else {
                    Some(cas.get_expected()?.to_vec())
                },
                new: cas.get_new()?.to_vec(),
            }
        }
    };
    Ok(KvCommand {
        client_id: reader.get_client_id(),
        sequence: reader.get_sequence(),
        key: reader.get_key()?.to_vec(),
        operation,
        time_ms: reader.get_time_ms(),
    })
}

/// Encodes a standalone `KvCommand` frame (a payload of a `kv` batch).
pub fn encode_kv_command(command: &KvCommand) -> Vec<u8> {
    let mut message = crate::wire::frame::builder(64);
    build_kv_command(message.init_root(), command);
    frame::encode(&message)
}

/// Decodes a standalone `KvCommand` frame.
pub fn decode_kv_command(bytes: &[u8]) -> Result<KvCommand, WireError> {
    let message = frame::open(bytes)?;
    read_kv_command(message.get_root()?)
}

/// Encodes a `ClientRequest` frame.
pub fn encode_request(request: &Request) -> Vec<u8> {
    let mut message = crate::wire::frame::builder(64);
    let mut root = message.init_root::<client_request::Builder<'_>>();
    root.set_request_id(request.request_id);
    root.set_log(request.log.as_str());
    match &request.body {
        RequestBody::Append => root.set_append(()),
        RequestBody::Read {
            from_index,
            max_entries,
        } => {
            let mut read = root.init_read();
            read.set_from_index(*from_index);
            read.set_max_entries(*max_entries);
        }
        RequestBody::Tail {
            from_index,
            max_entries,
        } => {
            let mut tail = root.init_tail();
            tail.set_from_index(*from_index);
            tail.set_max_entries(*max_entries);
        }
        RequestBody::Get { key, stale } => {
            let mut get = root.init_get();
            get.set_key(key);
            get.set_stale(*stale);
        }
        RequestBody::Write(command) => match command.operation {
            KvOperation::Put(_) => build_kv_command(root.init_put(), command),
            KvOperation::Delete => build_kv_command(root.init_delete(), command),
            KvOperation::Cas { .. } => build_kv_command(root.init_cas(), command),
        },
        RequestBody::Status => root.set_status(()),
        RequestBody::Admin(admin) => build_admin(root.init_admin(), admin),
    }
    frame::encode(&message)
}

fn build_admin(mut builder: admin_request::Builder<'_>, admin: &AdminRequest) {
    match admin {
        AdminRequest::AddLearner { id, address } => {
            let mut node = builder.init_add_learner();
            node.set_id(*id);
            node.set_address(address.as_str());
        }
        AdminRequest::Promote(id) => builder.set_promote(*id),
        AdminRequest::Remove(id) => builder.set_remove(*id),
        AdminRequest::TransferLeader(id) => builder.set_transfer_leader(*id),
        AdminRequest::Members => builder.set_members(()),
        AdminRequest::Snapshot => builder.set_snapshot(()),
    }
}

/// `index`, if it is at most [`INDEX_MAX`] (no arithmetic on it can then
/// overflow).
fn index_within_limit(index: u64) -> Result<u64, WireError> {
    if index > INDEX_MAX {
        return Err(WireError::Malformed(format!(
            "index {index} beyond the limit {INDEX_MAX}"
        )));
    }
    Ok(index)
}

/// Decodes a `ClientRequest` frame. Every field a request needs is checked;
/// an unknown union member is an error, not a guess.
pub fn decode_request(bytes: &[u8]) -> Result<Request, WireError> {
    let message = frame::open(bytes)?;
    let root = message.get_root::<client_request::Reader<'_>>()?;
    let body = match root.which()? {
        client_request::Append(()) => RequestBody::Append,
        client_request::Read(read) => {
            let read = read?;
            RequestBody::Read {
                from_index: index_within_limit(read.get_from_index())?,
                max_entries: read.get_max_entries(),
            }
        }
        client_request::Tail(tail) => {
            let tail = tail?;
            RequestBody::Tail {
                from_index: index_within_limit(tail.get_from_index())?,
                max_entries: tail.get_max_entries(),
            }
        }
        client_request::Get(get) => {
            let get = get?;
            RequestBody::Get {
                key: get.get_key()?.to_vec(),
                stale: get.get_stale(),
            }
        }
        client_request::Put(command) => write_body(command, "put")?,
        client_request::Cas(command) => write_body(command, "cas")?,
        client_request::Delete(command) => write_body(command, "delete")?,
        client_request::Status(()) => RequestBody::Status,
        client_request::Admin(admin) => RequestBody::Admin(read_admin(admin?)?),
    };
    Ok(Request {
        request_id: root.get_request_id(),
        log: text(root.get_log())?,
        body,
    })
}

fn write_body(
    command: capnp::Result<kv_command::Reader<'_>>,
    verb: &str,
) -> Result<RequestBody, WireError> {
    let command = read_kv_command(command?)?;
    let matches = matches!(
        (verb, &command.operation),
        ("put", KvOperation::Put(_))
            | ("delete", KvOperation::Delete)
            | ("cas", KvOperation::Cas { .. })
    );
    if !matches {
        return Err(WireError::Malformed(format!(
            "{verb} request carries a different operation"
        )));
    }
    Ok(RequestBody::Write(command))
}

fn read_admin(reader: admin_request::Reader<'_>) -> Result<AdminRequest, WireError> {
    Ok(match reader.which()? {
        admin_request::AddLearner(node) => {
            let node = node?;
            AdminRequest::AddLearner {
                id: node.get_id(),
                address: text(node.get_address())?,
            }
        }
        admin_request::Promote(id) => AdminRequest::Promote(id),
        admin_request::Remove(id) => AdminRequest::Remove(id),
        admin_request::TransferLeader(id) => AdminRequest::TransferLeader(id),
        admin_request::Members(()) => AdminRequest::Members,
        admin_request::Snapshot(()) => AdminRequest::Snapshot,
    })
}

/// Encodes a `ClientResponse` frame.
pub fn encode_response(response: &Response) -> Vec<u8> {
    let mut message = crate::wire::frame::builder(64);
    let mut root = message.init_root::<client_response::Builder<'_>>();
    root.set_request_id(response.request_id);
    match &response.body {
        ResponseBody::Appended {
            first_index,
            count,
            term,
        } => {
            let mut appended = root.init_appended();
            appended.set_first_index(*first_index);
            appended.set_count(*count);
            appended.set_term(*term);
        }
        ResponseBody::Batches(count) => root.set_batches(*count),
        ResponseBody::Value(value) => build_value(root.init_value(), value),
        ResponseBody::Done => root.set_done(()),
        ResponseBody::CasResult(value) => build_value(root.init_cas_result(), value),
        ResponseBody::Status(status) => build_status(root.init_status(), status),
        ResponseBody::Members(members) => build_members(root.init_members(), members),
        ResponseBody::Error(reply) => build_error(root.init_error(), reply),
    }
    frame::encode(&message)
}

fn build_value(mut builder: crate::rast_capnp::kv_value::Builder<'_>, value: &KvValue) {
    builder.set_found(value.found);
    builder.set_value(&value.value);
    builder.set_stale(value.stale);
    builder.set_index(value.index);
}

fn read_value(reader: crate::rast_capnp::kv_value::Reader<'_>) -> Result<KvValue, WireError> {
    Ok(KvValue {
        found: reader.get_found(),
        value: reader.get_value()?.to_vec(),
        stale: reader.get_stale(),
        index: reader.get_index(),
    })
}

fn build_status(mut builder: crate::rast_capnp::status::Builder<'_>, status: &Status) {
    builder.set_node_id(status.node_id);
    builder.set_role(status.role.as_str());
    builder.set_term(status.term);
    builder.set_leader(status.leader);
    builder.set_first_index(status.first_index);
    builder.set_snapshot_index(status.snapshot_index);
    builder.set_last_index(status.last_index);
    builder.set_commit_index(status.commit_index);
    builder.set_applied_index(status.applied_index);
    builder.set_failed(status.failed.as_str());
    builder.set_tls(status.tls.as_str());
    builder.set_damaged_in(status.damaged_in);
    if let Some((term, index)) = status.acked_end {
        builder.set_acked_end_known(true);
        builder.set_acked_end_term(term);
        builder.set_acked_end_index(index);
    }
    let mut peers = builder.init_peers(status.peers.len() as u32);
    for (position, peer) in status.peers.iter().enumerate() {
        let mut entry = peers.reborrow().get(position as u32);
        entry.set_id(peer.id);
        entry.set_match_index(peer.match_index);
        entry.set_next_index(peer.next_index);
        entry.set_state(peer.state.as_str());
    }
}

fn read_status(reader: crate::rast_capnp::status::Reader<'_>) -> Result<Status, WireError> {
    let mut peers = Vec::new();
    let list = reader.get_peers()?;
    within_members_limit(list.len(), "peers")?;
    for peer in list {
        peers.push(PeerStatus {
            id: peer.get_id(),
            match_index: peer.get_match_index(),
            next_index: peer.get_next_index(),
            state: text(peer.get_state())?,
        });
    }
    Ok(Status {
        node_id: reader.get_node_id(),
        role: text(reader.get_role())?,
        term: reader.get_term(),
        leader: reader.get_leader(),
        first_index: reader.get_first_index(),
        snapshot_index: reader.get_snapshot_index(),
        last_index: reader.get_last_index(),
        commit_index: reader.get_commit_index(),
        applied_index: reader.get_applied_index(),
        peers,
        failed: text(reader.get_failed())?,
        tls: text(reader.get_tls())?,
        damaged_in: reader.get_damaged_in(),
        acked_end: reader
            .get_acked_end_known()
            .then(|| (reader.get_acked_end_term(), reader.get_acked_end_index())),
    })
}

fn build_members(mut builder: crate::rast_capnp::membership::Builder<'_>, members: &Members) {
    let mut voters = builder.reborrow().init_voters(members.voters.len() as u32);
    for (position, id) in members.voters.iter().enumerate() {
        voters.set(position as u32, *id);
    }
    let mut outgoing = builder
        .reborrow()
        .init_voters_outgoing(members.voters_outgoing.len() as u32);
    for (position, id) in members.voters_outgoing.iter().enumerate() {
        outgoing.set(position as u32, *id);
    }
    let mut learners = builder
        .reborrow()
        .init_learners(members.learners.len() as u32);
    for (position, id) in members.learners.iter().enumerate() {
        learners.set(position as u32, *id);
    }
    let mut addresses = builder.init_addresses(members.addresses.len() as u32);
    for (position, (id, address)) in members.addresses.iter().enumerate() {
        let mut entry = addresses.reborrow().get(position as u32);
        entry.set_id(*id);
        entry.set_address(address.as_str());
    }
}

/// Reads a `Membership` (shared with config entries and snapshots).
pub fn read_members(
    reader: crate::rast_capnp::membership::Reader<'_>,
) -> Result<Members, WireError> {
    let (voters, voters_outgoing, learners, nodes) = (
        reader.get_voters()?,
        reader.get_voters_outgoing()?,
        reader.get_learners()?,
        reader.get_addresses()?,
    );
    within_members_limit(voters.len(), "voters")?;
    within_members_limit(voters_outgoing.len(), "outgoing voters")?;
    within_members_limit(learners.len(), "learners")?;
    within_members_limit(nodes.len(), "addresses")?;
    let mut addresses = Vec::with_capacity(nodes.len() as usize);
    for node in nodes {
        addresses.push((node.get_id(), text(node.get_address())?));
    }
    Ok(Members {
        voters: voters.iter().collect(),
        voters_outgoing: voters_outgoing.iter().collect(),
        learners: learners.iter().collect(),
        addresses,
    })
}

/// Refuses a list of more than [`MEMBERS_LIST_MAX`] nodes.
fn within_members_limit(len: u32, what: &str) -> Result<(), WireError> {
    if len > MEMBERS_LIST_MAX {
        return Err(WireError::Malformed(format!(
            "{len} {what} (at most {MEMBERS_LIST_MAX})"
        )));
    }
    Ok(())
}

/// Encodes a standalone `Membership` frame (the payload of a config entry).
pub fn encode_members(members: &Members) -> Vec<u8> {
    let mut message = crate::wire::frame::builder(64);
    build_members(message.init_root(), members);
    frame::encode(&message)
}

/// Decodes a standalone `Membership` frame.
pub fn decode_members(bytes: &[u8]) -> Result<Members, WireError> {
    let message = frame::open(bytes)?;
    read_members(message.get_root()?)
}

fn build_error(mut builder: error::Builder<'_>, reply: &ErrorReply) {
    builder.set_message(reply.message.as_str());
    match &reply.kind {
        ErrorKind::NotLeader { leader, address } => {
            let mut not_leader = builder.init_not_leader();
            not_leader.set_leader(*leader);
            not_leader.set_address(address.as_str());
        }
        ErrorKind::Compacted(first) => builder.set_compacted(*first),
        ErrorKind::TooLarge(limit) => builder.set_too_large(*limit),
        ErrorKind::Unavailable => builder.set_unavailable(()),
        ErrorKind::PreconditionFailed(value) => {
            build_value(builder.init_precondition_failed(), value);
        }
        ErrorKind::NotFound => builder.set_not_found(()),
        ErrorKind::Invalid => builder.set_invalid(()),
        ErrorKind::NoSpace => builder.set_no_space(()),
        ErrorKind::Failed => builder.set_failed(()),
        ErrorKind::SessionExpired => builder.set_session_expired(()),
        ErrorKind::Forbidden => builder.set_forbidden(()),
    }
}

fn read_error(reader: error::Reader<'_>) -> Result<ErrorReply, WireError> {
    let kind = match reader.which()? {
        error::NotLeader(not_leader) => {
            let not_leader = not_leader?;
            ErrorKind::NotLeader {
                leader: not_leader.get_leader(),
                address: text(not_leader.get_address())?,
            }
        }
        error::Compacted(first) => ErrorKind::Compacted(first),
        error::TooLarge(limit) => ErrorKind::TooLarge(limit),
        error::Unavailable(()) => ErrorKind::Unavailable,
        error::PreconditionFailed(value) => ErrorKind::PreconditionFailed(read_value(value?)?),
        error::NotFound(()) => ErrorKind::NotFound,
        error::Invalid(()) => ErrorKind::Invalid,
        error::NoSpace(()) => ErrorKind::NoSpace,
        error::Failed(()) => ErrorKind::Failed,
        error::SessionExpired(()) => ErrorKind::SessionExpired,
        error::Forbidden(()) => ErrorKind::Forbidden,
    };
    Ok(ErrorReply {
        message: text(reader.get_message())?,
        kind,
    })
}

/// Decodes a `ClientResponse` frame.
pub fn decode_response(bytes: &[u8]) -> Result<Response, WireError> {
    let message = frame::open(bytes)?;
    let root = message.get_root::<client_response::Reader<'_>>()?;
    let body = match root.which()? {
        client_response::Appended(appended) => {
            let appended = appended?;
            ResponseBody::Appended {
                first_index: appended.get_first_index(),
                count: appended.get_count(),
                term: appended.get_term(),
            }
        }
        client_response::Batches(count) => ResponseBody::Batches(count),
        client_response::Value(value) => ResponseBody::Value(read_value(value?)?),
        client_response::Done(()) => ResponseBody::Done,
        client_response::CasResult(value) => ResponseBody::CasResult(read_value(value?)?),
        client_response::Status(status) => ResponseBody::Status(read_status(status?)?),
        client_response::Members(members) => ResponseBody::Members(read_members(members?)?),
        client_response::Error(reply) => ResponseBody::Error(read_error(reply?)?),
    };
    Ok(Response {
        request_id: root.get_request_id(),
        body,
    })
}

#[cfg(test)]
mod tests;
