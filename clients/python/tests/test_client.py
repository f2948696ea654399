"""Every verb of the Python client against a real 3-node cluster."""

import os
import threading
import time

import pytest

import rast_client
from rast_client import Client, RastError, _entries, schema


def test_append_then_read_back(cluster):
    client = Client(cluster)
    first, count = client.append("default", [b"one", "two", b"three"])
    assert count == 3
    entries = client.read("default", first, 3)
    assert entries == [(first, b"one"), (first + 1, b"two"), (first + 2, b"three")]
    # Another client, starting at another node (a follower serves what it
    # knows committed, which catches up within a heartbeat or so).
    other = Client(list(reversed(cluster)))
    deadline = time.monotonic() + 10
    while other.read("default", first, 3) != entries:
        assert time.monotonic() < deadline, other.read("default", first, 3)
        time.sleep(0.05)


def test_tail_follows_new_entries(cluster):
    client = Client(cluster)
    first, _ = client.append("default", [b"before"])
    seen = []
    done = threading.Event()

    def follow():
        for index, payload in Client(cluster).tail("default", first):
            seen.append((index, payload))
            if len(seen) == 3:
                done.set()
                return

    threading.Thread(target=follow, daemon=True).start()
    # A leader elected in between appends its no-op entry first: the tail
    # skips it, and the second append's index says where it went.
    second, _ = client.append("default", [b"after-1", b"after-2"])
    assert done.wait(30), seen
    assert seen == [(first, b"before"), (second, b"after-1"), (second + 1, b"after-2")]


def test_reads_skip_the_logs_own_entries():
    def frame(kind, first, payloads):
        batch = schema.EntryBatch.new_message(
            term=1, firstIndex=first, count=len(payloads), kind=kind
        )
        entries = batch.init("entries", len(payloads))
        for position, payload in enumerate(payloads):
            entries[position] = payload
        return batch.to_bytes()

    frames = [
        frame("data", 1, [b"a", b"b"]),
        frame("noop", 3, [b""]),
        frame("config", 4, [b"members"]),
        frame("data", 5, [b"c"]),
    ]
    assert _entries(frames, 0, 0) == [(1, b"a"), (2, b"b"), (5, b"c")]
    assert _entries(frames, 2, 0) == [(2, b"b"), (5, b"c")]


def test_key_value_verbs(cluster):
    client = Client(cluster)
    assert client.get(b"py-absent") is None
    client.put(b"py-color", b"red")
    assert client.get(b"py-color") == b"red"
    assert client.cas(b"py-color", b"blue", b"green") == (False, b"red")
    assert client.cas(b"py-color", b"red", b"blue") == (True, None)
    assert client.get(b"py-color") == b"blue"
    assert client.cas(b"py-new", None, b"first") == (True, None)
    assert client.cas(b"py-new", None, b"again") == (False, b"first")
    client.delete(b"py-color")
    assert client.get(b"py-color") is None
    # A stale read answers from the node's own copy, without a round.
    client.put(b"py-stale", b"v")
    assert client.get(b"py-stale", stale=True) in (None, b"v")


def test_a_retried_write_applies_once(cluster):
    """The session: the same (client id, sequence) sent twice is applied
    once, so a cas retried after a lost answer does not fail on its own
    effect."""
    client = Client(cluster, client_id=4242)
    client.put(b"py-once", b"0")
    sequence = client.sequence
    assert client.cas(b"py-once", b"0", b"1") == (True, None)
    client.sequence = sequence  # as if the answer was lost: send it again
    assert client.cas(b"py-once", b"0", b"1") == (True, None)
    assert client.get(b"py-once") == b"1"


def test_status_and_members(cluster):
    client = Client(cluster)
    roles = [client.status("default", address=address)["role"] for address in cluster]
    assert roles.count("leader") == 1, roles
    members = client.members("default")
    assert sorted(members["voters"]) == [1, 2, 3]
    assert sorted(members["addresses"].values()) == sorted(cluster)


def test_errors_are_typed(cluster):
    client = Client(cluster)
    with pytest.raises(rast_client.Invalid):
        client.read("bad name!", 1, 1)
    with pytest.raises(rast_client.NoLeader):
        Client(["127.0.0.1:1"], timeout=0.5).append("default", [b"x"])


def test_tls_cluster(tls_cluster):
    """Over TLS: entries append and read back, the node says it encrypts,
    and a client without the CA is refused rather than served in clear."""
    addresses, certs = tls_cluster
    client = Client(addresses, tls_ca=os.path.join(certs, "ca.pem"))
    first, count = client.append("default", [b"py over tls", "second"])
    assert count == 2
    assert client.read("default", first, 2) == [(first, b"py over tls"), (first + 1, b"second")]
    assert client.status("default")["tls"] == "user-space"
    with pytest.raises((RastError, OSError)):
        Client(addresses, timeout=1).append("default", [b"in clear"])
