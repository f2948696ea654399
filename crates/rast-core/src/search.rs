//! Searching sorted sequences from their end.
//!
//! Raft and the stores look up indexes near the tail of the log: the term
//! of an entry just committed, the batch a follower's next append follows,
//! where a new proposal goes among the pending ones. A plain binary search
//! over a long in-memory log touches about 20 cache lines spread over the
//! whole sequence for each lookup; galloping from the end touches
//! O(log d) of them, d being the distance from the end, and those lie near
//! each other:
//!
//! ```text
//!  items:  [ 0 ……………………………………………………………… len-7  len-3  len-1 ]
//!  probes:                                ▲      ▲      ▲   steps 4, 2, 1 back
//!                                         └──────┘ bisect the last gap
//! ```

/// The partition point of a sequence of `len` items in which `before(i)`
/// holds for a prefix and fails for the rest: the first `i` where it
/// fails (`len` when it never does), as `slice::partition_point`, but
/// searched from the end.
pub fn partition_point_from_end(len: usize, before: impl Fn(usize) -> bool) -> usize {
    // `high`: an index where `before` fails, or `len`.
    let mut high = len;
    let mut step = 1usize;
    let mut low = loop {
        if high == 0 {
            return 0;
        }
        let probe = high.saturating_sub(step);
        if before(probe) {
            break probe + 1;
        }
        high = probe;
        step = step.saturating_mul(2);
    };
    // `before(low - 1)` holds; the answer lies in `low..=high`.
    while low < high {
        let middle = low + (high - low) / 2;
        if before(middle) {
            low = middle + 1;
        } else {
            high = middle;
        }
    }
    low
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The same answer as the standard library's search, for every
        /// length and every split point.
        #[test]
        fn agrees_with_partition_point(len in 0usize..600, split in 0usize..600) {
            let split = split.min(len);
            let items: Vec<bool> = (0..len).map(|i| i < split).collect();
            let expected = items.partition_point(|&before| before);
            prop_assert_eq!(expected, split);
            prop_assert_eq!(partition_point_from_end(len, |i| items[i]), expected);
        }
    }

    #[test]
    fn touches_few_items_near_the_end() {
        let len = 1_000_000;
        let probes = std::cell::Cell::new(0);
        let found = partition_point_from_end(len, |i| {
            probes.set(probes.get() + 1);
            i < len - 5
        });
        assert_eq!(found, len - 5);
        assert!(probes.get() <= 8, "{} probes", probes.get());
    }
}
