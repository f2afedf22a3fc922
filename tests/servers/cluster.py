"""A real Regent cluster for integration tests and benchmarks: one etcd (or a 3-member etcd, or ZooKeeper) and N
agents, each a child process running `python -m runtime CONFIG.yml`, with their Postgres on free loopback ports, and
optionally HAProxy in front of them (tests/servers/haproxy.py).

Everything lives in one base directory in /dev/shm (mode 0755, so the `postgres` OS user reaches the node directories
the agents make inside): the YAML configs, the agents' logs, etcd's data, each node's data and own directories.
Short timings (ttl 10, loop_wait 2, retry_timeout 3, safety_margin 1) keep failovers in seconds.

`stop()` leaves nothing behind: agents get SIGTERM (a leader hands over, Postgres stops), then SIGKILL; any Postgres
still running on a data directory of the cluster is stopped with `pg_ctl stop -m immediate`; watchdog fence processes
the agents started are killed by pid; HAProxy and the DCS are killed.

`Writer` writes a row every 10 ms through one port (a node's, or HAProxy's) and logs each acknowledged write.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psycopg2
import psycopg2.extensions
import yaml

from adapters.postgres.process import find_postmaster, process_alive

from .common import free_port
from .etcd import EtcdCluster, EtcdServer
from .haproxy import Backend, HAProxy
from .postgres import stop_immediately
from .proxy import Link
from .zookeeper import ZooKeeperServer

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
AUTH = ("admin", "secret")
SUPERUSER = ("postgres", "Sup3r-secret")
REPLICATION = ("replicator", "Repl-secret")
TIMINGS: dict[str, float] = {"ttl": 10, "loop_wait": 2, "retry_timeout": 3, "safety_margin": 1}
PARAMETERS: dict[str, Any] = {
    "fsync": False,  # /dev/shm: nothing to sync; a crash here is a process crash, not a machine's
    "shared_buffers": "16MB",
    "max_connections": 30,
    "wal_retrieve_retry_interval": "200ms",  # a standby whose upstream went away retries in 0.2 s, not 5 s
    "wal_keep_size": "64MB",
    "dynamic_shared_memory_type": "mmap",  # in the data directory: a SIGKILLed server leaves nothing in /dev/shm
}
TABLE = "regent_it"


@dataclass
class Node:
    """One member: its ports, files and (while it runs) its agent process."""

    index: int
    name: str
    pg_port: int
    api_port: int
    config_path: Path
    log_path: Path
    data_dir: Path
    process: subprocess.Popen[bytes] | None = None
    log_file: Any = None
    fences: set[int] = field(default_factory=set)  # watchdog fence processes this node's agents started
    dcs_link: Link | None = None  # with `links`: the node's way to the DCS, which `cut` cuts
    api_link: Link | None = None  # with `links`: the others' way to this node's REST API (its connect_address)

    @property
    def agent_alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def postmaster_pid(self) -> int | None:
        found = find_postmaster(self.data_dir)
        return found.pid if found else None

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


class Cluster:
    """`size` Regent nodes n0..n{size-1} on one etcd (`etcd_members` > 1: an etcd cluster; `zookeeper`: one
    ZooKeeper instead), behind HAProxy with `haproxy`. Nothing starts until `start()`."""

    def __init__(
        self,
        size: int = 3,
        *,
        scope: str = "regent-it",
        timings: dict[str, float] | None = None,
        maximum_lag_on_failover: int = 1_048_576,
        watchdog: str = "automatic",
        primary_start_timeout: float = 10,
        log_level: str = "INFO",
        etcd_api: int = 2,
        failsafe_mode: bool = False,
        links: bool = False,
        etcd_members: int = 1,
        zookeeper: bool = False,
        haproxy: bool = False,
    ) -> None:
        parent = "/dev/shm" if Path("/dev/shm").is_dir() else "/tmp"
        self.base = Path(tempfile.mkdtemp(prefix="regent-cluster-", dir=parent))
        self.base.chmod(0o755)  # the postgres user must reach the node directories inside
        self.scope = scope
        self.timings = {**TIMINGS, **(timings or {})}
        self.maximum_lag_on_failover = maximum_lag_on_failover
        self.watchdog = watchdog
        self.primary_start_timeout = primary_start_timeout
        self.log_level = log_level
        self.etcd_api = etcd_api
        self.failsafe_mode = failsafe_mode
        self.links = links  # each node reaches etcd, and the others reach its REST API, through a Link to cut
        if links and etcd_members > 1:
            raise ValueError("links cut the way to one DCS server: one etcd member, or ZooKeeper")
        self.zookeeper = ZooKeeperServer() if zookeeper else None
        self.etcd_cluster: EtcdCluster | None = None
        if not zookeeper:
            (self.base / "etcd").mkdir()
            # v3: etcd as Debian starts it, with no v2 API; the agents use the `etcd3:` section
            self.etcd_cluster = EtcdCluster(
                etcd_members, self.base / "etcd", prefix="e", enable_v2=etcd_api == 2, start=False
            )
        self.nodes = [self._node(i) for i in range(size)]
        self.haproxy = (
            HAProxy([Backend(n.name, n.pg_port, n.api_port) for n in self.nodes], self.base / "haproxy")
            if haproxy
            else None
        )
        self._closed = False

    @property
    def etcd(self) -> EtcdServer:
        """The (first) etcd member: the one every node lists first."""
        assert self.etcd_cluster is not None, "this cluster runs on ZooKeeper"
        return self.etcd_cluster.members[0]

    @property
    def dcs_port(self) -> int:
        """The port of the (first) DCS server."""
        return self.zookeeper.port if self.zookeeper is not None else self.etcd.port

    def _node(self, index: int) -> Node:
        name = f"n{index}"
        (self.base / name).mkdir(mode=0o755)
        api_port = free_port()
        node = Node(
            index=index,
            name=name,
            pg_port=free_port(),
            api_port=api_port,
            config_path=self.base / f"{name}.yml",
            log_path=self.base / f"{name}.log",
            data_dir=self.base / name / "data",
            dcs_link=Link(self.dcs_port) if self.links else None,
            api_link=Link(api_port) if self.links else None,
        )
        node.config_path.write_text(yaml.safe_dump(self.config(node), sort_keys=False))
        return node

    def config(self, node: Node) -> dict[str, Any]:
        """The node's YAML config, as a dict (tests write broken variants of it)."""
        api_address = f"{HOST}:{node.api_link.port if node.api_link else node.api_port}"
        return {
            "scope": self.scope,
            **{key: value for key, value in self.timings.items()},
            "primary_start_timeout": self.primary_start_timeout,
            "restapi": {
                "listen": f"{HOST}:{node.api_port}",
                "connect_address": api_address,
                "auth": f"{AUTH[0]}:{AUTH[1]}",
            },
            **self._dcs_section(node),
            **({"bootstrap": {"dcs": {"failsafe_mode": True}}} if self.failsafe_mode else {}),
            "watchdog": {"mode": self.watchdog},
            "postgresql": {
                "name": node.name,
                "listen": f"{HOST}:{node.pg_port}",
                "connect_address": f"{HOST}:{node.pg_port}",
                "data_dir": str(node.data_dir),
                "maximum_lag_on_failover": self.maximum_lag_on_failover,
                "use_slots": True,
                "initdb": [{"encoding": "UTF8"}, "data-checksums"],
                "pg_hba": [f"host all all {HOST}/32 scram-sha-256"],
                "replication": {"username": REPLICATION[0], "password": REPLICATION[1], "network": f"{HOST}/32"},
                "superuser": {"username": SUPERUSER[0], "password": SUPERUSER[1]},
                "parameters": dict(PARAMETERS),
            },
        }

    def _dcs_section(self, node: Node) -> dict[str, Any]:
        if node.dcs_link is not None:
            hosts = [f"{HOST}:{node.dcs_link.port}"]
        elif self.etcd_cluster is not None:
            hosts = [f"{HOST}:{member.port}" for member in self.etcd_cluster.members]
        else:
            hosts = [f"{HOST}:{self.dcs_port}"]
        if self.zookeeper is not None:
            return {"zookeeper": {"hosts": hosts, "session_timeout": self.timings["ttl"]}}  # the lease is the session
        return {"etcd" if self.etcd_api == 2 else "etcd3": {"host": hosts[0]} if len(hosts) == 1 else {"hosts": hosts}}

    # --- lifecycle ---------------------------------------------------------------------------------------------

    def start(self, timeout_s: float = 60.0) -> Cluster:
        """The DCS, HAProxy, then every agent; returns once one primary and size-1 streaming replicas are up."""
        try:
            self.start_dcs()
            if self.haproxy is not None:
                self.haproxy.start()
            for node in self.nodes:
                self.start_agent(node.index)
            self.wait_healthy(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start_agent(self, n: int) -> None:
        node = self.nodes[n]
        if node.agent_alive:
            raise RuntimeError(f"the agent of {node.name} runs already")
        node.log_file = open(node.log_path, "ab")  # noqa: SIM115 - closed when the agent is reaped
        node.process = subprocess.Popen(
            [sys.executable, "-m", "runtime", str(node.config_path), "--log-level", self.log_level],
            stdin=subprocess.DEVNULL,
            stdout=node.log_file,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            **self.agent_identity(node),  # type: ignore[arg-type]
        )

    def agent_identity(self, node: Node) -> dict[str, object]:
        """Popen's arguments for who the node's agent runs as: this process's user (tests/test_run_as.py changes it)."""
        return {}

    def _note_fences(self, node: Node) -> None:
        """Remember the watchdog fence processes among the agent's children (they outlive a killed agent)."""
        if not node.agent_alive:
            return
        assert node.process is not None
        node.fences.update(fences_of(node.process.pid))

    def _reap(self, node: Node, timeout_s: float | None = None) -> bool:
        """Wait for the agent to exit; True if it did."""
        if node.process is None:
            return True
        try:
            node.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return False
        node.process = None
        if node.log_file is not None:
            node.log_file.close()
            node.log_file = None
        return True

    def stop_agent(self, n: int, timeout_s: float = 30.0) -> float:
        """SIGTERM the agent and wait until it exits; returns the time it took."""
        node = self.nodes[n]
        self._note_fences(node)
        started = time.monotonic()
        if node.agent_alive:
            assert node.process is not None
            node.process.send_signal(signal.SIGCONT)  # a paused agent cannot act on SIGTERM
            node.process.terminate()
        if not self._reap(node, timeout_s):
            self.kill_agent(n)
        return time.monotonic() - started

    def kill_agent(self, n: int) -> None:
        """SIGKILL the agent (its Postgres and fence live on, as after a crash of the agent alone)."""
        node = self.nodes[n]
        self._note_fences(node)
        if node.process is not None:
            with contextlib.suppress(ProcessLookupError):
                node.process.kill()
            self._reap(node)

    def restart_agent(self, n: int) -> None:
        if self.nodes[n].agent_alive:
            self.stop_agent(n)
        self.start_agent(n)

    def pause_agent(self, n: int) -> None:
        node = self.nodes[n]
        self._note_fences(node)
        assert node.process is not None
        node.process.send_signal(signal.SIGSTOP)

    def resume_agent(self, n: int) -> None:
        node = self.nodes[n]
        assert node.process is not None
        node.process.send_signal(signal.SIGCONT)

    def kill_postgres(self, n: int) -> int:
        """SIGKILL the postmaster of node n (from postmaster.pid); returns its pid."""
        pid = self.nodes[n].postmaster_pid()
        if pid is None:
            raise RuntimeError(f"no postmaster runs on {self.nodes[n].name}")
        os.kill(pid, signal.SIGKILL)
        return pid

    def kill_host(self, n: int) -> None:
        """The machine of node n dies: SIGKILL its agent, its watchdog fence, its postmaster and every child of it
        at once (the postmaster frozen first, so it cannot fork meanwhile)."""
        node = self.nodes[n]
        self._note_fences(node)
        pid = node.postmaster_pid()
        if pid is not None:
            os.kill(pid, signal.SIGSTOP)
        fences = [fence for fence in node.fences if "watchdog_fence" in _cmdline(fence)]  # not a reused pid
        victims = fences + ([pid, *_descendants(pid)] if pid is not None else [])
        if node.process is not None:
            with contextlib.suppress(ProcessLookupError):
                node.process.kill()
        for victim in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)
        self._reap(node)

    def walreceiver_pid(self, n: int) -> int | None:
        rows = self.sql(n, "SELECT pid FROM pg_stat_wal_receiver")
        return int(rows[0][0]) if rows and rows[0][0] else None

    def stop_postgres(self, n: int) -> None:
        """`pg_ctl stop -m immediate` on node n, if a postmaster runs there (even one no agent manages)."""
        node = self.nodes[n]
        stop_immediately(node.data_dir)

    def stop_dcs(self) -> None:
        """Kill every DCS server (all etcd members, or ZooKeeper)."""
        if self.zookeeper is not None:
            self.zookeeper.kill()
        if self.etcd_cluster is not None:
            self.etcd_cluster.kill()

    def start_dcs(self) -> None:
        """Start every DCS server (again, on the same ports and data) and wait until it serves."""
        if self.zookeeper is not None:
            self.zookeeper.start()
        if self.etcd_cluster is not None:
            self.etcd_cluster.start()

    stop_etcd = stop_dcs
    start_etcd = start_dcs

    def cut(self, n: int, dcs: bool = True, peers: bool = True, own_api: bool = False) -> None:
        """Partition node n (needs `links`): from the DCS, and from the other nodes' REST APIs; `own_api`: the others
        lose its REST API too (HAProxy's health checks still reach it). Its Postgres, and streaming from it, stay
        reachable (clients still reach it)."""
        for link in self._links(n, dcs, peers, own_api):
            link.cut()

    def heal(self, n: int, dcs: bool = True, peers: bool = True, own_api: bool = False) -> None:
        for link in self._links(n, dcs, peers, own_api):
            link.heal()

    def _links(self, n: int, dcs: bool, peers: bool, own_api: bool = False) -> list[Link]:
        node = self.nodes[n]
        assert node.dcs_link is not None, "Cluster(links=True) makes the links to cut"
        others = [other.api_link for other in self.nodes if other.index != n and other.api_link and peers]
        own = [node.api_link] if own_api and node.api_link else []
        return ([node.dcs_link] if dcs else []) + others + own

    def stop(self) -> None:
        """Stop everything this cluster started; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        for node in self.nodes:
            self._note_fences(node)
            if node.agent_alive:
                assert node.process is not None
                node.process.send_signal(signal.SIGCONT)
                node.process.terminate()
        deadline = time.monotonic() + 20
        for node in self.nodes:
            if not self._reap(node, max(0.1, deadline - time.monotonic())):
                self.kill_agent(node.index)
        for node in self.nodes:
            self.stop_postgres(node.index)
            for pid in node.fences:
                if process_alive(pid) and "watchdog_fence" in _cmdline(pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
        if self.haproxy is not None:
            self.haproxy.close()
        self.stop_dcs()
        if self.zookeeper is not None:
            self.zookeeper.close()
        for node in self.nodes:
            for link in (node.dcs_link, node.api_link):
                if link is not None:
                    link.close()
        if os.environ.get("REGENT_KEEP_CLUSTER"):
            print(f"cluster files kept in {self.base}")
        else:
            shutil.rmtree(self.base, ignore_errors=True)

    # --- the REST API -------------------------------------------------------------------------------------------

    def rest(
        self,
        n: int,
        path: str,
        method: str = "GET",
        body: Any = None,
        auth: bool | tuple[str, str] = True,
        timeout_s: float = 15.0,
    ) -> tuple[int, Any]:
        """One request to node n's REST API: (status, parsed JSON or text). A body that is not bytes or str is sent
        as JSON; `auth` True sends the cluster's credentials, a (user, password) pair sends those. (0, error) when
        the API does not answer."""
        headers = {}
        if auth:
            user, password = AUTH if auth is True else auth
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        payload: bytes | None = None
        if body is not None:
            payload = (
                body
                if isinstance(body, bytes)
                else body.encode()
                if isinstance(body, str)
                else json.dumps(body).encode()
            )
            headers["Content-Type"] = "application/json"
        conn = http.client.HTTPConnection(HOST, self.nodes[n].api_port, timeout=timeout_s)
        try:
            conn.request(method, path, body=payload, headers=headers)
            response = conn.getresponse()
            text = response.read().decode(errors="replace")
        except OSError as error:
            return 0, f"{type(error).__name__}: {error}"
        finally:
            conn.close()
        try:
            return response.status, json.loads(text) if text else None
        except ValueError:
            return response.status, text

    def status(self, n: int) -> dict[str, Any] | None:
        """GET /patroni of node n, or None when it does not answer."""
        code, body = self.rest(n, "/patroni", timeout_s=3)
        return body if code in (200, 503) and isinstance(body, dict) else None

    def roles(self) -> dict[str, tuple[str, str] | None]:
        """Each node's (role, HA state) from its /patroni; None for a node whose API does not answer."""
        result: dict[str, tuple[str, str] | None] = {}
        for node in self.nodes:
            found = self.status(node.index)
            result[node.name] = (found.get("role", "?"), found.get("ha_state", "?")) if found else None
        return result

    def primaries(self) -> list[int]:
        return [node.index for node in self.nodes if self.rest(node.index, "/primary", timeout_s=3)[0] == 200]

    def primary(self) -> int | None:
        """The one node whose GET /primary answers 200 (None if none does, or more than one)."""
        found = self.primaries()
        return found[0] if len(found) == 1 else None

    def replicas(self) -> list[int]:
        return [node.index for node in self.nodes if self.rest(node.index, "/replica", timeout_s=3)[0] == 200]

    # --- SQL ----------------------------------------------------------------------------------------------------

    def connect(self, n: int, timeout_s: int = 3) -> psycopg2.extensions.connection:
        return connect(self.nodes[n].pg_port, timeout_s)

    def sql(self, n: int, statement: str, params: tuple[Any, ...] = (), timeout_s: int = 3) -> list[tuple[Any, ...]]:
        conn = self.connect(n, timeout_s)
        try:
            with conn.cursor() as cur:
                cur.execute(statement, params)
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()

    def write(self, n: int, value: str, timeout_s: int = 3) -> None:
        """Insert `value` on node n (raises psycopg2.Error where it cannot: a standby, a stopped server)."""
        self.sql(n, f"CREATE TABLE IF NOT EXISTS {TABLE} (v text)", timeout_s=timeout_s)
        self.sql(n, f"INSERT INTO {TABLE} (v) VALUES (%s)", (value,), timeout_s=timeout_s)

    def try_write(self, n: int, value: str, timeout_s: int = 1) -> bool:
        try:
            self.write(n, value, timeout_s)
            return True
        except psycopg2.Error:
            return False

    def read(self, n: int) -> set[str]:
        """The values on node n (empty before the table exists there)."""
        try:
            return {row[0] for row in self.sql(n, f"SELECT v FROM {TABLE}")}
        except psycopg2.errors.UndefinedTable:
            return set()

    def has_value(self, n: int, value: str) -> bool:
        try:
            return value in self.read(n)
        except psycopg2.Error:
            return False

    def writable(self, n: int) -> bool:
        """Node n accepts a write now."""
        return self.try_write(n, f"probe-{time.monotonic_ns()}")

    def wait_writable(self, candidates: list[int], timeout_s: float, value: str | None = None) -> tuple[int, float]:
        """Try a write on each candidate until one succeeds: (that node, the monotonic time of the success)."""
        deadline = time.monotonic() + timeout_s
        while True:
            for n in candidates:
                if self.try_write(n, value or f"w-{time.monotonic_ns()}", timeout_s=1):
                    return n, time.monotonic()
            if time.monotonic() > deadline:
                raise TimeoutError(self._explain(f"no write succeeded on {candidates} within {timeout_s} s"))
            time.sleep(0.01)

    # --- waiting ------------------------------------------------------------------------------------------------

    def wait_for(self, predicate: Callable[[], T], timeout_s: float, what: str, interval_s: float = 0.1) -> T:
        """Poll until `predicate()` is truthy and return it; TimeoutError with every agent's log tail otherwise."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                value = predicate()
            except (OSError, psycopg2.Error):
                value = None  # type: ignore[assignment]
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(self._explain(f"{what}: not within {timeout_s} s"))
            time.sleep(interval_s)

    def _explain(self, message: str) -> str:
        parts = [message, f"roles: {self.roles()}"]
        for node in self.nodes:
            parts.append(f"--- {node.name} (agent {'alive' if node.agent_alive else 'down'}) {node.log_path}")
            parts.append(node.log_tail())
        return "\n".join(parts)

    def healthy(self) -> int | None:
        """The primary, if there is exactly one and every other node is a streaming replica of it."""
        primary = self.primary()
        if primary is None:
            return None
        others = [node.index for node in self.nodes if node.index != primary]
        if sorted(self.replicas()) != others:
            return None
        try:
            streaming = {
                row[0]
                for row in self.sql(
                    primary, "SELECT application_name FROM pg_stat_replication WHERE state = 'streaming'"
                )
            }
        except psycopg2.Error:
            return None
        return primary if streaming >= {self.nodes[n].name for n in others} else None

    def wait_healthy(self, timeout_s: float = 60.0) -> int:
        """Until one primary and streaming replicas on every other node; returns the primary."""
        return (
            self.wait_for(
                lambda: (p + 1) if (p := self.healthy()) is not None else None, timeout_s, "a healthy cluster"
            )
            - 1
        )

    def others(self, n: int) -> list[int]:
        """Every node but n."""
        return [node.index for node in self.nodes if node.index != n]

    def wait_replicated(self, value: str, nodes: list[int], timeout_s: float = 20.0) -> None:
        for n in nodes:
            self.wait_for(lambda n=n: self.has_value(n, value), timeout_s, f"row {value!r} on {self.nodes[n].name}")

    @contextlib.contextmanager
    def writer(self, n: int, interval_s: float = 0.01) -> Iterator[list[float]]:
        """Write to node n in a background thread; yields the list of monotonic times of successful writes."""
        with Writer(self.nodes[n].pg_port, f"bg-{time.monotonic_ns()}", interval_s) as writing:
            yield writing.times

    # --- HAProxy ------------------------------------------------------------------------------------------------

    def node_of_port(self, port: int) -> int:
        """The node whose Postgres listens on `port`."""
        return next(node.index for node in self.nodes if node.pg_port == port)

    def wait_routed(self, n: int, timeout_s: float = 10.0) -> None:
        """Until HAProxy's primary port leads to node n alone (needs `haproxy`)."""
        assert self.haproxy is not None, "Cluster(haproxy=True) starts HAProxy"
        self.haproxy.wait_routed([self.nodes[n].name], timeout_s)


def connect(port: int, timeout_s: int = 3, **options: Any) -> psycopg2.extensions.connection:
    """A superuser session in autocommit on the Postgres (or HAProxy) at `port`."""
    conn = psycopg2.connect(
        host=HOST,
        port=port,
        user=SUPERUSER[0],
        password=SUPERUSER[1],
        dbname="postgres",
        connect_timeout=timeout_s,
        application_name="regent-it",
        **options,
    )
    conn.autocommit = True
    return conn


@dataclass(frozen=True)
class Ack:
    """An acknowledged write: its value, the Postgres port that took it (`inet_server_port()`, the node's also
    through HAProxy) and the monotonic time its commit returned."""

    value: str
    port: int
    at: float


class Writer:
    """Inserts a row `prefix`-1, `prefix`-2... every `interval_s` through `port` in a background thread, and logs
    each write acknowledged in `acks` (their times in `times`, for `write_gaps`). A commit whose wait for a
    synchronous standby was cancelled returns with a warning, committed locally only: not acknowledged (its value is
    in `unconfirmed`). After an error it reconnects, unless `stay`: then only once the connection is gone (a prober
    stays connected to a standby that refuses writes). The table is created when missing."""

    def __init__(self, port: int, prefix: str, interval_s: float = 0.01, *, stay: bool = False) -> None:
        self.port = port
        self.prefix = prefix
        self.interval_s = interval_s
        self.stay = stay
        self.acks: list[Ack] = []
        self.times: list[float] = []
        self.unconfirmed: list[str] = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"writer-{prefix}", daemon=True)

    def __enter__(self) -> Writer:
        self.start()
        return self

    def start(self) -> None:
        self._thread.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        conn: psycopg2.extensions.connection | None = None
        for seq in itertools.count(1):
            if self._stop.is_set():
                break
            try:
                if conn is None:
                    conn = connect(self.port, 1, options="-c statement_timeout=5000")
                self._insert(conn, f"{self.prefix}-{seq}")
            except psycopg2.errors.UndefinedTable:
                assert conn is not None
                with contextlib.suppress(psycopg2.Error), conn.cursor() as cur:
                    cur.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (v text)")
            except psycopg2.Error:
                self.errors += 1
                if conn is not None and (conn.closed or not self.stay):
                    with contextlib.suppress(psycopg2.Error):
                        conn.close()
                    conn = None
            self._stop.wait(self.interval_s)
        if conn is not None:
            with contextlib.suppress(psycopg2.Error):
                conn.close()

    def _insert(self, conn: psycopg2.extensions.connection, value: str) -> None:
        del conn.notices[:]
        with conn.cursor() as cur:
            cur.execute(f"INSERT INTO {TABLE} (v) VALUES (%s) RETURNING inet_server_port()", (value,))
            ((port,),) = cur.fetchall()
        at = time.monotonic()
        if any("synchronous replication" in notice for notice in conn.notices):
            self.unconfirmed.append(value)
        else:
            self.acks.append(Ack(value, int(port), at))
            self.times.append(at)


@dataclass(frozen=True)
class Term:
    """A run of acknowledged writes all taken by one node, between two writes acknowledged by other nodes."""

    node: int
    first: float
    last: float
    writes: int


class Traffic:
    """A client writing every 10 ms through HAProxy's primary port (reconnecting after every error) and a prober per
    node writing to it directly every 10 ms; each logs its acknowledged writes. Values start with `label`."""

    def __init__(self, cluster: Cluster, label: str) -> None:
        assert cluster.haproxy is not None, "Cluster(haproxy=True) starts HAProxy"
        self.cluster = cluster
        self.client = Writer(cluster.haproxy.port, f"{label}-client")
        self.probers = [Writer(node.pg_port, f"{label}-{node.name}", stay=True) for node in cluster.nodes]

    @property
    def writers(self) -> list[Writer]:
        return [self.client, *self.probers]

    def __enter__(self) -> Traffic:
        for writer in self.writers:
            writer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        for writer in self.writers:
            writer.stop()

    def acks(self) -> list[Ack]:
        """Every acknowledged write so far, client's and probers', in the order they were acknowledged."""
        return sorted((ack for writer in self.writers for ack in list(writer.acks)), key=lambda ack: ack.at)

    def node(self, ack: Ack) -> int:
        return self.cluster.node_of_port(ack.port)

    def terms(self) -> list[Term]:
        """The acknowledged writes cut into runs by node: with no two nodes acknowledging writes in overlapping
        windows, one run per leadership (a node's last write before the next leader's first)."""
        terms: list[Term] = []
        for ack in self.acks():
            n = self.node(ack)
            if terms and terms[-1].node == n:
                last = terms[-1]
                terms[-1] = Term(n, last.first, ack.at, last.writes + 1)
            else:
                terms.append(Term(n, ack.at, ack.at, 1))
        return terms

    def first_ack(self, after: float, nodes: list[int], writers: list[Writer] | None = None) -> Ack | None:
        """The first write acknowledged after `after` by one of `nodes` (logged by `writers`, default all)."""
        ports = {self.cluster.nodes[n].pg_port for n in nodes}
        found = [
            ack
            for writer in writers or self.writers
            for ack in list(writer.acks)
            if ack.at > after and ack.port in ports
        ]
        return min(found, key=lambda ack: ack.at, default=None)

    def last_ack(self, n: int) -> Ack | None:
        """The last write node n acknowledged."""
        port = self.cluster.nodes[n].pg_port
        return max((ack for ack in self.acks() if ack.port == port), key=lambda ack: ack.at, default=None)

    def wait_ack(self, after: float, nodes: list[int], timeout_s: float, writers: list[Writer] | None = None) -> Ack:
        """Until one of `nodes` acknowledges a write logged after `after`."""
        return self.cluster.wait_for(
            lambda: self.first_ack(after, nodes, writers),
            timeout_s,
            f"a write acknowledged by {[self.cluster.nodes[n].name for n in nodes]}",
            interval_s=0.02,
        )

    def missing_on(self, n: int) -> list[str]:
        """The acknowledged values node n does not hold."""
        held = self.cluster.read(n)
        return [ack.value for ack in self.acks() if ack.value not in held]

    def summary(self) -> str:
        acks = self.acks()
        unconfirmed = sum(len(writer.unconfirmed) for writer in self.writers)
        return (
            f"{len(acks)} writes acknowledged ({len(self.client.acks)} through HAProxy), {unconfirmed} committed "
            f"with a cancelled synchronous wait, {self.client.errors} client errors"
        )


class SharedCluster:
    """One cluster for a module's tests: `get()` returns it healthy, or a fresh one (made by `make`, started) when the
    previous test left it broken; `close()` stops it."""

    def __init__(self, make: Callable[[], Cluster]) -> None:
        self.make = make
        self.cluster: Cluster | None = None

    def get(self, timeout_s: float = 30.0) -> Cluster:
        if self.cluster is not None:
            try:
                self.cluster.wait_healthy(timeout_s)
                return self.cluster
            except TimeoutError as error:
                print(f"\n[cluster] the previous test left the cluster unhealthy; starting a fresh one:\n{error}")
                self.close()
        started = time.monotonic()
        self.cluster = self.make()
        self.cluster.start()
        print(
            f"\n[timing] a fresh {len(self.cluster.nodes)}-node cluster healthy in {time.monotonic() - started:.2f} s"
        )
        return self.cluster

    def close(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()
            self.cluster = None


def write_gaps(times: list[float], start: float, end: float) -> list[tuple[float, float]]:
    """The spans within [start, end] between successive successful writes (at `times`), bounds included."""
    points = [start, *(t for t in sorted(times) if start <= t <= end), end]
    return list(itertools.pairwise(points))


def fences_of(agent_pid: int) -> list[int]:
    """The watchdog fence processes among an agent's children."""
    return [child for child in _children(agent_pid) if "watchdog_fence" in _cmdline(child)]


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError, ValueError):
                found += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
    return found


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        for child in _children(todo.pop()):
            found.append(child)
            todo.append(child)
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
