//! A Maelstrom node: the server's own group (Raft core, key-value state
//! machine, the code that carries out the core's actions), with Maelstrom's
//! JSON-over-stdio network as the transport, and a
//! local harness that plays Maelstrom's part (lin-kv clients, a network
//! that drops, delays and partitions, a linearizability check).
//!
//! * [`protocol`]: the JSON messages and Maelstrom's error codes.
//! * [`node`]: the node itself, pure (lines and ticks in, lines out); the
//!   `rast-maelstrom` binary runs it over stdin/stdout.
//! * [`harness`]: Maelstrom's part, for machines without Maelstrom: real
//!   `rast-maelstrom` processes, a faulty network, lin-kv clients, the
//!   linearizability check (`tests/maelstrom.rs`).

pub mod harness;
pub mod node;
pub mod protocol;

pub use node::{Node, Now};

#[cfg(test)]
mod tests;
