"""The simulated DCS keeps etcd's and ZooKeeper's lease semantics (the simulator's safety results rest on it)."""

from __future__ import annotations

import pytest

from fsm.observation import TimelineSwitch
from model.simdcs import SimDCS
from model.simpg import Data, accepts_stream, same_lineage


def test_etcd_create_if_absent_compare_and_swap_and_delete():
    dcs = SimDCS("etcd", ttl_s=30)
    assert dcs.create("leader", "n0", 0.0, ttl=True)
    assert not dcs.create("leader", "n1", 1.0, ttl=True)
    assert not dcs.compare_and_swap("leader", "n1", "n1", 2.0, ttl=True)
    assert dcs.compare_and_swap("leader", "n0", "n0", 2.0, ttl=True)
    assert not dcs.compare_and_delete("leader", "n1", 3.0)
    assert dcs.compare_and_delete("leader", "n0", 3.0)
    assert dcs.get("leader", 3.0) is None


def test_etcd_ttl_expires_on_the_dcs_clock_and_renewal_refreshes_it():
    dcs = SimDCS("etcd", ttl_s=30)
    dcs.create("leader", "n0", 0.0, ttl=True)
    dcs.compare_and_swap("leader", "n0", "n0", 10.0, ttl=True)
    assert dcs.get("leader", 39.9) == "n0"
    assert dcs.get("leader", 40.0) is None
    assert dcs.view(40.0).leader is None


def test_zookeeper_grants_at_most_its_max_session_timeout_and_etcd_the_ttl_asked():
    zookeeper = SimDCS("zookeeper", ttl_s=30, max_session_s=20)
    assert zookeeper.lease_ttl_s() == 20
    zookeeper.heartbeat("n0", 0.0)
    zookeeper.create("leader", "n0", 0.0, owner="n0")
    assert zookeeper.get("leader", 19.9) == "n0"
    assert zookeeper.get("leader", 20.0) is None  # the granted 20 s, not the 30 s asked for
    assert SimDCS("zookeeper", ttl_s=10, max_session_s=20).lease_ttl_s() == 10
    assert SimDCS("etcd", ttl_s=30, max_session_s=20).lease_ttl_s() == 30


def test_zookeeper_ephemeral_key_lives_while_the_session_heartbeats():
    dcs = SimDCS("zookeeper", ttl_s=30)
    dcs.heartbeat("n0", 0.0)
    dcs.create("leader", "n0", 0.0, owner="n0")
    dcs.heartbeat("n0", 25.0)
    assert dcs.get("leader", 50.0) == "n0"  # 25 s after the last heartbeat
    assert dcs.get("leader", 55.0) is None  # the session expired 30 s after it
    dcs.heartbeat("n0", 60.0)  # a new session does not bring the ephemeral node back
    assert dcs.get("leader", 60.0) is None


def test_unknown_dcs_kind_is_refused():
    with pytest.raises(ValueError, match="unknown DCS kind"):
        SimDCS("consul", ttl_s=30)


def test_postgres_accepts_streams_by_timeline_number_but_lineage_tells_the_truth():
    base = Data("s", timeline=1, segment=1, wal=100)
    promoted_a = Data("s", timeline=2, segment=2, wal=500, history=(TimelineSwitch(1, 100),), past=((1, 100),))
    promoted_b = Data("s", timeline=2, segment=3, wal=400, history=(TimelineSwitch(1, 120),), past=((1, 120),))
    assert accepts_stream(base, promoted_a) and same_lineage(base, promoted_a)
    ahead = Data("s", timeline=1, segment=1, wal=150)
    assert not accepts_stream(ahead, promoted_a)  # past the fork: Postgres refuses
    # Two servers promoted from timeline 1 both call their timeline 2: Postgres would stream, the lineage differs.
    assert accepts_stream(promoted_b, promoted_a) and not same_lineage(promoted_b, promoted_a)


def test_the_failsafe_key_shows_in_the_view_as_sorted_pairs_and_outlives_the_leader_key():
    dcs = SimDCS("etcd", ttl_s=30)
    assert dcs.view(0.0).failsafe is None  # absent
    dcs.create("leader", "n0", 0.0, ttl=True)
    dcs.put("failsafe", {"n1": "http://n1:8008/patroni", "n0": "http://n0:8008/patroni"}, 0.0)  # Patroni's mapping
    assert dcs.view(0.0).failsafe == (("n0", "http://n0:8008/patroni"), ("n1", "http://n1:8008/patroni"))
    view = dcs.view(60.0)
    assert view.leader is None and view.failsafe is not None  # what the members race by once the key lapsed
    dcs.put("failsafe", {}, 61.0)
    assert dcs.view(61.0).failsafe == ()  # empty: lists nobody, so limits nobody
