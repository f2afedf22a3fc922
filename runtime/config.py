"""The agent's YAML config (`regent postgres0.yml`), loaded and checked as a whole.

Top-level keys, as in Patroni's postgres0.yml: `scope`, `namespace`, `name`, `ttl`, `loop_wait`, `retry_timeout`,
`safety_margin`, `primary_start_timeout`, `synchronous_mode`, `restapi`, `etcd` or `zookeeper`, `postgresql`,
`watchdog`, `tags`. Every problem is reported at once, one line each, naming its key; timings that break the lease
argument are refused with the rule they break (see `fsm.lease`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from adapters.config_reader import ConfigError, SectionReader
from adapters.dcs import EtcdSettings, ZooKeeperSettings, settings_from
from adapters.dcs.settings import parse_host
from adapters.postgres.config import parse_postgresql
from adapters.postgres.settings import PostgresSettings
from fsm.lease import lease_timing_problems
from fsm.observation import ClusterConfig, Tags

TOP_LEVEL = {
    "scope", "namespace", "name", "ttl", "loop_wait", "retry_timeout", "safety_margin", "primary_start_timeout",
    "synchronous_mode", "restapi", "etcd", "zookeeper", "postgresql", "watchdog", "tags", "log",
}  # fmt: skip
WATCHDOG_MODES = ("off", "automatic", "required")


@dataclass(frozen=True)
class RestApiSettings:
    listen_host: str
    listen_port: int
    connect_address: str  # host:port other nodes and HAProxy use
    auth: tuple[str, str] | None = None  # (user, password) for the unsafe methods
    certfile: Path | None = None
    keyfile: Path | None = None

    def __repr__(self) -> str:  # never print the password
        return f"RestApiSettings({self.listen_host}:{self.listen_port}, auth={'***' if self.auth else None})"


@dataclass(frozen=True)
class WatchdogSettings:
    mode: str = "automatic"  # off | automatic | required
    device: Path | None = None  # Linux /dev/watchdog, used when present and asked for


@dataclass(frozen=True)
class RegentConfig:
    name: str
    cluster: ClusterConfig
    dcs: EtcdSettings | ZooKeeperSettings
    postgresql: PostgresSettings
    restapi: RestApiSettings
    watchdog: WatchdogSettings = field(default_factory=WatchdogSettings)
    tags: Tags = field(default_factory=Tags)
    source: Path | None = None


def load(path: Path) -> RegentConfig:
    """Read and check `path`; ConfigError lists every problem."""
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError([f"{path}: cannot read: {error.strerror}"]) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError([f"{path}: not valid YAML: {error}".replace("\n", " ")]) from None
    return parse(raw, path.resolve().parent, source=path)


def parse(raw: Any, base_dir: Path = Path("."), source: Path | None = None) -> RegentConfig:
    top = SectionReader(raw, "config")
    top.where = ""  # top-level keys are named bare: `ttl: ...`, not `config.ttl`
    problems: list[str] = []
    top.unknown(TOP_LEVEL)
    dcs = postgresql = restapi = None
    try:
        dcs = settings_from({**top.section, "scope": _scope(top.section)})
    except ConfigError as error:
        problems += error.problems
    try:
        postgresql = parse_postgresql(top.section.get("postgresql"), _scope(top.section) or "", base_dir)
    except ConfigError as error:
        problems += error.problems
    cluster = _cluster(top, postgresql)
    problems = [problem.lstrip(".") for problem in top.problems] + problems
    try:
        restapi = _restapi(top.section.get("restapi"))
    except ConfigError as error:
        problems += error.problems
    watchdog, tags = _watchdog(top.section.get("watchdog"), problems), _tags(top.section.get("tags"), problems)
    if cluster is not None:
        problems += [f"timing: {problem}" for problem in lease_timing_problems(cluster)]
    if problems or cluster is None or dcs is None or postgresql is None or restapi is None:
        raise ConfigError(problems)
    if isinstance(dcs, ZooKeeperSettings) and dcs.session_timeout_s < cluster.ttl_s:
        raise ConfigError(
            [
                f"zookeeper.session_timeout ({dcs.session_timeout_s:g}) is shorter than ttl ({cluster.ttl_s:g}): "
                "the leader key would vanish before the leader's own deadline"
            ]
        )
    return RegentConfig(postgresql.name, cluster, dcs, postgresql, restapi, watchdog, tags, source)


def _scope(section: dict[str, Any]) -> str | None:
    """The top-level scope, or the one older configs keep inside the DCS or postgresql section."""
    for where in (section, section.get("etcd"), section.get("zookeeper"), section.get("postgresql")):
        if isinstance(where, dict) and isinstance(where.get("scope"), str):
            return where["scope"]
    return None


def _cluster(top: SectionReader, postgresql: PostgresSettings | None) -> ClusterConfig | None:
    """The cluster-wide settings; `ttl` may also come from the DCS section, as in older configs."""
    dcs_ttl = next(
        (s.get("ttl") for s in (top.section.get("etcd"), top.section.get("zookeeper")) if isinstance(s, dict)), None
    )
    ttl = top.positive("ttl", dcs_ttl if isinstance(dcs_ttl, int | float) and not isinstance(dcs_ttl, bool) else 30)
    lag = postgresql.maximum_lag_on_failover if postgresql else 1_048_576
    slots = postgresql.use_slots if postgresql else True
    try:
        return ClusterConfig(
            ttl_s=ttl,
            loop_wait_s=top.positive("loop_wait", 10),
            retry_timeout_s=top.positive("retry_timeout", 10),
            safety_margin_s=top.positive("safety_margin", 2),
            maximum_lag_on_failover_bytes=lag,
            primary_start_timeout_s=top.positive("primary_start_timeout", 30),
            synchronous_mode=bool(top.take("synchronous_mode", bool, False)),
            use_slots=slots,
        )
    except ValueError as error:
        top.problems.append(str(error))
        return None


def _restapi(section: Any) -> RestApiSettings:
    reader = SectionReader(section, "restapi")
    reader.unknown({"listen", "connect_address", "auth", "certfile", "keyfile"})
    listen = reader.take("listen", str, required=True)
    connect = reader.take("connect_address", str, listen)
    host, port = "", 0
    for key, value in (("listen", listen), ("connect_address", connect)):
        if value is None:
            continue
        try:
            parsed = parse_host(value, 8008, f"restapi.{key}")
        except ValueError as error:
            reader.problems.append(str(error))
            continue
        if key == "listen":
            host, port = parsed
    auth = reader.take("auth", str)
    credentials = None
    if auth is not None:
        user, colon, password = auth.partition(":")
        if not colon or not user or not password:
            reader.problems.append("restapi.auth: expected 'user:password'")
        credentials = (user, password)
    certfile, keyfile = reader.take("certfile", str), reader.take("keyfile", str)
    if (certfile is None) != (keyfile is None):
        reader.problems.append("restapi.certfile and restapi.keyfile: give both or neither")
    for key, value in (("certfile", certfile), ("keyfile", keyfile)):
        if value is not None and not Path(value).is_file():
            reader.problems.append(f"restapi.{key}: {value} is not a readable file")
    reader.done()
    return RestApiSettings(
        host,
        port,
        connect or f"{host}:{port}",
        credentials,
        Path(certfile) if certfile else None,
        Path(keyfile) if keyfile else None,
    )


def _watchdog(section: Any, problems: list[str]) -> WatchdogSettings:
    if section is None:
        return WatchdogSettings()
    if isinstance(section, str | bool):  # `watchdog: off` (YAML reads a bare off as false)
        section = {"mode": "off" if section is False else str(section)}
    reader = SectionReader(section, "watchdog")
    reader.unknown({"mode", "device", "safety_margin"})
    mode = reader.take("mode", (str, bool), "automatic")
    mode = "off" if mode is False else str(mode)
    if mode not in WATCHDOG_MODES:
        reader.problems.append(f"watchdog.mode: {mode!r} is not one of {', '.join(WATCHDOG_MODES)}")
    device = reader.take("device", str)
    problems += reader.problems
    return WatchdogSettings(mode, Path(device) if device else None)


def _tags(section: Any, problems: list[str]) -> Tags:
    if section is None:
        return Tags()
    reader = SectionReader(section, "tags")
    reader.unknown({"nofailover", "nosync", "failover_priority", "clonefrom", "noloadbalance"})
    try:
        tags = Tags(
            nofailover=reader.take("nofailover", bool, False),
            nosync=reader.take("nosync", bool, False),
            failover_priority=reader.take("failover_priority", int, 1),
        )
    except ValueError as error:
        reader.problems.append(f"tags.failover_priority: {error}")
        tags = Tags()
    problems += reader.problems
    return tags
