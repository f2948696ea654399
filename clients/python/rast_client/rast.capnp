# Rast: the one byte format, on the wire and on disk.
#
# Every message here travels in the standard Cap'n Proto stream framing
# (segment count - 1, segment sizes, padding, segments), so any Cap'n Proto
# library can speak the protocol. The `EntryBatch` message is also the record
# format of the log files: its bytes go from a client's socket to the leader's
# log, to every follower's socket and log, and back to readers, unchanged.
#
# Evolution rules (read before editing):
#
# 1. Never renumber, retype or remove a field; never reorder union members.
#    Add new fields only with the next free ordinal. Ordinals decide data
#    section offsets, and log files written today must open in ten years.
# 2. `EntryBatch` is on disk. Its first 24 data bytes are fixed forever:
#      bytes  0..8   term        (stamped in place by the leader)
#      bytes  8..16  firstIndex  (stamped in place by the leader)
#      bytes 16..20  count
#      bytes 20..24  checksum    (CRC32C, see `EntryBatch.checksum`)
#    and bytes 28..32 hold `stampCheck` (see there).
#    The stamping code in src/wire/batch.rs writes to these offsets directly.
# 3. `HardState` and `SnapshotHeader` are on disk: same rules as rule 2.
# 4. A new enum value or union member must be safe to reject: old nodes answer
#    it with a typed error, they never misread it.
# 5. Bump `protocolVersion` in `Hello` when peers must refuse each other.

@0xd7a3c5e1b2f40968;

# ---------------------------------------------------------------------------
# Log records.

struct EntryBatch {
  # A batch of entries sharing one term, with consecutive indexes
  # firstIndex .. firstIndex + count - 1. The unit of appending, replicating,
  # storing and reading.

  term @0 :UInt64;
  # Term of every entry in the batch. Zero from a client: the leader stamps it.

  firstIndex @1 :UInt64;
  # Index of the first entry. Zero from a client: the leader stamps it.

  count @2 :UInt32;
  # Number of entries; equals `entries.length` (checked on parse).

  checksum @3 :UInt32;
  # CRC32C of the whole framed message (segment table included) with the
  # bytes of `term`, `firstIndex` and `checksum` read as zero. Stamping term
  # and index therefore never recomputes it. A client may leave it zero: the
  # leader then computes it on receipt (the edge), and every later reader
  # verifies it.

  kind @4 :Kind;
  # What the entries mean to the state machine.

  entries @5 :List(Data);
  # The payloads. For `kind = kv`, each payload is a `KvCommand` message.

  stampCheck @6 :UInt32;
  # CRC32C of the 16 bytes of `term` and `firstIndex` as stamped (1 if that
  # is 0), written by the leader with the stamp: the checksum reads those
  # bytes as zero, so this is what catches a flipped bit in them. Zero means
  # absent (a client's unstamped batch, or one stored before this field
  # existed): then only the order checks of the log guard them. Lives in
  # data bytes 28..32, the hole after `kind`.

  enum Kind {
    data @0;     # opaque user entries of a plain log
    noop @1;     # the entry a new leader appends in its term (one entry, empty)
    config @2;   # one `Membership` message: the configuration from here on
    kv @3;       # key-value commands, one `KvCommand` message per entry
  }
}

struct HardState {
  # The durable part of a Raft node's state, in its own small file. Replaced
  # atomically (write temp, fsync, rename, fsync directory).
  term @0 :UInt64;
  vote @1 :UInt64;      # node id voted for in `term`; 0 = none
  commit @2 :UInt64;
  checksum @3 :UInt32;  # CRC32C of the framed message with this field as zero
  damagedIn @4 :UInt64; # nonzero: recovery cut bytes this node may have
                        # acknowledged while its term was at most this; it
                        # does not campaign (and votes as ackedEnd allows)
                        # until it holds a committed entry of a later term
                        # (0 = undamaged; files written before this field
                        # read as 0)
  ackedEndKnown @5 :Bool;   # while damaged: the last entry of the log it
  ackedEndTerm @6 :UInt64;  # may have acknowledged up to is known, and is
  ackedEndIndex @7 :UInt64; # (term, index); it votes only for logs at least
                            # as up to date (false: unknown, no vote; files
                            # written before these fields read as false)
}

struct Membership {
  # A cluster configuration. During a joint change both `voters` and
  # `votersOutgoing` are non-empty and decisions need a majority of each.
  voters @0 :List(UInt64);
  votersOutgoing @1 :List(UInt64);
  learners @2 :List(UInt64);
  addresses @3 :List(NodeAddress);
}

struct NodeAddress {
  id @0 :UInt64;
  address @1 :Text;
}

struct SnapshotHeader {
  # The first record of a snapshot file and the first chunk of an
  # InstallSnapshot stream.
  lastIndex @0 :UInt64;
  lastTerm @1 :UInt64;
  membership @2 :Membership;
  totalBytes @3 :UInt64;
  checksum @4 :UInt32;  # CRC32C of the snapshot body
}

# ---------------------------------------------------------------------------
# Peer protocol. A peer connection opens with `Hello` / `HelloResponse` and
# then carries `PeerMessage`s. An `appendEntries` message is followed on the
# stream by exactly `batchBytes` bytes: `batches.length` framed `EntryBatch`
# messages, which a follower may splice straight into its log file.

struct Hello {
  protocolVersion @0 :UInt32;
  clusterId @1 :Text;
  nodeId @2 :UInt64;       # 0 for a client
  token @3 :Data;          # optional shared secret (`--token-file`)
  core @4 :UInt32;         # a peer's sending core: the receiver hands the
                           # connection to its core of the same number
  cores @5 :UInt32;        # a peer's core count: must match (log → core is
                           # `id % cores` on every node)
}

struct HelloResponse {
  union {
    ok @0 :UInt64;         # the answering node's id
    refused @1 :Text;      # why; the connection is closed after this
  }
}

struct PeerMessage {
  group @0 :UInt64;        # the Raft group (one per log): hash of its name
  from @1 :UInt64;
  to @2 :UInt64;
  term @3 :UInt64;
  union {
    appendEntries @4 :AppendEntries;
    appendResponse @5 :AppendResponse;
    requestVote @6 :RequestVote;
    voteResponse @7 :VoteResponse;
    heartbeat @8 :Heartbeat;
    heartbeatResponse @9 :HeartbeatResponse;
    timeoutNow @10 :Void;
    installSnapshot @11 :InstallSnapshot;
    snapshotResponse @12 :SnapshotResponse;
    repairWait @13 :RepairWait;
  }
}

struct BatchSummary {
  # What the Raft core needs of a batch, so a follower decides before the
  # batch bytes themselves are read (or spliced).
  term @0 :UInt64;
  firstIndex @1 :UInt64;
  count @2 :UInt32;
  bytes @3 :UInt32;
  kind @4 :EntryBatch.Kind;  # a follower reads `config` batches, splices the rest
}

struct AppendEntries {
  prevLogIndex @0 :UInt64;
  prevLogTerm @1 :UInt64;
  leaderCommit @2 :UInt64;
  batches @3 :List(BatchSummary);
  batchBytes @4 :UInt64;   # total bytes of the batch frames that follow
}

struct AppendResponse {
  success @0 :Bool;
  matchIndex @1 :UInt64;   # on success: durable and matching up to here
  # On rejection, a hint for fast backtracking (etcd style): the follower's
  # last index at or below the rejected prevLogIndex whose term is at most
  # the leader's prevLogTerm, and that term.
  hintIndex @2 :UInt64;
  hintTerm @3 :UInt64;
  lastIndex @4 :UInt64;
  # On success: the follower matches the leader up to here (maybe not yet
  # durable), so the leader sends from the next index. On rejection: the
  # follower's last index.
  rejectedIndex @5 :UInt64;
  # On rejection: the prevLogIndex rejected, so the leader recognizes a
  # stale rejection (a reordered or duplicated answer) and ignores it.
}

struct RequestVote {
  lastLogIndex @0 :UInt64;
  lastLogTerm @1 :UInt64;
  preVote @2 :Bool;
  leadershipTransfer @3 :Bool;  # ignore leader stickiness (TimeoutNow)
}

struct RepairWait {
  # A damaged node that may not campaign (its log is behind the end of
  # what it may have acknowledged) tells the voters, at each election
  # timeout, where its log ends and which end it waits for; it changes no
  # term. When every voter is heard and none can be elected, the entries
  # it waits for are lost on a majority, and the node says so and stops
  # (`raft::Core`, "A majority lost entries").
  lastLogIndex @0 :UInt64;
  lastLogTerm @1 :UInt64;
  ackedEndKnown @2 :Bool;    # false: the end is unknown, it votes for no one
  ackedEndTerm @3 :UInt64;
  ackedEndIndex @4 :UInt64;
}

struct VoteResponse {
  granted @0 :Bool;
  preVote @1 :Bool;
}

struct Heartbeat {
  leaderCommit @0 :UInt64;
  readRound @1 :UInt64;    # the ReadIndex round this heartbeat confirms
}

struct HeartbeatResponse {
  readRound @0 :UInt64;
  matchIndex @1 :UInt64;
}

struct InstallSnapshot {
  # One chunk of the leader's snapshot file (src/storage/snapshot_file.rs:
  # its own header, configuration and checksums, then the body). Every
  # chunk's header carries lastIndex, lastTerm and totalBytes, so a
  # follower can resume a stream on any chunk.
  header @0 :SnapshotHeader;
  offset @1 :UInt64;
  data @2 :Data;
  done @3 :Bool;
}

struct SnapshotResponse {
  nextOffset @0 :UInt64;      # resume from here after a dropped connection
  done @1 :Bool;
}

# ---------------------------------------------------------------------------
# Client protocol. A client connection opens with `Hello` (nodeId = 0) and
# then carries `ClientRequest`s; the node answers each with a
# `ClientResponse` carrying the same `requestId`, possibly out of order, so a
# client may pipeline. An `append` request is followed on the stream by its
# `EntryBatch` frame; a `read` or `tail` response is followed by
# `batchCount` `EntryBatch` frames, the stored bytes themselves.

struct ClientRequest {
  requestId @0 :UInt64;
  log @1 :Text;             # the named log; "" means "default"
  union {
    append @2 :Void;        # an EntryBatch frame follows
    read @3 :ReadRequest;
    tail @4 :ReadRequest;
    get @5 :KvGet;
    put @6 :KvCommand;
    cas @7 :KvCommand;
    delete @8 :KvCommand;
    status @9 :Void;
    admin @10 :AdminRequest;
  }
}

struct ReadRequest {
  fromIndex @0 :UInt64;     # below the first kept index: error `compacted`;
                            # 0 in a tail: from the first kept index
  maxEntries @1 :UInt32;    # 0 = as many as fit one response
}

struct KvGet {
  key @0 :Data;
  stale @1 :Bool;           # read locally without a ReadIndex round
}

struct KvCommand {
  # One key-value command, as proposed and as stored in a `kv` batch.
  clientId @0 :UInt64;      # exactly-once session; 0 = no session
  sequence @1 :UInt64;      # the client's request number in its session
  key @2 :Data;
  union {
    put @3 :Data;
    delete @4 :Void;
    cas @5 :Cas;
  }
  timeMs @6 :UInt64;
  # Log time: the leader's clock (ms since the Unix epoch) when it put the
  # command in the log; zero from a client. The state machine's log time is
  # the largest stamp applied so far, so it never goes backwards even when
  # leaders' clocks disagree; client sessions expire by it (src/kv), so
  # every replica expires them at the same entry.
  struct Cas {
    expected @0 :Data;
    expectedAbsent @1 :Bool;  # succeed only if the key is absent
    new @2 :Data;
  }
}

struct AdminRequest {
  union {
    addLearner @0 :NodeAddress;
    promote @1 :UInt64;
    remove @2 :UInt64;
    transferLeader @3 :UInt64;
    members @4 :Void;
    snapshot @5 :Void;
  }
}

struct ClientResponse {
  requestId @0 :UInt64;
  union {
    appended @1 :Appended;
    batches @2 :UInt32;      # this many EntryBatch frames follow: the stored
                             # batches of every kind (the clients skip the
                             # log's own `noop` and `config` batches)
    value @3 :KvValue;
    done @4 :Void;           # put / delete applied
    casResult @5 :KvValue;   # cas applied; `found` true = succeeded
    status @6 :Status;
    members @7 :Membership;
    error @8 :Error;
  }
}

struct Appended {
  firstIndex @0 :UInt64;    # the entries got firstIndex .. firstIndex + count - 1
  count @1 :UInt32;
  term @2 :UInt64;
}

struct KvValue {
  found @0 :Bool;
  value @1 :Data;
  stale @2 :Bool;           # read locally, may be behind the leader
  index @3 :UInt64;         # the applied index the value was read at
}

struct Status {
  nodeId @0 :UInt64;
  role @1 :Text;
  term @2 :UInt64;
  leader @3 :UInt64;
  firstIndex @4 :UInt64;
  lastIndex @5 :UInt64;
  commitIndex @6 :UInt64;
  appliedIndex @7 :UInt64;
  peers @8 :List(PeerStatus);
  failed @9 :Text;          # non-empty when the group stopped applying
  snapshotIndex @10 :UInt64;  # last index covered by the latest snapshot
  tls @11 :Text;            # "off", "user-space" or "kernel": how the node encrypts
  damagedIn @12 :UInt64;    # nonzero: this node's copy is damaged (recovery cut
                            # entries it may have acknowledged in terms up to
                            # this); it does not campaign until a leader
                            # repairs it
  ackedEndKnown @13 :Bool;  # while damaged: it votes only for logs at least as
  ackedEndTerm @14 :UInt64; # up to date as this entry, the end of what it may
  ackedEndIndex @15 :UInt64; # have acknowledged (false: unknown, no vote)
}

struct PeerStatus {
  id @0 :UInt64;
  matchIndex @1 :UInt64;
  nextIndex @2 :UInt64;
  state @3 :Text;
}

struct Error {
  message @0 :Text;
  union {
    notLeader @1 :NotLeader;
    compacted @2 :UInt64;        # the first index still available
    tooLarge @3 :UInt64;         # the limit in bytes
    unavailable @4 :Void;        # no quorum / shutting down; retry later
    preconditionFailed @5 :KvValue;  # cas mismatch: the current value
    notFound @6 :Void;
    invalid @7 :Void;            # malformed request
    noSpace @8 :Void;            # the disk is full: appends refused
    failed @9 :Void;             # the state machine stopped (see status)
    sessionExpired @10 :Void;
    forbidden @11 :Void;         # the connection's role may not do this
  }
}

struct NotLeader {
  leader @0 :UInt64;           # 0 when unknown
  address @1 :Text;
}
