"""`bastion serve` failing to start, and its listeners when it dies: real processes.

Each start-up failure is one line naming the cause and exit code 2, not the
servers' tracebacks (Python's and granian's Rust backtrace, once per worker).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from serving import Served, clean_env, free_port, init, serve

pytestmark = pytest.mark.e2e


def bastion_serve(data: Path, *args: str, cwd: Path | None = None, **settings: str) -> subprocess.CompletedProcess[str]:
    env = clean_env(**{"BASTION_ADMIN__ENABLED": "false", **settings})
    return subprocess.run(
        [sys.executable, "-m", "bastion", "serve", "--data-dir", str(data), *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    everything = result.stdout + result.stderr
    assert "Traceback" not in everything
    assert "backtrace" not in everything.lower()
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("startup") / "data"
    init(data, clean_env())
    return data


def test_a_port_in_use_is_one_line(data: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = bastion_serve(data, "--port", str(port))
    assert result.returncode == 2
    (line,) = error_lines(result)
    assert f"127.0.0.1:{port}" in line
    assert "in use" in line


UNGUARDED = """
from bastion import create_app
from bastion.settings import load_settings


def app_factory():
    app = create_app(load_settings())

    @app.get("/unguarded")
    async def unguarded() -> dict[str, str]:
        return {}

    return app
"""

FAILING_LIFESPAN = """
from contextlib import asynccontextmanager

from bastion import create_app
from bastion.settings import load_settings


def app_factory():
    app = create_app(load_settings())
    stock = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app):
        async with stock(app):
            raise RuntimeError("the reports service is not reachable")
            yield

    app.router.lifespan_context = lifespan
    return app
"""


def test_an_unguarded_extension_route_is_one_line(data: Path, tmp_path: Path) -> None:
    """V8.1.1 (default deny): a route without an access requirement does not start, and says so in one line."""
    (tmp_path / "unguarded.py").write_text(UNGUARDED)
    result = bastion_serve(data, "--port", str(free_port()), "--app", "unguarded:app_factory", cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    (line,) = error_lines(result)
    assert "/unguarded" in line


def test_a_lifespan_that_raises_is_one_line(data: Path, tmp_path: Path) -> None:
    """Whatever a worker's lifespan start-up raises reaches the operator once, in one line, exit 2
    (it was three JSON-escaped tracebacks, one per worker and one from granian)."""
    (tmp_path / "failing.py").write_text(FAILING_LIFESPAN)
    result = bastion_serve(
        data,
        "--port",
        str(free_port()),
        "--app",
        "failing:app_factory",
        cwd=tmp_path,
        BASTION_ADMIN__ENABLED="true",
        BASTION_ADMIN__PORT=str(free_port()),
    )
    assert result.returncode == 2, result.stdout + result.stderr
    (line,) = error_lines(result)
    assert line.endswith("did not start: RuntimeError: the reports service is not reachable")


@pytest.mark.parametrize(
    "content",
    [b'mode = "dev"\n\xff\xfe = 1\n', b"x = " + b"[" * 50_000 + b"]" * 50_000 + b"\n"],
    ids=["invalid-utf8", "deeply-nested"],
)
def test_a_corrupt_config_file_is_one_line(data: Path, content: bytes) -> None:
    config = data / "bastion.toml"
    good = config.read_bytes()
    config.write_bytes(content)
    try:
        result = bastion_serve(data, "--port", str(free_port()))
    finally:
        config.write_bytes(good)
    assert result.returncode == 2
    (line,) = error_lines(result)
    assert "bastion.toml" in line


def test_deeply_nested_setting_in_the_environment_is_one_line(data: Path) -> None:
    result = bastion_serve(data, "--port", str(free_port()), BASTION_SERVER__ALLOW="[" * 10_000 + "]" * 10_000)
    assert result.returncode == 2
    (line,) = error_lines(result)
    assert "too deeply" in line


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def _children(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()


def _admin_answers(served: Served, admin_port: int) -> int:
    with httpx.Client(verify=served.tls(), timeout=30) as client:
        return client.get(f"https://localhost:{admin_port}/admin/api/v1/users").status_code


def test_the_admin_listener_starts_at_its_first_connection(tmp_path: Path) -> None:
    """An admin plane nobody uses costs no process; its first request waits for it, and is answered."""
    admin_port = free_port()
    with serve(tmp_path / "data", BASTION_ADMIN__ENABLED="true", BASTION_ADMIN__PORT=str(admin_port)) as served:
        assert len(_children(served.process.pid)) == 1  # public only
        assert _admin_answers(served, admin_port) == 401
        assert len(_children(served.process.pid)) == 2
        assert _admin_answers(served, admin_port) == 401


def test_listeners_end_with_a_killed_supervisor(tmp_path: Path) -> None:
    """`kill -9` of `bastion serve` used to leave its listeners serving as orphans."""
    admin_port = free_port()
    with serve(tmp_path / "data", BASTION_ADMIN__ENABLED="true", BASTION_ADMIN__PORT=str(admin_port)) as served:
        pid = served.process.pid
        _admin_answers(served, admin_port)
        listeners = _children(pid)
        assert len(listeners) == 2  # public and admin
        with served.client() as client:
            assert client.get("/healthz").status_code == 200
        os.kill(served.process.pid, signal.SIGKILL)
        served.process.wait()
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline and (_listening(served.port) or any(_alive(int(p)) for p in listeners)):
            time.sleep(0.2)
        assert not _listening(served.port)
        assert not any(_alive(int(pid)) for pid in listeners)
        with pytest.raises(httpx.ConnectError), served.client() as client:
            client.get("/healthz")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead: its parent (init, for an orphan) has not reaped it yet.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_an_idle_server_stops_at_sigterm(tmp_path: Path) -> None:
    """SIGTERM ends `bastion serve` and every listener, exit code 0."""
    admin_port = free_port()
    with serve(tmp_path / "data", BASTION_ADMIN__ENABLED="true", BASTION_ADMIN__PORT=str(admin_port)) as served:
        _admin_answers(served, admin_port)
        listeners = _children(served.process.pid)
        served.process.send_signal(signal.SIGTERM)
        assert served.process.wait(timeout=30) == 0
        assert not any(_alive(int(pid)) for pid in listeners)
        assert not _listening(served.port)
        assert not _listening(admin_port)


def test_a_request_in_flight_is_answered_after_sigterm(tmp_path: Path) -> None:
    """A stopping server drains: a request whose body is still arriving at SIGTERM gets its answer."""
    with serve(tmp_path / "data") as served:
        body = b'{"email": "nobody@example.com", "password": "not the password"}'
        head = (
            "POST /api/v1/auth/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        raw = socket.create_connection(("127.0.0.1", served.port), timeout=30)
        with served.tls().wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(head + body[:10])
            time.sleep(0.5)  # the request has reached the app, which waits for the rest of the body
            served.process.send_signal(signal.SIGTERM)
            time.sleep(1)
            tls.sendall(body[10:])
            answer = b""
            while chunk := tls.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
        assert served.process.wait(timeout=30) == 0
        assert not _listening(served.port)
