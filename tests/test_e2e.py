"""End to end through HAProxy (issue 15), on real processes: three `python -m runtime` agents with their real
PostgreSQL 15 behind a real HAProxy (the primary port checked with `OPTIONS /primary` on each REST API). While
faults happen, a client writes every 10 ms through HAProxy's primary port and a prober writes every 10 ms to each
node directly (`Traffic`), each logging the writes acknowledged and the node that took each.

Two properties are checked on those logs: no acknowledged write is missing on the final primary (synchronous mode),
and the acknowledged writes fall into one run per leadership, in the order the leaders came: one node's last write
comes before the next leader's first, never two nodes acknowledging writes in overlapping windows.

Most tests share one cluster with `synchronous_mode: true` on one etcd (v2), each node reaching etcd, and the
others reaching its REST API, through a Link a test can cut: 10 successive leader kills, a switchover, a whole-DCS
outage (failsafe off), a partition, a SIGSTOPped leader agent. Two start their own: a 3-member etcd (v3) losing the
member every node talks to, which is also its raft leader; and ZooKeeper. Timings are tighter than the suite's
(ttl 6, loop_wait 1, retry_timeout 1, safety_margin 1: loop_wait + 2 * retry_timeout <= ttl and loop_wait +
safety_margin < ttl). Measured figures are printed with a `[timing]` prefix (run with -s).
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Iterator

import pytest

from adapters.postgres.process import process_alive
from tests.servers.cluster import Cluster, SharedCluster, Term, Traffic, write_gaps
from tests.servers.etcd import EtcdCluster, EtcdServer
from tests.test_agent import log_times
from tests.test_sync_outage import SyncCluster, server_state, wait_synchronous

TIMINGS = {"ttl": 6, "loop_wait": 1, "retry_timeout": 1, "safety_margin": 1}
TTL, LOOP_WAIT = TIMINGS["ttl"], TIMINGS["loop_wait"]
FAILOVER_S = TTL + LOOP_WAIT + 5  # the key lapses within ttl of the kill; a turn, a promotion and slack
KILLS = 10


@pytest.fixture(scope="module")
def shared() -> Iterator[SharedCluster]:
    made = SharedCluster(lambda: SyncCluster(3, scope="regent-e2e", timings=TIMINGS, links=True, haproxy=True))
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def cluster(shared: SharedCluster) -> Cluster:
    """The shared synchronous cluster, healthy (a fresh one when the previous test left it broken)."""
    return shared.get()


def settled(cluster: Cluster) -> tuple[int, int]:
    """Until the primary has its synchronous standby and HAProxy's primary port leads to it alone:
    (primary, synchronous standby)."""
    primary, standby = wait_synchronous(cluster)
    cluster.wait_routed(primary)
    return primary, standby


def flowing(traffic: Traffic, n: int) -> None:
    """Until the client's writes through HAProxy reach node n."""
    traffic.wait_ack(time.monotonic(), [n], 5, [traffic.client])


def describe(cluster: Cluster, terms: list[Term]) -> str:
    start = terms[0].first if terms else 0.0
    return ", ".join(
        f"{cluster.nodes[t.node].name} {t.first - start:.3f}-{t.last - start:.3f} s ({t.writes})" for t in terms
    )


def check_traffic(cluster: Cluster, traffic: Traffic, leaders: list[int], primary: int) -> list[float]:
    """The writes ran in one term per leader, in `leaders`' order, and every acknowledged write is on `primary`;
    returns the handovers (a leader's last write to the next one's first, in seconds)."""
    terms = traffic.terms()
    assert [term.node for term in terms] == leaders, f"overlapping acknowledged writes: {describe(cluster, terms)}"
    missing = traffic.missing_on(primary)
    assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:5]}"
    return [after.first - before.last for before, after in itertools.pairwise(terms)]


def raft_leader(etcd: EtcdCluster) -> EtcdServer | None:
    """The etcd member that is raft leader, None while there is none."""
    try:
        return etcd.leader()
    except RuntimeError:
        return None


def cluster_leader(cluster: Cluster, n: int) -> str | None:
    """The leader that node n's GET /cluster names (the leader key as it reads it)."""
    code, body = cluster.rest(n, "/cluster", timeout_s=3)
    members = body.get("members", []) if code == 200 and isinstance(body, dict) else []
    return next((member["name"] for member in members if member.get("role") == "leader"), None)


def rewound(cluster: Cluster) -> int:
    """How many times any node has been rewound so far."""
    return sum(len(log_times(cluster, node.index, r"rewind: rewound from")) for node in cluster.nodes)


def names(cluster: Cluster, nodes: list[int]) -> str:
    return " -> ".join(cluster.nodes[n].name for n in nodes)


# --- clusters of their own --------------------------------------------------------------------------------------


def test_one_etcd_member_lost_leaves_the_leader_undisturbed() -> None:
    """etcd of 3 members; the member every node lists first, made raft leader, is killed: the agents move to
    another member, and for more than a lease the leader keeps its role and its key (as the others read it), with
    no gap over 1 s in the writes through HAProxy."""
    started = time.monotonic()
    with Cluster(3, scope="regent-e2e-etcd", timings=TIMINGS, etcd_api=3, etcd_members=3, haproxy=True) as cluster:
        cluster.start()
        leader = cluster.wait_healthy()
        cluster.wait_routed(leader)
        print(f"\n[timing] a 3-node cluster on a 3-member etcd healthy in {time.monotonic() - started:.2f} s")
        etcd, member = cluster.etcd_cluster, cluster.etcd
        assert etcd is not None
        etcd.move_leader(member)
        with Traffic(cluster, "member") as traffic:
            flowing(traffic, leader)
            killed, killed_wall = time.monotonic(), time.time()
            member.kill()
            cluster.wait_for(lambda: raft_leader(etcd) not in (None, member), 5, "a new raft leader")
            elected = time.monotonic() - killed
            time.sleep(TTL + LOOP_WAIT)  # a whole lease renewed through the other members
            ended = time.monotonic()
            assert cluster.primaries() == [leader]
            seen = {cluster_leader(cluster, n) for n in cluster.others(leader)}
        gaps = write_gaps(traffic.client.times, killed, ended)
        longest = max(b - a for a, b in gaps)
        changes = log_times(cluster, leader, r" leader -> (?!leader )")
        print(
            f"[timing] etcd {member.name} (raft leader, every node's first endpoint) killed: a new raft leader in "
            f"{elected:.3f} s; {cluster.nodes[leader].name} led on, longest gap in writes through HAProxy over "
            f"{ended - killed:.1f} s: {longest:.3f} s; {traffic.summary()}"
        )
        assert not [at for at in changes if at >= killed_wall], "the leader changed state"
        assert seen == {cluster.nodes[leader].name}, f"the others' /cluster names {seen} the leader"
        assert longest <= 1.0
        check_traffic(cluster, traffic, [leader], leader)


def test_zookeeper_leader_host_killed_another_node_takes_writes_through_haproxy_and_the_old_one_rejoins() -> None:
    """On ZooKeeper (the lease is the session, of ttl): the leader's machine dies, another node takes the client's
    writes through HAProxy, never overlapping the old leader's, and the old node rejoins as a streaming replica."""
    started = time.monotonic()
    with Cluster(3, scope="regent-e2e-zk", timings=TIMINGS, zookeeper=True, haproxy=True) as cluster:
        cluster.start(90)
        leader = cluster.wait_healthy()
        cluster.wait_routed(leader)
        print(f"\n[timing] a 3-node cluster on ZooKeeper healthy in {time.monotonic() - started:.2f} s")
        with Traffic(cluster, "zk") as traffic:
            flowing(traffic, leader)
            killed = time.monotonic()
            cluster.kill_host(leader)
            first = traffic.wait_ack(killed, cluster.others(leader), FAILOVER_S, [traffic.client])
            new = traffic.node(first)
            restarted = time.monotonic()
            cluster.start_agent(leader)
            assert cluster.wait_healthy(60) == new
            rejoined = time.monotonic() - restarted
            cluster.wait_routed(new)
        (handover,) = check_traffic(cluster, traffic, [leader, new], new)
        print(
            f"[timing] ZooKeeper: {cluster.nodes[leader].name}'s host killed -> {cluster.nodes[new].name} took a "
            f"write through HAProxy {first.at - killed:.3f} s later (handover {handover:.3f} s; bound "
            f"{FAILOVER_S:g} s); the old leader rejoined {rejoined:.3f} s after its agent restarted; "
            f"{traffic.summary()}"
        )
        assert first.at - killed <= FAILOVER_S


# --- the shared synchronous cluster -----------------------------------------------------------------------------


def test_sync_mode_10_leader_kills_lose_no_acknowledged_write_and_each_ex_leader_rejoins(cluster: Cluster) -> None:
    """Ten times: the leader's machine dies (agent, fence, Postgres), its synchronous standby and no other node
    takes over, and the restarted agent rejoins as a streaming replica before the next kill. No acknowledged write
    is lost and no two nodes acknowledge writes in overlapping windows."""
    leader, standby = settled(cluster)
    leaders, failovers, routed, rejoins = [leader], [], [], []
    rewinds = rewound(cluster)
    with Traffic(cluster, "kills") as traffic:
        flowing(traffic, leader)
        for kill in range(1, KILLS + 1):
            killed = time.monotonic()
            cluster.kill_host(leader)
            first = traffic.wait_ack(killed, cluster.others(leader), FAILOVER_S)
            new = traffic.node(first)
            assert new == standby, f"kill {kill}: {cluster.nodes[new].name}, not the synchronous standby, took over"
            through = traffic.wait_ack(killed, [new], 10, [traffic.client])
            restarted = time.monotonic()
            cluster.start_agent(leader)
            primary, standby = settled(cluster)
            assert primary == new, f"kill {kill}: {cluster.nodes[primary].name} leads, not {cluster.nodes[new].name}"
            failovers.append(first.at - killed)
            routed.append(through.at - killed)
            rejoins.append(time.monotonic() - restarted)
            print(
                f"[timing] kill {kill}: {cluster.nodes[leader].name}'s host killed -> {cluster.nodes[new].name} "
                f"took a write {failovers[-1]:.3f} s later, through HAProxy {routed[-1]:.3f} s; "
                f"{cluster.nodes[leader].name} rejoined {rejoins[-1]:.3f} s after its agent restarted "
                f"(synchronous standby then {cluster.nodes[standby].name})"
            )
            leaders.append(new)
            leader = new
    handovers = check_traffic(cluster, traffic, leaders, leader)

    def spread(values: list[float]) -> str:
        return f"{min(values):.3f}/{statistics.median(values):.3f}/{max(values):.3f} s"

    print(
        f"[timing] {KILLS} leader kills ({names(cluster, leaders)}), min/median/max: first write on the new "
        f"leader {spread(failovers)}, through HAProxy {spread(routed)}, handover (old leader's last write to the "
        f"new one's first) {spread(handovers)}, rejoin {spread(rejoins)} ({rewound(cluster) - rewinds} rejoins "
        f"by pg_rewind); {traffic.summary()}, none lost"
    )
    assert max(failovers) <= FAILOVER_S


def test_switchover_to_the_synchronous_standby_loses_nothing(cluster: Cluster) -> None:
    """POST /switchover to the synchronous standby: it takes writes, the old leader's stop before its first, nothing
    acknowledged is lost, and the old leader streams from it."""
    leader, standby = settled(cluster)
    request = {"leader": cluster.nodes[leader].name, "candidate": cluster.nodes[standby].name}
    with Traffic(cluster, "switchover") as traffic:
        flowing(traffic, leader)
        asked = time.monotonic()
        status, answer = cluster.rest(leader, "/switchover", "POST", request)
        answered = time.monotonic() - asked
        assert status == 200, answer
        first = traffic.wait_ack(asked, [standby], 15)
        through = traffic.wait_ack(asked, [standby], 10, [traffic.client])
        assert settled(cluster)[0] == standby
    (handover,) = check_traffic(cluster, traffic, [leader, standby], standby)
    print(
        f"\n[timing] switchover {names(cluster, [leader, standby])}: answered in {answered:.3f} s, first write on "
        f"the new leader {first.at - asked:.3f} s after the request, through HAProxy {through.at - asked:.3f} s; "
        f"handover {handover:.3f} s; {traffic.summary()}, none lost"
    )


def test_whole_dcs_outage_makes_the_leader_read_only_within_ttl_and_loses_nothing(cluster: Cluster) -> None:
    """etcd gone (failsafe off): the leader stops taking writes and is read-only within ttl; once etcd is back a
    leader takes writes again through HAProxy, and every write acknowledged before, during or after is there."""
    leader, _ = settled(cluster)
    name = cluster.nodes[leader].name
    with Traffic(cluster, "outage") as traffic:
        flowing(traffic, leader)
        stopped = time.monotonic()
        cluster.stop_dcs()
        cluster.wait_for(
            lambda: (state := server_state(cluster, leader)) is not None and state[0],
            TTL + 5,
            f"{name} in recovery",
            interval_s=0.05,
        )
        read_only = time.monotonic() - stopped
        back = time.monotonic()
        cluster.start_dcs()
        first = traffic.wait_ack(back, list(range(len(cluster.nodes))), 60)
        primary, _ = settled(cluster)
        through = traffic.wait_ack(back, [primary], 10, [traffic.client])
    last = max(ack.at for ack in traffic.acks() if ack.at < back)
    leaders = [leader] if primary == leader else [leader, primary]
    check_traffic(cluster, traffic, leaders, primary)
    print(
        f"\n[timing] etcd stopped -> {name}'s last write {last - stopped:.3f} s later, read-only after "
        f"{read_only:.3f} s (ttl {TTL:g} s); etcd back -> {cluster.nodes[primary].name} took a write "
        f"{first.at - back:.3f} s later, through HAProxy {through.at - back:.3f} s; {traffic.summary()}, none lost"
    )
    assert last - stopped <= TTL and read_only <= TTL


def test_a_leader_cut_off_from_the_dcs_takes_its_last_write_before_the_new_leader_its_first(cluster: Cluster) -> None:
    """The leader cut from etcd and from its peers' REST APIs, and they from its (the Links are per API, so the
    peers lose each other's too), while clients still reach its Postgres: it takes writes through HAProxy after
    the cut, stops within ttl, and its last acknowledged write comes before the new leader's first; healed, it
    rejoins, and nothing acknowledged is lost."""
    leader, _ = settled(cluster)
    name = cluster.nodes[leader].name
    with Traffic(cluster, "partition") as traffic:
        flowing(traffic, leader)
        cut = time.monotonic()
        cluster.cut(leader, own_api=True)
        try:
            first = traffic.wait_ack(cut, cluster.others(leader), FAILOVER_S)
            new = traffic.node(first)
            traffic.wait_ack(cut, [new], 10, [traffic.client])
        finally:
            cluster.heal(leader, own_api=True)
        settled(cluster)
    reached = traffic.first_ack(cut, [leader], [traffic.client])
    assert reached is not None, "clients' writes through HAProxy reached the cut leader"
    old_last = traffic.last_ack(leader)
    assert old_last is not None
    (handover,) = check_traffic(cluster, traffic, [leader, new], new)
    print(
        f"\n[timing] {name} cut off: a client's write through HAProxy reached it {reached.at - cut:.3f} s after the "
        f"cut, its last write {old_last.at - cut:.3f} s after the cut (ttl {TTL:g} s), {cluster.nodes[new].name}'s "
        f"first {first.at - cut:.3f} s (handover {handover:.3f} s); {traffic.summary()}, none lost"
    )
    assert old_last.at < first.at and old_last.at - cut <= TTL


def test_a_sigstopped_leader_agent_is_fenced_before_another_node_promotes(cluster: Cluster) -> None:
    """The leader's agent frozen (SIGSTOP) past its lease: its watchdog fence kills its Postgres before any other
    node promotes, its last acknowledged write comes before the new leader's first, and nothing is lost."""
    leader, _ = settled(cluster)
    name = cluster.nodes[leader].name
    postmaster = cluster.nodes[leader].postmaster_pid()
    assert postmaster is not None
    with Traffic(cluster, "sigstop") as traffic:
        flowing(traffic, leader)
        paused, paused_wall = time.monotonic(), time.time()
        cluster.pause_agent(leader)
        try:
            first = traffic.wait_ack(paused, cluster.others(leader), FAILOVER_S)
            fenced = not process_alive(postmaster)
        finally:
            cluster.resume_agent(leader)
        new = traffic.node(first)
        settled(cluster)
    (handover,) = check_traffic(cluster, traffic, [leader, new], new)
    old_last = traffic.last_ack(leader)
    assert old_last is not None
    fence = log_times(cluster, leader, rf"SIGKILLed postmaster {postmaster}\b")
    promoted = [at for at in log_times(cluster, new, r"promote: promoted") if at >= paused_wall]
    assert fenced and fence, "the watchdog fence killed the paused leader's postmaster"
    assert promoted, f"{cluster.nodes[new].name} logged its promotion"
    print(
        f"\n[timing] {name}'s agent paused: its last write {old_last.at - paused:.3f} s later, fence fired "
        f"{fence[-1] - paused_wall:.3f} s, {cluster.nodes[new].name} promoted {promoted[0] - paused_wall:.3f} s "
        f"and took a write {first.at - paused:.3f} s after the pause (handover {handover:.3f} s); "
        f"{traffic.summary()}, none lost"
    )
    assert fence[-1] < promoted[0], "fenced before the other node promoted"
