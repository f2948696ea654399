//! The limits of the wire protocol: what a reader of outside bytes (a
//! node or a client) accepts. The server's `constants` re-exports them
//! beside its own limits, where `const` assertions tie the two together.

/// Bytes in a Cap'n Proto word: the unit of segment sizes and alignment.
pub const WORD_BYTES: usize = 8;

/// Largest framed message accepted from any socket or file, in bytes.
///
/// Large enough for a batch of W3's 1 MiB entries (and a few), small enough
/// that a hostile length prefix cannot make a node buffer more than this
/// before refusing the frame.
pub const FRAME_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Largest log index, and largest term, accepted from outside (a peer, a
/// client, a file): 2^62, beyond any real log, and far enough from
/// `u64::MAX` that the arithmetic on indexes (the next one, the last of a
/// batch) can never overflow. A larger value is refused as malformed.
pub const INDEX_MAX: u64 = 1 << 62;

/// Largest number of segments in one framed message.
///
/// Our own builders produce one segment; other libraries may produce a few
/// for large messages. The segment table is read before any allocation, so
/// this bounds the work done for a hostile table.
pub const FRAME_SEGMENTS_MAX: usize = 64;

/// Largest single entry payload, in bytes.
pub const ENTRY_BYTES_MAX: usize = 8 * 1024 * 1024;

/// Largest number of entries in one batch.
///
/// Bounds the per-batch bookkeeping of a follower that reads a batch's list
/// of payloads, and keeps the apply of one batch short.
pub const BATCH_ENTRIES_MAX: u32 = 65_536;

/// Largest number of nodes in one list of a membership or a status
/// (voters, outgoing voters, learners, addresses, peers).
///
/// A cluster has a handful of nodes; the bound keeps a hostile list of
/// zero-sized elements (millions of them fit under the traversal limit)
/// from costing a reader millions of allocations.
pub const MEMBERS_LIST_MAX: u32 = 64;

/// Pointer-nesting depth accepted when a message is read.
///
/// Our messages nest at most four deep (`ClientResponse` → `Error` →
/// `KvValue` → `Data`); anything deeper is a nesting bomb.
pub const NESTING_DEPTH_MAX: i32 = 16;

/// Words a reader may traverse in one message: a small multiple of the
/// largest frame, so pointer-aliasing amplification attacks are bounded.
pub const TRAVERSAL_WORDS_MAX: usize = 4 * FRAME_BYTES_MAX / WORD_BYTES;

/// Bytes of the fixed data-section prefix of an `EntryBatch`
/// (term, firstIndex, count, checksum); see schema evolution rule 2.
pub const BATCH_DATA_PREFIX_BYTES: usize = 24;
