"""Stopping a process and everything it started: what the server commands (``make editor``) do
on SIGINT and SIGTERM, so no process and no port is left behind; and the HTTP server of the
project's own servers (the activity simulator, the lineage hub), which stops at once.

A server command starts its server in a process group of its own (``start_new_session``), and
stops the whole group: SIGTERM, up to a grace period for every process of it to exit, then
SIGKILL to those left. Mage's ``mage start`` needs this: a SIGTERM to it alone leaves its web
server child running, holding the port.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from http.server import ThreadingHTTPServer
from pathlib import Path

GRACE_SECONDS = 10.0


def stop_group(proc: subprocess.Popen, grace: float = GRACE_SECONDS) -> int:
    """Stop the process group ``proc`` leads: SIGTERM to the group, up to ``grace`` seconds for
    every process of it to exit, then SIGKILL to those left. Returns ``proc``'s exit status."""
    signal_group(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while group_running(proc.pid) and time.monotonic() < deadline:
        proc.poll()  # reap the leader
        time.sleep(0.1)
    if group_running(proc.pid):
        signal_group(proc.pid, signal.SIGKILL)
    return proc.wait()


def signal_group(group: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signum)


def group_running(group: int) -> bool:
    """Whether a process of the group still runs. Not ``os.killpg(group, 0)``: that also counts
    zombies, and in a container PID 1 may not reap the orphans a leader leaves behind."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
            state, _ppid, pgrp = stat.read_text().rpartition(")")[2].split()[:3]
        except (OSError, ValueError):
            continue  # it exited while we looked
        if int(pgrp) == group and state not in "ZX":
            return True
    return False


class HTTPServer(ThreadingHTTPServer):
    """A threading HTTP server that can end its kept-alive connections (``close_open_connections``)
    so that their handler threads finish and it stops at once, its port free."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler) -> None:
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request, client_address) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_open_connections(self) -> None:
        with self._open_lock:
            open_sockets = list(self._open)
        for sock in open_sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
