//! Keeping the durable mark (`storage::durable_mark`) at the data's heels,
//! through the ring, without ever waiting for it on the loop.
//!
//! ```text
//!  data syncs complete ──► synced = X ──► mark write "X" ─link─► fdatasync(mark)
//!                                                                 │
//!  durability.index = min(X, synced) ◄──── completion ────────────┘
//! ```
//!
//! One mark write is in flight at a time; when it completes and the data
//! synced since is further on, the next goes out at once. Under a steady
//! load the mark's sync runs beside the next group commit's data sync, so
//! it costs latency (a second sync after the first), not throughput.
//!
//! A truncation sets a `limit`: its unlinks and its zeroing of the cut
//! tail wait until the mark on disk is at or below the kept log (the
//! write lowering it goes out like any other, as `synced` was cut too).
//! A crash before then finds the old, longer log under the old mark; after
//! it, the shorter log under the lower mark. Neither reads as damage.

use std::fs::File;
use std::rc::Rc;

use super::SegmentLog;
use crate::io::{Link, OpId, Ring};
use crate::storage::StorageError;
use crate::storage::durable_mark::{self, Slot};
use crate::storage::planted::{self, StorageBug};
use crate::types::LogIndex;

/// The mark's file and what of it is on disk or on its way.
#[derive(Debug)]
pub(super) struct MarkWriter {
    file: Rc<File>,
    /// Writes issued so far (the next takes `seq + 1`).
    seq: u64,
    /// The value on stable storage.
    durable: LogIndex,
    /// The write in flight: its value, its ops (write, fdatasync) and
    /// their results once they came.
    in_flight: Option<(LogIndex, [OpId; 2], [Option<i32>; 2])>,
    /// A truncation's disk work waits until the mark on disk is at or
    /// below this index.
    limit: Option<LogIndex>,
}

impl MarkWriter {
    /// The mark of a log just opened: `slot` is on disk.
    pub(super) fn new(file: File, slot: Slot) -> Self {
        Self {
            file: Rc::new(file),
            seq: slot.seq,
            durable: slot.index,
            in_flight: None,
            limit: None,
        }
    }

    /// The next slot, holding `index`.
    fn next_slot(&mut self, index: LogIndex) -> Slot {
        self.seq += 1;
        Slot {
            seq: self.seq,
            index,
        }
    }

    /// A write is in flight, or one is due.
    pub(super) fn pending(&self, synced: LogIndex) -> bool {
        self.in_flight.is_some()
            || (!planted::is_planted(StorageBug::NoDurableMark) && self.durable != synced)
    }

    /// A truncation's disk work may go ahead: no limit waits.
    pub(super) fn settled(&self) -> bool {
        self.limit.is_none()
    }

    /// A truncation keeps the log up to `kept_last`: its disk work waits
    /// until the mark on disk is no higher.
    pub(super) fn limit_to(&mut self, kept_last: LogIndex) {
        self.limit = Some(self.limit.map_or(kept_last, |limit| limit.min(kept_last)));
    }

    /// Writes `index` as the mark and waits for it (a log reset, which
    /// blocks already; nothing may be in flight).
    pub(super) fn store_blocking(
        &mut self,
        dir: &std::path::Path,
        index: LogIndex,
    ) -> Result<(), StorageError> {
        debug_assert!(
            self.in_flight.is_none(),
            "a blocking mark write beside one in flight"
        );
        let slot = self.next_slot(index);
        durable_mark::store(&self.file, dir, slot)?;
        self.durable = index;
        Ok(())
    }

    /// Gives up on the write in flight.
    pub(super) fn abandon(&mut self, ring: &mut Ring) {
        if let Some((_, ops, results)) = self.in_flight.take() {
            for (op, result) in ops.into_iter().zip(results) {
                if result.is_none() {
                    ring.abandon(op);
                }
            }
        }
    }

    /// Waits for the write in flight (the log is being discarded).
    pub(super) fn finish(&mut self, ring: &mut Ring) -> std::io::Result<()> {
        if let Some((_, ops, _)) = self.in_flight.take() {
            for op in ops {
                ring.wait(op)?;
            }
        }
        Ok(())
    }
}

impl SegmentLog {
    /// Issues the mark's next write when none is in flight and the data
    /// synced differs from the mark on disk; returns how many operations
    /// it queued.
    pub(super) fn submit_mark(&mut self, ring: &mut Ring) -> Result<usize, StorageError> {
        let mark = &mut self.mark;
        if mark.in_flight.is_some()
            || mark.durable == self.synced
            || planted::is_planted(StorageBug::NoDurableMark)
        {
            return Ok(0);
        }
        let value = self.synced;
        let slot = mark.next_slot(value);
        let buffer = Rc::new(durable_mark::encode(slot).to_vec());
        let path = self.dir.join(durable_mark::FILE_NAME);
        let io = |error| StorageError::io("submit", &path, error);
        ring.reserve(2).map_err(io)?;
        let write = ring
            .write_at(
                &mark.file,
                &buffer,
                0..buffer.len(),
                slot.offset(),
                Link::Next,
            )
            .map_err(io)?;
        let sync = ring.fdatasync(&mark.file, Link::None).map_err(io)?;
        mark.in_flight = Some((value, [write, sync], [None; 2]));
        Ok(2)
    }

    /// Takes the mark write's completions: once both are in, the mark on
    /// disk is its value, and so is what is reported durable (never past
    /// what is synced now: a truncation may have cut it since). A failure
    /// is fail-stop, as for any data sync.
    pub(super) fn collect_mark(&mut self, ring: &mut Ring) -> Result<(), StorageError> {
        if planted::is_planted(StorageBug::NoDurableMark) {
            self.mark.limit = None;
        }
        let mark = &mut self.mark;
        if let Some((value, ops, results)) = &mut mark.in_flight {
            for (op, result) in ops.iter().zip(results.iter_mut()) {
                if result.is_none() {
                    *result = ring.take(*op);
                }
            }
            if let [Some(write), Some(sync)] = *results {
                let value = *value;
                mark.in_flight = None;
                if write != durable_mark::SLOT_BYTES as i32 || sync < 0 {
                    let reason = format!(
                        "writing the durable mark failed (write {}, fdatasync {})",
                        super::describe(write),
                        super::describe(sync)
                    );
                    return Err(self.fail(ring, reason));
                }
                mark.durable = value;
                self.durability.index = self.durability.index.max(value.min(self.synced));
            }
        }
        let mark = &mut self.mark;
        if mark.in_flight.is_none() && mark.limit.is_some_and(|limit| mark.durable <= limit) {
            mark.limit = None;
        }
        Ok(())
    }
}
