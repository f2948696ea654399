//! Peer transport and client protocol over TCP: codecs between frames and
//! the Raft core's messages, and connection state.

pub mod codec;
pub mod snapshot_stream;
