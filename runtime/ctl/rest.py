"""regentctl's calls to the members' REST APIs, with the `ctl` section's login and TLS settings; every failure is
one CtlError line naming the member."""

from __future__ import annotations

import base64
import http.client
import json
import ssl
from typing import Any
from urllib.parse import urlsplit

from runtime.config.settings import CtlSettings

TIMEOUT_S = 90.0  # a switchover or a restart answers once done


class CtlError(Exception):
    """What the operator reads, one line, and the exit status."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def _tls(settings: CtlSettings) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(settings.cacert) if settings.cacert else None)
    if settings.insecure:
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    if settings.certfile:
        context.load_cert_chain(str(settings.certfile), str(settings.keyfile) if settings.keyfile else None)
    return context


def call(
    member: str,
    api_url: str,
    method: str,
    path: str,
    settings: CtlSettings,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """(status, JSON answer) of `method path` on `member`'s REST API (`api_url` from its member key)."""
    url = urlsplit(api_url)
    if not url.hostname:
        raise CtlError(f"member {member} publishes no REST API address")
    if url.scheme == "https":
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            url.hostname, url.port or 443, timeout=TIMEOUT_S, context=_tls(settings)
        )
    else:
        conn = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=TIMEOUT_S)
    headers = {**({"Content-Type": "application/json"} if body is not None else {}), **(headers or {})}
    if settings.auth is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(":".join(settings.auth).encode()).decode()
    try:
        conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
        response = conn.getresponse()
        raw = response.read()
    except (OSError, http.client.HTTPException) as error:
        raise CtlError(f"member {member}'s REST API at {url.netloc} did not answer: {error}") from None
    finally:
        conn.close()
    try:
        answer = json.loads(raw) if raw.strip() else None
    except ValueError:
        answer = raw.decode(errors="replace")
    return response.status, answer


def message(answer: Any) -> str:
    return str(answer.get("message", answer)) if isinstance(answer, dict) else str(answer)
