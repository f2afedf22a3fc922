"""From the checked file (`schema.RegentFile`) to the settings the agent and its adapters run with, and the
checks that span several keys (one DCS section, a name given once, both halves of a pair, safe timings).

Where both layouts have a place for a setting (the seed's `etcd.ttl`, `postgresql.name`, `postgresql.superuser`;
Patroni 4's top-level `ttl`, `name`, `postgresql.authentication`), either is taken; both at once is an error
unless they agree.
"""

from __future__ import annotations

import os
import pwd
import shlex
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from adapters.dcs import EtcdSettings, ZooKeeperSettings
from adapters.dcs.settings import ExhibitorSettings
from adapters.postgres.settings import CALLBACK_EVENTS, DEFAULT_BIN_DIR, Credentials, PostgresSettings, ReplicaMethod
from fsm.lease import lease_timing_problems
from fsm.node import dynamic_config
from fsm.observation import ClusterConfig
from fsm.observation import Tags as MemberTags

from . import schema
from .errors import problems_of
from .settings import CtlSettings, LogSettings, RestApiSettings, WatchdogSettings

WAL_SEGMENT_MB = 16  # wal_keep_segments (PostgreSQL 12 and older) becomes wal_keep_size at the default segment size


class Problems(list[str]):
    def check(self, ok: bool, problem: str) -> None:
        if not ok:
            self.append(problem)


def one_of(problems: Problems, places: dict[str, Any]) -> Any:
    """The value given in one of `places` (key path -> value, None when not given); given twice with different
    values is a problem naming both keys."""
    given = {where: value for where, value in places.items() if value is not None}
    if len(set(map(repr, given.values()))) > 1:
        problems.append(" and ".join(given) + ": given in both places with different values; keep one")
    return next(iter(given.values()), None)


def cluster_config(file: schema.RegentFile, problems: Problems) -> ClusterConfig:
    """The local cluster-wide settings (the DCS `config` key overrides them at run time)."""
    dcs_ttl = file.etcd.ttl if file.etcd else None
    margin = one_of(
        problems, {"safety_margin": file.safety_margin, "watchdog.safety_margin": file.watchdog.safety_margin}
    )
    lag = file.postgresql.maximum_lag_on_failover
    d = schema.DEFAULTS
    values = {
        "ttl_s": one_of(problems, {"ttl": file.ttl, "etcd.ttl": dcs_ttl}),
        "loop_wait_s": file.loop_wait,
        "retry_timeout_s": file.retry_timeout,
        "safety_margin_s": margin,
        "maximum_lag_on_failover_bytes": lag,
        "primary_start_timeout_s": file.primary_start_timeout,
        "synchronous_mode": file.synchronous_mode,
        "use_slots": file.postgresql.use_slots,
        "use_pg_rewind": file.postgresql.use_pg_rewind,
    }
    return replace(d, **{key: value for key, value in values.items() if value is not None})


def bootstrap_config(file: schema.RegentFile) -> dict[str, Any]:
    """What the member that initializes the cluster writes to the DCS `config` key: `bootstrap.dcs` as given, the
    local file's cluster-wide values filling what it leaves out, and the defaults of the timing keys (Patroni writes
    its dynamic configuration, defaults included: `patronictl show-config` shows them from the start)."""
    given = file.bootstrap.dcs.model_dump(exclude_unset=True, mode="json")
    d = schema.DEFAULTS
    local = {
        "ttl": file.ttl or (file.etcd.ttl if file.etcd else None) or d.ttl_s,
        "loop_wait": file.loop_wait or d.loop_wait_s,
        "retry_timeout": file.retry_timeout or d.retry_timeout_s,
        "maximum_lag_on_failover": file.postgresql.maximum_lag_on_failover or d.maximum_lag_on_failover_bytes,
        "synchronous_mode": file.synchronous_mode,
    }
    return {**{key: _whole(value) for key, value in local.items() if value is not None}, **given}


def _whole(value: Any) -> Any:
    """30.0 as 30, as Patroni writes its seconds."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def raw_timing_problems(raw: dict[str, Any]) -> list[str]:
    """The timing problems of a file the schema refused, from whichever timing values it gives as numbers, so that
    one round names them with the rest."""
    d = schema.DEFAULTS
    etcd = raw.get("etcd") if isinstance(raw.get("etcd"), dict) else {}

    def number(value: Any, default: float) -> float:
        ok = isinstance(value, int | float) and not isinstance(value, bool) and value > 0
        return float(value) if ok else default

    try:
        local = replace(
            d,
            ttl_s=number(raw.get("ttl", etcd.get("ttl")), d.ttl_s),
            loop_wait_s=number(raw.get("loop_wait"), d.loop_wait_s),
            retry_timeout_s=number(raw.get("retry_timeout"), d.retry_timeout_s),
            safety_margin_s=number(raw.get("safety_margin"), d.safety_margin_s),
        )
    except ValueError:
        return []
    return [f"timing: {problem}" for problem in lease_timing_problems(local)]


def timing_problems(local: ClusterConfig, stored: dict[str, Any]) -> list[str]:
    problems = [f"timing: {problem}" for problem in lease_timing_problems(local)]
    with_dcs = dynamic_config(local, stored)
    if with_dcs != local:
        problems += [f"bootstrap.dcs timing: {problem}" for problem in lease_timing_problems(with_dcs)]
    return problems


def dcs_settings(
    file: schema.RegentFile, scope: str, problems: Problems, ttl_s: float
) -> EtcdSettings | ZooKeeperSettings | None:
    """The one DCS section; ZooKeeper's session (its leader lease) is ttl unless given, as in Patroni."""
    namespace = file.namespace.strip("/") or "service"
    given = [name for name in ("etcd", "etcd3", "zookeeper") if getattr(file, name) is not None]
    if len(given) != 1:
        found = " and ".join(given) if given else "none"
        problems.append(f"etcd / etcd3 / zookeeper: configure exactly one DCS section, found {found}")
        return None
    if given[0] in ("etcd", "etcd3"):
        section, etcd = given[0], getattr(file, given[0])
        hosts = etcd.hosts or ((etcd.host,) if etcd.host else ())
        problems.check(bool(hosts), f"{section}.hosts: missing (at least one host:port, or `host`)")
        problems.check(
            (etcd.username is None) == (etcd.password is None),
            f"{section}.username and {section}.password: give both or neither",
        )
        problems.check(
            (etcd.cert is None) == (etcd.key is None), f"{section}.cert and {section}.key: give both or neither"
        )
        return EtcdSettings(
            scope, hosts, getattr(etcd, "ttl", None) or 30.0, namespace, etcd.protocol, etcd.username, etcd.password,
            _str(etcd.cacert), _str(etcd.cert), _str(etcd.key), api_version=3 if section == "etcd3" else 2,
        )  # fmt: skip
    zk = file.zookeeper
    assert zk is not None
    problems.check(zk.hosts is not None or zk.exhibitor is not None, "zookeeper.hosts: missing (or give exhibitor)")
    exhibitor = None
    if zk.exhibitor is not None:
        names = tuple(host for host, _ in zk.exhibitor.hosts)
        exhibitor = ExhibitorSettings(names, zk.exhibitor.port, zk.exhibitor.poll_interval)
    session_s = zk.session_timeout or ttl_s
    return ZooKeeperSettings(scope, zk.hosts or (), session_s, zk.reconnect_timeout, namespace, exhibitor)


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)


def restapi_settings(api: schema.RestApi, problems: Problems) -> RestApiSettings:
    login = None
    if api.authentication is not None:
        login = (api.authentication.username, api.authentication.password)
    if api.auth is not None:
        problems.check(login is None, "restapi.auth and restapi.authentication: give one")
        user, _, password = api.auth.partition(":")
        login = (user, password)
    problems.check(
        (api.certfile is None) == (api.keyfile is None), "restapi.certfile and restapi.keyfile: give both or neither"
    )
    if api.verify_client != "none":
        problems.check(api.cafile is not None, f"restapi.verify_client: {api.verify_client} needs restapi.cafile")
        problems.check(api.certfile is not None, f"restapi.verify_client: {api.verify_client} needs HTTPS (certfile)")
    host, port = api.listen
    connect = api.connect_address or api.listen
    return RestApiSettings(
        host, port, _joined(connect), login, api.certfile, api.keyfile, api.cafile, api.verify_client,
        tuple(api.allowlist),
    )  # fmt: skip


def _joined(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def postgres_settings(
    file: schema.RegentFile, name: str, scope: str, base_dir: Path, problems: Problems, warnings: list[str]
) -> PostgresSettings:
    pg = file.postgresql
    auth = pg.authentication
    if auth is not None:
        for seed_key in ("superuser", "replication", "pg_rewind"):
            problems.check(
                getattr(pg, seed_key) is None, f"postgresql.{seed_key}: give it under postgresql.authentication"
            )
    superuser = auth.superuser if auth else (pg.superuser or schema.PasswordOnly())
    replication = auth.replication if auth else (pg.replication or schema.ReplicationRole(username="replicator"))
    rewind = auth.rewind if auth else pg.pg_rewind
    network = pg.replication.network if pg.replication else "127.0.0.1/32"
    initdb = one_of(problems, {"postgresql.initdb": pg.initdb, "bootstrap.initdb": file.bootstrap.initdb or None})
    dynamic = file.bootstrap.dcs.postgresql
    bootstrap_pg_hba = file.bootstrap.pg_hba or dynamic.pg_hba or []
    parameters = pg.parameters  # bootstrap.dcs ones reach Postgres through the DCS config key (cluster.conf)
    recovery = (
        pg.recovery_conf if pg.recovery_conf != schema.RecoveryConf() else (dynamic.recovery_conf or pg.recovery_conf)
    )
    own_dir = _path(pg.config_dir, base_dir)
    host, port = pg.connect_address
    problems.check(
        host not in ("*", "0.0.0.0", "::"),
        f"postgresql.connect_address: {host!r} is a wildcard; give an address others can reach",
    )
    _os_user(pg.os_user, problems)
    return PostgresSettings(
        name=name,
        scope=scope,
        data_dir=_path(pg.data_dir, base_dir) or Path(),
        listen_addresses=pg.listen[0],
        port=pg.listen[1],
        connect_host=host,
        connect_port=port,
        bin_dir=_path(pg.bin_dir, base_dir) or DEFAULT_BIN_DIR,
        os_user=pg.os_user,
        config_dir=own_dir,
        pgpass=_path(pg.pgpass, base_dir),
        pg_ctl_timeout_s=pg.pg_ctl_timeout,
        maximum_lag_on_failover=file.postgresql.maximum_lag_on_failover
        or schema.DEFAULTS.maximum_lag_on_failover_bytes,
        use_slots=pg.use_slots if pg.use_slots is not None else dynamic.use_slots,
        initdb=initdb or (),
        pg_hba=None if pg.pg_hba is None else tuple(line.strip() for line in pg.pg_hba),
        bootstrap_pg_hba=tuple(line.strip() for line in bootstrap_pg_hba),
        replication=Credentials(replication.username, replication.password),
        replication_network=network,
        superuser=Credentials(superuser.username, superuser.password),
        admin=Credentials(pg.admin.username, pg.admin.password) if pg.admin else None,
        rewind=Credentials(rewind.username, rewind.password) if rewind else None,
        callbacks=_callbacks(pg.callbacks, base_dir, problems),
        recovery_conf=_recovery(recovery, problems),
        parameters=_parameters(parameters, problems),
        create_replica_methods=_methods(pg, problems, warnings),
        basebackup_options=pg.basebackup,
        remove_data_directory_on_rewind_failure=pg.remove_data_directory_on_rewind_failure,
        remove_data_directory_on_diverged_timelines=pg.remove_data_directory_on_diverged_timelines,
        config_folder=base_dir,
    )


def _path(value: str | None, base_dir: Path) -> Path | None:
    if value is None:
        return None
    return Path(value) if Path(value).is_absolute() else base_dir / value


def _os_user(user: str, problems: Problems) -> None:
    if os.geteuid() != 0:
        return  # not root: Postgres runs as the agent's own user, whoever that is
    try:
        pwd.getpwnam(user)
    except KeyError:
        problems.append(f"postgresql.os_user: {user!r} is no user on this machine (Postgres must run as one)")


def _callbacks(callbacks: schema.Callbacks, base_dir: Path, problems: Problems) -> tuple[tuple[str, str], ...]:
    found = []
    for event in CALLBACK_EVENTS:
        script = getattr(callbacks, event)
        if script is None:
            continue
        path = _path(script, base_dir)
        assert path is not None
        where = f"postgresql.callbacks.{event}: {str(path)!r}"
        if not path.exists():
            problems.append(f"{where} does not exist")
        elif not path.is_file():
            problems.append(f"{where} is not a file")
        elif not os.access(path, os.X_OK):
            problems.append(f"{where} is not executable")
        found.append((event, str(path)))
    return tuple(found)


def _text(value: Any) -> str:
    """A scalar as Postgres and scripts read it: YAML's `on`/`true` arrive as True."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def _recovery(recovery: schema.RecoveryConf, problems: Problems) -> tuple[tuple[str, str], ...]:
    given = recovery.model_dump(exclude_none=True)
    given.pop("standby_mode", None)  # standby.signal now, which Regent writes itself
    if "trigger_file" in given:
        problems.check(
            "promote_trigger_file" not in given,
            "postgresql.recovery_conf.trigger_file: give it or promote_trigger_file, not both",
        )
        given["promote_trigger_file"] = given.pop("trigger_file")
    return tuple(sorted((key, _text(value)) for key, value in given.items()))


def _parameters(parameters: dict[str, Any], problems: Problems) -> tuple[tuple[str, Any], ...]:
    kept = {}
    for key, value in parameters.items():
        if key.lower() == "wal_keep_segments":  # removed in PostgreSQL 13; Patroni converts it the same way
            kept["wal_keep_size"] = f"{int(value) * WAL_SEGMENT_MB}MB" if str(value).isdigit() else value
        else:
            kept[key] = value
    return tuple(sorted(kept.items()))


def _methods(pg: schema.Postgresql, problems: Problems, warnings: list[str]) -> tuple[ReplicaMethod, ...]:
    names = one_of(
        problems,
        {
            "postgresql.create_replica_methods": pg.create_replica_methods,
            "postgresql.create_replica_method": pg.create_replica_method,
        },
    )
    names = names if names is not None else ["basebackup"]
    problems.check(bool(names), "postgresql.create_replica_methods: empty (list at least one, e.g. [basebackup])")
    problems.check(len(names) == len(set(names)), f"postgresql.create_replica_methods: {names} lists a method twice")
    sections = dict(pg.model_extra or {})
    for key in sections:
        if key in names:
            continue
        # the seed's `wal_e:` kept for a method switched off: said at start, not silently ignored
        warnings.append(f"postgresql.{key}: a replica method not listed in create_replica_methods: not used")
    methods = []
    for name in names:
        if name == "basebackup":
            methods.append(ReplicaMethod("basebackup"))
            continue
        if name in schema.Postgresql.model_fields:
            problems.append(f"postgresql.create_replica_methods: {name!r} is a postgresql setting, not a method")
            continue
        section = sections.get(name)
        if section is None:
            problems.append(f"postgresql.{name}: missing (create_replica_methods lists it; give it a command)")
            continue
        methods.append(_method(name, section, problems))
    return tuple(methods)


def _method(name: str, section: dict[str, Any], problems: Problems) -> ReplicaMethod:
    try:
        method = schema.ReplicaMethod.model_validate(section)
    except ValidationError as error:
        problems += problems_of(error, schema.ReplicaMethod, f"postgresql.{name}.")
        return ReplicaMethod(name)
    try:
        argv = tuple(shlex.split(method.command))
    except ValueError as error:  # unbalanced quotes
        problems.append(f"postgresql.{name}.command: {error}")
        argv = ()
    parameters = []
    for key, value in (method.model_extra or {}).items():
        if isinstance(value, str | int | float | bool):
            parameters.append((str(key), str(value).lower() if isinstance(value, bool) else str(value)))
        else:
            problems.append(
                f"postgresql.{name}.{key}: expected a string, number or boolean, got {type(value).__name__}"
            )
    return ReplicaMethod(name, argv, tuple(sorted(parameters)), method.keep_data)


def ctl_settings(ctl: schema.Ctl | None, restapi: RestApiSettings, base_dir: Path) -> CtlSettings:
    """The client's settings; its login defaults to the REST API's own (the same file on the same node)."""
    if ctl is None:
        return CtlSettings(auth=restapi.auth)
    login = (ctl.authentication.username, ctl.authentication.password) if ctl.authentication else restapi.auth
    return CtlSettings(
        auth=login,
        cacert=_path(ctl.cacert, base_dir),
        certfile=_path(ctl.certfile, base_dir),
        keyfile=_path(ctl.keyfile, base_dir),
        insecure=ctl.insecure,
    )


def watchdog_settings(watchdog: schema.Watchdog) -> WatchdogSettings:
    return WatchdogSettings(watchdog.mode, Path(watchdog.device) if watchdog.device else None)


def member_tags(tags: schema.Tags) -> MemberTags:
    return MemberTags(
        nofailover=tags.nofailover,
        nosync=tags.nosync,
        failover_priority=tags.failover_priority,
        noloadbalance=tags.noloadbalance,
        clonefrom=tags.clonefrom,
        nostream=tags.nostream,
        replicatefrom=tags.replicatefrom or None,
    )


def log_settings(log: schema.Log, base_dir: Path) -> LogSettings:
    return LogSettings(
        log.level, log.format, log.dateformat, _path(log.dir, base_dir), log.file_num, log.file_size,
        tuple(sorted(log.loggers.items())),
    )  # fmt: skip
