//! Fuzzes the parsers of what is on disk: the segment record scan, the
//! hard state, a snapshot file's header. Any panic is a bug; accepted
//! records must be whole, contiguous and inside the bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| rast::fuzzing::disk(data));
