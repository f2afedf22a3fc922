"""Before an election a follower asks the other members' REST APIs for their WAL positions (real HTTP servers); the
node core says whom to ask and merges the answers."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from fsm import State
from fsm import node as core
from fsm.observation import ClusterConfig, ClusterView, LeaderKey, Member
from runtime.peers import answer_of, answers_of
from tests.servers.common import free_port


def serve(body: bytes) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def members() -> Iterator[tuple[Member, ...]]:
    standby = serve(json.dumps({"xlog": {"received_location": 9000, "replayed_location": 8000}}).encode())
    garbled = serve(b"<html>not json</html>")
    url = "http://127.0.0.1:{}/patroni".format
    yield (
        Member("n0", wal_position=100, api_url=url(standby.server_port)),
        Member("n1", wal_position=200, api_url=url(free_port())),  # nobody listens: keeps what it published
        Member("n2", wal_position=300, api_url=url(garbled.server_port)),
        Member("me", wal_position=400, api_url=url(standby.server_port)),
    )
    standby.shutdown()
    garbled.shutdown()


FOLLOWER = core.Memory(State.FOLLOWER)


def test_with_the_key_free_a_follower_asks_the_others_for_their_positions_now(members):
    view = ClusterView(members=members)
    asked = core.peers_to_ask("me", FOLLOWER, view)
    assert [m.name for m in asked] == ["n0", "n1", "n2"]  # never myself
    answers = answers_of(asked, timeout_s=1.0)
    assert answers == {"n0": core.PeerAnswer(9000), "n1": None, "n2": None}  # the furthest it reports; none; garbled
    fresh = core.with_positions(view, answers)
    assert [m.wal_position for m in fresh.members] == [9000, 200, 300, 400]  # who did not answer keeps its own


def test_with_a_leader_or_in_another_state_nobody_is_asked(members):
    assert core.peers_to_ask("me", FOLLOWER, ClusterView(leader=LeaderKey("n0"), members=members)) == ()
    for state in (State.BOOTSTRAP, State.CANDIDATE, State.LEADER, State.DEMOTING):
        assert core.peers_to_ask("me", core.Memory(state), ClusterView(members=members)) == ()
    assert core.peers_to_ask("me", FOLLOWER, None) == ()
    assert answers_of((), timeout_s=1.0) == {}


def test_members_without_a_rest_api_are_not_asked():
    view = ClusterView(members=(Member("n0", wal_position=5), Member("n1", api_url="http://127.0.0.1:1/patroni")))
    assert [m.name for m in core.peers_to_ask("me", FOLLOWER, view)] == ["n1"]
    assert core.with_positions(view, {"n1": None}) is view
    assert core.position_timeout_s(ClusterConfig(retry_timeout_s=2)) == 0.5
    assert core.position_timeout_s(ClusterConfig()) == 1.0


def test_a_member_that_does_not_answer_costs_at_most_the_timeout():
    assert answer_of(f"http://127.0.0.1:{free_port()}/patroni", timeout_s=0.5) is None


@pytest.mark.parametrize("role", ["primary", "master"])  # master: what Patroni before 3.0 answers
def test_a_member_that_answers_as_a_primary_keeps_the_others_from_racing(role):
    primary = serve(json.dumps({"role": role, "state": "running", "xlog": {"location": 7000}}).encode())
    try:
        url = f"http://127.0.0.1:{primary.server_port}/patroni"
        assert answer_of(url, timeout_s=1.0) == core.PeerAnswer(7000, primary=True)
        view = core.with_positions(ClusterView(members=(Member("n0", api_url=url),)), answers_of(
            (Member("n0", api_url=url),), timeout_s=1.0))  # fmt: skip
    finally:
        primary.shutdown()
    assert view.live_primaries == {"n0"} and view.members[0].wal_position == 7000
