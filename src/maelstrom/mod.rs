//! A Maelstrom node: the same Raft core and key-value state machine as the
//! server, with Maelstrom's JSON-over-stdio network as the transport, and a
//! local harness that plays Maelstrom's part (lin-kv clients, a network
//! that drops, delays and partitions, a linearizability check).
//!
//! * [`protocol`]: the JSON messages and Maelstrom's error codes.
//! * [`node`]: the node itself, pure (lines and ticks in, lines out); the
//!   `rast-maelstrom` binary runs it over stdin/stdout.

pub mod node;
pub mod protocol;

pub use node::{Node, Now};

#[cfg(test)]
mod tests;
