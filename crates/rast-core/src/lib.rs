//! The pure Raft core of Rast ([`raft`]) and every limit of the system
//! ([`constants`]): no IO, no clock, no threads. The crate depends on
//! nothing that does IO, so the core cannot reach it; the server and the
//! simulator drive it with their own.

pub mod constants;
pub mod raft;
pub mod search;

// The id and index types, the batch kinds and the seeded generator, under
// the names the core's modules use.
pub use rast_client::{random, types, wire};
