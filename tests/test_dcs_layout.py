"""Patroni's DCS values decode into the core's ClusterView, and what Regent writes decodes back to what it meant."""

from __future__ import annotations

import json

from adapters.dcs import layout
from adapters.dcs.layout import MemberRecord, Node, decode
from fsm.observation import FailoverRequest, LeaderKey, SyncState, Tags, TimelineSwitch


def nodes(**values: str) -> dict[str, Node]:
    return {key.replace("__", "/"): Node(value, version) for version, (key, value) in enumerate(values.items(), 1)}


def test_what_regent_writes_reads_back():
    record = MemberRecord(
        "n1",
        "postgres://10.0.0.1:5432/postgres",
        "http://10.0.0.1:8008/patroni",
        "running",
        "replica",
        12345,
        2,
        Tags(nosync=True, failover_priority=2),
    )
    history = (TimelineSwitch(1, 5000, "no recovery target specified", "n0", "2026-12-03T10:00:00+00:00"),)
    snapshot = decode(
        nodes(
            leader="n0",
            members__n1=record.to_json(),
            initialize="7300000000000000001",
            status=layout.encode_status(99999),
            history=layout.encode_history(history, "2030-01-01T00:00:00+00:00"),  # stamps only lines without a time
            failover=layout.encode_failover(FailoverRequest("n0", "n1")),
            sync=layout.encode_sync(SyncState("n0", "n1")),
            config=layout.encode_config({"ttl": 30}),
        )
    )
    view = snapshot.view
    assert view.leader == LeaderKey("n0", 1)
    (member,) = view.members
    assert (member.name, member.wal_position, member.timeline, member.tags) == ("n1", 12345, 2, record.tags)
    assert (member.api_url, member.conn_url, member.role) == (record.api_url, record.conn_url, "replica")
    assert view.initialize == "7300000000000000001" and view.leader_wal_position == 99999
    assert view.history == history and view.failover == FailoverRequest("n0", "n1")
    assert view.sync == SyncState("n0", "n1")
    assert snapshot.config == {"ttl": 30} and snapshot.config_version == 8 and snapshot.problems == ()


def test_history_lines_keep_their_new_leader_and_time_as_patroni_writes_them():
    patroni = (
        '[[1, 25165984, "no recovery target specified", "2024-05-01T10:00:00.123456+00:00", "postgresql1"],'
        ' [2, 33554592, "no recovery target specified"]]'  # a line of a Patroni before 1.6: no time, no leader
    )
    first, second = decode(nodes(history=patroni)).view.history
    assert (first.new_leader, first.at) == ("postgresql1", "2024-05-01T10:00:00.123456+00:00")
    assert (second.timeline, second.switch_lsn, second.new_leader, second.at) == (2, 33554592, None, None)
    now = "2026-12-03T11:00:00+00:00"
    mine = TimelineSwitch(3, 40000000, "promote", new_leader="n2")
    written = json.loads(layout.encode_history((first, second, mine), now))
    assert written == [
        [1, 25165984, "no recovery target specified", "2024-05-01T10:00:00.123456+00:00", "postgresql1"],
        [2, 33554592, "no recovery target specified", None, None],  # nobody known: no time invented
        [3, 40000000, "promote", now, "n2"],
    ]


def test_a_scheduled_switchover_keeps_patronis_text_and_is_never_due_until_the_agent_converts_it():
    patroni = '{"leader": "n0", "member": "n1", "scheduled_at": "2016-01-14T10:09:57.1394Z"}'
    failover = decode(nodes(failover=patroni)).view.failover
    assert failover == FailoverRequest("n0", "n1", scheduled_at="2016-01-14T10:09:57.1394Z")
    assert failover.scheduled and failover.due_s is None
    assert json.loads(layout.encode_failover(failover)) == json.loads(patroni)
    assert json.loads(layout.encode_failover(FailoverRequest("n0", "n1"))) == {"leader": "n0", "member": "n1"}


def test_member_json_carries_patronis_field_names():
    data = json.loads(MemberRecord("n0", "postgres://h:5432/postgres", "http://h:8008/patroni").to_json())
    assert set(data) == {"conn_url", "api_url", "state", "role", "xlog_location", "timeline", "tags", "version"}


def test_a_standby_publishes_its_positions_replication_state_and_pause_as_patroni_does():
    record = MemberRecord(
        "n1", "postgres://h:5432/postgres", "http://h:8008/patroni", wal_position=900,
        receive_lsn=1000, replay_lsn=900, replication_state="streaming", pause=True,
    )  # fmt: skip
    data = json.loads(record.to_json())
    assert (data["receive_lsn"], data["replay_lsn"], data["xlog_location"]) == (1000, 900, 900)
    assert (data["replication_state"], data["pause"]) == ("streaming", True)
    (member,) = decode(nodes(members__n1=record.to_json())).view.members
    assert member.replication_state == "streaming"


def test_a_scheduled_restart_is_published_in_the_member_key_as_patroni_does():
    shown = {"schedule": "2030-01-01T03:00:00+00:00", "role": "replica"}
    record = MemberRecord("n0", "postgres://h:5432/postgres", "http://h:8008/patroni", scheduled_restart=shown)
    assert json.loads(record.to_json())["scheduled_restart"] == shown  # patronictl list and flush read it there


def test_values_written_by_older_patroni_are_understood():
    member = json.dumps({"role": "master", "state": "running", "xlog_location": 7, "conn_url": "x", "api_url": "y"})
    view = decode(nodes(members__old=member, optime__leader="4242")).view
    assert view.members[0].role == "primary" and view.leader_wal_position == 4242


def test_malformed_values_are_ignored_and_named():
    snapshot = decode(
        nodes(
            members__good=MemberRecord("good", "c", "a").to_json(),
            members__bad="{not json",
            members__worse=json.dumps({"xlog_location": "lots"}),
            history=json.dumps({"not": "a list"}),
            status=json.dumps({"optime": "soon"}),
            sync="[]",
            members__a__b=MemberRecord("a/b", "c", "a").to_json(),
        )
    )
    assert [m.name for m in snapshot.view.members] == ["good"]
    assert snapshot.view.history == () and snapshot.view.leader_wal_position is None and snapshot.view.sync is None
    named = " ".join(snapshot.problems)
    for key in ("members/bad", "members/worse", "history", "status", "sync", "members/a/b"):
        assert key in named


def test_an_empty_scope_is_an_uninitialized_cluster():
    snapshot = decode({})
    assert snapshot.view.initialize is None and snapshot.view.leader is None and snapshot.config is None


def test_scope_path():
    assert layout.scope_path("service", "batman") == "/service/batman"
    assert layout.scope_path("/service/", "batman") == "/service/batman"


def test_the_failsafe_key_reads_as_sorted_name_url_pairs_as_patroni_writes_it():
    patroni = '{"postgresql1":"http://127.0.0.1:8009/patroni","postgresql0":"http://127.0.0.1:8008/patroni"}'
    snapshot = decode(nodes(failsafe=patroni))
    assert snapshot.view.failsafe == (
        ("postgresql0", "http://127.0.0.1:8008/patroni"),
        ("postgresql1", "http://127.0.0.1:8009/patroni"),
    )
    assert snapshot.problems == ()
    mine = (("n0", "http://h0:8008/patroni"), ("n1", "https://h1:8008/patroni"))
    assert json.loads(layout.encode_failsafe(mine)) == {"n0": "http://h0:8008/patroni", "n1": "https://h1:8008/patroni"}
    assert decode(nodes(failsafe=layout.encode_failsafe(mine))).view.failsafe == mine
    assert decode(nodes(failsafe="{}")).view.failsafe == ()  # a key that lists nobody, not an absent one
    assert decode({}).view.failsafe is None and decode(nodes(failsafe="")).view.failsafe is None


def test_a_malformed_failsafe_key_reads_as_absent_and_is_named():
    for value in ("{not json", "[1, 2]", '"n0"', '{"n0": 5}', '{"n0": "http://h/patroni", "n1": null}', '{"": "u"}'):
        snapshot = decode(nodes(failsafe=value))
        assert snapshot.view.failsafe is None, value
        (problem,) = snapshot.problems
        assert problem.startswith("failsafe: ") and "ignored" in problem, problem
