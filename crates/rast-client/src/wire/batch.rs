//! Entry batches: lazy reading, in-place stamping, checksums.
//!
//! An `EntryBatch` frame as our builder lays it out (other libraries may put
//! the root struct elsewhere in segment 0; [`BatchView::parse`] follows the
//! root pointer, it never assumes):
//!
//! ```text
//! frame offset
//!   0  ┌ segment table: u32 0 (one segment), u32 words ─────────────────┐
//!   8  ├ root pointer: struct, offset 0, data 4 words, pointers 1 ──────┤
//!  16  ├ data word 0: term         ◄─ stamped in place by the leader    │
//!  24  ├ data word 1: firstIndex   ◄─ stamped in place by the leader    │
//!  32  ├ data word 2: count u32 │ checksum u32                          │
//!  40  ├ data word 3: kind u16 │ padding u16 │ stampCheck u32 ◄─ stamped │
//!  48  ├ pointer: entries List(Data)                                    │
//!  56  └ list of pointers, then the payload bytes, word aligned ────────┘
//! ```
//!
//! The checksum is CRC32C over the whole frame with the 16 bytes of term and
//! firstIndex, the 4 bytes of the checksum and the 4 of stampCheck read as
//! zero. Stamping term and index therefore leaves it valid (a client's
//! checksum survives the leader's stamp), and every other byte — the segment
//! table, the pointers, the count, the payloads — is covered. The stamp is
//! covered by its own CRC32C, `stampCheck`, written with it: together a torn
//! write or a flipped bit anywhere is caught. A zero `stampCheck` means
//! absent (unstamped, or written before the field existed) and is accepted.

use crate::limits::{BATCH_DATA_PREFIX_BYTES, BATCH_ENTRIES_MAX, ENTRY_BYTES_MAX, WORD_BYTES};
use crate::rast_capnp::entry_batch;
use crate::types::{LogIndex, Term};
use crate::wire::WireError;
use crate::wire::frame::{self, FrameLength, read_u32, read_u64};

/// The kinds of batch, as stored in `EntryBatch.kind`.
pub use crate::rast_capnp::entry_batch::Kind as BatchKind;

/// A borrowed, lazily read `EntryBatch` frame.
///
/// Parsing reads the segment table and the root pointer and nothing else:
/// no allocation, no decode of the payloads. The accessors read fixed offsets.
#[derive(Clone, Copy, Debug)]
pub struct BatchView<'a> {
    frame: &'a [u8],
    /// Offset of the root struct's data section within `frame`.
    data_offset: usize,
    /// Words in the data section (at least 3).
    data_words: usize,
}

impl<'a> BatchView<'a> {
    /// Parses the frame at the start of `bytes` (which may run on past it).
    ///
    /// Checks the framing, the root pointer and the fixed data prefix; it does
    /// not verify the checksum nor walk the payloads (see [`Self::validate`]).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, WireError> {
        let (frame_bytes, table_bytes) = match frame::frame_length(bytes)? {
            FrameLength::NeedHeader(need) => {
                return Err(WireError::Truncated {
                    have: bytes.len(),
                    need,
                });
            }
            FrameLength::Complete {
                frame_bytes,
                table_bytes,
                ..
            } => (frame_bytes, table_bytes),
        };
        if bytes.len() < frame_bytes {
            return Err(WireError::Truncated {
                have: bytes.len(),
                need: frame_bytes,
            });
        }
        let frame = &bytes[..frame_bytes];
        let segment_words = read_u32(frame, 4).expect("complete frame has a table") as usize;
        let segment_end = table_bytes + segment_words * WORD_BYTES;
        let pointer = read_u64(frame, table_bytes).ok_or(WireError::BadRoot("missing"))?;
        let (data_offset, data_words, pointer_words) =
            struct_pointer_target(pointer, table_bytes, segment_end)?;
        if data_words * WORD_BYTES < BATCH_DATA_PREFIX_BYTES {
            return Err(WireError::BadRoot(
                "data section shorter than term, index, count, checksum",
            ));
        }
        if pointer_words < 1 {
            return Err(WireError::BadRoot("no entries pointer"));
        }
        let view = Self {
            frame,
            data_offset,
            data_words,
        };
        if view.count() > BATCH_ENTRIES_MAX {
            return Err(WireError::TooManyEntries {
                count: view.count(),
                limit: BATCH_ENTRIES_MAX,
            });
        }
        Ok(view)
    }

    /// The whole frame.
    #[inline]
    pub fn bytes(&self) -> &'a [u8] {
        self.frame
    }

    /// Frame length in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.frame.len()
    }

    /// Never true: a parsed frame holds at least a table and a root pointer.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.frame.is_empty()
    }

    /// Term of the entries (zero until stamped).
    #[inline]
    pub fn term(&self) -> Term {
        Term(self.word(0))
    }

    /// Index of the first entry (zero until stamped).
    #[inline]
    pub fn first_index(&self) -> LogIndex {
        LogIndex(self.word(1))
    }

    /// Index of the last entry; `first_index - 1` for an empty batch.
    #[inline]
    pub fn last_index(&self) -> LogIndex {
        // Saturating: a batch from outside is checked against
        // `INDEX_MAX` only after it is read.
        LogIndex(
            self.word(1)
                .saturating_add(u64::from(self.count()))
                .saturating_sub(1),
        )
    }

    /// Number of entries.
    #[inline]
    pub fn count(&self) -> u32 {
        read_u32(self.frame, self.data_offset + 16).expect("data prefix checked at parse")
    }

    /// The stored checksum.
    #[inline]
    pub fn checksum(&self) -> u32 {
        read_u32(self.frame, self.data_offset + 20).expect("data prefix checked at parse")
    }

    /// The batch kind; an unknown value (a newer writer) is an error.
    pub fn kind(&self) -> Result<BatchKind, WireError> {
        if self.data_words < 4 {
            return Ok(BatchKind::Data);
        }
        let raw = u16::from_le_bytes(
            self.frame[self.data_offset + 24..self.data_offset + 26]
                .try_into()
                .expect("two bytes"),
        );
        BatchKind::try_from(raw).map_err(|_| WireError::UnknownKind(raw))
    }

    /// Offset of the data section within the frame: where term (and 8 bytes
    /// later firstIndex) are stamped.
    #[inline]
    pub fn data_offset(&self) -> usize {
        self.data_offset
    }

    /// CRC32C of the frame with the stamped fields and the checksum as zero.
    pub fn compute_checksum(&self) -> u32 {
        checksum_of(self.frame, self.data_offset, self.data_words)
    }

    /// The stored `stampCheck` (0: absent).
    #[inline]
    pub fn stamp_check(&self) -> u32 {
        if self.data_words < 4 {
            return 0;
        }
        read_u32(self.frame, self.data_offset + STAMP_CHECK_OFFSET).expect("data word 3 present")
    }

    /// Checks the stored checksum against the bytes, and the stamped term
    /// and first index against `stampCheck` when it is present.
    pub fn verify_checksum(&self) -> Result<(), WireError> {
        let computed = self.compute_checksum();
        if computed != self.checksum() {
            return Err(WireError::Checksum {
                stored: self.checksum(),
                computed,
            });
        }
        let stored = self.stamp_check();
        if stored != 0 {
            let computed = stamp_check(self.term(), self.first_index());
            if computed != stored {
                return Err(WireError::Checksum { stored, computed });
            }
        }
        Ok(())
    }

    /// Walks the payloads without allocating: every pointer in bounds, the
    /// list length equal to `count`, each payload within the size limit, the
    /// kind known. Done once at the edge (a client's append) and on reads.
    pub fn validate(&self) -> Result<(), WireError> {
        self.kind()?;
        let mut count = 0u32;
        self.for_each_entry(|entry| {
            if entry.len() > ENTRY_BYTES_MAX {
                return Err(WireError::EntryTooLarge {
                    bytes: entry.len(),
                    limit: ENTRY_BYTES_MAX,
                });
            }
            count += 1;
            Ok(())
        })?;
        if count != self.count() {
            return Err(WireError::CountMismatch {
                count: self.count(),
                entries: count,
            });
        }
        Ok(())
    }

    /// Calls `visit` with each payload in order, reading through a no-alloc
    /// Cap'n Proto reader over the borrowed frame.
    pub fn for_each_entry(
        &self,
        mut visit: impl FnMut(&'a [u8]) -> Result<(), WireError>,
    ) -> Result<(), WireError> {
        let message = frame::open(self.frame)?;
        let root: entry_batch::Reader<'_> = message.get_root()?;
        let entries = root.get_entries()?;
        for index in 0..entries.len() {
            let entry: &[u8] = entries.get(index)?;
            // SAFETY-free lifetime extension: the reader borrows `self.frame`,
            // which lives for 'a; recover the subslice by address.
            visit(self.subslice(entry)?)?;
        }
        Ok(())
    }

    /// Maps a slice the reader handed out back onto `self.frame` with the
    /// frame's lifetime (the reader never copies; it points into the frame).
    fn subslice(&self, inner: &[u8]) -> Result<&'a [u8], WireError> {
        let base = self.frame.as_ptr() as usize;
        let start = (inner.as_ptr() as usize).wrapping_sub(base);
        if inner.is_empty() {
            return Ok(&[]);
        }
        self.frame
            .get(start..start + inner.len())
            .ok_or(WireError::BadRoot("payload outside the frame"))
    }

    #[inline]
    fn word(&self, word: usize) -> u64 {
        read_u64(self.frame, self.data_offset + word * WORD_BYTES)
            .expect("data prefix checked at parse")
    }
}

/// Decodes a root struct pointer, returning (data offset, data words,
/// pointer words) within the frame, checked against segment 0's bounds.
fn struct_pointer_target(
    pointer: u64,
    segment_start: usize,
    segment_end: usize,
) -> Result<(usize, usize, usize), WireError> {
    if pointer == 0 {
        return Err(WireError::BadRoot("null root pointer"));
    }
    if pointer & 3 != 0 {
        return Err(WireError::BadRoot("root is not a direct struct pointer"));
    }
    // Bits 2..32: signed offset in words from the end of the pointer.
    let offset_words = i64::from((pointer as u32 as i32) >> 2);
    let data_words = ((pointer >> 32) & 0xffff) as usize;
    let pointer_words = (pointer >> 48) as usize;
    let start = (segment_start as i64 + WORD_BYTES as i64) + offset_words * WORD_BYTES as i64;
    let end = start + ((data_words + pointer_words) * WORD_BYTES) as i64;
    if start < (segment_start + WORD_BYTES) as i64 || end > segment_end as i64 {
        return Err(WireError::BadRoot("root struct outside segment 0"));
    }
    Ok((start as usize, data_words, pointer_words))
}

/// Offset of `stampCheck` in the data section (the hole after `kind`).
const STAMP_CHECK_OFFSET: usize = 28;

/// The `stampCheck` of a batch stamped with `term` and `first_index`: CRC32C
/// of their 16 little-endian bytes, 1 where that is 0 (0 means absent).
pub fn stamp_check(term: Term, first_index: LogIndex) -> u32 {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&term.get().to_le_bytes());
    bytes[8..].copy_from_slice(&first_index.get().to_le_bytes());
    crc32c::crc32c(&bytes).max(1)
}

/// CRC32C of `frame` with the data prefix at `data_offset` read with term,
/// firstIndex and checksum as zero (count kept), and `stampCheck` as zero
/// when the data section (`data_words` long) holds it. Bytes that were
/// never written are zero anyway, so frames stored before `stampCheck`
/// existed keep their checksum.
pub fn checksum_of(frame: &[u8], data_offset: usize, data_words: usize) -> u32 {
    const ZEROS: [u8; 16] = [0; 16];
    let mut crc = crc32c::crc32c(&frame[..data_offset]);
    crc = crc32c::crc32c_append(crc, &ZEROS);
    crc = crc32c::crc32c_append(crc, &frame[data_offset + 16..data_offset + 20]);
    crc = crc32c::crc32c_append(crc, &ZEROS[..4]);
    let stamp_check = data_offset + STAMP_CHECK_OFFSET;
    if data_words >= 4 {
        crc = crc32c::crc32c_append(
            crc,
            &frame[data_offset + BATCH_DATA_PREFIX_BYTES..stamp_check],
        );
        crc = crc32c::crc32c_append(crc, &ZEROS[..4]);
        crc32c::crc32c_append(crc, &frame[stamp_check + 4..])
    } else {
        crc32c::crc32c_append(crc, &frame[data_offset + BATCH_DATA_PREFIX_BYTES..])
    }
}

/// A mutable `EntryBatch` frame the leader stamps in place.
#[derive(Debug)]
pub struct BatchMut<'a> {
    frame: &'a mut [u8],
    data_offset: usize,
    data_words: usize,
}

impl<'a> BatchMut<'a> {
    /// Parses `frame` (exactly one frame) for stamping.
    pub fn parse(frame: &'a mut [u8]) -> Result<Self, WireError> {
        let view = BatchView::parse(frame)?;
        let (data_offset, data_words, length) = (view.data_offset, view.data_words, view.len());
        if length != frame.len() {
            return Err(WireError::TrailingBytes {
                frame: length,
                have: frame.len(),
            });
        }
        Ok(Self {
            frame,
            data_offset,
            data_words,
        })
    }

    /// Writes `term` and `first_index` at their fixed data-section offsets,
    /// and their `stampCheck` when the data section has room for it. The
    /// checksum stays valid: it reads those bytes as zero.
    pub fn stamp(&mut self, term: Term, first_index: LogIndex) {
        let offset = self.data_offset;
        self.frame[offset..offset + 8].copy_from_slice(&term.get().to_le_bytes());
        self.frame[offset + 8..offset + 16].copy_from_slice(&first_index.get().to_le_bytes());
        if self.data_words >= 4 {
            let at = offset + STAMP_CHECK_OFFSET;
            self.frame[at..at + 4].copy_from_slice(&stamp_check(term, first_index).to_le_bytes());
        }
    }

    /// Computes the checksum and stores it (for a client that left it zero).
    pub fn seal(&mut self) {
        let checksum = checksum_of(self.frame, self.data_offset, self.data_words);
        self.frame[self.data_offset + 20..self.data_offset + 24]
            .copy_from_slice(&checksum.to_le_bytes());
    }

    /// A read-only view of the stamped frame.
    pub fn view(&self) -> BatchView<'_> {
        BatchView {
            frame: self.frame,
            data_offset: self.data_offset,
            data_words: self.data_words,
        }
    }
}

/// Encodes a sealed batch of `entries` (allocates; for clients and tests).
pub fn encode_batch<P: AsRef<[u8]>>(
    kind: BatchKind,
    term: Term,
    first_index: LogIndex,
    entries: &[P],
) -> Vec<u8> {
    // Root pointer, data section, one pointer, then a list pointer and the
    // data words of each entry: one segment of exactly that size.
    let words = 8
        + entries.len()
        + entries
            .iter()
            .map(|entry| entry.as_ref().len().div_ceil(8))
            .sum::<usize>();
    let mut message = frame::builder(words);
    {
        let mut root = message.init_root::<entry_batch::Builder<'_>>();
        root.set_term(term.get());
        root.set_first_index(first_index.get());
        root.set_count(entries.len() as u32);
        root.set_kind(kind);
        let mut list = root.init_entries(entries.len() as u32);
        for (position, entry) in entries.iter().enumerate() {
            list.set(position as u32, entry.as_ref());
        }
    }
    let mut frame = frame::encode(&message);
    let mut batch = BatchMut::parse(&mut frame).expect("our own builder produces a valid batch");
    batch.seal();
    if term != Term::ZERO || first_index != LogIndex::ZERO {
        batch.stamp(term, first_index);
    }
    frame
}
