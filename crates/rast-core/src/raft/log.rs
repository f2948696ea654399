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
//! # Runs: memory that does not grow with the log
//!
//! One record per batch would make memory grow with the log (a client that
//! appends one entry per request writes hundreds of thousands of batches a
//! second). So old batches are coalesced: consecutive data batches of one
//! term whose entries are durable and committed (or recovered from disk)
//! merge into one *run*, which keeps its entry count, its bytes and its
//! number of batches but forgets the boundaries inside it:
//!
//! ```text
//!   before:  │ 8..8 t3 │ 9..9 t3 │ 10..12 t3 │ 13..13 t5 │ 14..14 t5 │ (uncommitted)
//!   after:   │ 8..12 t3, 3 batches │ 13..14 t5, 2 batches │ (uncommitted, as is)
//! ```
//!
//! A run is capped ([`RunLimits`]) so that it still fits one AppendEntries:
//! a leader sends a run whole, from its start or from wherever inside it a
//! follower's probe landed (the runtime reads the real batches from
//! storage, which knows every boundary). Inside a run, "does a batch start
//! here?" has no answer, and the log says *may*: every index inside a run
//! may be a boundary. That is enough for everything the core does there:
//! * probing sends from the start of the run holding the probed index
//!   (lower is always safe, only slower);
//! * a truncation or a compaction at an index inside a run splits it — the
//!   caller's index is a real boundary (it is the end of a batch the leader
//!   sent, or the start of one it conflicts with, and equal (index, term)
//!   means the same batch) — and the part kept counts its batches and bytes
//!   as an upper bound (the whole run's), which only flow control reads;
//! * a snapshot of a plain log, whose index the runtime chooses from the
//!   core's log, uses [`Log::is_known_batch_end`], which is exact.
//!
//! Invariants (checked by [`Log::check`]):
//! * batches are contiguous: each starts at the previous one's end + 1, the
//!   first at `snapshot_index + 1`; each has at least one entry, and a run
//!   at least as many entries as batches;
//! * terms never decrease along the log, and none is below `snapshot_term`;
//! * `snapshot_index <= durable_index <= last_index`.

use std::collections::VecDeque;

use crate::raft::message::BatchSummary;
use crate::search::partition_point_from_end;
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
    /// Stored batches this covers: one for a batch; more for a run of
    /// coalesced batches whose inner boundaries are forgotten (see the
    /// module docs). After a split, an upper bound.
    pub batches: u32,
}

impl Boundary {
    /// Index of the last entry.
    #[inline]
    pub fn last_index(&self) -> LogIndex {
        LogIndex(self.first_index.get() + u64::from(self.count) - 1)
    }

    /// The summary sent on the wire for this batch, for harnesses that keep
    /// no storage (the runtime reads its summaries from storage). Panics on
    /// a run: it is not one batch.
    pub fn summary(&self) -> BatchSummary {
        assert!(!self.is_run(), "a run is not one batch: {self:?}");
        BatchSummary {
            term: self.term,
            first_index: self.first_index,
            count: self.count,
            bytes: self.bytes,
            kind: self.kind,
        }
    }

    /// Whether this is a run of several batches (inner boundaries unknown).
    #[inline]
    pub fn is_run(&self) -> bool {
        self.batches > 1
    }

    /// Merges `next` (right after this one) into this run if both are data
    /// of one term and the merged run stays within `limits`.
    pub fn try_merge(&mut self, next: &Boundary, limits: RunLimits) -> bool {
        let fits = self.kind == BatchKind::Data
            && next.kind == BatchKind::Data
            && self.term == next.term
            && self.batches + next.batches <= limits.batches
            && u64::from(self.bytes) + u64::from(next.bytes) <= u64::from(limits.bytes)
            && self.count.checked_add(next.count).is_some();
        if fits {
            debug_assert_eq!(next.first_index, self.last_index().next());
            self.count += next.count;
            self.bytes += next.bytes;
            self.batches += next.batches;
        }
        fits
    }

    /// The part of this run from `from` (inside it) on; batches and bytes
    /// are upper bounds.
    fn suffix_from(&self, from: LogIndex) -> Boundary {
        let count = (self.last_index().get() - from.get() + 1) as u32;
        Boundary {
            first_index: from,
            count,
            batches: self.batches.min(count),
            ..*self
        }
    }

    /// The part of this run before `end` (inside it); batches and bytes
    /// are upper bounds.
    fn prefix_before(&self, end: LogIndex) -> Boundary {
        let count = (end.get() - self.first_index.get()) as u32;
        Boundary {
            count,
            batches: self.batches.min(count),
            ..*self
        }
    }
}

/// How large a run of coalesced batches may grow. A run is sent whole in
/// one AppendEntries, so it must fit one: at most half of a message's
/// batches and bytes (the other half leaves room for the batches after it).
/// The default is [`RunLimits::NONE`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunLimits {
    /// Batches per run; 1 turns coalescing off.
    pub batches: u32,
    /// Bytes per run.
    pub bytes: u32,
    /// Records ready to merge before [`Log::coalesce`] runs (it also waits
    /// for at least as many as the uncommitted records it would move, so
    /// each record is moved O(1) times).
    pub ready_min: usize,
}

impl Default for RunLimits {
    fn default() -> Self {
        Self::NONE
    }
}

impl RunLimits {
    /// No coalescing: one record per batch.
    pub const NONE: RunLimits = RunLimits {
        batches: 1,
        bytes: 0,
        ready_min: usize::MAX,
    };

    /// Runs that fit half of an AppendEntries of `batches_max` batches and
    /// `bytes_max` bytes, merged once `ready_min` records are ready.
    pub fn for_messages(batches_max: usize, bytes_max: u64, ready_min: usize) -> RunLimits {
        RunLimits {
            batches: (batches_max / 2).clamp(1, u32::MAX as usize) as u32,
            bytes: (bytes_max / 2).min(u64::from(u32::MAX)) as u32,
            ready_min,
        }
    }

    /// Appends `batch` to `runs`, merged into the last run when it may be:
    /// how a recovering node builds its log without one record per batch.
    pub fn push(self, runs: &mut Vec<Boundary>, batch: Boundary) {
        if !runs
            .last_mut()
            .is_some_and(|last| last.try_merge(&batch, self))
        {
            runs.push(batch);
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
            batches: 1,
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
    /// Records from the front that coalescing has passed (the last of them
    /// may still grow).
    settled: usize,
    limits: RunLimits,
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
            settled: 0,
            limits: RunLimits::NONE,
        }
    }

    /// Sets how far [`Self::coalesce`] may merge batches.
    pub fn set_run_limits(&mut self, limits: RunLimits) {
        self.limits = limits;
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

    /// Number of records held (a run counts once).
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
        let after = partition_point_from_end(self.batches.len(), |at| {
            self.batches[at].first_index <= index
        });
        debug_assert!(after > 0);
        Some(after - 1)
    }

    /// Number of records (batches, or runs) holding entries above `index`.
    pub fn batches_after(&self, index: LogIndex) -> usize {
        self.batches.len()
            - partition_point_from_end(self.batches.len(), |at| {
                self.batches[at].first_index <= index
            })
    }

    /// Whether `index` may start a batch: it starts one, lies inside a run
    /// (whose inner boundaries are forgotten), or is one past the last index.
    pub fn is_batch_start(&self, index: LogIndex) -> bool {
        index == self.last_index().next()
            || self
                .batch_at(index)
                .is_some_and(|batch| batch.first_index == index || batch.is_run())
    }

    /// Whether `index` may end a batch (see [`Self::is_batch_start`]), or
    /// lies at or below the snapshot (where the leader no longer knows
    /// boundaries and any index is a prefix end).
    pub fn is_batch_end(&self, index: LogIndex) -> bool {
        index <= self.snapshot_index
            || (index <= self.last_index() && self.is_batch_start(index.next()))
    }

    /// Whether `index` is known to end a batch (or a run), or lies at or
    /// below the snapshot: never a guess inside a run.
    pub fn is_known_batch_end(&self, index: LogIndex) -> bool {
        index <= self.snapshot_index
            || self
                .batch_at(index)
                .is_some_and(|batch| batch.last_index() == index)
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

    /// Removes every batch from `from` on (`from` must start a batch; inside
    /// a run, the run is cut there). Durability shrinks with it.
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
        if let Some(last) = self.batches.back_mut()
            && last.last_index() >= from
        {
            *last = last.prefix_before(from);
        }
        self.settled = self.settled.min(self.batches.len());
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
    /// of them and, past the first record, at most `bytes_max` bytes. A run
    /// is taken whole (from `first` when that lies inside it), counted as
    /// its batches and bytes (upper bounds when it starts inside).
    pub fn run_from(&self, first: LogIndex, batches_max: usize, bytes_max: u64) -> BatchRun {
        let mut run = BatchRun {
            last_index: first.prev(),
            batches: 0,
            bytes: 0,
        };
        let Some(start) = self.position(first) else {
            return run;
        };
        let head = self.batches[start];
        debug_assert!(head.first_index == first || head.is_run());
        let head = if head.first_index == first {
            head
        } else {
            head.suffix_from(first)
        };
        for batch in std::iter::once(&head).chain(self.batches.range(start + 1..)) {
            let bytes = u64::from(batch.bytes);
            let full = run.batches as usize + batch.batches as usize > batches_max
                || run.bytes + bytes > bytes_max;
            if run.batches > 0 && full {
                break;
            }
            run.last_index = batch.last_index();
            run.batches += batch.batches;
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
    /// index; inside a run, the run is cut there): the snapshot covers them
    /// now.
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
            self.settled = self.settled.saturating_sub(1);
        }
        if let Some(first) = self.batches.front_mut()
            && first.first_index <= index
        {
            *first = first.suffix_from(index.next());
        }
        self.snapshot_index = index;
        self.snapshot_term = term;
    }

    /// Coalesces the batches that end at or below `up_to` (and are durable)
    /// into runs (see the module docs). Cheap to call often: it waits until
    /// there are enough to merge, so each record is moved O(1) times.
    pub fn coalesce(&mut self, up_to: LogIndex) {
        if self.limits.batches <= 1 {
            return;
        }
        let up_to = up_to.min(self.durable_index);
        let end = partition_point_from_end(self.batches.len(), |at| {
            self.batches[at].last_index() <= up_to
        });
        let ready = end.saturating_sub(self.settled);
        if ready == 0 || ready < self.limits.ready_min.max(self.batches.len() - end) {
            return;
        }
        let mut write = self.settled.saturating_sub(1);
        for read in write + 1..end {
            let next = self.batches[read];
            if !self.batches[write].try_merge(&next, self.limits) {
                write += 1;
                self.batches[write] = next;
            }
        }
        self.batches.drain(write + 1..end);
        self.settled = write + 1;
    }

    /// Replaces the whole log by an installed snapshot.
    pub fn reset_to_snapshot(&mut self, index: LogIndex, term: Term) {
        self.batches.clear();
        self.settled = 0;
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
            assert!((1..=batch.count).contains(&batch.batches), "{batch:?}");
            assert!(batch.term >= term, "terms never decrease");
            expected = batch.last_index().next();
            term = batch.term;
        }
        assert!(self.snapshot_index <= self.durable_index);
        assert!(self.durable_index <= self.last_index());
        assert!(self.settled <= self.batches.len());
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
            batches: 1,
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

    /// A log of `n` one-entry data batches of term 1, coalescing into runs
    /// of at most 4 batches, all durable and coalesced up to `up_to`.
    fn coalesced(n: u64, up_to: u64) -> Log {
        let mut log = Log::new(LogIndex::ZERO, Term::ZERO);
        log.set_run_limits(RunLimits {
            batches: 4,
            bytes: 1000,
            ready_min: 256,
        });
        for index in 1..=n {
            log.append(batch(index, 1, 1));
        }
        log.mark_all_durable();
        log.coalesce(LogIndex(up_to));
        log.check();
        log
    }

    /// Committed batches merge into capped runs; the rest stay as they are,
    /// and nothing is merged until enough are ready.
    #[test]
    fn coalesce_merges_committed_batches_into_capped_runs() {
        let log = coalesced(1000, 600);
        assert_eq!(log.batch_count(), 150 + 400, "600 in runs of 4, 400 alone");
        assert_eq!(log.batch_at(LogIndex(6)).map(|run| run.batches), Some(4));
        assert_eq!(log.batch_at(LogIndex(6)).map(|run| run.bytes), Some(400));
        assert_eq!(log.batch_at(LogIndex(601)).map(|run| run.count), Some(1));
        assert_eq!(log.term_at(LogIndex(6)), Some(Term(1)));
        assert!(log.is_batch_start(LogIndex(6)), "inside a run: may start");
        assert!(!log.is_known_batch_end(LogIndex(6)));
        assert!(log.is_known_batch_end(LogIndex(8)));
        assert_eq!(log.batch_start(LogIndex(7)), LogIndex(5));
        let few = coalesced(1000, 100);
        assert_eq!(few.batch_count(), 1000, "too few ready: not yet");
        let mut log = coalesced(1000, 1000);
        assert_eq!(log.batch_count(), 250);
        log.append(Boundary {
            kind: BatchKind::Noop,
            ..batch(1001, 2, 1)
        });
        for index in 1002..=1400 {
            log.append(batch(index, 2, 1));
        }
        log.mark_all_durable();
        log.coalesce(LogIndex(1400));
        log.check();
        assert_eq!(log.batch_at(LogIndex(1001)).map(|run| run.batches), Some(1));
        assert_eq!(log.batch_at(LogIndex(1002)).map(|run| run.batches), Some(4));
        assert_eq!(log.batch_count(), 250 + 1 + 100, "never across a kind");
    }

    /// A run is sent whole, even from inside it, and counts its batches
    /// against the message's limit.
    #[test]
    fn run_from_takes_runs_whole() {
        let log = coalesced(1000, 1000);
        let run = log.run_from(LogIndex(1), 8, 1_000_000);
        assert_eq!((run.last_index, run.batches), (LogIndex(8), 8));
        let run = log.run_from(LogIndex(1), 7, 1_000_000);
        assert_eq!((run.last_index, run.batches), (LogIndex(4), 4));
        let run = log.run_from(LogIndex(3), 3, 1_000_000);
        assert_eq!(run.last_index, LogIndex(4), "the rest of the run");
        assert_eq!(run.batches, 2, "at most its entries");
        let run = log.run_from(LogIndex(3), 1, 1);
        assert_eq!(run.last_index, LogIndex(4), "at least the first record");
    }

    /// Truncation and compaction inside a run cut it at the given index.
    #[test]
    fn truncate_and_compact_cut_runs() {
        let mut log = coalesced(1000, 1000);
        log.truncate_from(LogIndex(7));
        log.check();
        assert_eq!(log.last_index(), LogIndex(6));
        assert_eq!(log.batch_at(LogIndex(6)).map(|run| run.count), Some(2));
        assert_eq!(log.durable_index(), LogIndex(6));
        log.append(batch(7, 2, 1));
        log.compact(LogIndex(2));
        log.check();
        assert_eq!(log.first_index(), LogIndex(3));
        assert_eq!(log.term_at(LogIndex(2)), Some(Term(1)));
        let head = log.batch_at(LogIndex(3)).copied().expect("held");
        assert_eq!(
            (head.first_index, head.count, head.batches),
            (LogIndex(3), 2, 2)
        );
    }

    /// Recovery builds runs as it reads, with the same limits.
    #[test]
    fn run_limits_push_merges_like_coalesce() {
        let limits = RunLimits::for_messages(8, 1000, 1);
        assert_eq!((limits.batches, limits.bytes), (4, 500));
        let mut runs = Vec::new();
        for index in 1..=10 {
            limits.push(&mut runs, batch(index, 1 + index / 9, 1));
        }
        let shape: Vec<(u64, u32)> = runs
            .iter()
            .map(|run| (run.first_index.get(), run.batches))
            .collect();
        assert_eq!(shape, [(1, 4), (5, 4), (9, 2)]);
        assert_eq!(RunLimits::for_messages(1, 1000, 1).batches, 1, "off");
    }

    /// Truncating inside a batch would split it: refused.
    #[test]
    #[should_panic(expected = "truncate only at a batch start")]
    fn truncate_inside_a_batch_panics() {
        let mut log = log_of(&[(1, 1, 3)]);
        log.truncate_from(LogIndex(2));
    }
}
