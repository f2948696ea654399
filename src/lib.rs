//! Rast: a Raft replicated-log server for Linux.
//!
//! Clients append entries to named logs; a cluster of 3 or 5 nodes
//! replicates every entry with Raft and acknowledges it once a majority has
//! it on disk. One byte format (`schema/rast.capnp`) is used on the wire and
//! on disk, so entries travel from socket to log file without re-encoding.
//!
//! This crate is the `rast` binary's home and one roof over the workspace's
//! crates, whose boundaries the compiler keeps (dependencies point down):
//!
//! ```text
//!  rast (this crate: the CLI, `rast serve`, `rast cluster`; re-exports)
//!   ├─► rast-tools   sim, check, nemesis, maelstrom, bench, launch, fuzzing
//!   │     └─► rast-server
//!   └─► rast-server  server, storage, net, kv, io, fail_stop
//!         └─► rast-core   raft (pure: no IO, no clock), constants, search
//!               └─► rast-client  wire, types, random, client, rast_capnp
//! ```
//!
//! The server library cannot reach the tooling, and the Raft core cannot
//! reach IO: neither crate depends on what would let it. Within them:
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

pub use rast_core::{constants, raft, search};
pub use rast_server::{fail_stop, io, kv, net, server, storage};
pub use rast_tools::{bench, check, fuzzing, launch, maelstrom, nemesis, sim};

// The protocol, the types, the generator and the client are the
// `rast-client` crate's, shared with applications.
pub use rast_client::client;
pub use rast_client::random;
pub use rast_client::rast_capnp;
pub use rast_client::types;
pub use rast_client::wire;
