//! Every limit in one place, with the reasoning beside it.
//!
//! A limit that is not written here does not exist, and a queue without a
//! limit is a bug. Related limits are tied together by `const` assertions so
//! that changing one without the other fails to compile.

// The wire protocol's limits live with the protocol (the client crate, so
// an application reads bytes under the same bounds) and are re-exported
// here, beside the limits they are tied to.
pub use rast_client::limits::{
    BATCH_DATA_PREFIX_BYTES, BATCH_ENTRIES_MAX, ENTRY_BYTES_MAX, FRAME_BYTES_MAX,
    FRAME_SEGMENTS_MAX, INDEX_MAX, MEMBERS_LIST_MAX, NESTING_DEPTH_MAX, TRAVERSAL_WORDS_MAX,
    WORD_BYTES,
};

/// Largest number of AppendEntries messages in flight to one follower.
///
/// With 256 KiB messages this allows ~16 MiB unacknowledged per peer, which
/// covers the bandwidth-delay product of any local network many times over.
pub const INFLIGHT_MESSAGES_MAX: usize = 64;

/// Largest number of batch bytes in flight to one follower.
pub const INFLIGHT_BYTES_MAX: u64 = 32 * 1024 * 1024;

/// Largest number of batch bytes in one AppendEntries message.
pub const APPEND_MESSAGE_BYTES_MAX: u64 = 1024 * 1024;

/// Largest number of batches in one AppendEntries message.
pub const APPEND_MESSAGE_BATCHES_MAX: usize = 1024;

/// Largest size of one log segment file, in bytes.
///
/// Segments are the unit of compaction (a prefix is dropped by deleting whole
/// segments) and of recovery scanning (only the last one may hold a torn
/// tail). 64 MiB keeps both cheap.
pub const SEGMENT_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// Bytes a log reads through its segment maps (replication, client reads)
/// before it unmaps their pages from the process (they stay in the page
/// cache): bounds the file-backed part of a node's resident memory per log.
pub const MAPPED_READ_BYTES_RELEASE: u64 = 32 * 1024 * 1024;

/// Smallest log segment a store may be configured with (tests use small
/// segments to exercise rolling and a full disk quickly).
pub const SEGMENT_BYTES_MIN: u64 = 64 * 1024;

/// Bytes a log store may hold for writing: appended frames staged, queued
/// or in flight, not yet in the file (held as the shared memory they
/// arrived in, or copied in by `append(&[u8])`). Appends beyond it are
/// refused with back-pressure until writes complete.
///
/// It bounds the memory appends pin: a process appending 4 GiB holds at
/// most this much of it, and the largest frame must fit, twice over so a
/// full frame can be queued while the previous one is in flight.
pub const WRITE_QUEUE_BYTES_MAX: usize = 2 * FRAME_BYTES_MAX;

/// Bytes of a store's write budget that `storage::LogStorage::writable_bytes` (rast-server)
/// keeps back from what it offers to clients' and peers' batches: room for
/// the appends a node makes on its own, which nothing can refuse once the
/// core has decided them (a new leader's no-op, a configuration entry).
/// Without it a follower whose buffers were full of a leader's batches
/// could be elected and fail its log on its first append.
pub const WRITE_HEADROOM_BYTES: usize = 64 * 1024;

/// Submission queue entries of an io_uring. One log's turn needs at most a
/// write and a sync per file (two files while rolling) plus a four-entry
/// hard-state chain; the rest is for the network on the same core.
pub const RING_ENTRIES: u32 = 256;

/// Largest number of proposals a group accepts while no entry is committed
/// (back-pressure towards clients).
pub const PROPOSALS_PENDING_MAX: usize = 16_384;

/// Largest number of ReadIndex requests waiting for one heartbeat round.
pub const READS_PENDING_MAX: usize = 16_384;

/// Largest number of actions one call into the Raft core can emit.
///
/// Each input emits at most a few actions per peer (up to
/// [`APPENDS_PER_PEER_PER_CALL_MAX`] appends and a heartbeat or response),
/// the messages held while the hard state was not durable, and a few local
/// actions (hard state, truncate, append, apply, read, role change), so this
/// bounds the output buffer the runtime preallocates.
pub const ACTIONS_PER_STEP_MAX: usize = 6 * NODES_MAX + 8;

/// Largest number of logs (Raft groups) one core opens. Logs are created on
/// first use by a client or a peer; each costs a preallocated segment file
/// and a little memory, so a bound keeps a buggy or hostile client from
/// exhausting the disk with names.
pub const GROUPS_PER_CORE_MAX: usize = 1024;

/// Largest number of clients following one log (`tail`): each costs a
/// little memory and a read of the log at every commit, so a client that
/// opens tails without end cannot make every commit slower without bound.
pub const TAILS_PER_LOG_MAX: usize = 1024;

/// Largest number of tails one connection keeps on one log: a program
/// follows a log once; more are a bug or an attack on the bound above.
pub const TAILS_PER_CONNECTION_MAX: usize = 16;

const _: () = assert!(TAILS_PER_CONNECTION_MAX <= TAILS_PER_LOG_MAX);

/// Longest log name, in bytes (names are `[A-Za-z0-9._-]`).
pub const LOG_NAME_BYTES_MAX: usize = 128;

/// Largest number of voters plus learners in one group.
pub const NODES_MAX: usize = 9;

/// Largest lag, in entries, of a learner the leader promotes to voter.
///
/// A voter that is far behind cannot help commit until it has caught up,
/// so promoting it early would leave the new configuration one voter short
/// for as long as the catch-up takes (and a single other failure would stop
/// commits). Within this lag the learner is in steady replication: the
/// window of in-flight appends covers the rest in a round trip or two.
pub const PROMOTE_LAG_ENTRIES_MAX: u64 = 4_096;

/// Committed batches ready before the core's log coalesces them into runs
/// (each pass also waits for as many as the uncommitted records it moves):
/// memory per batch then falls from one 32-byte record to a share of one
/// per run.
pub const COALESCE_READY_MIN: usize = 256;

/// Largest key of the key-value state machine, in bytes.
pub const KEY_BYTES_MAX: usize = 4 * 1024;

/// Largest value of the key-value state machine, in bytes.
pub const VALUE_BYTES_MAX: usize = 1024 * 1024;

/// Client sessions the key-value state machine keeps (Raft thesis §6.3).
///
/// One per client process that wrote recently. A session costs about
/// 100 bytes plus a recorded cas value of at most
/// [`SESSION_VALUE_BYTES_MAX`], so the table stays under 20 MiB. When a new
/// session would exceed the bound, the least recently active one is evicted
/// (deterministically: by log time, then client id), and that client's next
/// request is refused as expired rather than risk applying a retry twice.
pub const SESSIONS_MAX: usize = 16_384;

/// Log time (ms) after which an idle session expires.
///
/// Exactly-once holds for a retry that arrives within this much *log time*
/// (the leaders' stamps, see `KvCommand.timeMs`) of its session's last
/// applied request. Clients retry for seconds (the client library's deadline
/// is 15 s); an hour covers a long partition or a leader outage as well,
/// while idle sessions do not pile up. Expiry is decided by the log alone,
/// so every replica expires a session at the same entry.
pub const SESSION_EXPIRY_MS: u64 = 60 * 60 * 1000;

/// Largest current value a session records with a failed cas, in bytes.
///
/// A retried cas that failed is answered from the record; a larger current
/// value is recorded as "not retained" (the retry still learns that the cas
/// failed and whether the key existed). Bounds the session table's memory.
pub const SESSION_VALUE_BYTES_MAX: usize = 1024;

/// Milliseconds per tick of a Maelstrom node (`rast-maelstrom`).
///
/// Maelstrom's network is in-process and fast; a short tick keeps elections
/// and ReadIndex rounds quick without flooding the JSON pipes.
pub const MAELSTROM_TICK_MS: u64 = 10;

/// Election timeout base of a Maelstrom node, in ms (the wait is drawn from
/// `[base, 2 * base)`).
pub const MAELSTROM_ELECTION_MS: u64 = 300;

/// Heartbeat interval of a Maelstrom node, in ms.
pub const MAELSTROM_HEARTBEAT_MS: u64 = 50;

/// How long a Maelstrom node waits for the leader to answer a request it
/// forwarded, or for its own proposal to commit, before telling the client
/// the outcome is unknown (Maelstrom error 0, indefinite).
pub const MAELSTROM_REQUEST_TIMEOUT_MS: u64 = 2_000;

/// Bytes of one InstallSnapshot chunk. A receiver holds at most
/// `SNAPSHOT_CHUNKS_INFLIGHT_MAX` of them at once, whatever the snapshot size.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;

/// InstallSnapshot chunks in flight to one follower.
pub const SNAPSHOT_CHUNKS_INFLIGHT_MAX: usize = 4;

/// Ticks without hearing from a leader before a follower starts a (pre-)vote;
/// the actual timeout is drawn from `[ELECTION_TICKS, 2 * ELECTION_TICKS)`.
pub const ELECTION_TICKS: u32 = 10;

/// Ticks between a leader's heartbeats.
pub const HEARTBEAT_TICKS: u32 = 1;

/// Election timeouts in a row at which a waiting damaged node found no
/// voter electable before it says a majority lost its entries (`raft::Core`,
/// "A majority lost entries"): one round could rest on a word from before a
/// change it has not heard of.
pub const LOST_ROUNDS: u32 = 3;

/// How long what a voter said counts for a waiting damaged node, in
/// election timeouts: a campaigning voter asks again within two (timers are
/// randomized below twice the timeout), a waiting one says it again within
/// two. One that stopped — down or cut off, or leading now, elected by
/// votes this node did not hear asked for, when logs may have changed —
/// soon no longer counts.
pub const HEARD_FOR_TIMEOUTS: u64 = 3;

/// Milliseconds per tick in the server.
pub const TICK_MS: u64 = 50;

/// Largest number of AppendEntries messages the leader sends to one peer in
/// one call into the core.
///
/// An acknowledgement normally frees room for one message, and `replicate`
/// sends a batch of proposals as one message unless it exceeds the message
/// limits; two lets a window that shrank (a lost message, a probe turned
/// replicate) grow back, while the output of one call stays bounded by
/// [`ACTIONS_PER_STEP_MAX`]. Proposals beyond two full messages wait for
/// the next `replicate`, tick or acknowledgement.
pub const APPENDS_PER_PEER_PER_CALL_MAX: usize = 2;

/// Largest number of outgoing messages the core holds back while its term or
/// vote is not yet durable (they leave when `hard_state_persisted` reports it).
///
/// A candidate holds one vote request per peer, a follower one response per
/// message received meanwhile; more are dropped, which Raft tolerates (a
/// dropped acknowledgement is re-sent when the next write becomes durable).
pub const HELD_MESSAGES_MAX: usize = 2 * NODES_MAX;

/// Largest number of ReadIndex heartbeat rounds in flight at once.
///
/// One round serves every read that arrived while the previous one was in
/// flight, so a handful covers any request rate; the bound keeps the leader's
/// read bookkeeping a fixed-size ring.
pub const READ_ROUNDS_INFLIGHT_MAX: usize = 8;

/// Bytes the core accounts for a leader's no-op batch (one empty entry) when
/// it fills a peer's inflight window. The runtime sends the real frame; this
/// is only flow-control bookkeeping.
pub const NOOP_BATCH_BYTES: u32 = 64;

/// Heartbeat intervals a peer in replicate state may go without freeing any
/// inflight message before the leader assumes messages were lost and probes
/// again from the peer's match index.
pub const PROGRESS_STALL_HEARTBEATS: u32 = 4;

// ---- Server: connections and shards ----

/// Bytes a connection may hold before its handshake is done: a Hello is a
/// cluster id, a token and a few integers, well under a kilobyte. A larger
/// claimed frame closes the connection, so an unauthenticated peer cannot
/// make a node reserve memory by claiming a large frame.
pub const HANDSHAKE_BYTES_MAX: usize = 4096;

/// Milliseconds a connection may take to complete its handshake before it
/// is closed.
pub const HANDSHAKE_MS_MAX: u64 = 5_000;

/// Milliseconds a refused handshake waits for its answer: a caller
/// guessing tokens learns one guess per connection per this long (and a
/// node holds at most [`CONNECTIONS_PER_ADDRESS_MAX`] connections of one
/// address), while an operator with a wrong token still hears why at
/// once to a human.
pub const HANDSHAKE_REFUSAL_DELAY_MS: u64 = 250;

/// Connections one core keeps open at most (clients, peers, handshakes);
/// one accepted beyond it is closed at once.
pub const CONNECTIONS_PER_CORE_MAX: usize = 4096;

/// Connections one address keeps open on one core at most: one client
/// machine (or a hostile one) cannot take every slot of
/// [`CONNECTIONS_PER_CORE_MAX`], while a busy application server (or a
/// NAT's worth of clients) still gets a thousand.
pub const CONNECTIONS_PER_ADDRESS_MAX: usize = 1024;

const _: () = assert!(CONNECTIONS_PER_ADDRESS_MAX < CONNECTIONS_PER_CORE_MAX);

/// Default of `--client-idle-secs`, in milliseconds: how long a client
/// connection may stay silent (no request) before it is closed, unless it
/// follows a log (a tail is silent while nothing commits). Forgotten
/// connections do not hold slots forever; clients reconnect on their next
/// request.
pub const CLIENT_IDLE_MS_DEFAULT: u64 = 300_000;

/// How often idle client connections are looked for.
pub const IDLE_SCAN_MS: u64 = 1_000;

/// TCP keepalive of every connection: first probe after this many idle
/// seconds, then one every [`KEEPALIVE_INTERVAL_SECS`], and the connection
/// is dropped after [`KEEPALIVE_PROBES`] unanswered: a vanished peer or
/// client is noticed within about two minutes.
pub const KEEPALIVE_IDLE_SECS: u32 = 60;
/// See [`KEEPALIVE_IDLE_SECS`].
pub const KEEPALIVE_INTERVAL_SECS: u32 = 10;
/// See [`KEEPALIVE_IDLE_SECS`].
pub const KEEPALIVE_PROBES: u32 = 6;

/// After `accept` fails for want of descriptors (EMFILE, ENFILE), the next
/// accept waits this long instead of failing again at once.
pub const ACCEPT_BACKOFF_MS: u64 = 100;

/// The first receive block of a connection.
pub const INBOX_BYTES_INITIAL: usize = 64 * 1024;

/// Receive blocks grow (doubling, each time one fills) up to this size
/// while small frames stream in: a frame that straddles two blocks is
/// copied once, so larger blocks copy a smaller share of the bytes.
pub const INBOX_BLOCK_BYTES_MAX: usize = 512 * 1024;

/// The least room a greedy recv is posted with; below it the connection
/// starts a new block.
pub const RECV_ROOM_MIN: usize = 2048;

/// Ciphertext bytes one recv of a TLS connection takes: a few TLS records
/// (16 KiB of plaintext each at most), so a busy connection decrypts
/// several per turn while an idle one holds one small block.
pub const TLS_RECV_BYTES: usize = 64 * 1024;

/// The least a frugal recv asks for (see `server::connection::Connection::post_recv` in rast-server): room
/// for a peer message's header, or several small messages.
pub const FRUGAL_RECV_BYTES: usize = 4096;

/// Messages from this size on are large: received frugally, each into a
/// block with room for it whole (see `server::connection::Connection::read_frames_of` in rast-server).
pub const FRAME_BYTES_LARGE: usize = 64 * 1024;

/// Most bytes one gathered send hands to the kernel.
pub const SEND_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Largest receive buffer: a whole AppendEntries (header plus batches).
pub const INBOX_BYTES_MAX: usize = 2 * FRAME_BYTES_MAX;

/// Connections waiting in a core's handoff queue, at most.
pub const HANDOFF_QUEUE_MAX: usize = 1024;

/// Scrubbing rate by default (`--scrub-bytes-per-sec`): a 64 MiB segment
/// every 8 s, a small share of any disk's bandwidth, so a node re-reads
/// 10 GiB of logs about every 21 minutes.
pub const SCRUB_BYTES_PER_SEC_DEFAULT: u64 = 8 * 1024 * 1024;

/// Files written this recently are not scrubbed (a truncation may be under
/// way); a sealed segment's last write is long done by then.
pub const SCRUB_SETTLE_MS: u64 = 2000;

/// Damage reports waiting for a core, at most (one per log is enough: a
/// report dropped is found again by the next pass).
pub const DAMAGE_QUEUE_MAX: usize = 64;

/// Pause between two scrubbing passes over the data directory (what keeps
/// an empty one from being listed in a loop).
pub const SCRUB_PASS_PAUSE_MS: u64 = 1000;

/// How often groups stopped by a full disk are considered for reopening.
pub const REOPEN_INTERVAL_MS: u64 = 1000;

/// Free bytes the data directory's file system needs before a group
/// stopped by a full disk is reopened: room for two segments.
pub const REOPEN_FREE_BYTES_MIN: u64 = 2 * SEGMENT_BYTES_MAX;

/// Longest wait between reconnect attempts to a peer.
pub const RECONNECT_MS_MAX: u64 = 1000;

/// Bytes queued for one connection beyond which its reader is considered
/// gone (paused, partitioned, or never reading) and the connection is
/// dropped instead of buffering more: twice a peer's inflight window.
pub const OUTBOX_BYTES_MAX: usize = 2 * INFLIGHT_BYTES_MAX as usize;

/// Batch bytes of an AppendEntries from which a follower splices them
/// (socket → pipe → file) instead of receiving them into a buffer: below
/// it, the extra system calls cost more than the copy saves.
pub const SPLICE_BYTES_MIN: u64 = 64 * 1024;

/// A transfer with no byte moved for this long is abandoned: the leader is
/// gone or cut off, and the group's other messages wait behind it.
pub const SPLICE_STALL_MS: u64 = 2_000;

/// Requests the metrics endpoint answers at once; a caller beyond them is
/// told `503` without being read.
pub const METRICS_CONNECTIONS_MAX: usize = 8;

/// Longest request line the metrics endpoint reads (a `GET /metrics` line
/// is a few dozen bytes).
pub const METRICS_REQUEST_BYTES_MAX: usize = 8 * 1024;

/// Milliseconds a metrics request may take to arrive and be answered.
pub const METRICS_REQUEST_MS_MAX: u64 = 5_000;

// ---- Server: groups (reads, snapshots, leadership) ----

/// Bytes a group asks of its storage per read while it walks stored
/// batches (client reads, tails, building AppendEntries from the log).
pub const READ_CHUNK_BYTES: usize = 4 * 1024 * 1024;

/// How often a plain log (no state machine) checks its retention policy.
pub const RETENTION_CHECK_MS: u64 = 1_000;

/// A leader resends an InstallSnapshot stream from the acknowledged offset
/// after this long without progress.
pub const SNAPSHOT_RESEND_MS: u64 = 2_000;

/// A leader gives an InstallSnapshot stream up after this long without progress (the core
/// then probes the follower again, and asks for a new stream if needed).
pub const SNAPSHOT_GIVE_UP_MS: u64 = 30_000;

/// How long a leadership transfer may take before its request is answered
/// with an error: two election timeouts (the core abandons a transfer after
/// one).
pub const TRANSFER_WAIT_MS: u64 = 2 * ELECTION_TICKS as u64 * TICK_MS;

/// The key-value log's default automatic snapshot interval, in log bytes.
pub const SNAPSHOT_LOG_BYTES_DEFAULT: u64 = 128 * 1024 * 1024;

// ---- Storage ----

/// Largest configuration a snapshot file's header may carry (nine members with addresses
/// take well under a kilobyte).
pub const MEMBERS_BYTES_MAX: u64 = 64 * 1024;

/// Snapshot files kept in the directory (the newest and one before it).
pub const SNAPSHOTS_KEPT: usize = 2;

/// Bytes read at a time while a snapshot file's body is checked.
pub const SNAPSHOT_READ_BYTES: usize = 64 * 1024;

/// Tries at taking a log directory's lock, 10 ms apart.
pub const LOCK_ATTEMPTS_MAX: u32 = 100;

/// A sealed, written segment keeps one index entry per this many bytes of
/// file: 8 bytes of memory per 64 KiB of log, and a read walks at most
/// this much more than it returns.
pub const INDEX_STRIDE_BYTES: u64 = 64 * 1024;

/// Most linked vectored writes one chunk of a segment store is written
/// with: a turn's pieces
/// beyond that many iovecs go into another chunk, written after it.
pub const CHUNK_WRITES_MAX: usize = 8;

/// Sector size assumed for torn writes: the smallest unit a disk persists
/// atomically, and a divisor of the page size.
pub const SECTOR_BYTES: u64 = 512;

// ---- io_uring and sockets ----

/// Most iovecs one vectored operation takes (Linux's `IOV_MAX`).
pub const IOVECS_MAX: usize = 1024;

/// Bytes a splice pipe holds (`F_SETPIPE_SZ`; the kernel may round up).
pub const PIPE_BYTES: usize = 1024 * 1024;

// ---- Simulator ----

/// Steps the simulator's exact linearizability search may take, per run
/// of a log and per key of the key-value store: deterministic (no
/// wall-clock limit), enough for the histories of a default run, which
/// mostly finish in far fewer.
pub const SIM_SEARCH_STEPS_MAX: u64 = 200_000;

const _: () = assert!(FRAME_BYTES_MAX.is_multiple_of(WORD_BYTES));
const _: () = assert!(INBOX_BYTES_MAX >= FRAME_BYTES_MAX);
const _: () =
    assert!(HANDSHAKE_BYTES_MAX >= RECV_ROOM_MIN && HANDSHAKE_BYTES_MAX <= INBOX_BYTES_INITIAL);
const _: () = assert!(INBOX_BLOCK_BYTES_MAX >= INBOX_BYTES_INITIAL);
const _: () = assert!(RECV_ROOM_MIN <= FRUGAL_RECV_BYTES);
const _: () = assert!(TLS_RECV_BYTES <= INBOX_BLOCK_BYTES_MAX);
// A refusal is sent before the handshake's time runs out.
const _: () = assert!(HANDSHAKE_REFUSAL_DELAY_MS + 2 * TICK_MS < HANDSHAKE_MS_MAX);
const _: () = assert!(OUTBOX_BYTES_MAX as u64 >= INFLIGHT_BYTES_MAX);
const _: () = assert!(REOPEN_FREE_BYTES_MIN >= SEGMENT_BYTES_MAX);
const _: () = assert!(SNAPSHOT_RESEND_MS < SNAPSHOT_GIVE_UP_MS);
const _: () = assert!(4096 % SECTOR_BYTES == 0 && SECTOR_BYTES.is_multiple_of(WORD_BYTES as u64));
const _: () = assert!(SNAPSHOTS_KEPT >= 1);
const _: () = assert!(ENTRY_BYTES_MAX < FRAME_BYTES_MAX);
const _: () = assert!(VALUE_BYTES_MAX + KEY_BYTES_MAX < ENTRY_BYTES_MAX);
const _: () = assert!((SEGMENT_BYTES_MAX as usize) >= 2 * FRAME_BYTES_MAX);
const _: () = assert!(SEGMENT_BYTES_MIN <= SEGMENT_BYTES_MAX);
const _: () = assert!(SEGMENT_BYTES_MAX <= u32::MAX as u64); // per-batch offsets are u32
const _: () = assert!(WRITE_QUEUE_BYTES_MAX >= 2 * FRAME_BYTES_MAX);
const _: () = assert!(WRITE_HEADROOM_BYTES < WRITE_QUEUE_BYTES_MAX - FRAME_BYTES_MAX);
const _: () = assert!(RING_ENTRIES >= 16 && RING_ENTRIES.is_power_of_two());
const _: () = assert!(HEARD_FOR_TIMEOUTS > 2 && LOST_ROUNDS >= 2);
const _: () = assert!(APPEND_MESSAGE_BYTES_MAX <= INFLIGHT_BYTES_MAX);
const _: () = assert!(FRAME_BYTES_MAX as u64 <= INFLIGHT_BYTES_MAX);
const _: () = assert!(SNAPSHOT_CHUNK_BYTES * 2 <= FRAME_BYTES_MAX);
const _: () = assert!(HEARTBEAT_TICKS < ELECTION_TICKS);
const _: () = assert!(BATCH_DATA_PREFIX_BYTES == 3 * WORD_BYTES);
const _: () = assert!(!NODES_MAX.is_multiple_of(2));
// Every membership the cluster can reach is readable.
const _: () = assert!(NODES_MAX <= MEMBERS_LIST_MAX as usize);
const _: () = assert!(
    NODES_MAX * (APPENDS_PER_PEER_PER_CALL_MAX + 1) + HELD_MESSAGES_MAX + 8 <= ACTIONS_PER_STEP_MAX
);
const _: () = assert!(HELD_MESSAGES_MAX >= NODES_MAX);
const _: () = assert!(SESSION_VALUE_BYTES_MAX <= VALUE_BYTES_MAX);
const _: () = assert!(SESSIONS_MAX * SESSION_VALUE_BYTES_MAX <= 64 * 1024 * 1024);
const _: () = assert!(MAELSTROM_HEARTBEAT_MS < MAELSTROM_ELECTION_MS);
const _: () = assert!(MAELSTROM_TICK_MS <= MAELSTROM_HEARTBEAT_MS);
const _: () = assert!(MAELSTROM_REQUEST_TIMEOUT_MS > 2 * MAELSTROM_ELECTION_MS);
const _: () = assert!(READ_ROUNDS_INFLIGHT_MAX >= 2);
const _: () = assert!(
    PROGRESS_STALL_HEARTBEATS as usize * (HEARTBEAT_TICKS as usize) < ELECTION_TICKS as usize
);
