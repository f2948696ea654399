//! Standard Cap'n Proto stream framing, checked before anything is buffered.
//!
//! ```text
//!  u32 LE          u32 LE × n                 pad to 8    n segments
//! ┌──────────────┬──────────────────────────┬──────────┬──────────────────┐
//! │ n - 1        │ size of each, in words   │ 0 or 4 B │ segment bytes    │
//! └──────────────┴──────────────────────────┴──────────┴──────────────────┘
//! ```
//!
//! [`frame_length`] reads only the segment table and says how long the whole
//! frame is, or how many more bytes it needs to know, refusing absurd counts
//! and sizes before a single payload byte is buffered.

use crate::limits::{
    FRAME_BYTES_MAX, FRAME_SEGMENTS_MAX, NESTING_DEPTH_MAX, TRAVERSAL_WORDS_MAX, WORD_BYTES,
};
use crate::wire::WireError;

/// What the bytes seen so far say about the frame at their start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameLength {
    /// The segment table is incomplete: at least this many bytes are needed
    /// (counted from the frame's start) to learn the frame's length.
    NeedHeader(usize),
    /// The frame is this many bytes long, segment table included.
    Complete {
        /// Total frame bytes.
        frame_bytes: usize,
        /// Bytes of the segment table (with padding): where segment 0 starts.
        table_bytes: usize,
        /// Number of segments.
        segments: usize,
    },
}

/// Bytes of the segment table of a frame with `segments` segments.
#[inline]
pub const fn table_bytes(segments: usize) -> usize {
    // 4 bytes for the count, 4 per segment, padded to a word.
    (4 + 4 * segments).div_ceil(WORD_BYTES) * WORD_BYTES
}

/// Reads the segment table at the start of `bytes`.
///
/// Never reads past `bytes`, never allocates, and refuses a frame over
/// [`FRAME_BYTES_MAX`] or with more than [`FRAME_SEGMENTS_MAX`] segments as
/// soon as the table says so.
pub fn frame_length(bytes: &[u8]) -> Result<FrameLength, WireError> {
    let Some(first) = read_u32(bytes, 0) else {
        return Ok(FrameLength::NeedHeader(4));
    };
    let segments = (first as usize).saturating_add(1);
    if segments > FRAME_SEGMENTS_MAX {
        return Err(WireError::TooManySegments { segments });
    }
    let table = table_bytes(segments);
    if bytes.len() < table {
        return Ok(FrameLength::NeedHeader(table));
    }
    let mut words: u64 = 0;
    for segment in 0..segments {
        let size = read_u32(bytes, 4 + 4 * segment).expect("table length checked above");
        words += u64::from(size);
    }
    let body = words.saturating_mul(WORD_BYTES as u64);
    let total = body.saturating_add(table as u64);
    if total > FRAME_BYTES_MAX as u64 {
        return Err(WireError::FrameTooLarge {
            bytes: total,
            limit: FRAME_BYTES_MAX,
        });
    }
    if words == 0 {
        return Err(WireError::EmptyFrame);
    }
    Ok(FrameLength::Complete {
        frame_bytes: total as usize,
        table_bytes: table,
        segments,
    })
}

/// A complete frame and the bytes after it.
pub type Split<'a> = (&'a [u8], &'a [u8]);

/// Splits the first complete frame off `bytes`: `Ok(None)` when more bytes
/// are needed.
pub fn split_frame(bytes: &[u8]) -> Result<Option<Split<'_>>, WireError> {
    match frame_length(bytes)? {
        FrameLength::NeedHeader(_) => Ok(None),
        FrameLength::Complete { frame_bytes, .. } if bytes.len() < frame_bytes => Ok(None),
        FrameLength::Complete { frame_bytes, .. } => Ok(Some(bytes.split_at(frame_bytes))),
    }
}

/// The byte range of segment 0 within a complete frame.
pub fn segment0(frame: &[u8]) -> Result<(usize, usize), WireError> {
    match frame_length(frame)? {
        FrameLength::Complete {
            frame_bytes,
            table_bytes,
            ..
        } if frame.len() >= frame_bytes => {
            let words = read_u32(frame, 4).expect("complete frame has a table") as usize;
            Ok((table_bytes, table_bytes + words * WORD_BYTES))
        }
        _ => Err(WireError::Truncated {
            have: frame.len(),
            need: frame.len() + 1,
        }),
    }
}

/// Reader options for every message Rast reads: bounded traversal and
/// nesting, whatever the sender claims.
pub fn reader_options() -> capnp::message::ReaderOptions {
    let mut options = capnp::message::ReaderOptions::new();
    options
        .traversal_limit_in_words(Some(TRAVERSAL_WORDS_MAX))
        .nesting_limit(NESTING_DEPTH_MAX);
    options
}

/// Opens a complete frame as a Cap'n Proto message without allocating.
pub fn open(
    frame: &[u8],
) -> Result<capnp::message::Reader<capnp::serialize::NoAllocSliceSegments<'_>>, WireError> {
    // Check our own limits first: the library's are looser.
    let mut rest = frame;
    if split_frame(frame)?.is_none() {
        return Err(WireError::Truncated {
            have: frame.len(),
            need: frame.len() + 1,
        });
    }
    Ok(capnp::serialize::read_message_from_flat_slice_no_alloc(
        &mut rest,
        reader_options(),
    )?)
}

/// A message builder whose first segment holds `words` words (at least
/// 8): sized to the message, so encoding one does not zero capnp's default
/// 8 KiB first segment (it showed as a tenth of the server's own CPU
/// profile when every response and peer header paid for it). A message
/// that outgrows it continues in further segments.
pub fn builder(words: usize) -> capnp::message::Builder<capnp::message::HeapAllocator> {
    let words = u32::try_from(words.max(8)).unwrap_or(u32::MAX);
    capnp::message::Builder::new(capnp::message::HeapAllocator::new().first_segment_words(words))
}

/// Serializes a built message into one frame (allocates: for builders, not
/// the hot path).
pub fn encode<A: capnp::message::Allocator>(message: &capnp::message::Builder<A>) -> Vec<u8> {
    capnp::serialize::write_message_to_words(message)
}

/// The little-endian u32 at `offset`, if the bytes reach that far.
#[inline]
pub(crate) fn read_u32(bytes: &[u8], offset: usize) -> Option<u32> {
    let raw = bytes.get(offset..offset.checked_add(4)?)?;
    Some(u32::from_le_bytes(raw.try_into().ok()?))
}

/// The little-endian u64 at `offset`, if the bytes reach that far.
#[inline]
pub(crate) fn read_u64(bytes: &[u8], offset: usize) -> Option<u64> {
    let raw = bytes.get(offset..offset.checked_add(8)?)?;
    Some(u64::from_le_bytes(raw.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table length rounds 4 + 4n up to whole words.
    #[test]
    fn table_bytes_pads_to_words() {
        assert_eq!(table_bytes(1), 8);
        assert_eq!(table_bytes(2), 16);
        assert_eq!(table_bytes(3), 16);
        assert_eq!(table_bytes(4), 24);
    }

    /// A partial table asks for more bytes instead of guessing.
    #[test]
    fn partial_table_needs_more() {
        assert_eq!(frame_length(&[]).unwrap(), FrameLength::NeedHeader(4));
        assert_eq!(
            frame_length(&[1, 0, 0, 0]).unwrap(),
            FrameLength::NeedHeader(16)
        );
    }

    /// Absurd segment counts and sizes are refused from the table alone.
    #[test]
    fn absurd_tables_are_refused() {
        let too_many = u32::try_from(FRAME_SEGMENTS_MAX).unwrap().to_le_bytes();
        assert!(matches!(
            frame_length(&too_many),
            Err(WireError::TooManySegments { .. })
        ));
        let mut huge = vec![0u8; 8];
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            frame_length(&huge),
            Err(WireError::FrameTooLarge { .. })
        ));
        assert!(matches!(
            frame_length(&[0u8; 8]),
            Err(WireError::EmptyFrame)
        ));
    }
}
