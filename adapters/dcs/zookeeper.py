"""ZooKeeper behind the `Dcs` interface, with Patroni's znode layout (kazoo client).

Every key is a znode `<root>/<key>` holding UTF-8 text. A lease is the client's session: the leader key and
`members/<name>` are ephemeral znodes, gone when the session expires (the server decides, `session_timeout` after the
holder stopped answering). Compare-and-swap uses znode versions.

Failures: anything that means "no answer" (no connection, lost session, a request not answered in time) raises
`Unavailable`, and `Dcs` retries it until `retry_timeout`. Each kazoo request waits at most until the deadline of
the operation it serves, so a hung server cannot hold one operation longer than `retry_timeout`. kazoo reconnects by
itself (forever, backing off up to 1 s); after a lost session it opens a new one, without our ephemeral znodes:
the agent's next publish/acquire creates them again.
"""

from __future__ import annotations

import functools
import logging
import math
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, TypeVar

from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import BadVersionError, NodeExistsError, NoNodeError
from kazoo.handlers.threading import KazooTimeoutError, SequentialThreadingHandler
from kazoo.interfaces import IAsyncResult
from kazoo.protocol.states import WatchedEvent, ZnodeStat
from kazoo.retry import KazooRetry

from .base import UNKNOWN, Dcs, Unavailable, _Unknown
from .exhibitor import ExhibitorPoller, Hosts, connection_string
from .layout import Node
from .settings import ZooKeeperSettings

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

# Children of the root that are folders of keys, not keys (`optime/leader` is older Patroni's status).
_FOLDERS = ("members", "optime")


def _kazoo_errors(
    method: Callable[Concatenate[ZooKeeperDcs, P], T],
) -> Callable[Concatenate[ZooKeeperDcs, P], T]:
    """Turn every exception a primitive did not handle into `Unavailable`: nothing else may leave the adapter."""

    @functools.wraps(method)
    def wrapper(self: ZooKeeperDcs, *args: P.args, **kwargs: P.kwargs) -> T:
        # Dcs._retrying sets the operation's deadline; a call from elsewhere (_wait) is bounded on its own.
        outermost = getattr(self._local, "deadline", None) is None
        if outermost:
            self._local.deadline = min(time.monotonic() + self.retry_timeout_s, self._give_up_at or math.inf)
        try:
            return method(self, *args, **kwargs)
        except Unavailable:
            raise
        except KazooTimeoutError as error:
            raise Unavailable(f"ZooKeeper did not answer {method.__name__} in time") from error
        except Exception as error:
            # ConnectionLoss, SessionExpiredError, ConnectionClosedError, ... and anything unforeseen (an ACL error,
            # a socket error): the store did not do what was asked, which the caller handles as "no answer".
            raise Unavailable(f"ZooKeeper {method.__name__}: {type(error).__name__} {error}") from error
        finally:
            if outermost:
                self._local.deadline = None

    return wrapper


class _Handler(SequentialThreadingHandler):
    """kazoo waits a whole session timeout for one TCP connect: a blackholed host would use up the session before
    the next host is tried. Fail faster and move on (Patroni does the same)."""

    def __init__(self, connect_timeout_s: float) -> None:
        super().__init__()
        self.connect_timeout_s = connect_timeout_s

    def create_connection(self, *args: Any, **kwargs: Any) -> socket.socket:
        if "timeout" in kwargs:
            kwargs["timeout"] = min(kwargs["timeout"], self.connect_timeout_s)
        return super().create_connection(*args, **kwargs)


class _Watch:
    """The one watch callback per key: kazoo keeps watchers in a set, so re-registering the same object on every
    wait adds nothing (a new closure each time would pile up while the key never changes)."""

    def __init__(self, changed: Callable[[str], None], key: str) -> None:
        self.changed = changed
        self.key = key

    def __call__(self, event: WatchedEvent) -> None:
        # Any event wakes the waiter: a change of the key, its deletion (also when its holder's session expired),
        # or EventType.NONE when our own connection dropped (kazoo then forgets every watch): re-read in all cases.
        self.changed(self.key)


class ZooKeeperDcs(Dcs):
    """The cluster's keys in ZooKeeper (or an ensemble found through Exhibitor), for member `name`."""

    def __init__(self, name: str, settings: ZooKeeperSettings, retry_timeout_s: float = 10.0) -> None:
        super().__init__(name, settings.scope, settings.namespace, settings.session_timeout_s, retry_timeout_s)
        self.settings = settings
        self._lock = threading.Lock()  # guards the client's creation, host switches and close
        self._client: KazooClient | None = None
        self._hosts: Hosts = settings.hosts
        self._closed = False
        self._connected = threading.Event()
        self._changes = threading.Condition()
        self._generation: dict[str, int] = {}
        self._watches: dict[str, _Watch] = {}
        self._poller: ExhibitorPoller | None = None
        self.granted_session_timeout_s: float | None = None  # what the server granted (known once connected)
        if self._hosts:
            self._start_client(self._hosts)
        if settings.exhibitor is not None:
            self._poller = ExhibitorPoller(settings.exhibitor, self._use_hosts)
            self._poller.start()

    # --- the client and its connection ------------------------------------------------------------------------

    def _start_client(self, hosts: Hosts) -> None:
        """Create and start the kazoo client; it connects in the background and keeps retrying forever."""
        with self._lock:
            if self._closed or self._client is not None:
                return
            session_s = self.settings.session_timeout_s
            client = KazooClient(
                hosts=connection_string(hosts),
                timeout=session_s,
                handler=_Handler(connect_timeout_s=min(session_s, max(1.0, self.retry_timeout_s / 2))),
                # Reconnect forever, at most `reconnect_timeout` apart (default 1 s, so a restarted server is found
                # again at once); `interrupt` ends the back-off sleep when we close.
                connection_retry=KazooRetry(
                    max_tries=-1,
                    delay=min(0.1, self.settings.reconnect_timeout_s),
                    max_delay=self.settings.reconnect_timeout_s,
                    interrupt=lambda: self._closed,
                ),
                # Commands are not retried by kazoo: Dcs._retrying is the one retry policy (bounded by retry_timeout).
                command_retry=KazooRetry(max_tries=1),
            )
            client.add_listener(self._on_state)
            self._record_granted_timeout(client)
            self._client = client
            client.start_async()

    def _record_granted_timeout(self, client: KazooClient) -> None:
        """Note the session timeout the server grants. It clamps the request to [2, 20] x tickTime (maxSessionTimeout):
        a shorter session than configured lets the leader key expire sooner than the agent's ttl assumes, so say so.
        kazoo keeps the granted value to itself; its connect step returns 2/3 of it (ms), which we wrap to read."""
        connection = getattr(client, "_connection", None)
        connect = getattr(connection, "_connect", None)
        if connect is None:  # another kazoo: go without the check
            return

        def recording_connect(*args: Any, **kwargs: Any) -> Any:
            read_timeout_ms, connect_timeout_ms = connect(*args, **kwargs)
            granted = round(read_timeout_ms * 1.5) / 1000.0
            if granted != self.granted_session_timeout_s and granted < self.settings.session_timeout_s:
                log.warning(
                    "zookeeper.session_timeout: asked for %g s, the server granted %g s (its min/maxSessionTimeout): "
                    "the leader key expires %g s after the leader stops answering",
                    self.settings.session_timeout_s,
                    granted,
                    granted,
                )
            self.granted_session_timeout_s = granted
            return read_timeout_ms, connect_timeout_ms

        connection._connect = recording_connect  # type: ignore[union-attr]

    def lease_ttl_s(self) -> float:
        # The ephemeral leader key lives as long as the session: the granted timeout, once known, else the asked one.
        session = self.granted_session_timeout_s or self.settings.session_timeout_s
        return min(self.ttl_s, session)

    def _use_hosts(self, hosts: Hosts) -> None:
        """Exhibitor named a new ensemble: the client connects there from its next connection attempt on."""
        with self._lock:
            self._hosts = hosts
            client = self._client
            if client is not None and not self._closed:
                # An established connection is kept while it works; reconnects go to the new list.
                client.set_hosts(connection_string(hosts))
        if client is None:
            self._start_client(hosts)

    @property
    def hosts(self) -> Hosts:
        """The ZooKeeper hosts the client uses now (static, or the latest from Exhibitor)."""
        return self._hosts

    def _on_state(self, state: KazooState) -> None:
        # Runs in kazoo's connection thread: record and return, never block.
        if state == KazooState.CONNECTED:
            self._connected.set()
            log.info("ZooKeeper connected (session 0x%x)", self._session_id() or 0)
        else:
            self._connected.clear()
            if self._closed:
                log.info("ZooKeeper session closed")
            elif state == KazooState.LOST:
                log.warning("ZooKeeper session lost: its ephemeral keys (leader, member) are gone")
            else:
                log.warning("ZooKeeper connection suspended, reconnecting")

    def _session_id(self) -> int | None:
        client_id = self._client.client_id if self._client is not None else None
        return client_id[0] if client_id else None

    def _left(self) -> float:
        """What is left of the operation's retry_timeout (Dcs._retrying, or _kazoo_errors, set its deadline)."""
        left = min(self._time_left(), self.retry_timeout_s)
        if left <= 0:
            raise Unavailable(f"no answer from ZooKeeper within retry_timeout ({self.retry_timeout_s} s)")
        return left

    def _connected_client(self) -> tuple[KazooClient, int]:
        """The client once it is connected, and its session id; waits for that no longer than the operation may."""
        if self._closed:
            raise Unavailable("the ZooKeeper client is closed")
        client = self._client if self._connected.wait(self._left()) else None
        session = self._session_id()
        if client is None or session is None:
            where = connection_string(self._hosts) if self._hosts else "no hosts yet (waiting for zookeeper.exhibitor)"
            raise Unavailable(f"not connected to ZooKeeper at {where}")
        # Compared with znode owners: should the session be lost meanwhile, the comparison can only fail, never lie.
        return client, session

    def _answer(self, request: IAsyncResult) -> Any:
        """Wait for one request's answer, at most until the operation's deadline (kazoo's .get() never times out)."""
        return request.get(timeout=self._left())

    def _path(self, key: str) -> str:
        return f"{self.root}/{key}"

    # --- the primitives ------------------------------------------------------------------------------------------

    @_kazoo_errors
    def _load(self) -> dict[str, Node]:
        # Three round trips whatever the number of keys: list the root, list the folders, then read every key at once.
        client, _ = self._connected_client()
        try:
            children = self._answer(client.get_children_async(self.root))
        except NoNodeError:
            return {}
        keys = [child for child in children if child not in _FOLDERS]
        listings = {folder: client.get_children_async(self._path(folder)) for folder in children if folder in _FOLDERS}
        for folder, listing in listings.items():
            try:
                keys.extend(f"{folder}/{child}" for child in self._answer(listing))
            except NoNodeError:
                continue
        reads = {key: client.get_async(self._path(key)) for key in keys}
        nodes = {}
        for key, read in reads.items():
            try:
                data, stat = self._answer(read)
            except NoNodeError:  # deleted (or expired) since it was listed
                continue
            # Values written by other tools may not be UTF-8: decode anyway, the layout then reports bad JSON.
            nodes[key] = Node((data or b"").decode("utf-8", errors="replace"), stat.version)
        return nodes

    @_kazoo_errors
    def _create(self, key: str, value: str, lease: bool = False) -> bool:
        client, _ = self._connected_client()
        try:
            self._answer(client.create_async(self._path(key), value.encode(), ephemeral=lease, makepath=True))
        except NodeExistsError:
            return False
        return True

    @_kazoo_errors
    def _put(self, key: str, value: str, lease: bool = False) -> None:
        client, session = self._connected_client()
        path, data = self._path(key), value.encode()
        while True:  # each turn lost a race with another writer; _left() ends it at the deadline
            try:
                stat = self._answer(client.set_async(path, data))
            except NoNodeError:
                try:
                    self._answer(client.create_async(path, data, ephemeral=lease, makepath=True))
                    return
                except NodeExistsError:
                    continue
            if not lease or stat.ephemeralOwner == session:
                return
            # Left by an older session of ours (or written persistent): make it ours, atomically.
            if self._replace_as_ephemeral(client, path, data, stat.version):
                return

    @_kazoo_errors
    def _swap(
        self,
        key: str,
        value: str,
        *,
        prev_value: str | None = None,
        prev_version: int | None = None,
        lease: bool = False,
    ) -> bool:
        client, session = self._connected_client()
        path, data = self._path(key), value.encode()
        version = prev_version
        stat = None
        if prev_value is not None or version is None or lease:
            try:
                current, stat = self._answer(client.get_async(path))
            except NoNodeError:
                return False
            if prev_value is not None and (current or b"").decode("utf-8", errors="replace") != prev_value:
                return False
            if version is not None and stat.version != version:
                return False
            version = stat.version
        if lease and stat is not None and stat.ephemeralOwner != session:
            return self._replace_as_ephemeral(client, path, data, version)
        try:
            self._answer(client.set_async(path, data, version=version))
        except (BadVersionError, NoNodeError):
            return False
        return True

    @_kazoo_errors
    def _delete(self, key: str, *, prev_value: str | None = None) -> bool:
        client, _ = self._connected_client()
        path = self._path(key)
        version = -1
        try:
            if prev_value is not None:
                current, stat = self._answer(client.get_async(path))
                if (current or b"").decode("utf-8", errors="replace") != prev_value:
                    return False
                version = stat.version  # delete only what we compared
            self._answer(client.delete_async(path, version=version))
        except (BadVersionError, NoNodeError):
            return False
        return True

    @_kazoo_errors
    def _renew_leader(self) -> bool:
        # The session is the lease and kazoo keeps it alive: renewing is checking that the key is still ours.
        client, session = self._connected_client()
        try:
            data, stat = self._answer(client.get_async(self._path("leader")))
        except NoNodeError:
            return False
        # A key naming us but owned by another session (one we lost, or an earlier process) is not held by us.
        return (data or b"").decode("utf-8", errors="replace") == self.name and stat.ephemeralOwner == session

    @_kazoo_errors
    def _wait(self, key: str, timeout_s: float, since: Node | _Unknown | None) -> bool:
        deadline = time.monotonic() + timeout_s
        self._local.deadline = min(self._local.deadline, deadline)  # registering the watch counts against timeout_s
        client, _ = self._connected_client()
        with self._changes:
            generation = self._generation.get(key, 0)
            watch = self._watches.setdefault(key, _Watch(self._changed, key))
        # exists() sets a watch whether or not the key exists: it fires on creation, change and deletion.
        stat = self._answer(client.exists_async(self._path(key), watch=watch))
        if since is not UNKNOWN and self._differs(client, key, stat, since):
            return True  # changed since the last read: no need to wait
        with self._changes:
            self._changes.wait_for(
                lambda: self._generation.get(key, 0) != generation or self._closed,
                timeout=max(0.0, deadline - time.monotonic()),
            )
            return self._generation.get(key, 0) != generation

    def _differs(self, client: KazooClient, key: str, stat: ZnodeStat | None, since: Node | None) -> bool:
        """Whether `key` (whose stat is `stat`, None if absent) is no longer what the last read saw."""
        if stat is None or since is None:
            return (stat is None) != (since is None)
        if stat.version != since.version:
            return True
        try:  # a version can repeat after a delete and create: compare the holder too
            data, _ = self._answer(client.get_async(self._path(key)))
        except NoNodeError:
            return True
        return (data or b"").decode("utf-8", errors="replace") != since.value

    def _changed(self, key: str) -> None:
        with self._changes:
            self._generation[key] = self._generation.get(key, 0) + 1
            self._changes.notify_all()

    def _replace_as_ephemeral(self, client: KazooClient, path: str, data: bytes, version: int) -> bool:
        """Delete the znode at `version` and create it ephemeral in one transaction (no moment without the key)."""
        transaction = client.transaction()
        transaction.delete(path, version=version)
        transaction.create(path, data, ephemeral=True)
        results = self._answer(transaction.commit_async())
        return not any(isinstance(result, Exception) for result in results)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            client, self._client = self._client, None
        if self._poller is not None:
            self._poller.stop()
        self._connected.clear()
        with self._changes:
            self._changes.notify_all()  # a waiter returns now
        if client is not None:
            try:
                client.stop()
                client.close()
            except Exception as error:  # closing must not fail the agent's shutdown
                log.warning("closing the ZooKeeper client: %s", error)
