"""Whether Postgres's OS user can use the paths the agent hands it, checked once when the agent starts.

Run as root, the agent makes the data directory and its own files for `postgresql.os_user`, but that user must also
be able to enter every directory on the way there. The seed's first command, `etcd --data-dir=data/etcd` run as
root, makes `data/` with mode 0700: a directory like that inside the config file's folder is given search
permission for others (enter, not list), and the log says so. Anywhere else the agent changes nothing and names the
directory. Run as the `postgres` user after a run as root, a file that root made is named the same way.
"""

from __future__ import annotations

import logging
import os
import pwd
import stat
from collections.abc import Iterable
from pathlib import Path

from adapters.postgres.runas import OsUser

log = logging.getLogger(__name__)


def _allows(user: OsUser, info: os.stat_result, bits: tuple[int, int, int]) -> bool:
    """Whether `user` has the permission (`bits`: owner, group, other) on a file with `info`."""
    owner, group, other = bits
    if info.st_uid == user.uid:
        return bool(info.st_mode & owner)
    if info.st_gid == user.gid or info.st_gid in user.groups:
        return bool(info.st_mode & group)
    return bool(info.st_mode & other)


SEARCH = (stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH)
WRITE = (stat.S_IWUSR, stat.S_IWGRP, stat.S_IWOTH)


def _describe(path: Path, info: os.stat_result) -> str:
    try:
        owner = pwd.getpwuid(info.st_uid).pw_name
    except KeyError:
        owner = str(info.st_uid)
    return f"{path} (mode {stat.S_IMODE(info.st_mode):04o}, owner {owner})"


def _closed_parents(user: OsUser, path: Path) -> list[tuple[Path, os.stat_result]]:
    """The existing directories above `path` that `user` cannot enter, outermost first."""
    closed = []
    for parent in reversed(path.parents):
        try:
            info = parent.stat()
        except OSError:
            break  # the rest does not exist yet: the agent makes it, owned by the user
        if not _allows(user, info, SEARCH):
            closed.append((parent, info))
    return closed


def open_the_way(user: OsUser, paths: Iterable[tuple[str, Path]], own_dir: Path, folder: Path) -> list[str]:
    """Make every `(setting, path)` reachable by `user`, and the path and the files in `own_dir` (Regent's own)
    writable by it. As root: a closed directory inside `folder` (the config file's) gets o+x, and a file root made
    is handed to `user`. Returns one problem line per path still out of reach or file still unusable."""
    problems = []
    folder = folder.resolve()
    for setting, path in paths:
        path = path.resolve()
        closed = [found for found in _closed_parents(user, path) if not _open(user, found, folder)]
        if closed:
            parent, info = closed[0]
            problems.append(
                f"{setting}: {path}: the OS user {user.name} cannot enter {_describe(parent, info)}; "
                f"give it search permission (chmod o+x {parent}) or choose a path it can reach"
            )
            continue
        existing = next(parent for parent in (path, *path.parents) if parent.exists())
        if existing != path and not user.switch and (line := _unwritable(user, setting, existing)):
            problems.append(f"{line}; {path} cannot be made in it")
            continue
        targets = [path, *_entries(own_dir)] if path == own_dir.resolve() else [path]
        problems += [line for target in targets if (line := _unwritable(user, setting, target))]
    return problems


def _open(user: OsUser, found: tuple[Path, os.stat_result], folder: Path) -> bool:
    """Give others search permission on a closed directory inside `folder`, when we are root."""
    parent, info = found
    if not (user.switch and (parent == folder or folder in parent.parents)):
        return False
    parent.chmod(stat.S_IMODE(info.st_mode) | stat.S_IXOTH)
    log.info("gave others search permission on %s, so that %s can reach what is inside", parent, user.name)
    return True


def _entries(directory: Path) -> list[Path]:
    try:
        return sorted(directory.iterdir())
    except OSError:
        return []


def _unwritable(user: OsUser, setting: str, path: Path) -> str:
    """A problem line if `user` cannot write `path` (left by a run as another user), else "". As root the agent
    hands a root-owned one over instead."""
    try:
        info = path.lstat()
    except OSError:
        return ""  # not made yet: the agent makes it, owned by the user
    if stat.S_ISLNK(info.st_mode) or _allows(user, info, WRITE):
        return ""
    if user.switch and info.st_uid == 0:
        os.chown(path, user.uid, user.gid)
        log.info("handed %s over to %s (a run as root had made it)", path, user.name)
        return ""
    return f"{setting}: {_describe(path, info)} is not writable by {user.name}, who runs Postgres (chown it)"
