//! Reading stored files where a read error is damage, not a stop.
//!
//! A latent sector error makes `read` fail with `EIO` for the blocks it
//! covers, and only for those: the rest of the file reads. Recovery and the
//! scrubber read segment files with `pread` through these functions, never
//! through a memory map (where an unreadable page is a `SIGBUS` that ends
//! the process), and get back the bytes that read plus the offset of the
//! first block that did not:
//!
//! ```text
//!  file:    │ ok │ ok │ ok │EIO │ ok │ ok │     blocks of READ_BLOCK_BYTES
//!  result:  ├─────bytes─────┤
//!                           └ unreadable_at
//! ```
//!
//! What lies from `unreadable_at` on is unknown, so the caller treats it as
//! damage of the records there (cut, and repaired from a peer), exactly as
//! a record whose checksum fails. Writing over the blocks (recovery clears
//! a cut tail) is what lets a disk remap them. Other read errors are
//! returned as errors: they say nothing about particular bytes.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Bytes one `pread` asks for.
pub const READ_CHUNK_BYTES: usize = 1024 * 1024;

/// The unit an unreadable range is located to: the page cache's and most
/// disks' block.
pub const READ_BLOCK_BYTES: usize = 4096;

/// What [`read_at`] read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// Bytes read into the start of the buffer (fewer than asked only at
    /// the end of the file or at an unreadable block).
    pub read: usize,
    /// The offset of the first unreadable block, if the read stopped at one.
    pub unreadable_at: Option<u64>,
}

/// Reads into `buffer` from `offset` until it is full, the file ends, or a
/// block fails with `EIO` (located to its [`READ_BLOCK_BYTES`] block).
pub fn read_at(file: &File, offset: u64, buffer: &mut [u8]) -> io::Result<Chunk> {
    let mut done = 0;
    while done < buffer.len() {
        match file.read_at(&mut buffer[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(read) => done += read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) if error.raw_os_error() == Some(nix::libc::EIO) => {
                return locate_unreadable(file, offset, buffer, done);
            }
            Err(error) => return Err(error),
        }
    }
    Ok(Chunk {
        read: done,
        unreadable_at: None,
    })
}

/// After an `EIO` past `done` bytes: reads block by block to find the
/// first block that does not read.
fn locate_unreadable(
    file: &File,
    offset: u64,
    buffer: &mut [u8],
    mut done: usize,
) -> io::Result<Chunk> {
    // Start at the block holding the first byte not read yet.
    let block_start = |at: u64| at - at % READ_BLOCK_BYTES as u64;
    loop {
        let at = offset + done as u64;
        if done >= buffer.len() {
            return Ok(Chunk {
                read: done,
                unreadable_at: None,
            });
        }
        let block_end = (block_start(at) + READ_BLOCK_BYTES as u64 - offset) as usize;
        let end = block_end.min(buffer.len());
        match file.read_at(&mut buffer[done..end], at) {
            Ok(0) => {
                return Ok(Chunk {
                    read: done,
                    unreadable_at: None,
                });
            }
            Ok(read) => done += read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) if error.raw_os_error() == Some(nix::libc::EIO) => {
                return Ok(Chunk {
                    read: done,
                    unreadable_at: Some(at),
                });
            }
            Err(error) => return Err(error),
        }
    }
}

/// The first `len` bytes of `file` (fewer if it is shorter), stopping at
/// the first unreadable block, whose offset is returned with them.
pub fn read_whole(file: &File, len: u64) -> io::Result<(Vec<u8>, Option<u64>)> {
    let len = usize::try_from(len).map_err(|_| io::Error::other("file too large to read"))?;
    let mut bytes = vec![0u8; len];
    let mut done = 0;
    while done < len {
        let start = done;
        let end = (start + READ_CHUNK_BYTES).min(len);
        let chunk = read_at(file, start as u64, &mut bytes[start..end])?;
        done = start + chunk.read;
        if let Some(at) = chunk.unreadable_at {
            bytes.truncate(done);
            return Ok((bytes, Some(at)));
        }
        if done < end {
            break; // the file is shorter than `len`
        }
    }
    bytes.truncate(done);
    Ok((bytes, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_whole_file_in_chunks() {
        let dir = crate::storage::segment::tests::TempDir::new("reading");
        let path = dir.0.join("f");
        let data: Vec<u8> = (0..(READ_CHUNK_BYTES * 2 + 123))
            .map(|i| (i % 251) as u8)
            .collect();
        std::fs::write(&path, &data).expect("write");
        let file = File::open(&path).expect("open");
        let (bytes, unreadable) = read_whole(&file, data.len() as u64).expect("read");
        assert_eq!(unreadable, None);
        assert_eq!(bytes, data);
        // Asking for more than the file holds returns what it holds.
        let (bytes, _) = read_whole(&file, data.len() as u64 + 4096).expect("read");
        assert_eq!(bytes.len(), data.len());
    }
}
