"""Python client of the Rast replicated log.

The protocol is standard Cap'n Proto stream framing over TCP, described by
``rast.capnp`` (shipped in this package): a ``Hello`` handshake, then
``ClientRequest`` frames answered by ``ClientResponse`` frames; an append's
request is followed by its ``EntryBatch`` frame, a read's answer by the
stored ``EntryBatch`` frames themselves.

The client follows the same rules as the Rust one:

* It talks to the node it believes leads, and moves when told otherwise
  (``NotLeader`` with an address) or when a node is unreachable.
* It retries on another node only when the answer proves the request was
  not applied (not the leader, unavailable, connection refused), or when
  the request is safe to repeat (reads, and key-value writes, which carry
  the client's session id and sequence number so the state machine applies
  a retried write once).
* An append whose connection broke after it was sent may or may not be in
  the log: it raises ``UnknownOutcome`` instead of being retried into a
  duplicate.
"""

import os
import random
import socket
import ssl
import struct
import time

import capnp  # pycapnp

__all__ = [
    "Client",
    "RastError",
    "NoLeader",
    "UnknownOutcome",
    "NotLeader",
    "Unavailable",
    "Compacted",
    "TooLarge",
    "NotFound",
    "PreconditionFailed",
    "Invalid",
    "NoSpace",
    "Failed",
    "SessionExpired",
    "Forbidden",
    "PROTOCOL_VERSION",
]

schema = capnp.load(os.path.join(os.path.dirname(__file__), "rast.capnp"))

#: The protocol version this client speaks (the server refuses others).
PROTOCOL_VERSION = 2

#: Largest frame read from a node, as the server bounds its own.
FRAME_BYTES_MAX = 16 * 1024 * 1024


class RastError(Exception):
    """Every error of this client."""


class NoLeader(RastError):
    """No node accepted the request before the deadline."""


class UnknownOutcome(RastError):
    """The connection broke after a non-repeatable request was sent: it may
    or may not have been applied."""


class ReplyError(RastError):
    """A node answered with an error; ``message`` says why."""

    def __init__(self, message):
        super().__init__(message)
        self.message = message


class NotLeader(ReplyError):
    """Ask the leader instead (``address`` when known)."""

    def __init__(self, message, leader=0, address=""):
        super().__init__(message)
        self.leader = leader
        self.address = address


class Unavailable(ReplyError):
    """No quorum, or shutting down: retry later."""


class Compacted(ReplyError):
    """Below the first index the log still keeps (``first_index``)."""

    def __init__(self, message, first_index=0):
        super().__init__(message)
        self.first_index = first_index


class TooLarge(ReplyError):
    """Over a size limit (``limit`` bytes)."""

    def __init__(self, message, limit=0):
        super().__init__(message)
        self.limit = limit


class PreconditionFailed(ReplyError):
    """A cas found another value (``current``; ``None`` when the key is
    absent). ``Client.cas`` returns this as its result rather than raise."""

    def __init__(self, message, current=None):
        super().__init__(message)
        self.current = current


class NotFound(ReplyError):
    """No such key or log."""


class Invalid(ReplyError):
    """A malformed request."""


class NoSpace(ReplyError):
    """The node's disk is full: appends refused."""


class Failed(ReplyError):
    """The log or its state machine stopped on that node."""


class SessionExpired(ReplyError):
    """The key-value session expired: this write was not applied (an
    earlier attempt may have been). Later writes open a new session."""


class Forbidden(ReplyError):
    """The connection's role may not do this: a write by a read-only
    client, an admin request without the admin role."""


def _error_of(error):
    """The typed exception for an ``Error`` reader."""
    kind = error.which()
    message = error.message
    if kind == "notLeader":
        return NotLeader(message, error.notLeader.leader, error.notLeader.address)
    if kind == "compacted":
        return Compacted(message, error.compacted)
    if kind == "tooLarge":
        return TooLarge(message, error.tooLarge)
    if kind == "preconditionFailed":
        current = error.preconditionFailed
        return PreconditionFailed(message, bytes(current.value) if current.found else None)
    return {
        "unavailable": Unavailable,
        "notFound": NotFound,
        "invalid": Invalid,
        "noSpace": NoSpace,
        "failed": Failed,
        "sessionExpired": SessionExpired,
        "forbidden": Forbidden,
    }.get(kind, ReplyError)(message)


class _Connection:
    """One socket to one node, after the handshake."""

    def __init__(self, address, cluster_id, token, timeout, tls=None):
        host, port = address.rsplit(":", 1)
        host = host.strip("[]")
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        if tls is not None:
            context, server_name = tls
            try:
                self.sock = context.wrap_socket(self.sock, server_hostname=server_name or host)
            except (ssl.SSLError, OSError):
                self.close()
                raise
        self.next_id = 1
        hello = schema.Hello.new_message(
            protocolVersion=PROTOCOL_VERSION, clusterId=cluster_id, nodeId=0, token=token
        )
        self.sock.sendall(hello.to_bytes())
        with schema.HelloResponse.from_bytes(self._frame()) as answer:
            if answer.which() != "ok":
                self.close()
                raise RastError("refused by %s: %s" % (address, answer.refused))

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def _exact(self, count):
        data = bytearray()
        while len(data) < count:
            chunk = self.sock.recv(count - len(data))
            if not chunk:
                raise ConnectionError("connection closed by the node")
            data += chunk
        return bytes(data)

    def _frame(self):
        head = self._exact(4)
        segments = struct.unpack("<I", head)[0] + 1
        if segments > 64:
            raise ConnectionError("a frame of %d segments" % segments)
        table = head + self._exact((4 + 4 * segments + 7) // 8 * 8 - 4)
        sizes = struct.unpack("<%dI" % segments, table[4 : 4 + 4 * segments])
        if 8 * sum(sizes) > FRAME_BYTES_MAX:
            raise ConnectionError("a frame of %d bytes" % (8 * sum(sizes)))
        return table + self._exact(8 * sum(sizes))

    def send(self, request, batch=b""):
        request.requestId = self.next_id
        self.next_id += 1
        self.sock.sendall(request.to_bytes() + batch)

    def receive(self):
        """One response: (kind, reader values as plain Python, batch frames)."""
        with schema.ClientResponse.from_bytes(self._frame()) as response:
            kind = response.which()
            if kind == "batches":
                return kind, None, [self._frame() for _ in range(response.batches)]
            if kind == "error":
                return kind, _error_of(response.error), []
            if kind == "appended":
                value = (response.appended.firstIndex, response.appended.count)
            elif kind in ("value", "casResult"):
                value = (response.value if kind == "value" else response.casResult)
                value = (value.found, bytes(value.value), value.stale, value.index)
            elif kind == "status":
                value = _status_dict(response.status)
            elif kind == "members":
                value = _members_dict(response.members)
            else:
                value = None
            return kind, value, []

    def call(self, request, batch=b""):
        self.send(request, batch)
        return self.receive()


def _status_dict(status):
    return {
        "node_id": status.nodeId,
        "role": status.role,
        "term": status.term,
        "leader": status.leader,
        "first_index": status.firstIndex,
        "snapshot_index": status.snapshotIndex,
        "last_index": status.lastIndex,
        "commit_index": status.commitIndex,
        "applied_index": status.appliedIndex,
        "failed": status.failed,
        "tls": status.tls,
        "damaged_in": status.damagedIn,
        "acked_end": (
            {"term": status.ackedEndTerm, "index": status.ackedEndIndex}
            if status.ackedEndKnown
            else None
        ),
        "peers": [
            {"id": p.id, "match_index": p.matchIndex, "next_index": p.nextIndex, "state": p.state}
            for p in status.peers
        ],
    }


def _members_dict(members):
    return {
        "voters": list(members.voters),
        "voters_outgoing": list(members.votersOutgoing),
        "learners": list(members.learners),
        "addresses": {a.id: a.address for a in members.addresses},
    }


def _entries(frames, first, limit):
    """The (index, payload) pairs clients appended, from ``first`` on. The
    log's own batches (a new leader's empty ``noop`` entry, ``config``
    entries) take an index each and are skipped: indexes may have gaps."""
    entries = []
    for frame in frames:
        with schema.EntryBatch.from_bytes(frame) as batch:
            if batch.kind in ("noop", "config"):
                continue
            for offset, payload in enumerate(batch.entries):
                index = batch.firstIndex + offset
                if index >= first and (limit == 0 or index < first + limit):
                    entries.append((index, bytes(payload)))
    return entries


def _bytes(value):
    return value.encode() if isinstance(value, str) else bytes(value)


class Client:
    """A client of the cluster at ``addresses`` (``"host:port"`` strings).

    ``timeout`` bounds each call (looking for a leader included), in
    seconds; ``token`` and ``cluster_id`` are presented in the handshake.
    For a cluster that serves TLS, ``tls_ca`` is the path of its CA
    certificate (PEM); ``tls_cert`` and ``tls_key`` a client certificate
    and key for nodes that require one; ``tls_server_name`` the name the
    nodes' certificates must carry (default: the host of each address).
    """

    def __init__(
        self,
        addresses,
        cluster_id="rast",
        token=b"",
        timeout=15.0,
        client_id=None,
        tls_ca=None,
        tls_cert=None,
        tls_key=None,
        tls_server_name=None,
    ):
        if not addresses:
            raise ValueError("no cluster addresses given")
        self._tls = None
        if tls_ca is not None:
            context = ssl.create_default_context(cafile=tls_ca)
            if tls_cert is not None:
                context.load_cert_chain(tls_cert, tls_key)
            self._tls = (context, tls_server_name)
        elif tls_cert is not None:
            raise ValueError("tls_cert needs tls_ca (the cluster's CA certificate)")
        self.addresses = list(addresses)
        self.cluster_id = cluster_id
        self.token = _bytes(token)
        self.timeout = timeout
        self.client_id = client_id or random.getrandbits(63) | 1
        self.sequence = 0
        self._cursor = 0
        self._connection = None

    def _open(self, address):
        return _Connection(address, self.cluster_id, self.token, self.timeout, self._tls)

    def close(self):
        """Closes the connection (a later call opens another)."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- verbs ---------------------------------------------------------

    def append(self, log, payloads):
        """Appends ``payloads`` (bytes or str) as one batch to ``log``;
        returns ``(first_index, count)``."""
        payloads = [_bytes(payload) for payload in payloads]
        batch = schema.EntryBatch.new_message(count=len(payloads), kind="data")
        entries = batch.init("entries", len(payloads))
        for position, payload in enumerate(payloads):
            entries[position] = payload
        # Term, index and checksum are left 0: the leader stamps them.
        kind, value, _ = self._request(log, "append", None, batch.to_bytes(), repeatable=False)
        return self._expect(kind, "appended", value)

    def read(self, log, from_index, max_entries=0):
        """Up to ``max_entries`` committed entries from ``from_index`` (0:
        as many as one answer holds) as ``[(index, payload)]``."""
        kind, _, frames = self._request(
            log, None, lambda r: _read_request(r.init("read"), from_index, max_entries)
        )
        self._expect(kind, "batches", None)
        return _entries(frames, from_index, max_entries)

    def tail(self, log, from_index=0):
        """Follows ``log`` from ``from_index`` (0: the first kept entry):
        yields ``(index, payload)`` as entries commit, forever."""
        address = self.addresses[self._cursor % len(self.addresses)]
        connection = self._open(address)
        connection.sock.settimeout(None)
        request = schema.ClientRequest.new_message(log=log)
        _read_request(request.init("tail"), from_index, 0)
        connection.send(request)
        try:
            while True:
                kind, value, frames = connection.receive()
                if kind == "error":
                    raise value
                for entry in _entries(frames, 0, 0):
                    yield entry
        finally:
            connection.close()

    def get(self, key, stale=False):
        """The value of ``key`` (``None`` when absent): linearizable, or
        this node's copy at once when ``stale``."""

        def build(request):
            get = request.init("get")
            get.key = _bytes(key)
            get.stale = stale

        try:
            kind, value, _ = self._request("", None, build)
        except NotFound:
            return None
        found, data, _, _ = self._expect(kind, "value", value)
        return data if found else None

    def put(self, key, value):
        """Sets ``key`` to ``value``, exactly once."""
        self._write("put", key, lambda command: setattr(command, "put", _bytes(value)))

    def delete(self, key):
        """Removes ``key``, exactly once."""
        self._write("delete", key, lambda command: setattr(command, "delete", None))

    def cas(self, key, expected, new):
        """Sets ``key`` to ``new`` only if it holds ``expected`` (``None``:
        only if absent). Returns ``(swapped, current)``: ``current`` is the
        value found when not swapped (``None`` when absent)."""

        def fill(command):
            cas = command.init("cas")
            if expected is None:
                cas.expectedAbsent = True
            else:
                cas.expected = _bytes(expected)
            cas.new = _bytes(new)

        try:
            kind, value = self._write("cas", key, fill)
        except PreconditionFailed as mismatch:
            return False, mismatch.current
        found, _, _, _ = self._expect(kind, "casResult", value)
        return found, None

    def status(self, log="default", address=None):
        """The status of ``log`` on the node at ``address`` (default: the
        node this client talks to), as a dict."""
        if address is not None:
            connection = self._open(address)
            try:
                request = schema.ClientRequest.new_message(log=log, status=None)
                kind, value, _ = connection.call(request)
            finally:
                connection.close()
            if kind == "error":
                raise value
            return self._expect(kind, "status", value)
        kind, value, _ = self._request(log, "status", None)
        return self._expect(kind, "status", value)

    def members(self, log="default"):
        """The configuration of ``log``: voters, learners, addresses."""
        kind, value, _ = self._admin(log, lambda admin: setattr(admin, "members", None))
        return self._expect(kind, "members", value)

    def add_learner(self, log, node_id, address):
        """Adds node ``node_id`` at ``address`` as a learner of ``log``."""
        def fill(admin):
            learner = admin.init("addLearner")
            learner.id = node_id
            learner.address = address

        return self._admin(log, fill)[1]

    def snapshot(self, log="kv"):
        """Asks the leader of ``log`` to snapshot now."""
        return self._admin(log, lambda admin: setattr(admin, "snapshot", None))[1]

    # -- plumbing ------------------------------------------------------

    @staticmethod
    def _expect(kind, wanted, value):
        if kind != wanted:
            raise RastError("expected a %s answer, got %s" % (wanted, kind))
        return value

    def _admin(self, log, fill):
        def build(request):
            fill(request.init("admin"))

        return self._request(log, None, build, repeatable=False)

    def _write(self, verb, key, fill):
        self.sequence += 1
        sequence = self.sequence

        def build(request):
            command = request.init(verb)
            command.clientId = self.client_id
            command.sequence = sequence
            command.key = _bytes(key)
            fill(command)

        try:
            kind, value, _ = self._request("", None, build)
        except SessionExpired:
            # The state machine no longer knows this session: open another
            # for later writes; this one's fate is the caller's to judge.
            self.client_id = random.getrandbits(63) | 1
            self.sequence = 0
            raise
        return kind, value

    def _request(self, log, void, build, batch=b"", repeatable=True):
        """Sends a request to the leader, following redirects, until the
        deadline. ``void`` names a Void union member; ``build`` fills the
        request otherwise."""
        deadline = time.monotonic() + self.timeout
        backoff = 0.02
        last = "no attempt"
        while time.monotonic() < deadline:
            try:
                connection = self._connect()
            except (OSError, RastError) as error:
                last = str(error)
                self._advance(None)
                time.sleep(backoff)
                backoff = min(backoff * 2, 0.5)
                continue
            request = schema.ClientRequest.new_message(log=log)
            if void is not None:
                setattr(request, void, None)
            else:
                build(request)
            try:
                kind, value, frames = connection.call(request, batch)
            except (OSError, ConnectionError) as error:
                self.close()
                if not repeatable:
                    raise UnknownOutcome("connection lost after sending: %s" % error) from error
                last = str(error)
                self._advance(None)
                continue
            if kind == "error":
                if isinstance(value, NotLeader):
                    last = value.message
                    if not value.address:
                        time.sleep(backoff)
                        backoff = min(backoff * 2, 0.5)
                    self._advance(value.address or None)
                    continue
                if isinstance(value, Unavailable):
                    last = value.message
                    self._advance(None)
                    time.sleep(backoff)
                    backoff = min(backoff * 2, 0.5)
                    continue
                raise value
            return kind, value, frames
        raise NoLeader("no node answered in %.1f s (%s): %s" % (self.timeout, ",".join(self.addresses), last))

    def _connect(self):
        if self._connection is None:
            address = self.addresses[self._cursor % len(self.addresses)]
            self._connection = self._open(address)
        return self._connection

    def _advance(self, hint):
        self.close()
        if hint:
            if hint not in self.addresses:
                self.addresses.append(hint)
            self._cursor = self.addresses.index(hint)
        else:
            self._cursor += 1


def _read_request(reader, from_index, max_entries):
    reader.fromIndex = from_index
    reader.maxEntries = max_entries
