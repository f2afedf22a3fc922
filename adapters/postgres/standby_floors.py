"""The settings a hot standby needs at least as high as its primary: max_connections, max_worker_processes,
max_wal_senders, max_prepared_transactions and max_locks_per_transaction.

The primary's values reach a standby in its WAL and land in the standby's pg_control. A standby started with a lower
value than pg_control's exits at once; one that runs when its primary raises a value pauses replay until it restarts.
So a standby starts with the higher of its own setting and pg_control's (Patroni does the same), and shows
pending_restart while it runs with other values than its settings say, or while replay waits for a restart.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from .runas import Runner

log = logging.getLogger(__name__)

# setting -> its line in pg_controldata's output
FLOORS = {
    "max_connections": "max_connections setting",
    "max_worker_processes": "max_worker_processes setting",
    "max_wal_senders": "max_wal_senders setting",
    "max_prepared_transactions": "max_prepared_xacts setting",
    "max_locks_per_transaction": "max_locks_per_xact setting",
}
SHOW_TIMEOUT_S = 10.0

Floors = tuple[tuple[str, int], ...]


def parse_floors(fields: Mapping[str, str]) -> Floors:
    """The primary's values as pg_controldata prints them (a version without a line leaves that setting out)."""
    return tuple((name, int(fields[line])) for name, line in FLOORS.items() if line in fields)


def configured(runner: Runner, data_dir: Path, conf: Path, name: str) -> int | None:
    """What the files give `name` (`postgres -C`: our postgresql.conf, the cluster-wide file it includes and the
    data directory's postgresql.auto.conf, as a start would read them); None if postgres cannot tell."""
    argv = [runner.program("postgres"), "-D", str(data_dir), "-c", f"config_file={conf}", "-C", name]
    ran = runner.run(argv, SHOW_TIMEOUT_S)
    try:
        return int(ran.stdout.strip()) if ran.ok else None
    except ValueError:
        return None


def raised(runner: Runner, data_dir: Path, conf: Path, floors: Floors) -> Floors:
    """The settings a standby must start with higher than its files say: pg_control's value where it is higher."""
    found = []
    for name, floor in floors:
        own = configured(runner, data_dir, conf, name)
        if own is not None and own < floor:
            log.warning(
                "%s: the primary runs %d (pg_controldata), this member's settings say %d: starting with %d; "
                "pending restart until they agree",
                name, floor, own, floor,
            )  # fmt: skip
            found.append((name, floor))
    return tuple(found)


def short(floors: Floors, running: Mapping[str, int]) -> list[str]:
    """The settings a running standby has lower than its primary's (its replay then waits for a restart)."""
    return [f"{name} {running[name]} < {floor}" for name, floor in floors if name in running and running[name] < floor]
