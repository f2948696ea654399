//! The state machine's snapshot: one deterministic, checksummed byte stream.
//!
//! Equal states give byte-identical snapshots (keys and sessions in
//! ascending order, fixed-width little-endian integers), so two replicas'
//! snapshots at one index can be compared byte for byte. The stream is
//! written front to back with a running CRC32C and read the same way, so a
//! later snapshot transfer can send it in `SNAPSHOT_CHUNK_BYTES` chunks as
//! it is produced, and a receiver can check it as it arrives; its exact
//! length is known up front ([`super::StateMachine::snapshot_len`]) for
//! `SnapshotHeader.totalBytes`.
//!
//! ```text
//! offset  bytes  field
//!      0      8  magic "RASTKVS" + format version (1)
//!      8      8  applied index                      u64 LE
//!     16      8  log time, ms                       u64 LE
//!     24      8  key count                          u64 LE
//!     32      8  session count                      u64 LE
//!     40         key count × entry, ascending key:
//!                  key bytes u32 │ value bytes u32 │ key │ value
//!                session count × session, ascending client id:
//!                  client id u64 │ sequence u64 │ last active ms u64 │
//!                  response tag u8 │ (tag 3 only: value bytes u32 │ value)
//!    end-8    4  CRC32C of every byte before it
//!    end-4    4  end marker "KVS."
//! ```
//!
//! Response tags: 0 done, 1 cas applied, 2 cas mismatch (absent), 3 cas
//! mismatch (value follows), 4 cas mismatch (value not retained).
//!
//! Reading trusts nothing: every length is checked against its limit before
//! anything is allocated, order and counts are checked, and the checksum is
//! verified before the state is handed back. A reader never allocates by a
//! declared count, only by bytes that actually arrived.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::sync::Arc;

use crate::constants::{KEY_BYTES_MAX, SESSION_VALUE_BYTES_MAX, SESSIONS_MAX, VALUE_BYTES_MAX};
use crate::kv::session::{Session, Sessions};
use crate::kv::{Current, KvResponse};
use crate::types::LogIndex;

/// First eight bytes: name and format version.
pub const MAGIC: [u8; 8] = *b"RASTKVS\x01";
/// Last four bytes.
pub const END: [u8; 4] = *b"KVS.";
/// Bytes of the fixed header.
pub const HEADER_BYTES: u64 = 40;
/// Bytes of the trailer (checksum and end marker).
pub const TRAILER_BYTES: u64 = 8;

/// Why a snapshot could not be written or restored.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The reader or writer failed (or the stream ended early).
    #[error("snapshot io: {0}")]
    Io(#[from] io::Error),
    /// Not a key-value snapshot of a format this build reads.
    #[error("not a key-value snapshot (magic {0:02x?})")]
    BadMagic([u8; 8]),
    /// A field breaks the format's rules.
    #[error("corrupt snapshot: {0}")]
    Corrupt(String),
    /// The checksum does not match the bytes.
    #[error("snapshot checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum {
        /// Stored value.
        stored: u32,
        /// Computed value.
        computed: u32,
    },
    /// The snapshot is older than what the machine already applied
    /// (installing it would move applied backwards).
    #[error("snapshot at index {snapshot} is behind the applied index {applied}")]
    Behind {
        /// The snapshot's applied index.
        snapshot: LogIndex,
        /// The machine's.
        applied: LogIndex,
    },
    /// The machine stopped after a failed apply; its state is not trusted.
    #[error("the state machine stopped: {0}")]
    Failed(String),
}

/// The map: keys and values shared, so a snapshot can hold the state of
/// one index while the machine moves on (see `StateMachine::freeze`).
pub(crate) type Data = BTreeMap<Arc<[u8]>, Arc<[u8]>>;

/// The state a snapshot holds.
#[derive(Debug, Default)]
pub(crate) struct Image {
    pub applied_index: LogIndex,
    pub log_time_ms: u64,
    pub data: Data,
    pub sessions: Sessions,
}

/// Exact bytes of the snapshot of `image`.
pub(crate) fn encoded_len(data: &Data, sessions: &Sessions) -> u64 {
    let entries: u64 = data
        .iter()
        .map(|(key, value)| 8 + key.len() as u64 + value.len() as u64)
        .sum();
    let sessions: u64 = sessions
        .iter()
        .map(|(_, session)| {
            25 + match &session.response {
                KvResponse::CasMismatch(Current::Value(value)) => 4 + value.len() as u64,
                _ => 0,
            }
        })
        .sum();
    HEADER_BYTES + entries + sessions + TRAILER_BYTES
}

/// Writes the snapshot; returns the bytes written.
pub(crate) fn write<W: Write>(
    applied_index: LogIndex,
    log_time_ms: u64,
    data: &Data,
    sessions: &Sessions,
    writer: W,
) -> Result<u64, SnapshotError> {
    let mut out = CrcWriter::new(writer);
    out.put(&MAGIC)?;
    out.put(&applied_index.get().to_le_bytes())?;
    out.put(&log_time_ms.to_le_bytes())?;
    out.put(&(data.len() as u64).to_le_bytes())?;
    out.put(&(sessions.len() as u64).to_le_bytes())?;
    for (key, value) in data {
        out.put(&(key.len() as u32).to_le_bytes())?;
        out.put(&(value.len() as u32).to_le_bytes())?;
        out.put(key)?;
        out.put(value)?;
    }
    for (client_id, session) in sessions.iter() {
        out.put(&client_id.to_le_bytes())?;
        out.put(&session.sequence.to_le_bytes())?;
        out.put(&session.last_active_ms.to_le_bytes())?;
        let (tag, value): (u8, Option<&[u8]>) = match &session.response {
            KvResponse::Done => (0, None),
            KvResponse::CasApplied => (1, None),
            KvResponse::CasMismatch(Current::Absent) => (2, None),
            KvResponse::CasMismatch(Current::Value(value)) => (3, Some(value)),
            KvResponse::CasMismatch(Current::NotRetained) => (4, None),
            KvResponse::Refused(refusal) => {
                unreachable!("refusals are never recorded: {refusal}")
            }
        };
        out.put(&[tag])?;
        if let Some(value) = value {
            out.put(&(value.len() as u32).to_le_bytes())?;
            out.put(value)?;
        }
    }
    let crc = out.crc;
    out.put(&crc.to_le_bytes())?;
    out.put(&END)?;
    out.inner.flush()?;
    Ok(out.bytes)
}

/// Reads and checks a snapshot.
pub(crate) fn read<R: Read>(reader: R) -> Result<Image, SnapshotError> {
    let mut input = CrcReader::new(reader);
    let mut magic = [0u8; 8];
    input.take_exact(&mut magic)?;
    if magic != MAGIC {
        return Err(SnapshotError::BadMagic(magic));
    }
    let applied_index = LogIndex(input.u64()?);
    let log_time_ms = input.u64()?;
    let keys = input.u64()?;
    let session_count = input.u64()?;
    if session_count > SESSIONS_MAX as u64 {
        return Err(corrupt(format!(
            "{session_count} sessions (limit {SESSIONS_MAX})"
        )));
    }
    let mut data = BTreeMap::new();
    let mut previous_key: Option<Vec<u8>> = None;
    for _ in 0..keys {
        let key_bytes = input.u32()? as usize;
        let value_bytes = input.u32()? as usize;
        if key_bytes > KEY_BYTES_MAX || value_bytes > VALUE_BYTES_MAX {
            return Err(corrupt(format!(
                "entry of key {key_bytes} and value {value_bytes} bytes exceeds the limits"
            )));
        }
        let key = input.bytes(key_bytes)?;
        let value = input.bytes(value_bytes)?;
        if previous_key
            .as_ref()
            .is_some_and(|previous| *previous >= key)
        {
            return Err(corrupt("keys are not in strictly ascending order".into()));
        }
        let shared = Arc::from(key.as_slice());
        previous_key = Some(key);
        data.insert(shared, Arc::from(value));
    }
    let mut sessions = Sessions::default();
    let mut previous_client = 0u64;
    for _ in 0..session_count {
        let client_id = input.u64()?;
        let sequence = input.u64()?;
        let last_active_ms = input.u64()?;
        if client_id <= previous_client {
            return Err(corrupt(
                "client ids are not in strictly ascending order (or zero)".into(),
            ));
        }
        if sequence == 0 || last_active_ms > log_time_ms {
            return Err(corrupt(format!(
                "session {client_id}: sequence {sequence}, active at {last_active_ms} ms after log time {log_time_ms}"
            )));
        }
        previous_client = client_id;
        let response = read_response(&mut input)?;
        sessions.insert(
            client_id,
            Session {
                sequence,
                last_active_ms,
                response,
            },
        );
    }
    let computed = input.crc;
    let stored = input.u32()?;
    if stored != computed {
        return Err(SnapshotError::Checksum { stored, computed });
    }
    let mut end = [0u8; 4];
    input.take_exact(&mut end)?;
    if end != END {
        return Err(corrupt(format!("bad end marker {end:02x?}")));
    }
    Ok(Image {
        applied_index,
        log_time_ms,
        data,
        sessions,
    })
}

fn read_response<R: Read>(input: &mut CrcReader<R>) -> Result<KvResponse, SnapshotError> {
    let mut tag = [0u8; 1];
    input.take_exact(&mut tag)?;
    Ok(match tag[0] {
        0 => KvResponse::Done,
        1 => KvResponse::CasApplied,
        2 => KvResponse::CasMismatch(Current::Absent),
        3 => {
            let bytes = input.u32()? as usize;
            if bytes > SESSION_VALUE_BYTES_MAX {
                return Err(corrupt(format!(
                    "recorded value of {bytes} bytes (limit {SESSION_VALUE_BYTES_MAX})"
                )));
            }
            KvResponse::CasMismatch(Current::Value(input.bytes(bytes)?))
        }
        4 => KvResponse::CasMismatch(Current::NotRetained),
        other => return Err(corrupt(format!("unknown response tag {other}"))),
    })
}

fn corrupt(reason: String) -> SnapshotError {
    SnapshotError::Corrupt(reason)
}

/// A writer that keeps a CRC32C and a byte count of what passed through.
struct CrcWriter<W> {
    inner: W,
    crc: u32,
    bytes: u64,
}

impl<W: Write> CrcWriter<W> {
    const fn new(inner: W) -> Self {
        Self {
            inner,
            crc: 0,
            bytes: 0,
        }
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.inner.write_all(bytes)?;
        self.crc = crc32c::crc32c_append(self.crc, bytes);
        self.bytes += bytes.len() as u64;
        Ok(())
    }
}

/// A reader that keeps a CRC32C of what it read.
struct CrcReader<R> {
    inner: R,
    crc: u32,
}

impl<R: Read> CrcReader<R> {
    const fn new(inner: R) -> Self {
        Self { inner, crc: 0 }
    }

    fn take_exact(&mut self, buffer: &mut [u8]) -> io::Result<()> {
        self.inner.read_exact(buffer)?;
        self.crc = crc32c::crc32c_append(self.crc, buffer);
        Ok(())
    }

    fn u32(&mut self) -> io::Result<u32> {
        let mut raw = [0u8; 4];
        self.take_exact(&mut raw)?;
        Ok(u32::from_le_bytes(raw))
    }

    fn u64(&mut self) -> io::Result<u64> {
        let mut raw = [0u8; 8];
        self.take_exact(&mut raw)?;
        Ok(u64::from_le_bytes(raw))
    }

    /// `length` bytes (already checked against a limit), allocated as they
    /// arrive so a lying length costs no more than the bytes sent.
    fn bytes(&mut self, length: usize) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        let read = (&mut self.inner)
            .take(length as u64)
            .read_to_end(&mut out)?;
        if read != length {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("snapshot ends inside a {length}-byte field"),
            ));
        }
        self.crc = crc32c::crc32c_append(self.crc, &out);
        Ok(out)
    }
}
