//! The deterministic simulator: whole clusters of the real core over a fake
//! network, disk and clock, driven by one seed.
//!
//! Why: Raft's safety arguments hold only if every path through message
//! loss, reordering, crashes and slow disks keeps them. Running thousands of
//! seeded runs, each with a nemesis and checkers after every event, finds
//! the paths a person would not think of — and a failing seed replays
//! exactly (`RAST_SIM_SEED=<seed>`), because the core is pure and every
//! choice here comes from one [`Random`](crate::random::Random).
//!
//! * [`disk`]: written versus durable state; crashes keep a prefix of the
//!   unsynced writes, maybe torn.
//! * [`checker`]: one checker per Raft property, and the client history.
//! * [`cluster`]: the event loop, the nemesis, clients, liveness.
//! * [`history`]: hands the client history to the independent checkers of
//!   `check` (the fast log checker and the exact linearizability search).
//! * [`kv`]: the key-value workload (sessions, retries, linearizable
//!   reads) over the real `kv::StateMachine`, and its checks.
//! * [`snapshot`]: snapshots of both machines, their stream format, and
//!   both ends of a chunked InstallSnapshot transfer.

pub mod checker;
pub mod cluster;
pub mod disk;
pub mod history;
pub mod kv;
pub mod snapshot;

pub use checker::{HistoryEntry, Operation, Outcome, Violation};
pub use cluster::{Failure, Options, Report, run};
