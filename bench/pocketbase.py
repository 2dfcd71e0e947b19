"""PocketBase as the peer of the benchmarks: installed from tools/pocketbase.lock
into its own venv, run on loopback with its own data dir, and given the same
`notes` collection, owner-only rules and user as Bastion, through its REST API."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
BINARY = REPO / ".venv-tools" / "pocketbase" / "bin" / "pocketbase"
SUPERUSER, SUPERUSER_PASSWORD = "root@example.com", "bench-superuser-passphrase-7"
OWNER_ONLY = "owner = @request.auth.id"
BATCH = 500  # records per /api/batch request (one transaction each)


def install() -> Path:
    """The binary, installed (locked, hash-checked) by scripts/setup-tools when missing."""
    if not BINARY.exists():
        subprocess.run([str(REPO / "scripts" / "setup-tools"), "pocketbase"], check=True)
    return BINARY


class PocketBase:
    name = "PocketBase"

    def __init__(self, data: Path, port: int, pin: list[str]) -> None:
        self.data, self.port, self.pin = data, port, pin
        self.base = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.admin: dict[str, str] = {}
        self.user_id = ""

    def start(self) -> None:
        binary = str(install())
        run = [binary, "superuser", "upsert", SUPERUSER, SUPERUSER_PASSWORD, "--dir", str(self.data)]
        subprocess.run(run, check=True, capture_output=True)
        argv = [*self.pin, binary, "serve", "--http", f"127.0.0.1:{self.port}", "--dir", str(self.data)]
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until_up(f"{self.base}/api/health")
        token = self.post(
            "/api/collections/_superusers/auth-with-password", {"identity": SUPERUSER, "password": SUPERUSER_PASSWORD}
        )["token"]
        self.admin = {"Authorization": token}

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait()

    def post(self, path: str, body: Any, headers: dict[str, str] | None = None) -> Any:
        response = httpx.post(f"{self.base}{path}", json=body, headers=headers, timeout=60)
        response.raise_for_status()
        return response.json()

    def define(self, email: str, password: str) -> None:
        """The notes collection (same fields and limits as Bastion's), owner-only rules, one verified user."""
        users = httpx.get(f"{self.base}/api/collections/users", headers=self.admin).json()["id"]
        self.post(
            "/api/collections",
            {
                "name": "notes",
                "type": "base",
                **dict.fromkeys(("listRule", "viewRule", "createRule", "updateRule", "deleteRule"), OWNER_ONLY),
                "fields": [
                    {"name": "title", "type": "text", "max": 200, "required": True},
                    {"name": "body", "type": "editor"},
                    {"name": "secret", "type": "text"},
                    {"name": "priority", "type": "number", "min": 1, "max": 5, "onlyInt": True},
                    {"name": "owner", "type": "relation", "collectionId": users, "maxSelect": 1, "required": True},
                    {"name": "created", "type": "autodate", "onCreate": True},
                    {"name": "updated", "type": "autodate", "onCreate": True, "onUpdate": True},
                ],
                # Bastion indexes (owner, id) and each filterable field: the same here.
                "indexes": [
                    "CREATE INDEX idx_notes_owner ON notes (owner)",
                    "CREATE INDEX idx_notes_priority ON notes (priority)",
                ],
            },
            self.admin,
        )
        user = {"email": email, "password": password, "passwordConfirm": password, "verified": True}
        self.user_id = self.post("/api/collections/users/records", user, self.admin)["id"]

    def login(self, email: str, password: str) -> str:
        return str(
            self.post("/api/collections/users/auth-with-password", {"identity": email, "password": password})["token"]
        )

    def seed(self, rows: int) -> float:
        """``rows`` notes of the user through PocketBase's own bulk path, /api/batch; returns seconds."""
        settings = {"batch": {"enabled": True, "maxRequests": BATCH, "timeout": 60, "maxBodySize": 0}}
        response = httpx.patch(f"{self.base}/api/settings", json=settings, headers=self.admin)
        response.raise_for_status()
        start = time.monotonic()
        for first in range(0, rows, BATCH):
            requests = [
                {
                    "method": "POST",
                    "url": "/api/collections/notes/records",
                    "body": {
                        "title": f"note {i}",
                        "body": "<p>body</p>",
                        "secret": f"secret {i}",
                        "priority": 1 + i % 5,
                        "owner": self.user_id,
                    },
                }
                for i in range(first, min(rows, first + BATCH))
            ]
            self.post("/api/batch", {"requests": requests}, self.admin)
        return time.monotonic() - start

    def note_body(self) -> str:
        return json.dumps(
            {"title": "bench", "body": "<p>hi <b>there</b></p>", "secret": "s3", "priority": 3, "owner": self.user_id}
        )


def wait_until_up(url: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not come up")
        time.sleep(0.1)
