//! Rast: a Raft replicated-log server for Linux.
//!
//! Clients append entries to named logs; a cluster of 3 or 5 nodes
//! replicates every entry with Raft and acknowledges it once a majority has
//! it on disk. One byte format (`schema/rast.capnp`) is used on the wire and
//! on disk, so entries travel from socket to log file without re-encoding.
//!
//! Layers, lowest first (dependencies point down):
//!
//! ```text
//!  server ──► raft, storage, net, kv, io
//!  kv     ──► wire, types, constants, fail_stop (pure: the state machine)
//!  storage ──► io, wire, types, constants
//!  raft   ──► wire, types, random, constants (pure: no IO, no clock)
//!  wire   ──► rast_capnp (generated), constants
//!  search (a leaf: sorted lookups from the tail, for raft and storage)
//!
//!  bench  ──► client, wire, server (the load generator and its report)
//!  check  ──► types only: the history checkers judge the others and share
//!             no code with them (used by sim and the fault tests)
//!  nemesis ──► check, client, io: the real-process fault harness
//! ```

pub mod bench;
pub mod check;
pub mod constants;
pub mod fail_stop;
pub mod fuzzing;
pub mod io;
pub mod kv;
pub mod launch;
pub mod maelstrom;
pub mod nemesis;
pub mod net;
pub mod raft;
pub mod search;
pub mod server;
pub mod sim;
pub mod storage;

// The protocol, the types, the generator and the client are the
// `rast-client` crate's, shared with applications; re-exported under the
// names the server's modules use.
pub use rast_client::client;
pub use rast_client::random;
pub use rast_client::rast_capnp;
pub use rast_client::types;
pub use rast_client::wire;
