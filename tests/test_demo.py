"""`scripts/demo`, the README's first command, as a user runs it in a terminal: it starts etcd (or ZooKeeper), three
agents and HAProxy on the sample files' fixed ports, prints how to connect, and refreshes the cluster table until
Ctrl-C (SIGINT to the terminal's whole foreground process group). Ctrl-C, or `scripts/demo stop` from another
terminal, stops everything and leaves no process; the data is kept for the next run unless --clean."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers.cluster import REPO, fences_of
from tests.servers.common import port_open, wait_until
from tests.test_seed_flow import FIXED_PORTS, remaining

TABLE_LINE = "scripts/demo: the cluster every 2 s; Ctrl-C stops it"


@pytest.fixture
def demo_dir() -> Iterator[Path]:
    made = Path(tempfile.mkdtemp(prefix="regent-demo-", dir="/tmp"))
    made.rmdir()  # the demo makes it
    yield made
    subprocess.run([REPO / "scripts" / "demo", "stop", "--clean"], env=demo_env(made), capture_output=True)
    shutil.rmtree(made, ignore_errors=True)


def demo_env(demo_dir: Path) -> dict[str, str]:
    return {**os.environ, "REGENT_DEMO_DIR": str(demo_dir)}


class Terminal:
    """`scripts/demo ARGS` in a session of its own, as in a terminal; its output is collected in a file."""

    def __init__(self, demo_dir: Path, *args: str) -> None:
        self.output = demo_dir.with_name(demo_dir.name + f"-{len(args)}-{time.monotonic_ns()}.out")
        with open(self.output, "wb") as out:
            self.process = subprocess.Popen(
                [REPO / "scripts" / "demo", *args], stdout=out, stderr=subprocess.STDOUT, env=demo_env(demo_dir),
                start_new_session=True,
            )  # fmt: skip

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def wait_for_table(self, timeout_s: float) -> float:
        started = time.monotonic()
        wait_until(lambda: TABLE_LINE in self.text() or self.process.poll() is not None, timeout_s, "the table", 0.2)
        assert self.process.poll() is None, self.text()[-3000:]
        return time.monotonic() - started

    def ctrl_c(self, timeout_s: float = 90) -> float:
        started = time.monotonic()
        os.killpg(self.process.pid, signal.SIGINT)  # the terminal sends it to the whole foreground group
        assert self.process.wait(timeout_s) == 0, self.text()[-3000:]
        return time.monotonic() - started

    def close(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.output.unlink(missing_ok=True)


def fences(demo_dir: Path) -> list[int]:
    """The watchdog fence processes of the demo's agents (a fence's command line names nothing of the folder)."""
    agents = [int(line.split(":")[0]) for line in remaining(demo_dir)]
    return [fence for agent in agents for fence in fences_of(agent)]


def leftovers(demo_dir: Path, watched: list[int]) -> list[str]:
    """The demo's processes still alive: anything in its folder, the fences `watched`, and a server on its ports."""
    alive = [f"fence {pid}" for pid in watched if Path(f"/proc/{pid}").exists()]
    ports = [f"port {port}" for port in (*FIXED_PORTS, 2181, 5434, 8010) if port_open(port)]
    return remaining(demo_dir) + alive + ports


def test_demo_runs_until_ctrl_c_then_again_on_its_data_until_stopped_from_another_terminal(demo_dir: Path) -> None:
    busy = [port for port in FIXED_PORTS if port_open(port)]
    assert not busy, f"the demo's ports {busy} are taken on this machine (an old demo? scripts/demo stop)"
    first = Terminal(demo_dir)
    try:
        up_s = first.wait_for_table(150)
        shown = first.text()
        for promise in ("psql --host 127.0.0.1 --port 5000", "http://127.0.0.1:8008/patroni", "admin:admin"):
            assert promise in shown
        table = shown[shown.rindex(TABLE_LINE) :]
        assert table.count("| Leader ") == 1 and table.count("| Replica ") == 2, table
        armed = fences(demo_dir)
        assert armed, "the leader's agent runs a watchdog fence"
        stop_s = first.ctrl_c()
        assert "data kept" in first.text()
    finally:
        first.close()
    assert leftovers(demo_dir, armed) == []
    assert (demo_dir / "data" / "postgresql0" / "PG_VERSION").exists()

    again = Terminal(demo_dir)
    try:
        again_s = again.wait_for_table(90)
        armed = fences(demo_dir)
        stopped = subprocess.run(
            [REPO / "scripts" / "demo", "stop", "--clean"], env=demo_env(demo_dir), capture_output=True, text=True
        )
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert again.process.wait(30) == 0
        assert "stopped from another terminal" in again.text()
    finally:
        again.close()
    assert leftovers(demo_dir, armed) == []
    assert not demo_dir.exists()
    timings = f"table after {up_s:.1f} s, Ctrl-C done in {stop_s:.1f} s, re-run table after {again_s:.1f} s"
    print(f"\n[timing] demo: {timings}")


def test_demo_on_zookeeper(demo_dir: Path) -> None:
    terminal = Terminal(demo_dir, "--zookeeper", "--clean")
    try:
        up_s = terminal.wait_for_table(150)
        text = terminal.text()
        assert "zookeeper on 127.0.0.1:2181" in text
        table = text[text.rindex(TABLE_LINE) :]
        assert table.count("| Leader ") == 1 and table.count("| Replica ") == 2, table
        armed = fences(demo_dir)
        stop_s = terminal.ctrl_c()
    finally:
        terminal.close()
    assert leftovers(demo_dir, armed) == []
    assert not demo_dir.exists()
    print(f"\n[timing] demo --zookeeper: table after {up_s:.1f} s, Ctrl-C done in {stop_s:.1f} s")
