"""What this node asks the other members' REST APIs itself: their WAL positions before an election, and, as a
leader in failsafe mode, their word that it may lead on while the DCS does not answer.

The node core says whom to ask and when (`fsm.node.peers_to_ask`: a follower, with the leader key free;
`ConfirmFailsafe`: a leader the DCS does not answer) and what the answers mean (`with_positions`, the action's
outcome); this module only asks, everyone at once.
"""

from __future__ import annotations

import http.client
import json
import logging
import ssl
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

from fsm.node import PeerAnswer
from fsm.observation import FailsafeView, Member
from runtime import rest_client
from runtime.config.settings import CtlSettings, RestApiSettings

log = logging.getLogger(__name__)
T = TypeVar("T")
ACCEPTED = "Accepted"  # the whole body of a member's yes to POST /failsafe (Patroni's)


def answer_of(api_url: str, timeout_s: float) -> PeerAnswer | None:
    """What the member at `api_url` (its `/patroni` URL) reports: its furthest WAL position and whether it runs as
    a primary (Patroni's `role`, `master` from older versions); None when it does not answer with a document."""
    try:
        with urllib.request.urlopen(api_url, timeout=timeout_s) as answer:  # our own members' URLs, from the DCS
            status = json.load(answer)
    except (OSError, ValueError) as error:
        log.debug("no answer from %s: %s", api_url, error)
        return None
    if not isinstance(status, dict):
        return None
    xlog = status.get("xlog")
    values = xlog.values() if isinstance(xlog, dict) else ()
    positions = [value for value in values if isinstance(value, int) and not isinstance(value, bool)]
    primary = status.get("role") in ("primary", "master")
    return PeerAnswer(max(positions) if positions else None, primary)


def answers_of(members: Sequence[Member], timeout_s: float) -> dict[str, PeerAnswer | None]:
    """Each member's answer (`answer_of`) now, asked all at once; None where it did not answer within `timeout_s`.
    Whom to ask, and when, is the node core's (`fsm.node.peers_to_ask`)."""
    answers = _all_at_once([lambda m=m: answer_of(m.api_url, timeout_s) for m in members], timeout_s)
    return dict(zip((member.name for member in members), answers, strict=True))


def failsafe_url(api_url: str) -> str:
    """Where a member takes POST /failsafe: its api_url (`.../patroni`, as the failsafe key holds it) with
    `/failsafe` in place of `/patroni`."""
    url = urlsplit(api_url)
    base = url.path.rstrip("/").removesuffix("/patroni")
    return urlunsplit((url.scheme, url.netloc, base + "/failsafe", "", ""))


def peer_tls(restapi: RestApiSettings, ctl: CtlSettings) -> ssl.SSLContext:
    """The TLS this node calls https members with, as Patroni's agent does: their certificates verified against
    `ctl.cacert`, else `restapi.cafile`, else the system's CAs (`ctl.insecure`: not verified); `ctl.certfile` as
    the client certificate, else, where this node's own REST API requires one (`verify_client: required`, as its
    peers then do too), its own `restapi.certfile`."""
    cert, key = ctl.certfile, ctl.keyfile
    if not cert and restapi.verify_client == "required":
        cert, key = restapi.certfile, restapi.keyfile
    return rest_client.client_tls(ctl.cacert or restapi.cafile, cert, key, ctl.insecure)


@dataclass(frozen=True)
class PeerClient:
    """This node's calls to the other members' REST APIs that need its credentials: `auth` is `restapi.auth`
    (members share it, as Patroni assumes); `tls` is used for members that serve https (None: the system's CAs)."""

    auth: tuple[str, str] | None = None
    tls: ssl.SSLContext | None = None

    def confirm_failsafe(self, members: FailsafeView, me: dict[str, str], timeout_s: float) -> dict[str, str]:
        """`POST /failsafe` with `me` (this leader's name, conn_url, api_url) to every one of `members` at once;
        the members that did not answer 200 `Accepted` within `timeout_s`, each with what happened (empty: every
        one accepted). Each refusal is logged on one line naming the member."""
        body = json.dumps(me).encode()
        answers = _all_at_once([lambda m=m: self._ask_failsafe(m[1], body, timeout_s) for m in members], timeout_s)
        refusals = {}
        for (name, api_url), answer in zip(members, answers, strict=True):
            said = f"did not answer within {timeout_s:g} s" if answer is None else answer
            if said != ACCEPTED:
                refusals[name] = said
                log.warning("failsafe: %s did not accept POST %s: %s", name, failsafe_url(api_url), said)
        return refusals

    def _ask_failsafe(self, api_url: str, body: bytes, timeout_s: float) -> str:
        """`Accepted`, or what else the member said (its status and body), or why it said nothing."""
        headers = {"Content-Type": "application/json"}
        if self.auth is not None:
            headers["Authorization"] = rest_client.basic_auth(self.auth)
        url = urlsplit(failsafe_url(api_url))
        try:
            conn = rest_client.connection(url, timeout_s, self.tls)
            try:
                conn.request("POST", url.path, body=body, headers=headers)
                response = conn.getresponse()
                text = response.read(4096).decode(errors="replace")
            finally:
                conn.close()
        except (OSError, http.client.HTTPException, ValueError) as error:  # ValueError: a port that is no number
            return f"no answer: {error or type(error).__name__}"
        if response.status == 200 and text == ACCEPTED:
            return ACCEPTED
        return f"{response.status} {' '.join(text.split())[:200]}"


def _all_at_once(calls: Sequence[Callable[[], T]], timeout_s: float) -> list[T | None]:
    """Each call's result, all run at once; None for one still running after `timeout_s` (its thread ends on its
    own, bounded by its socket timeouts, but nobody waits for it)."""
    if not calls:
        return []
    pool = ThreadPoolExecutor(max_workers=len(calls), thread_name_prefix="regent-peer")
    futures = [pool.submit(call) for call in calls]
    wait(futures, timeout=timeout_s)
    pool.shutdown(wait=False, cancel_futures=True)
    return [future.result() if future.done() else None for future in futures]
