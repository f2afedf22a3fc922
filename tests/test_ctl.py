"""regentctl against a real two-node cluster (etcd, PostgreSQL 15, two agents): the commands that read the DCS
directly (list, topology, history, show-config, version), in each format, while agents run and after they died;
and its errors, one line and a non-zero exit, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from model import diagram
from tests.servers.cluster import HOST, REPO, Cluster


def ctl(*args: str, editor: str | None = None, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EDITOR": editor} if editor else None
    return subprocess.run(
        [sys.executable, "-m", "runtime.ctl", *args],
        cwd=REPO, capture_output=True, text=True, timeout=60, env=env, input=stdin,
    )  # fmt: skip


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with Cluster(size=2) as made:
        made.start(timeout_s=90.0)
        yield made


def test_list_shows_the_members_as_patronictl_does(cluster: Cluster) -> None:
    primary = cluster.wait_healthy()
    replica = 1 - primary
    config = str(cluster.nodes[0].config_path)
    cluster.wait_for(
        lambda: "streaming" in ctl("-c", config, "list").stdout, 30.0, "the replica's member key saying streaming"
    )
    shown = ctl("-c", config, "list")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].startswith(f"+ Cluster: {cluster.scope} (") and lines[1].split() == [
        "|", "Member", "|", "Host", "|", "Role", "|", "State", "|", "TL", "|", "Lag", "in", "MB", "|",
    ]  # fmt: skip
    leader, standby = (cluster.nodes[n] for n in (primary, replica))
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[3:-1]]
    assert cells == [
        [leader.name, f"{HOST}:{leader.pg_port}", "Leader", "running", "1", ""],
        [standby.name, f"{HOST}:{standby.pg_port}", "Replica", "streaming", "1", "0"],
    ]

    rows = json.loads(ctl("-c", config, "list", "--format", "json").stdout)
    assert [(row["Member"], row["Role"]) for row in rows] == [(leader.name, "Leader"), (standby.name, "Replica")]
    assert rows[1]["Lag in MB"] == 0 and rows[0]["Lag in MB"] is None
    assert yaml.safe_load(ctl("-c", config, "list", "-f", "yaml").stdout) == rows
    tsv = ctl("-c", config, "list", "-f", "tsv").stdout.splitlines()
    assert tsv[0].split("\t") == ["Member", "Host", "Role", "State", "TL", "Lag in MB"] and len(tsv) == 3

    # without a config: the DCS URL and the scope
    url = f"etcd://{HOST}:{cluster.etcd.port}"
    bare = ctl("--dcs-url", url, "--scope", cluster.scope, "list", "-f", "json")
    assert json.loads(bare.stdout) == rows
    tree = ctl("-c", config, "topology", "-f", "json").stdout
    assert [row["Member"] for row in json.loads(tree)] == [leader.name, f"+ {standby.name}"]  # under its upstream


def test_show_config_history_and_version(cluster: Cluster) -> None:
    config = str(cluster.nodes[0].config_path)
    shown = yaml.safe_load(ctl("-c", config, "show-config").stdout)
    assert shown["ttl"] == cluster.timings["ttl"] and shown["loop_wait"] == cluster.timings["loop_wait"]
    history = ctl("-c", config, "history", "-f", "json")
    assert history.returncode == 0 and json.loads(history.stdout) == []  # no failover yet (the test below makes one)
    version = ctl("version")
    assert version.returncode == 0 and version.stdout.startswith("regentctl version ")
    drawn = ctl("diagram")  # needs no cluster: the table the agents run
    assert drawn.returncode == 0 and drawn.stdout.strip() == diagram.mermaid()
    svg = ctl("diagram", "--format", "svg")
    assert svg.returncode == 0 and svg.stdout.strip() == diagram.render_svg().strip()


def test_the_acting_commands_go_through_the_rest_api(cluster: Cluster) -> None:
    config = str(cluster.nodes[0].config_path)
    primary = cluster.wait_healthy()
    replica = 1 - primary
    leader, standby = cluster.nodes[primary].name, cluster.nodes[replica].name

    edited = ctl("-c", config, "edit-config", "-p", "work_mem=9MB", "--force")
    assert edited.returncode == 0, edited.stderr
    assert "+    work_mem: 9MB" in edited.stdout and edited.stdout.strip().endswith("configuration changed")
    for n in (primary, replica):  # reaches every member
        cluster.wait_for(lambda n=n: cluster.sql(n, "SHOW work_mem") == [("9MB",)], 30.0, "work_mem 9MB")

    paused = ctl("-c", config, "pause", "--wait")
    assert paused.returncode == 0, paused.stderr
    assert paused.stdout == f"{leader}: cluster management is paused\nevery member paused\n"
    assert "Maintenance mode: on" in ctl("-c", config, "list").stdout
    resumed = ctl("-c", config, "resume", "--wait")
    assert resumed.returncode == 0 and "every member resumed" in resumed.stdout, resumed.stderr

    started = cluster.sql(replica, "SELECT pg_postmaster_start_time()")
    soon = (datetime.now(UTC) + timedelta(seconds=3)).isoformat()
    due = ctl("-c", config, "restart", standby, "--scheduled", soon, "--force")
    assert due.returncode == 0 and "Restart scheduled" in due.stdout, due.stderr
    cluster.wait_for(
        lambda: cluster.sql(replica, "SELECT pg_postmaster_start_time()") not in ([], started), 30.0,
        "the scheduled restart carried out",
    )  # fmt: skip
    cluster.wait_for(lambda: cluster.healthy() is not None, 30.0, "the replica streaming again")
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    scheduled = ctl("-c", config, "restart", standby, "--scheduled", later, "--force")
    assert scheduled.returncode == 0, scheduled.stderr
    assert "scheduled_restart" in (cluster.status(replica) or {})
    flushed = ctl("-c", config, "flush", "restart", standby, "--force")
    assert flushed.returncode == 0 and "scheduled_restart" not in (cluster.status(replica) or {}), flushed.stderr
    restarted = ctl("-c", config, "restart", standby, "--force")
    assert restarted.returncode == 0 and "restarted successfully" in restarted.stdout, restarted.stderr
    assert ctl("-c", config, "reload", standby).returncode == 0
    assert ctl("-c", config, "dsn").stdout.strip() == f"host={HOST} port={cluster.nodes[primary].pg_port}"

    nothing = ctl("-c", config, "restart", standby, "--role", "primary", "--force")
    assert nothing.returncode == 1 and "matches --role/--pending: nothing to restart" in nothing.stderr
    assert "nothing to restart" in ctl("-c", config, "restart", "--pending", "--force").stderr  # none pending

    scheduled = ctl("-c", config, "switchover", "--candidate", standby, "--scheduled", later, "--force")
    assert scheduled.returncode == 0 and "Switchover scheduled" in scheduled.stdout, scheduled.stderr
    assert cluster.rest(primary, "/cluster", auth=False)[1]["scheduled_switchover"]["to"] == standby
    flushed = ctl("-c", config, "flush", "switchover", "--force")
    assert flushed.returncode == 0, flushed.stderr
    assert "scheduled_switchover" not in cluster.rest(primary, "/cluster", auth=False)[1]
    unconfirmed = ctl("-c", config, "switchover", "--candidate", standby)  # no terminal to confirm on
    assert unconfirmed.returncode == 2 and "--force" in unconfirmed.stderr
    unknown = ctl("-c", config, "restart", "nosuch", "--force")
    assert unknown.returncode == 1 and "no member 'nosuch' in the cluster" in unknown.stderr
    cluster.wait_for(lambda: cluster.healthy() is not None, 30.0, "the replica streaming again")
    switched = ctl("-c", config, "switchover", "--candidate", standby, "--force")
    assert switched.returncode == 0 and f"switched over to {standby}" in switched.stdout, switched.stderr
    cluster.wait_for(lambda: cluster.primary() == replica, 30.0, f"{standby} primary")
    cluster.wait_for(lambda: json.loads(ctl("-c", config, "history", "-f", "json").stdout), 30.0, "a history line")
    (line,) = json.loads(ctl("-c", config, "history", "-f", "json").stdout)
    assert (line["TL"], line["New Leader"]) == (1, standby) and line["Timestamp"]
    assert leader != standby


def test_edit_config_in_an_editor_from_a_file_and_refused(cluster: Cluster, tmp_path: Path) -> None:
    config = str(cluster.nodes[0].config_path)
    primary = cluster.wait_healthy()
    lag = "s/^maximum_lag_on_failover: .*/maximum_lag_on_failover: 2097152/"
    edited = ctl("-c", config, "edit-config", "--force", editor=f"sed -i -e '{lag}'")
    assert edited.returncode == 0, edited.stderr
    assert "+maximum_lag_on_failover: 2097152" in edited.stdout and "configuration changed" in edited.stdout
    assert yaml.safe_load(ctl("-c", config, "show-config").stdout)["maximum_lag_on_failover"] == 2097152
    unchanged = ctl("-c", config, "edit-config", "--force", editor="true")
    assert unchanged.returncode == 0 and unchanged.stdout.strip() == "Not changed"
    assert ctl("-c", config, "edit-config", "--force", editor="false").returncode == 1  # the editor failed

    applied = ctl(
        "-c", config, "edit-config", "--apply", "-", "--force", stdin="postgresql: {parameters: {work_mem: 5MB}}"
    )
    assert applied.returncode == 0, applied.stderr
    cluster.wait_for(lambda: cluster.sql(primary, "SHOW work_mem") == [("5MB",)], 30.0, "work_mem 5MB")
    whole = yaml.safe_load(ctl("-c", config, "show-config").stdout)
    (tmp_path / "whole.yml").write_text(yaml.safe_dump({**whole, "maximum_lag_on_failover": 1048576}))
    replaced = ctl("-c", config, "edit-config", "--replace", str(tmp_path / "whole.yml"), "--force")
    assert replaced.returncode == 0 and "-maximum_lag_on_failover: 2097152" in replaced.stdout, replaced.stderr

    for args, line in (
        (("--replace", str(tmp_path / "whole.yml"), "-p", "a=1"), "no --apply, --set or -p with it"),
        (("--apply", str(tmp_path / "absent.yml")), "absent.yml: cannot read: No such file or directory"),
        (("--apply", "-"), "- is not a YAML mapping"),
        (("-s", "ttl=5"), "unsafe timings"),  # the agent refuses: the lease would not outlast a loop
    ):
        refused = ctl("-c", config, "edit-config", *args, "--force", stdin="[1, 2]")
        assert refused.returncode != 0 and line in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr and len(refused.stderr.strip().splitlines()) == 1


def test_explain_says_why_each_member_is_where_it_is(cluster: Cluster) -> None:
    config = str(cluster.nodes[0].config_path)
    primary = cluster.wait_healthy()
    leader, standby = cluster.nodes[primary].name, cluster.nodes[1 - primary].name
    shown = ctl("-c", config, "explain", "--last", "2")
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert f"{leader}: leader, last rule [lead_steady]" in text and f"{standby}: follower, last rule [" in text
    assert "may be promoted: yes (" in text  # the replica: its lag within the limit, its tags allowing it
    assert text.count("  may be promoted:") == 2 and text.count("  first in line:") == 2
    alone = ctl("-c", config, "explain", standby)
    assert alone.returncode == 0 and alone.stdout.startswith(f"{standby}: follower")
    assert "follow_steady" in alone.stdout


@pytest.mark.parametrize(
    ("args", "status", "line"),
    [
        (("list",), 2, "give -c CONFIG.yml (an agent's config), or --dcs-url and --scope"),
        (("--dcs-url", "etcd://127.0.0.1:9", "--scope", "x", "list"), 1, "did not answer within 5 s"),
        (("--dcs-url", "etcd://127.0.0.1:9", "list"), 2, "--dcs-url needs --scope"),
        (("--dcs-url", "consul://127.0.0.1:8500", "--scope", "x", "list"), 2, "is not etcd://, etcd3://"),
        (("-c", "/nonexistent.yml", "list"), 2, "cannot read: No such file or directory"),
    ],
)
def test_errors_are_one_line_and_a_non_zero_exit(args: tuple[str, ...], status: int, line: str) -> None:
    done = ctl(*args)
    assert done.returncode == status, done.stderr
    assert line in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_an_unknown_scope_and_agents_that_are_down(cluster: Cluster) -> None:
    url = f"etcd://{HOST}:{cluster.etcd.port}"
    unknown = ctl("--dcs-url", url, "--scope", "no-such-cluster", "list")
    assert unknown.returncode == 1 and "no cluster 'no-such-cluster'" in unknown.stderr
    for n in range(len(cluster.nodes)):
        cluster.kill_agent(n)  # Postgres and the keys stay (until their TTL): list reads the DCS alone
    rows = json.loads(ctl("--dcs-url", url, "--scope", cluster.scope, "list", "-f", "json").stdout)
    assert sorted(row["Member"] for row in rows) == sorted(node.name for node in cluster.nodes)
