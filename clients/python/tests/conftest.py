"""A real 3-node cluster for the tests: `rast cluster` (the binary named by
RAST_BIN, default target/debug/rast of the repository) on free loopback
ports with its data in a temporary directory, stopped after the session."""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from rast_client import Client, RastError

HERE = os.path.dirname(os.path.abspath(__file__))
REPOSITORY = os.path.abspath(os.path.join(HERE, "..", "..", ".."))


def free_base_port(count):
    """A port p with p .. p+count-1 all free (rast cluster uses consecutive ports)."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + count >= 65535:
            continue
        sockets = []
        try:
            for port in range(base, base + count):
                held = socket.socket()
                sockets.append(held)
                held.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for held in sockets:
                held.close()
    raise RuntimeError("no run of free ports")


@contextlib.contextmanager
def running_cluster(prefix, tls, request):
    """Runs `rast cluster` (with `--tls` when asked) until the block ends;
    yields its addresses and data directory once its demo has passed and
    it says it is running (a failed demo stops the cluster: waiting for it
    keeps that from looking like a node dropping a test's connection). Its
    output and the nodes' warnings go to a file, printed (its last lines)
    if any test of the session failed."""
    binary = os.environ.get("RAST_BIN", os.path.join(REPOSITORY, "target", "debug", "rast"))
    data = tempfile.mkdtemp(prefix=prefix)
    port = free_base_port(3)
    command = [binary, "cluster", "--nodes", "3", "--port", str(port), "--data", data]
    if tls:
        command.insert(2, "--tls")
    log = tempfile.NamedTemporaryFile(prefix=prefix, suffix=".log", delete=False)
    process = subprocess.Popen(
        command,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=dict(os.environ, RAST_LOG="warn"),
        start_new_session=True,
    )
    addresses = ["127.0.0.1:%d" % (port + node) for node in range(3)]
    options = {"tls_ca": os.path.join(data, "certs", "ca.pem")} if tls else {}
    deadline = time.monotonic() + 60
    try:
        while True:
            with open(log.name, errors="replace") as text:
                output = text.read()
            if process.poll() is not None:
                raise RuntimeError(
                    "%s exited with %s:\n%s" % (" ".join(command[1:3]), process.returncode, output)
                )
            if "cluster running" in output:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("%s is not running after 60 s:\n%s" % (" ".join(command[1:3]), output))
            time.sleep(0.1)
        try:
            Client(addresses, timeout=2, **options).status()
        except (RastError, OSError) as error:
            raise RuntimeError("the cluster says it runs, but: %s" % error) from error
        yield addresses, data
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        shutil.rmtree(data, ignore_errors=True)
        log.close()
        if request.session.testsfailed:
            with open(log.name, errors="replace") as text:
                lines = text.readlines()[-80:]
            sys.__stderr__.write(
                "--- the last %d lines of %s (%s) ---\n%s"
                % (len(lines), " ".join(command[1:3]), log.name, "".join(lines))
            )
        else:
            os.unlink(log.name)


@pytest.fixture(scope="session")
def cluster(request):
    """A 3-node cluster (`rast cluster`): its addresses."""
    with running_cluster("rast-pytest-", tls=False, request=request) as (addresses, _):
        yield addresses


@pytest.fixture(scope="session")
def tls_cluster(request):
    """A 3-node cluster serving TLS (`rast cluster --tls`): its addresses
    and the directory of its CA and client certificates."""
    with running_cluster("rast-pytest-tls-", tls=True, request=request) as (addresses, data):
        yield addresses, os.path.join(data, "certs")
