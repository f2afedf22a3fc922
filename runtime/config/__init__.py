"""The agent's YAML config (`regent postgres0.yml`), loaded and checked as a whole against `schema`.

Every problem is reported at once, one line each, naming its key path (`postgresql.listen: ...`); timings that
break the lease argument are refused with the rule they break (see `fsm.lease`). `PATRONI_*` environment variables
override the file (`environment`). The reference of every key is docs/configuration.md, generated from the schema.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from adapters.dcs import EtcdSettings, ZooKeeperSettings
from adapters.errors import ConfigError
from adapters.postgres.settings import PostgresSettings
from fsm.observation import ClusterConfig, Tags

from . import resolve, schema
from .environment import overlay
from .errors import problems_of
from .settings import CtlSettings, LogSettings, RestApiSettings, WatchdogSettings

__all__ = ["ConfigError", "RegentConfig", "RestApiSettings", "WatchdogSettings", "dynamic_problems", "load", "parse"]


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
    bootstrap_dcs: dict[str, Any] = field(default_factory=dict)  # the DCS `config` key a new cluster starts with
    log: LogSettings = field(default_factory=LogSettings)
    ctl: CtlSettings = field(default_factory=CtlSettings)  # regentctl's; the agent reads its TLS (runtime.peers)
    warnings: tuple[str, ...] = ()  # said at start (and by --validate): settings given that have no effect here


def load(path: Path, environ: Mapping[str, str] | None = None) -> RegentConfig:
    """Read and check `path` (with `environ`'s PATRONI_* variables, default: the process's); ConfigError lists
    every problem."""
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError([f"cannot read: {error.strerror}"]) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError([f"not valid YAML: {error}".replace("\n", " ")]) from None
    raw = overlay(raw, os.environ if environ is None else environ)
    return parse(raw, path.resolve().parent, source=path)


def dynamic_problems(stored: Any) -> list[str]:
    """What is wrong with a DCS `config` key's value (`PATCH`/`PUT /config`, or one read back): one line per
    problem, naming the key; empty when the schema accepts it."""
    if not isinstance(stored, dict):
        return [f"config: expected a JSON object, got {type(stored).__name__}"]
    try:
        schema.DynamicConfig.model_validate(stored)
    except ValidationError as error:
        return problems_of(error, schema.DynamicConfig)
    return []


def parse(raw: Any, base_dir: Path = Path("."), source: Path | None = None) -> RegentConfig:
    """Check the parsed YAML `raw`; relative paths in it are relative to `base_dir` (the file's folder)."""
    if raw is None:
        raise ConfigError(["config: empty (a config needs at least restapi, a DCS section and postgresql)"])
    if not isinstance(raw, dict):
        raise ConfigError([f"config: must be a mapping of settings, got {type(raw).__name__}"])
    try:
        file = schema.RegentFile.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(problems_of(error, schema.RegentFile) + resolve.raw_timing_problems(raw)) from None
    problems = resolve.Problems()
    pg = file.postgresql
    scope = resolve.one_of(
        problems,
        {
            "scope": file.scope,
            "etcd.scope": file.etcd.scope if file.etcd else None,
            "zookeeper.scope": file.zookeeper.scope if file.zookeeper else None,
            "postgresql.scope": pg.scope,
        },
    )
    problems.check(scope is not None, "scope: missing (the cluster's name)")
    name = resolve.one_of(problems, {"name": file.name, "postgresql.name": pg.name})
    problems.check(name is not None, "name: missing (this member's name)")
    cluster = resolve.cluster_config(file, problems)
    bootstrap_dcs = resolve.bootstrap_config(file)
    given_ttl = bootstrap_dcs.get("ttl")  # the ttl the cluster starts with: ZooKeeper's session defaults to it
    start_ttl_s = float(given_ttl) if isinstance(given_ttl, int | float) else cluster.ttl_s
    dcs = resolve.dcs_settings(file, scope or "", problems, start_ttl_s)
    restapi = resolve.restapi_settings(file.restapi, problems)
    warnings: list[str] = []
    postgresql = resolve.postgres_settings(file, name or "", scope or "", base_dir, problems, warnings)
    problems += resolve.timing_problems(cluster, bootstrap_dcs)
    if isinstance(dcs, ZooKeeperSettings) and dcs.session_timeout_s < start_ttl_s:
        problems.append(
            f"zookeeper.session_timeout ({dcs.session_timeout_s:g}) is shorter than ttl ({start_ttl_s:g}): "
            "the leader key would vanish before the leader's own deadline"
        )
    if problems or dcs is None:
        raise ConfigError(list(problems))
    return RegentConfig(
        name=name,
        cluster=cluster,
        dcs=dcs,
        postgresql=postgresql,
        restapi=restapi,
        watchdog=resolve.watchdog_settings(file.watchdog),
        tags=resolve.member_tags(file.tags),
        source=source,
        bootstrap_dcs=bootstrap_dcs,
        log=resolve.log_settings(file.log, base_dir),
        ctl=resolve.ctl_settings(file.ctl, restapi, base_dir),
        warnings=tuple(warnings),
    )
