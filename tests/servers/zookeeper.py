"""A real ZooKeeper 3.8 server for tests (standalone, loopback, its own temporary directory), and an Exhibitor
stand-in that serves whatever `/exhibitor/v1/cluster/list` body a test sets.

ZooKeeper starts in ~1.3 s (Debian's package, no systemd): a `zoo.cfg` with tickTime=500, so sessions may last
[1, 10] s, and `java ... ZooKeeperServerMain zoo.cfg`. It is ready when the `ruok` four-letter word says `imok` and
`srvr` reports a mode (~0.15 s after imok: before that, it refuses sessions).
"""

from __future__ import annotations

import json
import shutil
import socket
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from .common import Child, Closing, OneProcessServer, free_port, wait_until

CLASSPATH = "/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar:/etc/zookeeper/conf_example"
MAIN = "org.apache.zookeeper.server.ZooKeeperServerMain"


def four_letter_word(port: int, word: str = "ruok", host: str = "127.0.0.1", timeout_s: float = 0.5) -> str:
    """Send a four-letter command and return the whole answer ('' when the server does not answer)."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.sendall(word.encode())
            chunks = []
            while chunk := sock.recv(4096):
                chunks.append(chunk)
            return b"".join(chunks).decode(errors="replace")
    except OSError:
        return ""


class ZooKeeperServer(OneProcessServer):
    """One standalone server; `kill()` SIGKILLs it, `restart()` brings it back on the same port and data."""

    def __init__(self, port: int | None = None, tick_ms: int = 500, start_timeout_s: float = 20.0) -> None:
        self.port = port or free_port()
        self.tick_ms = tick_ms
        self.start_timeout_s = start_timeout_s
        self.dir = Path(tempfile.mkdtemp(prefix="regent-zk-"))
        (self.dir / "data").mkdir()
        self.config = self.dir / "zoo.cfg"
        self.config.write_text(
            "\n".join(
                [
                    f"tickTime={tick_ms}",
                    f"dataDir={self.dir / 'data'}",
                    f"clientPort={self.port}",
                    "clientPortAddress=127.0.0.1",
                    "admin.enableServer=false",  # else it takes port 8080
                    "4lw.commands.whitelist=ruok,stat,mntr,srvr,cons",
                    "",
                ]
            )
        )
        self.child: Child | None = None

    @property
    def hosts(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", self.port)]

    @property
    def connection_string(self) -> str:
        return f"127.0.0.1:{self.port}"

    def ruok(self) -> bool:
        return four_letter_word(self.port) == "imok"

    def serving(self) -> bool:
        """`ruok` says imok while the database still loads (sessions are refused then); `srvr` tells when it serves."""
        return self.ruok() and "Mode: " in four_letter_word(self.port, "srvr")

    def start(self) -> ZooKeeperServer:
        argv = ["java", "-Xmx256m", "-cp", CLASSPATH, MAIN, str(self.config)]
        self.child = Child(argv, self.dir / "zookeeper.log", cwd=self.dir)
        try:
            wait_until(self._ready, self.start_timeout_s, f"ZooKeeper on port {self.port}")
        except TimeoutError as error:
            tail = self.child.log_tail()
            self.child.kill()
            raise TimeoutError(f"{error}\n{tail}") from None
        return self

    def _ready(self) -> bool:
        assert self.child is not None
        if not self.child.alive:
            raise RuntimeError(f"ZooKeeper exited:\n{self.child.log_tail()}")
        return self.serving()

    def restart(self) -> None:
        """SIGKILL and start again on the same port and data dir (sessions and znodes come back from disk)."""
        self.kill()
        self.start()

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> ZooKeeperServer:
        return self.start()


class ExhibitorStub(Closing):
    """Serves `body` (with HTTP `status`) at /exhibitor/v1/cluster/list on a free loopback port; counts requests."""

    def __init__(self, body: bytes | dict[str, Any] = b"", status: int = 200) -> None:
        self.body = body
        self.status = status
        self.requests = 0
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                stub.requests += 1
                if self.path != "/exhibitor/v1/cluster/list":
                    self.send_error(404)
                    return
                body = stub.body if isinstance(stub.body, bytes) else json.dumps(stub.body).encode()
                self.send_response(stub.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # quiet test output
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name="exhibitor-stub", daemon=True)
        self._thread.start()

    def serve(self, servers: list[str], port: int) -> None:
        """Answer like a healthy Exhibitor."""
        self.body, self.status = {"servers": servers, "port": port}, 200

    def wait_for_requests(self, count: int, timeout_s: float = 5.0) -> None:
        """Until `count` more requests than now have been served."""
        target = self.requests + count
        wait_until(lambda: self.requests >= target, timeout_s, f"{count} Exhibitor polls")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
