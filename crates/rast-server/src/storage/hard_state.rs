//! The hard state file: one `HardState` frame (schema), checksummed, kept
//! twice in the file, replaced atomically.
//!
//! ```text
//!  <dir>/hard-state        offset 0     the HardState frame
//!                          offset 4096  the same frame again (zeros between)
//!  <dir>/hard-state.tmp    the next version while it is being written
//! ```
//!
//! Why twice: the term and the vote cannot be rebuilt from anything else
//! (a node that forgot a vote could vote twice in a term), so one damaged
//! copy — a flipped bit, an unreadable sector — must not cost them. The
//! copies sit in different 4 KiB blocks; the first valid one is read. When
//! both are damaged (or the file does not read, or is gone under a log
//! that holds entries) the hard state is *lost*: the log opens with
//! `HardState::lost`, and the core rebuilds a safe term from every other
//! voter's before it acts on anything (`raft::Core`, "A lost hard state").
//! A file written before the mirror (one frame alone) still reads.
//!
//! Replacing: write `hard-state.tmp`, fsync it, rename it over
//! `hard-state`, fsync the directory. A crash leaves either the old or the
//! new file whole; a leftover `.tmp` is ignored and overwritten. The
//! checksum is CRC32C of the frame with the checksum field read as zero.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;

use crate::rast_capnp::hard_state;
use crate::storage::planted::{self, StorageBug};
use crate::storage::{HardState, StorageError};
use crate::types::{LogIndex, NodeId, Term};
use crate::wire::frame;

/// Name of the hard state file within a log directory.
pub const FILE_NAME: &str = "hard-state";
/// Name of the file a new hard state is written to before the rename.
pub const TEMP_NAME: &str = "hard-state.tmp";

/// Byte offset of the checksum within the root struct's data section.
const CHECKSUM_OFFSET: usize = 24;

/// Encodes `state` as a checksummed frame.
pub fn encode(state: HardState) -> Vec<u8> {
    let mut message = crate::wire::frame::builder(64);
    {
        let mut root = message.init_root::<hard_state::Builder<'_>>();
        root.set_term(state.term.get());
        root.set_vote(state.vote.get());
        root.set_commit(state.commit.get());
        root.set_damaged_in(state.damaged_in.get());
        if let Some((term, index)) = state.acked_end {
            root.set_acked_end_known(true);
            root.set_acked_end_term(term.get());
            root.set_acked_end_index(index.get());
        }
    }
    let mut bytes = frame::encode(&message);
    let at = checksum_at(&bytes).expect("our own builder lays out a hard state");
    let checksum = checksum_of(&bytes, at);
    bytes[at..at + 4].copy_from_slice(&checksum.to_le_bytes());
    let mut file = bytes.clone();
    file.resize(MIRROR_AT, 0);
    file.extend_from_slice(&bytes);
    file
}

/// Where the second copy of the frame starts in the file.
pub const MIRROR_AT: usize = 4096;

/// Decodes a hard-state file: its first copy, or the mirror when the
/// first is damaged (a file of one frame, written before the mirror,
/// reads as that frame). An error names what is wrong with each copy.
pub fn decode(bytes: &[u8]) -> Result<HardState, String> {
    let head = &bytes[..bytes.len().min(MIRROR_AT)];
    let first = decode_frame(&head[..frame_end(head).unwrap_or(head.len()).min(head.len())]);
    let reason = match first {
        Ok(state) => return Ok(state),
        Err(_) if bytes.len() <= MIRROR_AT => return first,
        Err(reason) => reason,
    };
    match decode_frame(&bytes[MIRROR_AT..]) {
        Ok(state) => {
            tracing::warn!(%reason, "the hard state's first copy is damaged: read from its mirror");
            Ok(state)
        }
        Err(mirror) => Err(format!("both copies damaged: {reason}; mirror: {mirror}")),
    }
}

/// Where the frame at the front of `bytes` claims to end.
fn frame_end(bytes: &[u8]) -> Option<usize> {
    match frame::frame_length(bytes) {
        Ok(frame::FrameLength::Complete { frame_bytes, .. }) => Some(frame_bytes),
        _ => None,
    }
}

/// Decodes and verifies one hard state frame (exactly one frame).
fn decode_frame(bytes: &[u8]) -> Result<HardState, String> {
    let frame_bytes = match frame::frame_length(bytes).map_err(|error| error.to_string())? {
        frame::FrameLength::Complete { frame_bytes, .. } => frame_bytes,
        frame::FrameLength::NeedHeader(_) => return Err("truncated frame header".into()),
    };
    if frame_bytes != bytes.len() {
        return Err(format!(
            "file holds {} bytes but the frame is {frame_bytes}",
            bytes.len()
        ));
    }
    let at = checksum_at(bytes)?;
    let stored = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("four bytes"));
    let computed = checksum_of(bytes, at);
    if stored != computed {
        return Err(format!(
            "checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
        ));
    }
    let message = frame::open(bytes).map_err(|error| error.to_string())?;
    let root: hard_state::Reader<'_> = message.get_root().map_err(|error| error.to_string())?;
    Ok(HardState {
        term: Term(root.get_term()),
        vote: NodeId(root.get_vote()),
        commit: LogIndex(root.get_commit()),
        damaged_in: Term(root.get_damaged_in()),
        acked_end: root.get_acked_end_known().then(|| {
            (
                Term(root.get_acked_end_term()),
                LogIndex(root.get_acked_end_index()),
            )
        }),
    })
}

/// Offset of the checksum field in a hard state frame, found through the
/// root pointer (a single-segment frame with a direct struct pointer).
fn checksum_at(bytes: &[u8]) -> Result<usize, String> {
    let (segment_start, segment_end) = frame::segment0(bytes).map_err(|error| error.to_string())?;
    let pointer = bytes
        .get(segment_start..segment_start + 8)
        .map(|raw| u64::from_le_bytes(raw.try_into().expect("eight bytes")))
        .ok_or("missing root pointer")?;
    if pointer & 3 != 0 || pointer == 0 {
        return Err("root is not a struct pointer".into());
    }
    let offset_words = i64::from((pointer as u32 as i32) >> 2);
    let data_words = ((pointer >> 32) & 0xffff) as usize;
    let start = segment_start as i64 + 8 + offset_words * 8;
    if start < (segment_start + 8) as i64 || data_words * 8 < CHECKSUM_OFFSET + 4 {
        return Err("root struct misplaced or too short".into());
    }
    let at = start as usize + CHECKSUM_OFFSET;
    if at + 4 > segment_end {
        return Err("root struct outside segment 0".into());
    }
    Ok(at)
}

/// CRC32C of the whole frame with the four checksum bytes read as zero.
fn checksum_of(bytes: &[u8], at: usize) -> u32 {
    let crc = crc32c::crc32c(&bytes[..at]);
    let crc = crc32c::crc32c_append(crc, &[0; 4]);
    crc32c::crc32c_append(crc, &bytes[at + 4..])
}

/// The most a hard-state file holds: two frames, the second at
/// [`MIRROR_AT`] (a frame is far below 4 KiB).
const FILE_BYTES_MAX: usize = 2 * MIRROR_AT;

/// At most one byte more than [`FILE_BYTES_MAX`] of the file at `path`: a
/// damaged file never sizes an allocation.
fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    File::open(path)?
        .take(FILE_BYTES_MAX as u64 + 1)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// What [`load`] found.
#[derive(Debug)]
pub enum Loaded {
    /// A valid copy.
    State(HardState),
    /// No file (a new log, or a file removed).
    Missing,
    /// Both copies damaged, or the file does not read (EIO): why.
    Lost(String),
}

/// Loads the hard state of the log in `dir`. Other read errors (no
/// permission, …) are errors: they say nothing about the file's bytes.
pub fn load(dir: &Path) -> Result<Loaded, StorageError> {
    let path = dir.join(FILE_NAME);
    let bytes = match read_bounded(&path) {
        Ok(bytes) if bytes.len() > FILE_BYTES_MAX => {
            return Ok(Loaded::Lost(format!(
                "{}: larger than any hard-state file ({FILE_BYTES_MAX} bytes)",
                path.display()
            )));
        }
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Loaded::Missing);
        }
        Err(error) if error.raw_os_error() == Some(nix::libc::EIO) => {
            return Ok(Loaded::Lost(format!("{}: {error}", path.display())));
        }
        Err(error) => return Err(StorageError::io("read", path, error)),
    };
    Ok(match decode(&bytes) {
        Ok(state) => Loaded::State(state),
        Err(reason) => Loaded::Lost(format!("{}: {reason}", path.display())),
    })
}

/// Replaces the hard state of the log in `dir` atomically and durably:
/// write temp, fsync, rename, fsync the directory. Blocking.
pub fn store(dir: &Path, state: HardState) -> Result<(), StorageError> {
    let temp = dir.join(TEMP_NAME);
    let path = dir.join(FILE_NAME);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temp)
        .map_err(|error| StorageError::io("create", &temp, error))?;
    file.write_all(&encode(state))
        .map_err(|error| StorageError::io("write", &temp, error))?;
    file.sync_all()
        .map_err(|error| StorageError::io("fsync", &temp, error))?;
    fs::rename(&temp, &path).map_err(|error| StorageError::io("rename", &path, error))?;
    if planted::is_planted(StorageBug::NoHardStateDirectorySync) {
        return Ok(());
    }
    sync_directory(dir)
}

/// Creates `dir` and any missing parent, each made durable in its own
/// parent (mkdir, then fsync of the parent), and fsyncs the parent of `dir`
/// even when `dir` was there already: an earlier life may have created it
/// and died before the sync, and a power cut would then take the
/// directory, and every file in it, away.
pub fn create_dir_durably(dir: &Path) -> std::io::Result<()> {
    let mut missing = Vec::new();
    let mut at = dir;
    while !at.exists() {
        missing.push(at);
        match at.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => at = parent,
            _ => break,
        }
    }
    for created in missing.iter().rev() {
        match fs::create_dir(created) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(error) => return Err(error),
        }
        sync_parent(created)?;
    }
    if missing.is_empty() {
        sync_parent(dir)?;
    }
    Ok(())
}

fn sync_parent(path: &Path) -> std::io::Result<()> {
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    File::open(parent)?.sync_all()
}

/// Fsyncs a directory, making renames, creations and unlinks in it durable.
pub fn sync_directory(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|directory| directory.sync_all())
        .map_err(|error| StorageError::io("fsync directory", dir, error))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hard state survives encoding, and any flipped bit is refused.
    #[test]
    fn round_trip_and_every_bit_flip_survives_or_is_refused() {
        let state = HardState {
            term: Term(7),
            vote: NodeId(3),
            commit: LogIndex(1234),
            damaged_in: Term(5),
            acked_end: Some((Term(4), LogIndex(1300))),
        };
        let bytes = encode(state);
        assert_eq!(decode(&bytes).unwrap(), state);
        let frame = bytes.len() - MIRROR_AT;
        // One damaged copy costs nothing: any bit of either copy flipped,
        // the file still reads as the same state (never as another).
        for bit in 0..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(decode(&flipped), Ok(state), "bit {bit} flipped");
        }
        // Both copies damaged: refused, never read as another state.
        for bit in 0..frame * 8 {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            flipped[MIRROR_AT + bit / 8] ^= 1 << (bit % 8);
            assert!(
                decode(&flipped).is_err(),
                "bit {bit} flipped in both copies"
            );
        }
        assert!(
            decode(&bytes[..bytes.len() - 1]).is_ok(),
            "a cut mirror leaves the first copy"
        );
        // A file of one frame, as written before the mirror, still reads;
        // any flipped bit there is refused.
        let single = &bytes[..frame];
        assert_eq!(decode(single), Ok(state));
        for bit in 0..frame * 8 {
            let mut flipped = single.to_vec();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(decode(&flipped).is_err(), "bit {bit} of a single frame");
        }
    }
}
