//! Read-only memory maps of log files.

use std::fs::File;
use std::io;

/// A read-only map of the first `len` bytes of a file.
///
/// The owner promises (see [`Mapping::new`]) not to shrink the file below
/// the mapped length while the map lives, so no access can fault; bytes
/// still being written may be read only once their write has completed.
#[derive(Debug)]
pub struct Mapping {
    map: Option<memmap2::Mmap>,
}

impl Mapping {
    /// Maps the first `len` bytes of `file` (nothing when `len` is zero).
    ///
    /// The file must stay at least `len` bytes long while the map lives
    /// (the log never shrinks a file: it punches holes, keeping the size),
    /// and no other process may write it (the log directory is locked).
    /// Bytes the kernel is writing concurrently must not be read until their
    /// write completes — the log only reads below its written mark.
    pub fn new(file: &File, len: u64) -> io::Result<Self> {
        if len == 0 {
            return Ok(Self { map: None });
        }
        let len = usize::try_from(len).map_err(|_| io::Error::other("file too large to map"))?;
        // SAFETY: the map is read-only and private to this process's log;
        // the caller keeps the file at least `len` bytes long (no SIGBUS)
        // and reads only bytes whose writes completed (no torn observation
        // that Rust's aliasing rules could mind: those bytes never change
        // while borrowed, because the log only appends past them).
        let map = unsafe { memmap2::MmapOptions::new().len(len).map(file)? };
        Ok(Self { map: Some(map) })
    }

    /// The mapped bytes.
    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    /// Drops this process's page-table entries for the mapped pages. The
    /// pages stay in the page cache, so the process's resident memory no
    /// longer counts them and the next access maps them back from the
    /// cache (a minor fault, no disk read while the cache holds them).
    pub fn release_resident(&self) {
        if let Some(map) = &self.map {
            // SAFETY: the map is shared and read-only (`MmapOptions::map`),
            // so MADV_DONTNEED only unmaps pages: the next access reads the
            // same file bytes back (for a private map it would zero them,
            // which this map never is). Bytes borrowed from the map keep
            // their value; the log never rewrites bytes it has handed out.
            // Advice only: a failure leaves the pages resident.
            let _ = unsafe { map.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) };
        }
    }

    /// Tells the kernel the mapped pages will be read in order once
    /// (recovery scans), so it reads ahead and drops them early.
    pub fn advise_sequential(&self) {
        if let Some(map) = &self.map {
            // Advice only: failure changes nothing but speed.
            let _ = map.advise(memmap2::Advice::Sequential);
        }
    }
}
