"""The `etcd:` and `zookeeper:` sections of the YAML config, checked, with errors that name the setting.

etcd:                          zookeeper:
  scope: batman                  scope: batman
  ttl: 30                        session_timeout: 30
  host: 127.0.0.1:2379           reconnect_timeout: 10
  hosts: [h1:2379, h2:2379]      hosts: [127.0.0.1:2181]
  protocol: http | https         exhibitor: {poll_interval: 300, port: 8181, hosts: [h1, h2]}
  username / password / cacert / cert / key
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from adapters.config_reader import ConfigError, SectionReader


class DcsConfigError(ConfigError):
    """One or more DCS settings are wrong; each line names its setting."""


@dataclass(frozen=True)
class EtcdSettings:
    scope: str
    hosts: tuple[tuple[str, int], ...]
    ttl_s: float = 30.0
    namespace: str = "service"
    protocol: str = "http"
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # never in a log line
    cacert: str | None = None
    cert: str | None = None
    key: str | None = None


@dataclass(frozen=True)
class ExhibitorSettings:
    hosts: tuple[str, ...]
    port: int
    poll_interval_s: float = 300.0


@dataclass(frozen=True)
class ZooKeeperSettings:
    scope: str
    hosts: tuple[tuple[str, int], ...]
    session_timeout_s: float = 30.0
    reconnect_timeout_s: float = 10.0
    namespace: str = "service"
    exhibitor: ExhibitorSettings | None = None


def parse_host(text: str, default_port: int, setting: str) -> tuple[str, int]:
    """`host:port`, `host` or `[v6]:port` -> (host, port); ValueError naming `setting` otherwise."""
    text = text.strip()
    host, port = text, str(default_port)
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"{setting}: {text!r} is not host:port")
            port = rest[1:]
    elif text.count(":") == 1:
        host, port = text.split(":")
    if not host or any(c.isspace() or c in "/@" for c in host):
        raise ValueError(f"{setting}: {text!r} is not host:port")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{setting}: port {port!r} in {text!r} is not a port number")
    return host, int(port)


def _hosts(reader: SectionReader, default_port: int, single: str | None) -> tuple[tuple[str, int], ...]:
    """`hosts` as a list or a comma-separated string, or else the single-host setting `single`."""
    raw = reader.take("hosts", (list, str))
    setting = "hosts"
    if raw is None and single is not None:
        raw, setting = reader.take(single, str), single
    if raw is None:
        reader.problems.append(f"{reader.where}.hosts: missing (at least one host:port)")
        return ()
    items = raw.split(",") if isinstance(raw, str) else raw
    hosts = []
    for item in items:
        if not isinstance(item, str):
            reader.problems.append(f"{reader.where}.{setting}: {item!r} is not a host:port string")
            continue
        try:
            hosts.append(parse_host(item, default_port, f"{reader.where}.{setting}"))
        except ValueError as error:
            reader.problems.append(str(error))
    if not hosts and not reader.problems:
        reader.problems.append(f"{reader.where}.{setting}: empty")
    return tuple(hosts)


def _scope(reader: SectionReader, scope: str | None) -> str:
    value = reader.take("scope", str, scope)
    if value is None:
        reader.problems.append(f"{reader.where}.scope: missing (the cluster's name)")
        return ""
    if not value or "/" in value:
        reader.problems.append(f"{reader.where}.scope: {value!r} must be a non-empty name without '/'")
    return value


def etcd_settings(section: Any, scope: str | None = None, namespace: str = "service") -> EtcdSettings:
    """Parse `etcd:`; `scope` is the top-level one, used when the section has none."""
    reader = SectionReader(section, "etcd", DcsConfigError)
    reader.unknown(
        {"scope", "ttl", "host", "hosts", "protocol", "username", "password", "cacert", "cert", "key", "namespace"}
    )
    settings = EtcdSettings(
        scope=_scope(reader, scope),
        hosts=_hosts(reader, 2379, "host"),
        ttl_s=reader.positive("ttl", 30.0),
        namespace=reader.take("namespace", str, namespace),
        protocol=reader.take("protocol", str, "http"),
        username=reader.take("username", str),
        password=reader.take("password", str),
        cacert=reader.take("cacert", str),
        cert=reader.take("cert", str),
        key=reader.take("key", str),
    )
    if settings.protocol not in ("http", "https"):
        reader.problems.append(f"etcd.protocol: {settings.protocol!r} is neither http nor https")
    if (settings.username is None) != (settings.password is None):
        reader.problems.append("etcd.username and etcd.password: give both or neither")
    reader.done()
    return settings


def zookeeper_settings(section: Any, scope: str | None = None, namespace: str = "service") -> ZooKeeperSettings:
    """Parse `zookeeper:`; with `exhibitor`, `hosts` may be left out (Exhibitor supplies the ensemble)."""
    reader = SectionReader(section, "zookeeper", DcsConfigError)
    reader.unknown({"scope", "session_timeout", "reconnect_timeout", "hosts", "exhibitor", "namespace"})
    exhibitor = None
    if "exhibitor" in reader.section:
        sub = SectionReader(reader.section["exhibitor"], "zookeeper.exhibitor", DcsConfigError)
        sub.unknown({"poll_interval", "port", "hosts"})
        port = sub.take("port", int, 8181)
        if not 0 < port < 65536:
            sub.problems.append(f"zookeeper.exhibitor.port: {port} is not a port number")
        hosts = sub.take("hosts", (list, str), required=True) or []
        names = hosts.split(",") if isinstance(hosts, str) else hosts
        if not names or not all(isinstance(h, str) and h.strip() for h in names):
            sub.problems.append(f"zookeeper.exhibitor.hosts: {hosts!r} is not a list of host names")
        exhibitor = ExhibitorSettings(tuple(str(h).strip() for h in names), port, sub.positive("poll_interval", 300))
        reader.problems.extend(sub.problems)
    if exhibitor is not None and "hosts" not in reader.section:
        hosts: tuple[tuple[str, int], ...] = ()
    else:
        hosts = _hosts(reader, 2181, None)
    settings = ZooKeeperSettings(
        scope=_scope(reader, scope),
        hosts=hosts,
        session_timeout_s=reader.positive("session_timeout", 30.0),
        reconnect_timeout_s=reader.positive("reconnect_timeout", 10.0),
        namespace=reader.take("namespace", str, namespace),
        exhibitor=exhibitor,
    )
    reader.done()
    return settings
