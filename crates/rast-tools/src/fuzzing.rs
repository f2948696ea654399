//! The bodies of the fuzz targets in `fuzz/` (cargo-fuzz, nightly), kept
//! in the library so CI replays their corpora on stable Rust
//! (`tests/fuzz_corpus.rs`) through the very same code.
//!
//! ```text
//!  fuzz/fuzz_targets/peer.rs ──┐                 ┌── fuzz/corpus/peer/*
//!  fuzz/fuzz_targets/client.rs ├─► fuzzing::{peer, client, disk} ◄─┤   …/client/*
//!  fuzz/fuzz_targets/disk.rs ──┘   (panic = bug)  └── …/disk/*  (tests/fuzz_corpus.rs)
//! ```
//!
//! Each function takes any bytes; an `Err` from a parser is expected, a
//! panic is a bug, and so is an accepted value outside what the node
//! relies on (asserted here). [`seeds`] are valid encodings of what each
//! target parses: the fuzzer starts from them (`fuzz/corpus/*/seed-*`),
//! and `tests/hostile_bytes.rs` damages them under proptest.

use crate::constants::INDEX_MAX;
use crate::net::codec::{self, PeerBody};
use crate::raft::BatchSummary;
use crate::storage::{hard_state, record, snapshot_file};
use crate::types::{LogIndex, Term};
use crate::wire::client;

/// A peer's message: the header (and its batch summaries) must come out
/// within `INDEX_MAX`; a snapshot chunk parses or errs.
pub fn peer(data: &[u8]) {
    let mut batches = Vec::new();
    if let Ok(header) = codec::decode(data, &mut batches) {
        assert!(
            within_limits(&header, &batches),
            "accepted out of range: {header:?}"
        );
    }
    let _ = codec::with_snapshot_chunk(data, |chunk| chunk.data.len());
}

/// Whether an accepted peer message keeps the limits the node relies on:
/// every term and index at most `INDEX_MAX`, every batch non-empty.
pub fn within_limits(header: &codec::PeerHeader, batches: &[BatchSummary]) -> bool {
    let indexes = match header.body {
        PeerBody::AppendEntries {
            prev_index,
            prev_term,
            leader_commit,
            ..
        } => vec![prev_index.get(), prev_term.get(), leader_commit.get()],
        PeerBody::AppendResponse(response) => vec![
            response.match_index.get(),
            response.rejected_index.get(),
            response.hint_index.get(),
            response.hint_term.get(),
            response.last_index.get(),
        ],
        PeerBody::RequestVote(request) => vec![request.last_index.get(), request.last_term.get()],
        PeerBody::Heartbeat(heartbeat) => vec![heartbeat.leader_commit.get()],
        PeerBody::HeartbeatResponse(response) => vec![response.match_index.get()],
        PeerBody::InstallSnapshot(install) => {
            vec![install.last_index.get(), install.last_term.get()]
        }
        PeerBody::RepairWait(wait) => {
            let (term, index) = wait.acked_end.unwrap_or_default();
            vec![
                wait.last_index.get(),
                wait.last_term.get(),
                term.get(),
                index.get(),
            ]
        }
        PeerBody::VoteResponse(_) | PeerBody::TimeoutNow | PeerBody::SnapshotResponse(_) => {
            Vec::new()
        }
    };
    header.term.get() <= INDEX_MAX
        && indexes.iter().all(|value| *value <= INDEX_MAX)
        && batches.iter().all(|batch| {
            batch.count > 0
                && batch.last_index().get() <= INDEX_MAX
                && batch.term.get() <= INDEX_MAX
        })
}

/// Every decoder of the client protocol over the same bytes (any frame
/// may arrive where another was expected).
pub fn client(data: &[u8]) {
    let _ = client::decode_hello(data);
    let _ = client::decode_hello_response(data);
    let _ = client::decode_request(data);
    let _ = client::decode_kv_command(data);
    let _ = client::decode_members(data);
    let _ = client::decode_response(data);
}

/// The disk parsers: the record scan (accepted records whole, contiguous
/// from index 1, inside the bytes), the hard state, a snapshot header.
pub fn disk(data: &[u8]) {
    let mut next = LogIndex(1);
    let mut records_ok = true;
    let scanned = record::scan(data, LogIndex(1), Term::ZERO, |meta| {
        records_ok &= meta.first == next && meta.last >= meta.first;
        next = meta.last.next();
    });
    if let Ok(end) = scanned {
        assert!(records_ok, "records not contiguous from index 1");
        assert!(end.end <= data.len() as u64, "scan end past the bytes");
    }
    let _ = hard_state::decode(data);
    let _ = snapshot_file::SnapshotMeta::decode(&mut &data[..]);
}

/// Valid encodings of what each target parses, the starting points of
/// the fuzzer and of the damage properties.
pub mod seeds {
    use crate::net::codec;
    use crate::raft::{
        AppendRange, AppendResponse, BatchSummary, Heartbeat, Outgoing, OutgoingBody, RequestVote,
    };
    use crate::storage::{HardState, hard_state, snapshot_file::SnapshotMeta};
    use crate::types::{LogId, LogIndex, NodeId, Term};
    use crate::wire::client::{
        self, AdminRequest, Hello, KvCommand, KvOperation, Members, Request, RequestBody,
    };
    use crate::wire::{BatchKind, encode_batch};

    fn outgoing(body: OutgoingBody) -> Outgoing {
        Outgoing {
            from: NodeId(1),
            to: NodeId(2),
            term: Term(7),
            body,
        }
    }

    /// Peer frames, one of each common kind, with batches where they fit.
    pub fn peer() -> Vec<Vec<u8>> {
        let batches = [
            BatchSummary {
                term: Term(7),
                first_index: LogIndex(11),
                count: 3,
                bytes: 256,
                kind: BatchKind::Data,
            },
            BatchSummary {
                term: Term(7),
                first_index: LogIndex(14),
                count: 1,
                bytes: 128,
                kind: BatchKind::Config,
            },
        ];
        let append = OutgoingBody::AppendEntries(AppendRange {
            prev_index: LogIndex(10),
            prev_term: Term(6),
            leader_commit: LogIndex(9),
            first_index: LogIndex(11),
            last_index: LogIndex(14),
            batches: 2,
            bytes: 384,
        });
        let group = LogId::from_name("kv");
        let message = |body| codec::encode(group, &outgoing(body), &[]);
        vec![
            codec::encode(group, &outgoing(append), &batches),
            message(OutgoingBody::AppendResponse(AppendResponse {
                success: true,
                match_index: LogIndex(14),
                rejected_index: LogIndex(0),
                hint_index: LogIndex(0),
                hint_term: Term(0),
                last_index: LogIndex(14),
            })),
            message(OutgoingBody::RequestVote(RequestVote {
                last_index: LogIndex(14),
                last_term: Term(7),
                pre_vote: true,
                leadership_transfer: false,
            })),
            message(OutgoingBody::Heartbeat(Heartbeat {
                leader_commit: LogIndex(14),
                read_round: 3,
            })),
        ]
    }

    /// Client-protocol frames, with the decoder each is meant for
    /// (`hello`, `kv`, `request`, `members`).
    pub fn client() -> Vec<(&'static str, Vec<u8>)> {
        let command = KvCommand {
            client_id: 5,
            sequence: 9,
            key: b"key".to_vec(),
            operation: KvOperation::Cas {
                expected: Some(b"old".to_vec()),
                new: b"new".to_vec(),
            },
            time_ms: 1_700_000_000_000,
        };
        let request = |body| {
            client::encode_request(&Request {
                request_id: 42,
                log: "orders".into(),
                body,
            })
        };
        vec![
            (
                "hello",
                client::encode_hello(&Hello {
                    protocol_version: 1,
                    cluster_id: "rast".into(),
                    node_id: 3,
                    token: b"secret".to_vec(),
                    core: 1,
                    cores: 2,
                }),
            ),
            ("kv", client::encode_kv_command(&command)),
            ("request", request(RequestBody::Write(command.clone()))),
            (
                "request",
                request(RequestBody::Tail {
                    from_index: 17,
                    max_entries: 64,
                }),
            ),
            (
                "request",
                request(RequestBody::Admin(AdminRequest::AddLearner {
                    id: 4,
                    address: "127.0.0.1:7004".into(),
                })),
            ),
            ("members", client::encode_members(&members())),
        ]
    }

    fn members() -> Members {
        Members {
            voters: vec![1, 2, 3],
            voters_outgoing: Vec::new(),
            learners: vec![4],
            addresses: vec![(1, "127.0.0.1:7001".into())],
        }
    }

    /// A segment file's bytes: three batches from index 1, term 2, then
    /// zeroes (the preallocated rest of a segment).
    pub fn segment() -> Vec<u8> {
        let mut bytes = Vec::new();
        let mut next = 1;
        for count in [2u32, 1, 3] {
            let entries: Vec<Vec<u8>> = (0..count).map(|entry| vec![entry as u8; 40]).collect();
            bytes.extend(encode_batch(
                BatchKind::Data,
                Term(2),
                LogIndex(next),
                &entries,
            ));
            next += u64::from(count);
        }
        bytes.extend([0u8; 256]);
        bytes
    }

    /// A hard-state file's bytes.
    pub fn hard_state() -> Vec<u8> {
        hard_state::encode(HardState {
            term: Term(9),
            vote: NodeId(2),
            commit: LogIndex(77),
            ..HardState::default()
        })
    }

    /// A snapshot file's header.
    pub fn snapshot_header() -> Vec<u8> {
        SnapshotMeta {
            index: LogIndex(100),
            term: Term(4),
            members: members(),
            body_bytes: 3000,
            body_crc: 0x1234_5678,
        }
        .encode()
    }

    /// Every seed of the `disk` target.
    pub fn disk() -> Vec<Vec<u8>> {
        vec![segment(), hard_state(), snapshot_header()]
    }
}
