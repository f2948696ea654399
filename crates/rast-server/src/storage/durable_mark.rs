//! The durable mark: the highest index this log has reported durable,
//! kept on disk so that recovery can tell a power cut from damage at rest.
//!
//! A power cut loses only what was never synced, and a node acknowledges
//! only what was synced. But the shapes a power cut leaves at the end of
//! the last segment — the file ending inside a record, a record stopping
//! at a sector boundary with zeros after it, zeros where a record should
//! start — are also the shapes of damage at rest: a zeroed range, a file
//! truncated, a length grown by a flipped bit, a segment file gone. Cut
//! silently, such damage forgets entries this node acknowledged, and its
//! vote can then elect a leader without them ("Protocol-Aware Recovery",
//! FAST 2018). The mark tells the two apart:
//!
//! ```text
//!  data write ─► fdatasync(segment) ─► mark write ─► fdatasync(mark)  ─► reported durable
//!                 synced up to X        "X"            the mark says X      (acknowledged)
//!
//!  recovery: the log ends at L after cutting a torn tail, the mark says M
//!    L ≥ M    whatever was cut was never reported durable: a power cut
//!    L < M    entries M reported durable are gone: damage at rest, the
//!             node restarts marked damaged (`raft::Core`, "Damaged nodes")
//! ```
//!
//! A mark is written only after the data it covers is durable, so a power
//! cut can never leave a mark above the log. The mark costs one more
//! sync per group commit, but runs beside the next data sync (see
//! `segment::mark`). A truncation makes the lowered mark durable before
//! the log shrinks on disk, and a reset (a snapshot installed) lowers it
//! before the old segments go, so neither reads as damage.
//!
//! The file holds two slots, each a 4 KiB block of its own, written in
//! turn (one write at a time, each durable before the next), each with
//! its sequence number and a checksum. A slot is written whole with one
//! `O_DIRECT` write with `RWF_DSYNC` (durable when it completes, no
//! `fdatasync`, no page cache, no worker thread; buffered where the file
//! system refuses `O_DIRECT`):
//!
//! ```text
//!  <dir>/durable   offset 0      slot 0: "RASTMARK" seq index term crc32c
//!                  offset 4096   slot 1: the same layout
//! ```
//!
//! The valid slot with the higher sequence number is the mark. A write
//! torn by a power cut leaves the other slot, the mark before it, which
//! is still at or above everything acknowledged (that write had not
//! completed, so nothing it covers was reported). Both slots damaged (a
//! second fault in the same file) reads as *unknown*: recovery then takes
//! any cut tail for damage. No file (a new log, or one written before the
//! mark existed) reads as zero.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use crate::storage::hard_state::sync_directory;
use crate::storage::{StorageError, reading};
use crate::types::{LogIndex, Term};

/// Name of the mark's file within a log directory.
pub const FILE_NAME: &str = "durable";

/// Bytes of the block a slot is written as (what `O_DIRECT` aligns to).
pub const BLOCK_BYTES: usize = 4096;

/// Where each slot starts: different blocks, so one unreadable block
/// costs one slot.
pub const SLOT_AT: [u64; 2] = [0, BLOCK_BYTES as u64];

/// Bytes of a slot's contents: magic (8), sequence (8), index (8), term
/// of the entry at the index (8), CRC32C (4), zero padding (4); the rest
/// of its block is zeros.
pub const SLOT_BYTES: usize = 40;

/// The file's size: both slots' blocks.
pub const FILE_BYTES: u64 = 2 * BLOCK_BYTES as u64;

const MAGIC: &[u8; 8] = b"RASTMARK";

/// One slot's contents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    /// Writes so far (the higher of two valid slots is the newer).
    pub seq: u64,
    /// Every entry up to this index was reported durable.
    pub index: LogIndex,
    /// The term of the entry at `index` (zero at index zero): with it, a
    /// node whose log was damaged knows the end of the log it may have
    /// acknowledged up to (`raft::HardState::acked_end`).
    pub term: Term,
}

impl Slot {
    /// The file offset this slot's write goes to (slots taken in turn).
    pub fn offset(self) -> u64 {
        SLOT_AT[(self.seq % 2) as usize]
    }
}

/// Encodes a slot.
pub fn encode(slot: Slot) -> [u8; SLOT_BYTES] {
    let mut bytes = [0; SLOT_BYTES];
    bytes[..8].copy_from_slice(MAGIC);
    bytes[8..16].copy_from_slice(&slot.seq.to_le_bytes());
    bytes[16..24].copy_from_slice(&slot.index.get().to_le_bytes());
    bytes[24..32].copy_from_slice(&slot.term.get().to_le_bytes());
    let crc = crc32c::crc32c(&bytes[..32]);
    bytes[32..36].copy_from_slice(&crc.to_le_bytes());
    bytes
}

/// Decodes a slot; `None` when it is not a whole, valid one.
pub fn decode(bytes: &[u8]) -> Option<Slot> {
    let bytes = bytes.get(..SLOT_BYTES)?;
    let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("eight bytes"));
    let crc = u32::from_le_bytes(bytes[32..36].try_into().expect("four bytes"));
    (&bytes[..8] == MAGIC && crc == crc32c::crc32c(&bytes[..32]) && bytes[36..] == [0; 4]).then(
        || Slot {
            seq: word(8),
            index: LogIndex(word(16)),
            term: Term(word(24)),
        },
    )
}

/// What [`open`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    /// The newest valid slot.
    Mark(Slot),
    /// No file, or a file with no slot ever written: nothing was reported.
    Nothing,
    /// Neither slot is valid, but something was written (or a slot does
    /// not read): the mark is unknown. Why.
    Unknown(String),
}

/// Opens (creating it, durably, if missing) the mark of the log in `dir`,
/// and reads it. The file returned is for writing slots (`O_DIRECT` where
/// the file system takes it: see [`block`]).
pub fn open(dir: &Path) -> Result<(File, Found), StorageError> {
    let path = dir.join(FILE_NAME);
    let created = !path.exists();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|error| StorageError::io("open", &path, error))?;
    let writer = || {
        OpenOptions::new()
            .write(true)
            .custom_flags(nix::libc::O_DIRECT)
            .open(&path)
            .or_else(|_| OpenOptions::new().write(true).open(&path))
            .map_err(|error| StorageError::io("open", &path, error))
    };
    if created {
        // Written, not only sized: a slot's write then changes no
        // metadata (no block to allocate, no extent to convert).
        file.write_all_at(&[0; FILE_BYTES as usize], 0)
            .and_then(|()| file.sync_all())
            .map_err(|error| StorageError::io("create", &path, error))?;
        sync_directory(dir)?;
        return Ok((writer()?, Found::Nothing));
    }
    let mut slots = [None; 2];
    let mut problems = Vec::new();
    let mut written = false;
    for (position, at) in SLOT_AT.into_iter().enumerate() {
        let mut bytes = [0; SLOT_BYTES];
        let chunk = reading::read_at(&file, at, &mut bytes)
            .map_err(|error| StorageError::io("read", &path, error))?;
        if let Some(block) = chunk.unreadable_at {
            written = true;
            problems.push(format!("slot {position} does not read (EIO at {block})"));
            continue;
        }
        let bytes = &bytes[..chunk.read];
        written |= bytes.iter().any(|byte| *byte != 0);
        slots[position] = decode(bytes);
        if slots[position].is_none() && bytes.iter().any(|byte| *byte != 0) {
            problems.push(format!("slot {position} is damaged"));
        }
    }
    let found = match slots.into_iter().flatten().max_by_key(|slot| slot.seq) {
        Some(slot) => Found::Mark(slot),
        None if written => Found::Unknown(format!("{}: {}", path.display(), problems.join("; "))),
        None => Found::Nothing,
    };
    if found != Found::Nothing && file.metadata().map_or(true, |meta| meta.len() < FILE_BYTES) {
        // Cut short (damage): whole blocks again, as at creation.
        file.set_len(FILE_BYTES)
            .and_then(|()| file.sync_all())
            .map_err(|error| StorageError::io("extend", &path, error))?;
    }
    Ok((writer()?, found))
}

/// `slot` encoded at the start of a block-aligned, block-long range of a
/// buffer (as an `O_DIRECT` write needs), zeros after it.
pub fn block(slot: Slot) -> (std::rc::Rc<Vec<u8>>, std::ops::Range<usize>) {
    let mut buffer = std::rc::Rc::new(Vec::new());
    let range = block_into(&mut buffer, slot);
    (buffer, range)
}

/// [`block`] into `buffer`, reused when nothing else holds it (the write
/// that last used it has completed), else replaced by a new one: a mark
/// per group commit allocates nothing in the steady state.
pub fn block_into(buffer: &mut std::rc::Rc<Vec<u8>>, slot: Slot) -> std::ops::Range<usize> {
    let bytes = match std::rc::Rc::get_mut(buffer) {
        Some(bytes) if bytes.len() == 2 * BLOCK_BYTES => bytes,
        _ => {
            *buffer = std::rc::Rc::new(vec![0; 2 * BLOCK_BYTES]);
            std::rc::Rc::get_mut(buffer).expect("just made")
        }
    };
    // The contents are only ever the slot's first bytes: the rest of the
    // block stays zero across reuses.
    let start = bytes.as_ptr().align_offset(BLOCK_BYTES);
    bytes[start..start + SLOT_BYTES].copy_from_slice(&encode(slot));
    start..start + BLOCK_BYTES
}

/// Writes `slot` to `file` and syncs it. Blocking: for opening a log and
/// for a reset, which block already.
pub fn store(file: &File, dir: &Path, slot: Slot) -> Result<(), StorageError> {
    let (buffer, range) = block(slot);
    file.write_all_at(&buffer[range], slot.offset())
        .and_then(|()| file.sync_data())
        .map_err(|error| StorageError::io("write", dir.join(FILE_NAME), error))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A slot survives encoding; any flipped bit is refused, never read as
    /// another mark.
    #[test]
    fn every_flipped_bit_is_refused() {
        let slot = Slot {
            seq: 41,
            index: LogIndex(123_456),
            term: Term(17),
        };
        let bytes = encode(slot);
        assert_eq!(decode(&bytes), Some(slot));
        for bit in 0..SLOT_BYTES * 8 {
            let mut flipped = bytes;
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(decode(&flipped), None, "bit {bit}");
        }
        assert_eq!(decode(&bytes[..SLOT_BYTES - 1]), None, "a short slot");
        assert_eq!(decode(&[0; SLOT_BYTES]), None, "a zero slot");
    }

    /// A block buffer is reused while nothing else holds it, and replaced
    /// (never written under a write still using it) while something does;
    /// either way it holds exactly the slot.
    #[test]
    fn block_buffers_are_reused_only_when_free() {
        let slot = |seq| Slot {
            seq,
            index: LogIndex(seq * 10),
            term: Term(seq),
        };
        let mut buffer = std::rc::Rc::new(Vec::new());
        let range = block_into(&mut buffer, slot(1));
        let first = buffer.as_ptr();
        assert_eq!(decode(&buffer[range.clone()]), Some(slot(1)));
        assert_eq!((buffer.as_ptr() as usize + range.start) % BLOCK_BYTES, 0);
        let range = block_into(&mut buffer, slot(2));
        assert_eq!(buffer.as_ptr(), first, "reused when free");
        assert_eq!(decode(&buffer[range.clone()]), Some(slot(2)));
        assert!(
            buffer[range.start + SLOT_BYTES..range.end]
                .iter()
                .all(|byte| *byte == 0)
        );
        let in_flight = std::rc::Rc::clone(&buffer);
        let held = range;
        let range = block_into(&mut buffer, slot(3));
        assert_ne!(buffer.as_ptr(), first, "a held buffer is not written");
        assert_eq!(decode(&in_flight[held]), Some(slot(2)));
        assert_eq!(decode(&buffer[range]), Some(slot(3)));
    }

    /// The newer valid slot wins; one damaged slot leaves the other; both
    /// damaged is unknown, both zero is nothing.
    #[test]
    fn the_newer_valid_slot_is_the_mark() {
        let dir = std::env::temp_dir().join(format!("rast-mark-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (file, found) = open(&dir).unwrap();
        assert_eq!(found, Found::Nothing);
        let older = Slot {
            seq: 1,
            index: LogIndex(10),
            term: Term(3),
        };
        let newer = Slot {
            seq: 2,
            index: LogIndex(7),
            term: Term(2),
        };
        store(&file, &dir, older).unwrap();
        store(&file, &dir, newer).unwrap();
        assert_eq!(
            open(&dir).unwrap().1,
            Found::Mark(newer),
            "newer, not higher"
        );
        // The newer slot damaged (a torn write): the older one is the mark.
        // (Damaged through a buffered handle: the store's is `O_DIRECT`.)
        let damage = OpenOptions::new()
            .write(true)
            .open(dir.join(FILE_NAME))
            .unwrap();
        damage.write_all_at(&[0xff], newer.offset() + 17).unwrap();
        assert_eq!(open(&dir).unwrap().1, Found::Mark(older));
        damage.write_all_at(&[0xff], older.offset() + 3).unwrap();
        assert!(matches!(open(&dir).unwrap().1, Found::Unknown(_)));
        damage.write_all_at(&[0; SLOT_BYTES], SLOT_AT[0]).unwrap();
        damage.write_all_at(&[0; SLOT_BYTES], SLOT_AT[1]).unwrap();
        assert_eq!(open(&dir).unwrap().1, Found::Nothing);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
