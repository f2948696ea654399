//! Fuzzes the peer codec: a peer message header (with its batch
//! summaries) and a snapshot chunk, as a peer's connection delivers them.
//! Any panic is a bug; what the decoder accepts must stay within the
//! limits the node relies on (no index or term above `INDEX_MAX`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| rast::fuzzing::peer(data));
