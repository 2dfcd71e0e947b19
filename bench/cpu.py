"""Where a request's CPU goes: each scenario's request run in-process through
the whole app (no server, no network), its CPU time per request measured,
then profiled and the time split by layer.

    .venv/bin/python bench/cpu.py [--requests 2000] [--rows 20000]

The figures are CPU microseconds per request on one core (process time, all
threads). The layer split comes from a second, profiled pass (cProfile adds
its own overhead to every Python call, so read it as proportions). Layers
by the file a function lives in: HTTP framework (FastAPI, Starlette),
database layer (SQLAlchemy, aiosqlite, greenlet, sqlite3), crypto
(cryptography, joserfc, argon2), validation (pydantic, email-validator),
rate limiting (limits), Bastion's own code, and the event loop and stdlib.
Writes bench/results/cpu-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
EMAIL, PASSWORD = "bench@example.com", "tangerine-orbit-cascade-91"
NOTE = {"title": "bench", "body": "<p>hi <b>there</b></p>", "secret": "s3", "priority": 3}
LAYERS = (
    ("HTTP framework", ("fastapi", "starlette")),
    ("database layer", ("sqlalchemy", "aiosqlite", "greenlet", "sqlite3")),
    ("crypto", ("cryptography", "joserfc", "argon2", "ed25519", "aead", "AESGCM")),
    ("validation", ("pydantic", "email_validator")),
    ("rate limiting", ("limits",)),
    ("Bastion", ("bastion",)),
)
IDLE = ("poll' of 'select.epoll", "acquire' of '_thread.lock")

Call = Callable[[], Awaitable[int]]


def layer_of(filename: str, function: str) -> str:
    where = f"{filename} {function}"
    for name, marks in LAYERS:
        if any(f"/{mark}/" in where or f"{mark}." in function or f"'{mark}" in where for mark in marks):
            return name
    return "event loop, stdlib"


class InProcess:
    """The app, called as an ASGI server would call it."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def call(
        self, method: str, path: str, *, body: Any = None, token: str = "", ip: str = ""
    ) -> tuple[int, bytes]:
        raw = json.dumps(body).encode() if body is not None else b""
        headers = [(b"host", b"127.0.0.1"), (b"user-agent", b"bench")]
        if raw:
            headers += [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
        if token:
            headers.append((b"authorization", f"Bearer {token}".encode()))
        if ip:
            headers.append((b"x-forwarded-for", ip.encode()))
        path, _, query = path.partition("?")
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
                 "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": query.encode(),
                 "root_path": "", "headers": headers, "client": ("127.0.0.1", 50000),
                 "server": ("127.0.0.1", 8000), "state": {}}  # fmt: skip
        status, chunks = 0, []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": raw, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, send)
        return status, b"".join(chunks)

    async def json(self, method: str, path: str, **options: Any) -> Any:
        return json.loads((await self.call(method, path, **options))[1])


async def scenarios(client: InProcess, record_id: str) -> dict[str, Call]:
    from bastion.security import hash_token

    login = json.loads(
        (await client.call("POST", "/api/v1/auth/login", body={"email": EMAIL, "password": PASSWORD}))[1]
    )
    token, refresh = login["access_token"], login["refresh_token"]
    limiter, settings = client.app.state.rate_limiter, client.app.state.settings.auth
    records = "/api/v1/collections/notes/records"

    async def rotate() -> int:
        nonlocal refresh
        status, body = await client.call("POST", "/api/v1/auth/refresh", body={"refresh_token": refresh})
        refresh = json.loads(body)["refresh_token"]
        return status

    async def sign_in() -> int:
        # The per-account throttle stays on for scenario 6; this account's budget is refilled instead.
        await limiter.reset(settings.login_rate_per_account, "auth:login:account", hash_token(EMAIL))
        return (await client.call("POST", "/api/v1/auth/login", body={"email": EMAIL, "password": PASSWORD}))[0]

    async def flood() -> int:
        ip = ".".join(["10", *(str(secrets.randbelow(256)) for _ in range(3))])
        return (await client.call("POST", "/api/v1/auth/login", body={"email": EMAIL, "password": "wrong"}, ip=ip))[0]

    return {
        "1 password login": sign_in,
        "2 refresh rotation": rotate,
        "3 read one record": lambda: _status(client.call("GET", f"{records}/{record_id}", token=token)),
        "4 validated create + audit": lambda: _status(client.call("POST", records, body=NOTE, token=token)),
        "5 list 20 filtered": lambda: _status(client.call("GET", f"{records}?priority.eq=3&limit=20", token=token)),
        "6 throttled login attempt": flood,
        "healthz (spine only)": lambda: _status(client.call("GET", "/healthz")),
    }


async def _status(call: Awaitable[tuple[int, bytes]]) -> int:
    return (await call)[0]


async def measure(name: str, call: Call, requests: int) -> dict[str, Any]:
    statuses: dict[int, int] = {}
    for _ in range(min(200, requests)):
        await call()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(requests):
        status = await call()
        statuses[status] = statuses.get(status, 0) + 1
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(requests // 2):
        await call()
    profiler.disable()
    layers: dict[str, float] = {}
    for (filename, _, function), (_, _, own, _, _) in pstats.Stats(profiler).stats.items():  # type: ignore[attr-defined]
        if not any(mark in function for mark in IDLE):
            layer = layer_of(filename, function)
            layers[layer] = layers.get(layer, 0.0) + own
    total = sum(layers.values()) or 1.0
    shares = {layer: own / total for layer, own in sorted(layers.items(), key=lambda item: -item[1])}
    return {"scenario": name, "cpu_us": 1e6 * cpu / requests, "wall_us": 1e6 * wall / requests,
            "statuses": statuses, "layers": shares}  # fmt: skip


def prepare(data: Path, rows: int) -> dict[str, str]:
    """A data dir with the default collections, one verified user and ``rows`` notes."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    env |= {"BASTION_DATA_DIR": str(data), "BASTION_LOG__LEVEL": "warning",
            "BASTION_SERVER__TRUSTED_PROXIES": '["127.0.0.1/32"]'}  # fmt: skip
    exe = str(Path(sys.executable).with_name("bastion"))
    for command in ("init", "migrate"):  # migrate applies the default collections
        subprocess.run([exe, command], env=env, check=True, capture_output=True)  # noqa: S603 - our own CLI
    subprocess.run(  # noqa: S603 - our own CLI
        [exe, "user", "create", "--email", EMAIL, "--password-stdin", "--verified"],
        env=env, input=PASSWORD + "\n", text=True, check=True, capture_output=True,
    )  # fmt: skip
    return env


async def run(data: Path, requests: int, rows: int) -> list[dict[str, Any]]:
    from data import seed

    from bastion.app import create_app
    from bastion.logging import configure_logging
    from bastion.settings import load_settings

    configure_logging("warning")
    app = create_app(load_settings(data))
    async with app.router.lifespan_context(app):
        client = InProcess(app)
        login = json.loads(
            (await client.call("POST", "/api/v1/auth/login", body={"email": EMAIL, "password": PASSWORD}))[1]
        )
        token = login["access_token"]
        me = json.loads((await client.call("GET", "/api/v1/me", token=token))[1])
        await seed(data, uuid.UUID(me["id"]), rows)
        created = json.loads(
            (await client.call("POST", "/api/v1/collections/notes/records", body=NOTE, token=token))[1]
        )
        results = []
        for name, call in (await scenarios(client, created["id"])).items():
            # A login is ~20 ms of hashing: fewer of them tell as much.
            results.append(await measure(name, call, max(20, requests // 50) if name[0] == "1" else requests))
            print(_line(results[-1]), flush=True)
        return results


def _line(result: dict[str, Any]) -> str:
    split = ", ".join(f"{name} {share:.0%}" for name, share in result["layers"].items() if share >= 0.02)
    return f"{result['scenario']:<28}{result['cpu_us']:>8.0f} us CPU {result['wall_us']:>8.0f} us wall  {split}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rows", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        env = prepare(data, args.rows)
        os.environ.update({k: v for k, v in env.items() if k.startswith("BASTION_")})
        # Every throttle raised except the per-account login limit scenario 6 hits.
        os.environ.update({"BASTION_AUTH__REFRESH_RATE_PER_IP": "1000000/minute",
                           "BASTION_AUTH__LOGIN_RATE_PER_IP": "1000000/minute"})  # fmt: skip
        print(f"{'scenario':<28}{'CPU per request':>15}{'':>14}  where it goes (profiled pass)")
        results = asyncio.run(run(data, args.requests, args.rows))
    out = ROOT / "results" / f"cpu-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"requests": args.requests, "rows": args.rows, "results": results}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
