//! Every parser of outside bytes against hostile input: the peer codec,
//! the client protocol's decoders, and the parsers of what is on disk (the
//! record scan, the hard state, snapshot files). The input is valid
//! encodings mutated (bytes flipped, cut short, spliced with garbage) and
//! plain random bytes.
//!
//! What each property asserts beyond "no panic" (proptest fails on one):
//! what a decoder accepts is within the limits the rest of the node relies
//! on (no index or term above `INDEX_MAX` from a peer), and a checksummed
//! file with any byte flipped is refused (or, for the mirrored hard
//! state, read as the same state), never read as something else.
//!
//! Why here and not only under cargo-fuzz: these run in CI on stable Rust,
//! on every commit, in a few seconds; `fuzz/` goes deeper when run by hand,
//! and `tests/fuzz_corpus.rs` replays what it found. The valid encodings
//! are the fuzzer's seeds (`rast::fuzzing::seeds`).

use proptest::prelude::*;
use rast::fuzzing::{seeds, within_limits};
use rast::net::codec;
use rast::storage::{HardState, hard_state, record, snapshot_file};
use rast::types::{LogIndex, NodeId, Term};
use rast::wire::client::{self, Members};

/// How a valid encoding is damaged.
#[derive(Clone, Debug)]
enum Damage {
    /// Bytes at these positions (modulo the length) XORed with these.
    Flip(Vec<(usize, u8)>),
    /// Cut to this length (modulo the length).
    Cut(usize),
    /// These bytes written over from this position on.
    Splice(usize, Vec<u8>),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        prop::collection::vec((any::<usize>(), 1u8..=255), 1..4).prop_map(Damage::Flip),
        any::<usize>().prop_map(Damage::Cut),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Damage::Splice(at, bytes)),
    ]
}

fn apply(mut bytes: Vec<u8>, damage: &Damage) -> Vec<u8> {
    if bytes.is_empty() {
        return bytes;
    }
    let len = bytes.len();
    match damage {
        Damage::Flip(flips) => {
            for (at, mask) in flips {
                bytes[at % len] ^= mask;
            }
        }
        Damage::Cut(at) => bytes.truncate(at % len),
        Damage::Splice(at, garbage) => {
            for (offset, byte) in garbage.iter().enumerate() {
                let position = (at + offset) % len;
                bytes[position] = *byte;
            }
        }
    }
    bytes
}

fn decode_client(kind: &str, bytes: &[u8]) {
    match kind {
        "hello" => drop(client::decode_hello(bytes)),
        "kv" => drop(client::decode_kv_command(bytes)),
        "request" => drop(client::decode_request(bytes)),
        _ => drop(client::decode_members(bytes)),
    }
    // Any frame may arrive where any other was expected.
    drop(client::decode_response(bytes));
    drop(client::decode_hello_response(bytes));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// A damaged peer frame is refused or decodes within the limits.
    #[test]
    fn peer_frames_damaged(which in 0usize..4, damage in damage()) {
        let frame = apply(seeds::peer()[which].clone(), &damage);
        let mut batches = Vec::new();
        if let Ok(header) = codec::decode(&frame, &mut batches) {
            prop_assert!(within_limits(&header, &batches), "{header:?} {batches:?}");
        }
    }

    /// Random bytes as a peer frame: refused, or within the limits.
    #[test]
    fn peer_frames_random(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut batches = Vec::new();
        if let Ok(header) = codec::decode(&bytes, &mut batches) {
            prop_assert!(within_limits(&header, &batches), "{header:?} {batches:?}");
        }
    }

    /// Damaged client frames never panic any decoder.
    #[test]
    fn client_frames_damaged(which in 0usize..6, damage in damage()) {
        let (kind, frame) = seeds::client()[which].clone();
        decode_client(kind, &apply(frame, &damage));
    }

    /// Random bytes never panic any client decoder.
    #[test]
    fn client_frames_random(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        for kind in ["hello", "kv", "request", "members"] {
            decode_client(kind, &bytes);
        }
    }

    /// A damaged segment scans to an error or to records that are each
    /// whole and checked: contiguous from index 1, inside the file.
    #[test]
    fn segment_scan_damaged(damage in damage()) {
        let bytes = apply(seeds::segment(), &damage);
        let mut records = Vec::new();
        if let Ok(end) = record::scan(&bytes, LogIndex(1), Term(0), |meta| records.push(meta)) {
            let mut next = LogIndex(1);
            for meta in &records {
                prop_assert_eq!(meta.first, next);
                prop_assert!(meta.offset + u64::from(meta.bytes) <= end.end);
                next = meta.last.next();
            }
            prop_assert!(end.end <= bytes.len() as u64);
        }
    }

    /// A hard state with any byte flipped reads as the same state (its
    /// mirror copy): a damaged vote record is never read as another vote.
    #[test]
    fn hard_state_flipped(at in any::<usize>(), mask in 1u8..=255) {
        let state = HardState { term: Term(9), vote: NodeId(2), commit: LogIndex(77), damaged_in: Term(3), acked_end: Some((Term(3), LogIndex(70))) };
        let bytes = apply(hard_state::encode(state), &Damage::Flip(vec![(at, mask)]));
        // One damaged copy: the mirror gives the same state, never another.
        prop_assert_eq!(hard_state::decode(&bytes), Ok(state));
    }

    /// Damaged or random hard-state bytes never panic the decoder.
    #[test]
    fn hard_state_damaged(damage in damage(), bytes in prop::collection::vec(any::<u8>(), 0..128)) {
        let state = HardState { term: Term(9), vote: NodeId(2), commit: LogIndex(77), damaged_in: Term(3), acked_end: Some((Term(3), LogIndex(70))) };
        drop(hard_state::decode(&apply(hard_state::encode(state), &damage)));
        drop(hard_state::decode(&bytes));
    }
}

/// A snapshot file with any one byte flipped fails verification: 256
/// seeded flips over the header and the body (files on disk, so fewer
/// cases than the in-memory properties).
#[test]
fn snapshot_files_flipped_are_refused() {
    let dir = std::env::temp_dir().join(format!("rast-hostile-snapshot-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let members = Members {
        voters: vec![1, 2, 3],
        voters_outgoing: Vec::new(),
        learners: Vec::new(),
        addresses: vec![(1, "127.0.0.1:7001".into())],
    };
    let (_, path) = snapshot_file::write(&dir, LogIndex(100), Term(4), members, |out| {
        out.write_all(&[0x5a; 3000])?;
        Ok(3000)
    })
    .expect("write a snapshot");
    snapshot_file::verify(&path).expect("the intact file verifies");
    let intact = std::fs::read(&path).expect("read it");
    let mut random = rast::random::Random::new(0x5eed);
    let damaged = dir.join("damaged");
    for _ in 0..256 {
        let at = random.below(intact.len() as u64) as usize;
        let mask = 1 + random.below(255) as u8;
        let mut bytes = intact.clone();
        bytes[at] ^= mask;
        std::fs::write(&damaged, &bytes).expect("write the damaged copy");
        assert!(
            snapshot_file::verify(&damaged).is_err(),
            "byte {at} of {} flipped with {mask:#x} still verifies",
            intact.len()
        );
    }
    std::fs::remove_dir_all(&dir).expect("clean up");
}
