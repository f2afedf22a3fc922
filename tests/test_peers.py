"""Before an election a follower asks the other members' REST APIs for their WAL positions (real HTTP servers)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from fsm.observation import ClusterView, LeaderKey, Member
from runtime.peers import wal_position_of, with_fresh_positions
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


def test_with_the_key_free_the_positions_are_asked_for_now(members):
    view = with_fresh_positions(ClusterView(members=members), "me", timeout_s=1.0)
    assert [m.wal_position for m in view.members] == [9000, 200, 300, 400]  # my own entry is never replaced


def test_with_a_leader_nothing_is_asked(members):
    view = ClusterView(leader=LeaderKey("n0"), members=members)
    assert with_fresh_positions(view, "me", timeout_s=1.0) is view


def test_a_member_that_does_not_answer_costs_at_most_the_timeout():
    assert wal_position_of(f"http://127.0.0.1:{free_port()}/patroni", timeout_s=0.5) is None
