"""A TCP forwarder that can be cut like a network link: no iptables or network namespaces are needed to partition
processes that all run on loopback. Cut, it drops what it holds and swallows new connections without a word (the
client's request times out, as across a partition, rather than being refused); healed, it forwards again."""

from __future__ import annotations

import contextlib
import socket
import threading

from .common import Closing, free_port

HOST = "127.0.0.1"


class Link(Closing):
    """Listens on its own free port and forwards every connection to `target_port`, until `cut()`."""

    def __init__(self, target_port: int, target_host: str = HOST) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._listener = socket.create_server((HOST, self.port))
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._cut = False
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def cut_off(self) -> bool:
        return self._cut

    def cut(self) -> None:
        """Drop every connection it forwards; from now on, hold new ones without an answer."""
        with self._lock:
            self._cut = True
            self._drop()

    def heal(self) -> None:
        """Forward again; connections held while cut are dropped (their clients reconnect)."""
        with self._lock:
            self._cut = False
            self._drop()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._drop()
        self._listener.close()

    def _drop(self) -> None:
        for sock in self._open:
            with contextlib.suppress(OSError):
                sock.close()
        self._open.clear()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self._open.add(client)
                if self._cut:
                    continue  # held open, never answered
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        try:
            server = socket.create_connection(self.target, timeout=5)
        except OSError:
            with contextlib.suppress(OSError):
                client.close()
            return
        server.settimeout(None)
        with self._lock:
            if self._cut or client not in self._open:
                server.close()
                return
            self._open.add(server)
        threading.Thread(target=self._pump, args=(client, server), daemon=True).start()
        self._pump(server, client)

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        with self._lock:
            self._open -= {source, sink}
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()
