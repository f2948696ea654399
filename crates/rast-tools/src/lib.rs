//! Rast's tooling, built on the server library and never part of it: the
//! deterministic simulator ([`sim`]), the history checkers ([`check`]),
//! the real-process fault harness ([`nemesis`]) and the local-cluster
//! launcher it shares with `rast cluster`, `rast bench` and the tests
//! ([`launch`]), the Maelstrom node ([`maelstrom`]), the load generator
//! ([`mod@bench`]) and the fuzz targets' bodies ([`fuzzing`]).

pub mod bench;
pub mod check;
pub mod fuzzing;
pub mod launch;
pub mod maelstrom;
pub mod nemesis;
pub mod sim;

// The server's crates, under the names the modules use.
use rast_client::{client, random, types, wire};
use rast_server::{constants, io, kv, net, raft, server, storage};
