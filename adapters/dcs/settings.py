"""What the DCS clients need to know: the checked `etcd:` and `zookeeper:` sections (`runtime.config` builds
them from the YAML file)."""

from __future__ import annotations

from dataclasses import dataclass, field


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
    api_version: int = 2  # 2: the `etcd:` section (python-etcd); 3: `etcd3:` (the v3 JSON gateway)


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
    reconnect_timeout_s: float = 1.0  # the longest wait between two reconnection attempts
    namespace: str = "service"
    exhibitor: ExhibitorSettings | None = None
