"""What `bastion serve` writes: one format, from every process, and no start-up chatter.

Away from a terminal the default format is JSON: every line the supervisor,
the granian listener and the uvicorn admin listener (started by the test's
admin request: it starts at its first connection) write must
parse as one JSON object (V16.2.4), the posture warnings and the `listening`
lines included; Alembic's plugin and dialect lines are gone, and an
up-to-date schema is not announced at all.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_every_line_is_json_and_start_up_is_quiet(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    subprocess.run([sys.executable, "-m", "bastion", "init", "--data-dir", str(data)], env=env, check=True, timeout=120)
    port, admin_port = free_port(), free_port()
    command = ["serve", "--data-dir", str(data), "--port", str(port), "--admin-port", str(admin_port)]
    process = subprocess.Popen(
        [sys.executable, "-m", "bastion", *command], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 60
        waiting = [port, admin_port]
        while waiting and time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", waiting[0]), timeout=0.2).close()
                waiting.pop(0)
            except OSError:
                assert process.poll() is None, "serve exited"
                time.sleep(0.1)
        assert not waiting, "serve did not start"
        context = ssl.create_default_context(cafile=str(data / "tls" / "ca.pem"))
        assert httpx.get(f"https://localhost:{port}/healthz", verify=context).status_code == 200
        admin = httpx.get(f"https://localhost:{admin_port}/admin/api/v1/users", verify=context, timeout=30)
        assert admin.status_code == 401
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)

    lines = [line for line in output.decode().splitlines() if line.strip()]
    events = []
    for line in lines:
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"not a JSON log line: {line!r}")
    loggers = {event["logger"] for event in events}
    assert {"bastion.serve", "_granian", "uvicorn.error"} <= loggers
    assert not [name for name in loggers if name.startswith("alembic")]
    assert not [event for event in events if event["event"] == "schema migrated"]  # init migrated already
    listening = [(e["listener"], e["url"]) for e in events if e["event"] == "listening"]
    assert listening == [("public", f"https://127.0.0.1:{port}"), ("admin", f"https://127.0.0.1:{admin_port}")]
    warnings = [event for event in events if event["logger"] == "bastion.serve" and event["level"] == "warning"]
    assert warnings, "dev mode warns about its dev master key"
    assert all({"setting", "fix"} <= event.keys() for event in warnings)
