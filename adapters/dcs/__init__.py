"""The distributed configuration store: one interface (`Dcs`), etcd and ZooKeeper behind it, Patroni's layout."""

from __future__ import annotations

from typing import Any

from .base import Dcs, Outcome, Unavailable
from .layout import MemberRecord, Snapshot
from .settings import DcsConfigError, EtcdSettings, ZooKeeperSettings, etcd_settings, zookeeper_settings

__all__ = [
    "Dcs",
    "DcsConfigError",
    "EtcdSettings",
    "MemberRecord",
    "Outcome",
    "Snapshot",
    "Unavailable",
    "ZooKeeperSettings",
    "connect",
    "settings_from",
]


def settings_from(config: dict[str, Any]) -> EtcdSettings | ZooKeeperSettings:
    """The DCS settings of a whole YAML config: exactly one of its `etcd:` and `zookeeper:` sections."""
    present = [key for key in ("etcd", "zookeeper") if key in config]
    if len(present) != 1:
        found = " and ".join(present) if present else "neither"
        raise DcsConfigError([f"etcd / zookeeper: configure exactly one DCS section, found {found}"])
    scope, namespace = config.get("scope"), str(config.get("namespace", "service"))
    if present == ["etcd"]:
        return etcd_settings(config["etcd"], scope, namespace)
    return zookeeper_settings(config["zookeeper"], scope, namespace)


def connect(name: str, settings: EtcdSettings | ZooKeeperSettings, retry_timeout_s: float = 10.0) -> Dcs:
    """A client for member `name`; it connects lazily and never raises on an unreachable store."""
    if isinstance(settings, EtcdSettings):
        from .etcd import EtcdDcs

        return EtcdDcs(name, settings, retry_timeout_s)
    from .zookeeper import ZooKeeperDcs

    return ZooKeeperDcs(name, settings, retry_timeout_s)
