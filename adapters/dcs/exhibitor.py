"""Exhibitor: where the ZooKeeper ensemble is, for a ZooKeeper client whose hosts come from `zookeeper.exhibitor`.

Exhibitor answers `GET http://<exhibitor host>:<port>/exhibitor/v1/cluster/list` with
`{"servers": ["h1", "h2"], "port": 2181}`. The poller asks the configured Exhibitor hosts in order, every
`poll_interval` seconds, and hands a changed list to the ZooKeeper client. A bad answer is logged with the setting's
name and changes nothing: the client keeps the hosts it had.

It polls from a daemon thread rather than inside DCS calls: an Exhibitor that hangs costs up to `timeout_s` per host,
and that wait must not eat into a DCS operation's `retry_timeout` (nor delay the agent's loop).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from http.client import HTTPException
from typing import Any

from .settings import ExhibitorSettings

log = logging.getLogger(__name__)

Hosts = tuple[tuple[str, int], ...]

SETTING = "zookeeper.exhibitor"
PATH = "/exhibitor/v1/cluster/list"
MAX_BODY_BYTES = 1 << 20
NO_LIST_RETRY_S = 5.0  # how soon to ask again while no list was ever obtained (poll_interval defaults to 300 s)

# Proxies from the environment (http_proxy) are not for the Exhibitor next door.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def parse_cluster_list(body: bytes) -> Hosts:
    """Exhibitor's `{"servers": [...], "port": N}` -> ((server, N), ...); ValueError saying what is wrong."""
    try:
        data: Any = json.loads(body)
    except ValueError as error:  # also UnicodeDecodeError
        raise ValueError(f"the answer is not JSON ({error}): {body[:80]!r}") from None
    if not isinstance(data, dict):
        raise ValueError(f'expected a JSON object {{"servers": [...], "port": N}}, got {type(data).__name__}')
    if "servers" not in data or "port" not in data:
        missing = " and ".join(repr(key) for key in ("servers", "port") if key not in data)
        raise ValueError(f"the answer has no {missing} (keys: {sorted(data)})")
    servers, port = data["servers"], data["port"]
    if not isinstance(servers, list) or not servers:
        raise ValueError(f'"servers" must be a non-empty list of host names, got {servers!r}')
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError(f'"port" must be a port number, got {port!r}')
    hosts = []
    for server in servers:
        if not isinstance(server, str) or not _is_host(server.strip()):
            raise ValueError(f'"servers" holds {server!r}, which is not a host name or address')
        hosts.append((server.strip(), port))
    return tuple(hosts)


def _is_host(text: str) -> bool:
    # ',' and '/' would change the meaning of kazoo's connection string (host separator, chroot).
    if not text or any(c.isspace() or c in ",/@[]" for c in text):
        return False
    if ":" in text:  # only an IPv6 address may hold a colon
        try:
            ipaddress.IPv6Address(text)
        except ValueError:
            return False
    return True


def connection_string(hosts: Hosts) -> str:
    """((h1, 2181), (::1, 2181)) -> 'h1:2181,[::1]:2181', the form KazooClient takes."""
    return ",".join(f"[{host}]:{port}" if ":" in host else f"{host}:{port}" for host, port in hosts)


class ExhibitorPoller:
    """Polls Exhibitor in a daemon thread; calls `on_change(hosts)` with each new, valid host list."""

    def __init__(
        self, settings: ExhibitorSettings, on_change: Callable[[Hosts], None], *, timeout_s: float = 3.0
    ) -> None:
        self.settings = settings
        self.timeout_s = timeout_s
        self._on_change = on_change
        self._hosts: Hosts | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def hosts(self) -> Hosts | None:
        """The last valid list Exhibitor gave (None before the first one)."""
        return self._hosts

    def url(self, exhibitor_host: str) -> str:
        host = f"[{exhibitor_host}]" if ":" in exhibitor_host else exhibitor_host
        return f"http://{host}:{self.settings.port}{PATH}"

    def fetch(self) -> Hosts | None:
        """Ask each Exhibitor in order; the first valid list, or None (logged as an error) if none gave one."""
        failures = []
        for exhibitor_host in self.settings.hosts:
            url = self.url(exhibitor_host)
            try:
                with _opener.open(url, timeout=self.timeout_s) as response:
                    return parse_cluster_list(response.read(MAX_BODY_BYTES))
            except urllib.error.HTTPError as error:
                failures.append(f"{url}: HTTP {error.code} {error.reason}")
            except (urllib.error.URLError, HTTPException, OSError, ValueError) as error:
                failures.append(f"{url}: {getattr(error, 'reason', error)}")
        kept = connection_string(self._hosts) if self._hosts else "none yet"
        log.error(
            "%s: no usable ZooKeeper server list from Exhibitor (%s); keeping the previous hosts (%s)",
            SETTING,
            "; ".join(failures) or "no Exhibitor host configured",
            kept,
        )
        return None

    def poll(self) -> bool:
        """Fetch once; True if the host list changed (and `on_change` was told)."""
        hosts = self.fetch()
        if hosts is None or hosts == self._hosts:
            return False
        previous, self._hosts = self._hosts, hosts
        log.info(
            "%s: ZooKeeper hosts are now %s (were %s)",
            SETTING,
            connection_string(hosts),
            connection_string(previous) if previous else "none",
        )
        try:
            self._on_change(hosts)
        except Exception:  # the poller must outlive a failing consumer
            log.exception("%s: could not switch the ZooKeeper client to %s", SETTING, connection_string(hosts))
        return True

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="exhibitor-poller", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            # A fetch in progress may hang up to timeout_s per host; its result is ignored once the client is closed.
            self._thread.join(timeout=1.0)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except Exception:  # never let the thread die: the next poll may succeed
                log.exception("%s: polling Exhibitor failed", SETTING)
            interval = self.settings.poll_interval_s
            if self._hosts is None:
                interval = min(interval, NO_LIST_RETRY_S)
            self._stop.wait(interval)
