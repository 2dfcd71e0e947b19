"""Group commit acknowledges only what is on disk: after ``kill -9`` of the
whole server mid-load, every create that was answered 201 is in the
database, and so is its audit event."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
from serving import Served, clean_env, serve

PASSWORD = "tangerine-orbit-cascade-91"
EMAIL = "durable@example.com"


def _tree(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    found = [pid]
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        found += _tree(int(child))
    return found


def _sign_in(served: Served) -> str:
    subprocess.run(
        [sys.executable, "-m", "bastion", "user", "create", "--email", EMAIL, "--password-stdin", "--verified"],
        input=PASSWORD.encode(),
        env=clean_env(BASTION_DATA_DIR=str(served.data)),
        check=True,
        capture_output=True,
        timeout=120,
    )
    with served.client() as client:
        answer = client.post("/api/v1/auth/login", json={"email": EMAIL, "password": PASSWORD})
        assert answer.status_code == 200, answer.text
        return str(answer.json()["access_token"])


def test_v16_2_1_every_acknowledged_create_and_its_audit_event_survive_kill_9(tmp_path: Path) -> None:
    acknowledged: list[str] = []
    stop = threading.Event()

    def create(served: Served, token: str, worker: int) -> None:
        with served.client(timeout=5) as client:
            n = 0
            while not stop.is_set():
                n += 1
                body = {"title": f"w{worker}-{n}", "priority": 3}
                try:
                    answer = client.post(
                        "/api/v1/collections/notes/records", json=body, headers={"authorization": f"Bearer {token}"}
                    )
                except httpx.HTTPError:
                    return  # the server is gone
                if answer.status_code == 201:
                    acknowledged.append(answer.json()["id"])

    # Quiet: serve() reads the server's output only once it stops, and a full pipe would stall it.
    with serve(tmp_path / "data", BASTION_LOG__LEVEL="warning", BASTION_LOG__ACCESS="false") as served:
        token = _sign_in(served)
        writers = [threading.Thread(target=create, args=(served, token, w)) for w in range(6)]
        for writer in writers:
            writer.start()
        deadline = time.monotonic() + 30
        while len(acknowledged) < 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in _tree(served.process.pid):  # as a power cut would: all at once, no clean-up
            os.kill(pid, signal.SIGKILL)
        served.process.wait()
        stop.set()
        for writer in writers:
            writer.join(timeout=30)
        # What the clients were told, at the moment the server died.
        answered = list(acknowledged)

    assert len(answered) >= 200
    database = sqlite3.connect(tmp_path / "data" / "bastion.db")
    stored = {row[0] for row in database.execute("SELECT id FROM c_notes")}
    audited = {
        json.loads(row[0]).get("record_id")
        for row in database.execute("SELECT details FROM audit_events WHERE tag = 'data:record:create'")
    }
    database.close()
    assert {uuid.UUID(record).hex for record in answered} <= stored
    assert set(answered) <= audited
