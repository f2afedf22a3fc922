"""Postgres's OS user can use what the agent hands it (adapters/postgres/access.py), on real directories: as root the
agent opens a closed directory inside the config file's folder (the seed's `data/`, made 0700 by etcd) and hands
over files a run as root made; anywhere else, and as the `postgres` user itself, it names the path in one line."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from adapters.postgres.access import open_the_way
from adapters.postgres.runas import OsUser

AS_ROOT = OsUser.resolve("postgres")  # the agent as root (as the tests run), running Postgres as `postgres`
AS_POSTGRES = replace(AS_ROOT, switch=False)  # the agent run as `postgres` itself


@pytest.fixture
def base() -> Iterator[Path]:
    made = Path(tempfile.mkdtemp(prefix="regent-access-", dir="/dev/shm"))
    made.chmod(0o755)
    yield made
    shutil.rmtree(made)


def closed_dir(path: Path) -> Path:
    path.mkdir(mode=0o700)
    path.chmod(0o700)
    return path


def test_as_root_a_closed_directory_inside_the_config_folder_gets_search_permission(base: Path) -> None:
    data = closed_dir(base / "data")  # as `etcd --data-dir=data/etcd` leaves it
    problems = open_the_way(AS_ROOT, [("postgresql.data_dir", data / "postgresql0")], data / "x.regent", base)
    assert problems == []
    assert stat.S_IMODE(data.stat().st_mode) == 0o701  # enter, not list


def test_a_closed_directory_outside_the_config_folder_is_named_and_left_alone(base: Path) -> None:
    closed = closed_dir(base / "private")
    folder = base / "conf"
    folder.mkdir()
    problems = open_the_way(AS_ROOT, [("postgresql.data_dir", closed / "pg")], closed / "pg.regent", folder)
    assert problems == [
        f"postgresql.data_dir: {closed}/pg: the OS user postgres cannot enter {closed} (mode 0700, owner root); "
        f"give it search permission (chmod o+x {closed}) or choose a path it can reach"
    ]
    assert stat.S_IMODE(closed.stat().st_mode) == 0o700


def test_as_root_files_a_root_run_made_in_regents_own_folder_are_handed_over(base: Path) -> None:
    own = base / "pg.regent"
    own.mkdir(mode=0o700)
    (own / "postgresql.log").write_text("")
    (own / "postgresql.log").chmod(0o600)
    assert open_the_way(AS_ROOT, [("postgresql.config_dir", own)], own, base) == []
    assert own.stat().st_uid == AS_ROOT.uid
    assert (own / "postgresql.log").stat().st_uid == AS_ROOT.uid


def test_as_postgres_a_root_owned_file_in_regents_own_folder_is_named(base: Path) -> None:
    own = base / "pg.regent"
    own.mkdir(mode=0o755)
    os.chown(own, AS_ROOT.uid, AS_ROOT.gid)
    log = own / "postgresql.log"
    log.write_text("")
    log.chmod(0o600)
    problems = open_the_way(AS_POSTGRES, [("postgresql.config_dir", own)], own, base)
    assert problems == [
        f"postgresql.config_dir: {log} (mode 0600, owner root) is not writable by postgres, who runs Postgres "
        "(chown it)"
    ]
    assert log.stat().st_uid == 0


def test_as_postgres_a_data_directory_it_cannot_make_is_named(base: Path) -> None:
    problems = open_the_way(AS_POSTGRES, [("postgresql.data_dir", base / "n0" / "data")], base / "n0.regent", base)
    assert problems == [
        f"postgresql.data_dir: {base} (mode 0755, owner root) is not writable by postgres, who runs Postgres "
        f"(chown it); {base}/n0/data cannot be made in it"
    ]


def test_paths_the_user_can_use_pass_untouched(base: Path) -> None:
    own = base / "pg.regent"
    own.mkdir(mode=0o700)
    os.chown(own, AS_ROOT.uid, AS_ROOT.gid)
    before = own.stat()
    assert open_the_way(AS_POSTGRES, [("postgresql.config_dir", own)], own, base) == []
    assert own.stat() == before
