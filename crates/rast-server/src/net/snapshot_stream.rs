//! The sending end of an InstallSnapshot stream, shared by the daemon and
//! the simulator: which byte ranges of a snapshot to send next.
//!
//! ```text
//!  0            acknowledged          sent        window end      total
//!  ├── follower has ──┼── in flight ──┼─ may send ─┤               │
//!                     └──── SNAPSHOT_CHUNKS_INFLIGHT_MAX chunks ───┘
//! ```
//!
//! The follower answers every chunk with the offset it needs next, so lost,
//! duplicated or reordered chunks cost a resend from that offset, never a
//! corrupt snapshot. At most a window of chunks is ever unacknowledged: the
//! bytes in memory at either end stay a few chunks whatever the snapshot's
//! size.

use crate::constants::SNAPSHOT_CHUNKS_INFLIGHT_MAX;

/// A leader's window over one snapshot stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SendWindow {
    /// Bytes in the whole stream.
    pub total: u64,
    /// The follower has everything before this offset.
    pub acknowledged: u64,
    /// Everything before this offset was sent.
    pub sent: u64,
    /// Time of the last progress (start, or `acknowledged` moved), ms.
    pub progress_ms: u64,
    /// Time the stream started, ms.
    pub started_ms: u64,
}

/// One range of the stream to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkRange {
    /// Offset of the first byte.
    pub offset: u64,
    /// Bytes.
    pub len: u64,
    /// The last chunk of the stream.
    pub done: bool,
}

impl SendWindow {
    /// A stream of `total` bytes starting at `now_ms`.
    pub fn new(total: u64, now_ms: u64) -> Self {
        Self {
            total,
            acknowledged: 0,
            sent: 0,
            progress_ms: now_ms,
            started_ms: now_ms,
        }
    }

    /// The next ranges to send: the window of
    /// [`SNAPSHOT_CHUNKS_INFLIGHT_MAX`] chunks of `chunk_bytes` past what
    /// was acknowledged, minus what is already in flight. An empty stream
    /// is one empty, final chunk.
    pub fn next_ranges(&mut self, chunk_bytes: u64) -> Vec<ChunkRange> {
        let chunk_bytes = chunk_bytes.max(1);
        let window_end = self
            .acknowledged
            .saturating_add(chunk_bytes * SNAPSHOT_CHUNKS_INFLIGHT_MAX as u64)
            .min(self.total);
        let mut ranges = Vec::new();
        if self.total == 0 && self.sent == 0 && self.acknowledged == 0 {
            // Mark the empty stream sent by moving past it.
            self.sent = 1;
            ranges.push(ChunkRange {
                offset: 0,
                len: 0,
                done: true,
            });
        }
        while self.sent < window_end {
            let end = (self.sent + chunk_bytes).min(self.total);
            ranges.push(ChunkRange {
                offset: self.sent,
                len: end - self.sent,
                done: end == self.total,
            });
            self.sent = end;
        }
        ranges
    }

    /// The follower needs `next_offset` next: move the window forward, or
    /// back to the start when the follower lost its partial copy (it asks
    /// for 0). Any other lower offset is a stale answer (reordered or
    /// duplicated): acting on it would resend a window per stale answer,
    /// and answers to those resends would multiply, so it is ignored.
    pub fn acknowledge(&mut self, next_offset: u64, now_ms: u64) {
        let next_offset = next_offset.min(self.total);
        if next_offset > self.acknowledged {
            self.progress_ms = now_ms;
            self.acknowledged = next_offset;
            self.sent = self.sent.max(next_offset);
        } else if next_offset == 0 && self.acknowledged > 0 {
            self.acknowledged = 0;
            self.sent = 0;
        }
    }

    /// Nothing was acknowledged for a while: resend from what was.
    pub fn rewind(&mut self, now_ms: u64) {
        self.sent = self.acknowledged;
        self.progress_ms = now_ms;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The window never holds more than its chunks unacknowledged, moves on
    /// with acknowledgements, ignores stale ones, restarts on 0 and resends
    /// after a rewind; the last range is marked done.
    #[test]
    fn window_moves_with_acknowledgements() {
        let mut window = SendWindow::new(10 * 7 + 3, 0);
        let first = window.next_ranges(7);
        assert_eq!(first.len(), SNAPSHOT_CHUNKS_INFLIGHT_MAX);
        assert!(window.next_ranges(7).is_empty(), "window full");
        window.acknowledge(14, 5);
        let more = window.next_ranges(7);
        assert_eq!(more.len(), 2);
        assert_eq!(more[0].offset, 7 * SNAPSHOT_CHUNKS_INFLIGHT_MAX as u64);
        window.acknowledge(7, 6);
        assert!(window.next_ranges(7).is_empty(), "stale answer ignored");
        window.rewind(9);
        assert_eq!(window.next_ranges(7)[0].offset, 14);
        window.acknowledge(0, 10);
        assert_eq!(window.next_ranges(7)[0].offset, 0);
        window.acknowledge(70, 11);
        let last = window.next_ranges(7);
        assert_eq!(last.len(), 1);
        assert_eq!((last[0].offset, last[0].len, last[0].done), (70, 3, true));
        let mut empty = SendWindow::new(0, 0);
        assert_eq!(
            empty.next_ranges(7),
            vec![ChunkRange {
                offset: 0,
                len: 0,
                done: true
            }]
        );
        assert!(empty.next_ranges(7).is_empty());
        empty.rewind(1);
        assert_eq!(empty.next_ranges(7).len(), 1, "resent after a rewind");
    }
}
