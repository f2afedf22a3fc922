"""The agent end to end: three `python -m runtime` processes on one real etcd, each with its real PostgreSQL 15.

Timings are short (ttl 10, loop_wait 2, retry_timeout 3, safety_margin 1) and faults are real: SIGKILL of a
leader's machine (agent, fence and every Postgres process), SIGTERM, SIGSTOP past the lease, a postmaster crash,
etcd going away, a standby whose WAL receiver is frozen. The tests share one cluster and each leaves it healthy (one
primary, every other node a streaming replica); if one does not, the next test starts a fresh cluster. Measured
times are printed with a `[timing]` prefix (run with -s).
"""

from __future__ import annotations

import os
import re
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from adapters.postgres.process import process_alive
from fsm.lease import lease_timing_problems
from fsm.observation import ClusterConfig
from tests.servers.cluster import TIMINGS, Cluster

TTL, LOOP_WAIT = TIMINGS["ttl"], TIMINGS["loop_wait"]
REGENT = Path(sys.executable).with_name("regent")
STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


class Holder:
    cluster: Cluster | None = None


@pytest.fixture(scope="module")
def holder() -> Iterator[Holder]:
    made = Holder()
    try:
        yield made
    finally:
        if made.cluster is not None:
            made.cluster.stop()


@pytest.fixture
def cluster(holder: Holder) -> Cluster:
    """The shared cluster, healthy; a fresh one when the previous test left it broken (or there is none yet)."""
    if holder.cluster is not None:
        try:
            holder.cluster.wait_healthy(30)
            return holder.cluster
        except TimeoutError as error:
            print(f"\n[cluster] the previous test left the cluster unhealthy; starting a fresh one:\n{error}")
            holder.cluster.stop()
            holder.cluster = None
    started = time.monotonic()
    holder.cluster = Cluster(3)
    holder.cluster.start()
    print(f"\n[timing] a fresh 3-node cluster healthy in {time.monotonic() - started:.2f} s")
    return holder.cluster


def log_times(cluster: Cluster, n: int, pattern: str) -> list[float]:
    """Wall-clock times (epoch seconds) of node n's log lines that match `pattern`."""
    found = []
    for line in cluster.nodes[n].log_text().splitlines():
        stamp = STAMP.match(line)
        if stamp and re.search(pattern, line):
            found.append(datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp())
    return found


# --- configuration ----------------------------------------------------------------------------------------------


def test_the_test_timings_pass_the_lease_check() -> None:
    config = ClusterConfig(
        ttl_s=TTL,
        loop_wait_s=LOOP_WAIT,
        retry_timeout_s=TIMINGS["retry_timeout"],
        safety_margin_s=TIMINGS["safety_margin"],
    )
    assert lease_timing_problems(config) == []


def test_validate_names_every_broken_key_and_accepts_a_good_file(tmp_path: Path) -> None:
    made = Cluster(1)  # nothing starts: only its config file is used
    try:
        good = yaml.safe_load(made.nodes[0].config_path.read_text())
    finally:
        made.stop()
    good_path = tmp_path / "good.yml"
    good_path.write_text(yaml.safe_dump(good))
    ran = subprocess.run([str(REGENT), "--validate", str(good_path)], capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    assert "valid" in ran.stdout

    broken = yaml.safe_load(yaml.safe_dump(good))
    broken["loop_wait"] = 8  # 8 + 2 * 3 > ttl 10
    broken["ttl_seconds"] = 5  # unknown
    broken["restapi"]["auth"] = "no-colon"
    broken["watchdog"]["mode"] = "sometimes"
    broken["postgresql"]["listen"] = "127.0.0.1"  # no port
    broken["postgresql"]["parameters"]["port"] = 5433  # Regent's own
    bad_path = tmp_path / "bad.yml"
    bad_path.write_text(yaml.safe_dump(broken))
    ran = subprocess.run(
        [sys.executable, "-m", "runtime", "--validate", str(bad_path)], capture_output=True, text=True, timeout=60
    )
    lines = ran.stderr.strip().splitlines()
    print("\n[validate] " + "\n[validate] ".join(lines))
    assert ran.returncode == 2
    assert ran.stdout == ""
    assert all(line.startswith(f"{bad_path}: ") for line in lines), lines
    expected = [
        "loop_wait",
        "ttl_seconds",
        "restapi.auth",
        "watchdog.mode",
        "postgresql.listen",
        "postgresql.parameters.port",
    ]
    for key in expected:
        assert sum(key in line for line in lines) >= 1, f"no line names {key}: {lines}"
    assert len(lines) == len(expected), "one line per problem"

    not_yaml = tmp_path / "not.yml"
    not_yaml.write_text("ttl: [unclosed\n")
    ran = subprocess.run([str(REGENT), "--validate", str(not_yaml)], capture_output=True, text=True, timeout=60)
    assert ran.returncode == 2 and "not valid YAML" in ran.stderr
    ran = subprocess.run([str(REGENT), "--validate", str(tmp_path / "missing.yml")], capture_output=True, text=True)
    assert ran.returncode == 2 and "cannot read" in ran.stderr


# --- a healthy cluster ------------------------------------------------------------------------------------------


def test_bootstrap_elects_one_primary_and_two_streaming_replicas(cluster: Cluster) -> None:
    primary = cluster.wait_healthy()
    roles = cluster.roles()
    assert roles[cluster.nodes[primary].name] == ("primary", "leader"), roles
    for n in cluster.others(primary):
        assert roles[cluster.nodes[n].name] == ("replica", "follower"), roles
        assert not cluster.try_write(n, "on a replica"), "a replica must refuse writes"
    cluster.write(primary, "bootstrap-row")
    cluster.wait_replicated("bootstrap-row", cluster.others(primary))
    status, members = cluster.rest(primary, "/cluster")
    assert status == 200
    by_name = {member["name"]: member for member in members["members"]}
    assert by_name[cluster.nodes[primary].name]["role"] == "leader"
    assert sorted(by_name) == [node.name for node in cluster.nodes]
    for node in cluster.nodes:
        assert (node.data_dir / "PG_VERSION").is_file()


def test_health_checks_primary_on_exactly_one_node_replica_on_the_others(cluster: Cluster) -> None:
    primary = cluster.wait_healthy()
    for node in cluster.nodes:
        is_primary = node.index == primary
        assert cluster.rest(node.index, "/primary")[0] == (200 if is_primary else 503), node.name
        assert cluster.rest(node.index, "/")[0] == (200 if is_primary else 503), node.name
        assert cluster.rest(node.index, "/replica")[0] == (503 if is_primary else 200), node.name
        assert cluster.rest(node.index, "/health")[0] == 200, node.name
        status, decision = cluster.rest(node.index, "/decision")
        assert status == 200 and decision["state"] == ("leader" if is_primary else "follower")
    assert cluster.primaries() == [primary]


def test_unsafe_requests_need_auth_and_malformed_ones_get_400(cluster: Cluster) -> None:
    primary = cluster.wait_healthy()
    leader, candidate = cluster.nodes[primary].name, cluster.nodes[cluster.others(primary)[0]].name
    request = {"leader": leader, "candidate": candidate}
    assert cluster.rest(primary, "/switchover", "POST", request, auth=False)[0] == 401
    assert cluster.rest(primary, "/switchover", "POST", request, auth=("admin", "wrong"))[0] == 401
    assert cluster.rest(primary, "/config", "PATCH", {"loop_wait": 3}, auth=False)[0] == 401
    malformed = [
        ("POST", "/switchover", b"{not json"),
        ("POST", "/switchover", b"[1, 2]"),
        ("POST", "/switchover", {"leader": 5}),
        ("POST", "/switchover", {"leader": leader, "candidate": leader}),
        ("POST", "/switchover", {"leader": leader, "candidat": candidate}),
        ("POST", "/failover", {}),
        ("PATCH", "/config", {"ttl": "soon"}),
        ("GET", "/replica?lag=lots", None),
    ]
    for method, path, body in malformed:
        status, answer = cluster.rest(primary, path, method, body)
        assert status == 400, (method, path, body, status, answer)
        assert isinstance(answer, dict) and answer.get("message"), answer
    assert cluster.primaries() == [primary], "no malformed request moved the leader"


def test_sighup_and_post_reload_reread_the_config_file(cluster: Cluster) -> None:
    primary = cluster.wait_healthy()
    replica = cluster.others(primary)[0]
    node = cluster.nodes[replica]
    original = node.config_path.read_text()
    changed = yaml.safe_load(original)
    changed["tags"] = {"nofailover": True}

    def tagged(value: bool) -> bool:
        members = cluster.rest(primary, "/cluster")[1]["members"]
        published = next(m["tags"]["nofailover"] for m in members if m["name"] == node.name)
        status = cluster.status(replica)
        return status is not None and status["tags"]["nofailover"] is value and published is value

    try:
        node.config_path.write_text(yaml.safe_dump(changed))
        assert node.process is not None
        node.process.send_signal(signal.SIGHUP)
        cluster.wait_for(lambda: tagged(True), 2 * LOOP_WAIT + 2, "the new tags served and published")
    finally:
        node.config_path.write_text(original)
    assert cluster.rest(replica, "/reload", "POST") == (200, {"message": "reloaded"})  # patronictl reload: the same
    cluster.wait_for(lambda: tagged(False), 2 * LOOP_WAIT + 2, "the old tags back")
    assert log_times(cluster, replica, r"SIGHUP: config reloaded from ")
    assert log_times(cluster, replica, r"POST /reload: config reloaded from ")
    assert cluster.primaries() == [primary]


# --- faults the leader survives in place --------------------------------------------------------------------------


def test_a_crashed_postmaster_is_restarted_in_place_at_once(cluster: Cluster) -> None:
    primary = cluster.wait_healthy()
    name = cluster.nodes[primary].name
    times, healthy = [], []
    for round_ in range(3):
        time.sleep(0.7)  # the postmaster watch picks up a new postmaster within 0.5 s
        old_pid = cluster.kill_postgres(primary)  # the postmaster only; its children notice and exit
        killed = time.monotonic()
        _, written = cluster.wait_writable([primary], 3 * LOOP_WAIT, value=f"after crash {round_}")
        times.append(written - killed)
        assert cluster.nodes[primary].postmaster_pid() not in (None, old_pid)
        # What HAProxy sees: GET /primary answers from the agent's last turn, which follows the restart at once.
        cluster.wait_for(lambda: cluster.rest(primary, "/primary")[0] == 200, LOOP_WAIT, "/primary 200", 0.01)
        healthy.append(time.monotonic() - killed)
    print(
        f"\n[timing] postmaster SIGKILL -> write succeeds on {name} again: "
        + ", ".join(f"{t:.3f}" for t in times)
        + f" s (median {statistics.median(times):.3f} s); "
        + "GET /primary 200 again: "
        + ", ".join(f"{t:.3f}" for t in healthy)
        + " s"
    )
    assert max(times) < LOOP_WAIT, "the postmaster watch wakes the loop: no waiting for the next turn"
    assert max(healthy) < LOOP_WAIT, "the API does not wait for the next loop to report the primary"
    assert cluster.primaries() == [primary], "the leader restarted its Postgres in place, no failover"
    assert len(log_times(cluster, primary, r"\[lead_restart\]")) >= 3
    cluster.wait_healthy()


def test_switchover_through_the_rest_api(cluster: Cluster) -> None:
    primary = cluster.wait_healthy()
    target = cluster.others(primary)[-1]
    request = {"leader": cluster.nodes[primary].name, "candidate": cluster.nodes[target].name}
    status, answer = cluster.rest(primary, "/switchover", "POST", request, auth=False)
    assert status == 401, answer
    started = time.monotonic()
    status, answer = cluster.rest(primary, "/switchover", "POST", request)
    answered = time.monotonic() - started
    assert status == 200, answer
    _, written = cluster.wait_writable([target], 10, value="after switchover")
    print(
        f"\n[timing] switchover {request['leader']} -> {request['candidate']}: REST answered in {answered:.3f} s, "
        f"write on the new primary {written - started:.3f} s after the request"
    )
    assert cluster.wait_healthy() == target
    cluster.wait_replicated("after switchover", cluster.others(target))
    assert cluster.roles()[cluster.nodes[primary].name] == ("replica", "follower")


def test_sigterm_on_the_leader_hands_over_within_5_s(cluster: Cluster) -> None:
    primary = cluster.wait_healthy()
    node = cluster.nodes[primary]
    assert node.process is not None
    started = time.monotonic()
    node.process.terminate()
    new, written = cluster.wait_writable(cluster.others(primary), 10, value="after sigterm")
    handover = written - started
    print(f"\n[timing] SIGTERM on leader {node.name} -> write succeeds on {cluster.nodes[new].name}: {handover:.3f} s")
    assert handover < 5
    assert node.process.wait(30) == 0, "a clean shutdown exits 0"
    cluster.stop_agent(primary)  # reaps it
    assert node.postmaster_pid() is None, "the stopped agent's Postgres is stopped too"
    assert log_times(cluster, primary, r"\[shutdown_leader\]")
    cluster.start_agent(primary)
    assert cluster.wait_healthy() == new
    cluster.wait_replicated("after sigterm", [primary])


# --- failover ---------------------------------------------------------------------------------------------------


def test_leader_host_killed_fails_over_and_the_old_node_rejoins_rewound(cluster: Cluster) -> None:
    primary = cluster.wait_healthy()
    survivors = cluster.others(primary)
    cluster.write(primary, "before the crash")
    cluster.wait_replicated("before the crash", survivors)
    # Freeze the WAL senders, then commit a row that no standby receives: the old primary's history diverges.
    senders = [row[0] for row in cluster.sql(primary, "SELECT pid FROM pg_stat_replication")]
    assert len(senders) == 2
    for pid in senders:
        os.kill(pid, signal.SIGSTOP)
    cluster.write(primary, "only on the old primary")
    started = time.monotonic()
    cluster.kill_host(primary)
    new, written = cluster.wait_writable(survivors, TTL + LOOP_WAIT + 10, value="after failover")
    failover = written - started
    print(
        f"\n[timing] leader host {cluster.nodes[primary].name} killed -> write succeeds on "
        f"{cluster.nodes[new].name}: {failover:.3f} s (bound: ttl + loop_wait + 5 = {TTL + LOOP_WAIT + 5:g} s)"
    )
    assert failover <= TTL + LOOP_WAIT + 5
    assert not cluster.has_value(new, "only on the old primary")
    cluster.wait_for(lambda: cluster.primaries() == [new], 1, f"GET /primary 200 on {cluster.nodes[new].name} only")

    restarted = time.monotonic()
    cluster.start_agent(primary)
    assert cluster.wait_healthy(60) == new
    print(
        f"[timing] the old leader rejoined as a streaming replica {time.monotonic() - restarted:.3f} s after its "
        "agent restarted"
    )
    cluster.write(new, "after the rejoin")
    cluster.wait_replicated("after the rejoin", [primary])
    assert cluster.has_value(primary, "before the crash")
    assert not cluster.has_value(primary, "only on the old primary"), "pg_rewind removed the diverged commit"
    assert log_times(cluster, primary, r"rewind: rewound from"), "the old primary was rewound"


def test_a_replica_lagging_beyond_maximum_lag_on_failover_is_not_promoted(cluster: Cluster) -> None:
    primary = cluster.wait_healthy()
    lagging, fit = cluster.others(primary)
    limit = 256 * 1024
    status, answer = cluster.rest(primary, "/config", "PATCH", {"maximum_lag_on_failover": limit})
    assert status == 200, answer
    receiver = cluster.walreceiver_pid(lagging)
    assert receiver is not None
    os.kill(receiver, signal.SIGSTOP)  # its Postgres runs on, but receives nothing more
    try:
        cluster.sql(primary, "CREATE TABLE IF NOT EXISTS filler (v text)")
        cluster.sql(primary, "INSERT INTO filler SELECT repeat('x', 1000) FROM generate_series(1, 4000)")
        cluster.write(primary, "after the filler")
        cluster.wait_replicated("after the filler", [fit])
        lagging_name = cluster.nodes[lagging].name

        def published_lag() -> int:
            members = cluster.rest(fit, "/cluster")[1]["members"]
            lag = next(member["lag"] for member in members if member["name"] == lagging_name)
            return lag if isinstance(lag, int) and lag > 2 * limit else 0

        lag = cluster.wait_for(published_lag, 3 * LOOP_WAIT, "the leader and the lagging replica publish the lag")
        started, started_wall = time.monotonic(), time.time()
        cluster.kill_host(primary)
        new, written = cluster.wait_writable([fit], TTL + LOOP_WAIT + 10)
        print(
            f"\n[timing] {lagging_name} lagging {lag} B > {limit} B: leader killed -> "
            f"{cluster.nodes[new].name} writable in {written - started:.3f} s"
        )
        time.sleep(LOOP_WAIT)  # the lagging node has had a full turn to (wrongly) race
        assert cluster.primaries() == [fit]
        refused = [line for line in cluster.nodes[lagging].log_text().splitlines() if "follow_not_eligible" in line]
        assert refused and "maximum_lag_on_failover" in refused[-1], refused[-1:]
        led = [at for at in log_times(cluster, lagging, r"-> (candidate|leader) ") if at >= started_wall]
        assert not led, "the lagging replica never raced for the key"
    finally:
        os.kill(receiver, signal.SIGCONT)
    cluster.wait_replicated("after the filler", [lagging], timeout_s=30)
    status, answer = cluster.rest(fit, "/config", "PATCH", {"maximum_lag_on_failover": None})
    assert status == 200, answer
    cluster.start_agent(primary)
    assert cluster.wait_healthy(60) == fit


def test_watchdog_fences_a_paused_leader_before_another_node_promotes(cluster: Cluster) -> None:
    primary = cluster.wait_healthy()
    name = cluster.nodes[primary].name
    postmaster = cluster.nodes[primary].postmaster_pid()
    assert postmaster is not None
    with cluster.writer(primary) as old_writes:
        time.sleep(0.3)
        paused_at, paused_wall = time.monotonic(), time.time()
        cluster.pause_agent(primary)
        try:
            new, written = cluster.wait_writable(cluster.others(primary), TTL + LOOP_WAIT + 10)
            fenced = not process_alive(postmaster)
        finally:
            time.sleep(0.2)
    last_old = max(old_writes)
    new_name = cluster.nodes[new].name
    fence_lines = log_times(cluster, primary, rf"SIGKILLed postmaster {postmaster}\b")
    promotions = [at for at in log_times(cluster, new, r"promote: promoted") if at >= paused_wall]
    print(
        f"\n[timing] {name} paused: last write on it {last_old - paused_at:.3f} s later, fence fired "
        f"{fence_lines[-1] - paused_wall:.3f} s, {new_name} promoted {promotions[0] - paused_wall:.3f} s and "
        f"writable {written - paused_at:.3f} s after the pause"
    )
    assert fenced, "the watchdog killed the paused leader's postmaster"
    assert fence_lines, "the fence logged what it killed"
    assert last_old < written, "the old primary took its last write before the new one took its first"
    assert fence_lines[-1] < promotions[0], "fenced before the other node promoted"
    cluster.resume_agent(primary)
    assert cluster.wait_healthy(60) == new
    assert log_times(cluster, primary, r"\[lead_lease_expired\]")


def test_etcd_outage_makes_the_leader_read_only_then_the_cluster_leads_again(cluster: Cluster) -> None:
    primary = cluster.wait_healthy()
    name = cluster.nodes[primary].name
    cluster.write(primary, "before the outage")
    cluster.wait_replicated("before the outage", cluster.others(primary))
    with cluster.writer(primary) as writes:
        time.sleep(0.3)
        stopped = time.monotonic()
        cluster.stop_etcd()
        cluster.wait_for(lambda: not cluster.writable(primary), TTL + 5, f"{name} read-only", interval_s=0.05)
        read_only = time.monotonic() - stopped
    print(
        f"\n[timing] etcd stopped -> leader {name} read-only after {read_only:.3f} s (last write "
        f"{max(writes) - stopped:.3f} s after the stop; bound ttl = {TTL:g} s)"
    )
    assert read_only <= TTL
    assert max(writes) - stopped <= TTL
    for n in range(len(cluster.nodes)):  # the leader restarts as a standby of nobody: reads resume in a moment
        cluster.wait_for(lambda n=n: cluster.has_value(n, "before the outage"), 2, f"reads on {cluster.nodes[n].name}")
    assert cluster.rest(primary, "/primary")[0] == 503
    restarted = time.monotonic()
    cluster.start_etcd()
    leader = cluster.wait_healthy(60)
    _, written = cluster.wait_writable([leader], 10, value="after the outage")
    print(
        f"[timing] etcd back -> {cluster.nodes[leader].name} writable {written - restarted:.3f} s later "
        f"({'the same' if leader == primary else 'another'} node)"
    )
    cluster.wait_replicated("after the outage", cluster.others(leader))
