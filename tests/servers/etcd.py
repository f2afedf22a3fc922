"""Real etcd servers for tests: one member, or a 3-member cluster, on free loopback ports in a throwaway directory.

Fast raft timings (20 ms heartbeat, 200 ms election) so that a killed leader is replaced in well under a second; data
in /dev/shm when it exists, since fsync on a real disk makes every write slow. Stop with SIGKILL: SIGTERM can take
seconds.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from .common import Child, Closing, OneProcessServer, free_port, wait_until

ETCD = "/usr/bin/etcd"
HOST = "127.0.0.1"


def _v3(url: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """One call to etcd's v3 JSON gateway."""
    request = urllib.request.Request(f"{url}/v3{path}", data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=1) as answer:
        return dict(json.loads(answer.read()))


def _scratch_dir(prefix: str) -> Path:
    base = "/dev/shm" if Path("/dev/shm").is_dir() else None
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base))


class EtcdServer(OneProcessServer):
    """One etcd member. Alone (`initial_cluster` None) it forms its own cluster; `EtcdCluster` passes the peers."""

    def __init__(
        self,
        name: str = "n0",
        workdir: Path | None = None,
        *,
        client_port: int | None = None,
        peer_port: int | None = None,
        initial_cluster: str | None = None,
        enable_v2: bool = True,
        start: bool = True,
    ) -> None:
        self.name = name
        self.host = HOST
        self.port = client_port or free_port()
        self.peer_port = peer_port or free_port()
        self._own_dir = workdir is None
        self.workdir = workdir or _scratch_dir(f"etcd-{name}-")
        self.data_dir = self.workdir / f"{name}.etcd"
        peer_url = f"http://{HOST}:{self.peer_port}"
        client_url = f"http://{HOST}:{self.port}"
        self.argv = [
            ETCD,
            "--name", name,
            "--data-dir", str(self.data_dir),
            f"--enable-v2={'true' if enable_v2 else 'false'}",
            "--listen-client-urls", client_url,
            "--advertise-client-urls", client_url,
            "--listen-peer-urls", peer_url,
            "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", initial_cluster or f"{name}={peer_url}",
            "--heartbeat-interval", "20",
            "--election-timeout", "200",
        ]  # fmt: skip
        self.child: Child | None = None
        if start:
            self.start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def hosts(self) -> tuple[tuple[str, int], ...]:
        return ((self.host, self.port),)

    def value(self, key: str) -> str | None:
        """A key's value as Patroni's tools read it (the v2 API); None when it is absent."""
        try:
            with urllib.request.urlopen(f"{self.url}/v2/keys{key}", timeout=5) as answer:
                return str(json.loads(answer.read())["node"]["value"])
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return None
            raise

    def status(self) -> dict[str, Any]:
        """This member's maintenance status (v3 API, on with or without v2): its id in `header`, the `leader`'s."""
        return _v3(self.url, "/maintenance/status", {})

    def start(self, wait: bool = True) -> None:
        self.child = Child(self.argv, self.workdir / f"{self.name}.log")
        if wait:
            self.wait_ready()

    def healthy(self) -> bool:
        """The member answers and its cluster has a leader (etcd's /health)."""
        if self.child is None or not self.child.alive:
            return False
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=0.5) as response:
                return json.loads(response.read()).get("health") == "true"
        except (OSError, ValueError):
            return False

    def wait_ready(self, timeout_s: float = 15.0) -> None:
        try:
            wait_until(self.healthy, timeout_s, f"etcd {self.name} on port {self.port}")
        except TimeoutError as error:
            tail = self.child.log_tail() if self.child else ""
            raise TimeoutError(f"{error}\n{tail}") from None

    def restart(self, wait: bool = True) -> None:
        """Start again on the same ports and data directory (after `kill()`, or kills it first)."""
        self.kill()
        self.start(wait)

    def close(self) -> None:
        self.kill()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)


class EtcdCluster(Closing):
    """`size` members started together (a member waits for a quorum before it answers); in `workdir` if given (then
    left in place by `close()`), named `prefix`0, `prefix`1..."""

    def __init__(
        self,
        size: int = 3,
        workdir: Path | None = None,
        *,
        prefix: str = "n",
        enable_v2: bool = True,
        start: bool = True,
    ) -> None:
        self._own_dir = workdir is None
        self.workdir = workdir or _scratch_dir("etcd-cluster-")
        names = [f"{prefix}{i}" for i in range(size)]
        peer_ports = [free_port() for _ in names]
        initial = ",".join(f"{name}=http://{HOST}:{port}" for name, port in zip(names, peer_ports, strict=True))
        self.members = [
            EtcdServer(name, self.workdir, peer_port=port, initial_cluster=initial, enable_v2=enable_v2, start=False)
            for name, port in zip(names, peer_ports, strict=True)
        ]
        if start:
            self.start()

    def start(self) -> None:
        """Start every member (again, on their data directories) and wait until each answers."""
        try:
            for member in self.members:
                member.start(wait=False)
            for member in self.members:
                member.wait_ready()
        except BaseException:
            self.close()
            raise

    def kill(self) -> None:
        for member in self.members:
            member.kill()

    @property
    def hosts(self) -> list[tuple[str, int]]:
        return [(member.host, member.port) for member in self.members]

    def leader(self) -> EtcdServer:
        """The member that is raft leader now (asked of any member that answers)."""
        for member in self.members:
            try:
                leader_id = member.status()["leader"]
            except (OSError, ValueError, KeyError):
                continue
            for candidate in self.members:
                with contextlib.suppress(OSError, ValueError, KeyError):
                    if candidate.status()["header"]["member_id"] == leader_id:
                        return candidate
        raise RuntimeError("no etcd member knows a leader")

    def move_leader(self, target: EtcdServer, timeout_s: float = 5.0) -> None:
        """Make `target` the raft leader (etcd's MoveLeader, asked of the leader now) and wait until it is."""
        current = self.leader()
        if current is not target:
            target_id = target.status()["header"]["member_id"]
            _v3(current.url, "/maintenance/transfer-leadership", {"targetID": target_id})
        wait_until(lambda: self.leader() is target, timeout_s, f"etcd {target.name} as raft leader")

    def close(self) -> None:
        self.kill()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)
