"""The fence process: kills the postmaster when the agent misses its lease deadline.

Started by `adapters.watchdog.Watchdog` as `python -I watchdog_fence.py`, in its own session, so a signal to the
agent's process group (a terminal's Ctrl-C, a SIGSTOP or SIGTERM of the group) never reaches it. It imports only the
standard library: it must start in milliseconds and cannot be broken by the project's imports.

Protocol, one command per line on stdin, one answer per command on stdout (`ok ...` or `error <why>`):

    arm <deadline> <pid file>   guard the postmaster named by <pid file> until <deadline>
    ping <deadline>             move the deadline (to <deadline>, earlier or later)
    disarm                      stop guarding

A deadline is a `time.monotonic()` reading of the agent: CLOCK_MONOTONIC is one clock for the whole system. When an
armed deadline passes, the fence SIGKILLs the postmaster and its children and disarms; the next ping is answered
`error fired ...` so the agent learns its Postgres is gone. A deadline that has already passed when it arrives fires
at once: past its deadline the agent's lease gives it no right to a writable Postgres. When stdin closes (the agent
died), an armed fence still fires at its deadline, then exits; a disarmed one exits at once. From then on it guards
only the postmaster that ran when its agent died (its pid and start time): a server a new agent started since on
the same data directory is that agent's to fence, never the orphan's to kill.

The postmaster is read from the pid file's first line at firing time (the server may have restarted since arming),
and is killed only if that process is alive, its command line names postgres or postmaster, and it works in the pid
file's directory (the data directory): a stale pid file must never kill an unrelated process that reused the pid.

The deadline code (`Fence`, `serve`) is unit-tested with a fake clock (tests/test_fence.py) and mutation-tested
(docs/mutation.md); the process code, marked `# pragma: no mutate block`, is tested against real processes in
tests/test_watchdog.py.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import select
import signal
import sys
import time
from pathlib import Path

log = logging.getLogger(f"regent.watchdog.fence[{os.getpid()}]")

POSTGRES_NAMES = ("postgres", "postmaster")


class Fence:
    """The fence's state: what it guards and until when. `handle` answers one command."""

    def __init__(self) -> None:
        self.deadline: float | None = None  # None: disarmed
        self.pid_file: Path | None = None
        self.fired: str = ""  # what the last firing did, until a ping or arm hears about it
        self.pinned: tuple[int, int] | None = None  # once orphaned: the postmaster left by the agent (pid, start)

    def handle(self, line: str) -> str:
        self.fire_if_due()  # a command read just after the deadline is too late: the deadline rules
        verb, _, rest = line.strip().partition(" ")
        try:
            if verb == "arm":
                deadline_text, _, path = rest.partition(" ")
                if not path:
                    return "error arm needs a deadline and a pid file"
                self.pid_file, self.fired = Path(path), ""
                return self._set_deadline(float(deadline_text))
            if verb == "ping":
                if self.fired:
                    fired, self.fired = self.fired, ""
                    return f"error fired: {fired}"
                if self.deadline is None:
                    return "error not armed"
                return self._set_deadline(float(rest))
            if verb == "disarm":
                self.deadline, self.fired = None, ""
                return "ok disarmed"
        except ValueError:
            return f"error bad deadline in {line.strip()!r}"
        return f"error unknown command {line.strip()!r}"

    def _set_deadline(self, deadline: float) -> str:
        if not math.isfinite(deadline):
            raise ValueError(deadline)
        self.deadline = deadline
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            self.fire_if_due()
            fired, self.fired = self.fired, ""
            return f"error deadline already passed: {fired}"
        return f"ok armed for {remaining:.3f} s"

    def fire_if_due(self) -> None:
        if self.deadline is None or time.monotonic() < self.deadline:
            return
        late_s = time.monotonic() - self.deadline
        self.deadline = None
        assert self.pid_file is not None
        why = f"the agent missed its lease deadline by {late_s:.3f} s"
        self.fired = kill_postmaster(self.pid_file, why, self.pinned)

    def orphan(self) -> None:
        """The agent closed the channel while armed: guard the postmaster running now, or nothing if none runs."""
        assert self.pid_file is not None
        self.pinned = postmaster_identity(self.pid_file)
        if self.pinned is None:
            self.deadline = None
            log.warning("the agent closed its channel while armed, and no postmaster runs: nothing to fence")


def kill_postmaster(pid_file: Path, why: str, only: tuple[int, int] | None = None) -> str:  # pragma: no mutate block
    """SIGKILL the postmaster named by `pid_file` and its children (only if it is `only`, by pid and start time,
    when given); returns (and logs) what was done."""
    pid, problem = find_postmaster(pid_file)
    if pid is not None and only is not None and (pid, start_time(pid)) != only:
        pid, problem = None, f"postmaster {pid} is not the one its agent left ({only[0]}): a newer agent's"
    if pid is None:
        log.error("%s; killed nothing: %s", why, problem)
        return f"killed nothing: {problem}"
    # Freeze it first so it cannot fork while we collect its children. The children must die too: a backend
    # outlives a killed postmaster long enough to commit a transaction already under way.
    try:
        os.kill(pid, signal.SIGSTOP)
    except OSError as error:
        log.error("%s; cannot stop postmaster %d: %s", why, pid, error)
    children = descendants(pid)
    failed = []
    for victim in (pid, *children):
        try:
            os.kill(victim, signal.SIGKILL)
        except ProcessLookupError:
            pass
        except OSError as error:
            failed.append(f"{victim}: {error}")
    done = f"SIGKILLed postmaster {pid} ({pid_file.parent}) and {len(children)} children"
    if failed:
        log.error("%s; %s, but some failed: %s", why, done, "; ".join(failed))
        return f"{done}, failures: {'; '.join(failed)}"
    log.error("%s; %s", why, done)
    return done


def find_postmaster(pid_file: Path) -> tuple[int | None, str]:  # pragma: no mutate block
    """The pid of the postmaster `pid_file` names, or None and why not."""
    try:
        first = pid_file.read_text(encoding="utf-8", errors="replace").split("\n", 1)[0]
        pid = int(first)
    except FileNotFoundError:
        return None, f"no {pid_file} (Postgres is not running)"
    except (OSError, ValueError) as error:
        return None, f"cannot read a pid from {pid_file}: {error}"
    if pid <= 1 or pid == os.getpid():
        return None, f"{pid_file} names pid {pid}"
    if not alive(pid):
        return None, f"pid {pid} from {pid_file} is not running"
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError as error:
        return None, f"cannot read the command line of pid {pid}: {error}"
    words = [os.fsdecode(word) for word in argv if word]
    if not any(os.path.basename(word) in POSTGRES_NAMES for word in words):
        return None, f"pid {pid} from {pid_file} is not a postmaster: {' '.join(words)[:200]!r}"
    data_dir = os.path.realpath(pid_file.parent)
    try:
        cwd = os.path.realpath(os.readlink(f"/proc/{pid}/cwd"))  # the postmaster chdirs into its data directory
    except OSError:
        cwd = ""
    if cwd != data_dir and not _names_data_dir(words, data_dir):
        return None, f"pid {pid} from {pid_file} is a postgres in {cwd or 'an unknown directory'}, not {data_dir}"
    return pid, ""


def postmaster_identity(pid_file: Path) -> tuple[int, int] | None:  # pragma: no mutate block
    """The running postmaster `pid_file` names, as (pid, start time): a pid alone may be reused."""
    pid, _ = find_postmaster(pid_file)
    return None if pid is None else (pid, start_time(pid))


def start_time(pid: int) -> int:  # pragma: no mutate block
    """When `pid` started, in clock ticks since boot (/proc/<pid>/stat field 22); -1 once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
        return int(stat[stat.rfind(")") + 2 :].split()[19])
    except (OSError, ValueError, IndexError):
        return -1


def _names_data_dir(words: list[str], data_dir: str) -> bool:  # pragma: no mutate block
    """True if the command line says `-D data_dir` (for a postmaster whose cwd we may not read)."""
    for i, word in enumerate(words):
        if word == "-D" and i + 1 < len(words):
            value = words[i + 1]
        elif word.startswith("-D"):
            value = word[2:]
        else:
            continue
        if os.path.realpath(value) == data_dir:
            return True
    return False


def alive(pid: int) -> bool:  # pragma: no mutate block
    """True if `pid` runs (a zombie is dead, though it stays in the table until reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    return stat[stat.rfind(")") + 2 :][:1] not in ("Z", "X", "")


def descendants(pid: int) -> list[int]:  # pragma: no mutate block
    """Every descendant of `pid`. A postmaster may have hundreds of backends: the kernel's list of each process's
    children is read where it exists, and all of /proc is scanned (once) only where it does not."""
    kernel_lists = os.path.exists(f"/proc/{pid}/task/{pid}/children")
    children = _children_lists if kernel_lists else _parent_map().get
    found, todo = [], [pid]
    while todo:
        for child in children(todo.pop()) or ():
            found.append(child)
            todo.append(child)
    return found


def _children_lists(pid: int) -> list[int]:  # pragma: no mutate block
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    found = []
    for task in tasks:
        try:
            found += [int(child) for child in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
        except (OSError, ValueError):
            continue
    return found


def _parent_map() -> dict[int, list[int]]:  # pragma: no mutate block
    """Each process's children, from the parent pid in every /proc/<pid>/stat."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text(encoding="ascii", errors="replace")
            parents.setdefault(int(stat[stat.rfind(")") + 2 :].split()[1]), []).append(int(entry))
        except (OSError, ValueError, IndexError):
            continue
    return parents


def serve(fence: Fence, stdin: int = 0, stdout: int = 1) -> int:
    """Answer commands until stdin closes, firing at each armed deadline; returns the exit status."""
    pending = b""
    while True:
        fence.fire_if_due()
        remaining = None if fence.deadline is None else max(0.0, fence.deadline - time.monotonic())
        # Sleep in select until the deadline itself, not in coarse polls: the firing is accurate to a millisecond.
        readable, _, _ = select.select([stdin], [], [], remaining)
        if not readable:
            continue
        chunk = os.read(stdin, 4096)
        if not chunk:
            break
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            answer = fence.handle(line.decode("utf-8", errors="replace"))
            with contextlib.suppress(OSError):  # the agent is gone; the deadline still holds
                os.write(stdout, answer.encode() + b"\n")
    if fence.deadline is not None:
        fence.orphan()
    if fence.deadline is not None:
        remaining = fence.deadline - time.monotonic()
        log.warning(
            "the agent closed its channel while armed (did it die?); firing at the deadline in %.3f s", remaining
        )
        while fence.deadline is not None:
            time.sleep(max(0.0, fence.deadline - time.monotonic()))
            fence.fire_if_due()
    return 0


def main() -> int:  # pragma: no mutate block
    # In its own session already; also ignore the signals that stop an agent so only SIGKILL or a disarm ends an
    # armed fence. SIGPIPE stays ignored (Python's default): a dead agent must not kill the fence mid-write.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    os.chdir("/")  # hold no directory busy
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return serve(Fence())


if __name__ == "__main__":
    sys.exit(main())
