//! The simulator's disk: the storage layer's own in-memory store
//! ([`MemoryLog`]), with sync latency in the simulator's hands, crashes that
//! lose what was not synced, and torn last writes.
//!
//! ```text
//!   issue(op) ──► MemoryLog: append (queued) / store_hard_state / truncate_suffix
//!        │                    │ start_sync = flush: one sync covers all queued
//!        │                    ▼ complete_sync (when the simulator says)
//!        │                 durable ◄─ a crash keeps it, plus some flushed
//!        │                            batches and maybe a torn one, which
//!        ▼                            recovery (the real scan) cuts off
//!   shadow: the same batches decoded (values per entry), for the checkers
//!
//!   snapshot (durable at once: written to a temp file, synced, renamed)
//!        ├─ take_snapshot + compact: the store drops durable batches below it
//!        └─ install_snapshot: the snapshot, then the store reset after it
//! ```
//!
//! Entries at or below the snapshot's index are answered from the snapshot
//! (which holds the plain log's values, see [`super::snapshot`]), so the
//! checkers see one log whether or not its prefix was compacted.
//!
//! Because the store is the very `storage::memory::MemoryLog` that passes
//! the storage conformance suite, the simulator exercises the real contract:
//! real stamped and sealed `EntryBatch` frames, queued appends, group-commit
//! syncs, durable truncation, the recovery scan. The shadow only saves the
//! checkers from decoding frames on every lookup; it is rebuilt from the
//! store's recovered bytes after every crash, so it never hides a loss.

use std::rc::Rc;

use crate::raft::{BatchSummary, HardState, Membership};
use crate::random::Random;
use crate::sim::snapshot::SimSnapshot;
use crate::storage::memory::{Crash, MemoryLog, SyncMode};
use crate::storage::{self, LogStorage};
use crate::types::{LogIndex, Term};
use crate::wire::{BatchKind, BatchView, encode_batch};

/// A stored batch: its summary, the values of its entries (each payload is
/// its value, 8 bytes little-endian; a no-op's one empty entry reads 0) and
/// the sealed frame itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimBatch {
    /// Term, first index, count, bytes, kind.
    pub summary: BatchSummary,
    /// One value per entry.
    pub values: Box<[u64]>,
    /// The configuration of a `config` batch.
    pub membership: Option<Membership>,
    /// The stamped, sealed `EntryBatch` frame.
    pub frame: Box<[u8]>,
}

impl SimBatch {
    /// Encodes a batch of `values` (a no-op when `kind` is `Noop`).
    pub fn new(kind: BatchKind, term: Term, first_index: LogIndex, values: &[u64]) -> Self {
        let frame = if kind == BatchKind::Noop {
            encode_batch(kind, term, first_index, &[[0u8; 0]])
        } else {
            let payloads: Vec<[u8; 8]> = values.iter().map(|value| value.to_le_bytes()).collect();
            encode_batch(kind, term, first_index, &payloads)
        };
        Self {
            summary: BatchSummary {
                term,
                first_index,
                count: values.len() as u32,
                bytes: frame.len() as u32,
                kind,
            },
            values: values.into(),
            membership: None,
            frame: frame.into_boxed_slice(),
        }
    }

    /// Encodes a `kv` batch of encoded `KvCommand` payloads. Its entries'
    /// values read 0, like a no-op's: they are not data of the log checkers.
    pub fn kv(term: Term, first_index: LogIndex, payloads: &[Vec<u8>]) -> Self {
        let frame = encode_batch(BatchKind::Kv, term, first_index, payloads);
        Self {
            summary: BatchSummary {
                term,
                first_index,
                count: payloads.len() as u32,
                bytes: frame.len() as u32,
                kind: BatchKind::Kv,
            },
            values: vec![0; payloads.len()].into_boxed_slice(),
            membership: None,
            frame: frame.into_boxed_slice(),
        }
    }

    /// Encodes a `config` batch: one entry, the `Membership` message (as
    /// the server stores it, without addresses). Its value reads 0.
    pub fn config(term: Term, first_index: LogIndex, membership: Membership) -> Self {
        let payload = crate::wire::client::encode_members(&members_of(&membership));
        let frame = encode_batch(BatchKind::Config, term, first_index, &[payload]);
        Self {
            summary: BatchSummary {
                term,
                first_index,
                count: 1,
                bytes: frame.len() as u32,
                kind: BatchKind::Config,
            },
            values: vec![0].into_boxed_slice(),
            membership: Some(membership),
            frame: frame.into_boxed_slice(),
        }
    }

    /// Decodes the stored frame at the start of `frames` (recovery).
    fn decode(frames: &[u8]) -> Self {
        let view = BatchView::parse(frames).expect("recovered frames are valid");
        let kind = view.kind().expect("known kind");
        let mut values = Vec::with_capacity(view.count() as usize);
        let mut membership = None;
        view.for_each_entry(|payload| {
            if kind == BatchKind::Config {
                let members = crate::wire::client::decode_members(payload)?;
                membership = Some(membership_of(&members));
                values.push(0);
                return Ok(());
            }
            if kind == BatchKind::Kv {
                values.push(0);
                return Ok(());
            }
            let mut bytes = [0u8; 8];
            bytes[..payload.len().min(8)].copy_from_slice(&payload[..payload.len().min(8)]);
            values.push(u64::from_le_bytes(bytes));
            Ok(())
        })
        .expect("recovered frames are valid");
        Self {
            summary: BatchSummary {
                term: view.term(),
                first_index: view.first_index(),
                count: view.count(),
                bytes: view.len() as u32,
                kind,
            },
            values: values.into_boxed_slice(),
            membership,
            frame: view.bytes().into(),
        }
    }
}

/// The wire form of a configuration (ids only).
fn members_of(membership: &Membership) -> crate::wire::client::Members {
    let ids = |set: &crate::raft::NodeSet| set.as_slice().iter().map(|id| id.get()).collect();
    crate::wire::client::Members {
        voters: ids(&membership.voters),
        voters_outgoing: ids(&membership.voters_outgoing),
        learners: ids(&membership.learners),
        addresses: Vec::new(),
    }
}

/// The configuration of a decoded `Membership` (our own frames: valid).
fn membership_of(members: &crate::wire::client::Members) -> Membership {
    let set = |ids: &[u64]| {
        let ids: Vec<crate::types::NodeId> =
            ids.iter().copied().map(crate::types::NodeId).collect();
        crate::raft::NodeSet::from_ids(&ids).expect("our own configuration")
    };
    Membership {
        voters: set(&members.voters),
        voters_outgoing: set(&members.voters_outgoing),
        learners: set(&members.learners),
    }
}

/// A shared, immutable stored batch.
pub type BatchRef = Rc<SimBatch>;

/// The decoded log (and hard state) of a node.
#[derive(Clone, Debug, Default)]
pub struct DiskState {
    /// The hard state last stored (durable or not).
    pub hard_state: HardState,
    /// The log after the compacted prefix, contiguous.
    pub batches: Vec<BatchRef>,
    /// The latest snapshot (durable), covering everything before `batches`.
    pub snapshot: Option<Rc<SimSnapshot>>,
}

impl DiskState {
    /// Last index stored.
    pub fn last_index(&self) -> LogIndex {
        self.batches
            .last()
            .map_or(self.snapshot_index(), |batch| batch.summary.last_index())
    }

    /// Term of the last entry.
    pub fn last_term(&self) -> Term {
        self.batches.last().map_or_else(
            || {
                self.snapshot
                    .as_ref()
                    .map_or(Term::ZERO, |snapshot| snapshot.term)
            },
            |batch| batch.summary.term,
        )
    }

    /// Last index covered by the snapshot (zero: none).
    pub fn snapshot_index(&self) -> LogIndex {
        self.snapshot
            .as_ref()
            .map_or(LogIndex::ZERO, |snapshot| snapshot.index)
    }

    /// Position of the batch holding `index`.
    pub fn position(&self, index: LogIndex) -> Option<usize> {
        let first = self.batches.first()?.summary.first_index;
        if index < first || index > self.last_index() {
            return None;
        }
        let after = self
            .batches
            .partition_point(|batch| batch.summary.first_index <= index);
        Some(after - 1)
    }

    /// The entry at `index`: its term and value (from the log, or from
    /// the snapshot below it).
    pub fn entry(&self, index: LogIndex) -> Option<(Term, u64)> {
        if let Some(position) = self.position(index) {
            let batch = &self.batches[position];
            let offset = (index.get() - batch.summary.first_index.get()) as usize;
            return Some((batch.summary.term, batch.values[offset]));
        }
        self.snapshot.as_ref()?.entry(index)
    }
}

/// The durable part of a node's log: what any crash keeps.
#[derive(Clone, Copy, Debug)]
pub struct DurableView<'a> {
    written: &'a DiskState,
    index: LogIndex,
    damaged: bool,
    acked_end: Option<(Term, LogIndex)>,
    before_damage: &'a [(DiskState, LogIndex)],
}

impl DurableView<'_> {
    /// The node restarted damaged and is not repaired yet (its durable
    /// hard state carries the damage mark): it may lack entries it
    /// acknowledged.
    pub fn damaged(&self) -> bool {
        self.damaged
    }

    /// Whether no election this node votes in can pass `expected`, the
    /// entry at `index`, by: it holds the entry durably; or it is damaged
    /// and either votes in none (the end of what it acknowledged is
    /// unknown) or held the entry, at or below that end, in a log it had
    /// before the damage (its vote checks candidates against that end:
    /// `raft::Core`, "Damaged nodes").
    pub fn holds(&self, index: LogIndex, expected: (Term, u64)) -> bool {
        if self.entry(index) == Some(expected) {
            return true;
        }
        if !self.damaged {
            return false;
        }
        if self.acked_end.is_none() {
            return true;
        }
        self.before_damage
            .iter()
            .any(|(log, end)| index <= *end && log.entry(index) == Some(expected))
    }

    /// The durable index.
    pub fn index(&self) -> LogIndex {
        self.index
    }

    /// The durable log's last entry: (term, index).
    pub fn last(&self) -> (Term, LogIndex) {
        let term = self.entry(self.index).map_or(Term::ZERO, |(term, _)| term);
        (term, self.index)
    }

    /// While damaged: the end of what the node may have acknowledged, as
    /// its durable hard state says (`None`: unknown).
    pub fn acked_end(&self) -> Option<(Term, LogIndex)> {
        self.acked_end
    }

    /// The durable entry at `index`.
    pub fn entry(&self, index: LogIndex) -> Option<(Term, u64)> {
        if index > self.index.max(self.written.snapshot_index()) {
            return None;
        }
        self.written.entry(index)
    }
}

/// One storage operation, as the core's actions ask for it.
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
    /// The log's durable index and its term, if it moved.
    pub log: Option<(LogIndex, Term)>,
    /// The hard state made durable, if it changed.
    pub hard_state: Option<HardState>,
}

/// A node's disk.
#[derive(Debug)]
pub struct SimDisk {
    store: MemoryLog,
    written: DiskState,
    syncing: bool,
    /// The durable log position and hard state last reported to the core.
    reported_log: (LogIndex, Term),
    reported_hard_state: storage::HardState,
    /// The logs it had when damaged, since it was last undamaged, each
    /// with the end of what it acknowledged of it (see
    /// [`DurableView::holds`]).
    before_damage: Vec<(DiskState, LogIndex)>,
}

impl Default for SimDisk {
    fn default() -> Self {
        Self {
            store: MemoryLog::new(SyncMode::Manual),
            written: DiskState::default(),
            syncing: false,
            reported_log: (LogIndex::ZERO, Term::ZERO),
            reported_hard_state: storage::HardState::default(),
            before_damage: Vec::new(),
        }
    }
}

impl SimDisk {
    /// The log as written (every operation issued), decoded.
    pub fn written(&self) -> &DiskState {
        &self.written
    }

    /// What survives any crash.
    pub fn durable(&self) -> DurableView<'_> {
        let durability = self.store.durability();
        DurableView {
            written: &self.written,
            index: durability.index,
            damaged: durability.hard_state.damaged_in != Term::ZERO,
            acked_end: durability.hard_state.acked_end,
            before_damage: &self.before_damage,
        }
    }

    /// The hard state that survives any crash.
    pub fn durable_hard_state(&self) -> HardState {
        self.store.durability().hard_state
    }

    /// Issues an operation (readable at once, durable after a sync;
    /// truncation is durable at once, as the storage contract says).
    pub fn issue(&mut self, operation: DiskOperation) {
        match operation {
            DiskOperation::HardState(hard_state) => {
                self.written.hard_state = hard_state;
                self.store
                    .store_hard_state(hard_state)
                    .expect("store hard state");
            }
            DiskOperation::Truncate(from) => {
                self.store.truncate_suffix(from).expect("truncate");
                let keep = self
                    .written
                    .batches
                    .partition_point(|batch| batch.summary.first_index < from);
                self.written.batches.truncate(keep);
            }
            DiskOperation::Append(batches) => {
                for batch in batches {
                    let last = self.store.append(&batch.frame).expect("append");
                    assert_eq!(last, batch.summary.last_index());
                    self.written.batches.push(batch);
                }
            }
        }
        debug_assert_eq!(self.store.last_index(), self.written.last_index());
    }

    /// The stored frames of the batches `first..=last` (what a leader's
    /// runtime attaches to an AppendEntries), checked against the shadow.
    pub fn read(&self, first: LogIndex, last: LogIndex) -> Vec<BatchRef> {
        let mut batches = Vec::new();
        let mut next = first;
        while next <= last {
            let range = self.store.read(next, usize::MAX).expect("stored range");
            let mut frames = range.bytes;
            while !frames.is_empty() && next <= last {
                let view = BatchView::parse(frames).expect("stored frames are valid");
                let position = self.written.position(next).expect("shadow holds it");
                let batch = &self.written.batches[position];
                assert_eq!(&*batch.frame, view.bytes(), "store and shadow agree");
                batches.push(Rc::clone(batch));
                frames = &frames[view.len()..];
                next = view.last_index().next();
            }
        }
        batches
    }

    /// Whether a sync is in flight.
    pub fn is_syncing(&self) -> bool {
        self.syncing
    }

    /// Starts a sync of everything issued so far (one flush: group commit);
    /// false if one is in flight or there is nothing to sync.
    pub fn start_sync(&mut self) -> bool {
        if self.syncing {
            return false;
        }
        self.store.flush().expect("flush");
        self.syncing = self.store.pending_syncs() > 0;
        self.syncing
    }

    /// Completes the sync in flight and reports what became durable.
    pub fn complete_sync(&mut self) -> SyncReport {
        assert!(self.syncing, "a sync is in flight");
        self.store.complete_sync();
        self.syncing = false;
        let durability = self.store.poll().expect("poll");
        let mut report = SyncReport::default();
        // Compare index *and* term: after a truncation the same index may
        // be durable again with another entry, which is news to the core.
        let term = self.term_at(durability.index).expect("durable is stored");
        if (durability.index, term) != self.reported_log {
            report.log = Some((durability.index, term));
            self.reported_log = (durability.index, term);
        }
        if durability.hard_state != self.reported_hard_state {
            report.hard_state = Some(durability.hard_state);
            self.reported_hard_state = durability.hard_state;
        }
        report
    }

    /// The machine loses power: the durable bytes survive, plus some
    /// flushed batches and maybe a torn one; the store recovers with the
    /// real scan and the shadow is rebuilt from what it recovered.
    pub fn crash(&mut self, random: &mut Random) {
        let unsynced = self.written.batches.len() as u64;
        let crash = Crash {
            keep_batches: random.below(unsynced + 1) as usize,
            torn_bytes: random.below(256) as usize,
        };
        let image = self.store.crash(crash);
        self.store = MemoryLog::open(image, SyncMode::Manual).expect("recovery succeeds");
        self.syncing = false;
        let durability = self.store.durability();
        let snapshot = self.written.snapshot.take();
        let mut written = DiskState {
            hard_state: self.store.hard_state(),
            batches: Vec::new(),
            snapshot,
        };
        let mut next = self.store.first_index();
        while next <= self.store.last_index() {
            let range = self.store.read(next, usize::MAX).expect("recovered range");
            let mut frames = range.bytes;
            while !frames.is_empty() {
                let batch = SimBatch::decode(frames);
                frames = &frames[batch.frame.len()..];
                next = batch.summary.last_index().next();
                written.batches.push(Rc::new(batch));
            }
        }
        self.written = written;
        let term = self.term_at(durability.index).unwrap_or(Term::ZERO);
        self.reported_log = (durability.index, term);
        self.reported_hard_state = durability.hard_state;
    }

    /// Storage damage found by recovery: the last `lose` batches (durable,
    /// maybe acknowledged; never below the snapshot) are cut, as recovery
    /// cuts a damaged final record, and the hard state takes the damage
    /// mark (`HardState::after_damage`), durable before the node starts
    /// (without `mark`: a planted bug, the cut alone). False (nothing
    /// changed) when there is no batch to lose.
    pub fn damage(&mut self, lose: usize, mark: bool) -> bool {
        assert!(!self.syncing, "damage is found at recovery, before any IO");
        let keep = self.written.batches.len().saturating_sub(lose);
        let Some(first_lost) = self
            .written
            .batches
            .get(keep)
            .map(|batch| batch.summary.first_index)
        else {
            return false;
        };
        let acked_end = Some(self.keep_log_before_damage());
        self.issue(DiskOperation::Truncate(first_lost));
        if mark {
            self.issue(DiskOperation::HardState(
                self.written.hard_state.after_damage(acked_end),
            ));
        }
        if self.start_sync() {
            self.complete_sync();
        }
        true
    }

    /// Damage is found: keeps the log as it is (for the checker), and
    /// returns the end of what the node may have acknowledged — what it
    /// reported durable (its durable mark; everything durable, after a
    /// recovery).
    fn keep_log_before_damage(&mut self) -> (Term, LogIndex) {
        if self.written.hard_state.damaged_in == Term::ZERO {
            self.before_damage.clear();
        }
        self.before_damage
            .push((self.written.clone(), self.reported_log.0));
        (self.reported_log.1, self.reported_log.0)
    }

    /// The hard state is lost (both copies damaged): the node restarts with
    /// `HardState::lost` (the log's last term, the mark `TERM_UNKNOWN`),
    /// durable before it starts, as the segment store's recovery does.
    pub fn lose_hard_state(&mut self) {
        assert!(!self.syncing, "damage is found at recovery, before any IO");
        let last_term = self
            .term_at(self.written.last_index())
            .unwrap_or(Term::ZERO);
        self.issue(DiskOperation::HardState(HardState::lost(last_term)));
        if self.start_sync() {
            self.complete_sync();
        }
    }

    /// The snapshot file is damaged (and no older one reaches the log,
    /// which starts after it): recovery removes it and empties the log,
    /// and the hard state takes the damage mark, durable before the node
    /// starts — as the segment store's and the snapshot files' recovery
    /// do. The leader then sends a snapshot. False (nothing changed)
    /// without a snapshot.
    pub fn lose_snapshot(&mut self) -> bool {
        assert!(!self.syncing, "damage is found at recovery, before any IO");
        if self.written.snapshot.is_none() {
            return false;
        }
        let acked_end = Some(self.keep_log_before_damage());
        self.written.snapshot = None;
        self.store.reset(LogIndex(1)).expect("reset");
        self.written.batches.clear();
        self.reported_log = (LogIndex::ZERO, Term::ZERO);
        self.issue(DiskOperation::HardState(
            self.written.hard_state.after_damage(acked_end),
        ));
        if self.start_sync() {
            self.complete_sync();
        }
        true
    }

    /// Term of the entry at `index`, from the store or the snapshot.
    fn term_at(&self, index: LogIndex) -> Option<Term> {
        self.store
            .term_at(index)
            .filter(|_| index >= self.store.first_index() || index == LogIndex::ZERO)
            .or_else(|| self.written.entry(index).map(|(term, _)| term))
    }

    /// The latest snapshot.
    pub fn snapshot(&self) -> Option<&Rc<SimSnapshot>> {
        self.written.snapshot.as_ref()
    }

    /// Stores a snapshot of this node's own state (durable at once) and
    /// lets the store drop the durable batches it covers.
    pub fn take_snapshot(&mut self, snapshot: SimSnapshot) {
        assert!(snapshot.index > self.written.snapshot_index());
        assert!(snapshot.index <= self.store.durability().index);
        let index = snapshot.index;
        self.written.snapshot = Some(Rc::new(snapshot));
        self.store.drop_prefix(index).expect("drop prefix");
        let first = self.store.first_index();
        self.written
            .batches
            .retain(|batch| batch.summary.first_index >= first);
    }

    /// Installs a snapshot received from the leader: the snapshot durable
    /// first, then the whole log reset after it (durable when it returns).
    /// A crash between the two would leave a newer snapshot beside an
    /// older log, which restart discards as it does a reset log.
    pub fn install_snapshot(&mut self, snapshot: SimSnapshot) {
        let next = snapshot.index.next();
        let term = snapshot.term;
        self.written.snapshot = Some(Rc::new(snapshot));
        self.store.reset(next).expect("reset");
        self.written.batches.clear();
        self.reported_log = (next.prev(), term);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(first: u64, term: u64, count: u64) -> BatchRef {
        let values: Vec<u64> = (first..first + count).collect();
        Rc::new(SimBatch::new(
            BatchKind::Data,
            Term(term),
            LogIndex(first),
            &values,
        ))
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
        assert_eq!(disk.durable().entry(LogIndex(2)), Some((Term(1), 2)));
        assert_eq!(disk.durable().entry(LogIndex(3)), None);
        assert_eq!(disk.read(LogIndex(1), LogIndex(4)).len(), 2);
    }

    /// A crash never loses synced data, and the recovered log decodes to
    /// the values written.
    #[test]
    fn crash_keeps_durable_and_recovers_values() {
        for seed in 0..50 {
            let mut random = Random::new(seed);
            let mut disk = SimDisk::default();
            disk.issue(DiskOperation::Append(vec![batch(1, 1, 1)]));
            assert!(disk.start_sync());
            disk.complete_sync();
            disk.issue(DiskOperation::Append(vec![batch(2, 1, 1), batch(3, 1, 1)]));
            assert!(disk.start_sync());
            disk.issue(DiskOperation::Append(vec![batch(4, 2, 3)]));
            disk.crash(&mut random);
            let last = disk.written().last_index();
            assert!(
                last >= LogIndex(1) && last <= LogIndex(3),
                "seed {seed}: {last}"
            );
            for index in 1..=last.get() {
                assert_eq!(
                    disk.written().entry(LogIndex(index)),
                    Some((Term(1), index))
                );
            }
        }
    }
}
