"""The configuration schema: users' real files parse as written, defaults come from one place, and every broken
config exits 2 with a line that names the key path (the corpus below, run through `regent --validate`)."""

from __future__ import annotations

import copy
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from adapters.dcs import EtcdSettings, ZooKeeperSettings
from adapters.dcs.layout import REGENT_VERSION
from adapters.postgres.runas import OsUser
from adapters.postgres.settings import CALLBACK_EVENTS, Credentials, ReplicaMethod
from fsm.node import dynamic_config
from fsm.observation import ClusterConfig
from runtime.cli import main, setup_logging
from runtime.config import ConfigError, dynamic_problems, load, parse
from runtime.config.environment import overlay

CONFIGS = Path(__file__).parent / "configs"


def minimal() -> dict[str, Any]:
    """Only the required keys."""
    return {
        "scope": "batman",
        "name": "pg0",
        "restapi": {"listen": "127.0.0.1:8008"},
        "etcd": {"host": "127.0.0.1:2379"},
        "postgresql": {"listen": "127.0.0.1:5432", "connect_address": "127.0.0.1:5432", "data_dir": "/var/lib/pg"},
    }


def problems(raw: Any, base: Path = Path(".")) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        parse(raw, base)
    return raised.value.problems


def changed(path: str, value: Any, raw: dict[str, Any] | None = None) -> dict[str, Any]:
    """`raw` (default: minimal) with the key at dotted `path` set to `value` (None: removed)."""
    result = copy.deepcopy(raw if raw is not None else minimal())
    *parents, last = path.split(".")
    node = result
    for key in parents:
        node = node.setdefault(key, {})
    if value is None:
        node.pop(last, None)
    else:
        node[last] = value
    return result


# --- real files, as written ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["patroni-4.1-postgres0.yml", "patroni-4.1-postgres1.yml"])
def test_patroni_4_sample_files_parse_as_written(name: str) -> None:
    config = load(CONFIGS / name, environ={})
    pg = config.postgresql
    assert config.name.startswith("postgresql") and pg.scope == "batman"
    assert isinstance(config.dcs, EtcdSettings) and config.dcs.hosts == (("127.0.0.1", 2379),)
    assert pg.superuser == Credentials("postgres", "patroni") and pg.rewind == Credentials(
        "rewind_user", "rewind_password"
    )
    assert pg.pgpass is not None and pg.initdb == ("--encoding=UTF8", "--data-checksums")
    assert pg.pg_hba is None  # the file's lines are bootstrap.dcs ones: the DCS config key's, once it is written
    assert pg.bootstrap_pg_hba == ("host replication replicator 127.0.0.1/32 md5", "host all all 0.0.0.0/0 md5")
    assert ("unix_socket_directories", "..") in pg.parameters
    assert config.bootstrap_dcs["ttl"] == 30 and config.bootstrap_dcs["postgresql"]["use_pg_rewind"] is True
    assert config.tags.noloadbalance is False and config.tags.clonefrom is False


def test_patroni_4_basebackup_options_reach_pg_basebackup() -> None:
    config = load(CONFIGS / "patroni-4.1-postgres1.yml", environ={})
    assert config.postgresql.basebackup_options == ("--verbose", "--max-rate=100M")


def test_the_seed_file_parses_as_written() -> None:
    config = load(CONFIGS / "seed-postgres0.yml", environ={})
    pg = config.postgresql
    assert (config.name, pg.scope, config.cluster.ttl_s, config.cluster.loop_wait_s) == (
        "postgresql0",
        "batman",
        30,
        10,
    )
    assert pg.superuser == Credentials("postgres", "zalando") and pg.admin == Credentials("admin", "admin")
    assert pg.replication == Credentials("replicator", "rep-pass") and pg.replication_network == "127.0.0.1/32"
    assert pg.create_replica_methods == (ReplicaMethod("basebackup"),)
    assert config.restapi.auth == ("username", "password")
    assert ("wal_keep_size", "128MB") in pg.parameters  # wal_keep_segments: 8, which PostgreSQL 13 removed
    # the wal_e section of a method switched off is said at start, not silently ignored
    assert config.warnings == ("postgresql.wal_e: a replica method not listed in create_replica_methods: not used",)


def test_a_config_with_only_the_required_keys_runs_on_the_core_s_defaults() -> None:
    config = parse(minimal())
    assert config.cluster == ClusterConfig()
    assert config.postgresql.create_replica_methods == (ReplicaMethod("basebackup"),)
    assert config.watchdog.mode == "automatic" and config.restapi.connect_address == "127.0.0.1:8008"
    # a new cluster's config key starts with the timing Patroni writes (patronictl show-config shows it at once)
    assert config.bootstrap_dcs == {"ttl": 30, "loop_wait": 10, "retry_timeout": 10, "maximum_lag_on_failover": 1 << 20}


def test_failsafe_mode_is_cluster_wide_only_as_in_patroni() -> None:
    config = parse(changed("bootstrap.dcs.failsafe_mode", True))
    assert config.bootstrap_dcs["failsafe_mode"] is True  # written to the config key when the cluster is made
    assert config.cluster.failsafe_mode is False  # until the agent reads that key
    assert dynamic_config(config.cluster, {"failsafe_mode": True}).failsafe_mode is True
    assert "failsafe_mode" not in parse(minimal()).bootstrap_dcs
    assert dynamic_problems({"failsafe_mode": True}) == []  # PATCH /config, regentctl edit-config -s failsafe_mode=true
    assert dynamic_problems({"failsafe_mode": "on"}) == ["failsafe_mode: expected true or false, got text 'on'"]


def test_relative_paths_are_relative_to_the_config_folder(tmp_path: Path) -> None:
    raw = changed("postgresql.data_dir", "d", changed("postgresql.bin_dir", "bin"))
    pg = parse(changed("postgresql.config_dir", "/etc/regent", raw), tmp_path).postgresql
    assert (pg.data_dir, pg.bin_dir, pg.config_dir) == (tmp_path / "d", tmp_path / "bin", Path("/etc/regent"))


@pytest.mark.parametrize(
    ("listen", "addresses", "port"),
    [
        ("*:5433", ("*",), 5433),
        ("[::1]:5432", ("::1",), 5432),
        ("::1, 127.0.0.1:6000", ("::1", "127.0.0.1"), 6000),
        ("127.0.0.1,[::1]:5432", ("127.0.0.1", "::1"), 5432),
        ("db.example.com:5432", ("db.example.com",), 5432),
    ],
)
def test_listen_addresses_and_port(listen: str, addresses: tuple[str, ...], port: int) -> None:
    pg = parse(changed("postgresql.listen", listen)).postgresql
    assert (pg.listen_addresses, pg.port) == (addresses, port)


def test_recovery_conf_takes_postgresql_12_names() -> None:
    recovery = {"standby_mode": "on", "trigger_file": "/tmp/t", "recovery_min_apply_delay": "5min"}
    pg = parse(changed("postgresql.recovery_conf", {**recovery, "recovery_target_inclusive": False})).postgresql
    assert pg.recovery_conf == (
        ("promote_trigger_file", "/tmp/t"),
        ("recovery_min_apply_delay", "5min"),
        ("recovery_target_inclusive", "off"),
    )


def test_a_replica_method_script_gets_its_section_s_other_keys() -> None:
    raw = changed("postgresql.create_replica_method", "wal_e, basebackup")  # the seed's spelling, as text
    raw = changed(
        "postgresql.wal_e", {"command": "/usr/bin/restore --flag 'two words'", "envdir": "/e", "keep_data": True}, raw
    )
    methods = parse(raw).postgresql.create_replica_methods
    assert methods == (
        ReplicaMethod("wal_e", ("/usr/bin/restore", "--flag", "two words"), (("envdir", "/e"),), keep_data=True),
        ReplicaMethod("basebackup"),
    )


def test_zookeeper_with_exhibitor_needs_no_hosts() -> None:
    raw = changed("etcd", None, changed("zookeeper", {"exhibitor": {"hosts": ["e1", "e2"], "port": 8181}}))
    dcs = parse(raw).dcs
    assert isinstance(dcs, ZooKeeperSettings) and dcs.hosts == () and dcs.exhibitor is not None
    assert dcs.exhibitor.hosts == ("e1", "e2")


def test_zookeepers_session_defaults_to_the_ttl_the_cluster_starts_with_as_in_patroni() -> None:
    on_zookeeper = changed("etcd", None, changed("zookeeper", {"hosts": ["h:2181"]}))
    short = {**on_zookeeper, "ttl": 12, "loop_wait": 2, "retry_timeout": 5}
    assert parse(short).dcs.session_timeout_s == 12  # type: ignore[union-attr]
    timings = {"ttl": 20, "loop_wait": 5, "retry_timeout": 5}
    assert parse(changed("bootstrap.dcs", timings, on_zookeeper)).dcs.session_timeout_s == 20  # type: ignore[union-attr]
    given = changed("zookeeper.session_timeout", 40, on_zookeeper)
    assert parse(given).dcs.session_timeout_s == 40  # type: ignore[union-attr]


def test_every_callback_event_is_a_key(tmp_path: Path) -> None:
    script = tmp_path / "cb.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    pg = parse(changed("postgresql.callbacks", {event: "cb.sh" for event in CALLBACK_EVENTS}), tmp_path).postgresql
    assert pg.callbacks == tuple((event, str(script)) for event in CALLBACK_EVENTS)


def test_passwords_never_show_in_a_repr() -> None:
    raw = changed("postgresql.authentication", {"superuser": {"username": "postgres", "password": "zalando"}})
    raw = changed("restapi.authentication", {"username": "u", "password": "secret-api"}, raw)
    config = parse(raw)
    assert "zalando" not in repr(config.postgresql) and "secret-api" not in repr(config.restapi)


# --- PATRONI_* environment variables -------------------------------------------------------------------------


def test_environment_variables_override_the_file_in_its_own_layout() -> None:
    environ = {
        "PATRONI_NAME": "pg9",
        "PATRONI_SCOPE": "robin",
        "PATRONI_RESTAPI_LISTEN": "127.0.0.1:9008",
        "PATRONI_RESTAPI_USERNAME": "admin",
        "PATRONI_RESTAPI_PASSWORD": "pw",
        "PATRONI_ETCD_HOSTS": "'h1:2379','h2:2380'",
        "PATRONI_POSTGRESQL_DATA_DIR": "/srv/pg",
        "PATRONI_SUPERUSER_PASSWORD": "s3",
        "PATRONI_REPLICATION_USERNAME": "repl",
    }
    seed = yaml.safe_load((CONFIGS / "seed-postgres0.yml").read_text())
    config = parse(overlay(seed, environ))
    assert (config.name, config.postgresql.scope, config.restapi.listen_port) == ("pg9", "robin", 9008)
    assert config.restapi.auth == ("admin", "pw")  # over the seed's `auth: 'username:password'`
    assert isinstance(config.dcs, EtcdSettings) and config.dcs.hosts == (("h1", 2379), ("h2", 2380))
    assert config.postgresql.superuser.password == "s3" and config.postgresql.replication.username == "repl"
    assert config.postgresql.data_dir == Path("/srv/pg")


def test_an_etcd3_section_speaks_the_v3_api_and_takes_its_own_variables() -> None:
    raw = changed("etcd", None)
    raw["etcd3"] = {"hosts": ["h1:2379"], "protocol": "https", "username": "u", "password": "p"}
    config = parse(overlay(raw, {"PATRONI_ETCD3_HOSTS": "'h2:2379','h3:2380'"}))
    assert isinstance(config.dcs, EtcdSettings) and config.dcs.api_version == 3
    assert (config.dcs.hosts, config.dcs.protocol, config.dcs.username) == ((("h2", 2379), ("h3", 2380)), "https", "u")
    assert parse(minimal()).dcs.api_version == 2  # type: ignore[union-attr]


def test_environment_variables_leave_the_parsed_file_unchanged() -> None:
    raw = minimal()
    overlay(raw, {"PATRONI_NAME": "other"})
    assert raw == minimal()


# --- the corpus of broken configs ----------------------------------------------------------------------------

CERT = "/nonexistent/cert.pem"
BROKEN: list[tuple[str, Any, str]] = [
    # (key path, value, a piece of the line `regent --validate` prints)
    ("restapi.listen", "not-an-address:x", "restapi.listen: port 'x' in 'not-an-address:x' is not a port number"),
    ("restapi.listen", "http://127.0.0.1:8008", "restapi.listen: 'http://127.0.0.1:8008' is not an address"),
    ("restapi.listen", None, "restapi.listen: missing"),
    ("restapi.listen", 8008, "restapi.listen: expected host:port text, got a number"),
    ("restapi.connect_address", "[::1", "restapi.connect_address: '[::1' is not an address"),
    ("restapi.auth", "nopassword", "restapi.auth: expected 'user:password'"),
    ("restapi.authentication", {"username": "u"}, "restapi.authentication.password: missing"),
    ("restapi.authentication", {"username": "u", "password": 1234}, "restapi.authentication.password: expected text"),
    ("restapi.certfile", CERT, f"restapi.certfile: {CERT} cannot be read"),
    ("restapi.verify_client", "always", "restapi.verify_client: 'always' is not one of 'none', 'optional' or 'requ"),
    ("restapi.verify_client", "required", "restapi.verify_client: required needs restapi.cafile"),
    ("restapi.allowlist", ["10.0.0.0/33"], "restapi.allowlist[0]: '10.0.0.0/33' is not an IP address or network"),
    ("restapi.lisen", "x", "restapi.lisen: unknown setting (did you mean 'listen'?)"),
    ("restapi", "127.0.0.1:8008", "restapi: expected a mapping, got text"),
    ("etcd.host", "127.0.0.1:70000", "etcd.host: port '70000' in '127.0.0.1:70000' is not a port number"),
    ("etcd.hosts", ["h:1", 7], "etcd.hosts: 7 is not a host:port string"),
    ("etcd.hosts", [], "etcd.hosts: empty"),
    ("etcd.protocol", "gopher", "etcd.protocol: 'gopher' is not one of 'http' or 'https'"),
    ("etcd.username", "u", "etcd.username and etcd.password: give both or neither"),
    ("etcd.ttl", "thirty", "etcd.ttl: expected a number, got text 'thirty'"),
    ("etcd.ttl", -1, "etcd.ttl: must be greater than 0, got -1"),
    ("etcd.hots", ["h"], "etcd.hots: unknown setting (did you mean 'hosts'?)"),
    ("etcd", None, "etcd / etcd3 / zookeeper: configure exactly one DCS section, found none"),
    (
        "zookeeper",
        {"hosts": ["h:2181"]},
        "etcd / etcd3 / zookeeper: configure exactly one DCS section, found etcd and zookeeper",
    ),
    ("etcd3", {"hosts": "h:2379"}, "etcd / etcd3 / zookeeper: configure exactly one DCS section, found etcd and etcd3"),
    ("etcd3", {"host": "h:2379", "ttl": 30}, "etcd3.ttl: unknown setting"),  # v3 has no seed layout: the top-level ttl
    ("etcd3", {"host": "h:2379", "username": "u"}, "etcd3.username and etcd3.password: give both or neither"),
    ("etcd3", {"hosts": []}, "etcd3.hosts: empty"),
    ("consul", {"host": "h"}, "consul: Patroni's setting for the Consul DCS"),
    (
        "zookeeper",
        {"hosts": "h:2181", "session_timeout": True},
        "zookeeper.session_timeout: expected a number, got a b",
    ),
    ("zookeeper", {"exhibitor": {"port": 8181}}, "zookeeper.exhibitor.hosts: missing"),
    ("zookeeper", {"exhibitor": {"port": 0, "hosts": ["e"]}}, "zookeeper.exhibitor.port: must be greater than 0"),
    ("zookeeper", {"exhibitor": "e1:8181"}, "zookeeper.exhibitor: expected a mapping, got text"),
    ("zookeeper", {"hosts": ["h"], "session_timeout": 10}, "zookeeper.session_timeout (10) is shorter than ttl (30)"),
    ("scope", None, "scope: missing"),
    ("scope", "a/b", "scope: 'a/b' may hold only letters"),
    ("name", None, "name: missing"),
    ("ttl", 0, "ttl: must be greater than 0, got 0"),
    ("ttl", True, "ttl: expected a number, got a boolean (true)"),
    ("loop_wait", 25, "timing: loop_wait (25) + 2 * retry_timeout"),
    ("bootstrap.dcs.retry_timeout", 20, "bootstrap.dcs timing: loop_wait (10) + 2 * retry_timeout (20)"),
    ("bootstrap.dcs.standby_cluster", {"host": "h"}, "bootstrap.dcs.standby_cluster: Patroni's setting for standby"),
    ("bootstrap.dcs.failsafe_mode", "yes", "bootstrap.dcs.failsafe_mode: expected true or false, got text 'yes'"),
    ("failsafe_mode", True, "failsafe_mode: cluster-wide only, as in Patroni: set it under bootstrap.dcs (a new cl"),
    ("postgresql.failsafe_mode", True, "postgresql.failsafe_mode: cluster-wide only, as in Patroni"),
    ("bootstrap.dcs.postgresql.parameters", {"max_connections": ["a"]}, "bootstrap.dcs.postgresql.parameters.max_co"),
    ("bootstrap.initdb", ["--data-checksums"], "bootstrap.initdb: '--data-checksums' is not an option name"),
    ("bootstrap.post_init", "/x.sh", "bootstrap.post_init: Patroni's setting for a post_init script"),
    ("safety_margin", 3, "safety_margin and watchdog.safety_margin: given in both places"),
    ("watchdog.mode", "sometimes", "watchdog.mode: 'sometimes' is not one of 'off', 'automatic' or 'required'"),
    ("tags.failover_priority", -1, "tags.failover_priority: must be greater than or equal to 0, got -1"),
    ("tags.nofailover", "yes", "tags.nofailover: expected true or false, got text 'yes'"),
    ("tags.nostream", "yes", "tags.nostream: expected true or false"),
    ("tags.replicatefrom", 7, "tags.replicatefrom: expected text, got int 7"),
    ("log.level", "LOUD", "log.level: 'LOUD' is not one of"),
    ("log.file_num", 0, "log.file_num: must be greater than or equal to 1, got 0"),
    ("postgresql.listen", "127.0.0.1", "postgresql.listen: '127.0.0.1' has no port"),
    ("postgresql.connect_address", "0.0.0.0:5432", "postgresql.connect_address: '0.0.0.0' is a wildcard"),
    ("postgresql.data_dir", "", "postgresql.data_dir: empty"),
    ("postgresql.os_user", "no-such-user-here", "postgresql.os_user: 'no-such-user-here' is no user on this machine"),
    ("postgresql.maximum_lag_on_failover", "1MB", "postgresql.maximum_lag_on_failover: expected a whole number"),
    ("postgresql.pg_ctl_timeout", 0, "postgresql.pg_ctl_timeout: must be greater than 0"),
    ("postgresql.authentication", {"superuser": {"password": 5}}, "postgresql.authentication.superuser.password: e"),
    ("postgresql.authentication", {"rewind": {"password": "p"}}, "postgresql.authentication.rewind.username: miss"),
    ("postgresql.replication", {"username": "r", "netwrk": "x"}, "postgresql.replication.netwrk: unknown setting (di"),
    ("postgresql.parameters", {"port": 5433}, "postgresql.parameters.port: managed by Regent (from postgresql.listen)"),
    ("postgresql.parameters", {"work mem": "4MB"}, "postgresql.parameters['work mem']: 'work mem' is not a parameter"),
    ("postgresql.parameters", {"work_mem": ["4MB"]}, "postgresql.parameters.work_mem: expected a string, number or "),
    ("postgresql.recovery_conf", {"primary_conninfo": "host=x"}, "postgresql.recovery_conf.primary_conninfo: managed"),
    ("postgresql.pg_hba", ["host all all 0.0.0.0/0 md5", 7], "postgresql.pg_hba[1]: expected text, got int 7"),
    ("postgresql.create_replica_methods", ["wal_e"], "postgresql.wal_e: missing (create_replica_methods lists it"),
    ("postgresql.basebackup", [{"pgdata": "/x"}], "postgresql.basebackup: pgdata: set by Regent"),
    (
        "postgresql.callbacks",
        {"on_stp": "/bin/true"},
        "postgresql.callbacks.on_stp: unknown setting (did you mean 'on_",
    ),
    ("postgresql.callbacks", {"on_start": "/nonexistent/cb.sh"}, "postgresql.callbacks.on_start: '/nonexistent/cb.sh'"),
    ("postgresql.proxy_address", "127.0.0.1:6432", "postgresql.proxy_address: Patroni's setting for a connection poo"),
    ("postgresql.data_dri", "/x", "postgresql.data_dri: unknown setting (did you mean 'data_dir'?)"),
]


@pytest.mark.parametrize(("path", "value", "line"), BROKEN, ids=[f"{p}={v!r}"[:60] for p, v, _ in BROKEN])
def test_a_broken_config_exits_2_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], path: str, value: Any, line: str
) -> None:
    raw = changed(path, value)
    if path in ("zookeeper", "etcd3") and "found" not in line:
        raw.pop("etcd")
    if path == "safety_margin":
        raw = changed("watchdog.safety_margin", 5, raw)
    file = tmp_path / "postgres0.yml"
    file.write_text(yaml.safe_dump(raw))
    assert main(["--validate", str(file)]) == 2
    printed = capsys.readouterr().err
    assert f"{file}: {line}" in printed, printed


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("", "config: empty"),
        ("# only a comment\n", "config: empty"),
        ("- a\n- list\n", "config: must be a mapping of settings, got list"),
        ("scope: [unclosed\n", "not valid YAML"),
    ],
)
def test_an_empty_or_unreadable_file_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, line: str
) -> None:
    file = tmp_path / "postgres0.yml"
    file.write_text(text)
    assert main(["--validate", str(file)]) == 2
    assert line in capsys.readouterr().err


@pytest.fixture
def root_logging() -> Iterator[None]:
    """The root logger's handlers and level as they were: `regent` replaces them with the config's."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:], root.level = handlers, level


def test_the_log_section_sets_level_format_loggers_and_a_rotated_file(tmp_path: Path, root_logging: None) -> None:
    raw = {"level": "WARNING", "format": "%(levelname)s|%(name)s|%(message)s", "dir": str(tmp_path / "logs")}
    raw |= {"file_size": 4096, "file_num": 2, "loggers": {"regent.chatty": "ERROR"}}
    settings = parse(changed("log", raw)).log
    setup_logging(settings)
    logging.getLogger("regent.test").info("not at level WARNING")
    logging.getLogger("regent.chatty").warning("below its own logger's ERROR")
    for turn in range(200):  # 60 bytes a line: about three files' worth
        logging.getLogger("regent.test").warning("turn %03d of a log that outgrows 4096 bytes", turn)
    files = sorted(path.name for path in (tmp_path / "logs").iterdir())
    assert files == ["regent.log", "regent.log.1", "regent.log.2"]  # file_num rotated copies, no more
    newest = (tmp_path / "logs" / "regent.log").read_text()
    assert newest.splitlines()[-1] == "WARNING|regent.test|turn 199 of a log that outgrows 4096 bytes"
    everything = "".join((tmp_path / "logs" / name).read_text() for name in files)
    assert "not at level" not in everything and "chatty" not in everything


def test_as_root_the_log_folder_and_file_it_makes_belong_to_postgres_but_a_given_folder_stays(
    tmp_path: Path, root_logging: None
) -> None:
    user = OsUser.resolve("postgres")
    given = tmp_path / "given"
    given.mkdir()
    for folder in (tmp_path / "made" / "logs", given):
        setup_logging(parse(changed("log", {"dir": str(folder)})).log, owner=user)
    assert [(tmp_path / "made" / "logs" / name).stat().st_uid for name in (".", "regent.log")] == [user.uid] * 2
    assert given.stat().st_uid == 0 and (given / "regent.log").stat().st_uid == user.uid


def test_postgres_port_in_use_names_the_key_and_the_address(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], root_logging: None
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        raw = changed("postgresql.listen", f"127.0.0.1:{port}", changed("postgresql.data_dir", str(tmp_path / "data")))
        file = tmp_path / "postgres0.yml"
        file.write_text(yaml.safe_dump(raw))
        assert main([str(file)]) == 1
    assert f"postgresql.listen: cannot listen on 127.0.0.1:{port}: Address already in use" in capsys.readouterr().err


def test_a_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--validate", str(tmp_path / "absent.yml")]) == 2
    assert "cannot read: No such file or directory" in capsys.readouterr().err


def test_version_and_patronis_validate_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"regent {REGENT_VERSION}"
    assert main(["--validate-config", str(tmp_path / "absent.yml")]) == 2  # `patroni --validate-config` works too
    assert "cannot read" in capsys.readouterr().err


def test_every_problem_is_reported_at_once() -> None:
    raw = changed("restapi.listen", "x:y", changed("etcd.ttl", 0, changed("postgresql.lsiten", "z")))
    keys = sorted(line.split(":")[0] for line in problems(raw))
    assert keys == ["etcd.ttl", "postgresql.lsiten", "restapi.listen"]


def test_an_unreadable_key_file_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "key.pem"
    key.write_text("secret")
    key.chmod(0)
    cert = tmp_path / "cert.pem"
    cert.write_text("cert")
    raw = changed("restapi.keyfile", str(key), changed("restapi.certfile", str(cert)))
    if os.geteuid() == 0:  # root reads any file: a directory is what root cannot read as a file
        raw = changed("restapi.keyfile", str(tmp_path), raw)
    assert any(line.startswith("restapi.keyfile: ") and "cannot be read" in line for line in problems(raw))
