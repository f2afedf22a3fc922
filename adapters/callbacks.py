"""Callback scripts (`postgresql.callbacks`), run in the background as `script EVENT ROLE SCOPE`.

A callback reports a change that already happened (RunCallback's contract); it never blocks or fails the HA loop.
So `fire` returns at once, every failure is a log line, and a script that hangs is killed with its whole process
group after `timeout_s`. A newer call for the same event supersedes a running one: the old script is terminated
(and has exited) before the new one starts, so scripts of one event never overlap and the last call wins.
Scripts of different events run side by side.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import signal
import subprocess
import threading
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)

TERM_GRACE_S = 2.0  # a superseded script gets this long after SIGTERM to clean up before SIGKILL
OUTPUT_DRAIN_S = 1.0  # after the script exits, wait at most this long for its output (a stray child may hold the pipe)


class CallbackRunner:
    """Runs the script configured for each event; events without one are no-ops. Thread-safe."""

    def __init__(
        self, scripts: Mapping[str, str], scope: str, timeout_s: float = 30.0, run_as_user: str | None = None
    ) -> None:
        self.scripts = dict(scripts)
        self.scope = scope
        self.timeout_s = timeout_s
        self._user: pwd.struct_passwd | None = None
        if run_as_user is not None and os.geteuid() == 0:  # an unprivileged agent already runs scripts unprivileged
            try:
                self._user = pwd.getpwnam(run_as_user)
            except KeyError:
                raise ValueError(f"run_as_user: no such user {run_as_user!r}") from None
        self._lock = threading.Lock()
        self._latest: dict[str, _Run] = {}  # the newest run of each event: the one a new fire supersedes
        self._active: set[_Run] = set()  # every run not yet finished, superseded ones included
        self._closed = False

    def fire(self, event: str, role: str) -> None:
        """Start the event's script in the background and return at once; never raises."""
        script = self.scripts.get(event)
        if not script:
            return
        with self._lock:
            if self._closed:
                log.warning("callback %s: not run, the runner is closed", event)
                return
            previous = self._latest.get(event)
            run = _Run(self, event, [script, event, role, self.scope], previous)
            self._latest[event] = run
            self._active.add(run)
        if previous is not None:
            previous.supersede()  # signal it now; the new run waits for its exit before starting
        run.thread.start()

    def close(self, timeout_s: float = 5.0) -> None:
        """Let running scripts finish for up to `timeout_s`, then kill what still runs. Later fires are ignored."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            self._closed = True
            runs = list(self._active)
        for run in runs:
            run.done.wait(max(0.0, deadline - time.monotonic()))
        for run in runs:
            if not run.done.is_set():
                run.stop(signal.SIGKILL, "still running at shutdown")
        for run in runs:
            run.done.wait(TERM_GRACE_S + OUTPUT_DRAIN_S)

    def _finished(self, run: _Run) -> None:
        with self._lock:
            self._active.discard(run)
            if self._latest.get(run.event) is run:
                del self._latest[run.event]


class _Run:
    """One call of one script, carried out by its own thread: wait for the superseded run, start, log, reap."""

    def __init__(self, runner: CallbackRunner, event: str, argv: list[str], previous: _Run | None) -> None:
        self.runner = runner
        self.event = event
        self.argv = argv
        self.previous = previous
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._main, name=f"callback-{event}", daemon=True)
        self._lock = threading.Lock()  # orders `stop` against the start of the process
        self._proc: subprocess.Popen[str] | None = None
        self._stopped: str | None = None  # why it was stopped, once it was

    def supersede(self) -> None:
        self.stop(signal.SIGTERM, "superseded by a newer call")

    def stop(self, sig: signal.Signals, reason: str) -> None:
        """Signal the script's process group; a run not started yet will not start."""
        with self._lock:
            self._stopped = self._stopped or reason
            if self._proc is not None:
                _signal_group(self._proc, sig)

    def _main(self) -> None:
        try:
            if self.previous is not None:
                self._wait_for(self.previous)
                self.previous = None  # do not keep a chain of finished runs alive
            self._run()
        except Exception:  # a callback must never take the agent down; log whatever went wrong
            log.exception("callback %s: failed", self.event)
        finally:
            self.runner._finished(self)
            self.done.set()

    def _wait_for(self, previous: _Run) -> None:
        if not previous.done.wait(TERM_GRACE_S):
            previous.stop(signal.SIGKILL, "superseded by a newer call")
            previous.done.wait()

    def _run(self) -> None:
        user = self.runner._user
        with self._lock:
            if self._stopped:
                log.info("callback %s: not started: %s", self.event, self._stopped)
                return
            log.info("callback %s: running %s", self.event, " ".join(self.argv))
            try:
                self._proc = subprocess.Popen(
                    self.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    errors="replace",
                    start_new_session=True,  # its own process group, so a kill reaches the children it spawned
                    user=user.pw_uid if user else None,
                    group=user.pw_gid if user else None,
                    extra_groups=os.getgrouplist(user.pw_name, user.pw_gid) if user else None,
                )
            except OSError as error:  # missing, not executable, bad interpreter line
                log.error("callback %s: cannot run %s: %s", self.event, self.argv[0], error.strerror or error)
                return
        proc = self._proc
        reader = threading.Thread(target=self._log_output, args=(proc,), name=f"callback-{self.event}-output")
        reader.daemon = True
        reader.start()
        try:
            code = proc.wait(self.runner.timeout_s)
        except subprocess.TimeoutExpired:
            self.stop(signal.SIGKILL, f"timed out: still running after {self.runner.timeout_s:g} s")
            code = proc.wait()
        reader.join(OUTPUT_DRAIN_S)
        if self._stopped:
            log.warning("callback %s: %s; stopped (%s)", self.event, self._stopped, _exit_text(code))
        elif code != 0:
            log.warning("callback %s: %s failed (%s)", self.event, self.argv[0], _exit_text(code))
        else:
            log.info("callback %s: done", self.event)

    def _log_output(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        with proc.stdout:
            for line in proc.stdout:
                log.info("callback %s: %s", self.event, line.rstrip("\n"))


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _signal_group(proc: subprocess.Popen[str], sig: signal.Signals) -> None:
    if proc.poll() is not None:
        return  # reaped: its process group id may already belong to someone else
    with contextlib.suppress(ProcessLookupError):  # the whole group is already gone
        os.killpg(proc.pid, sig)
