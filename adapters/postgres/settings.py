"""What the Postgres adapter needs to know about this node, as parsed from the `postgresql:` section of the config.

This module only holds the checked values; `runtime.config` builds them from the YAML file and reports bad input
naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_BIN_DIR = Path("/usr/lib/postgresql/15/bin")
CALLBACK_EVENTS = ("on_start", "on_stop", "on_restart", "on_reload", "on_role_change")


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str | None = None

    def __repr__(self) -> str:  # passwords never reach a log line through a repr
        return f"Credentials(username={self.username!r}, password={'***' if self.password else None})"


@dataclass(frozen=True)
class ReplicaMethod:
    """One way to create a replica: the built-in `basebackup`, or a script from the method's own section, run as
    `command --scope=... --datadir=... --role=replica --connstring=... --<key>=<value> ...`."""

    name: str
    command: tuple[str, ...] = ()  # empty for the built-in basebackup
    parameters: tuple[tuple[str, str], ...] = ()  # the section's other keys, passed as --key=value
    keep_data: bool = False  # the script wants the existing data directory left in place

    @property
    def builtin(self) -> bool:
        return self.name == "basebackup" and not self.command


@dataclass(frozen=True)
class PostgresSettings:
    name: str  # this member's name in the cluster
    scope: str
    data_dir: Path
    listen_addresses: tuple[str, ...]  # `listen: 127.0.0.1,10.0.0.5:5432` -> ("127.0.0.1", "10.0.0.5")
    port: int
    connect_host: str  # `connect_address`: what other nodes and applications use
    connect_port: int
    bin_dir: Path = DEFAULT_BIN_DIR
    os_user: str = "postgres"  # Postgres binaries run as this user when the agent runs as root
    # Node-specific files kept outside the data directory, so pg_basebackup and pg_rewind cannot overwrite them:
    # postgresql.conf (with the node's own port, parameters, primary_conninfo, slot name), pg_hba.conf, .pgpass,
    # and the unix socket directory. Default: `<data_dir>.regent/` beside the data directory.
    config_dir: Path | None = None
    pgpass: Path | None = None  # the password file libpq reads; default: `pgpass` in own_dir
    pg_ctl_timeout_s: float = 60.0  # how long a start or a stop may take
    maximum_lag_on_failover: int = 1_048_576
    use_slots: bool = True
    initdb: tuple[str, ...] = ()  # initdb options, as `--encoding=UTF8`, `--data-checksums`, ...
    # pg_hba.conf lines, before the replication line built from `replication.network`: this member's own (None:
    # its config has none; then the DCS config key's, else the bootstrap ones)
    pg_hba: tuple[str, ...] | None = None
    bootstrap_pg_hba: tuple[str, ...] = ()
    replication: Credentials = field(default_factory=lambda: Credentials("replicator"))
    replication_network: str = "127.0.0.1/32"
    superuser: Credentials = field(default_factory=lambda: Credentials("postgres"))
    admin: Credentials | None = None  # created at bootstrap with CREATEDB, CREATEROLE
    rewind: Credentials | None = None  # pg_rewind connects as this role (None: the superuser)
    callbacks: tuple[tuple[str, str], ...] = ()  # (event, script path), events from CALLBACK_EVENTS
    recovery_conf: tuple[tuple[str, str], ...] = ()  # already under PostgreSQL 12+ parameter names
    parameters: tuple[tuple[str, Any], ...] = ()  # postgresql.conf settings of this node
    create_replica_methods: tuple[ReplicaMethod, ...] = (ReplicaMethod("basebackup"),)
    basebackup_options: tuple[str, ...] = ()  # extra pg_basebackup options, as `--max-rate=100M`
    remove_data_directory_on_rewind_failure: bool = False  # delete, not move aside, what a failed pg_rewind left
    remove_data_directory_on_diverged_timelines: bool = False  # delete, not move aside, a diverged directory
    config_folder: Path = Path(".")  # the config file's: a directory inside it may be opened for os_user

    @property
    def own_dir(self) -> Path:
        return self.config_dir or self.data_dir.with_name(self.data_dir.name + ".regent")

    @property
    def pgpass_file(self) -> Path:
        return self.pgpass or self.own_dir / "pgpass"

    @property
    def local_host(self) -> str:
        """Where the agent itself connects: the first listen address (a wildcard means loopback)."""
        first = self.listen_addresses[0] if self.listen_addresses else "127.0.0.1"
        return "127.0.0.1" if first in ("*", "0.0.0.0", "") else ("::1" if first == "::" else first)
