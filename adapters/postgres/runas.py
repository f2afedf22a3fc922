"""Running Postgres binaries as the Postgres OS user, and making files and directories that user owns.

Postgres refuses to run as root, and the agent usually is root: every binary (initdb, postgres, pg_basebackup,
pg_rewind, pg_controldata, replica scripts) runs as `settings.os_user`, without a shell, with a clean environment
(PATH, that user's HOME, PGPASSFILE, C locale so that tool output parses), its own groups (not root's) and a timeout
that kills the whole process group. When the agent is not root, it runs everything as itself.

A command's failure is data (`Ran`), never an exception: the caller turns it into a `Result` carrying the tool's own
message. Only a missing OS user raises, once, when the adapter is built: that is a configuration error.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from adapters.errors import ConfigError

log = logging.getLogger(__name__)

SETTING = "postgresql.os_user"


class OsUserError(ConfigError):
    """The configured OS user cannot run Postgres on this machine."""

    def __init__(self, message: str) -> None:
        super().__init__([f"{SETTING}: {message}"])


@dataclass(frozen=True)
class OsUser:
    """Who runs the Postgres binaries. `switch` is True when we are root and must change to this user."""

    name: str
    uid: int
    gid: int
    home: str
    groups: tuple[int, ...]
    switch: bool

    @classmethod
    def resolve(cls, name: str) -> OsUser:
        """The user `name` when we are root (raising OsUserError if it does not exist or is root itself); the
        current user otherwise, since only root can switch."""
        if os.geteuid() != 0:
            entry = pwd.getpwuid(os.geteuid())
            return cls(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir, tuple(os.getgroups()), switch=False)
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise OsUserError(
                f"no OS user {name!r} on this machine; Postgres refuses to run as root, so Regent runs its binaries "
                f"as this user (create it, or name an existing one)"
            ) from None
        if entry.pw_uid == 0:
            raise OsUserError(f"{name!r} is root; Postgres refuses to run as root, name an unprivileged user")
        groups = tuple(os.getgrouplist(entry.pw_name, entry.pw_gid))
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir, groups, switch=True)


@dataclass(frozen=True)
class Ran:
    """What a command did. `returncode` is None when it could not start or ran out of time (see `error`)."""

    argv: tuple[str, ...]
    returncode: int | None
    stdout: str
    stderr: str
    elapsed_s: float
    error: str = ""  # why it did not finish: a timeout, a missing program

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def message(self, lines: int = 6) -> str:
        """The tool's own words about what went wrong: the last lines of stderr (else stdout), one line."""
        text = self.stderr.strip() or self.stdout.strip()
        tail = " | ".join(line.strip() for line in text.splitlines()[-lines:] if line.strip())
        program = Path(self.argv[0]).name if self.argv else "?"
        if self.error:
            return f"{program}: {self.error}" + (f": {tail}" if tail else "")
        return f"{program} exited with {self.returncode}" + (f": {tail}" if tail else "")


class Runner:
    """Runs programs as `user` with a clean environment; `bin_dir` comes first on PATH."""

    def __init__(self, user: OsUser, bin_dir: Path, passfile: Path | None = None) -> None:
        self.user = user
        self.bin_dir = bin_dir
        self.passfile = passfile

    def env(self) -> dict[str, str]:
        env = {
            "PATH": f"{self.bin_dir}:/usr/local/bin:/usr/bin:/bin",
            "HOME": self.user.home,
            "USER": self.user.name,
            "LOGNAME": self.user.name,
            "LC_ALL": "C.UTF-8",  # tool output (pg_controldata) is parsed; messages stay untranslated
        }
        if self.passfile is not None:
            env["PGPASSFILE"] = str(self.passfile)
        return env

    def _identity(self) -> dict[str, object]:
        if not self.user.switch:
            return {}
        return {"user": self.user.uid, "group": self.user.gid, "extra_groups": list(self.user.groups)}

    def program(self, name: str) -> str:
        return str(self.bin_dir / name)

    def run(self, argv: list[str], timeout_s: float, extra_env: dict[str, str] | None = None) -> Ran:
        """Run `argv` (never through a shell) and wait at most `timeout_s`, then kill its whole process group."""
        args = tuple(argv)
        log.debug("running as %s: %s", self.user.name, " ".join(args))
        started = time.monotonic()
        try:
            process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env={**self.env(), **(extra_env or {})},
                cwd="/",  # our own cwd may be root's home, which the user cannot enter
                start_new_session=True,  # a timeout kills the children too (pg_basebackup's WAL streamer)
                umask=0o077,
                **self._identity(),  # type: ignore[arg-type]
            )
        except OSError as error:
            return Ran(args, None, "", "", time.monotonic() - started, error=f"cannot run: {error.strerror}")
        try:
            out, err = process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            out, err = process.communicate()
            return Ran(
                args, None, _text(out), _text(err), time.monotonic() - started, error=f"timed out after {timeout_s} s"
            )
        return Ran(args, process.returncode, _text(out), _text(err), time.monotonic() - started)

    def spawn(self, argv: list[str], log_path: Path) -> subprocess.Popen[bytes]:
        """Start a long-running program (the postmaster) in its own session, output appended to `log_path`.
        Raises OSError if it cannot start."""
        log.debug("starting as %s: %s", self.user.name, " ".join(argv))
        with open(log_path, "ab") as output:
            self.chown(log_path)  # a later run as the user itself can append to it
            return subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=self.env(),
                cwd="/",
                start_new_session=True,  # the agent's terminal signals must not reach the postmaster
                umask=0o077,
                **self._identity(),  # type: ignore[arg-type]
            )

    # --- files the user owns -------------------------------------------------------------------------

    def chown(self, path: Path) -> None:
        if self.user.switch:
            os.chown(path, self.user.uid, self.user.gid)

    def make_dir(self, path: Path, mode: int = 0o700) -> None:
        """Create `path` (and missing parents, owned by the user too) with `mode`; fix owner and mode if present."""
        missing = [parent for parent in (path, *path.parents) if not parent.exists()]
        for created in reversed(missing):
            created.mkdir(mode=mode)
            self.chown(created)
        path.chmod(mode)
        self.chown(path)

    def write_file(self, path: Path, text: str, mode: int = 0o600) -> None:
        """Replace `path` atomically with `text`, owned by the user: a crash leaves the old or the new file."""
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(temporary, mode)
            if self.user.switch:
                os.chown(temporary, self.user.uid, self.user.gid)
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise


def _text(data: bytes | None) -> str:
    return (data or b"").decode("utf-8", errors="replace")
