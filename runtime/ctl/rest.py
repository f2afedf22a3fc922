"""regentctl's calls to the members' REST APIs, with the `ctl` section's login and TLS settings; every failure is
one CtlError line naming the member."""

from __future__ import annotations

import http.client
import json
from typing import Any
from urllib.parse import urlsplit

from runtime.config.settings import CtlSettings
from runtime.rest_client import basic_auth, client_tls, connection

TIMEOUT_S = 90.0  # a switchover or a restart answers once done


class CtlError(Exception):
    """What the operator reads, one line, and the exit status."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


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
    tls = client_tls(settings.cacert, settings.certfile, settings.keyfile, settings.insecure)
    conn = connection(url, TIMEOUT_S, tls if url.scheme == "https" else None)
    headers = {**({"Content-Type": "application/json"} if body is not None else {}), **(headers or {})}
    if settings.auth is not None:
        headers["Authorization"] = basic_auth(settings.auth)
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
