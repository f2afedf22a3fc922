"""The etcd backend: Patroni's keys on etcd's v2 API through python-etcd.

Leases are etcd TTLs. Every compare-and-swap on a TTL key passes `ttl=` again, since a v2 write without it makes the
key permanent. python-etcd's own failure handling is tamed so that a sick store costs a bounded time and the client
heals by itself:

- the connection pool does not retry: urllib3's default of three retries makes a hung member cost four timeouts;
- the configured hosts are the member list (python-etcd's `/v2/machines` discovery is off: it queries the network in
  the constructor and raises ValueError when a member advertises another spelling of its address), and the list is
  refilled before each request, since python-etcd drops a failed member for good and, once all have failed, answers
  "No more machines in the cluster" forever;
- everything that is not an answer from etcd becomes `Unavailable`; no python-etcd or urllib3 exception leaves here.
"""

from __future__ import annotations

import http.client
import logging
import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import etcd
import urllib3

from .base import UNKNOWN, Dcs, Unavailable, _Unknown
from .layout import Node
from .settings import EtcdSettings

log = logging.getLogger(__name__)

# etcd v2 error codes (https://etcd.io/docs/v2.3/errorcode/): the answers that mean "the key holds something else".
_KEY_NOT_FOUND = 100
_COMPARE_FAILED = 101
_NOT_A_FILE = 102
_NOT_A_DIR = 104
_ALREADY_EXISTS = 105
_CONFLICTS = {_KEY_NOT_FOUND, _COMPARE_FAILED, _NOT_A_FILE, _NOT_A_DIR, _ALREADY_EXISTS}


NO_V2 = (
    "etcd does not serve the v2 API (etcd 3.4 turns it off by default, 3.6 removed it): "
    "start etcd with --enable-v2=true, or configure `etcd3:` in place of `etcd:`"
)


def _code(error: etcd.EtcdException) -> int | None:
    """etcd's own error code, or None when the answer did not come from etcd's v2 key API.

    python-etcd raises EtcdKeyNotFound for any HTTP 404 with a JSON body, whoever sent it (a proxy, a wrong URL):
    reading that as "no keys" would show an empty cluster, so only an error carrying etcd's code counts."""
    payload = error.payload if isinstance(error.payload, dict) else {}
    code = payload.get("errorCode")
    return code if isinstance(code, int) else None


class EtcdDcs(Dcs):
    """The cluster's keys in etcd (v2 API), for member `name`."""

    def __init__(self, name: str, settings: EtcdSettings, retry_timeout_s: float = 10.0) -> None:
        super().__init__(name, settings.scope, settings.namespace, settings.ttl_s, retry_timeout_s)
        self.settings = settings
        # A third of retry_timeout: one hung member costs one request timeout and still leaves two tries.
        self.request_timeout_s = max(retry_timeout_s / 3, 0.5)
        self._uris = [f"{settings.protocol}://{host}:{port}" for host, port in settings.hosts]
        self._client: etcd.Client | None = None
        self._lock = threading.Lock()

    # --- the connection ----------------------------------------------------------------------------------------

    def _connect(self) -> etcd.Client:
        cert: str | tuple[str, str] | None = self.settings.cert
        if self.settings.cert and self.settings.key:
            cert = (self.settings.cert, self.settings.key)
        client = etcd.Client(
            host=tuple(self.settings.hosts),
            protocol=self.settings.protocol,
            username=self.settings.username,
            password=self.settings.password,
            ca_cert=self.settings.cacert,
            cert=cert,
            read_timeout=self.request_timeout_s,
            allow_reconnect=True,
            use_proxies=True,  # no discovery: the constructor makes no request, the member list is ours
        )
        # Same pool settings, without retries. False rather than 0: with 0, urllib3 wraps a read timeout in
        # MaxRetryError, and python-etcd would take a watch on a hung member for a failed request and watch again on
        # the next member, for twice the timeout; with False the watch just times out.
        client.http = urllib3.PoolManager(num_pools=10, **{**client.http.connection_pool_kw, "retries": False})
        return client

    @contextmanager
    def _request(self, what: str) -> Iterator[etcd.Client]:
        """The client, with every member to fail over to; anything but an answer from etcd becomes Unavailable."""
        try:
            with self._lock:
                if self._client is None:
                    self._client = self._connect()
                client = self._client
                # No request outlives the operation's retry_timeout (python-etcd reads 0 as "no timeout").
                client._read_timeout = max(0.05, min(self.request_timeout_s, self._time_left()))
                # python-etcd fails over to the member it pops from the end of this list, and never puts a failed
                # one back: refill it with every other member, the one after the current first.
                current = client.base_uri
                start = self._uris.index(current) + 1 if current in self._uris else 0
                others = [uri for uri in self._uris[start:] + self._uris[:start] if uri != current]
                client._machines_cache = others[::-1]
            yield client
        except Unavailable:
            raise
        except etcd.EtcdException as error:
            if "404 page not found" in str(error):  # etcd's own answer to a path it does not serve
                raise Unavailable(f"{what}: {NO_V2}") from error
            raise Unavailable(f"{what}: {type(error).__name__}: {error}") from error
        except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError) as error:
            raise Unavailable(f"{what}: {type(error).__name__}: {error}") from error
        except Exception as error:  # a python-etcd bug must not take the agent down either
            log.exception("unexpected error from python-etcd during %s", what)
            raise Unavailable(f"{what}: {type(error).__name__}: {error}") from error

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None and client.http is not None:
            client.http.clear()

    # --- primitives --------------------------------------------------------------------------------------------

    def _path(self, key: str) -> str:
        return f"{self.root}/{key}"

    def _ttl(self, lease: bool) -> int | None:
        return max(1, math.ceil(self.ttl_s)) if lease else None

    def _load(self) -> dict[str, Node]:
        with self._request("read") as client:
            try:
                # quorum: a read served by a member cut off from the others could show an expired leader key
                result = client.read(self.root, recursive=True, quorum=True)
            except etcd.EtcdKeyNotFound as error:
                if _code(error) == _KEY_NOT_FOUND:
                    return {}
                raise
            prefix = self.root + "/"
            return {
                node.key[len(prefix) :]: Node(node.value if node.value is not None else "", node.modifiedIndex)
                for node in result.leaves
                if not node.dir and node.key.startswith(prefix)
            }

    def _create(self, key: str, value: str, lease: bool = False) -> bool:
        with self._request(f"create {key}") as client:
            try:
                client.write(self._path(key), value, ttl=self._ttl(lease), prevExist=False)
                return True
            except etcd.EtcdException as error:
                if _code(error) in _CONFLICTS:
                    return False
                raise

    def _put(self, key: str, value: str, lease: bool = False) -> None:
        with self._request(f"write {key}") as client:
            client.write(self._path(key), value, ttl=self._ttl(lease))

    def _swap(
        self,
        key: str,
        value: str,
        *,
        prev_value: str | None = None,
        prev_version: int | None = None,
        lease: bool = False,
    ) -> bool:
        conditions: dict[str, object] = {}
        with self._request(f"swap {key}") as client:
            try:
                if prev_value == "":
                    # etcd v2 refuses an empty prevValue (error 201): compare on the version of the empty value.
                    node = client.read(self._path(key), quorum=True)
                    if node.value != "" or (prev_version is not None and node.modifiedIndex != prev_version):
                        return False
                    conditions["prevIndex"] = node.modifiedIndex
                else:
                    if prev_value is not None:
                        conditions["prevValue"] = prev_value
                    if prev_version is not None:
                        conditions["prevIndex"] = prev_version
                    if not conditions:
                        conditions["prevExist"] = True
                # ttl on every swap of a lease key: a compare-and-swap without it makes the key permanent
                client.write(self._path(key), value, ttl=self._ttl(lease), **conditions)
                return True
            except etcd.EtcdException as error:
                if _code(error) in _CONFLICTS:
                    return False
                raise

    def _delete(self, key: str, *, prev_value: str | None = None) -> bool:
        with self._request(f"delete {key}") as client:
            try:
                if prev_value == "":
                    node = client.read(self._path(key), quorum=True)  # as in _swap: no empty prevValue in v2
                    if node.value != "":
                        return False
                    client.delete(self._path(key), prevIndex=node.modifiedIndex)
                elif prev_value is not None:
                    client.delete(self._path(key), prevValue=prev_value)
                else:
                    client.delete(self._path(key))
                return True
            except etcd.EtcdException as error:
                if _code(error) in _CONFLICTS:
                    return False
                raise

    def _renew_leader(self) -> bool:
        return self._swap("leader", self.name, prev_value=self.name, lease=True)

    def _wait(self, key: str, timeout_s: float, since: Node | _Unknown | None) -> bool:
        deadline = time.monotonic() + timeout_s
        path = self._path(key)
        with self._request(f"watch {key}") as client:
            # Watch from the store's index as of now (X-Etcd-Index): any later event on the key, an expiry too, wakes
            # us; the key's own modifiedIndex could be older than the 1000 events etcd keeps.
            try:
                current = client.read(path)
                seen_now = Node(current.value or "", current.modifiedIndex)
                if since is not UNKNOWN and seen_now != since:
                    return True  # changed since the last read: no need to wait
                index = current.etcd_index
            except etcd.EtcdKeyNotFound as error:
                index = error.payload.get("index") if _code(error) == _KEY_NOT_FOUND else None
                if not isinstance(index, int):
                    raise
                if isinstance(since, Node):
                    return True  # gone since the last read
            left = deadline - time.monotonic()
            if left <= 0.01:  # python-etcd reads a timeout of 0 as "wait forever"
                return False
            started = time.monotonic()
            try:
                client.read(path, wait=True, waitIndex=index + 1, timeout=left)
                return True
            except etcd.EtcdWatchTimedOut:
                if time.monotonic() - started >= left - 0.05:
                    return False  # the watch's own timeout: nothing changed
                raise  # the connection broke early
            except (etcd.EtcdEventIndexCleared, etcd.EtcdWatcherCleared):
                return True  # etcd lost track of the events: the caller reads the cluster again
