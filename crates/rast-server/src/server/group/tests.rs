//! Groups of five nodes wired in process: the peer frames a group emits are
//! decoded and stepped into their target group, unless the link is cut, so
//! a test scripts elections and partitions message by message.

use std::cell::Cell;
use std::collections::HashSet;
use std::rc::Rc;

use super::{ClientOut, Group, Outbound, PeerFrame, Piece, ReplyTo};
use crate::net::codec::{self, PeerBody, PeerHeader};
use crate::raft::{self, Role};
use crate::storage::memory::{MemoryLog, SyncMode};
use crate::storage::{Durability, HardState, LogStorage, ReadRange, StorageError};
use crate::types::{LogId, LogIndex, NodeId, Term};
use crate::wire::client::{ErrorKind, ResponseBody};
use crate::wire::{BatchKind, encode_batch, split_frame};

/// Five groups of one log and the links between them.
struct Cluster {
    groups: Vec<Group>,
    /// Links that drop everything.
    cut: HashSet<(usize, usize)>,
    /// Links that drop what a leader sends (entries, heartbeats) but carry
    /// elections.
    votes_only: HashSet<(usize, usize)>,
    /// Client answers: (node, request id, answer).
    answers: Vec<(usize, u64, ResponseBody)>,
    now_ms: u64,
    /// The log's name.
    log: &'static str,
    /// InstallSnapshot chunks still to lose.
    lose_chunks: usize,
}

const LOG: &str = "truncation";

/// The nodes of the test, by index.
const A: usize = 0;
const B: usize = 1;
const C: usize = 2;
const D: usize = 3;
const E: usize = 4;

/// A store in memory whose `poll` fails once told to: a disk that fills up
/// under writes already queued (and already sent to followers), as the
/// io_uring store reports ENOSPC at completion.
struct FailingStore {
    inner: MemoryLog,
    fail: Rc<Cell<bool>>,
}

impl LogStorage for FailingStore {
    fn append(&mut self, frame: &[u8]) -> Result<LogIndex, StorageError> {
        self.inner.append(frame)
    }
    fn store_hard_state(&mut self, state: HardState) -> Result<(), StorageError> {
        self.inner.store_hard_state(state)
    }
    fn flush(&mut self) -> Result<(), StorageError> {
        self.inner.flush()
    }
    fn poll(&mut self) -> Result<Durability, StorageError> {
        if self.fail.get() {
            return Err(StorageError::NoSpace);
        }
        self.inner.poll()
    }
    fn sync_all(&mut self) -> Result<Durability, StorageError> {
        self.inner.sync_all()
    }
    fn durability(&self) -> Durability {
        self.inner.durability()
    }
    fn first_index(&self) -> LogIndex {
        self.inner.first_index()
    }
    fn last_index(&self) -> LogIndex {
        self.inner.last_index()
    }
    fn term_at(&self, index: LogIndex) -> Option<Term> {
        self.inner.term_at(index)
    }
    fn read(&self, from: LogIndex, max_bytes: usize) -> Result<ReadRange<'_>, StorageError> {
        self.inner.read(from, max_bytes)
    }
    fn truncate_suffix(&mut self, from: LogIndex) -> Result<(), StorageError> {
        self.inner.truncate_suffix(from)
    }
    fn drop_prefix(&mut self, up_to: LogIndex) -> Result<(), StorageError> {
        self.inner.drop_prefix(up_to)
    }
    fn reset(&mut self, next: LogIndex) -> Result<(), StorageError> {
        self.inner.reset(next)
    }
    fn hard_state(&self) -> HardState {
        self.inner.hard_state()
    }
}

impl Cluster {
    fn new(nodes: usize) -> Self {
        Self::with_stores(nodes, |_| Box::new(MemoryLog::new(SyncMode::Immediate)))
    }

    /// A cluster whose node `node` gets its store from `store(node)`.
    fn with_stores(nodes: usize, store: impl FnMut(usize) -> Box<dyn LogStorage>) -> Self {
        Self::of_log(LOG, nodes, store)
    }

    /// A cluster of the log `log`.
    fn of_log(
        log: &'static str,
        nodes: usize,
        mut store: impl FnMut(usize) -> Box<dyn LogStorage>,
    ) -> Self {
        let ids: Vec<NodeId> = (1..=nodes as u64).map(NodeId).collect();
        let addresses: Vec<(NodeId, String)> = ids
            .iter()
            .map(|id| (*id, format!("127.0.0.1:{}", 7000 + id.get())))
            .collect();
        let groups = ids
            .iter()
            .map(|id| {
                Group::open(
                    LogId::from_name(log),
                    log.to_owned(),
                    raft::Config::new(*id, id.get()),
                    &ids,
                    addresses.clone(),
                    store(id.get() as usize - 1),
                    0,
                )
                .unwrap()
            })
            .collect();
        Self {
            groups,
            cut: HashSet::new(),
            votes_only: HashSet::new(),
            answers: Vec::new(),
            now_ms: 0,
            log,
            lose_chunks: 0,
        }
    }

    /// Cuts every link from `from` to each of `to`.
    fn cut(&mut self, from: usize, to: &[usize]) {
        for &node in to {
            self.cut.insert((from, node));
        }
    }

    /// Lets only election messages from `from` to each of `to` through.
    fn votes_only(&mut self, from: usize, to: &[usize]) {
        for &node in to {
            self.votes_only.insert((from, node));
        }
    }

    /// Runs turns and delivers messages until nothing moves.
    fn settle(&mut self) {
        for _ in 0..200 {
            let mut moved = false;
            for node in 0..self.groups.len() {
                let mut out = Outbound::default();
                self.groups[node].turn(&mut out);
                moved |= self.route(node, out);
            }
            if !moved {
                return;
            }
        }
        panic!("the cluster did not settle");
    }

    /// Delivers `out` of `node`; whether anything was delivered.
    fn route(&mut self, node: usize, out: Outbound) -> bool {
        for (reply, piece) in out.clients {
            let ClientOut::Bytes(bytes) = piece else {
                continue;
            };
            let response = crate::wire::client::decode_response(&bytes).unwrap();
            self.answers.push((node, reply.request_id, response.body));
        }
        let mut moved = false;
        for (to, message) in out.peers {
            let bytes = flatten(message);
            let target = to.get() as usize - 1;
            if self.cut.contains(&(node, target)) {
                continue;
            }
            let (header, rest) = split_frame(&bytes).unwrap().unwrap();
            let mut batches = Vec::new();
            let header = codec::decode(header, &mut batches).unwrap();
            let from_leader = matches!(
                header.body,
                PeerBody::AppendEntries { .. } | PeerBody::Heartbeat(_)
            );
            if from_leader && self.votes_only.contains(&(node, target)) {
                continue;
            }
            // A snapshot chunk's bytes are inside its frame.
            let rest = if matches!(header.body, PeerBody::InstallSnapshot(_)) {
                if self.lose_chunks > 0 {
                    self.lose_chunks -= 1;
                    continue;
                }
                &bytes[..]
            } else {
                rest
            };
            let rest = bytes::Bytes::copy_from_slice(rest);
            self.step(target, &header, &batches, &rest);
            moved = true;
        }
        moved
    }

    fn step(
        &mut self,
        node: usize,
        header: &PeerHeader,
        batches: &[raft::BatchSummary],
        bytes: &bytes::Bytes,
    ) {
        let mut out = Outbound::default();
        self.groups[node]
            .step(header, batches, bytes, &mut out)
            .unwrap();
        self.route(node, out);
    }

    /// Proposes a one-entry batch `payload` at `node` for request
    /// `request_id`.
    fn propose(&mut self, node: usize, payload: &[u8], request_id: u64) {
        let out = self.propose_unrouted(node, payload, request_id);
        self.route(node, out);
    }

    /// Proposes as `propose` does; returns what the group wants sent,
    /// undelivered.
    fn propose_unrouted(&mut self, node: usize, payload: &[u8], request_id: u64) -> Outbound {
        let frame = encode_batch(BatchKind::Data, Term(0), LogIndex(0), &[payload]);
        let frame = bytes::BytesMut::from(frame.as_slice());
        let reply = ReplyTo {
            connection: 0,
            generation: 1,
            request_id,
        };
        let mut out = Outbound::default();
        self.groups[node].propose(frame, reply, &mut out);
        out
    }

    /// Makes `node` campaign now, as a leadership transfer does (voters in
    /// a leader's lease still answer), in a term above `term`.
    fn campaign(&mut self, node: usize, from: usize, term: Term) {
        let header = PeerHeader {
            group: LogId::from_name(self.log),
            from: NodeId(from as u64 + 1),
            to: NodeId(node as u64 + 1),
            term,
            body: PeerBody::TimeoutNow,
        };
        self.step(node, &header, &[], &bytes::Bytes::new());
        self.settle();
    }

    /// Ticks every node by `ms`.
    fn tick(&mut self, ms: u64) {
        self.now_ms += ms;
        for node in 0..self.groups.len() {
            let mut out = Outbound::default();
            self.groups[node].tick(self.now_ms, &mut out);
            self.groups[node].snapshot_tick(self.now_ms, self.now_ms, &mut out);
            self.route(node, out);
        }
        self.settle();
    }

    /// Ticks (1 ms at a time) until `node` answered `request_id`: a
    /// snapshot is written by a thread of its own, which the ticks poll.
    fn await_answer(&mut self, node: usize, request_id: u64) {
        let started = std::time::Instant::now();
        while self.answer(node, request_id).is_none() {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(20),
                "node {node} never answered request {request_id}"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
            self.tick(1);
        }
    }

    fn role(&self, node: usize) -> Role {
        self.groups[node].core().role()
    }

    fn term(&self, node: usize) -> Term {
        self.groups[node].core().term()
    }

    fn answer(&self, node: usize, request_id: u64) -> Option<&ResponseBody> {
        self.answers
            .iter()
            .find(|(at, id, _)| *at == node && *id == request_id)
            .map(|(_, _, body)| body)
    }
}

/// An append whose entry a new leader overwrote on the node that took it is
/// not necessarily lost: the nodes it reached may still elect a leader that
/// commits it. So the node answers only once the entry's index commits (with
/// the entry: ok; with another: not committed), never at the truncation,
/// or a client told "not committed" retries and the log holds it twice.
///
/// Five nodes: A leads term 1 and takes append X at index 2, which reaches
/// only B. C is elected in term 2 by C, D, E (their logs end at index 1)
/// and its no-op reaches only A, which truncates X. Then B, whose log ends
/// with X, is elected in term 3 by B, D, E and commits X with its own
/// no-op.
#[test]
fn an_overwritten_append_is_answered_when_its_index_commits() {
    let mut cluster = Cluster::new(5);
    cluster.campaign(A, B, Term(0));
    assert_eq!(cluster.role(A), Role::Leader);
    cluster.tick(50);
    let term_a = cluster.term(A);

    cluster.cut(A, &[C, D, E]);
    cluster.propose(A, b"X", 7);
    cluster.settle();
    let index_x = cluster.groups[B].storage().last_index();
    assert_eq!(cluster.groups[B].storage().term_at(index_x), Some(term_a));
    assert!(cluster.answer(A, 7).is_none(), "X is not committed yet");

    // C leads term 2 (D and E vote for it but hear nothing more from it);
    // only A hears from it, and truncates X.
    cluster.cut(C, &[B]);
    cluster.votes_only(C, &[D, E]);
    cluster.cut(A, &[B]);
    cluster.cut(B, &[A, C, D, E]);
    cluster.campaign(C, A, term_a);
    assert_eq!(cluster.role(C), Role::Leader);
    let term_c = cluster.term(C);
    cluster.tick(50);
    assert_eq!(cluster.groups[A].storage().term_at(index_x), Some(term_c));
    assert!(
        cluster.answer(A, 7).is_none(),
        "A answered at the truncation: {:?}",
        cluster.answer(A, 7)
    );

    // B leads term 3 with D and E, and commits X with its no-op.
    cluster.cut.clear();
    cluster.votes_only.clear();
    cluster.cut(C, &[A, B, D, E]);
    cluster.cut(A, &[B, C, D, E]);
    cluster.cut(B, &[C]);
    cluster.campaign(B, C, term_c);
    assert_eq!(cluster.role(B), Role::Leader);
    cluster.tick(50);
    assert!(cluster.groups[B].core().commit_index() > index_x);
    assert_eq!(cluster.groups[B].storage().term_at(index_x), Some(term_a));

    // A hears from B, takes X back, learns it committed: X was appended.
    cluster.cut.clear();
    cluster.cut(C, &[A, B, D, E]);
    cluster.tick(50);
    cluster.tick(50);
    assert!(cluster.groups[A].core().commit_index() > index_x);
    match cluster.answer(A, 7) {
        Some(ResponseBody::Appended { first_index, .. }) => assert_eq!(*first_index, index_x.get()),
        other => panic!("X is committed at {index_x} but A answered {other:?}"),
    }
}

/// A log that stops on a storage error (fail-stop) must not tell the
/// clients of appends it already sent to followers to retry: those may
/// commit without it. They hear the outcome is unknown (`Failed`, which
/// clients do not retry); a later append, refused before anything is
/// written, hears `Unavailable` and goes to another node.
///
/// Three nodes: A leads; its disk fails just after append X went out to B
/// and C; B is elected and commits X.
#[test]
fn a_log_that_stops_does_not_disown_appends_it_sent() {
    let fail = Rc::new(Cell::new(false));
    let fail_a = Rc::clone(&fail);
    let mut cluster = Cluster::with_stores(3, move |node| {
        let inner = MemoryLog::new(SyncMode::Immediate);
        if node == A {
            Box::new(FailingStore {
                inner,
                fail: Rc::clone(&fail_a),
            })
        } else {
            Box::new(inner)
        }
    });
    cluster.campaign(A, B, Term(0));
    assert_eq!(cluster.role(A), Role::Leader);
    cluster.tick(50);
    fail.set(true);
    cluster.propose(A, b"X", 7);
    let index_x = cluster.groups[A].storage().last_index();
    cluster.settle();
    assert!(cluster.groups[A].failed().is_some(), "A's log stopped");
    assert_eq!(
        cluster.groups[B].storage().last_index(),
        index_x,
        "X reached B"
    );
    match cluster.answer(A, 7) {
        Some(ResponseBody::Error(error)) => assert_eq!(
            error.kind,
            ErrorKind::Failed,
            "a retryable answer for an append that may commit: {error:?}"
        ),
        other => panic!("A answered {other:?}"),
    }
    cluster.propose(A, b"Y", 8);
    assert!(
        matches!(cluster.answer(A, 8), Some(ResponseBody::Error(error)) if error.kind == ErrorKind::Unavailable),
        "a refused append goes elsewhere: {:?}",
        cluster.answer(A, 8)
    );

    // B leads term 2 and commits X.
    cluster.cut(A, &[B, C]);
    let term = cluster.term(B);
    cluster.campaign(B, A, term);
    assert_eq!(cluster.role(B), Role::Leader);
    cluster.tick(50);
    assert!(
        cluster.groups[B].core().commit_index() >= index_x,
        "X committed"
    );
    assert_eq!(
        cluster.groups[B].storage().term_at(index_x),
        cluster.groups[A].storage().term_at(index_x)
    );
}

/// A membership change asked for while another is uncommitted is answered
/// `Unavailable` (nothing was proposed; clients retry until the first one
/// commits), and then goes through; a change the rules refuse outright is
/// `Invalid`.
#[test]
fn a_change_behind_another_is_retried_not_refused() {
    use crate::wire::client::AdminRequest;
    let mut cluster = Cluster::new(3);
    cluster.campaign(A, B, Term(0));
    assert_eq!(cluster.role(A), Role::Leader);
    cluster.tick(50);
    let admin = |cluster: &mut Cluster, request: AdminRequest, request_id: u64| {
        let reply = ReplyTo {
            connection: 0,
            generation: 1,
            request_id,
        };
        let mut out = Outbound::default();
        cluster.groups[A].admin(&request, reply, &mut out);
        cluster.route(A, out);
    };
    // Cut A off so its first change cannot commit yet.
    cluster.cut(A, &[B, C]);
    admin(&mut cluster, AdminRequest::Remove(3), 1);
    assert!(cluster.answer(A, 1).is_none(), "not committed yet");
    admin(&mut cluster, AdminRequest::Remove(2), 2);
    match cluster.answer(A, 2) {
        Some(ResponseBody::Error(error)) => {
            assert_eq!(error.kind, ErrorKind::Unavailable, "{error:?}");
            assert!(error.message.contains("in progress"), "{}", error.message);
        }
        other => panic!("a change behind another answered {other:?}"),
    }
    // The first one commits; the same request now goes through.
    cluster.cut.clear();
    for _ in 0..20 {
        if cluster.answer(A, 1).is_some() {
            break;
        }
        cluster.tick(50);
    }
    assert!(
        matches!(cluster.answer(A, 1), Some(ResponseBody::Members(_))),
        "{:?}",
        cluster.answer(A, 1)
    );
    admin(&mut cluster, AdminRequest::Remove(9), 3);
    match cluster.answer(A, 3) {
        Some(ResponseBody::Error(error)) => assert_eq!(error.kind, ErrorKind::Invalid, "{error:?}"),
        other => panic!("removing a stranger answered {other:?}"),
    }
}

/// A configuration entry from outside (a peer, a file) is checked before
/// the core sees it: no voters, or a node id 0, is malformed.
#[test]
fn a_configuration_without_voters_is_malformed() {
    let members = |voters: Vec<u64>| crate::wire::client::Members {
        voters,
        voters_outgoing: Vec::new(),
        learners: vec![4],
        addresses: Vec::new(),
    };
    assert!(super::membership_of(&members(vec![1, 2, 3])).is_ok());
    assert!(super::membership_of(&members(Vec::new())).is_err());
    assert!(super::membership_of(&members(vec![0])).is_err());
}

/// A follower cut off while the leader snapshots and compacts its log gets
/// the snapshot streamed in many chunks (some lost on the way), installs it
/// and continues the log: its key-value state equals the leader's, and a
/// node restarted from its snapshot directory alone starts at the snapshot
/// with the same state.
#[test]
#[allow(clippy::too_many_lines)]
fn a_lagging_follower_catches_up_through_a_streamed_snapshot() {
    use crate::storage::segment::tests::TempDir;
    use crate::wire::client::{AdminRequest, KvCommand, KvOperation};
    let dirs: Vec<TempDir> = (0..3).map(|_| TempDir::new("group-install")).collect();
    let mut cluster = Cluster::of_log(super::KV_LOG, 3, |_| {
        Box::new(MemoryLog::new(SyncMode::Immediate))
    });
    for (node, dir) in dirs.iter().enumerate() {
        cluster.groups[node]
            .enable_snapshots(dir.0.clone(), super::snapshot::SnapshotPolicy::default(), 0)
            .expect("no snapshot yet");
        cluster.groups[node].snapshots.streams.chunk_bytes = 256;
    }
    cluster.campaign(A, B, Term(0));
    assert_eq!(cluster.role(A), Role::Leader);
    cluster.tick(50);
    cluster.cut(A, &[C]);
    cluster.cut(C, &[A]);
    let put = |cluster: &mut Cluster, key: u64, request_id: u64| {
        let command = KvCommand {
            client_id: 0,
            sequence: 0,
            key: format!("key-{key}").into_bytes(),
            operation: KvOperation::Put(vec![key as u8; 40]),
            time_ms: 0,
        };
        let reply = ReplyTo {
            connection: 0,
            generation: 1,
            request_id,
        };
        let mut out = Outbound::default();
        cluster.groups[A].write(&command, reply, &mut out);
        cluster.route(A, out);
        cluster.settle();
    };
    for key in 0..60 {
        put(&mut cluster, key, 100 + key);
    }
    let reply = ReplyTo {
        connection: 0,
        generation: 1,
        request_id: 1,
    };
    let mut out = Outbound::default();
    cluster.groups[A].admin(&AdminRequest::Snapshot, reply, &mut out);
    cluster.route(A, out);
    cluster.await_answer(A, 1);
    let Some(ResponseBody::Status(status)) = cluster.answer(A, 1) else {
        panic!("admin snapshot answered {:?}", cluster.answer(A, 1));
    };
    let snapshot_index = status.snapshot_index;
    assert!(snapshot_index >= 60, "{status:?}");
    assert!(
        cluster.groups[A].storage().first_index() > LogIndex(snapshot_index),
        "the leader dropped its log below the snapshot"
    );
    // C comes back; the first chunks of the stream are lost.
    cluster.cut.clear();
    cluster.lose_chunks = 3;
    let started = std::time::Instant::now();
    while cluster.groups[C].core().commit_index() < cluster.groups[A].core().commit_index() {
        // The install runs on a thread of its own: poll it, and let the
        // simulated clock run (resends, heartbeats).
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "C catches up"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
        cluster.tick(100);
    }
    assert_eq!(
        cluster.groups[C].core().commit_index(),
        cluster.groups[A].core().commit_index(),
        "C caught up"
    );
    assert!(cluster.groups[C].snapshot_index() >= LogIndex(snapshot_index));
    put(&mut cluster, 1_000, 2);
    cluster.tick(50);
    let (kv_a, kv_c) = (
        cluster.groups[A].kv.as_ref().expect("kv"),
        cluster.groups[C].kv.as_ref().expect("kv"),
    );
    assert_eq!(kv_c.applied_index(), kv_a.applied_index());
    assert!(kv_c == kv_a, "C holds the leader's state");
    assert_eq!(kv_c.get(b"key-59"), Some(&[59u8; 40][..]));

    // A restart from C's snapshot directory alone.
    let mut restarted = Group::open(
        LogId::from_name(super::KV_LOG),
        super::KV_LOG.to_owned(),
        raft::Config::new(NodeId(3), 3),
        &[NodeId(1), NodeId(2), NodeId(3)],
        Vec::new(),
        Box::new(MemoryLog::new(SyncMode::Immediate)),
        0,
    )
    .expect("open");
    let restored = restarted
        .enable_snapshots(
            dirs[C].0.clone(),
            super::snapshot::SnapshotPolicy::default(),
            0,
        )
        .expect("restore");
    assert_eq!(restored, Some(cluster.groups[C].snapshot_index()));
    let machine = restarted.kv.as_ref().expect("kv");
    assert_eq!(machine.get(b"key-59"), Some(&[59u8; 40][..]));
    assert_eq!(restarted.core().commit_index(), restored.expect("some"));
}

/// Reads and tails below the first stored index answer "compacted" with
/// the first index still available.
#[test]
fn reads_below_a_compacted_prefix_answer_compacted() {
    use crate::storage::segment::tests::TempDir;
    let dir = TempDir::new("group-compacted");
    let mut cluster = Cluster::new(1);
    cluster.groups[A]
        .enable_snapshots(dir.0.clone(), super::snapshot::SnapshotPolicy::default(), 0)
        .expect("enable");
    cluster.campaign(A, B, Term(0));
    for request in 0..10 {
        cluster.propose(A, b"entry", 10 + request);
        cluster.settle();
    }
    let reply = |request_id| ReplyTo {
        connection: 0,
        generation: 1,
        request_id,
    };
    let mut out = Outbound::default();
    cluster.groups[A].admin(
        &crate::wire::client::AdminRequest::Snapshot,
        reply(1),
        &mut out,
    );
    cluster.route(A, out);
    cluster.await_answer(A, 1);
    assert!(matches!(
        cluster.answer(A, 1),
        Some(ResponseBody::Status(_))
    ));
    let first = cluster.groups[A].storage().first_index();
    assert!(first > LogIndex(1), "compacted");
    let mut out = Outbound::default();
    cluster.groups[A].read(LogIndex(1), 0, reply(2), &mut out);
    cluster.groups[A].tail(LogIndex(1), 0, reply(3), &mut out);
    cluster.route(A, out);
    for request_id in [2, 3] {
        match cluster.answer(A, request_id) {
            Some(ResponseBody::Error(error)) => {
                assert_eq!(error.kind, ErrorKind::Compacted(first.get()), "{error:?}");
            }
            other => panic!("a read below the log answered {other:?}"),
        }
    }
}

/// A peer message's bytes as they cross the wire: the header, then each
/// piece (file spans read from their file).
fn flatten(message: PeerFrame) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let mut bytes = message.header;
    for piece in message.pieces {
        match piece {
            Piece::Shared(piece) | Piece::Copied(piece) => bytes.extend_from_slice(&piece),
            Piece::File(span) => {
                let mut read = vec![0u8; span.len as usize];
                span.file.read_exact_at(&mut read, span.offset).unwrap();
                bytes.extend_from_slice(&read);
            }
        }
    }
    bytes
}

/// The client batches proposed in one loop turn leave as one AppendEntries
/// frame per follower, sent by the group's `turn` (not by each `propose`),
/// carrying every batch; and every one of them commits.
#[test]
fn the_proposals_of_one_turn_leave_as_one_append_entries_per_follower() {
    let mut cluster = Cluster::new(3);
    cluster.campaign(A, B, Term(0));
    assert_eq!(cluster.role(A), Role::Leader);
    cluster.tick(50);
    let requests = 100..105;
    for request_id in requests.clone() {
        let out = cluster.propose_unrouted(A, b"entry", request_id);
        assert!(out.peers.is_empty(), "a proposal alone sends nothing");
    }
    let mut out = Outbound::default();
    cluster.groups[A].turn(&mut out);
    let appends: Vec<(NodeId, usize)> = out
        .peers
        .iter()
        .filter_map(|(to, message)| {
            let (header, _) = split_frame(&message.header).unwrap().unwrap();
            let mut batches = Vec::new();
            let header = codec::decode(header, &mut batches).unwrap();
            matches!(header.body, PeerBody::AppendEntries { .. }).then_some((*to, batches.len()))
        })
        .collect();
    assert_eq!(appends, vec![(NodeId(2), 5), (NodeId(3), 5)]);
    cluster.route(A, out);
    cluster.settle();
    for request_id in requests {
        assert!(
            matches!(
                cluster.answer(A, request_id),
                Some(ResponseBody::Appended { .. })
            ),
            "request {request_id}: {:?}",
            cluster.answer(A, request_id)
        );
    }
}

/// A store whose node restarts marked damaged (as recovery leaves it).
fn damaged_store() -> Box<dyn LogStorage> {
    let mut store = MemoryLog::new(SyncMode::Immediate);
    store
        .store_hard_state(HardState {
            term: Term(3),
            damaged_in: Term(2),
            ..HardState::default()
        })
        .unwrap();
    Box::new(store)
}

/// A damaged node that is its log's only voter has no peer to repair it
/// from: the group refuses service for good, saying so, instead of
/// waiting forever. With peers, a damaged node waits for its repair.
#[test]
fn a_damaged_only_voter_refuses_and_a_damaged_peer_waits() {
    let mut alone = Cluster::with_stores(1, |_| damaged_store());
    alone.tick(10);
    let reason = alone.groups[0].failed().expect("refused");
    assert!(reason.contains("only voter"), "{reason}");
    assert!(!alone.groups[0].reopenable(), "refused for good");

    let mut three = Cluster::with_stores(3, |node| {
        if node == 2 {
            damaged_store()
        } else {
            Box::new(MemoryLog::new(SyncMode::Immediate))
        }
    });
    for _ in 0..1_000 {
        three.tick(10);
        if three.groups[2].core().trusted() {
            break;
        }
    }
    assert!(three.groups.iter().all(|group| group.failed().is_none()));
    assert!(
        three.groups[2].core().trusted(),
        "repaired by the leader the other two elected"
    );
}
