"""CallbackRunner against real scripts: arguments, background runs, logged output, timeouts, failures, superseding."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from adapters.callbacks import CallbackRunner


def script(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


def eventually(condition: Callable[[], bool], within_s: float = 5.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def alive(pid: int) -> bool:
    """A zombie counts as dead: nothing reaps orphans in some containers."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def read_pid(path: Path) -> int:
    assert eventually(lambda: path.exists() and path.read_text().strip() != "")
    return int(path.read_text())


@pytest.fixture
def runners() -> Iterator[list[CallbackRunner]]:
    """Runners made by a test; whatever they still run is killed afterwards."""
    made: list[CallbackRunner] = []
    yield made
    for runner in made:
        runner.close(0)


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="adapters.callbacks")
    return caplog


def arguments_received(tmp_path: Path, runners: list[CallbackRunner], event: str, role: str, scope: str) -> list[str]:
    """Fire `event` at a script that writes down its arguments, one per line; what it wrote."""
    out = tmp_path / "args"
    runner = CallbackRunner({event: script(tmp_path, "cb.sh", f'printf "%s\\n" "$@" > {out}')}, scope)
    runners.append(runner)
    runner.fire(event, role)
    runner.close(5)
    return out.read_text().splitlines()


def test_the_script_gets_event_role_and_scope(tmp_path: Path, runners: list[CallbackRunner]) -> None:
    assert arguments_received(tmp_path, runners, "on_role_change", "master", "batman") == [
        "on_role_change",
        "master",
        "batman",
    ]


def test_arguments_are_never_read_by_a_shell(tmp_path: Path, runners: list[CallbackRunner]) -> None:
    assert arguments_received(tmp_path, runners, "on_start", "$(touch pwned)", "a b; touch x") == [
        "on_start",
        "$(touch pwned)",
        "a b; touch x",
    ]


def test_fire_returns_at_once_while_the_script_runs(tmp_path: Path, runners: list[CallbackRunner]) -> None:
    started, finished = tmp_path / "started", tmp_path / "finished"
    runner = CallbackRunner({"on_start": script(tmp_path, "cb.sh", f"touch {started}; sleep 1; touch {finished}")}, "s")
    runners.append(runner)
    began = time.monotonic()
    runner.fire("on_start", "replica")
    assert time.monotonic() - began < 0.05
    assert eventually(started.exists) and not finished.exists()
    runner.close(5)
    assert finished.exists()


def test_output_is_logged_line_by_line_with_the_event(
    tmp_path: Path, runners: list[CallbackRunner], logs: pytest.LogCaptureFixture
) -> None:
    runner = CallbackRunner({"on_reload": script(tmp_path, "cb.sh", "echo first line; echo second line >&2")}, "s")
    runners.append(runner)
    runner.fire("on_reload", "master")
    runner.close(5)
    messages = [record.getMessage() for record in logs.records]
    assert "callback on_reload: first line" in messages
    assert "callback on_reload: second line" in messages


def test_a_script_past_its_timeout_is_killed_with_its_children(
    tmp_path: Path, runners: list[CallbackRunner], logs: pytest.LogCaptureFixture
) -> None:
    child_pid, finished = tmp_path / "child", tmp_path / "finished"
    body = f"sleep 30 & echo $! > {child_pid}; wait; touch {finished}"
    runner = CallbackRunner({"on_stop": script(tmp_path, "cb.sh", body)}, "s", timeout_s=0.3)
    runners.append(runner)
    runner.fire("on_stop", "master")
    child = read_pid(child_pid)
    assert eventually(lambda: not alive(child), within_s=3)
    runner.close(3)
    assert not finished.exists()
    assert any("timed out" in r.getMessage() and "SIGKILL" in r.getMessage() for r in logs.records)


@pytest.mark.parametrize(
    "make",
    [
        lambda tmp: script(tmp, "fails.sh", "echo about to fail; exit 3"),
        lambda tmp: str(tmp / "missing.sh"),
        lambda tmp: str(tmp),  # a directory
        lambda tmp: _not_executable(tmp),
        lambda tmp: _bad_interpreter(tmp),
    ],
    ids=["exit-3", "missing", "directory", "not-executable", "bad-interpreter"],
)
def test_a_failing_script_is_logged_and_never_raises(
    tmp_path: Path, runners: list[CallbackRunner], logs: pytest.LogCaptureFixture, make: Callable[[Path], str]
) -> None:
    path = make(tmp_path)
    runner = CallbackRunner({"on_start": path}, "s")
    runners.append(runner)
    runner.fire("on_start", "master")
    runner.close(5)
    failures = [r.getMessage() for r in logs.records if r.levelno >= logging.WARNING]
    assert len(failures) == 1 and failures[0].startswith("callback on_start: ") and path in failures[0]


def _not_executable(tmp: Path) -> str:
    path = tmp / "plain.sh"
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o644)
    return str(path)


def _bad_interpreter(tmp: Path) -> str:
    path = tmp / "bad-interpreter.sh"
    path.write_text("#!/nonexistent/interpreter\n")
    path.chmod(0o755)
    return str(path)


def test_a_new_fire_supersedes_the_running_script_of_the_same_event(
    tmp_path: Path, runners: list[CallbackRunner], logs: pytest.LogCaptureFixture
) -> None:
    # The script cleans up for 0.3 s on SIGTERM; the newer call must start only once that is over.
    cd = f"cd {tmp_path}"
    trap = "trap 'sleep 0.3; touch cleaned-$2; exit 0' TERM"
    check = "if [ -e cleaned-replica ]; then echo yes > saw-$2; else echo no > saw-$2; fi"
    body = f"{cd}; {trap}; {check}; echo $$ > pid-$2; sleep 5 & wait; touch finished-$2"
    runner = CallbackRunner({"on_role_change": script(tmp_path, "cb.sh", body)}, "s")
    runners.append(runner)
    runner.fire("on_role_change", "replica")
    first = read_pid(tmp_path / "pid-replica")
    began = time.monotonic()
    runner.fire("on_role_change", "master")
    assert time.monotonic() - began < 0.05
    read_pid(tmp_path / "pid-master")
    assert not alive(first) and (tmp_path / "saw-master").read_text() == "yes\n"  # never overlapping
    assert any("superseded by a newer call" in r.getMessage() for r in logs.records)
    runner.close(0)
    assert not (tmp_path / "finished-replica").exists()


def test_only_the_last_of_rapid_fires_runs_to_the_end(tmp_path: Path, runners: list[CallbackRunner]) -> None:
    body = f"echo $2 >> {tmp_path}/started; sleep 0.3; echo $2 >> {tmp_path}/finished"
    runner = CallbackRunner({"on_role_change": script(tmp_path, "cb.sh", body)}, "s")
    runners.append(runner)
    for role in ("one", "two", "three", "four"):
        runner.fire("on_role_change", role)
    runner.close(5)
    assert (tmp_path / "finished").read_text().split() == ["four"]
    assert (tmp_path / "started").read_text().split()[-1] == "four"


def test_different_events_run_side_by_side(tmp_path: Path, runners: list[CallbackRunner]) -> None:
    cb = script(tmp_path, "cb.sh", f"echo $$ > {tmp_path}/pid-$1; sleep 5")
    runner = CallbackRunner({"on_start": cb, "on_role_change": cb}, "s")
    runners.append(runner)
    runner.fire("on_start", "replica")
    runner.fire("on_role_change", "master")
    pids = read_pid(tmp_path / "pid-on_start"), read_pid(tmp_path / "pid-on_role_change")
    assert all(alive(pid) for pid in pids)


def test_an_event_without_a_script_is_a_no_op(
    tmp_path: Path, runners: list[CallbackRunner], logs: pytest.LogCaptureFixture
) -> None:
    runner = CallbackRunner({"on_start": script(tmp_path, "cb.sh", "exit 0"), "on_stop": ""}, "s")
    runners.append(runner)
    runner.fire("on_reload", "master")
    runner.fire("on_stop", "master")
    runner.close(5)
    assert logs.records == []


def test_close_kills_what_still_runs_and_later_fires_are_ignored(
    tmp_path: Path, runners: list[CallbackRunner], logs: pytest.LogCaptureFixture
) -> None:
    pid_file, late = tmp_path / "pid", tmp_path / "late"
    runner = CallbackRunner({"on_stop": script(tmp_path, "cb.sh", f"echo $$ > {pid_file}; sleep 30")}, "s")
    runners.append(runner)
    runner.fire("on_stop", "master")
    pid = read_pid(pid_file)
    began = time.monotonic()
    runner.close(0.2)
    assert time.monotonic() - began < 2 and not alive(pid)
    runner.scripts["on_start"] = script(tmp_path, "late.sh", f"touch {late}")
    runner.fire("on_start", "master")
    time.sleep(0.2)
    assert not late.exists()
    assert any("still running at shutdown" in r.getMessage() for r in logs.records)


RUN_AS_NOBODY = """
import os, sys
from adapters.callbacks import CallbackRunner
os.setgroups([0, 4])  # a root agent with supplementary groups: the script must keep none of them
runner = CallbackRunner({"on_start": sys.argv[1]}, "s", 5, run_as_user="nobody")
runner.fire("on_start", "master")
runner.close(5)
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_run_as_user_drops_root_and_its_groups() -> None:
    with tempfile.TemporaryDirectory() as name:  # pytest's tmp_path sits in a folder only root may enter
        folder = Path(name)
        folder.chmod(0o777)
        out = folder / "ids"
        cb = script(folder, "cb.sh", f"id -u > {out}; id -G >> {out}")
        subprocess.run(
            [sys.executable, "-c", RUN_AS_NOBODY, cb], check=True, timeout=10, cwd=Path(__file__).parent.parent
        )
        uid, groups = out.read_text().splitlines()
    assert uid != "0" and not {"0", "4"} & set(groups.split())


def test_an_unknown_run_as_user_is_refused_at_construction() -> None:
    assert os.geteuid() == 0, "the tests run as root, as the agent does (run_as_user only applies to root)"
    with pytest.raises(ValueError, match="no such user"):
        CallbackRunner({}, "s", run_as_user="no-such-user-here")
