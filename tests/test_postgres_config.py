"""The `postgresql:` config section: good ones parse to the expected settings, bad ones name the key that is wrong."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from adapters.config_reader import ConfigError
from adapters.postgres.config import PostgresConfigError, parse_postgresql
from adapters.postgres.settings import CALLBACK_EVENTS, DEFAULT_BIN_DIR, Credentials, PostgresSettings, ReplicaMethod

EXAMPLE = """
postgresql:
  name: postgresql0
  listen: 127.0.0.1,127.0.0.2:5432
  connect_address: 127.0.0.1:5432
  data_dir: data/postgresql0
  bin_dir: /usr/lib/postgresql/15/bin
  os_user: postgres
  maximum_lag_on_failover: 1048576
  use_slots: true
  initdb: [{encoding: UTF8}, data-checksums, {locale: en_US.UTF-8}]
  pg_hba: [ "host all all 0.0.0.0/0 md5" ]
  replication: {username: replicator, password: rep-pass, network: 127.0.0.1/32}
  superuser: {username: postgres, password: zalando}
  admin: {username: admin, password: admin}
  callbacks: {on_start: scripts/cb.sh, on_stop: scripts/cb.sh, on_restart: scripts/cb.sh,
              on_reload: scripts/cb.sh, on_role_change: scripts/cb.sh}
  recovery_conf: {restore_command: cp ../wal_archive/%f %p, trigger_file: /tmp/x, standby_mode: on}
  parameters: {archive_mode: "on", wal_level: hot_standby, max_wal_senders: 5, hot_standby: on}
  create_replica_methods: [wal_e, basebackup]
  wal_e: {command: /usr/bin/wal_e_restore --flag "two words", envdir: /etc/env.d/wal-e, threshold_megabytes: 10240,
          no_master: 1, keep_data: true}
"""


@pytest.fixture
def base(tmp_path: Path) -> Path:
    """A config folder holding the executable callback script the example names."""
    script = tmp_path / "scripts" / "cb.sh"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o755)
    return tmp_path


def example() -> dict[str, Any]:
    return yaml.safe_load(EXAMPLE)["postgresql"]


def minimal(**changes: Any) -> dict[str, Any]:
    section: dict[str, Any] = {"name": "pg0", "listen": "127.0.0.1:5432", "connect_address": "10.0.0.1:5432"}
    section["data_dir"] = "/var/lib/pg"
    return {**section, **changes}


def test_the_classic_example_parses(base: Path) -> None:
    script = str(base / "scripts" / "cb.sh")
    settings = parse_postgresql(example(), "batman", base)
    assert settings == PostgresSettings(
        name="postgresql0",
        scope="batman",
        data_dir=base / "data" / "postgresql0",
        listen_addresses=("127.0.0.1", "127.0.0.2"),
        port=5432,
        connect_host="127.0.0.1",
        connect_port=5432,
        bin_dir=Path("/usr/lib/postgresql/15/bin"),
        os_user="postgres",
        config_dir=None,
        maximum_lag_on_failover=1048576,
        use_slots=True,
        initdb=("--encoding=UTF8", "--data-checksums", "--locale=en_US.UTF-8"),
        pg_hba=("host all all 0.0.0.0/0 md5",),
        replication=Credentials("replicator", "rep-pass"),
        replication_network="127.0.0.1/32",
        superuser=Credentials("postgres", "zalando"),
        admin=Credentials("admin", "admin"),
        callbacks=tuple((event, script) for event in CALLBACK_EVENTS),
        recovery_conf=(("promote_trigger_file", "/tmp/x"), ("restore_command", "cp ../wal_archive/%f %p")),
        parameters=(
            ("archive_mode", "on"),
            ("hot_standby", True),
            ("max_wal_senders", 5),
            ("wal_level", "hot_standby"),
        ),
        create_replica_methods=(
            ReplicaMethod(
                "wal_e",
                ("/usr/bin/wal_e_restore", "--flag", "two words"),
                (("envdir", "/etc/env.d/wal-e"), ("no_master", "1"), ("threshold_megabytes", "10240")),
                keep_data=True,
            ),
            ReplicaMethod("basebackup"),
        ),
    )
    assert settings.local_host == "127.0.0.1"


def test_a_minimal_section_takes_the_defaults() -> None:
    settings = parse_postgresql(minimal(), "s")
    assert settings == PostgresSettings(
        name="pg0",
        scope="s",
        data_dir=Path("/var/lib/pg"),
        listen_addresses=("127.0.0.1",),
        port=5432,
        connect_host="10.0.0.1",
        connect_port=5432,
    )
    assert settings.bin_dir == DEFAULT_BIN_DIR and settings.create_replica_methods == (ReplicaMethod("basebackup"),)
    assert settings.replication == Credentials("replicator") and settings.admin is None


@pytest.mark.parametrize(
    ("listen", "addresses", "port"),
    [
        ("*:5433", ("*",), 5433),
        ("[::1]:5432", ("::1",), 5432),
        ("[::]:5432", ("::",), 5432),
        ("::1, 127.0.0.1:6000", ("::1", "127.0.0.1"), 6000),
        ("127.0.0.1,[::1]:5432", ("127.0.0.1", "::1"), 5432),
        ("db.example.com:5432", ("db.example.com",), 5432),
    ],
)
def test_listen_addresses_and_port(listen: str, addresses: tuple[str, ...], port: int) -> None:
    settings = parse_postgresql(minimal(listen=listen, connect_address="[fe80::1]:5432"), "s")
    assert (settings.listen_addresses, settings.port) == (addresses, port)
    assert (settings.connect_host, settings.connect_port) == ("fe80::1", 5432)


def test_relative_paths_are_relative_to_the_config_folder(tmp_path: Path) -> None:
    settings = parse_postgresql(minimal(data_dir="d", bin_dir="bin", config_dir="/etc/regent"), "s", tmp_path)
    assert (settings.data_dir, settings.bin_dir, settings.config_dir) == (
        tmp_path / "d",
        tmp_path / "bin",
        Path("/etc/regent"),
    )


def test_recovery_conf_takes_postgresql_12_names() -> None:
    recovery = {"standby_mode": "on", "trigger_file": "/tmp/t", "recovery_target_timeline": "latest"}
    recovery |= {"recovery_min_apply_delay": "5min", "recovery_target_inclusive": False}
    settings = parse_postgresql(minimal(recovery_conf=recovery), "s")
    assert settings.recovery_conf == (
        ("promote_trigger_file", "/tmp/t"),
        ("recovery_min_apply_delay", "5min"),
        ("recovery_target_inclusive", "off"),
        ("recovery_target_timeline", "latest"),
    )


def test_a_basebackup_section_with_a_command_replaces_the_built_in() -> None:
    settings = parse_postgresql(minimal(basebackup={"command": "my_clone --fast", "retries": 2}), "s")
    assert settings.create_replica_methods == (
        ReplicaMethod("basebackup", ("my_clone", "--fast"), (("retries", "2"),)),
    )
    assert not settings.create_replica_methods[0].builtin


def test_the_scope_in_the_section_may_repeat_the_cluster_s() -> None:
    assert parse_postgresql(minimal(scope="batman"), "batman").scope == "batman"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"name": None}, "postgresql.name: missing"),
        ({"name": ""}, "postgresql.name: empty"),
        ({"name": "pg 0"}, "postgresql.name: 'pg 0' may hold only letters, digits, '-', '_' and '.'"),
        ({"name": "pg/0"}, "postgresql.name: 'pg/0' may hold only"),
        ({"name": 7}, "postgresql.name: expected a string, got int"),
        ({"scope": "robin"}, "postgresql.scope: 'robin' differs from the cluster's scope 's'"),
        ({"listen": None}, "postgresql.listen: missing"),
        ({"listen": "127.0.0.1"}, "postgresql.listen: '127.0.0.1' has no port"),
        ({"listen": "127.0.0.1:5432,127.0.0.2"}, "postgresql.listen: '127.0.0.2' has no port"),
        ({"listen": "127.0.0.1:5432,127.0.0.2:5432"}, "postgresql.listen: '127.0.0.1:5432': only the last"),
        ({"listen": "127.0.0.1:0"}, "postgresql.listen: port '0' in '127.0.0.1:0' is not a port number"),
        ({"listen": "127.0.0.1:65536"}, "postgresql.listen: port '65536'"),
        ({"listen": "127.0.0.1:pg"}, "postgresql.listen: port 'pg'"),
        ({"listen": "::1:5432"}, "postgresql.listen: '::1:5432': write an IPv6 address followed by a port as [addr"),
        ({"listen": "[::1:5432"}, "postgresql.listen: '[::1:5432' is not an address"),
        ({"listen": "a,,b:5432"}, "postgresql.listen: 'a,,b:5432' has an empty address"),
        ({"listen": 5432}, "postgresql.listen: expected a string, got int"),
        ({"connect_address": "10.0.0.1"}, "postgresql.connect_address: '10.0.0.1' has no port"),
        ({"connect_address": "0.0.0.0:5432"}, "postgresql.connect_address: '0.0.0.0' is a wildcard"),
        ({"connect_address": "http://h:5432"}, "postgresql.connect_address: 'http://h:5432' is not an address"),
        ({"connect_address": "[::1]5432"}, "postgresql.connect_address: '[::1]5432' is not an address"),
        ({"data_dir": None}, "postgresql.data_dir: missing"),
        ({"data_dir": ""}, "postgresql.data_dir: empty"),
        ({"os_user": ""}, "postgresql.os_user: empty"),
        ({"maximum_lag_on_failover": -1}, "postgresql.maximum_lag_on_failover: must be 0 or more"),
        ({"maximum_lag_on_failover": "1MB"}, "postgresql.maximum_lag_on_failover: expected a number, got str"),
        ({"maximum_lag_on_failover": True}, "postgresql.maximum_lag_on_failover: expected a number, got a boolean"),
        ({"use_slots": "yes"}, "postgresql.use_slots: expected true or false, got str"),
        ({"initdb": "data-checksums"}, "postgresql.initdb: expected a list, got str"),
        ({"initdb": ["--data-checksums"]}, "postgresql.initdb: '--data-checksums' is not an option name"),
        ({"initdb": [{"encoding": "UTF8", "locale": "C"}]}, "postgresql.initdb: {'encoding': 'UTF8', 'locale': 'C'}"),
        ({"initdb": [{"encoding": ["UTF8"]}]}, "postgresql.initdb.encoding: expected a string or number"),
        ({"initdb": [{"pgdata": "/x"}]}, "postgresql.initdb.pgdata: set by Regent"),
        ({"initdb": ["username"]}, "postgresql.initdb.username: set by Regent"),
        ({"pg_hba": ["host all all 0.0.0.0/0 md5", 7]}, "postgresql.pg_hba: 7 is not a pg_hba.conf line"),
        ({"replication": {"password": "p"}}, "postgresql.replication.username: missing"),
        ({"replication": {"username": "r", "password": 1234}}, "postgresql.replication.password: must be a string"),
        ({"replication": {"username": "r", "network": "10.0.0.0/8 md5"}}, "postgresql.replication.network: '10.0."),
        ({"replication": {"username": "r", "netwrk": "x"}}, "postgresql.replication.netwrk: unknown setting (did you"),
        ({"replication": "replicator"}, "postgresql.replication: must be a mapping, got str"),
        ({"superuser": {"username": "", "password": "p"}}, "postgresql.superuser.username: empty"),
        ({"superuser": {"username": "postgres", "password": True}}, "postgresql.superuser.password: must be a str"),
        ({"admin": {"password": "a"}}, "postgresql.admin.username: missing"),
        ({"admin": {"username": "a", "network": "x"}}, "postgresql.admin.network: unknown setting"),
        (
            {"callbacks": {"on_stp": "/bin/true"}},
            "postgresql.callbacks.on_stp: unknown setting (did you mean 'on_stop'?)",
        ),
        ({"callbacks": {"on_fail": "/bin/true"}}, "postgresql.callbacks.on_fail: unknown setting (known: on_reload, "),
        (
            {"callbacks": {"on_start": "/nonexistent/cb.sh"}},
            "postgresql.callbacks.on_start: '/nonexistent/cb.sh' does n",
        ),
        ({"callbacks": {"on_start": "scripts"}}, "postgresql.callbacks.on_start: 'BASE/scripts' is not a file"),
        (
            {"callbacks": {"on_stop": "scripts/plain.txt"}},
            "callbacks.on_stop: 'BASE/scripts/plain.txt' is not executable",
        ),
        ({"callbacks": {"on_stop": ["/bin/true"]}}, "postgresql.callbacks.on_stop: expected a string, got list"),
        (
            {"recovery_conf": {"primary_conninfo": "host=x"}},
            "postgresql.recovery_conf.primary_conninfo: managed by Reg",
        ),
        ({"recovery_conf": {"primary_slot_name": "s"}}, "postgresql.recovery_conf.primary_slot_name: managed by Reg"),
        ({"recovery_conf": {"restore_comand": "cp"}}, "postgresql.recovery_conf.restore_comand: unknown setting (did"),
        ({"recovery_conf": {"restore_command": ["cp"]}}, "postgresql.recovery_conf.restore_command: expected a str"),
        ({"recovery_conf": {"trigger_file": "a", "promote_trigger_file": "b"}}, "recovery_conf.trigger_file: give it"),
        ({"parameters": {"port": 5433}}, "postgresql.parameters.port: managed by Regent (from postgresql.listen)"),
        ({"parameters": {"Listen_Addresses": "*"}}, "postgresql.parameters.Listen_Addresses: managed by Regent"),
        ({"parameters": {"data_directory": "/x"}}, "postgresql.parameters.data_directory: managed by Regent"),
        ({"parameters": {"hba_file": "/x"}}, "postgresql.parameters.hba_file: managed"),
        ({"parameters": {"config_file": "/x"}}, "postgresql.parameters.config_file: managed"),
        ({"parameters": {"unix_socket_directories": "/x"}}, "postgresql.parameters.unix_socket_directories: managed"),
        ({"parameters": {"primary_conninfo": "x"}}, "postgresql.parameters.primary_conninfo: managed"),
        ({"parameters": {"primary_slot_name": "x"}}, "postgresql.parameters.primary_slot_name: managed"),
        ({"parameters": {"synchronous_standby_names": "*"}}, "postgresql.parameters.synchronous_standby_names: manag"),
        ({"parameters": {"shared_preload_libraries": ["a"]}}, "postgresql.parameters.shared_preload_libraries: expec"),
        ({"parameters": {"work_mem": None}}, "postgresql.parameters.work_mem: expected a string, number or boolean, g"),
        ({"parameters": ["work_mem=4MB"]}, "postgresql.parameters: must be a mapping, got list"),
        ({"parameters": {"work mem": "4MB"}}, "postgresql.parameters.work mem: not a parameter name"),
        ({"parameters": {"x = 1\nport": "4MB"}}, "postgresql.parameters.x = 1\nport: not a parameter name"),
        ({"basebackup": {"max-rate": "100M"}}, "postgresql.basebackup: the built-in basebackup takes no options"),
        ({"create_replica_methods": "basebackup"}, "postgresql.create_replica_methods: expected a list, got str"),
        ({"create_replica_methods": []}, "postgresql.create_replica_methods: empty"),
        ({"create_replica_methods": ["wal_e"]}, "postgresql.wal_e: missing (create_replica_methods lists it"),
        ({"create_replica_methods": ["wal_e"], "wal_e": {"envdir": "/e"}}, "postgresql.wal_e.command: missing"),
        ({"create_replica_methods": ["wal_e"], "wal_e": {"command": ""}}, "postgresql.wal_e.command: empty"),
        ({"create_replica_methods": ["wal_e"], "wal_e": {"command": "x 'y"}}, "postgresql.wal_e.command: No closing"),
        ({"create_replica_methods": ["w"], "w": {"command": "x", "keep_data": "yes"}}, "postgresql.w.keep_data: exp"),
        ({"create_replica_methods": ["w"], "w": {"command": "x", "opts": [1]}}, "postgresql.w.opts: expected a str"),
        ({"create_replica_methods": ["w"], "w": "x"}, "postgresql.w: must be a mapping, got str"),
        ({"create_replica_methods": ["basebackup", "basebackup"]}, "create_replica_methods: 'basebackup' is listed tw"),
        ({"create_replica_methods": ["parameters"]}, "create_replica_methods: 'parameters' is a postgresql setting"),
        ({"create_replica_methods": [{"wal_e": 1}]}, "postgresql.create_replica_methods: {'wal_e': 1} is not a method"),
        ({"wal_e": {"command": "restore"}}, "postgresql.wal_e: a replica method section not listed in create_replica"),
        ({"data_dri": "/x"}, "postgresql.data_dri: unknown setting (did you mean 'data_dir'?)"),
        ({"create_replica_method": ["basebackup"]}, "postgresql.create_replica_method: unknown setting (did you mean"),
    ],
)
def test_a_bad_section_names_the_key(base: Path, changes: dict[str, Any], message: str) -> None:
    (base / "scripts" / "plain.txt").write_text("not a script\n")
    section = {key: value for key, value in minimal(**changes).items() if value is not None}
    with pytest.raises(PostgresConfigError) as raised:
        parse_postgresql(section, "s", base)
    assert message.replace("BASE", str(base)) in str(raised.value)


@pytest.mark.parametrize("section", [None, "postgresql0", ["name"]])
def test_a_section_that_is_not_a_mapping_is_one_problem(section: Any) -> None:
    with pytest.raises(PostgresConfigError) as raised:
        parse_postgresql(section, "s")
    assert len(raised.value.problems) == 1 and raised.value.problems[0].startswith("postgresql: must be a mapping")


def test_every_problem_is_reported_at_once(base: Path) -> None:
    section = example()
    section.update(name="", listen="127.0.0.1", maximum_lag_on_failover=-5, lsiten="x")
    section["replication"] = {"password": 1}
    section["callbacks"] = {"on_start": "missing.sh", "on_fail": "x"}
    section["recovery_conf"]["primary_conninfo"] = "host=a"
    section["parameters"]["port"] = 1
    section["wal_e"].pop("command")
    with pytest.raises(PostgresConfigError) as raised:
        parse_postgresql(section, "batman", base)
    assert isinstance(raised.value, ConfigError)
    keys = [problem.split(":")[0] for problem in raised.value.problems]
    assert sorted(keys) == sorted(
        [
            "postgresql.lsiten",
            "postgresql.name",
            "postgresql.listen",
            "postgresql.maximum_lag_on_failover",
            "postgresql.replication.username",
            "postgresql.replication.password",
            "postgresql.callbacks.on_fail",
            "postgresql.callbacks.on_start",
            "postgresql.recovery_conf.primary_conninfo",
            "postgresql.parameters.port",
            "postgresql.wal_e.command",
        ]
    )


def test_passwords_never_show_in_a_repr() -> None:
    settings = parse_postgresql(minimal(superuser={"username": "postgres", "password": "zalando"}), "s")
    assert "zalando" not in repr(settings)
