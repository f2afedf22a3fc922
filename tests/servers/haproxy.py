"""A real HAProxy 2.6 in front of a cluster's Postgres servers, as Patroni's docs set it up: a primary port whose
health check is `OPTIONS /primary` on each node's REST API, and a replica port checked with `OPTIONS /replica`.

It runs in the foreground (`haproxy -db`) as a direct child, on free loopback ports, with its config, log and stats
socket in a throwaway directory. Right after start every server counts as up until `fall` checks have failed:
`wait_routed` waits until exactly the expected server is up. `close()` kills it and removes the directory.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .common import Child, OneProcessServer, free_port, port_open, wait_until

HAPROXY = "/usr/sbin/haproxy"
HOST = "127.0.0.1"
PRIMARY, REPLICAS = "primary", "replicas"


@dataclass(frozen=True)
class Backend:
    """One server behind HAProxy: its name, its Postgres port and the port of its REST API (the health check)."""

    name: str
    pg_port: int
    api_port: int


class HAProxy(OneProcessServer):
    """HAProxy on `port` (the primary) and `replica_port`, checking every `inter_ms` (down after `fall` failed checks,
    up after one good one; sessions to a server marked down are shut)."""

    def __init__(
        self,
        servers: list[Backend],
        workdir: Path | None = None,
        *,
        inter_ms: int = 250,
        fall: int = 2,
        check_timeout_ms: int = 1000,
    ) -> None:
        self.servers = servers
        self.port = free_port()
        self.replica_port = free_port()
        self._own_dir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="regent-haproxy-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.socket_path = self.workdir / "haproxy.sock"
        self.config_path = self.workdir / "haproxy.cfg"
        self.config_path.write_text(self.config(inter_ms, fall, check_timeout_ms))
        self.child: Child | None = None

    def config(self, inter_ms: int, fall: int, check_timeout_ms: int) -> str:
        def listen(name: str, port: int, check: str) -> list[str]:
            return [
                f"listen {name}",
                f"    bind {HOST}:{port}",
                "    balance roundrobin",
                f"    option httpchk OPTIONS /{check}",
                "    http-check expect status 200",
                f"    default-server inter {inter_ms}ms fall {fall} rise 1 on-marked-down shutdown-sessions",
                *(f"    server {s.name} {HOST}:{s.pg_port} check port {s.api_port}" for s in self.servers),
            ]

        return "\n".join(
            [
                "global",
                "    maxconn 200",
                f"    stats socket {self.socket_path} mode 600 level admin",
                "defaults",
                "    mode tcp",
                "    timeout connect 1s",
                "    timeout client 30m",
                "    timeout server 30m",
                f"    timeout check {check_timeout_ms}ms",
                *listen(PRIMARY, self.port, "primary"),
                *listen(REPLICAS, self.replica_port, "replica"),
                "",
            ]
        )

    def start(self) -> HAProxy:
        self.child = Child([HAPROXY, "-db", "-f", str(self.config_path)], self.workdir / "haproxy.log")
        try:
            wait_until(self._listening, 10, f"HAProxy on port {self.port}")
        except TimeoutError as error:
            tail = self.child.log_tail()
            self.child.kill()
            raise TimeoutError(f"{error}\n{tail}") from None
        return self

    def _listening(self) -> bool:
        assert self.child is not None
        if not self.child.alive:
            raise RuntimeError(f"HAProxy exited:\n{self.child.log_tail()}")
        return port_open(self.port) and port_open(self.replica_port) and self.socket_path.exists()

    def command(self, line: str) -> str:
        """One command on the admin socket (`show stat`, `show servers state`...); its whole answer."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(2)
            sock.connect(str(self.socket_path))
            sock.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")

    def up(self, backend: str = PRIMARY) -> list[str]:
        """The servers HAProxy routes `backend`'s connections to now (status UP, going down included)."""
        lines = self.command("show stat").splitlines()
        if not lines or not lines[0].startswith("# "):
            return []
        header = lines[0][2:].split(",")
        rows = [dict(zip(header, line.split(","), strict=False)) for line in lines[1:] if line]
        return sorted(
            row["svname"]
            for row in rows
            if row.get("pxname") == backend
            and row.get("svname") not in ("FRONTEND", "BACKEND")
            and row.get("status", "").startswith("UP")
        )

    def wait_routed(self, names: list[str], timeout_s: float = 10, backend: str = PRIMARY) -> None:
        """Until exactly `names` are up in `backend`."""
        wanted = sorted(names)
        try:
            wait_until(lambda: self.up(backend) == wanted, timeout_s, f"HAProxy's {backend} on {wanted}", 0.02)
        except TimeoutError as error:
            raise TimeoutError(f"{error}: up {self.up(backend)}") from None

    def close(self) -> None:
        self.kill()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)
