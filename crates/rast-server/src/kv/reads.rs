//! Linearizable reads through ReadIndex (Raft thesis §6.4), batched.
//!
//! The core does the consensus part: `Core::read_index` puts a read in the
//! next heartbeat round (every read that arrives while a round is in flight
//! shares the following one, so one round serves many reads and nothing is
//! written to the log), and reports `Action::ReadReady { through_round,
//! index }` once a quorum confirmed the leadership, or `Action::ReadsAborted`
//! when it stopped leading. This queue does the runtime's part:
//!
//! ```text
//!  read_index() = round r ──► push(r, read) ──► waiting (by round)
//!  ReadReady{through, index} ──► confirmed() ──► ready (by read index)
//!  state machine applied ≥ index ──► serve() ──► answer from the state machine
//!  ReadsAborted{through} ──► abort() ──► answer "retry" (nothing was read)
//! ```
//!
//! A read is answered from the state machine only once it has applied the
//! read index, which is the commit index when the round started: every
//! write acknowledged before the read arrived is visible.
//!
//! Bounds: the core refuses more than `READS_PENDING_MAX` reads per round
//! and keeps at most `READ_ROUNDS_INFLIGHT_MAX` rounds in flight, so
//! `waiting` is bounded; `ready` only waits for the apply of committed
//! entries.

use std::collections::VecDeque;

use crate::types::LogIndex;

/// Reads waiting for their ReadIndex round, then for the apply. `T` is the
/// runtime's record of a read (who asked, which key).
#[derive(Clone, Debug)]
pub struct ReadQueue<T> {
    /// (round, read), rounds never decreasing.
    waiting: VecDeque<(u64, T)>,
    /// (read index, read), confirmed, waiting for the apply.
    ready: VecDeque<(LogIndex, T)>,
}

impl<T> Default for ReadQueue<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> ReadQueue<T> {
    /// An empty queue.
    pub const fn new() -> Self {
        Self {
            waiting: VecDeque::new(),
            ready: VecDeque::new(),
        }
    }

    /// Reads waiting for a round or for the apply.
    pub fn len(&self) -> usize {
        self.waiting.len() + self.ready.len()
    }

    /// Whether no read is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queues a read that joined `round` (the value `Core::read_index`
    /// returned).
    pub fn push(&mut self, round: u64, read: T) {
        debug_assert!(
            self.waiting.back().is_none_or(|(last, _)| *last <= round),
            "rounds are handed out in order"
        );
        self.waiting.push_back((round, read));
    }

    /// `Action::ReadReady`: reads of rounds up to `through_round` may be
    /// served once `index` is applied.
    pub fn confirmed(&mut self, through_round: u64, index: LogIndex) {
        while let Some((round, _)) = self.waiting.front() {
            if *round > through_round {
                break;
            }
            let (_, read) = self.waiting.pop_front().expect("front exists");
            self.ready.push_back((index, read));
        }
    }

    /// `Action::ReadsAborted`: reads of rounds up to `through_round` will
    /// never be confirmed; `fail` gets each (answer "retry elsewhere").
    pub fn abort(&mut self, through_round: u64, mut fail: impl FnMut(T)) {
        while let Some((round, _)) = self.waiting.front() {
            if *round > through_round {
                break;
            }
            let (_, read) = self.waiting.pop_front().expect("front exists");
            fail(read);
        }
    }

    /// Hands `serve` every confirmed read whose index is applied.
    pub fn serve(&mut self, applied: LogIndex, mut serve: impl FnMut(LogIndex, T)) {
        // Read indexes are commit indexes at round start: never decreasing,
        // so the front is always the first to become servable.
        while let Some((index, _)) = self.ready.front() {
            if *index > applied {
                break;
            }
            let (index, read) = self.ready.pop_front().expect("front exists");
            serve(index, read);
        }
    }

    /// Drains every read (the group stopped): `fail` gets each.
    pub fn abort_all(&mut self, mut fail: impl FnMut(T)) {
        for (_, read) in self.waiting.drain(..) {
            fail(read);
        }
        for (_, read) in self.ready.drain(..) {
            fail(read);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads move waiting → ready on confirmation and are served only once
    /// their read index is applied; a later round stays waiting.
    #[test]
    fn confirmed_reads_wait_for_the_apply() {
        let mut queue = ReadQueue::new();
        queue.push(1, "a");
        queue.push(1, "b");
        queue.push(2, "c");
        queue.confirmed(1, LogIndex(5));
        let mut served = Vec::new();
        queue.serve(LogIndex(4), |index, read| served.push((index, read)));
        assert!(served.is_empty(), "index 5 is not applied yet");
        queue.serve(LogIndex(5), |index, read| served.push((index, read)));
        assert_eq!(served, vec![(LogIndex(5), "a"), (LogIndex(5), "b")]);
        assert_eq!(queue.len(), 1, "round 2 still waits");
    }

    /// An abort fails the rounds it covers and keeps later ones.
    #[test]
    fn abort_fails_covered_rounds_only() {
        let mut queue = ReadQueue::new();
        queue.push(3, 1);
        queue.push(4, 2);
        let mut failed = Vec::new();
        queue.abort(3, |read| failed.push(read));
        assert_eq!(failed, vec![1]);
        queue.abort_all(|read| failed.push(read));
        assert_eq!(failed, vec![1, 2]);
        assert!(queue.is_empty());
    }
}
