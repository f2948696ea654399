//! The Raft consensus core: a pure, deterministic state machine.
//!
//! No IO, no clock, no threads, no global logger: randomness comes only from
//! the seed in [`Config`]. The runtime (the server, or the simulator) feeds
//! it inputs and executes the [`Action`]s it emits, whose ordering contract
//! is written on the type.
//!
//! ```text
//!            step(message)  tick(now)  propose(..)  replicate()  read_index()
//!                 │            │           │            │             │
//!   persisted(up_to, term) ────┼───────────┼────────────┼─────────────┼──── hard_state_persisted(..)
//!                 ▼            ▼           ▼            ▼             ▼
//!            ┌──────────────────────────────────────────────┐
//!            │ Core: role, term, vote, log boundaries,      │
//!            │ progress per peer, reads, held messages      │
//!            └──────────────────────────────────────────────┘
//!                 │ caller-owned Vec<Action>, bounded by ACTIONS_PER_STEP_MAX
//!                 ▼
//!   PersistHardState · Truncate · Append{Proposal,Noop,Received}   → storage, in order
//!   Send                                                           → network, at once
//!   Apply · ReadReady · ReadsAborted · SendSnapshot · RoleChanged  → state machine, clients
//! ```
//!
//! Why it is fully pipelined and still safe: storage writes are requested,
//! never awaited. Safety comes from three rules the core enforces itself,
//! so the runtime carries no ordering burden:
//! 1. a message that depends on a term or vote not yet durable is held in
//!    the core until `hard_state_persisted` reports it (a candidate's own
//!    vote counts only then, so no one leads a term it could forget);
//! 2. a follower acknowledges only entries that are durable *and* verified
//!    against the leader's log in the current term;
//! 3. the leader counts itself only up to its own durable index, and commits
//!    only an entry of its own term.
//!
//! Proposals are batched for the network: `propose` only appends (and emits
//! the storage action); `replicate` sends everything proposed since its
//! last call, so the proposals of one batch of inputs (the server: one
//! event-loop turn) reach each follower as one AppendEntries, within the
//! inflight window and the message limits. A runtime calls `replicate`
//! once after each batch of proposals; one that forgets is covered by the
//! leader's `tick`, a tick late.
//!
//! The log in memory is batch boundaries (see [`log`]): the core never holds
//! payload bytes, and an AppendEntries reaches it as batch summaries. Old,
//! committed batches are coalesced into runs, so that memory does not grow
//! with the log either.
//!
//! Modules, pure logic first: [`quorum`] (majorities, joint configurations),
//! [`change`] (which configuration a membership change leads to),
//! [`inflights`] (the per-peer window), [`progress`] (probe / replicate /
//! snapshot), [`log`] (boundaries and durability), [`message`], [`action`],
//! and [`core`] (the state machine itself).

pub mod action;
pub mod change;
pub mod core;
pub mod inflights;
pub mod log;
pub mod message;
pub mod progress;
pub mod quorum;

pub use action::{Action, HardState, Role};
pub use change::{Change, ChangeError};
#[cfg(feature = "planted-bugs")]
pub use core::PlantedBug;
pub use core::{Config, Core, ProposeError, ReadError, Restart, SnapshotInstall, TransferError};
pub use log::{Boundary, RunLimits};
pub use message::{
    AppendEntries, AppendRange, AppendResponse, BatchSummary, Body, Heartbeat, HeartbeatResponse,
    InstallSnapshot, Message, Outgoing, OutgoingBody, RepairWait, RequestVote, SnapshotResponse,
    VoteResponse,
};
pub use quorum::{Membership, NodeSet};
