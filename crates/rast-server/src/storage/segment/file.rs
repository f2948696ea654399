//! One segment file: its index of batch starts (dense, or sparse once
//! sealed and written), reads through its map, and where unwritten bytes
//! are; see the module docs of `segment`.

use std::cell::OnceCell;
use std::fs::File;
use std::path::PathBuf;
use std::rc::Rc;

use bytes::Bytes;

use super::{INDEX_STRIDE_BYTES, SegmentLog};
use crate::io::Mapping;
use crate::storage::record::{self, RecordMeta};
use crate::storage::{FileSpan, ReadRange, StorageError, unix_now_ms};
use crate::types::{LogIndex, Term};

/// One batch in a segment's index.
#[derive(Clone, Copy, Debug)]
pub(super) struct BatchEntry {
    /// Byte offset of the frame in the file.
    pub(super) offset: u32,
    /// First index minus the segment's first index.
    pub(super) delta: u32,
}

/// One segment file.
#[derive(Debug)]
pub(super) struct Segment {
    /// Increases with every segment this store creates or opens.
    pub(super) id: u64,
    pub(super) first: LogIndex,
    /// Last index stored (`first - 1` when empty).
    pub(super) last: LogIndex,
    /// False while the file has its temp name (see `create_segment`).
    pub(super) named: bool,
    pub(super) path: PathBuf,
    pub(super) file: Rc<File>,
    /// File size (preallocated).
    pub(super) file_bytes: u64,
    /// Offset past the last record, queued ones included.
    pub(super) end: u64,
    /// Every byte below this offset is in the file (writes completed).
    pub(super) written: u64,
    /// Batch starts: every batch from `dense_from` on, and before it
    /// (bytes all in the file) possibly only one per stride (module docs).
    pub(super) batches: Vec<BatchEntry>,
    /// Position in `batches` from which every batch has an entry.
    pub(super) dense_from: usize,
    /// Made on the first read of written bytes.
    pub(super) map: OnceCell<Mapping>,
    /// Unix-epoch ms of the last append into it (the file's mtime for a
    /// segment recovered and not appended to since).
    pub(super) modified_ms: u64,
}

impl Segment {
    /// A new, empty segment whose first entry will be `first`, in `file`
    /// (preallocated to `file_bytes`) at `path`; `named` once `path` is its
    /// real name rather than a temporary one.
    pub(super) fn empty(
        id: u64,
        first: LogIndex,
        named: bool,
        path: PathBuf,
        file: Rc<File>,
        file_bytes: u64,
    ) -> Self {
        Self {
            id,
            first,
            last: first.prev(),
            named,
            path,
            file,
            file_bytes,
            end: 0,
            written: 0,
            batches: Vec::new(),
            dense_from: 0,
            map: OnceCell::new(),
            modified_ms: unix_now_ms(),
        }
    }

    /// The batch holding `index` (which the segment must hold).
    pub(super) fn position(&self, index: LogIndex) -> usize {
        let delta = index.get() - self.first.get();
        self.batches
            .partition_point(|batch| u64::from(batch.delta) <= delta)
            - 1
    }

    pub(super) fn batch_end(&self, position: usize) -> u64 {
        self.batches
            .get(position + 1)
            .map_or(self.end, |next| u64::from(next.offset))
    }

    pub(super) fn batch_last(&self, position: usize) -> LogIndex {
        self.batches.get(position + 1).map_or(self.last, |next| {
            LogIndex(self.first.get() + u64::from(next.delta) - 1)
        })
    }

    pub(super) fn batch_first(&self, position: usize) -> LogIndex {
        LogIndex(self.first.get() + u64::from(self.batches[position].delta))
    }

    /// Keeps one index entry per stride of the file (all of it written):
    /// see "Index" in the module docs.
    pub(super) fn make_sparse(&mut self) {
        debug_assert_eq!(self.written, self.end, "sparse only where written");
        if self.dense_from == self.batches.len() {
            return;
        }
        let mut stride = u64::MAX;
        self.batches.retain(|entry| {
            let this = u64::from(entry.offset) / INDEX_STRIDE_BYTES;
            let first_in_stride = this != stride;
            stride = this;
            first_in_stride
        });
        self.batches.shrink_to_fit();
        self.dense_from = self.batches.len();
    }

    /// Where the sparse part of the index ends: the offset of the first
    /// densely indexed batch (or the end).
    pub(super) fn sparse_end(&self) -> u64 {
        self.batches
            .get(self.dense_from)
            .map_or(self.end, |entry| u64::from(entry.offset))
    }

    /// Walks the written records from the index entry at `position` (in
    /// the sparse part), verifying each, and calls `visit` with each
    /// record's metadata until it returns false or the sparse part ends.
    pub(super) fn walk(
        &self,
        position: usize,
        visit: impl FnMut(&RecordMeta) -> bool,
    ) -> Result<(), StorageError> {
        let offset = u64::from(self.batches[position].offset);
        self.walk_range(offset, self.sparse_end(), self.batch_first(position), visit)
    }

    /// Walks the written records in `offset..end` of the file, the first
    /// of them starting at index `next`, verifying each (see `walk`).
    pub(super) fn walk_range(
        &self,
        mut offset: u64,
        end: u64,
        mut next: LogIndex,
        mut visit: impl FnMut(&RecordMeta) -> bool,
    ) -> Result<(), StorageError> {
        let mapping = self.mapping()?;
        let bytes = mapping.bytes();
        let mut result = Ok(());
        while offset < end {
            let meta = match record::check(
                &bytes[offset as usize..end as usize],
                offset,
                next,
                Term::ZERO,
            ) {
                Ok(meta) => meta,
                Err(fault) => {
                    result = Err(StorageError::Corrupt {
                        path: self.path.clone(),
                        offset,
                        reason: format!("on read: {fault:?}"),
                    });
                    break;
                }
            };
            if !visit(&meta) {
                break;
            }
            offset += u64::from(meta.bytes);
            next = meta.last.next();
        }
        // Every byte walked was read (the checksum covers it): a page that
        // did not read poisoned the map, and its zeros are not the log's.
        if let Some(offset) = mapping.poisoned() {
            return Err(StorageError::Unreadable {
                path: self.path.clone(),
                offset,
            });
        }
        result
    }

    /// The offset of the batch that starts at `index` (held here), if one
    /// does.
    pub(super) fn batch_offset(&self, index: LogIndex) -> Result<Option<u64>, StorageError> {
        let position = self.position(index);
        if position >= self.dense_from {
            return Ok((self.batch_first(position) == index)
                .then(|| u64::from(self.batches[position].offset)));
        }
        let mut found = None;
        self.walk(position, |meta| {
            if meta.first == index {
                found = Some(meta.offset);
            }
            meta.last < index
        })?;
        Ok(found)
    }

    pub(super) fn mapping(&self) -> Result<&Mapping, StorageError> {
        if self.map.get().is_none() {
            let map = Mapping::new(&self.file, self.file_bytes)
                .map_err(|error| StorageError::io("mmap", &self.path, error))?;
            let _ = self.map.set(map);
        }
        Ok(self.map.get().expect("just set"))
    }
}

/// Where bytes of a segment are (see `SegmentLog::source`).
pub(super) enum Source<'a> {
    /// In the file, up to `limit`.
    File { limit: u64 },
    /// In a shared piece whose first byte is at offset `start`; the log's
    /// bytes in it end at `end`.
    Piece {
        piece: &'a Bytes,
        start: u64,
        end: u64,
    },
    /// Copied into the staging buffer, whose first byte is at `start`.
    Copy { bytes: &'a [u8], start: u64 },
}

impl Source<'_> {
    /// The offset this source reaches to.
    pub(super) fn limit(&self) -> u64 {
        match self {
            Source::File { limit } => *limit,
            Source::Piece { end, .. } => *end,
            Source::Copy { bytes, start } => start + bytes.len() as u64,
        }
    }
}

impl SegmentLog {
    /// `read` in the sparse part of a segment's index: walks the records
    /// from the entry at `position` to the batch holding `from`, then takes
    /// whole batches up to `max_bytes` (at least one) or the sparse part's
    /// end. Every record walked is verified.
    pub(super) fn read_sparse<'a>(
        &'a self,
        segment: &'a Segment,
        position: usize,
        from: LogIndex,
        max_bytes: usize,
    ) -> Result<ReadRange<'a>, StorageError> {
        let mut range: Option<(u64, u64, LogIndex, LogIndex)> = None;
        segment.walk(position, |meta| {
            let end = meta.offset + u64::from(meta.bytes);
            match &mut range {
                None if meta.last < from => true,
                None => {
                    range = Some((meta.offset, end, meta.first, meta.last));
                    true
                }
                Some((start, range_end, _, last)) => {
                    if end - *start > max_bytes as u64 {
                        return false;
                    }
                    *range_end = end;
                    *last = meta.last;
                    true
                }
            }
        })?;
        let (start, end, first, last) = range.ok_or_else(|| StorageError::Corrupt {
            path: segment.path.clone(),
            offset: u64::from(segment.batches[position].offset),
            reason: format!("on read: no record holds index {from} where the index puts it"),
        })?;
        // Count every page walked, not only those returned.
        self.note_mapped_read(end - u64::from(segment.batches[position].offset));
        Ok(ReadRange {
            first,
            last,
            bytes: &segment.mapping()?.bytes()[start as usize..end as usize],
            file: Some(FileSpan {
                file: &segment.file,
                offset: start,
            }),
            shared: None,
        })
    }

    /// Where the bytes at `offset` of `segment` are, and how far that
    /// source reaches.
    pub(super) fn source(&self, segment: &Segment, offset: u64) -> Source<'_> {
        if offset < segment.written {
            return Source::File {
                limit: segment.written,
            };
        }
        if segment.id == self.active().id && !self.staging.is_empty() {
            let copy_start = segment.end - self.staging.copy.len() as u64;
            if offset >= copy_start {
                return Source::Copy {
                    bytes: &self.staging.copy,
                    start: copy_start,
                };
            }
            let start = copy_start - self.staging.pieces.bytes();
            if offset >= start {
                let (piece, at) = self.staging.pieces.holding(offset - start);
                return Source::Piece {
                    piece,
                    start: start + at,
                    end: start + at + piece.len() as u64,
                };
            }
        }
        let chunk = self
            .chunks
            .iter()
            .find(|chunk| {
                chunk.segment == segment.id
                    && chunk.offset <= offset
                    && offset < chunk.end()
                    && chunk.cut_at.is_none_or(|cut| offset < cut)
            })
            .expect("unwritten bytes are queued");
        if chunk.pieces.is_empty() {
            // Spliced: already in the file.
            return Source::File { limit: chunk.end() };
        }
        let (piece, at) = chunk.pieces.holding(offset - chunk.offset);
        let start = chunk.offset + at;
        Source::Piece {
            piece,
            start,
            // Not past a truncation's cut: those bytes are not the log's.
            end: chunk.cut_at.map_or(start + piece.len() as u64, |cut| {
                cut.min(start + piece.len() as u64)
            }),
        }
    }
}
