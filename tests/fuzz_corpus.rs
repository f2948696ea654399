//! The fuzzers' corpora, replayed on stable Rust in every CI run: each
//! input in `fuzz/corpus/{peer,client,disk}` (what cargo-fuzz kept as
//! reaching new code, minimized) goes through the very function its fuzz
//! target calls (`rast::fuzzing`), and so do 64 seeded mutations of each
//! (bytes flipped, cut short, doubled). A panic there, or an accepted value
//! outside the node's limits, fails the test.
//!
//! The fuzzer itself needs nightly Rust (`fuzz/README.md`); this replay is
//! how what it found keeps guarding every commit.

use std::path::Path;

use rast::random::Random;

/// Mutations replayed per corpus input.
const MUTATIONS: usize = 64;

/// A target's corpus, sorted by file name (the replay is deterministic).
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut inputs: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    inputs.sort();
    inputs
}

/// `input` with one seeded mutation.
fn mutate(input: &[u8], random: &mut Random) -> Vec<u8> {
    let mut bytes = input.to_vec();
    if bytes.is_empty() {
        return vec![random.next_u64() as u8];
    }
    match random.below(3) {
        0 => {
            for _ in 0..random.between(1, 5) {
                let at = random.below(bytes.len() as u64) as usize;
                bytes[at] ^= random.between(1, 255) as u8;
            }
        }
        1 => bytes.truncate(random.below(bytes.len() as u64) as usize),
        _ => bytes.extend_from_slice(input),
    }
    bytes
}

/// Replays `target`'s corpus and the mutations through `body`; returns
/// how many inputs ran.
fn replay(target: &str, body: fn(&[u8])) -> usize {
    let inputs = corpus(target);
    assert!(
        inputs.len() >= 10,
        "fuzz/corpus/{target} holds {} inputs; a fuzz run keeps more",
        inputs.len()
    );
    let mut random = Random::new(0xf022);
    let mut ran = 0;
    for (name, input) in &inputs {
        let outcome = std::panic::catch_unwind(|| body(input));
        assert!(outcome.is_ok(), "fuzz/corpus/{target}/{name} fails");
        for mutation in 0..MUTATIONS {
            let bytes = mutate(input, &mut random);
            let outcome = std::panic::catch_unwind(|| body(&bytes));
            assert!(
                outcome.is_ok(),
                "mutation {mutation} of fuzz/corpus/{target}/{name} fails: {bytes:02x?}"
            );
        }
        ran += 1 + MUTATIONS;
    }
    ran
}

#[test]
fn peer_corpus_replays() {
    println!("{} peer inputs", replay("peer", rast::fuzzing::peer));
}

#[test]
fn client_corpus_replays() {
    println!("{} client inputs", replay("client", rast::fuzzing::client));
}

#[test]
fn disk_corpus_replays() {
    println!("{} disk inputs", replay("disk", rast::fuzzing::disk));
}
