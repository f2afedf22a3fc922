"""The watchdog: a fence outside the agent that kills the postmaster when the agent misses its lease deadline.

A paused (SIGSTOP, VM freeze) or hung agent cannot demote itself, so the fence must live in another process: the
fence process (`adapters/watchdog_fence.py`, started once, in its own session) sleeps until the deadline the agent
last gave it and then SIGKILLs the postmaster; it survives the agent's death and still fires. Where a Linux watchdog
device is configured (`/dev/watchdog`), it is fed too: if the agent and the fence both stall, the machine resets.

Modes (`watchdog.mode`):
- `off`: no fence; arm, ping and disarm succeed and do nothing (leadership is allowed unguarded).
- `automatic`: use what works. A fence that cannot be armed is logged and leadership is still allowed.
- `required`: arm and ping succeed only when every configured fence confirmed the deadline (the fence process
  always, the device too when one is configured). A failed arm leaves nothing armed, and the agent does not promote.

In every mode a deadline that has already passed is a failure: arm refuses it (nothing is armed), and ping hands it
to the fence, which fires at once, since past its deadline the agent has no lease to keep a writable Postgres.

Deadlines are absolute `time.monotonic()` readings of the agent (CLOCK_MONOTONIC: one clock for every process).
No method raises: a failure is a log line and a False.

One fence per data directory: an armed fence writes who it is (pid and start time) to `record`. An agent killed
while armed leaves its fence behind, guarding the postmaster it left until its deadline; when a newer agent on the
same data directory arms its own fence, that one guards the postmaster from then on, and the older one is ended,
so it cannot kill a server the newer agent kept running (a quick restart that resumes leading).
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import logging
import math
import os
import select
import signal
import stat
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from enum import Enum
from pathlib import Path

from adapters.watchdog_fence import alive, start_time

log = logging.getLogger(__name__)

MODES = ("off", "automatic", "required")
FENCE_SCRIPT = Path(__file__).with_name("watchdog_fence.py")
START_TIMEOUT_S = 5.0  # the first answer of a new fence waits for an interpreter to start (~20 ms when idle)
ANSWER_TIMEOUT_S = 2.0  # a fence that takes longer to answer is hung: it is killed and replaced at the next arm
STOP_TIMEOUT_S = 2.0

# <linux/watchdog.h>
WDIOC_GETSUPPORT = 0x80285700  # _IOR('W', 0, struct watchdog_info), 40 bytes: options, firmware, identity[32]
WDIOC_SETTIMEOUT = 0xC0045706  # _IOWR('W', 6, int)
WDIOF_SETTIMEOUT = 0x0080
KEEPALIVE = b"\0"  # any byte but the magic close 'V' feeds the device
MAGIC_CLOSE = b"V"  # written before close: the device stops instead of resetting the machine


def _is_fence(pid: int, started: int) -> bool:
    """Whether `pid` is still the fence process that started at `started` (a pid alone may be reused)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return alive(pid) and start_time(pid) == started and FENCE_SCRIPT.name.encode() in cmdline


class _Fence(Enum):
    OK = "ok"  # the fence process confirmed the deadline
    REFUSED = "refused"  # it answered no: the deadline had passed (it fired), or it had fired since the last ping
    UNAVAILABLE = "unavailable"  # it could not be started or did not answer (it was killed)


class Watchdog:
    """The fence of one postmaster (named by its `postmaster.pid`). Thread-safe; `close()` ends the fence process."""

    def __init__(
        self,
        mode: str,
        postmaster_pid_file: Path,
        device: Path | None = None,
        record: Path | None = None,
        write: Callable[[Path, str], None] = lambda path, text: path.write_text(text),
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"watchdog mode {mode!r} is not one of {', '.join(MODES)}")
        if "\n" in str(postmaster_pid_file):
            raise ValueError(f"watchdog: a pid file path with a newline: {postmaster_pid_file!r}")
        self.mode = mode
        self.pid_file = Path(postmaster_pid_file)
        self.device = Path(device) if device else None
        self.record = record  # where the armed fence says who it is, for a newer agent to end it
        self._write = write  # how the record is written (by the agent as root: owned by Postgres's user)
        self._lock = threading.Lock()
        self._fence: subprocess.Popen[bytes] | None = None
        self._fence_armed = False
        self._answers = b""  # bytes read from the fence past the last full answer
        self._device_fd: int | None = None
        self._device_timeout_s: int | None = None  # as the device last reported it
        self._device_can_set_timeout = False
        self._device_problem = ""  # the last device problem logged, so a missing device is not logged every loop
        self._closed = False

    @property
    def armed(self) -> bool:
        """True while a fence (the process, or the device) holds a deadline; always False in mode `off`."""
        return self._fence_armed or self._device_fd is not None

    @property
    def fence_pid(self) -> int | None:
        """The pid of the fence process, while one runs."""
        fence = self._fence
        return fence.pid if fence is not None and fence.returncode is None else None

    def arm(self, deadline: float) -> bool:
        """Guard the postmaster until `deadline`. False if it was not armed where the mode requires it."""
        with self._lock:
            try:
                return self._arm(deadline)
            except Exception:  # the contract: never raise into the HA loop
                log.exception("watchdog: arm failed")
                return False

    def ping(self, deadline: float) -> bool:
        """Push the deadline to `deadline`, arming first if not armed. False if the fence fired (the deadline had
        passed: the postmaster was killed) or, in mode `required`, if a fence could not confirm the deadline."""
        with self._lock:
            try:
                return self._guard(deadline, rearm=False)
            except Exception:
                log.exception("watchdog: ping failed")
                return False

    def disarm(self) -> bool:
        """Stop guarding. False only if the device could not be stopped (the machine may still be reset)."""
        with self._lock:
            try:
                return self._disarm()
            except Exception:
                log.exception("watchdog: disarm failed")
                return False

    def close(self) -> None:
        """Disarm and end the fence process (waited for: no zombie). Arming afterwards fails."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self.armed:
                log.warning("watchdog: closed while armed; the postmaster is no longer fenced")
            try:
                self._disarm()
            except Exception:
                log.exception("watchdog: disarm at close failed")
            self._stop_fence()

    # --- both fences ------------------------------------------------------------------------------------------

    def _arm(self, deadline: float) -> bool:
        if self.mode == "off":
            return True
        if not math.isfinite(deadline):
            log.error("watchdog: not arming: the deadline %r is not a time", deadline)
            return False
        late_s = time.monotonic() - deadline
        if late_s >= 0:  # the lease is already over: refuse, and fire nothing (the agent will not promote)
            log.error("watchdog: not arming: the deadline passed %.3f s ago", late_s)
            return False
        was_armed = self.armed
        if self._guard(deadline, rearm=True):
            return True
        if not was_armed:  # a refused arm leaves nothing armed: nothing was promoted, so nothing may be killed
            self._disarm()
        return False

    def _guard(self, deadline: float, rearm: bool) -> bool:
        """Give `deadline` to the fence process and the device; True if leadership may go on."""
        if self.mode == "off":
            return True
        if self._closed:
            log.error("watchdog: closed; not arming")
            return False
        if not math.isfinite(deadline):
            log.error("watchdog: the deadline %r is not a time", deadline)
            return False
        fence = self._fence_push(deadline, rearm)
        if fence is _Fence.REFUSED:
            return False  # the fence fired: the device is not fed either, it resets at the old deadline
        device_ok = self._device_push(deadline) if self.device is not None else True
        if self.mode == "automatic":
            return True
        return fence is _Fence.OK and device_ok

    def _disarm(self) -> bool:
        if self.mode == "off":
            return True
        if self._fence is not None and self._fence.poll() is None:
            answer = self._ask("disarm", ANSWER_TIMEOUT_S)
            if answer is not None and not answer.startswith("ok"):
                log.error("watchdog: the fence process answered disarm with %r; killing it", answer)
                self._drop_fence()
        if self._fence_armed:
            log.info("watchdog: disarmed")
        self._fence_armed = False  # an unanswered fence was killed: it cannot fire either
        return self._device_close()

    # --- the fence process ------------------------------------------------------------------------------------

    def _fence_push(self, deadline: float, rearm: bool) -> _Fence:
        if self._fence is not None and self._fence.poll() is not None:
            log.error(
                "watchdog: the fence process %d exited with status %s%s",
                self._fence.pid,
                self._fence.returncode,
                " while armed" if self._fence_armed else "",
            )
            self._drop_fence()
        timeout_s = ANSWER_TIMEOUT_S
        if self._fence_armed and not rearm:
            command = f"ping {deadline!r}"
        else:
            if self._fence is None:
                if not self._start_fence():
                    return self._fence_unavailable()
                timeout_s = START_TIMEOUT_S
            command = f"arm {deadline!r} {self.pid_file}"
        answer = self._ask(command, timeout_s)
        if answer is None:
            return self._fence_unavailable()
        if not answer.startswith("ok"):
            self._fence_armed = False
            log.error("watchdog: the fence process refused %r: %s", command.split(" ", 1)[0], answer)
            return _Fence.REFUSED
        if not self._fence_armed:
            log.info("watchdog: armed (fence process %s): %s", self.fence_pid, answer)
            self._take_over()
        self._fence_armed = True
        return _Fence.OK

    def _take_over(self) -> None:
        """End the fence an earlier agent left on this data directory, and record ours in its place."""
        if self.record is None or self.fence_pid is None:
            return
        try:
            earlier = [int(word) for word in self.record.read_text().split()[:2]]
        except (OSError, ValueError):
            earlier = []
        if len(earlier) == 2 and earlier[0] != self.fence_pid and _is_fence(*earlier):
            with contextlib.suppress(ProcessLookupError):
                os.kill(earlier[0], signal.SIGKILL)
            log.warning("watchdog: ended fence process %d, which an earlier agent left armed here", earlier[0])
        try:
            self._write(self.record, f"{self.fence_pid} {start_time(self.fence_pid)}\n")
        except OSError as error:
            log.warning("watchdog: cannot record the fence process in %s: %s", self.record, error.strerror)

    def _fence_unavailable(self) -> _Fence:
        level = logging.ERROR if self.mode == "required" else logging.WARNING
        log.log(level, "watchdog: no fence process guards the deadline (mode %s)", self.mode)
        return _Fence.UNAVAILABLE

    def _start_fence(self) -> bool:
        try:
            # Its own session: a signal to the agent's process group (Ctrl-C, SIGTERM, SIGSTOP) misses it. stderr is
            # inherited so its lines land in the agent's log. The pipes are close-on-exec: a postmaster the agent
            # starts later does not inherit them and cannot keep the fence's stdin open after the agent dies.
            self._fence = subprocess.Popen(
                [sys.executable, "-I", str(FENCE_SCRIPT)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                start_new_session=True,
                cwd="/",
            )
        except OSError as error:
            log.error("watchdog: cannot start the fence process: %s", error)
            return False
        self._answers = b""
        return True

    def _ask(self, command: str, timeout_s: float) -> str | None:
        """Send one command and read its one-line answer; None (and the fence killed) if it did not answer."""
        fence = self._fence
        assert fence is not None and fence.stdin is not None and fence.stdout is not None
        try:
            fence.stdin.write(command.encode() + b"\n")
            fence.stdin.flush()
        except OSError as error:
            log.error("watchdog: cannot write to the fence process %d: %s", fence.pid, error)
            self._drop_fence()
            return None
        end = time.monotonic() + timeout_s
        out = fence.stdout.fileno()
        while b"\n" not in self._answers:
            # Select even when the time is up: an agent paused while waiting finds the answer already there.
            readable = select.select([out], [], [], max(0.0, end - time.monotonic()))[0]
            if not readable:
                log.error("watchdog: the fence process %d did not answer %r in %.1f s", fence.pid, command, timeout_s)
                self._drop_fence()
                return None
            chunk = os.read(out, 4096)
            if not chunk:
                log.error("watchdog: the fence process %d closed its output (status %s)", fence.pid, fence.poll())
                self._drop_fence()
                return None
            self._answers += chunk
        line, self._answers = self._answers.split(b"\n", 1)
        return line.decode("utf-8", errors="replace")

    def _drop_fence(self) -> None:
        """Kill and reap the fence process: one that does not answer must not fire later on its own."""
        fence, self._fence, self._fence_armed = self._fence, None, False
        if fence is None:
            return
        with contextlib.suppress(OSError):
            fence.kill()
        fence.wait()
        for pipe in (fence.stdin, fence.stdout):
            with contextlib.suppress(OSError):
                pipe.close()  # type: ignore[union-attr]

    def _stop_fence(self) -> None:
        """End a disarmed fence: at the end of its input it exits at once."""
        fence = self._fence
        if fence is None:
            return
        with contextlib.suppress(OSError):
            fence.stdin.close()  # type: ignore[union-attr]
        try:
            fence.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log.error("watchdog: the fence process %d did not exit; killing it", fence.pid)
        self._drop_fence()

    # --- the device -------------------------------------------------------------------------------------------

    def _device_push(self, deadline: float) -> bool:
        """Open the device if needed and feed it, with a timeout that ends no earlier than `deadline`."""
        if self._device_fd is None and not self._device_open():
            return False
        fd = self._device_fd
        assert fd is not None
        timeout_s = max(1, math.ceil(deadline - time.monotonic()))
        if self._device_can_set_timeout and timeout_s != self._device_timeout_s:
            value = array.array("i", [timeout_s])
            try:
                fcntl.ioctl(fd, WDIOC_SETTIMEOUT, value, True)  # also feeds it
                self._device_timeout_s = value[0]  # the driver may round it
                if value[0] < timeout_s:
                    log.warning(
                        "watchdog device %s: asked %d s, it resets after %d s", self.device, timeout_s, value[0]
                    )
            except OSError as error:
                self._device_trouble(f"cannot set its timeout to {timeout_s} s: {error.strerror}")
        try:
            os.write(fd, KEEPALIVE)
        except OSError as error:
            self._device_trouble(f"cannot feed it: {error.strerror}")
            return False
        self._device_problem = ""
        return True

    def _device_open(self) -> bool:
        try:
            # A FIFO or a disk at this path must not be opened for writing: only a character device is tried.
            if not stat.S_ISCHR(os.stat(self.device).st_mode):  # type: ignore[arg-type]
                self._device_trouble("not a character device")
                return False
            fd = os.open(self.device, os.O_WRONLY | os.O_CLOEXEC)  # type: ignore[arg-type]
        except OSError as error:
            self._device_trouble(f"cannot open it: {error.strerror}")
            return False
        info = bytearray(40)
        try:
            fcntl.ioctl(fd, WDIOC_GETSUPPORT, info, True)
        except OSError as error:
            os.close(fd)
            self._device_trouble(f"not a watchdog device ({error.strerror})")
            return False
        options, _firmware = struct.unpack_from("=II", info)
        identity = bytes(info[8:]).split(b"\0", 1)[0].decode("ascii", errors="replace")
        self._device_fd, self._device_timeout_s = fd, None
        self._device_can_set_timeout = bool(options & WDIOF_SETTIMEOUT)
        settable = "settable" if self._device_can_set_timeout else "fixed"
        log.info("watchdog device %s (%s) opened; its timeout is %s", self.device, identity, settable)
        return True

    def _device_close(self) -> bool:
        fd, self._device_fd = self._device_fd, None
        if fd is None:
            return True
        try:
            os.write(fd, MAGIC_CLOSE)
            ok = True
        except OSError as error:
            log.error("watchdog device %s: magic close failed (%s): it may still reset the machine", self.device, error)
            ok = False
        with contextlib.suppress(OSError):
            os.close(fd)
        return ok

    def _device_trouble(self, problem: str) -> None:
        if problem == self._device_problem:
            return  # said already: a missing device is logged once, not every loop
        self._device_problem = problem
        if self.mode == "required":
            log.error("watchdog device %s: %s", self.device, problem)
        else:
            log.warning("watchdog device %s: %s; the fence process guards the deadline alone", self.device, problem)
