"""The seed's getting-started flow, as the README gives it, on real etcd, Postgres and HAProxy: the five commands run
as written (`regent` for `./patroni.py`) in a folder holding the checkout's postgres0.yml, postgres1.yml and
haproxy.cfg, on the files' own fixed ports. etcd runs as root and makes `data/` with mode 0700, as on a user's
machine. The cluster then takes a write through HAProxy's primary port and serves it on the replicas' port; the
agents stop first (the leader hands its key back), then HAProxy and etcd, and nothing of the cluster is left running.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.servers.cluster import REPO
from tests.servers.common import Child, port_open, wait_until

SEED_COMMANDS = (
    "etcd --data-dir=data/etcd",
    "regent postgres0.yml",
    "regent postgres1.yml",
    "haproxy -f haproxy.cfg",
    "psql --host 127.0.0.1 --port 5000 postgres",
)
SAMPLES = ("postgres0.yml", "postgres1.yml", "postgres2.yml", "haproxy.cfg")
FIXED_PORTS = (2379, 2380, 5432, 5433, 8008, 8009, 5000, 5001, 7000)
SUPERUSER_PASSWORD = "zalando"  # postgres0.yml's


def test_the_readme_gives_the_seed_commands_as_this_test_runs_them() -> None:
    readme = (REPO / "README.md").read_text()
    for command in SEED_COMMANDS:
        assert f"\n{command}" in readme, command


def test_the_readmes_minimal_file_is_valid(tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text()
    minimal = readme.split("A minimal file:\n\n```yaml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "minimal.yml").write_text(minimal)
    checked = subprocess.run(
        [sys.executable, "-m", "runtime", "--validate", str(tmp_path / "minimal.yml")], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stderr


def test_the_three_sample_members_differ_only_in_name_ports_and_data_directory() -> None:
    files = [yaml.safe_load((REPO / name).read_text()) for name in SAMPLES[:3]]
    for n, member in enumerate(files):
        assert member["name"] == f"postgresql{n}"
        assert member["restapi"]["listen"] == member["restapi"]["connect_address"] == f"127.0.0.1:{8008 + n}"
        assert member["postgresql"]["listen"] == f"127.0.0.1:{5432 + n}"
        assert member["postgresql"]["data_dir"] == f"data/postgresql{n}"
    renamed = [
        yaml.safe_dump(member)
        .replace(f"postgresql{n}", "NAME")
        .replace(f"{8008 + n}", "API")
        .replace(f"{5432 + n}", "PG")
        for n, member in enumerate(files)
    ]
    assert renamed[0] == renamed[1] == renamed[2]
    for name in SAMPLES[:3]:
        checked = subprocess.run(
            [sys.executable, "-m", "runtime", "--validate", name], cwd=REPO, capture_output=True, text=True
        )
        assert checked.returncode == 0, checked.stderr


def test_the_zookeeper_variants_differ_only_in_the_dcs_section() -> None:
    for name in SAMPLES[:3]:
        on_etcd = yaml.safe_load((REPO / name).read_text())
        on_zookeeper = yaml.safe_load((REPO / "zookeeper" / name).read_text())
        assert on_zookeeper.pop("zookeeper") == {"hosts": ["127.0.0.1:2181"]}
        assert "etcd3" in on_etcd and {**on_etcd, "etcd3": None} == {**on_zookeeper, "etcd3": None}


def test_the_systemd_unit_runs_the_agent_as_postgres_and_passes_systemds_check(tmp_path: Path) -> None:
    unit = (REPO / "regent.service").read_text()
    assert "\nUser=postgres\n" in unit and "\nKillMode=process\n" in unit
    here = tmp_path / "regent.service"  # the unit as installed from this checkout
    here.write_text(unit.replace("/opt/regent/.venv/bin/regent", str(Path(sys.executable).parent / "regent")))
    checked = subprocess.run(["systemd-analyze", "verify", str(here)], capture_output=True, text=True)
    assert checked.returncode == 0 and not checked.stderr.strip(), checked.stderr


@pytest.fixture
def folder() -> Iterator[Path]:
    made = Path(tempfile.mkdtemp(prefix="regent-seed-", dir="/dev/shm" if Path("/dev/shm").is_dir() else "/tmp"))
    made.chmod(0o755)
    for name in SAMPLES:
        shutil.copy(REPO / name, made / name)
    yield made
    shutil.rmtree(made, ignore_errors=True)


def psql(folder: Path, command: str, statements: str) -> str:
    """A psql command of the seed's, run by the `postgres` OS user (psql asks it for the password); its output."""
    ran = subprocess.run(
        ["runuser", "-u", "postgres", "--", *shlex.split(command)],
        input=statements,
        env={"PATH": os.environ["PATH"], "PGPASSWORD": SUPERUSER_PASSWORD, "PGCONNECT_TIMEOUT": "2"},
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=10,
    )
    return ran.stdout


def remaining(folder: Path) -> list[str]:
    """Processes whose command line names the folder or runs from it (agents, Postgres, fences, etcd)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if str(folder) in cmdline or cwd.startswith(str(folder)):
            found.append(f"{entry.name}: {cmdline.strip()}")
    return found


def test_the_seeds_five_commands_give_a_working_cluster(folder: Path) -> None:
    busy = [port for port in FIXED_PORTS if port_open(port)]
    assert not busy, f"the sample files' ports {busy} are taken on this machine (an old demo? scripts/demo stop)"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    started = time.monotonic()
    children: dict[str, Child] = {}
    try:
        for command in SEED_COMMANDS[:4]:  # each in a terminal of its own, in this order
            log = folder / f"{re.sub(r'[^a-z0-9]+', '-', command)}.log"
            children[command] = Child(shlex.split(command), log, cwd=folder, env=env, start_new_session=True)
            if command.startswith("etcd"):
                wait_until(lambda: port_open(2379), 15, "etcd")
                assert (folder / "data").stat().st_mode & 0o777 == 0o700, "etcd makes data/ closed, as for a user"
        written = "CREATE TABLE seed (v text); INSERT INTO seed VALUES ('through haproxy'); SELECT 'wr' || 'itten';"
        wait_until(lambda: "written" in psql(folder, SEED_COMMANDS[4], written), 60, "a write through port 5000", 0.5)
        writable_s = time.monotonic() - started
        on_replicas = SEED_COMMANDS[4].replace("5000", "5001")
        wait_until(lambda: "through haproxy" in psql(folder, on_replicas, "SELECT v FROM seed;"), 30, "port 5001", 0.5)
        print(f"\n[timing] seed flow: a write through HAProxy {writable_s:.1f} s after the first command")
    finally:
        agents = [child for command, child in children.items() if command.startswith("regent")]
        for child in agents:  # the agents first: the leader hands over, Postgres stops
            child.process.send_signal(signal.SIGTERM)
        codes = [child.process.wait(30) for child in agents]
        logs = {command: child.log_tail(8) for command, child in children.items()}
        for child in children.values():
            child.kill()
    assert codes == [0, 0], logs
    assert remaining(folder) == []
