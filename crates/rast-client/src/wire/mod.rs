//! The one byte format: framing, lazy readers, in-place stamping, checksums.
//!
//! Every byte Rast exchanges or stores is a standard Cap'n Proto message in
//! stream framing (`schema/rast.capnp`). This layer is the only code that
//! looks at those bytes directly; everything above it sees typed views.
//!
//! * [`frame`]: the segment table, read before anything is buffered, so a
//!   hostile length is refused at once.
//! * [`batch`]: `EntryBatch` records — read lazily at fixed offsets found
//!   through the root pointer, stamped in place, checksummed.
//! * [`client`]: the handshake and the client protocol as Rust values, with
//!   encoders and decoders.
//!
//! Outside bytes never panic this layer: every malformed input is a
//! [`WireError`].

pub mod batch;
pub mod client;
pub mod frame;

pub use batch::{BatchKind, BatchMut, BatchView, encode_batch};
pub use frame::{FrameLength, frame_length, split_frame};

/// Everything that can be wrong with bytes from outside.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The bytes end before the frame does.
    #[error("truncated frame: have {have} bytes, need {need}")]
    Truncated {
        /// Bytes available.
        have: usize,
        /// Bytes needed (at least).
        need: usize,
    },
    /// The segment table declares more segments than allowed.
    #[error(
        "frame declares {segments} segments (limit {})",
        crate::limits::FRAME_SEGMENTS_MAX
    )]
    TooManySegments {
        /// Declared segment count.
        segments: usize,
    },
    /// The segment table declares a frame over the size limit.
    #[error("frame of {bytes} bytes exceeds the limit of {limit}")]
    FrameTooLarge {
        /// Declared frame size.
        bytes: u64,
        /// The limit.
        limit: usize,
    },
    /// The segment table declares no words at all.
    #[error("empty frame (zero words): a zero-filled or torn region")]
    EmptyFrame,
    /// The root pointer is not what a batch needs.
    #[error("bad root pointer: {0}")]
    BadRoot(&'static str),
    /// A batch claims more entries than allowed.
    #[error("batch of {count} entries exceeds the limit of {limit}")]
    TooManyEntries {
        /// Claimed count.
        count: u32,
        /// The limit.
        limit: u32,
    },
    /// One payload is over the size limit.
    #[error("entry of {bytes} bytes exceeds the limit of {limit}")]
    EntryTooLarge {
        /// Payload bytes.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// `count` disagrees with the payload list.
    #[error("batch count {count} but {entries} entries")]
    CountMismatch {
        /// The count field.
        count: u32,
        /// Entries in the list.
        entries: u32,
    },
    /// The stored checksum does not match the bytes.
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum {
        /// Stored value.
        stored: u32,
        /// Computed value.
        computed: u32,
    },
    /// A batch kind this version does not know.
    #[error("unknown batch kind {0}")]
    UnknownKind(u16),
    /// A buffer meant to hold one frame holds more.
    #[error("frame is {frame} bytes but the buffer holds {have}")]
    TrailingBytes {
        /// Frame length.
        frame: usize,
        /// Buffer length.
        have: usize,
    },
    /// A field or union member this message needs is missing or unknown.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The Cap'n Proto reader refused the message.
    #[error("cap'n proto: {0}")]
    Capnp(#[from] capnp::Error),
}

impl From<capnp::NotInSchema> for WireError {
    fn from(error: capnp::NotInSchema) -> Self {
        Self::Malformed(format!("value not in schema: {}", error.0))
    }
}
