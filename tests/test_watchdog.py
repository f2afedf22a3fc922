"""The watchdog against real processes: a stand-in postmaster (a sleeping Python whose command line says
`postgres -D <data dir>` and whose working directory is the data directory, as a real postmaster's is) named by a
`postmaster.pid`, the real fence process, and one real Postgres 15 server. No mocks.

A process's death is timed with a pidfd (readable the instant it exits), not by polling, so the printed lateness is
the fence's own: deadline to death of the postmaster.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from adapters.watchdog import Watchdog
from adapters.watchdog_fence import alive

REPO = Path(__file__).resolve().parents[1]
PG_BIN = Path("/usr/lib/postgresql/15/bin")
LATE_LIMIT_S = 0.1  # the fence must kill within this long after the deadline


def started(command: list[str], cwd: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(command, cwd=cwd, stdin=subprocess.DEVNULL, start_new_session=True)


def exit_time(proc: subprocess.Popen[bytes], timeout_s: float) -> float | None:
    """The monotonic time at which `proc` exits (reaped), or None if it still runs after `timeout_s`."""
    pidfd = os.pidfd_open(proc.pid)
    try:
        if not select.select([pidfd], [], [], timeout_s)[0]:
            return None
        at = time.monotonic()
    finally:
        os.close(pidfd)
    proc.wait()
    return at


def gone(pid: int, timeout_s: float) -> bool:
    """True once `pid` has exited (a zombie counts: an orphan waits for init to reap it)."""
    end = time.monotonic() + timeout_s
    while alive(pid):
        if time.monotonic() > end:
            return False
        time.sleep(0.01)
    return True


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture
def postmaster(data_dir: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Starts a process and names it in data_dir/postmaster.pid (PID, then data dir, as Postgres writes it)."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(command: list[str] | None = None, cwd: Path = data_dir) -> subprocess.Popen[bytes]:
        command = command or [sys.executable, "-c", "import time; time.sleep(60)", "postgres", "-D", str(cwd)]
        proc = started(command, cwd)
        procs.append(proc)
        (data_dir / "postmaster.pid").write_text(f"{proc.pid}\n{data_dir}\n")
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


@pytest.fixture
def watchdogs(data_dir: Path) -> Iterator[Callable[..., Watchdog]]:
    made: list[Watchdog] = []

    def make(mode: str = "required", device: Path | None = None) -> Watchdog:
        made.append(Watchdog(mode, data_dir / "postmaster.pid", device))
        return made[-1]

    yield make
    for watchdog in made:
        watchdog.close()


def report(capfd: pytest.CaptureFixture[str], what: str, late_s: float) -> None:
    with capfd.disabled():
        print(f"\n  {what}: killed {late_s * 1000:.1f} ms after the deadline")


def test_an_unfed_watchdog_kills_the_postmaster_at_the_deadline(postmaster, watchdogs, capfd) -> None:
    pg = postmaster()
    watchdog = watchdogs()
    deadline = time.monotonic() + 0.5
    assert watchdog.arm(deadline)
    assert watchdog.armed and watchdog.fence_pid is not None
    died = exit_time(pg, 2.5)
    assert died is not None, "the fence did not fire"
    late_s = died - deadline
    assert 0 <= late_s < LATE_LIMIT_S
    assert pg.returncode == -signal.SIGKILL
    log = capfd.readouterr().err
    assert "the agent missed its lease deadline by" in log and f"SIGKILLed postmaster {pg.pid}" in log
    report(capfd, "stand-in postmaster", late_s)
    # The agent wakes up too late: its ping learns that the fence fired; the next one arms afresh.
    assert not watchdog.ping(time.monotonic() + 0.5)
    assert not watchdog.armed
    assert watchdog.ping(time.monotonic() + 5)
    assert watchdog.armed


def test_pings_keep_the_postmaster_alive_and_disarm_stops_the_fence(postmaster, watchdogs) -> None:
    pg = postmaster()
    watchdog = watchdogs()
    assert watchdog.arm(time.monotonic() + 0.3)
    end = time.monotonic() + 1.0
    while time.monotonic() < end:  # ten loops of an agent that renews its lease each time
        time.sleep(0.1)
        assert watchdog.ping(time.monotonic() + 0.3)
    assert pg.poll() is None
    assert watchdog.disarm()
    assert not watchdog.armed
    assert exit_time(pg, 0.6) is None, "a disarmed fence fired"
    assert watchdog.disarm()  # idempotent


def test_a_ping_with_a_past_deadline_fires_at_once(postmaster, watchdogs) -> None:
    pg = postmaster()
    watchdog = watchdogs()
    assert watchdog.arm(time.monotonic() + 10)
    assert not watchdog.ping(time.monotonic() - 0.01)  # a renewal that came back after its own deadline
    assert exit_time(pg, 0.5) is not None


def test_arm_refuses_a_past_deadline_and_arms_nothing(postmaster, watchdogs) -> None:
    pg = postmaster()
    watchdog = watchdogs()
    assert not watchdog.arm(time.monotonic() - 0.01)
    assert not watchdog.arm(float("nan"))
    assert not watchdog.armed
    assert exit_time(pg, 0.3) is None


AGENT = """
import os, signal, sys, time
from pathlib import Path
from adapters.watchdog import Watchdog
watchdog = Watchdog("required", Path(sys.argv[1]), record=Path(sys.argv[4]) if len(sys.argv) > 4 else None)
deadline = float(sys.argv[2])
assert watchdog.arm(deadline)
print(watchdog.fence_pid, flush=True)
if sys.argv[3] == "stop":
    os.kill(os.getpid(), signal.SIGSTOP)  # frozen: cannot ping, cannot demote
time.sleep(60)
"""


def armed_agent(
    data_dir: Path, deadline: float, fate: str, log_path: Path, record: Path | None = None
) -> tuple[subprocess.Popen[bytes], int]:
    """An agent process that arms its fence until `deadline`, then freezes (`stop`) or sleeps; and the fence's pid."""
    with open(log_path, "wb") as agent_log:
        agent = subprocess.Popen(
            [sys.executable, "-c", AGENT, str(data_dir / "postmaster.pid"), repr(deadline), fate]
            + ([str(record)] if record else []),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=agent_log,
            start_new_session=True,
        )
    assert agent.stdout is not None
    return agent, int(agent.stdout.readline())


@pytest.mark.parametrize("fate", ["stop", "kill"])
def test_the_fence_fires_when_the_agent_is_frozen_or_killed(fate, postmaster, data_dir, tmp_path, capfd) -> None:
    pg = postmaster()
    deadline = time.monotonic() + 0.5
    agent, fence_pid = armed_agent(data_dir, deadline, fate, tmp_path / "agent.log")
    try:
        if fate == "kill":  # the agent's whole process group dies; the fence is not in it
            os.killpg(agent.pid, signal.SIGKILL)
            agent.wait()
        died = exit_time(pg, 2.5)
        assert died is not None, "the fence did not fire"
        late_s = died - deadline
        assert 0 <= late_s < LATE_LIMIT_S
        report(capfd, f"agent {'frozen' if fate == 'stop' else 'killed'}", late_s)
    finally:
        agent.kill()
        agent.wait()
    # Its work done and its agent gone, the fence exits (the orphan is reaped by init).
    assert gone(fence_pid, 3.0), "the fence outlived its agent"
    log = (tmp_path / "agent.log").read_text()
    assert "the agent missed its lease deadline" in log
    assert ("closed its channel while armed" in log) == (fate == "kill")


def test_an_orphaned_fence_never_kills_a_postmaster_started_after_its_agent_died(postmaster, data_dir, tmp_path):
    """A quick re-run: the old agent dies armed, its Postgres is stopped, a new agent starts a new one on the same
    data directory before the old deadline. The orphan guards only the postmaster its agent left."""
    old = postmaster()
    deadline = time.monotonic() + 1.0
    agent, fence_pid = armed_agent(data_dir, deadline, "kill", tmp_path / "agent.log")
    os.killpg(agent.pid, signal.SIGKILL)
    agent.wait()
    time.sleep(0.2)  # the fence hears its channel close and pins the postmaster running now
    old.kill()
    old.wait()
    new = postmaster()  # the newer agent's, in the same pid file
    assert gone(fence_pid, 3.0), "the orphan exits at its deadline"
    assert time.monotonic() >= deadline and exit_time(new, 0.1) is None, "the newer postmaster lives"
    assert "is not the one its agent left" in (tmp_path / "agent.log").read_text()


def test_a_newer_agents_armed_fence_ends_the_one_an_earlier_agent_left(postmaster, data_dir, tmp_path, caplog):
    """A quick restart that resumes leading with the same postmaster: the killed agent's fence, still armed until
    its deadline, is ended when the new agent arms its own, so the server the new agent kept runs past that deadline."""
    pg = postmaster()
    record = tmp_path / "watchdog_fence.pid"
    old_deadline = time.monotonic() + 1.5
    agent, old_fence = armed_agent(data_dir, old_deadline, "kill", tmp_path / "agent.log", record)
    os.killpg(agent.pid, signal.SIGKILL)
    agent.wait()
    assert record.read_text().split()[0] == str(old_fence)
    newer = Watchdog("required", data_dir / "postmaster.pid", record=record)
    try:
        assert newer.arm(time.monotonic() + 10)
        assert gone(old_fence, 1.0), "the earlier agent's fence still runs"
        assert record.read_text().split()[0] == str(newer.fence_pid)
        assert exit_time(pg, old_deadline + 0.5 - time.monotonic()) is None, "killed at the earlier agent's deadline"
        assert f"ended fence process {old_fence}, which an earlier agent left armed here" in caplog.text
    finally:
        newer.close()


@pytest.mark.parametrize("impostor", ["not postgres", "another data dir"])
def test_a_pid_file_naming_another_process_kills_nothing(impostor, postmaster, watchdogs, tmp_path, capfd) -> None:
    if impostor == "not postgres":  # a stale pid file whose pid was reused by an unrelated process
        proc = postmaster(["sleep", "60"])
        why = "is not a postmaster"
    else:  # a postgres, but of another cluster on this host
        other = tmp_path / "other"
        other.mkdir()
        proc = postmaster(cwd=other)
        why = f"not {os.path.realpath(tmp_path / 'data')}"
    watchdog = watchdogs()
    assert watchdog.arm(time.monotonic() + 0.3)
    assert exit_time(proc, 0.6) is None, "the fence killed an unrelated process"
    log = capfd.readouterr().err
    assert "killed nothing" in log and why in log


def test_no_postmaster_is_logged(data_dir, watchdogs, capfd) -> None:
    watchdog = watchdogs()
    assert watchdog.arm(time.monotonic() + 0.1)  # arming needs no running postmaster: it may start after
    time.sleep(0.3)
    assert "killed nothing: no " in capfd.readouterr().err
    assert not watchdog.ping(time.monotonic() + 1)  # the fence did fire, at nothing


def test_mode_off_allows_leadership_and_never_fires(postmaster, watchdogs) -> None:
    pg = postmaster()
    watchdog = watchdogs("off")
    assert watchdog.arm(time.monotonic() + 0.2)
    assert watchdog.ping(time.monotonic() + 0.2)
    assert not watchdog.armed and watchdog.fence_pid is None
    assert exit_time(pg, 0.5) is None
    assert watchdog.disarm()


@pytest.mark.parametrize("device", ["/nonexistent/watchdog", "/dev/null"])
def test_a_required_device_that_does_not_work_fails_arm(device, postmaster, watchdogs, caplog) -> None:
    pg = postmaster()
    required = watchdogs("required", Path(device))
    assert not required.arm(time.monotonic() + 0.3)
    assert not required.armed  # the fence process it armed first was disarmed again
    assert "cannot open it" in caplog.text or "not a watchdog device" in caplog.text
    # automatic: the fence process alone
    automatic = watchdogs("automatic", Path(device))
    assert automatic.arm(time.monotonic() + 5)
    assert automatic.armed and automatic.fence_pid is not None
    assert automatic.disarm()
    assert exit_time(pg, 0.5) is None, "a refused arm left a fence armed"


def test_close_leaves_no_fence_process(postmaster, data_dir) -> None:
    pg = postmaster()
    watchdog = Watchdog("required", data_dir / "postmaster.pid")
    assert watchdog.arm(time.monotonic() + 0.4)
    fence_pid = watchdog.fence_pid
    assert fence_pid is not None
    watchdog.close()  # disarms first
    assert not os.path.exists(f"/proc/{fence_pid}"), "the fence process is left (or a zombie)"
    assert not watchdog.arm(time.monotonic() + 1)
    assert exit_time(pg, 0.6) is None


def test_a_dead_fence_process_is_replaced_at_the_next_ping(postmaster, watchdogs, caplog) -> None:
    postmaster()
    watchdog = watchdogs()
    assert watchdog.arm(time.monotonic() + 5)
    first = watchdog.fence_pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    time.sleep(0.05)
    assert watchdog.ping(time.monotonic() + 5)
    assert watchdog.fence_pid not in (None, first)
    assert "exited with status -9 while armed" in caplog.text


@pytest.fixture
def real_postgres() -> Iterator[tuple[Path, subprocess.Popen[bytes]]]:
    """A real Postgres 15 postmaster (run as `postgres`, a direct child so it can be timed and reaped)."""
    assert os.geteuid() == 0 and (PG_BIN / "postgres").exists(), "the tests run as root with PostgreSQL 15 installed"
    parent = "/dev/shm" if Path("/dev/shm").is_dir() else "/tmp"
    base = Path(tempfile.mkdtemp(prefix="regent-wd-", dir=parent))
    base.chmod(0o755)  # postgres must reach the data dir
    data = base / "data"
    shutil.chown(base, "postgres", "postgres")
    env = {"PATH": "/usr/bin:/bin", "LANG": "C", "HOME": str(base)}
    run_as = {"user": "postgres", "group": "postgres", "env": env}
    initdb = [PG_BIN / "initdb", "-N", "-A", "trust", "-U", "postgres", "-D", data]
    subprocess.run(initdb, check=True, capture_output=True, **run_as)  # type: ignore[call-overload]
    command = [
        PG_BIN / "postgres",
        "-D",
        data,
        "-k",
        base,
        "-c",
        "listen_addresses=",
        "-c",
        "fsync=off",
        "-c",
        "dynamic_shared_memory_type=mmap",
    ]
    with open(base / "log", "wb") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=log, start_new_session=True, **run_as)  # type: ignore[arg-type]
    try:
        end = time.monotonic() + 10
        while "ready" not in _read(data / "postmaster.pid"):
            assert time.monotonic() < end and proc.poll() is None, _read(base / "log")
            time.sleep(0.01)
        yield data, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGQUIT)
        proc.wait()
        shutil.rmtree(base, ignore_errors=True)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def test_a_real_postmaster_and_its_children_are_killed(real_postgres, capfd) -> None:
    data, proc = real_postgres
    children = [int(pid) for pid in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
    assert children  # checkpointer, walwriter, ...: a backend can outlive its postmaster, so they die too
    watchdog = Watchdog("required", data / "postmaster.pid")
    try:
        deadline = time.monotonic() + 0.5
        assert watchdog.arm(deadline)
        died = exit_time(proc, 2.5)
        assert died is not None, "the fence did not fire"
        late_s = died - deadline
        assert 0 <= late_s < LATE_LIMIT_S
        assert proc.returncode == -signal.SIGKILL
        assert all(gone(child, 1.0) for child in children)
        assert f"SIGKILLed postmaster {proc.pid} ({data}) and " in capfd.readouterr().err
        report(capfd, "real postmaster", late_s)
    finally:
        watchdog.close()
