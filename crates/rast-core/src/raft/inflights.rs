//! The window of AppendEntries messages sent to one peer and not yet
//! acknowledged, bounded in count and in bytes.
//!
//! Invariants:
//! * `0 <= count <= capacity`, and `bytes` is the sum of the entries' bytes.
//! * Entries are in sending order and their `last_index` strictly increases
//!   (a pipelined leader only sends forward; going back resets the window).
//! * The window is full when it holds `capacity` messages or at least
//!   `bytes_max` bytes; the leader sends nothing to a full peer.
//!
//! A follower acknowledges only what is durable, so the window measures what
//! a peer has not yet made durable: a slow disk fills it and throttles the
//! leader towards that peer without slowing the others.

use crate::types::LogIndex;

/// A ring of `(last index, bytes)` of messages in flight, allocated once.
#[derive(Clone, Debug)]
pub struct Inflights {
    ring: Box<[(LogIndex, u64)]>,
    start: usize,
    count: usize,
    bytes: u64,
    bytes_max: u64,
}

impl Inflights {
    /// An empty window of at most `capacity` messages and `bytes_max` bytes.
    pub fn new(capacity: usize, bytes_max: u64) -> Self {
        assert!(
            capacity > 0,
            "an inflight window holds at least one message"
        );
        assert!(bytes_max > 0, "an inflight window holds at least one byte");
        Self {
            ring: vec![(LogIndex::ZERO, 0); capacity].into_boxed_slice(),
            start: 0,
            count: 0,
            bytes: 0,
            bytes_max,
        }
    }

    /// Whether no more message may be sent.
    #[inline]
    pub fn full(&self) -> bool {
        self.count == self.ring.len() || self.bytes >= self.bytes_max
    }

    /// Messages in flight.
    #[inline]
    pub fn count(&self) -> usize {
        self.count
    }

    /// Bytes in flight.
    #[inline]
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Records a message ending at `last_index` carrying `bytes`.
    pub fn add(&mut self, last_index: LogIndex, bytes: u64) {
        assert!(!self.full(), "sending to a full window");
        if self.count > 0 {
            let newest = self.ring[(self.start + self.count - 1) % self.ring.len()].0;
            assert!(last_index > newest, "inflight messages go forward");
        }
        let slot = (self.start + self.count) % self.ring.len();
        self.ring[slot] = (last_index, bytes);
        self.count += 1;
        self.bytes += bytes;
    }

    /// Frees every message ending at or below `index` (acknowledged).
    /// Returns whether any was freed.
    pub fn free_to(&mut self, index: LogIndex) -> bool {
        let before = self.count;
        while self.count > 0 {
            let (last_index, bytes) = self.ring[self.start];
            if last_index > index {
                break;
            }
            self.bytes -= bytes;
            self.start = (self.start + 1) % self.ring.len();
            self.count -= 1;
        }
        if self.count == 0 {
            self.start = 0;
            debug_assert_eq!(self.bytes, 0);
        }
        self.count < before
    }

    /// Forgets every message (the leader goes back to probing).
    pub fn reset(&mut self) {
        self.start = 0;
        self.count = 0;
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The window fills by count and by bytes, and frees by acknowledged index.
    #[test]
    fn fills_by_count_and_bytes_and_frees_by_index() {
        let mut window = Inflights::new(3, 100);
        window.add(LogIndex(5), 10);
        window.add(LogIndex(9), 10);
        assert!(!window.full());
        window.add(LogIndex(12), 10);
        assert!(window.full(), "three messages fill a window of three");
        assert!(!window.free_to(LogIndex(4)), "nothing ends at or below 4");
        assert!(window.free_to(LogIndex(10)));
        assert_eq!(window.count(), 1);
        assert_eq!(window.bytes(), 10);
        window.add(LogIndex(13), 95);
        assert!(window.full(), "105 bytes fill a window of 100");
        assert!(window.free_to(LogIndex(13)));
        assert_eq!((window.count(), window.bytes()), (0, 0));
    }

    /// Wrapping around the ring keeps the order.
    #[test]
    fn wraps_around() {
        let mut window = Inflights::new(2, u64::MAX);
        for last in 1..20u64 {
            window.add(LogIndex(last), 1);
            if window.full() {
                window.free_to(LogIndex(last - 1));
            }
        }
        assert_eq!(window.count(), 1);
    }

    /// Sending backwards is a leader bug, caught at once.
    #[test]
    #[should_panic(expected = "inflight messages go forward")]
    fn refuses_going_backwards() {
        let mut window = Inflights::new(4, 100);
        window.add(LogIndex(5), 1);
        window.add(LogIndex(5), 1);
    }
}
