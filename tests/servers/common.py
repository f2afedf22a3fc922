"""What every real server a test starts needs: a free loopback port, a child process it can kill and reap, and
polling until the server answers. Servers are direct children, so a killed one is reaped at once (no zombie that
still answers `kill -0`)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Self


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(ready: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.05) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready within {timeout_s} s")
        time.sleep(interval_s)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def _stopped(task: Path) -> bool:
    try:
        return task.joinpath("stat").read_text().rsplit(")", 1)[1].split()[0] in ("T", "t")
    except FileNotFoundError:  # the thread ended meanwhile
        return True


class Child:
    """A server process with its log file; `kill()` SIGKILLs and reaps it, `pause()`/`resume()` SIGSTOP/SIGCONT."""

    def __init__(self, argv: list[str], log_path: Path, **popen: object) -> None:
        self.argv = argv
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in kill()
        self.process = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, **popen)  # type: ignore[call-overload]

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def pause(self) -> None:
        """SIGSTOP, returning once every thread has stopped: the signal is delivered thread by thread, and a request
        sent in that moment is still answered (one renewal in six against etcd, measured)."""
        os.kill(self.process.pid, signal.SIGSTOP)
        tasks = Path(f"/proc/{self.process.pid}/task")
        wait_until(lambda: all(_stopped(task) for task in tasks.iterdir()), 2.0, "the server stopped", 0.001)

    def resume(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)

    def kill(self) -> None:
        if self.alive:
            self.process.kill()
        self.process.wait()
        self._log.close()

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


class Closing:
    """`with server:` closes it on the way out."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class OneProcessServer(Closing):
    """A server that is one child process: kill, pause and resume act on it."""

    child: Child | None = None

    def kill(self) -> None:
        if self.child is not None:
            self.child.kill()

    def pause(self) -> None:
        assert self.child is not None
        self.child.pause()

    def resume(self) -> None:
        assert self.child is not None
        self.child.resume()
