//! Snapshot files: a state machine's snapshot beside its log, written so a
//! crash at any point leaves either the previous snapshot or the new one,
//! never a damaged file taken for valid.
//!
//! ```text
//!  write:  snapshot-<index>.tmp ── header (checksums zero) ── body ──
//!          header again with both checksums ── fsync ── rename to
//!          snapshot-<index>.snap ── fsync the directory ── drop older ones
//!  open:   delete *.tmp; newest .snap whose header and body checksums hold
//! ```
//!
//! File layout (integers little-endian):
//!
//! ```text
//! offset      bytes  field
//!      0          8  magic "RASTSNP2"
//!      8          8  last index covered
//!     16          8  its term
//!     24          8  configuration bytes M (at most MEMBERS_BYTES_MAX)
//!     32          M  the configuration as of that index: one framed
//!                    `Membership` message (schema/rast.capnp) with voters,
//!                    outgoing voters, learners and every member's address
//!   32+M          8  body bytes B
//!   40+M          4  CRC32C of the body
//!   44+M          4  CRC32C of every header byte before it
//!   48+M          B  body: the state machine's own snapshot stream
//!                    (empty for a plain log)
//! ```
//!
//! The configuration is in the file because the log entries that carried it
//! are dropped below the snapshot: a node restarted from the file (or one
//! that received it from a leader) learns who the members are and where to
//! reach them from here. The body is opaque here (the key-value machine's
//! stream, which has its own checksum too); checking its CRC before
//! trusting the header means a torn or bit-flipped file is skipped for an
//! older valid one, and the caller gets a clear error naming the file when
//! none is valid. The whole file, header included, is also what a leader
//! streams to a follower in InstallSnapshot chunks: the receiver verifies
//! it the same way before it replaces anything.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::constants::{MEMBERS_BYTES_MAX, SNAPSHOT_READ_BYTES, SNAPSHOTS_KEPT};
use crate::storage::hard_state::create_dir_durably;
use crate::types::{LogIndex, Term};
use crate::wire::client::{Members, decode_members, encode_members};

/// First eight bytes of a snapshot file.
pub const MAGIC: [u8; 8] = *b"RASTSNP2";

/// What a snapshot file says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// Last index covered.
    pub index: LogIndex,
    /// Its term.
    pub term: Term,
    /// The configuration as of `index`, with the members' addresses (at
    /// least one voter).
    pub members: Members,
    /// Bytes of the body.
    pub body_bytes: u64,
    /// CRC32C of the body.
    pub body_crc: u32,
}

impl SnapshotMeta {
    /// Bytes of the header of this snapshot's file (the body starts here).
    pub fn header_bytes(&self) -> u64 {
        48 + encode_members(&self.members).len() as u64
    }

    /// The header's bytes as written at the front of the file (public
    /// for the fuzzer's seeds).
    pub fn encode(&self) -> Vec<u8> {
        let members = encode_members(&self.members);
        let mut out = Vec::with_capacity(48 + members.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&self.index.get().to_le_bytes());
        out.extend_from_slice(&self.term.get().to_le_bytes());
        out.extend_from_slice(&(members.len() as u64).to_le_bytes());
        out.extend_from_slice(&members);
        out.extend_from_slice(&self.body_bytes.to_le_bytes());
        out.extend_from_slice(&self.body_crc.to_le_bytes());
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Reads a header from the front of `reader` (the file's first bytes);
    /// an error names what is wrong. Public for the fuzzer: the node
    /// reads headers through [`verify`] and [`latest`].
    pub fn decode<R: Read>(reader: &mut R) -> Result<Self, String> {
        let mut fixed = [0u8; 32];
        reader
            .read_exact(&mut fixed)
            .map_err(|error| format!("header: {error}"))?;
        if fixed[..8] != MAGIC {
            return Err(format!("not a snapshot file (magic {:02x?})", &fixed[..8]));
        }
        let word = |at: usize| u64::from_le_bytes(fixed[at..at + 8].try_into().expect("8 bytes"));
        let members_bytes = word(24);
        if members_bytes == 0 || members_bytes > MEMBERS_BYTES_MAX {
            return Err(format!(
                "a configuration of {members_bytes} bytes (1 to {MEMBERS_BYTES_MAX})"
            ));
        }
        let mut rest = vec![0u8; members_bytes as usize + 16];
        reader
            .read_exact(&mut rest)
            .map_err(|error| format!("header: {error}"))?;
        let mut header = fixed.to_vec();
        header.extend_from_slice(&rest[..rest.len() - 4]);
        let stored = u32::from_le_bytes(rest[rest.len() - 4..].try_into().expect("4 bytes"));
        let computed = crc32c::crc32c(&header);
        if stored != computed {
            return Err(format!(
                "header checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
            ));
        }
        let (members, tail) = rest.split_at(members_bytes as usize);
        let members = decode_members(members).map_err(|error| format!("configuration: {error}"))?;
        if members.voters.is_empty() {
            return Err("a configuration without voters".into());
        }
        Ok(Self {
            index: LogIndex(word(8)),
            term: Term(word(16)),
            members,
            body_bytes: u64::from_le_bytes(tail[..8].try_into().expect("8 bytes")),
            body_crc: u32::from_le_bytes(tail[8..12].try_into().expect("4 bytes")),
        })
    }
}

/// Why a snapshot file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotFileError {
    /// An IO call failed.
    #[error("{operation} {path}: {source}")]
    Io {
        /// What was being done.
        operation: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A snapshot file is damaged.
    #[error("snapshot file {path} is damaged: {reason}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

fn io_error(operation: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SnapshotFileError {
    let path = path.to_path_buf();
    move |source| SnapshotFileError::Io {
        operation,
        path,
        source,
    }
}

/// The final name of the snapshot up to `index`.
pub fn file_name(index: LogIndex) -> String {
    format!("snapshot-{:020}.snap", index.get())
}

/// Writes a snapshot into `dir` atomically: `body` writes the body into the
/// writer it is given and returns the bytes written. Returns the file's
/// meta and path once the file and its name are durable; then removes
/// older snapshot files beyond [`SNAPSHOTS_KEPT`].
pub fn write(
    dir: &Path,
    index: LogIndex,
    term: Term,
    members: Members,
    body: impl FnOnce(&mut dyn Write) -> io::Result<u64>,
) -> Result<(SnapshotMeta, PathBuf), SnapshotFileError> {
    create_dir_durably(dir).map_err(io_error("create directory", dir))?;
    let temporary = dir.join(format!("snapshot-{:020}.tmp", index.get()));
    let path = dir.join(file_name(index));
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temporary)
        .map_err(io_error("create", &temporary))?;
    let mut meta = SnapshotMeta {
        index,
        term,
        members,
        body_bytes: 0,
        body_crc: 0,
    };
    let mut writer = CrcWriter {
        inner: BufWriter::with_capacity(SNAPSHOT_READ_BYTES, file),
        crc: 0,
        bytes: 0,
    };
    writer
        .inner
        .write_all(&meta.encode())
        .map_err(io_error("write", &temporary))?;
    let written = body(&mut writer).map_err(io_error("write", &temporary))?;
    debug_assert_eq!(written, writer.bytes);
    meta.body_bytes = writer.bytes;
    meta.body_crc = writer.crc;
    let mut file = writer
        .inner
        .into_inner()
        .map_err(io::IntoInnerError::into_error)
        .map_err(io_error("write", &temporary))?;
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.write_all(&meta.encode()))
        .map_err(io_error("write", &temporary))?;
    file.sync_all().map_err(io_error("fsync", &temporary))?;
    drop(file);
    fs::rename(&temporary, &path).map_err(io_error("rename", &temporary))?;
    File::open(dir)
        .and_then(|directory| directory.sync_all())
        .map_err(io_error("fsync directory", dir))?;
    prune(dir, SNAPSHOTS_KEPT);
    Ok((meta, path))
}

/// The newest valid snapshot in `dir` (header and body checksums verified),
/// after deleting leftover temporary files. Damaged files are skipped with
/// a warning; `Ok(None)` when there is no valid one (or no directory).
pub fn latest(dir: &Path) -> Result<Option<(SnapshotMeta, PathBuf)>, SnapshotFileError> {
    newest_valid(dir).map(|(found, _)| found)
}

/// [`latest`], and how many damaged files newer than the valid one it
/// deleted: a file that fails its checks, or does not read (EIO), is of
/// no use, and left in place a restart would skip it again and the
/// scrubber point at it again. Other read errors (no such file, too many
/// open files) leave the file where it is.
pub fn newest_valid(
    dir: &Path,
) -> Result<(Option<(SnapshotMeta, PathBuf)>, u64), SnapshotFileError> {
    let mut files = match list(dir) {
        Ok(files) => files,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok((None, 0)),
        Err(error) => return Err(io_error("list", dir)(error)),
    };
    files.sort_by_key(|(index, _)| std::cmp::Reverse(*index));
    let mut damaged = 0;
    for (_, path) in files {
        match verify(&path) {
            Ok(meta) => return Ok((Some((meta, path)), damaged)),
            Err(error) => {
                let useless = match &error {
                    SnapshotFileError::Damaged { .. } => true,
                    SnapshotFileError::Io { source, .. } => {
                        source.raw_os_error() == Some(nix::libc::EIO)
                    }
                };
                if !useless {
                    tracing::warn!(%error, "skipping a snapshot that could not be read");
                    continue;
                }
                tracing::warn!(%error, "removing a damaged snapshot");
                damaged += 1;
                if let Err(error) = fs::remove_file(&path) {
                    tracing::warn!(path = %path.display(), %error, "removing a damaged snapshot");
                }
            }
        }
    }
    Ok((None, damaged))
}

/// Reads `path`'s header and checks its body against the header's CRC.
pub fn verify(path: &Path) -> Result<SnapshotMeta, SnapshotFileError> {
    let file = File::open(path).map_err(io_error("open", path))?;
    let damaged = |reason: String| SnapshotFileError::Damaged {
        path: path.to_path_buf(),
        reason,
    };
    let mut reader = BufReader::with_capacity(SNAPSHOT_READ_BYTES, file);
    let meta = SnapshotMeta::decode(&mut reader).map_err(damaged)?;
    let mut crc = 0u32;
    let mut remaining = meta.body_bytes;
    let mut buffer = vec![0u8; SNAPSHOT_READ_BYTES];
    while remaining > 0 {
        let want = remaining.min(SNAPSHOT_READ_BYTES as u64) as usize;
        reader
            .read_exact(&mut buffer[..want])
            .map_err(|error| damaged(format!("body: {error}")))?;
        crc = crc32c::crc32c_append(crc, &buffer[..want]);
        remaining -= want as u64;
    }
    if crc != meta.body_crc {
        return Err(damaged(format!(
            "body checksum mismatch: stored {:#010x}, computed {crc:#010x}",
            meta.body_crc
        )));
    }
    let mut extra = [0u8; 1];
    if reader.read(&mut extra).map_err(io_error("read", path))? > 0 {
        return Err(damaged("bytes after the body".into()));
    }
    Ok(meta)
}

/// A reader of `path`'s body (after `verify`), buffered.
pub fn body_reader(
    path: &Path,
    meta: &SnapshotMeta,
) -> Result<impl Read + use<>, SnapshotFileError> {
    let mut file = File::open(path).map_err(io_error("open", path))?;
    file.seek(SeekFrom::Start(meta.header_bytes()))
        .map_err(io_error("seek", path))?;
    Ok(BufReader::with_capacity(SNAPSHOT_READ_BYTES, file).take(meta.body_bytes))
}

/// Where a snapshot up to `index` received from a leader is written while
/// it arrives (a name [`latest`] neither lists nor removes, so a snapshot
/// this node writes meanwhile cannot disturb it).
pub fn receive_path(dir: &Path, index: LogIndex) -> PathBuf {
    dir.join(format!("snapshot-{:020}.recv", index.get()))
}

/// Removes partial received snapshots left by a crash or an abandoned
/// stream (best effort).
pub fn remove_partials(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path
            .extension()
            .is_some_and(|extension| extension == "recv")
            && let Err(error) = fs::remove_file(&path)
        {
            tracing::warn!(path = %path.display(), %error, "removing a partial snapshot");
        }
    }
}

/// Makes a received snapshot file at `received` (complete and synced) the
/// snapshot of `dir`: checks it as [`latest`] would, then renames it and
/// syncs the directory. Returns its meta and final path.
pub fn adopt(dir: &Path, received: &Path) -> Result<(SnapshotMeta, PathBuf), SnapshotFileError> {
    let meta = verify(received)?;
    let path = dir.join(file_name(meta.index));
    fs::rename(received, &path).map_err(io_error("rename", received))?;
    File::open(dir)
        .and_then(|directory| directory.sync_all())
        .map_err(io_error("fsync directory", dir))?;
    prune(dir, SNAPSHOTS_KEPT);
    Ok((meta, path))
}

/// The index of the snapshot file named `name` (`snapshot-<index>.snap`);
/// `None` for any other name (temporary files included).
pub fn file_index(name: &str) -> Option<u64> {
    name.strip_prefix("snapshot-")?
        .strip_suffix(".snap")?
        .parse()
        .ok()
}

/// The snapshot files of `dir` by index, as they are now (nothing removed;
/// none when it cannot be read): for readers beside the store (the
/// scrubber, the fault harness).
pub fn files(dir: &Path) -> Vec<(u64, PathBuf)> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<(u64, PathBuf)> = entries
        .flatten()
        .filter_map(|entry| Some((file_index(entry.file_name().to_str()?)?, entry.path())))
        .collect();
    files.sort();
    files
}

/// Snapshot files in `dir` by index; temporary files are removed.
fn list(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|name| name.to_str()) else {
            continue;
        };
        let Some(rest) = name.strip_prefix("snapshot-") else {
            continue;
        };
        if rest.strip_suffix(".tmp").is_some() {
            if let Err(error) = fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), %error, "removing a leftover snapshot");
            }
        } else if let Some(index) = file_index(name) {
            files.push((index, path));
        }
    }
    Ok(files)
}

/// Removes all but the `keep` newest snapshot files (best effort: an old
/// file left behind costs disk space, never correctness).
fn prune(dir: &Path, keep: usize) {
    let Ok(mut files) = list(dir) else {
        return;
    };
    files.sort_by_key(|(index, _)| std::cmp::Reverse(*index));
    for (_, path) in files.into_iter().skip(keep) {
        if let Err(error) = fs::remove_file(&path) {
            tracing::warn!(path = %path.display(), %error, "removing an old snapshot");
        }
    }
}

/// A writer that keeps a CRC32C and a byte count of what passed through.
struct CrcWriter<W> {
    inner: W,
    crc: u32,
    bytes: u64,
}

impl<W: Write> Write for CrcWriter<W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(bytes)?;
        self.crc = crc32c::crc32c_append(self.crc, &bytes[..written]);
        self.bytes += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::segment::tests::TempDir;

    fn membership() -> Members {
        Members {
            voters: vec![1, 2, 3],
            voters_outgoing: Vec::new(),
            learners: vec![4],
            addresses: (1..=4)
                .map(|id| (id, format!("127.0.0.1:700{id}")))
                .collect(),
        }
    }

    fn write_body(dir: &Path, index: u64, body: &[u8]) -> PathBuf {
        write(dir, LogIndex(index), Term(2), membership(), |out| {
            out.write_all(body)?;
            Ok(body.len() as u64)
        })
        .expect("write")
        .1
    }

    /// A written snapshot reads back with its meta and body; only the two
    /// newest files stay.
    #[test]
    fn write_then_latest_round_trips_and_prunes() {
        let dir = TempDir::new("snapshot-file");
        for index in [5, 9, 12] {
            write_body(dir.0.as_path(), index, &vec![index as u8; 100_000]);
        }
        let (meta, path) = latest(dir.0.as_path()).expect("list").expect("one");
        assert_eq!(meta.index, LogIndex(12));
        assert_eq!(meta.term, Term(2));
        assert_eq!(meta.members, membership());
        let mut body = Vec::new();
        body_reader(&path, &meta)
            .expect("open")
            .read_to_end(&mut body)
            .expect("read");
        assert_eq!(body, vec![12u8; 100_000]);
        assert_eq!(list(dir.0.as_path()).expect("list").len(), SNAPSHOTS_KEPT);
    }

    /// A damaged newest file (any flipped byte, or a torn end) is skipped
    /// for the older valid one; leftover temporary files are removed.
    #[test]
    fn damaged_files_are_skipped() {
        let dir = TempDir::new("snapshot-file");
        write_body(dir.0.as_path(), 3, b"older");
        let newest = write_body(dir.0.as_path(), 7, b"newest body");
        let good = fs::read(&newest).expect("read");
        fs::write(
            dir.0.as_path().join("snapshot-00000000000000000009.tmp"),
            b"junk",
        )
        .expect("tmp");
        for position in 0..good.len() {
            let mut bad = good.clone();
            bad[position] ^= 0x10;
            fs::write(&newest, &bad).expect("damage");
            let (meta, _) = latest(dir.0.as_path()).expect("list").expect("older");
            assert_eq!(meta.index, LogIndex(3), "byte {position}");
        }
        fs::write(&newest, &good[..good.len() - 3]).expect("tear");
        assert!(matches!(
            verify(&newest),
            Err(SnapshotFileError::Damaged { .. })
        ));
        let (found, removed) = newest_valid(dir.0.as_path()).expect("list");
        assert_eq!(found.expect("older").0.index, LogIndex(3));
        assert_eq!(removed, 1, "the damaged newest file is counted");
        assert!(
            !newest.exists(),
            "and removed: a restart would skip it again"
        );
        assert!(
            !dir.0
                .as_path()
                .join("snapshot-00000000000000000009.tmp")
                .exists()
        );
    }

    /// No directory, or no snapshot in it: none.
    #[test]
    fn no_snapshot_is_none() {
        let dir = TempDir::new("snapshot-file");
        assert!(
            latest(&dir.0.as_path().join("absent"))
                .expect("ok")
                .is_none()
        );
        assert!(latest(dir.0.as_path()).expect("ok").is_none());
    }
}
