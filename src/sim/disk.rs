//! The simulator's disk: written versus durable, crashes that lose what was
//! not synced, torn last writes.
//!
//! ```text
//!   issue(op) ──► written state (what reads see, at once)
//!                 unsynced ops  [op op op op]   ◄─ a crash keeps a prefix of
//!                                │ start_sync        these, the next append
//!                                ▼                   maybe torn (a prefix of
//!                 syncing ops ──► durable state      its batches survives)
//! ```
//!
//! Storage is a queue: operations become durable in the order issued, and a
//! sync covers every operation issued before it started (one `fdatasync` per
//! loop turn in the server). A crash keeps the durable state plus any prefix
//! of the unsynced operations — the kernel may have written some back — and
//! may tear the first one it drops: an append loses a suffix of its batches
//! (the server's recovery drops a torn record by its checksum). A hard-state
//! write is atomic (write temp, fsync, rename).
//!
//! This is the small interface the simulator needs; the real
//! `storage::LogStorage` (and its in-memory model) replaces it once merged.

use std::collections::VecDeque;
use std::rc::Rc;

use crate::raft::random::Random;
use crate::raft::{BatchSummary, HardState, Membership};
use crate::types::{LogIndex, Term};

/// A stored batch: its summary and the values of its entries (the
/// simulator's stand-in for payload bytes; 0 for a no-op).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimBatch {
    /// Term, first index, count, bytes, kind.
    pub summary: BatchSummary,
    /// One value per entry.
    pub values: Box<[u64]>,
    /// The configuration of a `config` batch.
    pub membership: Option<Membership>,
}

/// A shared, immutable stored batch.
pub type BatchRef = Rc<SimBatch>;

/// One state of the disk: hard state and the batches of the log.
#[derive(Clone, Debug, Default)]
pub struct DiskState {
    /// The hard state file.
    pub hard_state: HardState,
    /// The log, contiguous from index 1 (the simulator does not compact).
    pub batches: Vec<BatchRef>,
}

impl DiskState {
    /// Last index stored.
    pub fn last_index(&self) -> LogIndex {
        self.batches
            .last()
            .map_or(LogIndex::ZERO, |batch| batch.summary.last_index())
    }

    /// Term of the last entry.
    pub fn last_term(&self) -> Term {
        self.batches
            .last()
            .map_or(Term::ZERO, |batch| batch.summary.term)
    }

    /// Position of the batch holding `index`.
    pub fn position(&self, index: LogIndex) -> Option<usize> {
        if index == LogIndex::ZERO || index > self.last_index() {
            return None;
        }
        let after = self
            .batches
            .partition_point(|batch| batch.summary.first_index <= index);
        Some(after - 1)
    }

    /// The entry at `index`: its term and value.
    pub fn entry(&self, index: LogIndex) -> Option<(Term, u64)> {
        self.position(index).map(|position| {
            let batch = &self.batches[position];
            let offset = (index.get() - batch.summary.first_index.get()) as usize;
            (batch.summary.term, batch.values[offset])
        })
    }

    fn apply(&mut self, operation: &DiskOperation) {
        match operation {
            DiskOperation::HardState(hard_state) => self.hard_state = *hard_state,
            DiskOperation::Truncate(from) => {
                let keep = self
                    .batches
                    .partition_point(|batch| batch.summary.first_index < *from);
                self.batches.truncate(keep);
            }
            DiskOperation::Append(batches) => {
                for batch in batches {
                    assert_eq!(
                        batch.summary.first_index,
                        self.last_index().next(),
                        "appends are contiguous"
                    );
                    self.batches.push(Rc::clone(batch));
                }
            }
        }
    }
}

/// One storage operation.
#[derive(Clone, Debug)]
pub enum DiskOperation {
    /// Replace the hard state.
    HardState(HardState),
    /// Remove every batch from this index on.
    Truncate(LogIndex),
    /// Append batches.
    Append(Vec<BatchRef>),
}

/// What a finished sync made durable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// The durable log's last index and term, if the sync covered a log
    /// operation.
    pub log: Option<(LogIndex, Term)>,
    /// The hard state made durable, if any.
    pub hard_state: Option<HardState>,
}

/// A node's disk.
#[derive(Clone, Debug, Default)]
pub struct SimDisk {
    durable: DiskState,
    written: DiskState,
    unsynced: VecDeque<DiskOperation>,
    /// Operations at the front of `unsynced` covered by the sync in flight.
    syncing: usize,
}

impl SimDisk {
    /// What reads see: every operation issued.
    pub fn written(&self) -> &DiskState {
        &self.written
    }

    /// What survives a crash for sure.
    pub fn durable(&self) -> &DiskState {
        &self.durable
    }

    /// Issues an operation (visible to reads at once, durable after a sync).
    pub fn issue(&mut self, operation: DiskOperation) {
        self.written.apply(&operation);
        self.unsynced.push_back(operation);
    }

    /// Whether a sync is in flight.
    pub fn is_syncing(&self) -> bool {
        self.syncing > 0
    }

    /// Starts a sync of everything issued so far; false if there is
    /// nothing to sync or one is already in flight.
    pub fn start_sync(&mut self) -> bool {
        if self.syncing > 0 || self.unsynced.is_empty() {
            return false;
        }
        self.syncing = self.unsynced.len();
        true
    }

    /// Completes the sync in flight.
    pub fn complete_sync(&mut self) -> SyncReport {
        let mut report = SyncReport::default();
        let mut log_touched = false;
        for _ in 0..self.syncing {
            let operation = self.unsynced.pop_front().expect("syncing ops are queued");
            self.durable.apply(&operation);
            match operation {
                DiskOperation::HardState(hard_state) => report.hard_state = Some(hard_state),
                DiskOperation::Truncate(_) | DiskOperation::Append(_) => log_touched = true,
            }
        }
        self.syncing = 0;
        if log_touched {
            report.log = Some((self.durable.last_index(), self.durable.last_term()));
        }
        report
    }

    /// The machine loses power: the durable state plus a random prefix of
    /// the unsynced operations survive, the first one lost maybe torn.
    pub fn crash(&mut self, random: &mut Random) {
        let kept = random.below(self.unsynced.len() as u64 + 1) as usize;
        for operation in self.unsynced.drain(..).take(kept + 1).enumerate() {
            match operation {
                (position, operation) if position < kept => self.durable.apply(&operation),
                (_, DiskOperation::Append(batches)) => {
                    // Torn: a prefix of the batches made it, the one being
                    // written when the power went is dropped by recovery.
                    let survived = random.below(batches.len() as u64) as usize;
                    self.durable
                        .apply(&DiskOperation::Append(batches[..survived].to_vec()));
                }
                _ => {}
            }
        }
        self.syncing = 0;
        self.written = self.durable.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::BatchKind;

    fn batch(first: u64, term: u64, count: u32) -> BatchRef {
        Rc::new(SimBatch {
            summary: BatchSummary {
                term: Term(term),
                first_index: LogIndex(first),
                count,
                bytes: 128,
                kind: BatchKind::Data,
            },
            values: (first..first + u64::from(count)).collect(),
            membership: None,
        })
    }

    /// A sync makes durable only what was issued before it started.
    #[test]
    fn sync_covers_what_was_issued_before_it() {
        let mut disk = SimDisk::default();
        disk.issue(DiskOperation::Append(vec![batch(1, 1, 2)]));
        assert!(disk.start_sync());
        disk.issue(DiskOperation::Append(vec![batch(3, 1, 2)]));
        assert!(!disk.start_sync(), "one sync at a time");
        let report = disk.complete_sync();
        assert_eq!(report.log, Some((LogIndex(2), Term(1))));
        assert_eq!(disk.written().last_index(), LogIndex(4));
        assert_eq!(disk.durable().last_index(), LogIndex(2));
    }

    /// A crash never loses synced data and never keeps more than was issued.
    #[test]
    fn crash_keeps_durable_and_a_prefix_of_the_rest() {
        for seed in 0..50 {
            let mut random = Random::new(seed);
            let mut disk = SimDisk::default();
            disk.issue(DiskOperation::Append(vec![batch(1, 1, 1)]));
            assert!(disk.start_sync());
            disk.complete_sync();
            disk.issue(DiskOperation::Append(vec![batch(2, 1, 1), batch(3, 1, 1)]));
            disk.issue(DiskOperation::Truncate(LogIndex(2)));
            disk.crash(&mut random);
            let last = disk.durable().last_index();
            assert!(last >= LogIndex(1) && last <= LogIndex(3));
            assert_eq!(disk.written().last_index(), last);
        }
    }
}
