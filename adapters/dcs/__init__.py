"""The distributed configuration store: one interface (`Dcs`), etcd and ZooKeeper behind it, Patroni's layout."""

from __future__ import annotations

from .base import Dcs, Outcome, Unavailable
from .layout import MemberRecord, Snapshot
from .settings import EtcdSettings, ZooKeeperSettings

__all__ = [
    "Dcs",
    "EtcdSettings",
    "MemberRecord",
    "Outcome",
    "Snapshot",
    "Unavailable",
    "ZooKeeperSettings",
    "connect",
]


def connect(name: str, settings: EtcdSettings | ZooKeeperSettings, retry_timeout_s: float = 10.0) -> Dcs:
    """A client for member `name`; it connects lazily and never raises on an unreachable store."""
    if isinstance(settings, EtcdSettings) and settings.api_version == 3:
        from .etcd3 import Etcd3Dcs

        return Etcd3Dcs(name, settings, retry_timeout_s)
    if isinstance(settings, EtcdSettings):
        from .etcd import EtcdDcs

        return EtcdDcs(name, settings, retry_timeout_s)
    from .zookeeper import ZooKeeperDcs

    return ZooKeeperDcs(name, settings, retry_timeout_s)
