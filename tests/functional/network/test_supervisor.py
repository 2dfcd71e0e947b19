"""The supervisor `bastion serve` becomes: the standard library only, and what it does with its listeners.

Its processes here are small stand-ins (``python -c …``), not listeners:
the real ones are exercised end to end in tests/e2e/test_startup_e2e.py.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bastion.network import supervisor


def test_it_runs_on_the_standard_library_alone() -> None:
    """Run as `bastion serve` runs it (``-I -S``: no site-packages), it imports nothing of Bastion or its libraries."""
    script = (
        "import json, runpy, sys\n"
        f"sys.argv = [{supervisor.__file__!r}]\n"
        "try:\n"
        f"    runpy.run_path({supervisor.__file__!r}, run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    argv = [sys.executable, "-I", "-S", "-c", script]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True)
    loaded = set(json.loads(done.stdout.strip().splitlines()[-1]))
    stdlib = set(sys.stdlib_module_names) | {"__main__", "builtins"}
    assert loaded - stdlib == set()
    assert "usage" in done.stderr


def _run(plan: dict[str, object]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-I", "-S", supervisor.__file__, json.dumps(plan)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _plan(tmp_path: Path, **overrides: object) -> dict[str, object]:
    reports = tmp_path / "reports"
    reports.mkdir(exist_ok=True)
    return {
        "report_dir": str(reports),
        "drain_seconds": 5,
        "log_format": "json",
        "log_level": "info",
        "running": {},
        "start": [],
        "on_connection": {},
    } | overrides


def _catches_sigterm(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status").read_text()
    caught = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
    return bool(caught & (1 << (signal.SIGTERM - 1)))


def test_sigterm_stops_the_supervisor(tmp_path: Path) -> None:
    """With nothing left to supervise it still stops at once on SIGTERM, exit 0, and removes its report directory."""
    process = _run(_plan(tmp_path))
    deadline = time.monotonic() + 30
    while not _catches_sigterm(process.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=10) == 0
    assert not (tmp_path / "reports").exists()


def test_a_listener_that_could_not_start_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """The forked listener's pid is handed over in the plan; its report file becomes the one `error:` line."""
    plan = _plan(tmp_path)
    (Path(str(plan["report_dir"])) / "public").write_text("the port is in use\nmore detail\n")
    child = os.fork()
    if child == 0:
        os._exit(2)
    # The supervisor can reap only its own children: run it in-process for this one.
    result = supervisor.Supervisor({**plan, "running": {"public": child}}).run()
    assert result == supervisor.STARTUP_FAILED


def test_a_listener_that_ends_by_itself_is_logged_and_exit_1(tmp_path: Path, capsys: object) -> None:
    child = os.fork()
    if child == 0:
        os._exit(0)
    result = supervisor.Supervisor({**_plan(tmp_path), "running": {"public": child}}).run()
    assert result == 1
    line = json.loads(capsys.readouterr().out.strip())  # type: ignore[attr-defined]
    assert line["event"] == "listener exited"
    assert line["listener"] == "public"
    assert line["level"] == "error"


def test_a_waiting_listener_is_not_started_without_a_connection(tmp_path: Path) -> None:
    """The admin socket is held, listening, by the supervisor; no process runs for it until a client connects."""
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        fd = os.dup(listening.fileno())
        os.set_inheritable(fd, True)
        process = subprocess.Popen(
            [sys.executable, "-I", "-S", supervisor.__file__, json.dumps(_plan(tmp_path, on_connection={"admin": fd}))],
            pass_fds=(fd,),
        )
        os.close(fd)
        deadline = time.monotonic() + 30
        while not _catches_sigterm(process.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1)  # its loop has had a second to start something, and must not have
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    assert children == []


def test_no_fork_with_a_database_file_open(tmp_path: Path) -> None:
    """`bastion serve` forks the public listener only when no SQLite file is open (else it starts afresh)."""
    import sqlite3
    from contextlib import closing

    from bastion.network.serve import _fork_safe

    if threading.active_count() != 1:
        pytest.skip("another thread runs in this test process")
    assert _fork_safe()
    with closing(sqlite3.connect(tmp_path / "bastion.db")) as database:
        database.execute("CREATE TABLE t (x)")
        assert not _fork_safe()
    assert _fork_safe()
