"""The checked settings of the agent's own parts (REST API, watchdog, logging), as the runtime uses them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RestApiSettings:
    listen_host: str
    listen_port: int
    connect_address: str  # host:port other nodes and HAProxy use
    auth: tuple[str, str] | None = None  # (user, password) for the unsafe methods
    certfile: Path | None = None
    keyfile: Path | None = None
    cafile: Path | None = None  # client certificates are checked against it
    verify_client: str = "none"  # none | optional | required
    allowlist: tuple[str, ...] = ()  # networks allowed to call the unsafe methods; empty: any

    def __repr__(self) -> str:  # never print the password
        return f"RestApiSettings({self.listen_host}:{self.listen_port}, auth={'***' if self.auth else None})"


@dataclass(frozen=True)
class CtlSettings:
    """The `ctl` section: how regentctl (and patronictl) calls the members' REST APIs."""

    auth: tuple[str, str] | None = None  # (user, password) for the unsafe methods; None: restapi's
    cacert: Path | None = None
    certfile: Path | None = None
    keyfile: Path | None = None
    insecure: bool = False

    def __repr__(self) -> str:  # never print the password
        return f"CtlSettings(auth={'***' if self.auth else None}, cacert={self.cacert}, insecure={self.insecure})"


@dataclass(frozen=True)
class WatchdogSettings:
    mode: str = "automatic"  # off | automatic | required
    device: Path | None = None  # Linux /dev/watchdog, used when present and asked for


@dataclass(frozen=True)
class LogSettings:
    level: str = "INFO"
    format: str = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    dateformat: str | None = None
    dir: Path | None = None  # None: stderr
    file_num: int = 4
    file_size: int = 25_000_000
    loggers: tuple[tuple[str, str], ...] = ()
