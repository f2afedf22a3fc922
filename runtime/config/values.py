"""The value types of the configuration schema: addresses, host lists, readable files, command options, Postgres
parameters (with the ones Regent manages refused), and the checks behind them. Each raises ValueError with what
is wrong, without the key: `errors.problems_of` adds the key path."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, Field, PlainValidator

from .addresses import host_port, listen_list

NAME = re.compile(r"[A-Za-z0-9_.-]+")
PARAMETER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")  # `work_mem`, or `pg_stat_statements.max`


def _address(default_port: int | None) -> Any:
    def parse(value: Any) -> tuple[str, int]:
        if not isinstance(value, str):
            raise ValueError(f"expected host:port text, got {_kind(value)}")
        return host_port(value, default_port)

    return Annotated[tuple[str, int], PlainValidator(parse)]


def _hosts(default_port: int) -> Any:
    """A list of host:port, or one comma-separated string of them (`h1:2379,h2:2379`)."""

    def parse(value: Any) -> tuple[tuple[str, int], ...]:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list):
            raise ValueError(f"expected a list of host:port, got {_kind(value)}")
        if not items:
            raise ValueError("empty (give at least one host:port)")
        for item in items:
            if not isinstance(item, str):
                raise ValueError(f"{item!r} is not a host:port string")
        return tuple(host_port(item, default_port) for item in items)

    return Annotated[tuple[tuple[str, int], ...], PlainValidator(parse)]


def _kind(value: Any) -> str:
    return {bool: "a boolean", str: "text", int: "a number", float: "a number", list: "a list", dict: "a mapping"}.get(
        type(value), "nothing" if value is None else type(value).__name__
    )


def _readable_file(value: Any) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a file path, got {_kind(value)}")
    path = Path(value)
    try:
        path.open("rb").close()
    except OSError as error:
        raise ValueError(f"{value} cannot be read ({error.strerror})") from None
    return path


def _scalar(value: Any) -> str | int | float | bool:
    if isinstance(value, str | int | float | bool):
        return value
    raise ValueError(f"expected a string, number or boolean, got {_kind(value)}")


def _one_or_more_names(value: Any) -> Any:
    """The seed's `create_replica_method: wal_e, basebackup` (text) or Patroni's list."""
    return [part.strip() for part in value.split(",")] if isinstance(value, str) else value


Seconds = Annotated[float, Field(gt=0)]
Port = Annotated[int, Field(gt=0, lt=65536)]
ReadableFile = Annotated[Path, PlainValidator(_readable_file)]
Scalar = Annotated[str | int | float | bool, PlainValidator(_scalar)]
Text = Annotated[str, Field(min_length=1)]
Name = Annotated[str, Field(min_length=1, pattern=f"^{NAME.pattern}$")]


def _network(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected an address or network, got {_kind(value)}")
    try:
        return str(ipaddress.ip_network(value.strip(), strict=False))
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address or network (10.0.0.0/8)") from None


MANAGED_PARAMETERS = {
    "port": "from postgresql.listen",
    "listen_addresses": "from postgresql.listen",
    "data_directory": "from postgresql.data_dir",
    "hba_file": "written from postgresql.pg_hba",
    "ident_file": "written in postgresql.config_dir",
    "config_file": "written in postgresql.config_dir",
    "primary_conninfo": "from the current leader's connect_address",
    "primary_slot_name": "from this member's name",
    "synchronous_standby_names": "synchronous mode sets it",
}
# Settings a standby needs at least as high as its primary's (PostgreSQL refuses to run a hot standby otherwise),
# and others whose value is a plain count: a typo in them would stop Postgres at its next start.
COUNTS = {
    "max_connections", "max_worker_processes", "max_wal_senders", "max_prepared_transactions",
    "max_locks_per_transaction", "max_replication_slots", "max_parallel_workers", "wal_keep_segments",
}  # fmt: skip


def _counts(parameters: dict[str, Any]) -> dict[str, Any]:
    for name, value in parameters.items():
        if name.lower() in COUNTS and not (
            (isinstance(value, int) and not isinstance(value, bool) and value >= 0)
            or (isinstance(value, str) and value.strip().isdigit())
        ):
            raise ValueError(f"{name}: expected a count (a whole number, 0 or more), got {value!r}")
    return parameters


Parameters = Annotated[
    dict[Annotated[str, Field(pattern=f"^{PARAMETER_NAME.pattern}$")], Scalar], AfterValidator(_counts)
]


def _options(managed: dict[str, str]) -> Any:
    """A command's options as YAML lists them, `- data-checksums` or `- encoding: UTF8`, -> ("--data-checksums",
    "--encoding=UTF8"); the ones Regent passes itself (`managed`: option -> the setting it comes from) are refused."""

    def parse(value: Any) -> tuple[str, ...]:
        if isinstance(value, dict):  # Patroni also takes `basebackup: {max-rate: 100M, checkpoint: fast}`
            value = [{key: argument} for key, argument in value.items()]
        if not isinstance(value, list):
            raise ValueError(f"expected a list of options, got {_kind(value)}")
        options = []
        for item in value:
            if isinstance(item, dict) and len(item) == 1:
                option, argument = next(iter(item.items()))
                if not isinstance(argument, str | int | float) or isinstance(argument, bool):
                    raise ValueError(f"{option}: expected a string or number, got {_kind(argument)}")
            elif isinstance(item, str):
                option, argument = item, None
            else:
                raise ValueError(f"{item!r} is neither an option nor a one-key mapping")
            option = str(option)
            if not option or option.startswith("-") or any(c.isspace() or c == "=" for c in option):
                raise ValueError(f"{option!r} is not an option name (write it without '--')")
            if option in managed:
                raise ValueError(f"{option}: set by Regent (from {managed[option]})")
            options.append(f"--{option}" if argument is None else f"--{option}={argument}")
        return tuple(options)

    return Annotated[tuple[str, ...], PlainValidator(parse)]


# Options Regent passes itself: initdb's -D, -U and password file; pg_basebackup's target, source and WAL method.
InitdbOptions = _options({"pgdata": "postgresql.data_dir", "username": "the superuser", "pwfile": "its password"})
BasebackupOptions = _options(
    {"pgdata": "postgresql.data_dir", "dbname": "the leader's address", "host": "the leader's address",
     "port": "the leader's address", "username": "the replication role", "wal-method": "Regent streams WAL"}
)  # fmt: skip


def _not_managed(parameters: dict[str, Any]) -> dict[str, Any]:
    for name in parameters:
        if name.lower() in MANAGED_PARAMETERS:
            raise ValueError(f"{name}: managed by Regent ({MANAGED_PARAMETERS[name.lower()]})")
    return parameters


ClusterParameters = Annotated[Parameters, AfterValidator(_not_managed)]


def _managed(value: Any) -> None:
    raise ValueError("managed by Regent: each standby streams from the current leader, through its own slot")


Managed = Annotated[None, PlainValidator(_managed)]


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected text, got {_kind(value)}")
    return value


def _listen(value: Any) -> tuple[tuple[str, ...], int]:
    return listen_list(_text(value))


Listen = Annotated[tuple[tuple[str, ...], int], PlainValidator(_listen)]
