"""The postmaster as a process: is it running, start it, signal it, wait for it to stop.

We start `postgres` ourselves rather than through `pg_ctl`: pg_ctl passes its `-o` options through /bin/sh and polls
ten times a second, while failover time is spent exactly here. We poll `postmaster.pid` every 10 ms instead: its
8th line is the postmaster's own status (`starting`, `ready`, `standby`, `stopping`). Stopping is a signal, as pg_ctl
sends it: SIGTERM smart, SIGINT fast, SIGQUIT immediate.

The postmaster runs in its own session, so it outlives a killed agent and never sees the agent's terminal signals.
A stopped postmaster we started is reaped here, so that it does not linger as a zombie.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fsm.actions import StopMode

from .files import OwnFiles
from .runas import Runner
from .values import Result, done, failed

POLL_S = 0.01
STOP_SIGNALS = {StopMode.SMART: signal.SIGTERM, StopMode.FAST: signal.SIGINT, StopMode.IMMEDIATE: signal.SIGQUIT}
READY = ("ready", "standby")  # accepting connections (a hot standby too); "standby": up with hot_standby off


@dataclass(frozen=True)
class Postmaster:
    pid: int
    status: str  # postmaster.pid's status line: starting, ready, standby, stopping ("" before it is written)


def process_alive(pid: int) -> bool:
    """True if `pid` runs (a zombie does not: it stays in the table until reaped, but is gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            stat = handle.read()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2 :][:1] not in ("Z", "X", "")


def listen_conflict(data_dir: Path, addresses: Sequence[str], port: int) -> str | None:
    """Why Postgres could not listen on `port` at `addresses` ("127.0.0.1:5432: Address already in use"), or None:
    they are free, or our own postmaster holds them. Probed like Postgres binds (SO_REUSEADDR: a closed connection
    in TIME_WAIT does not count, a listening process does)."""
    if find_postmaster(data_dir) is not None:
        return None
    for address in addresses:
        host = "0.0.0.0" if address in ("*", "") else address
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as error:
                if error.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL):
                    shown = f"[{host}]" if family == socket.AF_INET6 else host
                    return f"{shown}:{port}: {error.strerror}"
    return None


def find_postmaster(data_dir: Path) -> Postmaster | None:
    """The postmaster serving `data_dir`, from postmaster.pid, if that process is alive and works in `data_dir` (a
    stale pid file after a crash may name a reused pid)."""
    try:
        lines = (data_dir / "postmaster.pid").read_text(encoding="utf-8", errors="replace").splitlines()
        pid = int(lines[0])
    except (OSError, ValueError, IndexError):
        return None
    if pid <= 0 or not process_alive(pid):
        return None
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")  # the postmaster chdirs into its data directory
    except OSError:
        cwd = None  # not ours to inspect: trust the pid file
    if cwd is not None and os.path.realpath(cwd) != os.path.realpath(data_dir):
        return None
    return Postmaster(pid, lines[7].strip() if len(lines) > 7 else "")


class PostmasterControl:
    """Starts and stops the postmaster of one data directory."""

    def __init__(self, runner: Runner, files: OwnFiles) -> None:
        self.runner = runner
        self.files = files
        self.data_dir = files.settings.data_dir
        self._children: list[subprocess.Popen[bytes]] = []

    def current(self) -> Postmaster | None:
        self.reap()
        return find_postmaster(self.data_dir)

    def reap(self) -> None:
        self._children = [child for child in self._children if child.poll() is None]

    def start(self, timeout_s: float, options: tuple[str, ...] = ()) -> Result:
        """Start the postmaster with our own config file and wait until it accepts connections. `options` are
        extra `-c name=value` pairs that override the file for this run."""
        if self.current() is not None:
            return done("already running")
        log_offset = _size(self.files.log)
        argv = [self.runner.program("postgres"), "-D", str(self.data_dir), "-c", f"config_file={self.files.conf}"]
        for option in options:
            argv += ["-c", option]
        started = time.monotonic()
        try:
            child = self.runner.spawn(argv, self.files.log)
        except OSError as error:
            return failed(f"cannot run postgres: {error}")
        self._children.append(child)
        deadline = started + timeout_s
        while True:
            if child.poll() is not None:
                return failed(f"Postgres exited at start (code {child.returncode}): {self.log_since(log_offset)}")
            found = find_postmaster(self.data_dir)
            if found is not None and found.pid == child.pid and found.status in READY:
                return done(f"started in {time.monotonic() - started:.2f} s")
            if time.monotonic() > deadline:
                state = found.status if found else "no pid file"
                return failed(f"Postgres not ready within {timeout_s} s (still {state}): {self.log_since(log_offset)}")
            time.sleep(POLL_S)

    def stop(self, mode: StopMode, timeout_s: float) -> Result:
        found = self.current()
        if found is None:
            return done("not running")
        started = time.monotonic()
        try:
            os.kill(found.pid, STOP_SIGNALS[mode])
        except ProcessLookupError:
            return done("not running")
        except OSError as error:
            return failed(f"cannot signal the postmaster {found.pid}: {error}")
        while process_alive(found.pid):
            if time.monotonic() - started > timeout_s:
                return failed(f"Postgres still running {timeout_s} s after a {mode.value} shutdown request")
            time.sleep(POLL_S)
        self.reap()
        return done(f"stopped ({mode.value}) in {time.monotonic() - started:.2f} s")

    def signal(self, signum: signal.Signals) -> Result:
        found = self.current()
        if found is None:
            return failed("Postgres is not running")
        try:
            os.kill(found.pid, signum)
        except OSError as error:
            return failed(f"cannot signal the postmaster {found.pid}: {error}")
        return done()

    def log_since(self, offset: int, lines: int = 6) -> str:
        """The last lines Postgres logged since `offset`: its own words on why it did not start."""
        try:
            with open(self.files.log, "rb") as handle:
                handle.seek(offset)
                text = handle.read().decode("utf-8", errors="replace")
        except OSError:
            return "(no log)"
        picked = [line.strip() for line in text.splitlines() if line.strip()]
        return " | ".join(picked[-lines:]) or "(nothing logged)"


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
