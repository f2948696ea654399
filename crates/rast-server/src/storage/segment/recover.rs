//! Recovery: what opening a log does with its files.
//!
//! ```text
//!  list segments ─► for each, in index order: read (pread, never a map),
//!  scan and verify every record ─► classify what ends the scan:
//!    clean end (zeros)            keep
//!    torn tail of the last one    cut silently (never reported durable)
//!    damage (a bad record, an     mark the node damaged (durably, first),
//!    unreadable block, a gap       cut the log there, remove the later
//!    between two segments, a       segments: the leader repairs it
//!    sound record of the wrong
//!    index inside a segment: a
//!    misdirected write)
//!    a segment whose first        refuse the log, naming the file (a stray
//!    record is not its name's      or copied segment, not damage)
//! ```
//!
//! The hard state comes first (`SegmentLog::open`): lost (both copies
//! damaged, or gone under a log that holds entries), it is rebuilt from
//! the peers' terms (`raft::Core`, "A lost hard state").

use std::cell::OnceCell;
use std::fs::{self, File, OpenOptions};
use std::path::PathBuf;
use std::rc::Rc;

use nix::fcntl::{FallocateFlags, fallocate};

use super::file::{BatchEntry, Segment};
use super::{SEGMENT_SUFFIX, SegmentLog, TEMP_SUFFIX, parse_segment_name, preallocate};
use crate::constants::SEGMENT_BYTES_MAX;
use crate::raft::action::TERM_UNKNOWN;
use crate::storage::durable_mark;
use crate::storage::hard_state::{self, sync_directory};
use crate::storage::reading;
use crate::storage::record::{self, RecordMeta};
use crate::storage::{HardState, LogStorage, StorageError, unix_ms};
use crate::types::{LogIndex, Term};

impl SegmentLog {
    /// The hard state is lost: the node restarts with [`HardState::lost`]
    /// (written and synced first), and rebuilds its term from its peers'
    /// (`raft::Core`, "A lost hard state").
    pub(super) fn mark_lost(&mut self, reason: &str) -> Result<(), StorageError> {
        tracing::error!(dir = %self.dir.display(), %reason,
            "the hard state is lost: this node acts on no message until it has heard every other voter's term, then waits for a leader to repair it");
        let lost = HardState::lost(self.last_term());
        hard_state::store(&self.dir, lost)?;
        self.hard_state = lost;
        self.durability.hard_state = lost;
        self.damage.push(format!(
            "{}: the hard state is lost ({reason})",
            self.dir.join(hard_state::FILE_NAME).display()
        ));
        Ok(())
    }

    /// Recovery found damage: the hard state takes the damage mark (`raft::HardState::after_damage`), written and
    /// synced before the node starts.
    fn mark_damaged(&mut self) -> Result<(), StorageError> {
        // The hard state's term is at least its log's (a node takes no
        // entry of a term it has not stored); a store used without one
        // (a test, a tool) still gets a mark that covers its entries.
        let mut base = self.hard_state;
        base.term = base
            .term
            .max(self.terms.last().map_or(Term::ZERO, |(_, term)| *term));
        let damaged = base.after_damage(self.acked_end);
        hard_state::store(&self.dir, damaged)?;
        self.hard_state = damaged;
        self.durability.hard_state = damaged;
        Ok(())
    }

    /// Recovers every segment of the directory (see the module docs);
    /// returns whether a torn tail was cut (as a power cut leaves).
    pub(super) fn recover(&mut self) -> Result<bool, StorageError> {
        let names = self.list_segments()?;
        if names.is_empty() {
            let mut segment = self.create_segment(LogIndex(1))?;
            self.name_segment(&mut segment)?;
            self.segments.push_back(segment);
        }
        let count = names.len();
        let mut names = names.into_iter().enumerate();
        let mut removed = Vec::new();
        let mut torn_cut = false;
        for (position, (first, path)) in names.by_ref() {
            if self
                .segments
                .back()
                .is_some_and(|previous| previous.last.next() < first)
            {
                // Entries missing between two segments (a sealed segment
                // truncated, a segment file gone): damage at the gap.
                self.cut_at_gap(first)?;
                removed.push(path);
                break;
            }
            let (segment, cut) = self.recover_segment(first, path, position + 1 == count)?;
            self.segments.push_back(segment);
            match cut {
                Cut::Damage => break,
                Cut::Torn => torn_cut = true,
                Cut::None => {}
            }
        }
        // After a cut (the node is marked damaged already), the later
        // segments go: the leader sends their entries again.
        for path in removed.into_iter().chain(names.map(|(_, (_, path))| path)) {
            tracing::warn!(path = %path.display(), "removing a segment after a damaged record");
            fs::remove_file(&path).map_err(|error| StorageError::io("remove", &path, error))?;
        }
        let active = self.segments.back().expect("at least one segment");
        // What survived the last run may not be on stable storage yet.
        active
            .file
            .sync_data()
            .map_err(|error| StorageError::io("fdatasync", &active.path, error))?;
        sync_directory(&self.dir)?;
        self.synced = self.last_index();
        self.durability.index = self.last_index();
        Ok(torn_cut)
    }

    /// After recovery: a log that ends below the durable mark lost
    /// entries this node reported durable — damage at rest, whatever
    /// shape it left (`storage::durable_mark`) — and the node is marked
    /// damaged. Then the mark is brought to the log's end, synced.
    pub(super) fn check_mark(
        &mut self,
        found: &durable_mark::Found,
        torn_cut: bool,
    ) -> Result<(), StorageError> {
        let last = self.last_index();
        let reason = match found {
            // Recovery found damage and marked the node already.
            _ if !self.damage.is_empty() => None,
            durable_mark::Found::Mark(slot) if last < slot.index => Some(format!(
                "the log ends at index {last}, but this node reported entries up to {} durable: \
                 its newest records were lost at rest (a segment truncated, zeroed or removed)",
                slot.index
            )),
            durable_mark::Found::Unknown(reason) if torn_cut => Some(format!(
                "a torn tail was cut and the durable mark does not read ({reason}): \
                 the cut may hold entries this node reported durable"
            )),
            durable_mark::Found::Unknown(reason) => {
                tracing::warn!(%reason, "the durable mark is damaged; the log's tail is whole, and the mark is written again");
                None
            }
            durable_mark::Found::Mark(_) | durable_mark::Found::Nothing => None,
        };
        if let Some(reason) = reason {
            tracing::error!(dir = %self.dir.display(), %reason,
                "the log lost entries at its end: this node votes again once a leader has repaired it");
            self.mark_damaged()?;
            // The lost records were at the end of the last segment (or in
            // segments after it that are gone).
            let at = self
                .segments
                .back()
                .map_or_else(|| self.dir.clone(), |segment| segment.path.clone());
            self.damage.push(format!("{}: {reason}", at.display()));
        }
        let term = self.term_at(last).unwrap_or(TERM_UNKNOWN);
        self.mark.store_blocking(&self.dir, last, term)
    }

    /// The segment before `next_first` ends before it: entries are
    /// missing between them, which this node may have acknowledged. Marks
    /// the node damaged (durably, first), and recovers that segment again
    /// as the log's last one; the caller removes the later segments.
    fn cut_at_gap(&mut self, next_first: LogIndex) -> Result<(), StorageError> {
        let previous = self.segments.pop_back().expect("a previous segment");
        tracing::error!(path = %previous.path.display(), last = %previous.last, next = %next_first,
            "entries missing between two segments: the log is cut here and this node votes again once a leader has repaired it");
        self.mark_damaged()?;
        self.damage.push(format!(
            "{}: ends at index {}, the next segment starts at {next_first}: entries between are missing",
            previous.path.display(),
            previous.last
        ));
        self.terms.retain(|(index, _)| *index < previous.first);
        let (first, path) = (previous.first, previous.path.clone());
        drop(previous);
        let (segment, _) = self.recover_segment(first, path, true)?;
        self.segments.push_back(segment);
        Ok(())
    }

    /// Segment files by first index; stray temp files are removed.
    fn list_segments(&self) -> Result<Vec<(LogIndex, PathBuf)>, StorageError> {
        let entries =
            fs::read_dir(&self.dir).map_err(|error| StorageError::io("list", &self.dir, error))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|error| StorageError::io("list", &self.dir, error))?;
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(TEMP_SUFFIX) {
                fs::remove_file(&path).map_err(|error| StorageError::io("remove", &path, error))?;
            } else if let Some(stem) = name.strip_suffix(SEGMENT_SUFFIX) {
                let first = parse_segment_name(stem).ok_or_else(|| StorageError::Corrupt {
                    path: path.clone(),
                    offset: 0,
                    reason: "a .log file whose name is not a 20-digit first index".into(),
                })?;
                names.push((first, path));
            }
        }
        names.sort();
        Ok(names)
    }

    /// Recovers one segment file; also returns what was cut: at a damaged
    /// record, the node restarts damaged, and the segment is the log's
    /// last (the caller removes any after it).
    fn recover_segment(
        &mut self,
        first: LogIndex,
        path: PathBuf,
        is_last: bool,
    ) -> Result<(Segment, Cut), StorageError> {
        let corrupt = |offset: u64, reason: String| StorageError::Corrupt {
            path: path.clone(),
            offset,
            reason,
        };
        if let Some(previous) = self.segments.back()
            && previous.last.next() > first
        {
            return Err(corrupt(
                0,
                format!(
                    "segment starts at index {first} but the previous one ends at {}: \
                     a segment duplicated or overlapping (a stray copy?)",
                    previous.last
                ),
            ));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|error| StorageError::io("open", &path, error))?;
        let metadata = file
            .metadata()
            .map_err(|error| StorageError::io("stat", &path, error))?;
        let file_bytes = metadata.len();
        // Read whole below: a file larger than any segment this store makes
        // is not one of its segments (and must not size an allocation).
        if file_bytes > SEGMENT_BYTES_MAX {
            return Err(corrupt(
                0,
                format!(
                    "{file_bytes} bytes, larger than any segment ({SEGMENT_BYTES_MAX}): not a segment of this log"
                ),
            ));
        }
        // Read before the tail is cleared or the file preallocated, which
        // would move it.
        let modified_ms = metadata.modified().map_or(0, unix_ms);
        let floor = self.terms.last().map_or(Term::ZERO, |(_, term)| *term);
        let Scanned {
            batches,
            last,
            terms,
            end: scanned,
            damaged,
        } = scan_file(&file, file_bytes, first, floor, is_last).map_err(|error| match error {
            ScanFileError::Read(error) => StorageError::io("read", &path, error),
            ScanFileError::Misplaced(error) => corrupt(
                error.offset,
                format!(
                    "a sound record that does not continue the log: {}",
                    error.reason
                ),
            ),
        })?;
        // Damage (anything but a torn tail of the last segment) may be in
        // entries this node acknowledged: mark the node damaged, durably,
        // *before* cutting (a crash in between finds the damage again),
        // then cut the log at the damaged record.
        if damaged {
            tracing::error!(path = %path.display(), offset = scanned.end,
                reason = %scanned.torn.as_deref().unwrap_or_default(),
                "damaged record: the log is cut here and this node votes again once a leader has repaired it");
            self.mark_damaged()?;
            self.damage.push(format!(
                "{}: damaged record at byte {} (after index {last}): {}",
                path.display(),
                scanned.end,
                scanned.torn.as_deref().unwrap_or("unreadable")
            ));
        }
        let is_last = is_last || damaged;
        let mut segment = Segment {
            id: self.take_segment_id(),
            first,
            last,
            named: true,
            path,
            file: Rc::new(file),
            file_bytes,
            end: scanned.end,
            written: scanned.end,
            batches,
            dense_from: 0,
            map: OnceCell::new(),
            modified_ms,
        };
        let mut cut = if damaged { Cut::Damage } else { Cut::None };
        if let Some(reason) = scanned.torn {
            if !damaged {
                tracing::warn!(path = %segment.path.display(), offset = scanned.end, %reason,
                    "cutting a torn final record");
                cut = Cut::Torn;
            }
            clear_tail(&segment, scanned.end)?;
        }
        if !is_last {
            segment.make_sparse();
        }
        if is_last && file_bytes < self.options.segment_bytes {
            preallocate(&segment.file, &segment.path, self.options.segment_bytes)?;
            segment.file_bytes = self.options.segment_bytes;
        }
        for (index, term) in terms {
            self.note_term(index, term);
        }
        Ok((segment, cut))
    }
}

/// What recovery cut of a segment.
enum Cut {
    None,
    /// A torn tail, as a power cut leaves (what the durable mark says
    /// decides whether it was).
    Torn,
    /// Damage: the node is marked.
    Damage,
}

/// What recovery read of one segment file.
struct Scanned {
    batches: Vec<BatchEntry>,
    last: LogIndex,
    terms: Vec<(LogIndex, Term)>,
    end: record::ScanEnd,
    /// The cut is damage (see [`classify_scan`]), or blocks did not read.
    damaged: bool,
}

/// Why a segment file could not be scanned.
enum ScanFileError {
    /// A read failed other than with an unreadable block.
    Read(std::io::Error),
    /// A sound record that does not continue the log.
    Misplaced(record::ScanError),
}

/// Reads and scans a segment file: its records, where they end, and
/// whether what follows is damage.
fn scan_file(
    file: &File,
    file_bytes: u64,
    first: LogIndex,
    floor: Term,
    is_last: bool,
) -> Result<Scanned, ScanFileError> {
    // Read, not mapped: a block that does not read (EIO) is damage of
    // the records from there on, where through a map it would be a
    // SIGBUS (see `storage::reading`).
    let (bytes, unreadable_at) =
        reading::read_whole(file, file_bytes).map_err(ScanFileError::Read)?;
    let mut batches = Vec::new();
    let mut last = first.prev();
    let mut terms = Vec::new();
    let result = record::scan(&bytes, first, floor, |meta: RecordMeta| {
        batches.push(BatchEntry {
            offset: meta.offset as u32,
            delta: (meta.first.get() - first.get()) as u32,
        });
        last = meta.last;
        terms.push((meta.first, meta.term));
    });
    let (mut end, mut damaged) =
        classify_scan(result, &bytes, is_last).map_err(ScanFileError::Misplaced)?;
    if let Some(at) = unreadable_at {
        // What the unreadable blocks held is unknown: records this node
        // acknowledged, maybe. Damage, cut where the readable ones end.
        damaged = true;
        end.torn = Some(format!(
            "the file does not read from byte offset {at} on (EIO): {}",
            end.torn
                .as_deref()
                .unwrap_or("the records before it are sound")
        ));
    }
    Ok(Scanned {
        batches,
        last,
        terms,
        end,
        damaged,
    })
}

/// What recovery makes of a segment's scan: the end to keep, and whether
/// what is cut is damage (anything but a torn tail of the last segment).
/// A record sound in itself that does not continue the log is either a
/// file in the wrong place (a copy, a stray segment: its very first
/// record is not the one its name says), which is returned as an error,
/// to refuse the log naming the file; or, further into a file that began
/// as its name says, a misdirected write (a record the disk wrote over
/// this place instead of its own), which is damage like any other.
fn classify_scan(
    result: Result<record::ScanEnd, record::ScanError>,
    bytes: &[u8],
    is_last: bool,
) -> Result<(record::ScanEnd, bool), record::ScanError> {
    match result {
        Ok(scanned) if scanned.torn.is_none() || is_last => Ok((scanned, false)),
        // A torn record can only be in the last segment (an older one was
        // synced whole before the next was written): here it is damage.
        Ok(scanned) => {
            let torn = scanned
                .torn
                .map(|reason| format!("a torn record in a sealed segment: {reason}"));
            Ok((
                record::ScanEnd {
                    end: scanned.end,
                    torn,
                },
                true,
            ))
        }
        Err(error) if error.offset == 0 && record::find_valid_record(bytes, 0) == Some(0) => {
            Err(error)
        }
        Err(error)
            if record::find_valid_record(bytes, error.offset as usize)
                == Some(error.offset as usize) =>
        {
            Ok((
                record::ScanEnd {
                    end: error.offset,
                    torn: Some(format!(
                        "a sound record that does not continue the log (a misdirected write): {}",
                        error.reason
                    )),
                },
                true,
            ))
        }
        Err(error) => Ok((
            record::ScanEnd {
                end: error.offset,
                torn: Some(error.reason),
            },
            true,
        )),
    }
}

/// Zeroes `segment` from `offset` to its end (punching the blocks out and
/// reserving them again, keeping the size, so maps stay valid) and syncs it.
fn clear_tail(segment: &Segment, offset: u64) -> Result<(), StorageError> {
    let len = segment.file_bytes.saturating_sub(offset);
    if len > 0 {
        let punch = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
        fallocate(&*segment.file, punch, offset as i64, len as i64).map_err(|errno| {
            StorageError::io("punch hole", &segment.path, std::io::Error::from(errno))
        })?;
        // Reserving again only matters for a later full disk; a failure
        // leaves a hole that a write fills as it goes.
        let _ = fallocate(
            &*segment.file,
            FallocateFlags::empty(),
            offset as i64,
            len as i64,
        );
    }
    segment
        .file
        .sync_all()
        .map_err(|error| StorageError::io("fsync", &segment.path, error))
}
