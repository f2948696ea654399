//! Fuzzes the client protocol's decoders: Hello, request (admin and key
//! value commands inside), key-value command, members, response, Hello
//! answer. Any panic is a bug.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| rast::fuzzing::client(data));
