"""The REST API server of one node: its routes, the reads, and the operations run between two turns of the loop."""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import json
import logging
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

from adapters.dcs import Dcs, Outcome, Snapshot, connect
from adapters.postgres.process import find_postmaster
from adapters.postgres.sql import SqlError
from fsm import node as core
from fsm.lease import lease_timing_problems
from fsm.node import dynamic_config
from fsm.observation import ClusterConfig, FailoverRequest, OperatorRequest, PostgresState
from runtime.agent import Agent
from runtime.config import RegentConfig, RestApiSettings, dynamic_problems
from runtime.reload import reload_config
from runtime.schedule import monotonic_at

from .documents import cluster_json, decision_json, history_json, metrics_text, node_status
from .http import PROMETHEUS, TEXT, UNSAFE, Handler, HttpError, HttpServer, HttpServer6, Reply, Request, tls_context
from .node import HEALTH, HealthCheck, NodeView, parse_lag
from .requests import (
    RESTART_KEYS,
    config_etag,
    json_object,
    member_field,
    merge_patch,
    reinitialize_request,
    request_answer,
    restart_request,
    restart_shown,
    scheduled_switchover_json,
    scheduled_time,
    switch_verdict,
    switchover_problem,
)

log = logging.getLogger("regent.api")

POLL_S = 0.1  # how often a switchover request re-reads the DCS while it waits for the new leader
SERVER_DETAILS = """
SELECT current_setting('server_version_num')::int, EXISTS (SELECT FROM pg_settings WHERE pending_restart),
       pg_is_in_recovery(),
       CASE WHEN pg_is_in_recovery() THEN NULL ELSE (pg_current_wal_lsn() - '0/0')::bigint END,
       (pg_last_wal_receive_lsn() - '0/0')::bigint, (pg_last_wal_replay_lsn() - '0/0')::bigint
"""


class ApiServer:
    """The REST API of one node. `start()` serves in a daemon thread; `handle()` is the whole request logic."""

    def __init__(self, agent: Agent, config: RegentConfig, *, dcs: Dcs | None = None) -> None:
        self.agent = agent
        self.config = config
        self.settings: RestApiSettings = config.restapi
        self.dcs = dcs or connect(config.name, config.dcs, config.cluster.retry_timeout_s)
        self.started_at = time.time()
        self.switchover_wait_s: float | None = None  # None: max(5 s, 2 x loop_wait)
        self.lock_wait_s = 30.0  # how long an operator request waits beyond its own work for a turn to take it
        self._server: HttpServer | None = None
        self._thread: threading.Thread | None = None
        self._routes = self._make_routes()

    # --- lifecycle ----------------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._server is not None:
            return
        host = self.settings.listen_host
        kind = HttpServer6 if ":" in host else HttpServer
        try:
            server = kind((host, self.settings.listen_port), Handler)
        except OSError as error:  # the port taken, an address not on this machine: say which setting
            address = f"[{host}]:{self.settings.listen_port}" if ":" in host else f"{host}:{self.settings.listen_port}"
            raise OSError(error.errno, f"restapi.listen: cannot listen on {address}: {error.strerror}") from None
        server.api = self
        if self.settings.certfile and self.settings.keyfile:
            try:
                server.socket = tls_context(self.settings).wrap_socket(
                    server.socket, server_side=True, do_handshake_on_connect=False
                )  # the handshake then runs in each request's thread: a slow client cannot hold up accept()
            except (OSError, ssl.SSLError):
                server.server_close()
                raise
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="regent-api", daemon=True
        )
        self._thread.start()
        scheme = "https" if self.settings.certfile else "http"
        log.info("REST API listening on %s://%s:%d", scheme, host or "*", self.port)

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.dcs.close()

    @property
    def port(self) -> int:
        """The bound port (the configured one is 0 in tests)."""
        return self._server.server_address[1] if self._server else self.settings.listen_port

    # --- dispatch -----------------------------------------------------------------------------------------------

    def endpoints(self) -> dict[str, tuple[str, ...]]:
        """Each path and the methods it takes (OPTIONS and HEAD aside), for the README's reference to be checked."""
        return {path: tuple(sorted(methods)) for path, methods in self._routes.items()}

    def _make_routes(self) -> dict[str, dict[str, Callable[[Request], Reply]]]:
        routes: dict[str, dict[str, Callable[[Request], Reply]]] = {
            path: {"GET": self._health_check(check)} for path, check in HEALTH.items()
        }
        routes.update(
            {
                "/patroni": {"GET": self._get_patroni},
                "/cluster": {"GET": self._get_cluster},
                "/history": {"GET": self._get_history},
                "/config": {"GET": self._get_config, "PATCH": self._patch_config, "PUT": self._put_config},
                "/metrics": {"GET": self._get_metrics},
                "/decision": {"GET": self._get_decision},
                "/switchover": {
                    "POST": lambda request: self._switchover(request, "switchover"),
                    "DELETE": self._delete_switchover,
                },
                "/failover": {"POST": lambda request: self._switchover(request, "failover")},
                "/restart": {"POST": self._restart, "DELETE": self._delete_restart},
                "/reload": {"POST": self._reload},
                "/reinitialize": {"POST": self._reinitialize},
                "/failsafe": {"GET": self._get_failsafe, "POST": self._post_failsafe},
            }
        )
        return routes

    def handle(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes = b"", client: str | None = None
    ) -> Reply:
        """Answer one request from `client` (its address; None: a caller in this process); never raises (a bug
        becomes a 500 and a logged traceback)."""
        try:
            return self._dispatch(method, target, headers, body, client)
        except HttpError as error:
            return error.reply()
        except Exception:
            log.exception("REST API: %s %s failed", method, target)
            return Reply(500, {"message": "internal error: the traceback is in the agent's log"})

    def _dispatch(self, method: str, target: str, headers: Mapping[str, str], body: bytes, client: str | None) -> Reply:
        split = urlsplit(target)
        path = split.path.rstrip("/") or "/"
        routes = self._routes.get(path)
        if routes is None:
            raise HttpError(404, f"no such endpoint: {path}")
        allowed = sorted({*routes, "OPTIONS", *(["HEAD"] if "GET" in routes else [])})
        allow = (("Allow", ", ".join(allowed)),)
        if method == "OPTIONS" and "GET" not in routes:
            return Reply(200, headers=allow)
        verb = "GET" if method in ("HEAD", "OPTIONS") else method
        handler = routes.get(verb)
        if handler is None:
            raise HttpError(405, f"{method} is not allowed on {path}", allow)
        if verb in UNSAFE:
            self._allowed(client)
            self._authenticate(headers)
        try:
            query = parse_qs(split.query, keep_blank_values=True, strict_parsing=False)
        except ValueError as error:
            raise HttpError(400, f"malformed query string: {error}") from None
        return handler(Request(query, body, head=verb != method, if_match=headers.get("If-Match")))

    def _allowed(self, client: str | None) -> None:
        """`restapi.allowlist`: the unsafe methods only from these networks (empty: from anywhere)."""
        networks = self.settings.allowlist
        if not networks or client is None:
            return
        try:
            address = ipaddress.ip_address(client.removeprefix("::ffff:"))
        except ValueError:
            raise HttpError(403, f"{client} is not in restapi.allowlist") from None
        if not any(address in ipaddress.ip_network(network) for network in networks):
            raise HttpError(403, f"{client} is not in restapi.allowlist")

    def _authenticate(self, headers: Mapping[str, str]) -> None:
        expected = self.settings.auth
        if expected is None:
            return
        challenge = (("WWW-Authenticate", 'Basic realm="Regent"'),)
        scheme, _, token = (headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "basic":
            raise HttpError(401, "authentication required (HTTP Basic)", challenge)
        try:
            user, _, password = base64.b64decode(token.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise HttpError(401, "malformed Basic credentials", challenge) from None
        # Both compared in constant time, and both always: no hint which part was wrong.
        user_ok = hmac.compare_digest(user.encode(), expected[0].encode())
        password_ok = hmac.compare_digest(password.encode(), expected[1].encode())
        if not (user_ok and password_ok):
            raise HttpError(401, "wrong credentials", challenge)

    # --- reads --------------------------------------------------------------------------------------------------

    def node(self) -> NodeView:
        agent = self.agent
        config = agent.config()
        deadline = core.lease_deadline(agent.memory, config)
        turns = agent.turns
        last_turn_at = turns[-1].at if turns else self.started_at
        return NodeView(
            name=agent.name,
            scope=self.config.postgresql.scope,
            state=agent.state,
            pg=agent.postgres or PostgresState(),
            running=find_postmaster(agent.executor.postgres.settings.data_dir) is not None,
            view=agent.snapshot.view if agent.snapshot else None,
            config=config,
            tags=agent.executor.tags,
            lease_left_s=None if deadline is None else deadline - agent.executor.clock(),
            loop_age_s=max(0.0, time.time() - last_turn_at),
            failsafe_active=agent.failsafe_active(),
        )

    def _cluster_config(self, snapshot: Snapshot) -> ClusterConfig:
        """The cluster config as this fresh read says (the agent's own copy may be a turn old)."""
        try:
            return dynamic_config(self.agent.local_config, snapshot.config or {})
        except (TypeError, ValueError):
            return self.agent.config()

    def _read_cluster(self) -> Snapshot:
        snapshot = self.dcs.read_cluster()
        if snapshot is None:
            raise HttpError(503, "the DCS did not answer within retry_timeout")
        return snapshot

    def _health_check(self, check: HealthCheck) -> Callable[[Request], Reply]:
        def answer(request: Request) -> Reply:
            lag = parse_lag(request.query["lag"][-1]) if "lag" in request.query else None
            node = self.node()
            status = 200 if check(node, lag) else 503
            return Reply(status, None if request.head else node_status(node))

        return answer

    def _get_patroni(self, request: Request) -> Reply:
        node = self.node()
        status = 200 if node.running else 503
        if request.head:
            return Reply(status)
        body = {**node_status(node), **self._live_details(node)}
        scheduled = self.agent.scheduled_restart
        if scheduled is not None:
            body["scheduled_restart"] = scheduled
        return Reply(status, body)

    def _live_details(self, node: NodeView) -> dict[str, Any]:
        """What only the running server can tell: its version, settings waiting for a restart, its standbys."""
        if not node.running:
            return {}
        postgres = self.agent.executor.postgres
        details: dict[str, Any] = {}
        try:
            version, pending, in_recovery, written, received, replayed = postgres.sql.one(SERVER_DETAILS, timeout_s=2.0)
            details["server_version"] = version
            if pending or node.pg.pending_restart:  # the last turn's too: a standby below its primary's settings
                details["pending_restart"] = True
            # positions now, not as of the last turn: an election asks for them (runtime/peers.py)
            if in_recovery:
                live = {"received_location": received, "replayed_location": replayed}
                xlog = {key: int(value) for key, value in live.items() if value is not None}
            else:
                xlog = {"location": int(written)}
            if xlog:
                details["xlog"] = xlog
        except SqlError as error:
            log.debug("REST API: no server details: %s", error)
        if node.pg.writable:
            details["replication"] = [
                {"application_name": r.application_name, "state": r.state, "sync_state": r.sync_state, "lag": lag}
                for r in postgres.replication_status()
                for lag in [r.lag_bytes]
            ]
        return details

    def _get_cluster(self, request: Request) -> Reply:
        snapshot = self._read_cluster()
        if request.head:
            return Reply(200)
        body = cluster_json(snapshot.view, self.config.postgresql.scope, self.agent.config().pause)
        scheduled = scheduled_switchover_json(snapshot.view.failover)
        if scheduled is not None:
            body["scheduled_switchover"] = scheduled
        return Reply(200, body)

    def _get_history(self, request: Request) -> Reply:
        snapshot = self._read_cluster()
        return Reply(200, None if request.head else history_json(snapshot.view))

    def _get_config(self, request: Request) -> Reply:
        snapshot = self._read_cluster()
        body = None if request.head else (snapshot.config or {})
        return Reply(200, body, headers=(("ETag", config_etag(snapshot)),))

    def _get_metrics(self, request: Request) -> Reply:
        if request.head:
            return Reply(200, content_type=PROMETHEUS)
        text = metrics_text(self.node(), dict(self.agent.decision_counts))
        return Reply(200, text, content_type=PROMETHEUS)

    def _get_decision(self, request: Request) -> Reply:
        return Reply(200, None if request.head else decision_json(self.agent))

    def _get_failsafe(self, request: Request) -> Reply:
        """Patroni's GET /failsafe: the failsafe key as this node last read it, `{name: api_url}`."""
        snapshot = self.agent.snapshot
        failsafe = snapshot.view.failsafe if snapshot else None
        if failsafe is None:
            raise HttpError(502, "no failsafe key (failsafe_mode off, or no leader wrote it yet)")
        return Reply(200, None if request.head else dict(failsafe))

    # --- operations ----------------------------------------------------------------------------------------------

    def _switchover(self, request: Request, action: str) -> Reply:
        fields = json_object(request.body, {"leader", "candidate", "member", "scheduled_at"})
        leader = member_field(fields, "leader")
        candidate = member_field(fields, "candidate") or member_field(fields, "member")
        scheduled_at = fields.get("scheduled_at")
        if action == "failover" and candidate is None:
            raise HttpError(400, "failover needs a candidate")
        if action == "switchover" and leader is None:
            raise HttpError(400, "switchover needs the current leader")
        if candidate is not None and candidate == leader:
            raise HttpError(400, "switchover target and source are the same")
        when = None
        if scheduled_at is not None:
            if action == "failover":
                raise HttpError(400, "a failover cannot be scheduled: schedule a switchover (it names the leader)")
            when = scheduled_time(scheduled_at, "scheduled_at", time.time())
        snapshot = self._read_cluster()
        view, config = snapshot.view, self._cluster_config(snapshot)
        if config.pause:  # a paused leader never acts on the key: it would fire, unexpectedly, once pause is lifted
            raise HttpError(412, f"the cluster is paused (maintenance mode): no {action} until pause is lifted")
        if when is not None:
            return self._schedule_switchover(FailoverRequest(leader, candidate, scheduled_at=when.isoformat()))
        problem = switchover_problem(view, config, leader, candidate, self.agent.clock())
        if problem:
            raise HttpError(412, problem)
        if self.dcs.request_failover(FailoverRequest(leader, candidate)) is not Outcome.DONE:
            raise HttpError(503, "could not write the failover key to the DCS")
        log.info("REST API: %s requested: %s -> %s", action, leader or "(any leader)", candidate or "(best member)")
        self.agent.wake.set()
        old = view.leader.holder if view.leader else None
        return self._await_switch(old, candidate, action, config)

    def _schedule_switchover(self, request: FailoverRequest) -> Reply:
        """Write the failover key with `scheduled_at`, as Patroni: whether the switchover can be honoured is judged
        by the leader's rows at that time (and the key cleared if it cannot), not now."""
        if self.dcs.request_failover(request) is not Outcome.DONE:
            raise HttpError(503, "could not write the failover key to the DCS")
        log.info("REST API: switchover %s -> %s scheduled at %s", request.leader, request.candidate or "(best member)",
                 request.scheduled_at)  # fmt: skip
        self.agent.wake.set()
        return Reply(202, {"message": "Switchover scheduled"})

    def _delete_switchover(self, request: Request) -> Reply:
        failover = self._read_cluster().view.failover
        if failover is None or not failover.scheduled:
            raise HttpError(404, "no switchover is scheduled")
        if self.dcs.clear_failover() is not Outcome.DONE:
            raise HttpError(503, "could not delete the failover key from the DCS")
        log.info("REST API: scheduled switchover deleted (it was for %s)", failover.scheduled_at)
        return Reply(200, {"message": "scheduled switchover deleted"})

    def _await_switch(self, old: str | None, candidate: str | None, action: str, config: ClusterConfig) -> Reply:
        wait_s = self.switchover_wait_s if self.switchover_wait_s is not None else max(5.0, 2 * config.loop_wait_s)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            time.sleep(POLL_S)
            snapshot = self.dcs.read_cluster()
            verdict = switch_verdict(snapshot.view, old, candidate, action) if snapshot else None
            if verdict is not None:
                return verdict
        message = f"{action} requested; not complete after {wait_s:g} s (the leader acts on it at its next turn)"
        return Reply(202, {"message": message})

    def _restart(self, request: Request) -> Reply:
        fields = json_object(request.body, RESTART_KEYS, empty_ok=True)
        if "schedule" not in fields:  # a null schedule is a bad time, never a restart now
            return self._ask(restart_request(fields))
        wall_now_s = time.time()
        when = scheduled_time(fields["schedule"], "schedule", wall_now_s)
        if self.agent.config().pause:
            raise HttpError(412, "the cluster is paused (maintenance mode): a restart cannot be scheduled")
        at_s = monotonic_at(when, wall_now_s, self.agent.clock())
        wanted = restart_request(fields, at_s)  # the options are checked now, their conditions at its time
        if not self.agent.schedule_restart(wanted, restart_shown(fields, when)):
            raise HttpError(409, "Another restart is already scheduled")
        log.info("REST API: restart scheduled at %s", when.isoformat())
        return Reply(202, {"message": "Restart scheduled"})

    def _delete_restart(self, request: Request) -> Reply:
        if not self.agent.cancel_scheduled_restart():
            raise HttpError(404, "no restarts are scheduled")
        log.info("REST API: scheduled restart deleted")
        return Reply(200, {"message": "scheduled restart deleted"})

    def _ask(self, wanted: OperatorRequest) -> Reply:
        """Hand an operator request to the HA loop and answer with what its next turn decided: the rows of the
        table act on it (or refuse it), never this handler."""
        config = self.agent.config()
        start_s = wanted.timeout_s if wanted.timeout_s is not None else self.agent.executor.postgres.start_timeout_s
        wait_s = config.loop_wait_s + 2 * config.retry_timeout_s + start_s + self.lock_wait_s
        try:
            turn = self.agent.ask(wanted, wait_s)
        except RuntimeError as busy:
            raise HttpError(503, str(busy)) from None
        return request_answer(wanted, turn, wait_s)

    def _reload(self, request: Request) -> Reply:
        """Patroni's reload: the agent re-reads its config file and Postgres its own, as on SIGHUP."""
        json_object(request.body, set(), empty_ok=True)
        try:
            result = self.agent.run_soon(
                lambda: reload_config(self.agent, self.config, "POST /reload"), self.lock_wait_s
            )
        except RuntimeError as busy:
            raise HttpError(503, str(busy)) from None
        if not result:
            raise HttpError(503, f"reload failed: {result.detail}")
        return Reply(200, {"message": result.detail or "reloaded"})

    def _post_failsafe(self, request: Request) -> Reply:
        """Patroni's POST /failsafe: a leader the DCS does not answer asks this member to let it lead on. The core's
        `failsafe_refusal` answers, through the agent (which records an accepted ping for its next turns): 200
        `Accepted`, 502 when failsafe_mode is off, 500 with the reason otherwise (Patroni's codes, plain text)."""
        leader = json_object(request.body).get("name")  # Patroni sends conn_url, api_url and slots too
        if not isinstance(leader, str) or not leader:
            raise HttpError(400, "failsafe: expected a JSON object naming the leader in `name` (a member name)")
        refusal = self.agent.answer_failsafe(leader)
        if refusal is None:
            log.debug("REST API: failsafe ping from %s accepted", leader)
            return Reply(200, "Accepted", content_type=TEXT)
        log.info("REST API: failsafe ping from %s refused: %s", leader, refusal)
        return Reply(502 if refusal == core.FAILSAFE_OFF else 500, refusal, content_type=TEXT)

    def _reinitialize(self, request: Request) -> Reply:
        fields = json_object(request.body, {"force", "from_leader"}, empty_ok=True)
        return self._ask(reinitialize_request(fields))

    def _patch_config(self, request: Request) -> Reply:
        """RFC 7386 merge of the body into the DCS `config` key (Patroni's `PATCH /config`, `edit-config`)."""
        patch = json_object(request.body)
        snapshot = self._read_for_write(request)
        return self._write_config(merge_patch(snapshot.config or {}, patch), snapshot, "patched", patch)

    def _put_config(self, request: Request) -> Reply:
        """The body replaces the DCS `config` key whole (Patroni's `PUT /config`)."""
        return self._write_config(json_object(request.body), self._read_for_write(request), "replaced", None)

    def _read_for_write(self, request: Request) -> Snapshot:
        """The cluster as read for a config write; with If-Match, only if the config key is still at that version
        (then the compare-and-set below holds the whole edit, from the client's read, to one version)."""
        snapshot = self._read_cluster()
        etag = config_etag(snapshot)
        if request.if_match is not None and request.if_match.strip() not in ("*", etag):
            raise HttpError(412, f"the config key is at {etag}, not {request.if_match}: read it again and retry")
        return snapshot

    def _write_config(
        self, merged: dict[str, Any], snapshot: Snapshot, verb: str, change: dict[str, Any] | None
    ) -> Reply:
        """Check `merged` against the schema and the lease rules, then compare-and-set it on the version read."""
        problems = dynamic_problems(merged)
        if problems:
            raise HttpError(400, "; ".join(problems))
        try:
            effective = dynamic_config(self.agent.local_config, merged)
        except ValueError as error:
            raise HttpError(400, str(error)) from None
        unsafe = lease_timing_problems(effective)
        if unsafe:
            raise HttpError(412, "unsafe timings: " + "; ".join(unsafe))
        outcome = self.dcs.set_config(merged, snapshot.config_version)
        if outcome is Outcome.CONFLICT:
            raise HttpError(409, "the config key changed since it was read: read it again and retry")
        if outcome is not Outcome.DONE:
            raise HttpError(503, "could not write the config key to the DCS")
        shown = json.dumps(change if change is not None else merged, sort_keys=True)
        log.info("REST API: config key %s: %s", verb, shown)
        self.agent.wake.set()
        return Reply(200, merged)
