//! What the leader knows of one peer's log, and how it sends to it.
//!
//! Invariants (checked by [`Progress::check`]):
//! * `match_index < next_index`: everything up to `match_index` is durable
//!   on the peer and equal to the leader's log; `next_index` is the first
//!   index the leader will send next.
//! * `next_index` is a batch start of the leader's log (or one past its last
//!   index): batches are sent whole, so `prev = next - 1` is always the last
//!   entry of a batch.
//! * Probe: at most one message is in flight (`probe_sent`), the window is
//!   empty. Replicate: messages are pipelined up to the inflight window and
//!   `next_index` moves optimistically past what was sent. Snapshot: nothing
//!   is sent until the runtime reports the snapshot transfer done.

use crate::raft::inflights::Inflights;
use crate::types::LogIndex;

/// How the leader is currently sending to a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressState {
    /// Finding the point where the logs agree: one message at a time.
    Probe,
    /// Streaming: pipelined messages within the inflight window.
    Replicate,
    /// A snapshot up to `pending` is being sent by the runtime.
    Snapshot {
        /// The snapshot's last index.
        pending: LogIndex,
    },
}

/// The leader's view of one peer.
#[derive(Clone, Debug)]
pub struct Progress {
    /// Highest index known durable and matching on the peer.
    pub match_index: LogIndex,
    /// First index to send next.
    pub next_index: LogIndex,
    /// Probe, replicate or snapshot.
    pub state: ProgressState,
    /// In probe state: a probe is in flight, wait for its answer (or a
    /// heartbeat response) before sending another.
    pub probe_sent: bool,
    /// Messages in flight in replicate state.
    pub inflights: Inflights,
    /// The peer answered since the last check-quorum round.
    pub recent_active: bool,
    /// Highest ReadIndex round the peer has confirmed in this term.
    pub read_round_acked: u64,
    /// Heartbeat intervals since the window last freed a message while it
    /// held some (see `PROGRESS_STALL_HEARTBEATS`).
    pub stalled_heartbeats: u32,
}

impl Progress {
    /// A peer the leader knows nothing about yet: probe from `next_index`.
    pub fn new(next_index: LogIndex, inflights: Inflights) -> Self {
        assert!(next_index > LogIndex::ZERO);
        Self {
            match_index: LogIndex::ZERO,
            next_index,
            state: ProgressState::Probe,
            probe_sent: false,
            inflights,
            recent_active: false,
            read_round_acked: 0,
            stalled_heartbeats: 0,
        }
    }

    /// Asserts the invariants at the top of this module.
    pub fn check(&self) {
        assert!(
            self.match_index < self.next_index,
            "match {} < next {}",
            self.match_index,
            self.next_index
        );
        if self.state != ProgressState::Replicate {
            assert_eq!(self.inflights.count(), 0, "only replicate pipelines");
        }
    }

    /// Starts probing at `next_index` (never at or below what matches).
    pub fn become_probe(&mut self, next_index: LogIndex) {
        self.state = ProgressState::Probe;
        self.next_index = next_index.max(self.match_index.next());
        self.probe_sent = false;
        self.inflights.reset();
        self.stalled_heartbeats = 0;
    }

    /// Starts streaming from `next_index`.
    pub fn become_replicate(&mut self, next_index: LogIndex) {
        self.state = ProgressState::Replicate;
        self.next_index = next_index.max(self.match_index.next());
        self.probe_sent = false;
        self.inflights.reset();
        self.stalled_heartbeats = 0;
    }

    /// Waits for the runtime to send a snapshot ending at `pending`.
    pub fn become_snapshot(&mut self, pending: LogIndex) {
        self.state = ProgressState::Snapshot { pending };
        self.probe_sent = false;
        self.inflights.reset();
        self.stalled_heartbeats = 0;
    }

    /// Records that the peer has `match_index` durable; returns whether that
    /// is news. Frees the inflight messages it covers.
    pub fn update_match(&mut self, match_index: LogIndex) -> bool {
        if self.inflights.free_to(match_index) {
            self.stalled_heartbeats = 0;
        }
        if match_index <= self.match_index {
            return false;
        }
        self.match_index = match_index;
        self.next_index = self.next_index.max(match_index.next());
        true
    }

    /// Whether the leader must not send to this peer now.
    pub fn is_paused(&self) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflights.full(),
            ProgressState::Snapshot { .. } => true,
        }
    }

    /// Records a message `first..=last` of `bytes` just sent.
    pub fn sent(&mut self, last_index: LogIndex, bytes: u64) {
        match self.state {
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Replicate => {
                if last_index >= self.next_index {
                    self.inflights.add(last_index, bytes);
                    self.next_index = last_index.next();
                }
            }
            ProgressState::Snapshot { .. } => unreachable!("nothing is sent to a snapshot peer"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress() -> Progress {
        Progress::new(LogIndex(1), Inflights::new(2, 1000))
    }

    /// A probe pauses after one message; replicate pauses when the window
    /// fills, and next moves past what was sent.
    #[test]
    fn probe_sends_one_replicate_pipelines() {
        let mut peer = progress();
        assert!(!peer.is_paused());
        peer.sent(LogIndex(3), 10);
        assert!(peer.is_paused(), "one probe in flight");
        assert_eq!(peer.next_index, LogIndex(1), "a probe does not move next");
        peer.become_replicate(LogIndex(4));
        peer.sent(LogIndex(6), 10);
        peer.sent(LogIndex(8), 10);
        assert_eq!(peer.next_index, LogIndex(9));
        assert!(peer.is_paused(), "window of two is full");
        assert!(peer.update_match(LogIndex(6)));
        assert!(!peer.is_paused());
        peer.check();
    }

    /// Going back to probe never drops below what matches.
    #[test]
    fn probe_never_goes_below_match() {
        let mut peer = progress();
        peer.become_replicate(LogIndex(1));
        assert!(peer.update_match(LogIndex(7)));
        assert!(!peer.update_match(LogIndex(5)), "old news");
        peer.become_probe(LogIndex(3));
        assert_eq!(peer.next_index, LogIndex(8));
        peer.check();
    }
}
