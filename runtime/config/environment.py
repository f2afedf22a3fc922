"""`PATRONI_*` environment variables over the file, as Patroni documents them (its ENVIRONMENT.rst): each sets
one key, in the place the file already uses for it (the seed's or Patroni 4's), else in Patroni 4's."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

# variable suffix -> the key paths it may set, the first one the file has wins (else the first)
VARIABLES: dict[str, tuple[tuple[str, ...], ...]] = {
    "NAME": (("name",), ("postgresql", "name")),
    "NAMESPACE": (("namespace",),),
    "SCOPE": (("scope",), ("etcd", "scope"), ("zookeeper", "scope"), ("postgresql", "scope")),
    "LOG_LEVEL": (("log", "level"),),
    "LOG_FORMAT": (("log", "format"),),
    "LOG_DIR": (("log", "dir"),),
    "RESTAPI_LISTEN": (("restapi", "listen"),),
    "RESTAPI_CONNECT_ADDRESS": (("restapi", "connect_address"),),
    "RESTAPI_USERNAME": (("restapi", "authentication", "username"),),
    "RESTAPI_PASSWORD": (("restapi", "authentication", "password"),),
    "RESTAPI_CERTFILE": (("restapi", "certfile"),),
    "RESTAPI_KEYFILE": (("restapi", "keyfile"),),
    "RESTAPI_CAFILE": (("restapi", "cafile"),),
    "RESTAPI_VERIFY_CLIENT": (("restapi", "verify_client"),),
    **{
        f"{section.upper()}_{key.upper()}": ((section, key),)
        for section in ("etcd", "etcd3")
        for key in ("host", "hosts", "protocol", "username", "password", "cacert", "cert", "key")
    },
    "ZOOKEEPER_HOSTS": (("zookeeper", "hosts"),),
    "POSTGRESQL_LISTEN": (("postgresql", "listen"),),
    "POSTGRESQL_CONNECT_ADDRESS": (("postgresql", "connect_address"),),
    "POSTGRESQL_DATA_DIR": (("postgresql", "data_dir"),),
    "POSTGRESQL_BIN_DIR": (("postgresql", "bin_dir"),),
    "POSTGRESQL_CONFIG_DIR": (("postgresql", "config_dir"),),
    "POSTGRESQL_PGPASS": (("postgresql", "pgpass"),),
    **{
        f"{role.upper()}_{part.upper()}": (
            ("postgresql", "authentication", role, part),
            ("postgresql", seed, part),
        )
        for role, seed in (("superuser", "superuser"), ("replication", "replication"), ("rewind", "pg_rewind"))
        for part in ("username", "password")
    },
}
REPLACES = {
    "RESTAPI_USERNAME": (("restapi", "auth"),),  # the seed's `auth: user:password`
    "RESTAPI_PASSWORD": (("restapi", "auth"),),
    "ETCD_HOST": (("etcd", "hosts"),),
    "ETCD_HOSTS": (("etcd", "host"),),
    "ETCD3_HOST": (("etcd3", "hosts"),),
    "ETCD3_HOSTS": (("etcd3", "host"),),
}
HOST_LISTS = {"ETCD_HOSTS", "ETCD3_HOSTS", "ZOOKEEPER_HOSTS"}  # Patroni's form: 'h1:2379','h2:2379' (quotes optional)


def overlay(raw: Any, environ: Mapping[str, str]) -> Any:
    """`raw` (the parsed YAML) with every `PATRONI_*` variable of `environ` applied; `raw` is left unchanged."""
    given = {suffix: environ[f"PATRONI_{suffix}"] for suffix in VARIABLES if f"PATRONI_{suffix}" in environ}
    if not given or not isinstance(raw, dict):
        return raw
    result = copy.deepcopy(raw)
    for suffix, value in given.items():
        text: Any = [part.strip().strip("'\"") for part in value.split(",")] if suffix in HOST_LISTS else value
        for path in _places(result, VARIABLES[suffix]):
            _set(result, path, text)
        for other in REPLACES.get(suffix, ()):  # the file's other spelling of what the variable sets
            section, key = other
            if isinstance(result.get(section), dict):
                result[section].pop(key, None)
    return result


def _places(raw: dict[str, Any], places: tuple[tuple[str, ...], ...]) -> list[tuple[str, ...]]:
    """Every place the file has; else the first whose section the file has; else Patroni 4's (the first). A seed
    file's roles stay in the seed's place."""
    existing = [place for place in places if _has(raw, place)]
    if existing:
        return existing
    with_parent = [place for place in places if _has(raw, place[:-1])]
    pg = raw.get("postgresql")
    seed_roles = isinstance(pg, dict) and "authentication" not in pg and bool({"superuser", "replication"} & set(pg))
    if seed_roles and places[0][:2] == ("postgresql", "authentication"):
        return [places[1]]
    return with_parent[:1] or [places[0]]


def _has(raw: dict[str, Any], path: tuple[str, ...]) -> bool:
    node: Any = raw
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return False
        node = node[key]
    return True


def _set(raw: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = raw
    for key in path[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[path[-1]] = value
