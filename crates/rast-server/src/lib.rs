//! The Rast server library: the io_uring event loop and its cores
//! ([`server`]), log storage ([`storage`]), the peer codec ([`net`]), the
//! key-value state machine ([`kv`]) and the IO helpers ([`io`]), around
//! the pure Raft core (`rast-core`). It depends on no tooling crate, so
//! the simulator, checkers, nemesis and bench cannot leak into a build
//! that serves.

pub mod fail_stop;
pub mod io;
pub mod kv;
pub mod net;
pub mod server;
pub mod storage;

// The core's crate and the client's, under the names the modules use.
pub use rast_client::{client, random, rast_capnp, types, wire};
pub use rast_core::{constants, raft, search};
