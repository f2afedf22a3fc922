"""Failsafe mode end to end: three `python -m runtime` processes on one real etcd with their real PostgreSQL 15, and
failsafe_mode on (from `bootstrap.dcs`, or turned on live by `regentctl edit-config`). With etcd gone, the leader's
ConfirmFailsafe reaches the other members' real REST APIs (POST /failsafe, restapi login) and it keeps taking writes
well past ttl; when etcd comes back it holds its key again, the members not racing for it. Once a member stops
answering (its agent killed: its REST API is gone) it goes read-only. Cut off from etcd and from its peers alike, a
leader stops writing within ttl and another member leads: failsafe mode never makes two primaries.

Timings are the suite's (ttl 10, loop_wait 2, retry_timeout 3, safety_margin 1); measured times are printed with a
`[timing]` prefix (run with -s).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator

from tests.servers.cluster import REPO, TIMINGS, Cluster, write_gaps

TTL, LOOP_WAIT, RETRY = TIMINGS["ttl"], TIMINGS["loop_wait"], TIMINGS["retry_timeout"]


@contextlib.contextmanager
def failsafe_cluster(links: bool = False) -> Iterator[Cluster]:
    """Three healthy nodes in failsafe mode, the failsafe key listing them all, a row written and replicated;
    `links`: each reaches etcd, and the others reach its REST API, through a link a test can cut. Failsafe mode
    comes from `bootstrap.dcs` without links, from `regentctl edit-config -s failsafe_mode=true` with them."""
    started = time.monotonic()
    with Cluster(3, failsafe_mode=not links, links=links, scope=f"fs-{int(links)}") as made:
        made.start()
        leader = made.wait_healthy()
        if links:
            edited = subprocess.run(
                [sys.executable, "-m", "runtime.ctl", "-c", str(made.nodes[0].config_path), "edit-config",
                 "-s", "failsafe_mode=true", "--force"],
                cwd=REPO, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert edited.returncode == 0 and "+failsafe_mode: true" in edited.stdout, edited.stdout + edited.stderr
        everyone = {node.name for node in made.nodes}
        made.wait_for(lambda: set(failsafe_key(made)) == everyone, 15, "the leader's failsafe key lists everyone")
        print(f"\n[timing] a 3-node failsafe cluster healthy in {time.monotonic() - started:.2f} s")
        made.write(leader, "before")
        made.wait_replicated("before", made.others(leader))
        yield made


def failsafe_key(cluster: Cluster) -> dict[str, str]:
    value = cluster.etcd.value(f"/service/{cluster.scope}/failsafe")
    return dict(json.loads(value)) if value else {}


def rule_of(cluster: Cluster, n: int) -> str | None:
    code, answer = cluster.rest(n, "/decision", timeout_s=3)
    return answer.get("rule") if code == 200 and isinstance(answer, dict) else None


def gaps(times: list[float], start: float, end: float) -> float:
    """The longest span within [start, end] without a successful write."""
    return max(b - a for a, b in write_gaps(times, start, end))


def test_with_etcd_gone_the_leader_leads_on_while_every_member_accepts_then_goes_read_only() -> None:
    with failsafe_cluster() as cluster:
        _etcd_outage(cluster)


def test_a_leader_cut_from_etcd_leads_on_by_its_members_word_but_cut_from_them_too_stops_within_ttl() -> None:
    with failsafe_cluster(links=True) as cluster:
        _etcd_cut(cluster)
        _partition(cluster)


def _etcd_cut(cluster: Cluster) -> None:
    """The leader alone loses etcd: its key lapses, and the members, which still read etcd, see it free; pinged
    within ttl, they do not race, and it leads on until it reaches etcd again and takes its key back."""
    leader = cluster.wait_healthy()
    name = cluster.nodes[leader].name
    cut = time.monotonic()
    cluster.cut(leader, peers=False)
    cluster.wait_for(lambda: cluster.etcd.value(f"/service/{cluster.scope}/leader") is None, TTL + 5, "key lapsed")
    lapsed = time.monotonic() - cut
    time.sleep(2 * LOOP_WAIT)
    assert cluster.try_write(leader, "past ttl, cut from etcd"), cluster._explain(f"{name} stopped writes")
    assert cluster.primaries() == [leader], "the members it pinged did not race"
    assert any(rule_of(cluster, n) == "follow_failsafe_leader" for n in cluster.others(leader))
    cluster.heal(leader, peers=False)
    cluster.wait_for(lambda: cluster.etcd.value(f"/service/{cluster.scope}/leader") == name, 15, "key retaken")
    print(f"\n[timing] {name} cut from etcd only: its key lapsed {lapsed:.3f} s after the cut, it led on by the "
          f"members' word, and retook the key {time.monotonic() - cut:.3f} s after the cut")  # fmt: skip
    assert cluster.wait_healthy() == leader


def _etcd_outage(cluster: Cluster) -> None:
    leader = cluster.primary()
    assert leader is not None
    name, (first, second) = cluster.nodes[leader].name, cluster.others(leader)
    log = cluster.nodes[leader].log_text
    with cluster.writer(leader) as writes:
        time.sleep(0.3)
        stopped = time.monotonic()
        cluster.stop_etcd()
        cluster.wait_for(lambda: rule_of(cluster, leader) == "lead_failsafe", TTL, f"{name} in failsafe mode")
        confirmed = time.monotonic() - stopped
        time.sleep(2 * TTL)  # twice the lease: without the members' word it would be read-only by now
        held_until = time.monotonic()
        assert cluster.writable(leader) and cluster.primaries() == [leader]
        for n in (leader, first, second):  # the leader holds its lease by their word; they heard it within ttl
            status = cluster.status(n)
            assert status is not None and status.get("failsafe_mode_is_active") is True, (n, status)
        assert rule_of(cluster, first) == rule_of(cluster, second) == "follow_dcs_down"
        # etcd back: the leader takes its lapsed key again first; the members, pinged within ttl, do not race
        back = time.monotonic()
        cluster.start_etcd()
        cluster.wait_for(lambda: rule_of(cluster, leader) == "lead_steady", 3 * TTL, f"{name} steady on etcd again")
        steady = time.monotonic()
        assert cluster.etcd.value(f"/service/{cluster.scope}/leader") == name and cluster.primaries() == [leader]
        assert "failsafe_mode_is_active" not in (cluster.status(leader) or {})
        # etcd gone again, and a member stops answering: its agent killed, its REST API with it
        cluster.stop_etcd()
        cluster.wait_for(lambda: rule_of(cluster, leader) == "lead_failsafe", TTL, f"{name} in failsafe mode again")
        cluster.kill_agent(second)
        killed = time.monotonic()
        cluster.wait_for(lambda: not cluster.writable(leader), TTL, f"{name} read-only", interval_s=0.05)
        read_only = time.monotonic() - killed
    longest = gaps(writes, stopped, killed)
    print(
        f"[timing] etcd stopped -> {name} led on by the members' word ({confirmed:.3f} s to its first "
        f"lead_failsafe turn), writable for {held_until - stopped:.3f} s until etcd came back, then steady on its "
        f"key again {steady - back:.3f} s later (longest write gap over all {longest:.3f} s; ttl {TTL:g} s); "
        f"etcd stopped again and a member's agent killed -> read-only after {read_only:.3f} s"
    )
    assert longest < 1.0  # no gap through the outage, nor when etcd came back
    assert "[lead_failsafe_retake]" in log()  # the key had lapsed during the outage: taken again before all else
    assert read_only <= LOOP_WAIT + 2 * RETRY + 2  # the next turn's refusal, then the turn after it demotes
    refusals = [line for line in log().splitlines() if "failsafe: " in line]
    assert any(f"{cluster.nodes[second].name} did not accept POST" in line for line in refusals), refusals
    # the turn's line is written once its actions ran, after Postgres went read-only
    cluster.wait_for(lambda: "[lead_failsafe_refused]" in log(), 5, f"{name}'s lead_failsafe_refused")
    cluster.start_etcd()  # and the member back: the cluster heals (one primary, the others streaming from it)
    cluster.start_agent(second)
    healed = cluster.wait_healthy(60)
    cluster.write(healed, "after the outage")
    cluster.wait_replicated("after the outage", cluster.others(healed))


def _partition(cluster: Cluster) -> None:
    leader = cluster.primary()
    assert leader is not None
    name = cluster.nodes[leader].name
    with cluster.writer(leader) as writes:
        time.sleep(0.3)
        cut = time.monotonic()
        cluster.cut(leader)  # from etcd and from the others' REST APIs; clients still reach its Postgres
        cluster.wait_for(lambda: not cluster.writable(leader), TTL + 5, f"{name} read-only", interval_s=0.05)
        read_only = time.monotonic() - cut
    last_write = max(writes) - cut
    new, written = cluster.wait_writable(cluster.others(leader), 3 * TTL, value="after the cut")
    log = cluster.nodes[leader].log_text()
    stopped_by = next((rule for rule in ("lead_failsafe_refused", "lead_lease_expired") if f"[{rule}]" in log), "?")
    fenced = "missed its lease deadline" in log
    print(
        f"\n[timing] {name} cut off -> read-only after {read_only:.3f} s (last write {last_write:.3f} s after the "
        f"cut; ttl {TTL:g} s; by [{stopped_by}], watchdog fired: {'yes' if fenced else 'no'}); "
        f"{cluster.nodes[new].name} writable {written - cut:.3f} s after the cut"
    )
    assert "[lead_failsafe]" in log and "did not accept POST" in log  # it asked the members, who did not answer
    assert (stopped_by, fenced) == ("lead_failsafe_refused", False), "read-only by its own turn, before the fence"
    assert last_write <= TTL and read_only <= TTL
    assert written - cut > last_write  # never two writable primaries: the new one only after the old one stopped
    cluster.heal(leader)
    cluster.wait_healthy(60)
    cluster.wait_replicated("after the cut", cluster.others(new))
