#!/usr/bin/env python3
"""Appends to Rast from Python and reads back, with the `rast_client`
package (`pip install ./clients/python`, on pycapnp).

Usage: append_read.py ADDR[,ADDR...] [PAYLOAD...]
Appends the payloads as one batch to the log "default" (the client finds
the leader), reads them back, and prints `index<TAB>payload` lines.
"""

import sys

from rast_client import Client


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    client = Client(sys.argv[1].split(","))
    payloads = [arg.encode() for arg in sys.argv[2:]] or [b"hello from python"]
    first, count = client.append("default", payloads)
    for index, payload in client.read("default", first, count):
        print("%d\t%s" % (index, payload.decode()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
