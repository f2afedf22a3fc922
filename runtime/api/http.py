"""HTTP plumbing: the request and reply values, and the threaded server and handler that carry them over sockets
(TLS included); the answers themselves come from `Api.handle`."""

from __future__ import annotations

import json
import logging
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from typing import Any, Protocol

from adapters.dcs.layout import REGENT_VERSION
from runtime.config.settings import RestApiSettings

log = logging.getLogger("regent.api")

JSON = "application/json"
TEXT = "text/plain; charset=utf-8"
PROMETHEUS = "text/plain; version=0.0.4; charset=utf-8"
MAX_BODY_BYTES = 1 << 20
BODY_TIMEOUT_S = 10.0  # a body that stalls after its headers gets 408 after this long
DRAIN_BYTES = 64 << 20  # an oversized body is read and dropped up to this much, so the client reads its 413
UNSAFE = ("POST", "PATCH", "PUT", "DELETE")


class HttpError(Exception):
    """A request that cannot be served as asked: its status and the sentence that says why."""

    def __init__(self, status: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers

    def reply(self) -> Reply:
        return Reply(self.status, {"message": self.message}, headers=self.headers)


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any = None  # JSON-able, or text for PROMETHEUS; None: no body
    content_type: str = JSON
    headers: tuple[tuple[str, str], ...] = ()

    def payload(self) -> bytes:
        if self.body is None:
            return b""
        if isinstance(self.body, str):
            return self.body.encode()
        return (json.dumps(self.body, default=str) + "\n").encode()


@dataclass(frozen=True)
class Request:
    query: dict[str, list[str]]
    body: bytes = b""
    head: bool = False  # HEAD or OPTIONS: only the status is wanted
    if_match: str | None = None  # the If-Match header: the write applies only to that version (an ETag)


class Api(Protocol):
    """What the handler serves requests with (ApiServer)."""

    def handle(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes = b"", client: str | None = None
    ) -> Reply: ...


def tls_context(settings: RestApiSettings) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(settings.certfile), str(settings.keyfile))
    if settings.cafile is not None:
        context.load_verify_locations(cafile=str(settings.cafile))
    context.verify_mode = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}[
        settings.verify_client
    ]
    return context


class HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    api: Api

    def server_bind(self) -> None:
        TCPServer.server_bind(self)  # HTTPServer's own asks DNS for the host's name: a slow start for nothing
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Health checkers (HAProxy) end with a TCP reset; clients hang up or fail the TLS handshake: not news.
        log.debug("REST API: connection from %s ended with an error", client_address, exc_info=True)


class HttpServer6(HttpServer):
    address_family = socket.AF_INET6


class Handler(BaseHTTPRequestHandler):
    server: HttpServer
    server_version = f"Regent/{REGENT_VERSION}"
    sys_version = ""
    timeout = 30  # a client that stalls frees its thread

    def do_GET(self) -> None:
        self._serve("GET")

    def do_HEAD(self) -> None:
        self._serve("HEAD")

    def do_OPTIONS(self) -> None:
        self._serve("OPTIONS")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        try:
            body = self._body() if method in UNSAFE else b""
            reply = self.server.api.handle(method, self.path, self.headers, body, self.client_address[0])
        except HttpError as error:
            reply = error.reply()
        except Exception:
            log.exception("REST API: %s %s failed", method, self.path)
            reply = Reply(500, {"message": "internal error: the traceback is in the agent's log"})
        self._write(reply, with_body=method not in ("HEAD", "OPTIONS"))

    def _body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        if not length.strip().isdigit():
            raise HttpError(400, f"Content-Length: {length!r} is not a number")
        size = int(length)
        self.connection.settimeout(BODY_TIMEOUT_S)
        try:
            if size > MAX_BODY_BYTES:
                self.close_connection = True
                self._drain(size)
                raise HttpError(413, f"the body ({size} bytes) exceeds {MAX_BODY_BYTES} bytes")
            body = self.rfile.read(size)
        except TimeoutError:
            self.close_connection = True
            raise HttpError(408, f"the body did not arrive within {BODY_TIMEOUT_S:g} s") from None
        finally:
            self.connection.settimeout(self.timeout)
        if len(body) < size:
            self.close_connection = True
            raise HttpError(400, f"the body ended after {len(body)} of its {size} bytes")
        return body

    def _drain(self, size: int) -> None:
        """Read and drop an oversized body (up to DRAIN_BYTES): a client still sending when the server closes would
        see a broken pipe or a reset, not the 413."""
        left = min(size, DRAIN_BYTES)
        while left > 0:
            chunk = self.rfile.read(min(left, 1 << 16))
            if not chunk:
                return
            left -= len(chunk)

    def _write(self, reply: Reply, with_body: bool) -> None:
        payload = reply.payload() if with_body else b""
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in reply.headers:
            self.send_header(name, value)
        self.end_headers()
        if payload:
            self.wfile.write(payload)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own errors (a malformed request line, an unknown method) as JSON, not HTML."""
        self.close_connection = True
        text = message or self.responses.get(code, ("error",))[0]
        self._write(Reply(code, {"message": text}), with_body=self.command != "HEAD")

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("REST API %s: " + format, self.address_string(), *args)
