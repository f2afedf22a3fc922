"""The etcd backend on etcd's v3 API (the `etcd3:` section), through a thin client over etcd's JSON gateway.

Why a thin client rather than a library: the gRPC client (`etcd3`) needs grpcio, a heavy native stack, and is no
longer kept; `etcd3gw` brings requests, futurist and pbr and sets one timeout for a whole client, where the failure
policy here bounds every request by what is left of the operation's retry_timeout. The gateway (`POST /v3/kv/range`,
`/v3/kv/txn`, `/v3/lease/grant`, `/v3/watch`, ...) is JSON over HTTP that etcd 3.4 serves with its default flags;
urllib3, already here for python-etcd, covers it in a page, as Patroni's own etcd3 module does.

Patroni's v3 layout: the v2 paths as keys (`/service/<scope>/leader`), the same values. Each member holds two
leases of `ttl` seconds, one for the leader key and one for its member key, so that publishing the member key never
keeps alive a leader key its holder stopped renewing; a write that needs a lease keeps it alive first (or takes a
new one once it expired). Compare-and-set and compare-and-delete are transactions. Everything that is not an answer
from etcd becomes `Unavailable`, and the next request goes to the next configured host.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import threading
import time
from typing import Any

import urllib3

from .base import UNKNOWN, Dcs, Unavailable, _Unknown
from .layout import Node
from .settings import EtcdSettings

log = logging.getLogger(__name__)

_NOT_FOUND = 5  # gRPC codes in the gateway's error answers
_FAILED_PRECONDITION = 9
_UNAUTHENTICATED = 16
_LOGIN_PAUSE_S = 1.0  # a refused login is not tried again sooner
_LEADER_LEASE, _MEMBER_LEASE = "leader", "member"


class LeaseGone(Exception):
    """etcd no longer knows the lease a write named (it expired)."""


class Refused(Unavailable):
    """etcd answered with an error (`code`: its gRPC code)."""

    def __init__(self, message: str, code: object) -> None:
        super().__init__(message)
        self.code = code


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _text(encoded: str | None) -> str:
    # Values written by other tools may not be UTF-8: decode anyway, the layout then reports bad JSON.
    return base64.b64decode(encoded or "").decode(errors="replace")


def _range_end(prefix: str) -> str:
    """The end of the range of every key that starts with `prefix` (its last byte plus one)."""
    raw = bytearray(prefix.encode())
    raw[-1] += 1
    return base64.b64encode(bytes(raw)).decode()


class Gateway:
    """POSTs to etcd's JSON gateway on one of `hosts`, moving to the next host when one does not answer."""

    def __init__(self, settings: EtcdSettings) -> None:
        self.settings = settings
        self._hosts = [f"{settings.protocol}://{host}:{port}" for host, port in settings.hosts]
        self._current = 0
        tls: dict[str, Any] = {}
        if settings.protocol == "https":
            tls = {"cert_reqs": "CERT_REQUIRED", "ca_certs": settings.cacert}
            if settings.cert:
                tls |= {"cert_file": settings.cert, "key_file": settings.key}
        # Kept connections per host: the loop's requests, its watch and the REST API's reads run at the same time.
        self._pool = urllib3.PoolManager(num_pools=len(self._hosts) + 1, maxsize=4, retries=False, **tls)
        self._token: str | None = None  # None: log in before the next request; "": etcd's auth is off, send none
        self._refused: tuple[float, str] | None = None  # until when a refused login stands, and etcd's words
        self._lock = threading.Lock()

    def close(self) -> None:
        self._pool.clear()

    def _url(self, method: str) -> str:
        return f"{self._hosts[self._current % len(self._hosts)]}/v3{method}"

    def _next_host(self) -> None:
        with self._lock:
            self._current = (self._current + 1) % len(self._hosts)
            self._token = None  # etcd's simple tokens are each member's own: log in again on the next host

    def _headers(self, timeout_s: float) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.settings.username is not None:
            if self._token is None:
                self._token = self._login(timeout_s)
            if self._token:
                headers["Authorization"] = self._token
        return headers

    def _login(self, timeout_s: float) -> str:
        """A token for the configured user, or "" when etcd has authentication off (as Patroni, go on without one:
        should etcd turn it on later, its "user name is empty" makes us log in). A refused login stands for a second
        without asking etcd again: a wrong password costs etcd a bcrypt round per try, and the refusal, not the
        timeout of a last hurried try, is what the log must show when retry_timeout runs out."""
        if self._refused is not None and time.monotonic() < self._refused[0]:
            raise Unavailable(self._refused[1])
        login = {"name": self.settings.username, "password": self.settings.password or ""}
        try:
            return str(self._send("/auth/authenticate", login, timeout_s, {})["token"])
        except Refused as refused:
            if refused.code == _FAILED_PRECONDITION and "not enabled" in str(refused):
                return ""
            message = f"etcd refused the login of user {self.settings.username!r}: {refused}"
            self._refused = (time.monotonic() + _LOGIN_PAUSE_S, message)
            raise Unavailable(message) from None

    def call(self, method: str, body: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        """etcd's answer to `method` (`/kv/range`, ...); Unavailable for anything else, LeaseGone for a write that
        named an expired lease."""
        return self._send(method, body, timeout_s, self._headers(timeout_s))

    def _send(self, method: str, body: dict[str, Any], timeout_s: float, headers: dict[str, str]) -> dict[str, Any]:
        url = self._url(method)
        try:
            response = self._pool.request(
                "POST", url, body=json.dumps(body).encode(), headers=headers, timeout=max(0.05, timeout_s)
            )
        except urllib3.exceptions.HTTPError as error:
            self._next_host()
            raise Unavailable(f"{url}: {type(error).__name__}: {error}") from error
        return self._answer(url, response.status, response.data)

    def _answer(self, url: str, status: int, data: bytes) -> dict[str, Any]:
        try:
            answer = json.loads(data) if data.strip() else {}
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            self._next_host()
            text = data.decode(errors="replace").strip()[:80]
            raise Unavailable(f"{url}: HTTP {status} {text!r}: is this etcd 3.4 or later (the v3 JSON gateway)?")
        if status == 200 and "error" not in answer:
            return answer
        message = str(answer.get("message") or answer.get("error") or answer)
        code = answer.get("code")
        if code == _NOT_FOUND and "lease not found" in message:
            raise LeaseGone(message)
        if code == _UNAUTHENTICATED or "auth token" in message or "user name is empty" in message:
            self._token = None  # expired, from another member, or auth was off at login: log in on the next try
        raise Refused(f"{url}: HTTP {status}: {message}", code)

    def watch(self, key: str, start_revision: int, timeout_s: float) -> bool:
        """True as soon as `key` changes at or after `start_revision` (or etcd cancels the watch: read again);
        False when `timeout_s` passed without a change."""
        url = self._url("/watch")
        body = {"create_request": {"key": _b64(key), "start_revision": str(start_revision)}}
        started = time.monotonic()
        try:
            response = self._pool.request(
                "POST", url, body=json.dumps(body).encode(), headers=self._headers(timeout_s),
                timeout=urllib3.Timeout(connect=min(timeout_s, 2.0), read=timeout_s), preload_content=False,
            )  # fmt: skip
        except urllib3.exceptions.HTTPError as error:
            self._next_host()
            raise Unavailable(f"{url}: {type(error).__name__}: {error}") from error
        try:
            if response.status != 200:
                self._answer(url, response.status, response.read())
            pending = b""
            for chunk in response.stream(4096):
                pending += chunk
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    result = json.loads(line).get("result", {}) if line.strip() else {}
                    if result.get("events") or result.get("canceled") or result.get("compact_revision"):
                        return True
            raise Unavailable(f"{url}: the watch stream ended")
        except urllib3.exceptions.ReadTimeoutError:
            if time.monotonic() - started >= timeout_s - 0.05:
                return False  # the watch's own time: nothing changed
            raise Unavailable(f"{url}: the watch broke early") from None
        except (urllib3.exceptions.HTTPError, ValueError) as error:
            self._next_host()
            raise Unavailable(f"{url}: {type(error).__name__}: {error}") from error
        finally:
            response.release_conn()
            response.close()  # a watch is never reused mid-stream


class Etcd3Dcs(Dcs):
    """The cluster's keys in etcd (v3 API), for member `name`."""

    def __init__(self, name: str, settings: EtcdSettings, retry_timeout_s: float = 10.0) -> None:
        super().__init__(name, settings.scope, settings.namespace, settings.ttl_s, retry_timeout_s)
        self.settings = settings
        # A third of retry_timeout: one hung host costs one request timeout and still leaves two tries.
        self.request_timeout_s = max(retry_timeout_s / 3, 0.5)
        self.gateway = Gateway(settings)
        self._leases: dict[str, str] = {}

    def _call(self, method: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.gateway.call(method, body, min(self.request_timeout_s, self._time_left()))

    def close(self) -> None:
        self.gateway.close()  # the leases expire with their TTL, as a v2 key would

    def set_ttl(self, ttl_s: float) -> None:
        if ttl_s != self.ttl_s:
            self._leases.clear()  # the next writes take leases of the new length
        super().set_ttl(ttl_s)

    # --- leases ------------------------------------------------------------------------------------------------

    def _lease(self, kind: str) -> str:
        """The `kind` lease, just kept alive; a new one when it expired (the keys it held are gone with it)."""
        lease = self._leases.get(kind)
        if lease is not None:
            kept = self._call("/lease/keepalive", {"ID": lease}).get("result", {})
            if int(kept.get("TTL", 0)) > 0:
                return lease
        granted = self._call("/lease/grant", {"TTL": max(2, math.ceil(self.ttl_s))})
        self._leases[kind] = str(granted["ID"])
        return self._leases[kind]

    def _put_request(self, key: str, value: str, lease: bool) -> dict[str, Any]:
        put: dict[str, Any] = {"key": _b64(self._path(key)), "value": _b64(value)}
        if lease:
            put["lease"] = self._lease(_LEADER_LEASE if key == "leader" else _MEMBER_LEASE)
        return {"request_put": put}

    def _txn(self, compare: list[dict[str, Any]], success: dict[str, Any]) -> dict[str, Any] | None:
        """The transaction's answer if its comparisons held, else None. A lease that expired between keeping it
        alive and the write is forgotten, and the write fails as the store being unavailable: the retry takes a
        new lease (for the leader key, one that no longer holds it)."""
        try:
            answer = self._call("/kv/txn", {"compare": compare, "success": [success]})
        except LeaseGone as gone:
            self._leases.clear()
            raise Unavailable(f"lease expired before the write: {gone}") from None
        return answer if answer.get("succeeded") else None

    # --- primitives --------------------------------------------------------------------------------------------

    def _path(self, key: str) -> str:
        return f"{self.root}/{key}"

    def _compare(self, key: str, target: str, **value: Any) -> dict[str, Any]:
        field = {"VALUE": "value", "MOD": "mod_revision", "CREATE": "create_revision"}[target]
        result = value.pop("result", "EQUAL")
        return {"key": _b64(self._path(key)), "target": target, "result": result, field: value[field]}

    def _load(self) -> dict[str, Node]:
        prefix = self.root + "/"
        # linearizable (the default): a member cut off from the others must not show an expired leader key
        answer = self._call("/kv/range", {"key": _b64(prefix), "range_end": _range_end(prefix)})
        return {
            _text(kv["key"])[len(prefix) :]: Node(_text(kv.get("value")), int(kv["mod_revision"]))
            for kv in answer.get("kvs", [])
        }

    def _create(self, key: str, value: str, lease: bool = False) -> bool:
        absent = self._compare(key, "CREATE", create_revision="0")
        return self._txn([absent], self._put_request(key, value, lease)) is not None

    def _put(self, key: str, value: str, lease: bool = False) -> None:
        try:
            self._call("/kv/put", self._put_request(key, value, lease)["request_put"])
        except LeaseGone as gone:
            self._leases.clear()
            raise Unavailable(f"lease expired before the write: {gone}") from None

    def _swap(
        self,
        key: str,
        value: str,
        *,
        prev_value: str | None = None,
        prev_version: int | None = None,
        lease: bool = False,
    ) -> bool:
        compare = [self._compare(key, "CREATE", create_revision="0", result="GREATER")]  # it exists
        if prev_value is not None:
            compare.append(self._compare(key, "VALUE", value=_b64(prev_value)))
        if prev_version is not None:
            compare.append(self._compare(key, "MOD", mod_revision=str(prev_version)))
        return self._txn(compare, self._put_request(key, value, lease)) is not None

    def _delete(self, key: str, *, prev_value: str | None = None) -> bool:
        delete = {"request_delete_range": {"key": _b64(self._path(key))}}
        compare = [self._compare(key, "CREATE", create_revision="0", result="GREATER")]
        if prev_value is not None:
            compare.append(self._compare(key, "VALUE", value=_b64(prev_value)))
        return self._txn(compare, delete) is not None

    def _renew_leader(self) -> bool:
        # Keeping the leader lease alive renews the key; the put re-binds a key this member holds by name to the
        # lease it has now (after a restart of the agent, say). Gone or someone else's: False.
        return self._swap("leader", self.name, prev_value=self.name, lease=True)

    def _wait(self, key: str, timeout_s: float, since: Node | _Unknown | None) -> bool:
        deadline = time.monotonic() + timeout_s
        answer = self._call("/kv/range", {"key": _b64(self._path(key))})
        kvs = answer.get("kvs", [])
        now = Node(_text(kvs[0].get("value")), int(kvs[0]["mod_revision"])) if kvs else None
        if since is not UNKNOWN and now != since:
            return True  # changed since the last read: no need to wait
        left = deadline - time.monotonic()
        if left <= 0.01:
            return False
        # From the store's revision as of now: any later event on the key, an expiry too, wakes us.
        return self.gateway.watch(self._path(key), int(answer["header"]["revision"]) + 1, left)
