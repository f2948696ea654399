//! Retention for plain logs: how much of a log with no state machine may be
//! dropped, by size and by age.
//!
//! A log that feeds a state machine drops its prefix once a snapshot covers
//! it. A plain log has no snapshot: without a policy it grows until the
//! disk is full. [`Retention`] bounds it by the bytes it keeps and by the
//! age of its segments, and [`retention_point`] turns the policy into an
//! index for [`LogStorage::drop_prefix`](crate::storage::LogStorage::drop_prefix).
//!
//! The decision is a pure function of the store's
//! [`segments`](crate::storage::LogStorage::segments), a limit and the
//! time, so the caller decides when to apply it and tests need no clock:
//!
//! ```text
//!  segments:  ┌──── s1 ────┬──── s2 ────┬──── s3 ────┬── s4 (active) ──┐
//!             1          100          200          300               350
//!  too old:   ████████████ ████████████
//!  over size: ████████████ ████████████ ████████████
//!                                      ▲ limit = min(commit, durable)
//!  dropped:   ████████████ ████████████
//!                                     └► retention_point = 200
//! ```
//!
//! Segments go oldest first while the bytes kept would exceed the budget or
//! the segment is too old. The walk stops at the first segment that
//! satisfies neither, at the first whose last index is above the limit (an
//! entry not yet committed and durable is never dropped), and before the
//! last (active) segment, which always stays.

use crate::storage::SegmentInfo;
use crate::types::LogIndex;

/// How much of a plain log to keep. `None` is unlimited;
/// `Retention::default()` keeps everything.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    /// Keep at most this many bytes of records (the active segment is kept
    /// even when it alone is larger).
    pub bytes_max: Option<u64>,
    /// Drop segments last appended to more than this many milliseconds ago.
    pub age_max_ms: Option<u64>,
}

impl Retention {
    /// True when the policy keeps everything.
    pub fn is_unlimited(&self) -> bool {
        self.bytes_max.is_none() && self.age_max_ms.is_none()
    }
}

/// The index up to which the log may be dropped under `retention` at
/// `now_ms` (Unix-epoch milliseconds): the last index of the newest segment
/// that has to go, or `None` when none has to.
///
/// `segments` are the store's, oldest first. Segments go oldest first while
/// (a) the bytes of the segments kept would exceed `bytes_max`, or (b) the
/// segment was last modified more than `age_max_ms` before `now_ms`. The
/// last (active) segment is never dropped; a segment whose last index is
/// above `limit` (the caller passes `min(commit, durable)`) stops the walk,
/// so the result is never above `limit`. Empty segments are skipped: when
/// the active segment is empty, every entry may go.
pub fn retention_point(
    segments: &[SegmentInfo],
    limit: LogIndex,
    retention: &Retention,
    now_ms: u64,
) -> Option<LogIndex> {
    if retention.is_unlimited() {
        return None;
    }
    // The last segment is the active one: it always stays.
    let (_active, older) = segments.split_last()?;
    let mut kept: u64 = segments.iter().map(|segment| segment.bytes).sum();
    let mut point = None;
    for segment in older {
        if segment.is_empty() {
            continue;
        }
        if segment.last > limit {
            break;
        }
        let over_size = retention.bytes_max.is_some_and(|max| kept > max);
        let too_old = retention
            .age_max_ms
            .is_some_and(|age| now_ms.saturating_sub(segment.modified_ms) > age);
        if !over_size && !too_old {
            break;
        }
        kept -= segment.bytes;
        point = Some(segment.last);
    }
    point
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Segments of `bytes` each, `entries` entries each, from index 1, the
    /// n-th (from 0) modified at `1_000 * (n + 1)` ms.
    fn segments(count: u64, entries: u64, bytes: u64) -> Vec<SegmentInfo> {
        (0..count)
            .map(|n| SegmentInfo {
                first: LogIndex(1 + n * entries),
                last: LogIndex((n + 1) * entries),
                bytes,
                modified_ms: 1_000 * (n + 1),
            })
            .collect()
    }

    fn by_bytes(max: u64) -> Retention {
        Retention {
            bytes_max: Some(max),
            age_max_ms: None,
        }
    }

    fn by_age(max_ms: u64) -> Retention {
        Retention {
            bytes_max: None,
            age_max_ms: Some(max_ms),
        }
    }

    /// The default policy is unlimited and keeps everything, however large
    /// and old the log.
    #[test]
    fn unlimited_keeps_everything() {
        let retention = Retention::default();
        assert!(retention.is_unlimited());
        assert!(!by_bytes(0).is_unlimited());
        assert!(!by_age(0).is_unlimited());
        let log = segments(5, 10, 1 << 30);
        assert_eq!(
            retention_point(&log, LogIndex(50), &retention, u64::MAX),
            None
        );
    }

    /// Over the size budget, the oldest segments go until what is kept fits
    /// (and not one more).
    #[test]
    fn size_budget_drops_oldest_until_under_budget() {
        // 5 segments of 100 bytes: 500 bytes.
        let log = segments(5, 10, 100);
        let limit = LogIndex(50);
        assert_eq!(retention_point(&log, limit, &by_bytes(500), 0), None);
        assert_eq!(
            retention_point(&log, limit, &by_bytes(499), 0),
            Some(LogIndex(10))
        );
        assert_eq!(
            retention_point(&log, limit, &by_bytes(300), 0),
            Some(LogIndex(20))
        );
        assert_eq!(
            retention_point(&log, limit, &by_bytes(250), 0),
            Some(LogIndex(30))
        );
        // Segments of different sizes: the budget counts bytes, not segments.
        let mut log = log;
        log[0].bytes = 400;
        // 800 bytes: dropping the first (400) leaves 400.
        assert_eq!(
            retention_point(&log, limit, &by_bytes(400), 0),
            Some(LogIndex(10))
        );
    }

    /// Segments last modified more than the maximum age ago go; a young one
    /// stops the walk.
    #[test]
    fn age_drops_old_segments() {
        // Modified at 1000, 2000, ..., 5000 ms.
        let log = segments(5, 10, 100);
        let limit = LogIndex(50);
        // At 3500 with a 1000 ms maximum, 1000 and 2000 are too old; 3000 is
        // not (500 ms old).
        assert_eq!(
            retention_point(&log, limit, &by_age(1_000), 3_500),
            Some(LogIndex(20))
        );
        // Exactly the maximum age is still kept.
        assert_eq!(retention_point(&log, limit, &by_age(1_000), 2_000), None);
        assert_eq!(
            retention_point(&log, limit, &by_age(1_000), 2_001),
            Some(LogIndex(10))
        );
        // A clock behind the segments' times drops nothing.
        assert_eq!(retention_point(&log, limit, &by_age(0), 500), None);
        // With both rules a segment goes when either says so: the result is
        // the further of the two.
        let both = |bytes_max| Retention {
            bytes_max: Some(bytes_max),
            age_max_ms: Some(1_000),
        };
        // Age alone drops to 20, size alone to 10.
        assert_eq!(
            retention_point(&log, limit, &both(450), 3_500),
            Some(LogIndex(20))
        );
        // Age alone drops to 10, size alone to 30.
        assert_eq!(
            retention_point(&log, limit, &both(250), 2_500),
            Some(LogIndex(30))
        );
    }

    /// The last segment stays, however far over the budget or old it is.
    #[test]
    fn active_segment_is_never_dropped() {
        let log = segments(3, 10, 100);
        let limit = LogIndex(30);
        assert_eq!(
            retention_point(&log, limit, &by_bytes(0), 0),
            Some(LogIndex(20))
        );
        assert_eq!(
            retention_point(&log, limit, &by_age(0), u64::MAX),
            Some(LogIndex(20))
        );
        let single = segments(1, 10, 1 << 30);
        assert_eq!(
            retention_point(&single, LogIndex(10), &by_bytes(0), u64::MAX),
            None
        );
    }

    /// A segment reaching above the limit stops the walk, even when the
    /// segments after it would qualify.
    #[test]
    fn limit_stops_the_walk() {
        let log = segments(5, 10, 100);
        // The second segment ends at 20, above the limit 15.
        assert_eq!(
            retention_point(&log, LogIndex(15), &by_bytes(0), u64::MAX),
            Some(LogIndex(10))
        );
        assert_eq!(
            retention_point(&log, LogIndex(20), &by_bytes(0), u64::MAX),
            Some(LogIndex(20))
        );
        assert_eq!(
            retention_point(&log, LogIndex(9), &by_age(0), u64::MAX),
            None
        );
        assert_eq!(
            retention_point(&log, LogIndex::ZERO, &by_bytes(0), u64::MAX),
            None
        );
    }

    /// Empty segments are skipped: they neither stop the walk nor become
    /// the retention point.
    #[test]
    fn empty_segments_are_skipped() {
        let mut log = segments(2, 10, 100);
        log.insert(
            1,
            SegmentInfo {
                first: LogIndex(11),
                last: LogIndex(10),
                bytes: 0,
                modified_ms: u64::MAX,
            },
        );
        log.push(SegmentInfo {
            first: LogIndex(21),
            last: LogIndex(20),
            bytes: 0,
            modified_ms: 0,
        });
        assert!(log[1].is_empty() && log[3].is_empty());
        assert_eq!(
            retention_point(&log, LogIndex(20), &by_age(0), 10_000),
            Some(LogIndex(20))
        );
    }

    /// No segments, nothing to drop.
    #[test]
    fn empty_input() {
        assert_eq!(
            retention_point(&[], LogIndex(100), &by_bytes(0), u64::MAX),
            None
        );
        assert_eq!(
            retention_point(&[], LogIndex(100), &by_age(0), u64::MAX),
            None
        );
    }
}
