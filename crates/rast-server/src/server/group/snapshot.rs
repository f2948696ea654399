//! Snapshots of a group to a file in the node's data directory: taking
//! them without stopping the group for the write, compacting the log below
//! them, and restarting from them.
//!
//! ```text
//!  shard thread:   freeze the machine: clone the map of shared keys and
//!                  values (the only pause: a walk of the map)
//!  writer thread:  encode the frozen state ─► temp file ─ fsync ─ rename
//!                  ─ fsync dir
//!  shard thread:   when durable: compact_to(index) drops the log below it
//!                  (core.compact + storage.drop_prefix, whole segments)
//! ```
//!
//! When: a key-value log snapshots itself each time its stored log grew by
//! `SnapshotPolicy::log_bytes` since it was last compacted, and whenever
//! `rast admin snapshot` asks. A plain log (no state machine) has no state
//! to save: its "snapshot" is a header-only file recording the index, term
//! and configuration below which entries were dropped, taken when the
//! retention policy (size, age; off by default) or an admin asks. Either
//! file is what a follower too far behind is sent (see `install`).
//!
//! Why freeze: the machine's keys and values are reference-counted, so a
//! copy of the map shares every byte with the machine, and applies after it
//! replace values rather than change them. The pause is a walk of the map
//! (node allocations and count increments), whatever the values' sizes; the
//! bytes are encoded and written on the writer thread, with no buffer of
//! the snapshot's size. The pause is measured (`SnapshotJob::pause`),
//! logged, and printed by the test below.

use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Group, Outbound, ReplyTo, install};
use crate::constants::RETENTION_CHECK_MS;
use crate::kv::StateMachine;
use crate::raft::{Boundary, RunLimits};
use crate::storage::LogStorage;
use crate::storage::retention::{Retention, retention_point};
use crate::storage::snapshot_file::{self, SnapshotFileError, SnapshotMeta};
use crate::types::{LogIndex, Term};
use crate::wire::client::{ErrorKind, Members, ResponseBody};

/// When a log takes snapshots by itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotPolicy {
    /// A key-value log snapshots itself once its stored log grew by this
    /// many bytes since it was last compacted (0: only when asked).
    pub log_bytes: u64,
    /// A plain log drops its oldest segments by size and age.
    pub retention: Retention,
}

/// A group's snapshots: where they live, the latest, the one being written,
/// and the streams to and from peers.
#[derive(Debug, Default)]
pub(super) struct Snapshots {
    /// The directory (`None`: snapshots are off, the store is in memory).
    pub(super) dir: Option<PathBuf>,
    /// When to take them.
    pub(super) policy: SnapshotPolicy,
    /// The latest durable snapshot file.
    pub(super) latest: Option<(SnapshotMeta, PathBuf)>,
    /// One being written.
    job: Option<SnapshotJob>,
    /// Admin requests answered when the job in progress is durable.
    waiting: Vec<ReplyTo>,
    /// The stored log's size after the last compaction.
    pub(super) bytes_after_compaction: u64,
    /// When the retention policy was last checked.
    retention_checked_ms: u64,
    /// Streams to followers, and the one from the leader.
    pub(super) streams: install::Streams,
}

/// A snapshot being written by its own thread.
#[derive(Debug)]
pub struct SnapshotJob {
    /// Last index covered.
    pub index: LogIndex,
    /// How long the group stood still (the encode).
    pub pause: Duration,
    writer: JoinHandle<Result<(SnapshotMeta, PathBuf), SnapshotFileError>>,
}

impl SnapshotJob {
    /// Whether the writer finished (joining will not block).
    pub fn is_finished(&self) -> bool {
        self.writer.is_finished()
    }

    /// Waits for the file to be durable; its meta and path.
    pub fn wait(self) -> Result<(SnapshotMeta, PathBuf), SnapshotFileError> {
        self.writer.join().unwrap_or_else(|_| {
            Err(SnapshotFileError::Damaged {
                path: PathBuf::new(),
                reason: "the snapshot writer panicked".into(),
            })
        })
    }
}

/// Freezes `machine`'s state (if any: a plain log's snapshot has an empty
/// body) and writes it to a snapshot file up to `index` (of `term`, with
/// the configuration `members`) in `dir` on a thread of its own. Refused
/// once the machine stopped.
pub fn start(
    machine: Option<&StateMachine>,
    index: LogIndex,
    term: Term,
    members: Members,
    dir: &Path,
) -> Result<SnapshotJob, crate::kv::SnapshotError> {
    let started = Instant::now();
    let frozen = machine.map(StateMachine::freeze).transpose()?;
    let pause = started.elapsed();
    if let Some(frozen) = &frozen {
        debug_assert_eq!(frozen.applied_index(), index);
    }
    let dir = dir.to_path_buf();
    let writer = std::thread::Builder::new()
        .name("rast-snapshot".into())
        .spawn(move || {
            snapshot_file::write(&dir, index, term, members, |out| match &frozen {
                Some(frozen) => frozen.write_to(out).map_err(std::io::Error::other),
                None => Ok(0),
            })
        })
        .map_err(crate::kv::SnapshotError::Io)?;
    Ok(SnapshotJob {
        index,
        pause,
        writer,
    })
}

impl Group {
    /// Turns snapshots on for this group, with files in `dir`, and restarts
    /// it from the newest valid one there and the log after it; call right
    /// after [`Group::open`], before any input. Returns the snapshot's
    /// index (`None`: no snapshot). A log that cannot continue the
    /// snapshot, a snapshot the machine refuses, or a compacted log without
    /// a snapshot is an error naming the file: the group must not start.
    pub fn enable_snapshots(
        &mut self,
        dir: PathBuf,
        policy: SnapshotPolicy,
        now_ms: u64,
    ) -> Result<Option<LogIndex>, String> {
        snapshot_file::remove_partials(&dir);
        let restored = self.restore_snapshot(&dir, now_ms)?;
        if restored.is_none() && self.storage.first_index() > LogIndex(1) {
            tracing::error!(log = %self.name, first = %self.storage.first_index(),
                dir = %dir.display(),
                "no valid snapshot covers the entries before the log: this copy is discarded, and the node restarts damaged until the leader has sent it a snapshot");
            self.discard_damaged_copy(now_ms)?;
        }
        self.snapshots.dir = Some(dir);
        self.snapshots.policy = policy;
        self.snapshots.bytes_after_compaction = self.storage.stored_bytes();
        Ok(restored)
    }

    /// This copy of the log cannot be rebuilt (no valid snapshot covers
    /// the entries before the log): mark the node damaged (durably, first:
    /// it may have acknowledged what it drops), then empty the log and the
    /// state machine. Until the leader's snapshot and entries have
    /// repaired it, the node does not campaign and votes only for a log
    /// that holds what it may have acknowledged (`raft::Core`, "Damaged
    /// nodes").
    fn discard_damaged_copy(&mut self, now_ms: u64) -> Result<(), String> {
        // Recovery left the log at or above its durable mark (or marked
        // it damaged, with the mark's end): its end covers every
        // acknowledgement.
        let last = self.storage.last_index();
        let acked_end = self.storage.term_at(last).map(|term| (term, last));
        let damaged = self.storage.hard_state().after_damage(acked_end);
        let failed = |what: &str, error: crate::storage::StorageError| format!("{what}: {error}");
        self.storage
            .store_hard_state(damaged)
            .map_err(|error| failed("marking the copy damaged", error))?;
        let durability = self
            .storage
            .sync_all()
            .map_err(|error| failed("marking the copy damaged", error))?;
        self.storage
            .reset(LogIndex(1))
            .map_err(|error| failed("discarding the damaged copy", error))?;
        let restart = crate::raft::Restart {
            hard_state: damaged,
            snapshot_index: LogIndex::ZERO,
            snapshot_term: Term::ZERO,
            membership: *self.core.membership(),
            batches: &[],
            now_ms,
        };
        self.core = crate::raft::Core::new(self.core.config().clone(), &restart);
        if let Some(machine) = self.kv.as_mut() {
            *machine = StateMachine::new();
        }
        self.durable_index = self.storage.last_index();
        self.durable_hard_state = durability.hard_state;
        Ok(())
    }

    /// The first index of the log after its latest snapshot (status).
    pub fn snapshot_index(&self) -> LogIndex {
        self.core.log().snapshot_index()
    }

    /// Restarts the group from the newest valid snapshot in `dir` and the
    /// log after it. Returns the snapshot's index (`None`: no snapshot,
    /// nothing changed).
    pub fn restore_snapshot(
        &mut self,
        dir: &Path,
        now_ms: u64,
    ) -> Result<Option<LogIndex>, String> {
        let (found, damaged) =
            snapshot_file::newest_valid(dir).map_err(|error| error.to_string())?;
        self.damage_found += damaged;
        let Some((meta, path)) = found else {
            return Ok(None);
        };
        if self.storage.first_index() > meta.index.next() {
            // An older snapshot, the newer ones damaged: it does not reach
            // the log (the caller treats the copy as damaged).
            tracing::error!(path = %path.display(), first = %self.storage.first_index(),
                "the newest valid snapshot ends before the log starts");
            return Ok(None);
        }
        let membership = super::membership_of(&meta.members)
            .map_err(|error| format!("{}: {error}", path.display()))?;
        let limits = self.core.config().run_limits();
        let batches = log_after_snapshot(self.storage.as_mut(), meta.index, meta.term, limits)
            .map_err(|reason| format!("{}: {reason}", path.display()))?;
        if let Some(machine) = self.kv.as_mut() {
            *machine = machine_from_file(&path, &meta)?;
        }
        // The node has seen the snapshot's term even if its hard state
        // was lost: never start below it (no vote in it yet).
        let stored = self.storage.hard_state();
        let hard_state = if stored.term >= meta.term {
            stored
        } else {
            crate::raft::HardState {
                term: meta.term,
                vote: crate::types::NodeId::ZERO,
                commit: meta.index,
                damaged_in: stored.damaged_in,
                acked_end: stored.acked_end,
            }
        };
        let restart = crate::raft::Restart {
            hard_state,
            snapshot_index: meta.index,
            snapshot_term: meta.term,
            membership,
            batches: &batches,
            now_ms,
        };
        self.core = crate::raft::Core::new(self.core.config().clone(), &restart);
        // The configuration entries after the snapshot (those at or below
        // it are summed up by the file's configuration).
        let configs = super::recovered_configs(self.storage.as_ref(), &batches)
            .map_err(|error| format!("{}: {error}", path.display()))?;
        let mut memberships = Vec::new();
        for (index, members) in configs.iter().filter(|(index, _)| *index > meta.index) {
            memberships.push((
                *index,
                super::membership_of(members).map_err(|error| error.to_string())?,
            ));
        }
        self.core.restore_configs(&memberships);
        // Addresses in index order: entries still stored below the
        // snapshot, the snapshot's configuration, the entries after it.
        for (_, members) in configs.iter().filter(|(index, _)| *index <= meta.index) {
            self.learn_addresses(members);
        }
        self.learn_addresses(&meta.members);
        for (_, members) in configs.iter().filter(|(index, _)| *index > meta.index) {
            self.learn_addresses(members);
        }
        self.durable_index = self.storage.last_index();
        let index = meta.index;
        self.snapshots.latest = Some((meta, path));
        Ok(Some(index))
    }

    /// Where a snapshot taken now would end, and its term and
    /// configuration: the applied index of a key-value log, the last
    /// committed and durable batch end of a plain log (or `at`, if given
    /// and lower). `None`: nothing past the latest snapshot; an error: not
    /// now, and why.
    fn snapshot_point(
        &self,
        at: Option<LogIndex>,
    ) -> Result<Option<(LogIndex, Term, Members)>, String> {
        let log = self.core.log();
        let index = if let Some(machine) = &self.kv {
            if let Some(failure) = machine.failure() {
                return Err(format!(
                    "the state machine stopped at index {}",
                    failure.index
                ));
            }
            machine.applied_index()
        } else {
            let limit = self
                .core
                .commit_index()
                .min(log.durable_index())
                .min(at.unwrap_or(LogIndex(u64::MAX)));
            // Exactly at a batch end: never a guess inside a coalesced run.
            if log.is_known_batch_end(limit) {
                limit
            } else {
                log.batch_start(limit).prev()
            }
        };
        if index <= log.snapshot_index() {
            return Ok(None);
        }
        if !log.is_batch_end(index) || index > log.durable_index() {
            return Err(format!(
                "index {index} is not yet durable at a batch end here; retry"
            ));
        }
        let term = log
            .term_at(index)
            .ok_or_else(|| format!("no term at {index}"))?;
        let membership = self
            .core
            .membership_at(index)
            .ok_or_else(|| format!("the configuration at {index} is not known here yet; retry"))?;
        Ok(Some((index, term, self.members_of(&membership))))
    }

    /// Starts writing a snapshot (see [`Group::snapshot_point`]); false
    /// when there is nothing past the latest one.
    fn take_snapshot(&mut self, at: Option<LogIndex>) -> Result<bool, String> {
        let Some(dir) = self.snapshots.dir.clone() else {
            return Err("snapshots are off for a log kept in memory".into());
        };
        let Some((index, term, members)) = self.snapshot_point(at)? else {
            return Ok(false);
        };
        let job = start(self.kv.as_ref(), index, term, members, &dir)
            .map_err(|error| error.to_string())?;
        tracing::info!(log = %self.name, %index, pause = ?job.pause, "snapshot started");
        self.snapshots.job = Some(job);
        Ok(true)
    }

    /// `rast admin snapshot`: take one now (or join the one being written)
    /// and answer with the status once it is durable and the log compacted.
    pub(super) fn admin_snapshot(&mut self, reply: ReplyTo, out: &mut Outbound) {
        if self.snapshots.job.is_none() {
            match self.take_snapshot(None) {
                Ok(true) => {}
                // Nothing new: the latest snapshot is the answer.
                Ok(false) => return out.reply(reply, ResponseBody::Status(self.status())),
                Err(reason) => return out.error(reply, ErrorKind::Unavailable, reason),
            }
        }
        self.snapshots.waiting.push(reply);
    }

    /// Snapshot work of a tick (the shard calls it only while no splice
    /// moves bytes into this group's log): finish a written snapshot and
    /// compact, take automatic ones, apply retention, and move the streams
    /// to and from peers on.
    pub fn snapshot_tick(&mut self, now_ms: u64, unix_ms: u64, out: &mut Outbound) {
        if self.failed.is_some() || self.snapshots.dir.is_none() {
            return;
        }
        if self
            .snapshots
            .job
            .as_ref()
            .is_some_and(SnapshotJob::is_finished)
        {
            let job = self.snapshots.job.take().expect("checked");
            self.snapshot_written(job, out);
        }
        if self.snapshots.job.is_none() && !self.snapshots.streams.receiving_any() {
            self.maybe_snapshot(now_ms, unix_ms);
        }
        self.streams_tick(now_ms, out);
    }

    /// Automatic snapshots of a key-value log by size; retention of a plain
    /// log.
    fn maybe_snapshot(&mut self, now_ms: u64, unix_ms: u64) {
        let policy = self.snapshots.policy;
        let outcome = if self.kv.is_some() {
            let grown = self
                .storage
                .stored_bytes()
                .saturating_sub(self.snapshots.bytes_after_compaction);
            if policy.log_bytes == 0 || grown < policy.log_bytes {
                return;
            }
            self.take_snapshot(None)
        } else {
            if policy.retention.is_unlimited()
                || now_ms < self.snapshots.retention_checked_ms + RETENTION_CHECK_MS
            {
                return;
            }
            self.snapshots.retention_checked_ms = now_ms;
            let limit = self
                .core
                .commit_index()
                .min(self.core.log().durable_index());
            let Some(point) =
                retention_point(&self.storage.segments(), limit, &policy.retention, unix_ms)
            else {
                return;
            };
            if point <= self.core.log().snapshot_index() {
                return;
            }
            self.take_snapshot(Some(point))
        };
        if let Err(reason) = outcome {
            tracing::debug!(log = %self.name, %reason, "no snapshot now");
            // Do not retry at every tick: wait for more growth.
            self.snapshots.bytes_after_compaction = self.storage.stored_bytes();
        }
    }

    /// A snapshot file is durable (or failed): adopt it, compact, answer
    /// the admin requests waiting for it.
    fn snapshot_written(&mut self, job: SnapshotJob, out: &mut Outbound) {
        let pause = job.pause;
        let waiting = std::mem::take(&mut self.snapshots.waiting);
        match job.wait() {
            Ok((meta, path)) => {
                let index = meta.index;
                if self
                    .snapshots
                    .latest
                    .as_ref()
                    .is_none_or(|(latest, _)| latest.index < index)
                {
                    self.snapshots.latest = Some((meta, path));
                }
                let first = self.compact_to(index);
                self.snapshots.bytes_after_compaction = self.storage.stored_bytes();
                tracing::info!(log = %self.name, %index, ?pause, %first, "snapshot durable; log compacted");
                for reply in waiting {
                    out.reply(reply, ResponseBody::Status(self.status()));
                }
            }
            Err(error) => {
                tracing::error!(log = %self.name, %error, "writing a snapshot");
                for reply in waiting {
                    out.error(reply, ErrorKind::Unavailable, error.to_string());
                }
            }
        }
    }

    /// A snapshot is durable: drop the log below it, in the core and in
    /// storage (whole segments), if its index is durable here and ends a
    /// batch; else keep the log (a later snapshot compacts). Returns the
    /// first index the log still holds.
    pub fn compact_to(&mut self, index: LogIndex) -> LogIndex {
        let log = self.core.log();
        if index > log.snapshot_index()
            && index <= log.durable_index()
            && index <= self.core.commit_index()
            && log.is_batch_end(index)
        {
            self.core.compact(index);
            if let Err(error) = self.storage.drop_prefix(index) {
                tracing::warn!(log = %self.name, %error, "dropping the log below a snapshot");
            }
        }
        self.storage.first_index()
    }
}

/// The key-value machine a verified snapshot file holds, checked to be
/// applied exactly up to the file's index.
pub(super) fn machine_from_file(path: &Path, meta: &SnapshotMeta) -> Result<StateMachine, String> {
    let mut machine = StateMachine::new();
    machine
        .restore_from(snapshot_file::body_reader(path, meta).map_err(|error| error.to_string())?)
        .map_err(|error| format!("{}: {error}", path.display()))?;
    if machine.applied_index() != meta.index {
        return Err(format!(
            "{}: the machine's applied index {} is not the file's {}",
            path.display(),
            machine.applied_index(),
            meta.index
        ));
    }
    Ok(machine)
}

/// How a log recovered from disk continues a snapshot up to `index` (of
/// `term`): the summaries of its batches after the snapshot, or why the
/// pair cannot be trusted. The log may start anywhere at or below
/// `index + 1` (segments are dropped whole).
///
/// A log that does not continue the snapshot is reset to start after it:
/// one that ends at or before `index`, one with another term at `index`,
/// or one with a batch across it. The last two are safe to discard because
/// a snapshot holds only committed entries: a log whose entry at `index`
/// is not the committed one came from a leader that never had the
/// committed entry, and nothing such a leader appended after it can have
/// been committed (a node is left this way by a crash between adopting a
/// leader's snapshot and resetting its log). A gap after the snapshot
/// means entries that may have been acknowledged are missing: refused.
pub fn log_after_snapshot(
    storage: &mut dyn LogStorage,
    index: LogIndex,
    term: Term,
    limits: RunLimits,
) -> Result<Vec<Boundary>, String> {
    if storage.first_index() > index.next() {
        return Err(format!(
            "the log starts at {} but the snapshot ends at {index}: entries are missing",
            storage.first_index()
        ));
    }
    let reset = |storage: &mut dyn LogStorage| {
        storage
            .reset(index.next())
            .map_err(|error| format!("resetting the log after the snapshot: {error}"))
    };
    if storage.last_index() <= index {
        reset(storage)?;
        return Ok(Vec::new());
    }
    if let Some(stored) = storage.term_at(index)
        && index >= storage.first_index()
        && stored != term
    {
        tracing::warn!(%index, %stored, %term, "the log disagrees with the snapshot at its index: reset after it");
        reset(storage)?;
        return Ok(Vec::new());
    }
    let mut batches = Vec::new();
    crate::storage::visit_batches(storage, index.next(), |view, _| {
        let summary = super::summary_of(view)?;
        if summary.last_index() > index {
            limits.push(&mut batches, Boundary::from(&summary));
        }
        Ok::<_, super::GroupError>(true)
    })
    .map_err(|error| error.to_string())?;
    if batches
        .first()
        .is_some_and(|first| first.first_index != index.next())
    {
        tracing::warn!(%index, "the log has a batch across the snapshot's index: reset after it");
        reset(storage)?;
        return Ok(Vec::new());
    }
    Ok(batches)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::{MemoryLog, SyncMode};
    use crate::storage::segment::tests::TempDir;
    use crate::types::NodeId;
    use crate::wire::client::{KvCommand, KvOperation};

    fn members(voters: &[u64]) -> Members {
        Members {
            voters: voters.to_vec(),
            voters_outgoing: Vec::new(),
            learners: Vec::new(),
            addresses: Vec::new(),
        }
    }

    fn log_of(batches: &[(u64, u64, usize)]) -> MemoryLog {
        let mut log = MemoryLog::new(SyncMode::Immediate);
        for (first, term, count) in batches {
            let payloads = vec![b"x".to_vec(); *count];
            let frame = crate::wire::encode_batch(
                crate::wire::BatchKind::Data,
                Term(*term),
                LogIndex(*first),
                &payloads,
            );
            log.append(&frame).expect("append");
        }
        log.sync_all().expect("sync");
        log
    }

    /// A log continuing the snapshot gives its batches after it; a log
    /// ending at or before it, with another term at its index or a batch
    /// across it is reset after it; a gap is refused with a clear reason.
    #[test]
    fn log_after_snapshot_accepts_continuations_and_refuses_gaps() {
        let mut log = log_of(&[(1, 1, 2), (3, 1, 2), (5, 2, 3)]);
        let after =
            log_after_snapshot(&mut log, LogIndex(4), Term(1), RunLimits::NONE).expect("continues");
        assert_eq!(after.len(), 1);
        assert_eq!(after[0].first_index, LogIndex(5));
        let mut other = log_of(&[(1, 1, 2), (3, 1, 2), (5, 2, 3)]);
        let after =
            log_after_snapshot(&mut other, LogIndex(4), Term(2), RunLimits::NONE).expect("term");
        assert!(after.is_empty(), "another term at the index: reset");
        assert_eq!(
            (other.first_index(), other.last_index()),
            (LogIndex(5), LogIndex(4))
        );
        let mut across = log_of(&[(1, 1, 2), (3, 1, 2), (5, 2, 3)]);
        let after =
            log_after_snapshot(&mut across, LogIndex(5), Term(2), RunLimits::NONE).expect("inside");
        assert!(after.is_empty(), "a batch across the index: reset");
        assert_eq!(across.first_index(), LogIndex(6));
        log.drop_prefix(LogIndex(4)).expect("drop");
        assert_eq!(log.first_index(), LogIndex(5));
        let error =
            log_after_snapshot(&mut log, LogIndex(2), Term(1), RunLimits::NONE).expect_err("gap");
        assert!(error.contains("missing"), "{error}");
        let after =
            log_after_snapshot(&mut log, LogIndex(9), Term(2), RunLimits::NONE).expect("reset");
        assert!(after.is_empty());
        assert_eq!(log.first_index(), LogIndex(10));
        assert_eq!(log.last_index(), LogIndex(9));
    }

    /// A kv group opened over an empty log restarts from the snapshot in
    /// its directory: commit, log and machine start at the snapshot's
    /// index, and the node goes on to lead and append after it.
    #[test]
    fn group_restarts_from_its_snapshot() {
        let dir = TempDir::new("kv-restart");
        let mut machine = StateMachine::new();
        machine
            .apply(
                LogIndex(5),
                &KvCommand {
                    client_id: 0,
                    sequence: 0,
                    key: b"color".to_vec(),
                    operation: KvOperation::Put(b"red".to_vec()),
                    time_ms: 1,
                },
            )
            .expect("apply");
        start(Some(&machine), LogIndex(5), Term(2), members(&[1]), &dir.0)
            .expect("start")
            .wait()
            .expect("written");
        let mut group = Group::open(
            crate::types::LogId::from_name(super::super::KV_LOG),
            super::super::KV_LOG.to_owned(),
            crate::raft::Config::new(NodeId(1), 7),
            &[NodeId(1)],
            vec![(NodeId(1), "127.0.0.1:1".to_owned())],
            Box::new(MemoryLog::new(SyncMode::Immediate)),
            0,
        )
        .expect("open");
        assert_eq!(
            group.restore_snapshot(&dir.0, 0).expect("restore"),
            Some(LogIndex(5))
        );
        assert_eq!(group.core().commit_index(), LogIndex(5));
        assert_eq!(group.storage().first_index(), LogIndex(6));
        let kv = group.kv.as_ref().expect("kv");
        assert_eq!(kv.get(b"color"), Some(&b"red"[..]));
        let mut out = super::super::Outbound::default();
        let mut now = 0;
        while group.core().commit_index() < LogIndex(6) {
            now += 50;
            assert!(now < 60_000, "a single node elects itself and commits");
            group.tick(now, &mut out);
            group.turn(&mut out);
        }
        assert_eq!(group.core().log().snapshot_index(), LogIndex(5));
    }

    /// The snapshot written in the background holds the machine's state
    /// at the moment of the freeze (later applies, even to the same keys,
    /// do not leak into it); the pause for 200,000 keys is printed
    /// (`--nocapture`) beside the time encoding them into a buffer takes.
    #[test]
    fn background_snapshot_holds_the_state_at_the_freeze() {
        let mut machine = StateMachine::new();
        let keys = 200_000u64;
        for index in 1..=keys {
            let command = KvCommand {
                client_id: 0,
                sequence: 0,
                key: format!("key-{index:08}").into_bytes(),
                operation: KvOperation::Put(vec![7u8; 100]),
                time_ms: index,
            };
            machine.apply(LogIndex(index), &command).expect("apply");
        }
        let dir = TempDir::new("kv-snapshot");
        let started = Instant::now();
        let mut buffer = Vec::new();
        machine.snapshot_to(&mut buffer).expect("encode");
        let encode = started.elapsed();
        drop(buffer);
        let before = machine.clone();
        let job = start(
            Some(&machine),
            LogIndex(keys),
            Term(3),
            members(&[1]),
            &dir.0,
        )
        .expect("start");
        let pause = job.pause;
        for (offset, key) in [&b"later"[..], b"key-00000001"].into_iter().enumerate() {
            let later = KvCommand {
                client_id: 0,
                sequence: 0,
                key: key.to_vec(),
                operation: KvOperation::Put(b"x".to_vec()),
                time_ms: keys + 1,
            };
            machine
                .apply(LogIndex(keys + 1 + offset as u64), &later)
                .expect("apply after the freeze");
        }
        let started = Instant::now();
        let (meta, path) = job.wait().expect("written");
        let write = started.elapsed();
        println!(
            "snapshot of {keys} keys ({} bytes): freeze pause {pause:?} (encoding into a \
             buffer takes {encode:?}), then waited {write:?} for the background write",
            meta.body_bytes
        );
        assert_eq!(meta.index, LogIndex(keys));
        assert_eq!(meta.term, Term(3));
        let (latest, _) = snapshot_file::latest(&dir.0).expect("list").expect("one");
        assert_eq!(latest, meta);
        let mut restored = StateMachine::new();
        restored
            .restore_from(snapshot_file::body_reader(&path, &meta).expect("open"))
            .expect("restore");
        assert!(
            restored == before,
            "the snapshot is the state at the freeze"
        );
        assert!(restored.get(b"later").is_none());
        assert_eq!(restored.get(b"key-00000001"), Some(&[7u8; 100][..]));
    }
}
