//! The io_uring layer: the one place `unsafe` lives.
//!
//! * [`ring::Ring`]: one io_uring with a table of operations in flight.
//!   Every operation owns what the kernel touches — its buffer, its file
//!   descriptor, its paths — from submission until its completion is reaped,
//!   even if the caller gives up on it ([`ring::Ring::abandon`]) or drops the
//!   ring (which cancels and waits). Completions are matched to operations
//!   by `user_data` = (generation << 32) | slot.
//! * [`mapping::Mapping`]: a read-only memory map of a log file, for
//!   zero-copy reads of bytes already written.
//! * [`process`]: child processes of the fault harness that die with it and
//!   start in another network namespace (code between fork and exec).
//!
//! A server core owns one ring and shares it (`Rc<RefCell<Ring>>`, see
//! [`SharedRing`]) between its network and its storage; tests and
//! benchmarks give each store a ring of its own.

pub mod mapping;
pub mod process;
pub mod ring;
pub mod signal;
pub mod socket;

pub use mapping::Mapping;
pub use ring::{Link, OpId, Ring};
pub use socket::{adopt_socket, listen_reuseport, peer_ip, splice_pipe, tcp_socket};

/// A ring shared by everything on one core (no locks: one thread).
pub type SharedRing = std::rc::Rc<std::cell::RefCell<Ring>>;
