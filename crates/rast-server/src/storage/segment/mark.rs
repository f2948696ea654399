//! Keeping the durable mark (`storage::durable_mark`) at the data's heels,
//! through the ring, without ever waiting for it on the loop.
//!
//! ```text
//!  data syncs complete ──► synced = X ──► mark write "X" (O_DIRECT, RWF_DSYNC)
//!                                                         │
//!  durability.index = min(X, synced) ◄──── completion ────┘
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
use crate::raft::action::TERM_UNKNOWN;
use crate::storage::LogStorage;
use crate::storage::StorageError;
use crate::storage::durable_mark::{self, Slot};
use crate::storage::planted::{self, StorageBug};
use crate::types::{LogIndex, Term};

/// The mark's file and what of it is on disk or on its way.
#[derive(Debug)]
pub(super) struct MarkWriter {
    file: Rc<File>,
    /// Writes issued so far (the next takes `seq + 1`).
    seq: u64,
    /// The value on stable storage.
    durable: LogIndex,
    /// The write in flight (one `RWF_DSYNC` write of a slot's block): its
    /// value, its op and its result once it came.
    in_flight: Option<(LogIndex, OpId, Option<i32>)>,
    /// A truncation's disk work waits until the mark on disk is at or
    /// below this index.
    limit: Option<LogIndex>,
    /// The block buffer writes go out from (reused once its write is done).
    buffer: Rc<Vec<u8>>,
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
            buffer: Rc::new(Vec::new()),
        }
    }

    /// The next slot, holding `index` and the term of its entry.
    fn next_slot(&mut self, index: LogIndex, term: Term) -> Slot {
        self.seq += 1;
        Slot {
            seq: self.seq,
            index,
            term,
        }
    }

    /// A write is in flight, or one is due.
    pub(super) fn pending(&self, synced: LogIndex) -> bool {
        self.in_flight.is_some()
            || (!planted::is_planted(StorageBug::NoDurableMark) && self.durable != synced)
    }

    /// The next data sync may carry a mark write linked after it (see
    /// [`SegmentLog::chain_mark`]): none is in flight.
    pub(super) fn can_ride(&self) -> bool {
        self.in_flight.is_none() && !planted::is_planted(StorageBug::NoDurableMark)
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

    /// Writes `index` (its entry of `term`) as the mark and waits for it
    /// (a log reset, which blocks already; nothing may be in flight).
    pub(super) fn store_blocking(
        &mut self,
        dir: &std::path::Path,
        index: LogIndex,
        term: Term,
    ) -> Result<(), StorageError> {
        debug_assert!(
            self.in_flight.is_none(),
            "a blocking mark write beside one in flight"
        );
        let slot = self.next_slot(index, term);
        durable_mark::store(&self.file, dir, slot)?;
        self.durable = index;
        Ok(())
    }

    /// Gives up on the write in flight.
    pub(super) fn abandon(&mut self, ring: &mut Ring) {
        if let Some((_, op, None)) = self.in_flight.take() {
            ring.abandon(op);
        }
    }

    /// Waits for the write in flight (the log is being discarded).
    pub(super) fn finish(&mut self, ring: &mut Ring) -> std::io::Result<()> {
        if let Some((_, op, None)) = self.in_flight.take() {
            ring.wait(op)?;
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
        self.issue_mark(ring, self.synced)
    }

    /// Links a mark write after the data sync just queued (which ends at
    /// `index`): the kernel starts it once that sync has completed, with
    /// no turn of the loop between them. Its value never goes below the
    /// mark already on its way (only a truncation lowers the mark, through
    /// [`SegmentLog::submit_mark`]). Returns the operations queued.
    pub(super) fn chain_mark(
        &mut self,
        ring: &mut Ring,
        index: LogIndex,
    ) -> Result<usize, StorageError> {
        self.issue_mark(ring, index.max(self.synced))
    }

    /// Queues the write of `value` into the mark's next slot, with the
    /// term of its entry ([`TERM_UNKNOWN`] where the log no longer holds
    /// it: the end of a snapshot, its term not kept here).
    fn issue_mark(&mut self, ring: &mut Ring, value: LogIndex) -> Result<usize, StorageError> {
        let term = self.term_at(value).unwrap_or(TERM_UNKNOWN);
        let mark = &mut self.mark;
        let slot = mark.next_slot(value, term);
        let range = durable_mark::block_into(&mut mark.buffer, slot);
        let write = ring
            .write_at_dsync(&mark.file, &mark.buffer, range, slot.offset(), Link::None)
            .map_err(|error| {
                StorageError::io("submit", self.dir.join(durable_mark::FILE_NAME), error)
            })?;
        mark.in_flight = Some((value, write, None));
        Ok(1)
    }

    /// Takes the mark write's completion: once it is in, the mark on
    /// disk is its value, and so is what is reported durable (never past
    /// what is synced now: a truncation may have cut it since). A failure
    /// is fail-stop, as for any data sync.
    pub(super) fn collect_mark(&mut self, ring: &mut Ring) -> Result<(), StorageError> {
        if planted::is_planted(StorageBug::NoDurableMark) {
            self.mark.limit = None;
        }
        let mark = &mut self.mark;
        if let Some((value, op, result)) = &mut mark.in_flight {
            if result.is_none() {
                *result = ring.take(*op);
            }
            if let Some(written) = *result {
                let value = *value;
                mark.in_flight = None;
                if written != durable_mark::BLOCK_BYTES as i32 {
                    let reason = format!(
                        "writing the durable mark (RWF_DSYNC) returned {}",
                        super::describe(written)
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
