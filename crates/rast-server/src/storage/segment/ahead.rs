//! Made ahead: the next segment's file (opened, preallocated or filled
//! with zeros, synced, all through the ring, before the active one fills)
//! and the hard state's replacement; see the module docs of `segment`.

use std::fs::{self, File};
use std::path::PathBuf;
use std::rc::Rc;

use bytes::Bytes;

use super::file::Segment;
use super::write::RESULT_IGNORED;
use super::{SegmentLog, TEMP_SUFFIX, c_path, no_space_or, sync_unless_planted};
use crate::io::{Link, OpId, Ring};
use crate::storage::hard_state;
use crate::storage::planted::StorageBug;
use crate::storage::{HardState, StorageError};
use crate::types::LogIndex;

/// A segment file made ahead of its roll, all through the ring: created
/// empty under a temp name (`openat`), then preallocated and synced, so
/// the roll finds it ready instead of blocking on `open`, `fallocate` and
/// `fsync`.
#[derive(Debug)]
pub(super) struct Prepared {
    pub(super) path: PathBuf,
    /// The `openat` while in flight, then its result (the descriptor or
    /// `-errno`) until the file is adopted.
    pub(super) open: Option<OpId>,
    pub(super) file: Option<Rc<File>>,
    /// fallocate, the zero-filling writes (if any), fsync: issued once the
    /// file is open, each with the result it must have (`RESULT_IGNORED`:
    /// any success).
    pub(super) ops: Option<Vec<(OpId, u64)>>,
    pub(super) results: Vec<Option<i32>>,
    /// The `openat` failed with this result.
    pub(super) open_failed: Option<i32>,
}

impl Prepared {
    /// Takes whatever results have come; true once all have (or the open
    /// failed).
    pub(super) fn collect(&mut self, ring: &mut Ring) -> bool {
        if let Some(op) = self.open
            && let Some(result) = ring.take(op)
        {
            self.open = None;
            if result >= 0 {
                self.file = Some(Rc::new(crate::io::ring::adopt_file(result)));
            } else {
                self.open_failed = Some(result);
            }
        }
        if self.open_failed.is_some() {
            return true;
        }
        let Some(ops) = &self.ops else {
            return false;
        };
        for ((op, _), result) in ops.iter().zip(self.results.iter_mut()) {
            if result.is_none() {
                *result = ring.take(*op);
            }
        }
        self.results.iter().all(Option::is_some)
    }

    /// Once the file is open, issues its preallocation and sync (once);
    /// returns how many operations it queued.
    pub(super) fn preallocate(
        &mut self,
        ring: &mut Ring,
        bytes: u64,
        zero_fill: bool,
    ) -> Result<usize, StorageError> {
        let Some(file) = self.file.clone() else {
            return Ok(0);
        };
        if self.ops.is_some() {
            return Ok(0);
        }
        let io = |error| StorageError::io("submit", &self.path, error);
        let zero_writes = if zero_fill {
            bytes.div_ceil(ZEROS.len() as u64)
        } else {
            0
        };
        ring.reserve(zero_writes as usize + 2).map_err(io)?;
        let mut ops = Vec::with_capacity(zero_writes as usize + 2);
        ops.push((
            ring.fallocate(&file, 0, bytes, Link::Next).map_err(io)?,
            RESULT_IGNORED,
        ));
        for write in 0..zero_writes {
            let offset = write * ZEROS.len() as u64;
            let len = (bytes - offset).min(ZEROS.len() as u64);
            let zeros = Bytes::from_static(&ZEROS[..len as usize]);
            ops.push((
                ring.writev_at(&file, vec![zeros], offset, Link::Next)
                    .map_err(io)?,
                len,
            ));
        }
        ops.push((ring.fsync(&file, Link::None).map_err(io)?, 0));
        let issued = ops.len();
        self.results = vec![None; issued];
        self.ops = Some(ops);
        Ok(issued)
    }

    pub(super) fn succeeded(&self) -> bool {
        let Some(ops) = &self.ops else {
            return false;
        };
        self.open_failed.is_none()
            && ops.iter().zip(&self.results).all(|((_, len), result)| {
                result.is_some_and(|result| {
                    result >= 0 && (*len == RESULT_IGNORED || result as u64 == *len)
                })
            })
    }

    /// Gives the file up: abandons what is in flight (the ring closes the
    /// descriptor of an abandoned open), removes the file.
    pub(super) fn discard(self, ring: &mut Ring) {
        if let Some(op) = self.open {
            ring.abandon_open(op);
        }
        if let Some(ops) = self.ops {
            for ((op, _), result) in ops.iter().zip(self.results) {
                if result.is_none() {
                    ring.abandon(*op);
                }
            }
        }
        let _ = fs::remove_file(&self.path);
    }
}

/// A hard state replacement in flight, all through the ring: open the temp
/// file, then write it, fsync, rename over the real one, fsync the
/// directory.
#[derive(Debug)]
pub(super) struct HardStateWrite {
    pub(super) state: HardState,
    /// The temp file's `openat` while in flight.
    pub(super) open: Option<OpId>,
    /// The `openat` failed with this result.
    pub(super) open_failed: Option<i32>,
    /// The open temp file, until the chain is issued.
    pub(super) file: Option<Rc<File>>,
    /// Write, fsync, rename, fsync of the directory, once the file is open.
    pub(super) ops: Option<[OpId; 4]>,
    pub(super) results: [Option<i32>; 4],
}

impl HardStateWrite {
    /// Gives up on whatever of it is in flight (the ring closes the
    /// descriptor an abandoned open returns: the store is failing or being
    /// dropped).
    pub(super) fn abandon(self, ring: &mut Ring) {
        if let Some(op) = self.open {
            ring.abandon_open(op);
        }
        if let Some(ops) = self.ops {
            for (op, result) in ops.iter().zip(self.results) {
                if result.is_none() {
                    ring.abandon(*op);
                }
            }
        }
    }
}

/// The zeros a segment is filled with, a write at a time.
pub(super) static ZEROS: [u8; 1024 * 1024] = [0; 1024 * 1024];

impl SegmentLog {
    /// Starts a new segment for a batch that does not fit the active one:
    /// the file prepared ahead if there is one (waiting for it in the rare
    /// case it is not ready yet), else one made now.
    pub(super) fn roll(&mut self, first: LogIndex) -> Result<(), StorageError> {
        // The staging buffer goes to the old segment's writes at its
        // length, not its capacity: `writable_bytes` counted only its
        // bytes, so an append it allowed must still fit after the roll.
        self.stage();
        let segment = match self.take_prepared(first)? {
            Some(segment) => segment,
            None => self.create_segment(first).map_err(no_space_or)?,
        };
        // Sealed segments whose writes have all landed index sparsely.
        for sealed in &mut self.segments {
            if sealed.written == sealed.end {
                sealed.make_sparse();
            }
        }
        self.segments.push_back(segment);
        self.prepare_paused = false;
        Ok(())
    }

    /// The prepared file as the segment starting at `first`, once its
    /// preallocation and sync are done; `None` if there is none or it
    /// failed (then removed).
    pub(super) fn take_prepared(
        &mut self,
        first: LogIndex,
    ) -> Result<Option<Segment>, StorageError> {
        let Some(mut prepared) = self.next.take() else {
            return Ok(None);
        };
        let ring = Rc::clone(&self.ring);
        let mut ring = ring.borrow_mut();
        while !prepared.collect(&mut ring) {
            if let Err(error) = prepared.preallocate(
                &mut ring,
                self.options.segment_bytes,
                self.options.zero_fill,
            ) {
                prepared.discard(&mut ring);
                return Err(error);
            }
            if let Err(error) = ring.wait_for_completion() {
                prepared.discard(&mut ring);
                return Err(StorageError::io("io_uring_enter", &self.dir, error));
            }
        }
        if !prepared.succeeded() {
            tracing::warn!(path = %prepared.path.display(), ?prepared,
                "preparing a segment failed; creating it at the roll");
            prepared.discard(&mut ring);
            return Ok(None);
        }
        Ok(Some(Segment::empty(
            self.take_segment_id(),
            first,
            false,
            prepared.path,
            prepared.file.expect("a prepared file is open"),
            self.options.segment_bytes,
        )))
    }

    /// Makes the next segment's file ahead once the active segment is half
    /// full (or `now`), all through the ring: an `openat` first, then, once
    /// it is open, `fallocate` and `fsync`. Returns how many operations it
    /// queued.
    pub(super) fn prepare_next(
        &mut self,
        ring: &mut Ring,
        now: bool,
    ) -> Result<usize, StorageError> {
        if let Some(prepared) = &mut self.next {
            prepared.collect(ring);
            return prepared.preallocate(ring, self.options.segment_bytes, self.options.zero_fill);
        }
        if self.prepare_paused || (!now && self.active().end < self.options.segment_bytes / 2) {
            return Ok(0);
        }
        self.prepared_count += 1;
        let path = self
            .dir
            .join(format!("next-{}{TEMP_SUFFIX}", self.prepared_count));
        let open = ring
            .openat(
                c_path(&path),
                nix::libc::O_RDWR | nix::libc::O_CREAT | nix::libc::O_TRUNC,
                0o644,
            )
            .map_err(|error| StorageError::io("submit", &path, error))?;
        self.next = Some(Prepared {
            path,
            open: Some(open),
            file: None,
            ops: None,
            results: Vec::new(),
            open_failed: None,
        });
        Ok(1)
    }

    /// Takes the prepared file's results; a failure (a full disk) pauses
    /// preparing until the next roll, which then creates its own segment.
    pub(super) fn collect_prepared(&mut self, ring: &mut Ring) {
        let Some(prepared) = &mut self.next else {
            return;
        };
        if prepared.collect(ring) && !prepared.succeeded() {
            let prepared = self.next.take().expect("checked");
            tracing::warn!(path = %prepared.path.display(), ?prepared,
                "preparing a segment failed; the roll will create it");
            prepared.discard(ring);
            self.prepare_paused = true;
        }
    }

    /// Issues the flushed hard state unless a write is in flight; returns
    /// how many operations it queued.
    pub(super) fn submit_hard_state(&mut self, ring: &mut Ring) -> Result<usize, StorageError> {
        let temp = self.dir.join(hard_state::TEMP_NAME);
        if let Some(write) = &mut self.hard_state_write {
            // Its temp file is open: write, sync, rename, sync the
            // directory, linked.
            if write.ops.is_some() || write.open.is_some() || write.open_failed.is_some() {
                return Ok(0);
            }
            let Some(file) = write.file.take() else {
                return Ok(0);
            };
            let path = self.dir.join(hard_state::FILE_NAME);
            let buffer = Rc::new(hard_state::encode(write.state));
            let io = |error| StorageError::io("submit", &temp, error);
            ring.reserve(4).map_err(io)?;
            let write_op = ring
                .write_at(&file, &buffer, 0..buffer.len(), 0, Link::Next)
                .map_err(io)?;
            let sync = ring.fsync(&file, Link::Next).map_err(io)?;
            let rename = ring
                .rename(c_path(&temp), c_path(&path), Link::Next)
                .map_err(io)?;
            let sync_dir = sync_unless_planted(
                ring,
                &self.dir_file,
                StorageBug::NoHardStateDirectorySync,
                Link::None,
            )
            .map_err(io)?;
            write.ops = Some([write_op, sync, rename, sync_dir]);
            return Ok(4);
        }
        let Some(state) = self.hard_state_flushed.take() else {
            return Ok(0);
        };
        let open = ring
            .openat(
                c_path(&temp),
                nix::libc::O_WRONLY | nix::libc::O_CREAT | nix::libc::O_TRUNC,
                0o644,
            )
            .map_err(|error| StorageError::io("submit", &temp, error))?;
        self.hard_state_write = Some(HardStateWrite {
            state,
            open: Some(open),
            open_failed: None,
            file: None,
            ops: None,
            results: [None; 4],
        });
        Ok(1)
    }

    pub(super) fn collect_hard_state(&mut self, ring: &mut Ring) -> Result<(), StorageError> {
        let Some(write) = &mut self.hard_state_write else {
            return Ok(());
        };
        if let Some(op) = write.open
            && let Some(result) = ring.take(op)
        {
            write.open = None;
            if result >= 0 {
                write.file = Some(Rc::new(crate::io::ring::adopt_file(result)));
            } else {
                write.open_failed = Some(result);
            }
        }
        let results = if let Some(result) = write.open_failed {
            // As if the chain had failed at its first step: the old file
            // is intact.
            [Some(result), None, None, None].map(|result| result.or(Some(-nix::libc::ECANCELED)))
        } else if let Some(ops) = write.ops {
            for (op, result) in ops.iter().zip(write.results.iter_mut()) {
                if result.is_none() {
                    *result = ring.take(*op);
                }
            }
            write.results
        } else {
            return Ok(());
        };
        if results.iter().any(Option::is_none) {
            return Ok(());
        }
        let state = write.state;
        self.hard_state_write = None;
        let results = results.map(|result| result.expect("all present"));
        let no_space = results.contains(&-nix::libc::ENOSPC);
        if results.iter().all(|result| *result >= 0) && results[0] as usize > 0 {
            self.durability.hard_state = state;
            Ok(())
        } else if no_space {
            // The old file is intact (the rename never ran): try again at
            // the next flush unless a newer state replaced this one.
            if self.hard_state_flushed.is_none() {
                self.hard_state_queued.get_or_insert(state);
            }
            Err(StorageError::NoSpace)
        } else {
            let reason = format!("hard state replacement failed: {results:?}");
            Err(self.fail(ring, reason))
        }
    }
}
