//! Stored records: the checks every batch passes before it is written and
//! after it is read, and the recovery scan that tells a torn tail from
//! corruption.
//!
//! A log file is records back to back, then zeros (preallocated, never
//! written) to the end of the file:
//!
//! ```text
//!  offset 0                                                   file end
//!  ┌────────────┬────────────┬─────┬────────────┬─────────────────────┐
//!  │ batch a..b │ batch b+1..│ ... │ batch ..n  │ 0 0 0 0 0 0 0 0 ... │
//!  └────────────┴────────────┴─────┴────────────┴─────────────────────┘
//! ```
//!
//! Each record is an `EntryBatch` frame. A record is valid when it parses,
//! its CRC32C matches, it holds at least one entry, its first index continues
//! the previous record and its term does not go down.
//!
//! # Torn or corrupt?
//!
//! Scanning stops at the first record that is not valid. What comes after
//! decides what it means:
//!
//! * Only zeros from there on: the clean end of the log.
//! * The file ends inside the record, or the record's bytes stop at a
//!   512-byte sector boundary and only zeros follow to the end of the file:
//!   a torn write of the final record (the disk and the page cache persist
//!   whole sectors and pages, aligned to the file). It was never reported
//!   durable — a sync covers a prefix — so it is cut off.
//! * Writes lost before a write that landed: the record's first word is
//!   zero (no record starts so: a write that never reached the disk), or
//!   the bytes up to a later valid record are a prefix that stops at a
//!   sector boundary and then zeros. A power cut leaves this shape: the
//!   page cache writes dirty pages back in any order, so a later write can
//!   reach the disk while an earlier one does not. Nothing from the first
//!   lost write on was reported durable (a sync covers a prefix, and that
//!   prefix stops at the hole), so it is all cut off. (The segment store
//!   accepts this, like any tear, only in its last segment: an older one
//!   was synced whole before the next was written.)
//! * Anything else — a valid record further on after non-zero damage, stray
//!   non-zero bytes, a complete record with a bad checksum — is corruption,
//!   and the scan fails with the byte offset, because entries there may be
//!   committed. The segment store then cuts the log at the damaged record
//!   and restarts the node as a damaged one (it may have acknowledged what
//!   it cut): no campaign, and votes only for logs that hold what it may
//!   have acknowledged, until a leader has repaired its log (`raft::Core`,
//!   "damaged nodes").
//!
//! The checksum reads the stamped term and first index as zero; their own
//! CRC (`stampCheck`, written with the stamp) catches a flip there, and the
//! index chain and the term order catch it again in batches stored before
//! that field existed (zero: absent). A flip in
//! the final record that leaves its bytes ending in a zero-filled sector
//! (for instance a length that grew) reads as a torn write: the one case
//! corruption of the very last record can be taken for a tear.

use crate::constants::SECTOR_BYTES;
use crate::constants::{FRAME_SEGMENTS_MAX, WORD_BYTES};
use crate::storage::Checksum;
use crate::types::{LogIndex, Term};
use crate::wire::frame::{FrameLength, frame_length};
use crate::wire::{BatchView, WireError};

/// What the log keeps of one batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordMeta {
    /// Byte offset of the frame within its file (or buffer).
    pub offset: u64,
    /// Frame length in bytes.
    pub bytes: u32,
    /// First index.
    pub first: LogIndex,
    /// Last index.
    pub last: LogIndex,
    /// Term of every entry.
    pub term: Term,
}

/// Why a record is not valid.
#[derive(Debug)]
pub enum Fault {
    /// The bytes end before the frame does.
    Incomplete,
    /// The frame is complete (or its header is garbage) and wrong.
    Invalid(String),
}

/// Checks the record at the start of `bytes` (which may run on past it):
/// the frame, the checksum, a non-empty count, `first_index == expected`
/// and `term >= term_floor`.
pub fn check(
    bytes: &[u8],
    offset: u64,
    expected: LogIndex,
    term_floor: Term,
) -> Result<RecordMeta, Fault> {
    check_record(bytes, offset, expected, term_floor, Checksum::Verify)
}

/// [`check`], with the checksum verified only when `checksum` says so
/// (bytes whose checksums the caller verified just before).
pub(crate) fn check_record(
    bytes: &[u8],
    offset: u64,
    expected: LogIndex,
    term_floor: Term,
    checksum: Checksum,
) -> Result<RecordMeta, Fault> {
    let view = BatchView::parse(bytes).map_err(|error| match error {
        WireError::Truncated { .. } => Fault::Incomplete,
        other => Fault::Invalid(other.to_string()),
    })?;
    match checksum {
        Checksum::Verify => view
            .verify_checksum()
            .map_err(|error| Fault::Invalid(error.to_string()))?,
        Checksum::VerifiedByCaller => debug_assert!(view.verify_checksum().is_ok()),
    }
    if view.count() == 0 {
        return Err(Fault::Invalid("batch holds no entries".into()));
    }
    if view.first_index() != expected {
        return Err(Fault::Invalid(format!(
            "batch starts at index {} but {expected} was expected",
            view.first_index()
        )));
    }
    if view.term() == Term::ZERO {
        return Err(Fault::Invalid("batch of term 0 (never stamped)".into()));
    }
    if view.term() < term_floor {
        return Err(Fault::Invalid(format!(
            "batch term {} is below the previous term {term_floor}",
            view.term()
        )));
    }
    Ok(RecordMeta {
        offset,
        bytes: view.len() as u32,
        first: view.first_index(),
        last: view.last_index(),
        term: view.term(),
    })
}

/// How a scan ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanEnd {
    /// Offset just past the last valid record: where the next one goes.
    pub end: u64,
    /// Set when a torn final record was found at `end` (to be cut off).
    pub torn: Option<String>,
}

/// Corruption found by a scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanError {
    /// Offset of the bad record.
    pub offset: u64,
    /// What is wrong.
    pub reason: String,
}

/// Scans `bytes` (a whole file) from offset 0, expecting the first record at
/// index `next` with a term of at least `term_floor`, calling `visit` for
/// each valid record. See the module docs for the torn-or-corrupt rule.
pub fn scan(
    bytes: &[u8],
    mut next: LogIndex,
    mut term_floor: Term,
    mut visit: impl FnMut(RecordMeta),
) -> Result<ScanEnd, ScanError> {
    let mut offset = 0usize;
    loop {
        let rest = &bytes[offset..];
        if is_zero(rest) {
            return Ok(ScanEnd {
                end: offset as u64,
                torn: None,
            });
        }
        match check(rest, offset as u64, next, term_floor) {
            Ok(meta) => {
                visit(meta);
                next = meta.last.next();
                term_floor = meta.term;
                offset += meta.bytes as usize;
            }
            Err(fault) => return classify_failure(bytes, offset, &fault),
        }
    }
}

/// Decides whether the invalid record at `offset` is a torn tail.
fn classify_failure(bytes: &[u8], offset: usize, fault: &Fault) -> Result<ScanEnd, ScanError> {
    let rest = &bytes[offset..];
    let claimed = match frame_length(rest) {
        Ok(FrameLength::Complete { frame_bytes, .. }) => Some(frame_bytes),
        _ => None,
    };
    let reason = match fault {
        Fault::Incomplete => "the file ends inside the record".to_string(),
        Fault::Invalid(reason) => reason.clone(),
    };
    let search_from = offset + claimed.map_or(WORD_BYTES, |claimed| claimed.max(WORD_BYTES));
    let never_written = rest.len() >= WORD_BYTES && is_zero(&rest[..WORD_BYTES]);
    if let Some(later) = find_valid_record(bytes, search_from) {
        if never_written || lost_writes_before(bytes, offset, later) {
            return Ok(ScanEnd {
                end: offset as u64,
                torn: Some(format!(
                    "{reason}; writes that never reached the disk (zeros) before a record at \
                     byte offset {later} that did: a power cut's out-of-order writeback"
                )),
            });
        }
        return Err(ScanError {
            offset: offset as u64,
            reason: format!("{reason}; a valid record follows at byte offset {later}"),
        });
    }
    let torn = match (fault, claimed) {
        _ if never_written => true,
        (Fault::Incomplete, _) => true,
        (Fault::Invalid(_), Some(claimed)) => ends_in_zero_sectors(bytes, offset, claimed),
        (Fault::Invalid(_), None) => false,
    };
    if torn {
        Ok(ScanEnd {
            end: offset as u64,
            torn: Some(reason),
        })
    } else {
        Err(ScanError {
            offset: offset as u64,
            reason,
        })
    }
}

/// True when the record at `offset` claiming `claimed` bytes stops being
/// written at a sector boundary inside it, with only zeros from that
/// boundary to the end of `bytes`: the shape a torn write leaves.
fn ends_in_zero_sectors(bytes: &[u8], offset: usize, claimed: usize) -> bool {
    let written_end = bytes
        .iter()
        .rposition(|byte| *byte != 0)
        .map_or(0, |at| at + 1);
    let record_end = offset + claimed;
    let boundary = (written_end.max(offset + 1) as u64).next_multiple_of(SECTOR_BYTES) as usize;
    boundary < record_end
}

/// True when the damaged bytes `[offset, later)` before a valid record at
/// `later` have the shape lost writes leave: all zeros, or non-zero bytes
/// that stop at or before a sector boundary, and zeros from that boundary
/// to `later`. (A flipped bit or a garbage record leaves non-zero bytes up
/// to the record that follows.)
fn lost_writes_before(bytes: &[u8], offset: usize, later: usize) -> bool {
    let gap = &bytes[offset..later];
    let Some(last) = gap.iter().rposition(|byte| *byte != 0) else {
        return true;
    };
    let written_end = (offset + last + 1) as u64;
    written_end.next_multiple_of(SECTOR_BYTES) < later as u64
}

/// The offset of the first valid-looking record (parses, checksum matches)
/// at or after `from`, at word-aligned offsets.
pub fn find_valid_record(bytes: &[u8], from: usize) -> Option<usize> {
    let mut offset = from.next_multiple_of(WORD_BYTES);
    while offset + 2 * WORD_BYTES <= bytes.len() {
        let head = &bytes[offset..];
        let segments = u32::from_le_bytes(head[..4].try_into().expect("four bytes")) as usize;
        let words = u32::from_le_bytes(head[4..8].try_into().expect("four bytes"));
        if segments < FRAME_SEGMENTS_MAX
            && words != 0
            && BatchView::parse(head).is_ok_and(|view| view.verify_checksum().is_ok())
        {
            return Some(offset);
        }
        offset += WORD_BYTES;
    }
    None
}

/// True when every byte is zero.
pub fn is_zero(bytes: &[u8]) -> bool {
    let (words, tail) = bytes.as_chunks::<8>();
    words.iter().all(|word| u64::from_ne_bytes(*word) == 0) && tail.iter().all(|byte| *byte == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{BatchKind, encode_batch};

    fn batch(term: u64, first: u64, count: usize) -> Vec<u8> {
        let entries: Vec<Vec<u8>> = (0..count)
            .map(|entry| vec![0xa5 ^ entry as u8; 100])
            .collect();
        encode_batch(BatchKind::Data, Term(term), LogIndex(first), &entries)
    }

    /// A clean file of records and a zero tail scans to the end of the
    /// records, visiting each once.
    #[test]
    fn scan_clean_file_with_zero_tail() {
        let mut file = batch(1, 1, 3);
        file.extend(batch(2, 4, 2));
        let end = file.len();
        file.resize(end + 4096, 0);
        let mut seen = Vec::new();
        let scanned = scan(&file, LogIndex(1), Term(0), |meta| seen.push(meta)).unwrap();
        assert_eq!(scanned.end, end as u64);
        assert_eq!(scanned.torn, None);
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[1].first, LogIndex(4));
        assert_eq!(seen[1].last, LogIndex(5));
        assert_eq!(seen[1].term, Term(2));
    }

    /// A bad record followed by a valid one is corruption at the bad
    /// record's offset, never a torn tail.
    #[test]
    fn scan_refuses_bad_record_before_a_good_one() {
        let first = batch(1, 1, 3);
        let mut file = first.clone();
        file.extend(batch(1, 4, 2));
        file[first.len() - 3] ^= 0x10;
        let error = scan(&file, LogIndex(1), Term(0), |_| {}).unwrap_err();
        assert_eq!(error.offset, 0);
        assert!(error.reason.contains("valid record follows"), "{error:?}");
    }

    /// Writes lost before a write that landed (a power cut's out-of-order
    /// writeback): a zero gap, or a torn prefix then zeros, before a valid
    /// record reads as a torn tail to cut at the first lost byte.
    #[test]
    fn scan_cuts_lost_writes_before_a_landed_one() {
        let first = batch(1, 1, 3);
        let lost = batch(1, 4, 20);
        let landed = batch(1, 24, 2);
        for kept in [0, 512, 1024] {
            let mut file = first.clone();
            let hole = file.len();
            let torn_end = if kept == 0 {
                hole
            } else {
                hole.next_multiple_of(512) + kept - 512
            };
            file.extend(&lost);
            file[torn_end..].fill(0);
            file.extend(&landed);
            file.resize(file.len() + 4096, 0);
            let mut seen = Vec::new();
            let scanned = scan(&file, LogIndex(1), Term(0), |meta| seen.push(meta)).unwrap();
            assert_eq!(scanned.end, hole as u64, "kept {kept}");
            assert!(scanned.torn.unwrap().contains("never reached the disk"));
            assert_eq!(seen.len(), 1);
        }
        // A lost write, then the torn (incomplete) prefix of a later one.
        let mut file = first.clone();
        let hole = file.len();
        file.resize(hole + lost.len(), 0);
        file.extend(&landed[..landed.len() / 2]);
        file.resize(file.len() + 4096, 0);
        let scanned = scan(&file, LogIndex(1), Term(0), |_| {}).unwrap();
        assert_eq!(scanned.end, hole as u64);
        assert!(scanned.torn.is_some());
    }

    /// The zero check sees a single non-zero byte anywhere.
    #[test]
    fn is_zero_sees_every_byte() {
        let mut bytes = vec![0u8; 37];
        assert!(is_zero(&bytes));
        for at in 0..bytes.len() {
            bytes[at] = 1;
            assert!(!is_zero(&bytes), "byte {at}");
            bytes[at] = 0;
        }
    }
}
