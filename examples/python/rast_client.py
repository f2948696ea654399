#!/usr/bin/env python3
"""A Rast client in Python with pycapnp: the wire protocol is standard
Cap'n Proto stream framing over TCP, described by schema/rast.capnp, so any
Cap'n Proto library can speak it.

Usage: rast_client.py ADDR[,ADDR...] [PAYLOAD...]
Appends the payloads as one batch to the log "default" (following "not the
leader" redirects), reads them back, and prints `index<TAB>payload` lines.
"""

import os
import socket
import struct
import sys
import time

import capnp  # pycapnp

SCHEMA = os.path.join(os.path.dirname(__file__), "..", "..", "schema", "rast.capnp")
rast = capnp.load(SCHEMA)


def read_exact(sock, count):
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError("connection closed")
        data += chunk
    return data


def read_frame(sock):
    """Reads one message in the standard stream framing (segment table)."""
    head = read_exact(sock, 4)
    segments = struct.unpack("<I", head)[0] + 1
    table_len = (4 + 4 * segments + 7) // 8 * 8
    table = head + read_exact(sock, table_len - 4)
    sizes = struct.unpack("<%dI" % segments, table[4 : 4 + 4 * segments])
    body = read_exact(sock, 8 * sum(sizes))
    return table + body


def connect(address):
    host, port = address.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=10)
    hello = rast.Hello.new_message(protocolVersion=2, clusterId="rast", nodeId=0)
    sock.sendall(hello.to_bytes())
    with rast.HelloResponse.from_bytes(read_frame(sock)) as answer:
        if answer.which() != "ok":
            raise RuntimeError("refused: %s" % answer.refused)
    return sock


def call(sock, request, batch=b""):
    sock.sendall(request.to_bytes() + batch)
    frame = read_frame(sock)
    with rast.ClientResponse.from_bytes(frame) as response:
        kind = response.which()
        if kind == "batches":
            frames = [read_frame(sock) for _ in range(response.batches)]
            return kind, frames
        if kind == "appended":
            return kind, (response.appended.firstIndex, response.appended.count)
        if kind == "error":
            error = response.error
            hint = error.notLeader.address if error.which() == "notLeader" else ""
            return kind, (error.message, hint)
        return kind, None


def append(addresses, payloads):
    """Appends one batch, following redirects; returns (first index, count)."""
    batch = rast.EntryBatch.new_message(count=len(payloads), kind="data")
    entries = batch.init("entries", len(payloads))
    for position, payload in enumerate(payloads):
        entries[position] = payload
    # checksum left 0: the leader computes it at the edge.
    frame = batch.to_bytes()
    candidates = list(addresses)
    last = None
    for _ in range(100):
        address = candidates.pop(0)
        candidates.append(address)
        try:
            sock = connect(address)
        except OSError as error:
            last = error
            time.sleep(0.1)
            continue
        request = rast.ClientRequest.new_message(requestId=1, log="default", append=None)
        kind, value = call(sock, request, frame)
        sock.close()
        if kind == "appended":
            return address, value
        last = value
        if kind == "error" and value[1]:
            candidates.insert(0, value[1])  # the leader's address
        else:
            time.sleep(0.1)  # no leader known yet: an election is running
    raise RuntimeError("no leader accepted the append: %s" % (last,))


def read(address, first, count):
    sock = connect(address)
    request = rast.ClientRequest.new_message(requestId=2, log="default")
    read_request = request.init("read")
    read_request.fromIndex = first
    read_request.maxEntries = count
    kind, frames = call(sock, request)
    sock.close()
    if kind != "batches":
        raise RuntimeError("read failed: %s %s" % (kind, frames))
    entries = []
    for frame in frames:
        with rast.EntryBatch.from_bytes(frame) as stored:
            for offset, payload in enumerate(stored.entries):
                index = stored.firstIndex + offset
                if first <= index < first + count:
                    entries.append((index, bytes(payload)))
    return entries


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    addresses = sys.argv[1].split(",")
    payloads = [arg.encode() for arg in sys.argv[2:]] or [b"hello from python"]
    leader, (first, count) = append(addresses, payloads)
    for index, payload in read(leader, first, count):
        print("%d\t%s" % (index, payload.decode()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
