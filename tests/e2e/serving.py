"""A real ``bastion serve`` process for end-to-end tests: start, wait until it answers, stop."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(**settings: str) -> dict[str, str]:
    """The test's environment without a developer's BASTION_* settings, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    env.update(settings)
    return env


def init(data: Path, env: dict[str, str]) -> None:
    subprocess.run(
        [sys.executable, "-m", "bastion", "init", "--data-dir", str(data)],
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    port: int
    data: Path
    _printed: list[bytes] = field(default_factory=list)
    _reader: threading.Thread | None = None

    def drain(self) -> None:
        """Read what the server prints as it prints it: a full pipe (64 KiB of access
        log, a few hundred requests) would otherwise block the server in its logger."""
        assert self.process.stdout is not None
        stream = self.process.stdout
        self._reader = threading.Thread(target=lambda: self._printed.extend(iter(stream.readline, b"")), daemon=True)
        self._reader.start()

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"

    def tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.data / "tls" / "ca.pem"))

    def client(self, *, http2: bool = False, timeout: float = 10.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, verify=self.tls(), http1=not http2, http2=http2, timeout=timeout)

    def output(self) -> str:
        """What the server printed (after it stopped)."""
        if self._reader is not None:
            self._reader.join(timeout=10)
            return b"".join(self._printed).decode(errors="replace")
        assert self.process.stdout is not None
        return self.process.stdout.read().decode(errors="replace")


@contextmanager
def serve(data: Path, *, port: int | None = None, host: str | None = None, **settings: str) -> Iterator[Served]:
    """``bastion serve`` on ``port`` or a free one (public listener only unless settings say otherwise).

    A test that must know the port before the server starts (an issuer URL
    naming it) picks it with ``free_port()`` and passes it. ``host``: listen
    on that address only (the certificate still names localhost, so the
    server is waited for by a TCP connection there).
    """
    if host is not None:
        settings["BASTION_SERVER__HOST"] = host
    env = clean_env(**{"BASTION_ADMIN__ENABLED": "false", **settings})
    if not (data / "bastion.toml").exists():
        init(data, env)
    port = port or free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "bastion", "serve", "--data-dir", str(data), "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    served = Served(process, port, data)
    served.drain()
    try:
        if host is None:
            wait_until_serving(served)
        else:
            wait_until_listening(served, host)
        yield served
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_until_serving(served: Served, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if served.process.poll() is not None:
            raise AssertionError(f"server exited {served.process.returncode}:\n{served.output()}")
        try:
            with served.client(timeout=2) as client:
                if client.get("/healthz").status_code == 200:
                    return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise AssertionError("server did not start")


def wait_until_listening(served: Served, host: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection((host, served.port), timeout=1).close()
            return
        except OSError:
            if served.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"server at {host} did not start:\n{served.output()}") from None
            time.sleep(0.2)


def missing_peer(reason: str) -> NoReturn:
    """Skip a test whose outside peer (Chromium, node, openssl) is not installed here;
    fail it instead under ``.ci/run`` (``BASTION_TEST_REQUIRE_PEERS=1``), which installs
    them all, so that a broken install step cannot pass as a row of skips."""
    if os.environ.get("BASTION_TEST_REQUIRE_PEERS") == "1":
        pytest.fail(f"required peer missing: {reason}")
    pytest.skip(reason)
