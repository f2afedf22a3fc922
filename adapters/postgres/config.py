"""The `postgresql:` section of the YAML config, checked, with every problem reported at once naming its key.

postgresql:
  name: postgresql0                      # letters, digits, '-', '_', '.'
  listen: 127.0.0.1,127.0.0.2:5432       # addresses, comma-separated; the port after the last; [v6] brackets allowed
  connect_address: 127.0.0.1:5432        # what other nodes and applications connect to
  data_dir: data/postgresql0             # relative paths (data_dir, bin_dir, config_dir, callbacks) are relative
  bin_dir / os_user / config_dir         #   to the config file's folder
  maximum_lag_on_failover: 1048576
  use_slots: true
  initdb: [{encoding: UTF8}, data-checksums]
  pg_hba: [host all all 0.0.0.0/0 md5]
  replication: {username: replicator, password: rep-pass, network: 127.0.0.1/32}
  superuser: {username: postgres, password: zalando}
  admin: {username: admin, password: admin}
  callbacks: {on_start: /path/script.sh, on_stop: ..., on_restart: ..., on_reload: ..., on_role_change: ...}
  recovery_conf: {restore_command: cp ../wal_archive/%f %p}
  parameters: {wal_level: hot_standby, max_wal_senders: 5}
  create_replica_methods: [wal_e, basebackup]
  wal_e: {command: /usr/bin/wal_e_restore, envdir: /etc/env.d/wal-e, keep_data: true}

recovery_conf keeps the old recovery.conf spelling, but PostgreSQL 12 removed that file: its settings are ordinary
parameters now and a standby is whatever has a `standby.signal` file. So `standby_mode` is dropped (Regent writes
standby.signal itself whenever it runs Postgres as a standby), `trigger_file` becomes `promote_trigger_file` (which
PostgreSQL 16 removed in turn), and `primary_conninfo` / `primary_slot_name` are refused: Regent points every standby
at the current leader itself.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path
from typing import Any

from adapters.config_reader import ConfigError, SectionReader
from adapters.postgres.settings import (
    CALLBACK_EVENTS,
    DEFAULT_BIN_DIR,
    Credentials,
    PostgresSettings,
    ReplicaMethod,
)

SECTION = "postgresql"
KEYS = {
    "name", "scope", "listen", "connect_address", "data_dir", "bin_dir", "os_user", "config_dir",
    "maximum_lag_on_failover", "use_slots", "initdb", "pg_hba", "replication", "superuser", "admin", "callbacks",
    "recovery_conf", "parameters", "create_replica_methods",
}  # fmt: skip
NAME = re.compile(r"[A-Za-z0-9_.-]+")
PARAMETER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")  # `work_mem`, or `pg_stat_statements.max` for extensions
WILDCARDS = ("*", "0.0.0.0", "::")

# postgresql.conf settings Regent writes itself, and where their value comes from.
MANAGED_PARAMETERS = {
    "port": "from postgresql.listen",
    "listen_addresses": "from postgresql.listen",
    "data_directory": "from postgresql.data_dir",
    "hba_file": "written from postgresql.pg_hba",
    "config_file": "written in postgresql.config_dir",
    "unix_socket_directories": "the socket lives in postgresql.config_dir",
    "primary_conninfo": "from the current leader's connect_address",
    "primary_slot_name": "from this member's name",
    "synchronous_standby_names": "synchronous mode sets it",
}
# The recovery settings PostgreSQL 12+ knows, plus the recovery.conf-only ones handled below.
RECOVERY_PARAMETERS = {
    "restore_command", "archive_cleanup_command", "recovery_end_command", "recovery_min_apply_delay",
    "recovery_target", "recovery_target_name", "recovery_target_time", "recovery_target_xid", "recovery_target_lsn",
    "recovery_target_inclusive", "recovery_target_timeline", "recovery_target_action", "promote_trigger_file",
}  # fmt: skip
RECOVERY_LEGACY = {"standby_mode", "trigger_file", "primary_conninfo", "primary_slot_name"}
# initdb options Regent passes itself (-D from data_dir, -U from superuser.username, the password file it writes).
MANAGED_INITDB = {
    "pgdata": "postgresql.data_dir",
    "username": "postgresql.superuser",
    "pwfile": "postgresql.superuser.password",
}
METHOD_KEYS = {"command", "keep_data"}
SCALARS = (str, int, float, bool)


class PostgresConfigError(ConfigError):
    """One or more `postgresql` settings are wrong; each line names its setting."""


def parse_postgresql(section: Any, scope: str, base_dir: Path = Path(".")) -> PostgresSettings:
    """Parse `postgresql:`; `scope` is the cluster's (from the DCS section), `base_dir` the config file's folder."""
    reader = SectionReader(section, SECTION, PostgresConfigError)
    if reader.problems:
        reader.done()  # not a mapping: every other line would only repeat it
    methods = _method_names(reader)
    _unknown(reader, methods)
    given_scope = reader.take("scope", str)
    if given_scope is not None and scope and given_scope != scope:
        reader.problems.append(f"postgresql.scope: {given_scope!r} differs from the cluster's scope {scope!r}")
    name = _name(reader)
    listen_addresses, port = _listen(reader)
    connect_host, connect_port = _connect_address(reader)
    data_dir = _path(reader, "data_dir", base_dir, required=True) or Path()  # Path() only with a problem recorded
    bin_dir = _path(reader, "bin_dir", base_dir) or DEFAULT_BIN_DIR
    config_dir = _path(reader, "config_dir", base_dir)
    os_user = reader.take("os_user", str, "postgres")
    if not os_user.strip():
        reader.problems.append("postgresql.os_user: empty")
    lag = reader.take("maximum_lag_on_failover", int, 1_048_576)
    if lag < 0:
        reader.problems.append(f"postgresql.maximum_lag_on_failover: must be 0 or more bytes, got {lag}")
    use_slots = reader.take("use_slots", bool, True)
    initdb = _initdb(reader)
    pg_hba = _pg_hba(reader)
    replication = _credentials(reader, "replication") or Credentials("replicator")
    network = _replication_network(reader)
    superuser = _credentials(reader, "superuser") or Credentials("postgres")
    admin = _credentials(reader, "admin")
    callbacks = _callbacks(reader, base_dir)
    recovery_conf = _recovery_conf(reader)
    parameters = _parameters(reader)
    replica_methods = tuple(_replica_method(reader, method) for method in methods)
    reader.done()
    return PostgresSettings(
        name=name,
        scope=scope,
        data_dir=data_dir,
        listen_addresses=listen_addresses,
        port=port,
        connect_host=connect_host,
        connect_port=connect_port,
        bin_dir=bin_dir,
        os_user=os_user,
        config_dir=config_dir,
        maximum_lag_on_failover=lag,
        use_slots=use_slots,
        initdb=initdb,
        pg_hba=pg_hba,
        replication=replication,
        replication_network=network,
        superuser=superuser,
        admin=admin,
        callbacks=callbacks,
        recovery_conf=recovery_conf,
        parameters=parameters,
        create_replica_methods=replica_methods,
    )


def _unknown(reader: SectionReader, methods: list[str]) -> None:
    """Unknown keys; a method section left out of create_replica_methods gets its own hint (the usual cause)."""
    known = KEYS | set(methods)
    orphans = {key for key, value in reader.section.items() if key not in known and isinstance(value, dict)}
    orphans = {key for key in orphans if "command" in reader.section[key] or key == "basebackup"}
    for key in sorted(orphans, key=str):
        reader.problems.append(f"postgresql.{key}: a replica method section not listed in create_replica_methods")
    reader.unknown(known | orphans)


def _name(reader: SectionReader) -> str:
    name = reader.take("name", str, required=True)
    if name is None:
        return ""
    if not name:
        reader.problems.append("postgresql.name: empty")
    elif not NAME.fullmatch(name):
        reader.problems.append(f"postgresql.name: {name!r} may hold only letters, digits, '-', '_' and '.'")
    return name


def _path(reader: SectionReader, key: str, base_dir: Path, required: bool = False) -> Path | None:
    value = reader.take(key, str, required=required)
    if value is None:
        return None
    if not value.strip():
        reader.problems.append(f"postgresql.{key}: empty")
    return base_dir / value if not Path(value).is_absolute() else Path(value)


def _address(text: str, setting: str, port_wanted: bool) -> tuple[str, int]:
    """`host`, `host:port`, `[v6]`, `[v6]:port`, or a bare v6 address without port -> (host, port or 0)."""
    port_text = None
    if any(c.isspace() or c in "/@" for c in text):  # a URL, a CIDR network, user@host
        raise ValueError(f"{setting}: {text!r} is not an address")
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"{setting}: {text!r} is not an address ([v6]:port)")
        port_text = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host = text  # a name, an IPv4 address, or an IPv6 one without brackets
        if port_wanted and ":" in text:
            raise ValueError(f"{setting}: {text!r}: write an IPv6 address followed by a port as [address]:port")
    if not host or any(c in "[]" for c in host):
        raise ValueError(f"{setting}: {text!r} is not an address")
    if not port_wanted:
        if port_text is not None:
            raise ValueError(f"{setting}: {text!r}: only the last address carries the port")
        return host, 0
    if port_text is None:
        raise ValueError(f"{setting}: {text!r} has no port (address:port)")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{setting}: port {port_text!r} in {text!r} is not a port number (1-65535)")
    return host, int(port_text)


def _listen(reader: SectionReader) -> tuple[tuple[str, ...], int]:
    text = reader.take("listen", str, required=True)
    if text is None:
        return (), 0
    items = [item.strip() for item in text.split(",")]
    addresses: list[str] = []
    port = 0
    for position, item in enumerate(items):
        last = position == len(items) - 1
        if not item:
            reader.problems.append(f"postgresql.listen: {text!r} has an empty address")
            continue
        try:
            host, item_port = _address(item, "postgresql.listen", port_wanted=last)
        except ValueError as error:
            reader.problems.append(str(error))
            continue
        addresses.append(host)
        port = item_port if last else port
    return tuple(addresses), port


def _connect_address(reader: SectionReader) -> tuple[str, int]:
    text = reader.take("connect_address", str, required=True)
    if text is None:
        return "", 0
    try:
        host, port = _address(text.strip(), "postgresql.connect_address", port_wanted=True)
    except ValueError as error:
        reader.problems.append(str(error))
        return "", 0
    if host in WILDCARDS:
        reader.problems.append(f"postgresql.connect_address: {host!r} is a wildcard; give an address others can reach")
    return host, port


def _initdb(reader: SectionReader) -> tuple[str, ...]:
    """`[{encoding: UTF8}, data-checksums]` -> ("--encoding=UTF8", "--data-checksums")."""
    items = reader.take("initdb", list, [])
    options = []
    for item in items:
        if isinstance(item, str):
            option, value = item, None
        elif isinstance(item, dict) and len(item) == 1:
            option, value = next(iter(item.items()))
            if not isinstance(value, str | int | float) or isinstance(value, bool):
                reader.problems.append(f"postgresql.initdb.{option}: expected a string or number, got {value!r}")
                continue
        else:
            reader.problems.append(f"postgresql.initdb: {item!r} is neither an option nor a one-key mapping")
            continue
        option = str(option)
        if not option or option.startswith("-") or any(c.isspace() or c == "=" for c in option):
            reader.problems.append(f"postgresql.initdb: {option!r} is not an option name (write it without '--')")
        elif option in MANAGED_INITDB:
            reader.problems.append(f"postgresql.initdb.{option}: set by Regent (from {MANAGED_INITDB[option]})")
        else:
            options.append(f"--{option}" if value is None else f"--{option}={value}")
    return tuple(options)


def _pg_hba(reader: SectionReader) -> tuple[str, ...]:
    lines = reader.take("pg_hba", list, [])
    for line in lines:
        if not isinstance(line, str) or not line.strip():
            reader.problems.append(f"postgresql.pg_hba: {line!r} is not a pg_hba.conf line")
    return tuple(line.strip() for line in lines if isinstance(line, str) and line.strip())


def _credentials(reader: SectionReader, key: str) -> Credentials | None:
    """`{username, password}` (replication also has `network`); None when the section is absent."""
    if reader.section.get(key) is None:
        return None
    sub = SectionReader(reader.section[key], f"postgresql.{key}")
    if sub.problems:  # not a mapping
        reader.problems.extend(sub.problems)
        return None
    sub.unknown({"username", "password", "network"} if key == "replication" else {"username", "password"})
    username = sub.take("username", str, required=True)
    if username is not None and not username.strip():
        sub.problems.append(f"postgresql.{key}.username: empty")
    password = sub.section.get("password")
    if password is not None and not isinstance(password, str):
        # `password: 1234` reads as a number; a password is text, and we do not guess how the user spelled it
        sub.problems.append(f"postgresql.{key}.password: must be a string (quote it), got {type(password).__name__}")
        password = None
    reader.problems.extend(sub.problems)
    return Credentials(username or "", password)


def _replication_network(reader: SectionReader) -> str:
    section = reader.section.get("replication")
    network = section.get("network", "127.0.0.1/32") if isinstance(section, dict) else "127.0.0.1/32"
    if not isinstance(network, str) or not network.strip() or any(c.isspace() for c in network.strip()):
        reader.problems.append(f"postgresql.replication.network: {network!r} is not a pg_hba address (like 10.0.0.0/8)")
        return "127.0.0.1/32"
    return network.strip()


def _callbacks(reader: SectionReader, base_dir: Path) -> tuple[tuple[str, str], ...]:
    if reader.section.get("callbacks") is None:
        return ()
    sub = SectionReader(reader.section["callbacks"], "postgresql.callbacks")
    sub.unknown(set(CALLBACK_EVENTS))
    callbacks = []
    for event in CALLBACK_EVENTS:
        script = sub.take(event, str)
        if script is None:
            continue
        path = base_dir / script if not Path(script).is_absolute() else Path(script)
        if not path.exists():
            sub.problems.append(f"postgresql.callbacks.{event}: {str(path)!r} does not exist")
        elif not path.is_file():
            sub.problems.append(f"postgresql.callbacks.{event}: {str(path)!r} is not a file")
        elif not os.access(path, os.X_OK):
            sub.problems.append(f"postgresql.callbacks.{event}: {str(path)!r} is not executable")
        callbacks.append((event, str(path)))
    reader.problems.extend(sub.problems)
    return tuple(callbacks)


def _text(value: Any) -> str:
    """A scalar as Postgres and scripts read it: YAML's `on`/`true` arrive as True."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def _recovery_conf(reader: SectionReader) -> tuple[tuple[str, str], ...]:
    if reader.section.get("recovery_conf") is None:
        return ()
    sub = SectionReader(reader.section["recovery_conf"], "postgresql.recovery_conf")
    sub.unknown(RECOVERY_PARAMETERS | RECOVERY_LEGACY)
    settings: dict[str, str] = {}
    for key, value in sub.section.items():
        if key not in RECOVERY_PARAMETERS | RECOVERY_LEGACY or key == "standby_mode":
            continue  # unknown ones are reported above; standby_mode is standby.signal now, which Regent writes
        if key in ("primary_conninfo", "primary_slot_name"):
            sub.problems.append(f"postgresql.recovery_conf.{key}: managed by Regent ({MANAGED_PARAMETERS[key]})")
            continue
        if not isinstance(value, SCALARS):
            sub.problems.append(f"postgresql.recovery_conf.{key}: expected a string or number, got {value!r}")
            continue
        name = "promote_trigger_file" if key == "trigger_file" else key
        if name in settings:
            sub.problems.append("postgresql.recovery_conf.trigger_file: give it or promote_trigger_file, not both")
        settings[name] = _text(value)
    reader.problems.extend(sub.problems)
    return tuple(sorted(settings.items()))


def _parameters(reader: SectionReader) -> tuple[tuple[str, Any], ...]:
    if reader.section.get("parameters") is None:
        return ()
    sub = SectionReader(reader.section["parameters"], "postgresql.parameters")
    parameters = []
    for key, value in sub.section.items():
        managed = MANAGED_PARAMETERS.get(str(key).lower())  # Postgres parameter names ignore case
        if not PARAMETER_NAME.fullmatch(str(key)):
            sub.problems.append(f"postgresql.parameters.{key}: not a parameter name")
        elif managed:
            sub.problems.append(f"postgresql.parameters.{key}: managed by Regent ({managed})")
        elif not isinstance(value, SCALARS):
            got = "nothing" if value is None else type(value).__name__
            sub.problems.append(f"postgresql.parameters.{key}: expected a string, number or boolean, got {got}")
        else:
            parameters.append((str(key), value))
    reader.problems.extend(sub.problems)
    return tuple(sorted(parameters))


def _method_names(reader: SectionReader) -> list[str]:
    names = reader.take("create_replica_methods", list)
    if names is None:
        return ["basebackup"] if "create_replica_methods" not in reader.section else []
    if not names:
        reader.problems.append("postgresql.create_replica_methods: empty (list at least one, e.g. [basebackup])")
    valid: list[str] = []
    for name in names:
        if not isinstance(name, str) or not NAME.fullmatch(name):
            reader.problems.append(f"postgresql.create_replica_methods: {name!r} is not a method name")
        elif name in KEYS:
            reader.problems.append(f"postgresql.create_replica_methods: {name!r} is a postgresql setting, not a method")
        elif name in valid:
            reader.problems.append(f"postgresql.create_replica_methods: {name!r} is listed twice")
        else:
            valid.append(name)
    return valid


def _replica_method(reader: SectionReader, name: str) -> ReplicaMethod:
    """`basebackup` is built in; any other name needs a section with a `command` (a `basebackup` section with one
    replaces the built-in). The section's other keys are passed to the command as --key=value."""
    if name == "basebackup" and reader.section.get(name) is None:
        return ReplicaMethod("basebackup")
    where = f"postgresql.{name}"
    if reader.section.get(name) is None:
        reader.problems.append(f"{where}: missing (create_replica_methods lists it; give it a command)")
        return ReplicaMethod(name)
    sub = SectionReader(reader.section[name], where)
    if sub.problems:  # not a mapping
        reader.problems.extend(sub.problems)
        return ReplicaMethod(name)
    if name == "basebackup" and "command" not in sub.section:
        # the built-in pg_basebackup takes no options from here: refuse them rather than ignore them
        reader.problems.append(f"{where}: the built-in basebackup takes no options; give a command to replace it")
        return ReplicaMethod(name)
    command = sub.take("command", str, required=True)
    argv: tuple[str, ...] = ()
    if command is not None:
        try:
            argv = tuple(shlex.split(command))
            if not argv:
                sub.problems.append(f"{where}.command: empty")
        except ValueError as error:  # unbalanced quotes
            sub.problems.append(f"{where}.command: {error}")
    keep_data = sub.take("keep_data", bool, False)
    parameters = []
    for key, value in sub.section.items():
        if key in METHOD_KEYS:
            continue
        if isinstance(value, SCALARS):
            parameters.append((str(key), str(value).lower() if isinstance(value, bool) else str(value)))
        else:
            got = "nothing" if value is None else type(value).__name__
            sub.problems.append(f"{where}.{key}: expected a string, number or boolean, got {got}")
    reader.problems.extend(sub.problems)
    return ReplicaMethod(name, argv, tuple(sorted(parameters)), keep_data)
