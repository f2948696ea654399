//! Independent history checkers: did the system do what it told its clients?
//!
//! The simulator (`crates/rast-tools/src/sim`) and the real-process fault tests record every
//! client request and reply as a [`history::History`]; these checkers judge
//! it. They are *independent* on purpose: they share no code with the Raft
//! core, the storage or the server, so a bug there cannot hide itself by
//! also being in the judge. They only know the sequential meaning of each
//! operation and the rules of real time.
//!
//! ```text
//!  sim / fault harness ──records──► History<Op> ──► operations (invoke paired
//!                                                    with ok | fail | unknown)
//!        ┌──────────────────────────────────────────────┤
//!        ▼                                              ▼
//!  linearizable: exact, exponential in the worst   log: specific invariants of
//!  case, bounded by a Budget (verdict may be       an append-only log, near-
//!  Unknown). Register, key-value (per key),        linear time, typed
//!  append-only log.                                violations. Any size.
//!        ▲
//!  jepsen: parser for the Jepsen etcd corpus, which proves the
//!  linearizability checker right (tests/jepsen_etcd.rs: 102 labelled
//!  histories) before we trust it on our own histories.
//! ```
//!
//! * [`history`]: events, operations, the history file format.
//! * [`wgl`]: the bounded Wing–Gong–Lowe search, generic over a
//!   `todc_utils::Specification`.
//! * [`linearizable`]: specifications (register, key-value, log) and the
//!   entry points that turn a history into a verdict.
//! * [`jepsen`]: the Jepsen etcd log parser.
//! * [`log`]: the fast append-only log checker.

pub mod history;
pub mod jepsen;
pub mod linearizable;
pub mod log;
pub mod wgl;

/// Most events one history may hold (in memory or in a file). A fault test
/// records a few hundred thousand at most; this bounds a hostile file.
pub const HISTORY_EVENTS_MAX: usize = 16 * 1024 * 1024;

/// Longest line of a history file. Operations are short (an op name and a
/// few integers); anything longer is not a history.
pub const HISTORY_LINE_BYTES_MAX: usize = 64 * 1024;
