//! The log as the core sees it: batch boundaries and terms, never payloads.
//!
//! ```text
//!   snapshot_index                                last_index
//!        │  batch            batch        batch       │
//!   ─────┼───────────────┬────────────┬──────────────┤
//!        │ first=8 t=3   │ first=12   │ first=13 t=5 │   (one 24-byte
//!        │ count=4       │ t=3 cnt=1  │ count=6      │    record per batch)
//!   ─────┴───────────────┴────────────┴──────────────┘
//!                      durable_index ▲ (reported by `persisted`)
//! ```
//!
//! Why batches are enough. The unit of the log is the `EntryBatch`: a leader
//! stamps one term and first index into a batch once, and every node
//! appends, sends, stores and truncates whole batches. Two nodes holding an
//! entry with the same index and term therefore hold the *same batch*, with
//! the same boundaries (a batch is created once, by one leader, in one term).
//! It follows that:
//! * a conflict point is a batch boundary on both sides: if a follower's entry
//!   `x - 1` matches the leader's and entry `x` does not, `x - 1` ends the
//!   same batch on both, so `x` starts a batch on both;
//! * the leader can always pick `next` at one of its batch starts, so a
//!   rejection hint is aligned down to the start of the leader's batch that
//!   contains it (probing lower is always safe, only slower);
//! * the per-entry term is the batch's term, so a binary search over batch
//!   starts answers `term_at` without any per-entry memory.
//!
//! Invariants (checked by [`Log::check`]):
//! * batches are contiguous: each starts at the previous one's end + 1, the
//!   first at `snapshot_index + 1`; each has at least one entry;
//! * terms never decrease along the log, and none is below `snapshot_term`;
//! * `snapshot_index <= durable_index <= last_index`.

use std::collections::VecDeque;

use crate::raft::message::BatchSummary;
use crate::types::{LogIndex, Term};
use crate::wire::BatchKind;

/// The boundaries of one stored batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Boundary {
    /// Index of the first entry.
    pub first_index: LogIndex,
    /// Term of every entry.
    pub term: Term,
    /// Number of entries (at least one).
    pub count: u32,
    /// Bytes of the framed batch (flow-control accounting).
    pub bytes: u32,
    /// What the entries mean.
    pub kind: BatchKind,
}

impl Boundary {
    /// Index of the last entry.
    #[inline]
    pub fn last_index(&self) -> LogIndex {
        LogIndex(self.first_index.get() + u64::from(self.count) - 1)
    }

    /// The summary sent on the wire for this batch.
    pub fn summary(&self) -> BatchSummary {
        BatchSummary {
            term: self.term,
            first_index: self.first_index,
            count: self.count,
            bytes: self.bytes,
            kind: self.kind,
        }
    }
}

impl From<&BatchSummary> for Boundary {
    fn from(summary: &BatchSummary) -> Self {
        Self {
            first_index: summary.first_index,
            term: summary.term,
            count: summary.count,
            bytes: summary.bytes,
            kind: summary.kind,
        }
    }
}

/// The in-memory log: boundaries of every retained batch, and durability.
#[derive(Clone, Debug, Default)]
pub struct Log {
    snapshot_index: LogIndex,
    snapshot_term: Term,
    batches: VecDeque<Boundary>,
    durable_index: LogIndex,
}

/// A run of whole batches chosen for one AppendEntries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchRun {
    /// Last index of the last batch (or `first - 1` when empty).
    pub last_index: LogIndex,
    /// Number of batches.
    pub batches: u32,
    /// Their bytes.
    pub bytes: u64,
}

impl Log {
    /// A log starting after a snapshot (or empty: zero and zero).
    pub fn new(snapshot_index: LogIndex, snapshot_term: Term) -> Self {
        Self {
            snapshot_index,
            snapshot_term,
            batches: VecDeque::new(),
            durable_index: snapshot_index,
        }
    }

    /// Last index covered by the snapshot (zero if none).
    #[inline]
    pub fn snapshot_index(&self) -> LogIndex {
        self.snapshot_index
    }

    /// First index still held (entries below are only in the snapshot).
    #[inline]
    pub fn first_index(&self) -> LogIndex {
        self.snapshot_index.next()
    }

    /// Last index held.
    #[inline]
    pub fn last_index(&self) -> LogIndex {
        self.batches
            .back()
            .map_or(self.snapshot_index, Boundary::last_index)
    }

    /// Term of the last entry.
    #[inline]
    pub fn last_term(&self) -> Term {
        self.batches
            .back()
            .map_or(self.snapshot_term, |last| last.term)
    }

    /// Highest index known durable.
    #[inline]
    pub fn durable_index(&self) -> LogIndex {
        self.durable_index
    }

    /// Number of batches held.
    pub fn batch_count(&self) -> usize {
        self.batches.len()
    }

    /// Term of the entry at `index`: `None` above the last index or below
    /// the snapshot (whose own last entry's term is known).
    pub fn term_at(&self, index: LogIndex) -> Option<Term> {
        if index == self.snapshot_index {
            return Some(self.snapshot_term);
        }
        if let Some(last) = self.batches.back()
            && index >= last.first_index
        {
            return (index <= last.last_index()).then_some(last.term);
        }
        self.position(index)
            .map(|position| self.batches[position].term)
    }

    /// The batch containing `index`.
    pub fn batch_at(&self, index: LogIndex) -> Option<&Boundary> {
        self.position(index).map(|position| &self.batches[position])
    }

    /// Position in `batches` of the batch containing `index`.
    fn position(&self, index: LogIndex) -> Option<usize> {
        if index <= self.snapshot_index || index > self.last_index() {
            return None;
        }
        let after = self
            .batches
            .partition_point(|batch| batch.first_index <= index);
        debug_assert!(after > 0);
        Some(after - 1)
    }

    /// Number of batches holding entries above `index`.
    pub fn batches_after(&self, index: LogIndex) -> usize {
        self.batches.len()
            - self
                .batches
                .partition_point(|batch| batch.first_index <= index)
    }

    /// Whether `index` starts a batch, or is one past the last index.
    pub fn is_batch_start(&self, index: LogIndex) -> bool {
        index == self.last_index().next()
            || self
                .batch_at(index)
                .is_some_and(|batch| batch.first_index == index)
    }

    /// Whether `index` ends a batch, or lies at or below the snapshot (where
    /// the leader no longer knows boundaries and any index is a prefix end).
    pub fn is_batch_end(&self, index: LogIndex) -> bool {
        index <= self.snapshot_index
            || (index <= self.last_index() && self.is_batch_start(index.next()))
    }

    /// The start of the batch containing `index`; `index` itself when it is
    /// not held (past the end, or at or below the snapshot).
    pub fn batch_start(&self, index: LogIndex) -> LogIndex {
        self.batch_at(index)
            .map_or(index, |batch| batch.first_index)
    }

    /// Appends a batch right after the last one.
    pub fn append(&mut self, batch: Boundary) {
        assert!(batch.count > 0, "a batch holds at least one entry");
        assert_eq!(
            batch.first_index,
            self.last_index().next(),
            "batches are contiguous"
        );
        assert!(batch.term >= self.last_term(), "terms never decrease");
        self.batches.push_back(batch);
    }

    /// Removes every batch from `from` on (`from` must start a batch).
    /// Durability shrinks with it.
    pub fn truncate_from(&mut self, from: LogIndex) {
        assert!(
            from > self.snapshot_index,
            "never truncate into the snapshot"
        );
        assert!(self.is_batch_start(from), "truncate only at a batch start");
        while self
            .batches
            .back()
            .is_some_and(|last| last.first_index >= from)
        {
            self.batches.pop_back();
        }
        self.durable_index = self.durable_index.min(from.prev());
        debug_assert_eq!(self.last_index(), from.prev());
    }

    /// Records that the log is durable up to `up_to`, whose term was `term`
    /// when the write was issued. A completion that raced with a truncation
    /// names an `(index, term)` no longer in the log and is ignored: two
    /// entries with the same index and term are the same entry, so a match
    /// proves the completion covers what the log holds now.
    /// Returns whether the durable index moved.
    pub fn persisted(&mut self, up_to: LogIndex, term: Term) -> bool {
        if up_to <= self.durable_index || self.term_at(up_to) != Some(term) {
            return false;
        }
        self.durable_index = up_to;
        true
    }

    /// The largest index at or below `index` whose term is at most `term`
    /// (etcd's `findConflictByTerm`), with that term. Walks whole batches.
    /// Below the snapshot terms are unknown: when the snapshot's own term
    /// is above `term`, the answer is some index below it, reported as the
    /// one just below with term zero (a leader then probes from the
    /// snapshot index, which makes it send the snapshot).
    pub fn find_conflict_by_term(&self, index: LogIndex, term: Term) -> (LogIndex, Term) {
        let mut index = index.min(self.last_index());
        loop {
            match self.batch_at(index) {
                Some(batch) if batch.term > term => index = batch.first_index.prev(),
                Some(batch) => return (index, batch.term),
                None => {
                    return match self.term_at(index) {
                        Some(known) if known > term => (index.prev(), Term::ZERO),
                        known => (index, known.unwrap_or(Term::ZERO)),
                    };
                }
            }
        }
    }

    /// Whole batches from `first` (a batch start) on, at most `batches_max`
    /// of them and, past the first, at most `bytes_max` bytes.
    pub fn run_from(&self, first: LogIndex, batches_max: usize, bytes_max: u64) -> BatchRun {
        let mut run = BatchRun {
            last_index: first.prev(),
            batches: 0,
            bytes: 0,
        };
        let Some(start) = self.position(first) else {
            return run;
        };
        debug_assert_eq!(self.batches[start].first_index, first);
        for batch in self.batches.range(start..) {
            let bytes = u64::from(batch.bytes);
            if run.batches as usize >= batches_max
                || (run.batches > 0 && run.bytes + bytes > bytes_max)
            {
                break;
            }
            run.last_index = batch.last_index();
            run.batches += 1;
            run.bytes += bytes;
        }
        run
    }

    /// The batches covering `first..=last`, in order (for the runtime that
    /// attaches summaries to an outgoing AppendEntries).
    pub fn batches_in(
        &self,
        first: LogIndex,
        last: LogIndex,
    ) -> impl Iterator<Item = &Boundary> + '_ {
        let start = self.position(first).unwrap_or(self.batches.len());
        self.batches
            .range(start..)
            .take_while(move |batch| batch.first_index <= last)
    }

    /// Drops every batch up to `index` (a batch end, at most the durable
    /// index): the snapshot covers them now.
    pub fn compact(&mut self, index: LogIndex) {
        if index <= self.snapshot_index {
            return;
        }
        assert!(index <= self.durable_index, "compact only durable entries");
        let term = self.term_at(index).expect("compacted index is held");
        assert!(
            self.is_batch_start(index.next()),
            "compact only at a batch end"
        );
        while self
            .batches
            .front()
            .is_some_and(|first| first.last_index() <= index)
        {
            self.batches.pop_front();
        }
        self.snapshot_index = index;
        self.snapshot_term = term;
    }

    /// Replaces the whole log by an installed snapshot.
    pub fn reset_to_snapshot(&mut self, index: LogIndex, term: Term) {
        self.batches.clear();
        self.snapshot_index = index;
        self.snapshot_term = term;
        self.durable_index = index;
    }

    /// Marks everything held as durable (recovered from disk at start).
    pub fn mark_all_durable(&mut self) {
        self.durable_index = self.last_index();
    }

    /// Asserts the invariants at the top of this module (O(batches): for
    /// tests and the simulator).
    pub fn check(&self) {
        let mut expected = self.snapshot_index.next();
        let mut term = self.snapshot_term;
        for batch in &self.batches {
            assert_eq!(batch.first_index, expected, "contiguous batches");
            assert!(batch.count > 0);
            assert!(batch.term >= term, "terms never decrease");
            expected = batch.last_index().next();
            term = batch.term;
        }
        assert!(self.snapshot_index <= self.durable_index);
        assert!(self.durable_index <= self.last_index());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(first: u64, term: u64, count: u32) -> Boundary {
        Boundary {
            first_index: LogIndex(first),
            term: Term(term),
            count,
            bytes: 100,
            kind: BatchKind::Data,
        }
    }

    fn log_of(batches: &[(u64, u64, u32)]) -> Log {
        let mut log = Log::new(LogIndex::ZERO, Term::ZERO);
        for (first, term, count) in batches {
            log.append(batch(*first, *term, *count));
        }
        log.check();
        log
    }

    /// Terms are found by batch, at every index of it, and nowhere else.
    #[test]
    fn term_at_every_index() {
        let log = log_of(&[(1, 1, 3), (4, 2, 1), (5, 2, 4)]);
        let terms: Vec<Option<u64>> = (0..=9)
            .map(|index| log.term_at(LogIndex(index)).map(Term::get))
            .collect();
        let expected = [0, 1, 1, 1, 2, 2, 2, 2, 2]
            .iter()
            .map(|term| Some(*term))
            .chain([None])
            .collect::<Vec<_>>();
        assert_eq!(terms, expected);
        assert!(log.is_batch_start(LogIndex(4)));
        assert!(!log.is_batch_start(LogIndex(3)));
        assert!(log.is_batch_start(LogIndex(9)), "one past the end");
        assert_eq!(log.batch_start(LogIndex(7)), LogIndex(5));
        assert!(log.is_batch_end(LogIndex(3)) && log.is_batch_end(LogIndex(8)));
        assert!(!log.is_batch_end(LogIndex(2)), "inside a batch");
        assert!(!log.is_batch_end(LogIndex(9)), "beyond the log");
        assert!(log.is_batch_end(LogIndex(0)), "the empty prefix");
    }

    /// A completion that raced with a truncation is recognized as stale.
    #[test]
    fn persisted_ignores_completions_of_truncated_entries() {
        let mut log = log_of(&[(1, 1, 3), (4, 2, 3)]);
        assert!(log.persisted(LogIndex(3), Term(1)));
        log.truncate_from(LogIndex(4));
        log.append(batch(4, 3, 3));
        assert!(
            !log.persisted(LogIndex(6), Term(2)),
            "the term-2 write is gone"
        );
        assert_eq!(log.durable_index(), LogIndex(3));
        assert!(log.persisted(LogIndex(6), Term(3)));
        log.truncate_from(LogIndex(4));
        assert_eq!(
            log.durable_index(),
            LogIndex(3),
            "truncation shrinks durability"
        );
    }

    /// The backtracking hint skips whole batches of too-high terms.
    #[test]
    fn find_conflict_by_term_walks_batches() {
        let log = log_of(&[(1, 1, 3), (4, 4, 2), (6, 5, 3)]);
        assert_eq!(
            log.find_conflict_by_term(LogIndex(8), Term(4)),
            (LogIndex(5), Term(4))
        );
        assert_eq!(
            log.find_conflict_by_term(LogIndex(8), Term(3)),
            (LogIndex(3), Term(1))
        );
        assert_eq!(
            log.find_conflict_by_term(LogIndex(20), Term(9)),
            (LogIndex(8), Term(5))
        );
        assert_eq!(
            log.find_conflict_by_term(LogIndex(8), Term(0)),
            (LogIndex(0), Term(0))
        );
    }

    /// A run takes whole batches within the limits, at least one.
    #[test]
    fn run_from_respects_limits() {
        let log = log_of(&[(1, 1, 3), (4, 1, 2), (6, 1, 3)]);
        assert_eq!(log.run_from(LogIndex(1), 10, 250).batches, 2);
        assert_eq!(log.run_from(LogIndex(1), 1, 1000).last_index, LogIndex(3));
        assert_eq!(
            log.run_from(LogIndex(4), 10, 1).batches,
            1,
            "at least one batch"
        );
        assert_eq!(log.run_from(LogIndex(9), 10, 1000).batches, 0);
        assert_eq!(log.batches_in(LogIndex(4), LogIndex(8)).count(), 2);
    }

    /// Compaction keeps the term of the last compacted entry.
    #[test]
    fn compact_keeps_the_boundary_term() {
        let mut log = log_of(&[(1, 1, 3), (4, 2, 2), (6, 3, 3)]);
        log.mark_all_durable();
        log.compact(LogIndex(5));
        assert_eq!(log.first_index(), LogIndex(6));
        assert_eq!(log.term_at(LogIndex(5)), Some(Term(2)));
        assert_eq!(log.term_at(LogIndex(4)), None);
        log.check();
    }

    /// A conflict below the first held entry, whose term at the snapshot
    /// boundary is above the one asked for, is reported below the snapshot
    /// (regression: it was reported at the snapshot index with the
    /// snapshot's term, so a leader probed the very index the follower had
    /// just rejected, forever, instead of sending its snapshot).
    #[test]
    fn find_conflict_by_term_below_the_snapshot() {
        let mut log = log_of(&[(1, 1, 3), (4, 3, 2), (6, 3, 3)]);
        log.mark_all_durable();
        log.compact(LogIndex(5));
        assert_eq!(
            log.find_conflict_by_term(LogIndex(5), Term(1)),
            (LogIndex(4), Term::ZERO)
        );
        assert_eq!(
            log.find_conflict_by_term(LogIndex(5), Term(3)),
            (LogIndex(5), Term(3))
        );
        assert_eq!(
            log.find_conflict_by_term(LogIndex(8), Term(2)),
            (LogIndex(4), Term::ZERO)
        );
    }

    /// Truncating inside a batch would split it: refused.
    #[test]
    #[should_panic(expected = "truncate only at a batch start")]
    fn truncate_inside_a_batch_panics() {
        let mut log = log_of(&[(1, 1, 3)]);
        log.truncate_from(LogIndex(2));
    }
}
