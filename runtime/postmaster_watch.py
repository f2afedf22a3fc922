"""Notices the postmaster's exit the moment it happens, so the loop reacts at once instead of at its next turn.

Linux pidfds make a process that is not our child pollable: it becomes readable when the process exits.
"""

from __future__ import annotations

import logging
import os
import select
import threading
from collections.abc import Callable
from pathlib import Path

from adapters.postgres.process import find_postmaster

log = logging.getLogger(__name__)


class PostmasterWatch:
    """Calls `on_exit` when the watched postmaster exits; re-arms on the next postmaster it finds."""

    def __init__(self, data_dir: Path, on_exit: Callable[[], None], rescan_s: float = 0.5) -> None:
        self.data_dir = data_dir
        self.on_exit = on_exit
        self.rescan_s = rescan_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="postmaster-watch", daemon=True)

    def start(self) -> PostmasterWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)

    def _run(self) -> None:
        exited: int | None = None  # the postmaster already reported: its pid file outlives it until the next start
        while not self._stop.is_set():
            # find_postmaster ignores a zombie (`kill -0` still succeeds on one the agent has not reaped yet)
            found = find_postmaster(self.data_dir)
            pid = found.pid if found else None
            if pid is None or pid == exited:
                self._stop.wait(self.rescan_s)
                continue
            try:
                fd = os.pidfd_open(pid)
            except OSError:
                continue  # it exited between the two calls: look again
            try:
                poller = select.poll()
                poller.register(fd, select.POLLIN)
                while not self._stop.is_set():
                    if poller.poll(int(self.rescan_s * 1000)):
                        log.warning("postmaster %d exited", pid)
                        exited = pid
                        self.on_exit()
                        break
            finally:
                os.close(fd)
