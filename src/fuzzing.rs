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
//! relies on (asserted here).

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

fn within_limits(header: &codec::PeerHeader, batches: &[BatchSummary]) -> bool {
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
