"""The pieces every call this project makes to a member's REST API shares (regentctl's, and the agent's own to its
peers): the HTTP Basic header, the client TLS context, and a connection for an `http(s)://host:port` URL."""

from __future__ import annotations

import base64
import http.client
import ssl
from pathlib import Path
from urllib.parse import SplitResult


def basic_auth(login: tuple[str, str]) -> str:
    """The `Authorization` header's value for `login` (user, password)."""
    return "Basic " + base64.b64encode(":".join(login).encode()).decode()


def client_tls(
    cafile: Path | None, certfile: Path | None = None, keyfile: Path | None = None, insecure: bool = False
) -> ssl.SSLContext:
    """Verify servers against `cafile` (else the system's CAs; `insecure`: not at all), presenting `certfile`."""
    context = ssl.create_default_context(cafile=str(cafile) if cafile else None)
    if insecure:
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    if certfile:
        context.load_cert_chain(str(certfile), str(keyfile) if keyfile else None)
    return context


def connection(url: SplitResult, timeout_s: float, tls: ssl.SSLContext | None = None) -> http.client.HTTPConnection:
    """A connection to `url`'s host (https with `tls`, else the system's CAs); ValueError when it names none."""
    if not url.hostname:
        raise ValueError("no host in the URL")
    if url.scheme == "https":
        context = tls or ssl.create_default_context()
        return http.client.HTTPSConnection(url.hostname, url.port or 443, timeout=timeout_s, context=context)
    return http.client.HTTPConnection(url.hostname, url.port or 80, timeout=timeout_s)
