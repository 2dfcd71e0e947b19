"""Where a request's CPU goes: each scenario's request run in-process through
the whole app (no server, no network), its CPU time per request measured,
then profiled and that CPU split by layer, in microseconds per request.

    .venv/bin/python bench/cpu.py [--requests 2000] [--rows 20000] [--scenarios 3,4]

Two passes, each on its own instance of the app over the same data dir:

1. *timed*: CPU per request (process time, all threads) and how much of it
   ran on the event loop's thread and how much on other threads (the
   database's threads, the password hasher's pool); no profiler.
2. *profiled*: a CPU-time profiler (cProfile with ``time.thread_time`` as its
   clock, so waiting on a lock, a socket or an fsync costs nothing) on the
   event loop's thread and on every thread the app starts. Each thread's
   profile splits that thread's timed CPU, so the per-layer figures add up
   to the timed total; the profiler's own overhead weighs on functions with
   many calls, so read small layers as approximate.

A function's layer is chosen by the module it lives in, longest prefix first
(``LAYERS``): the database layer is whatever runs under ``sqlite3``,
``asyncpg``, ``sqlalchemy``, ``aiosqlite`` or ``bastion.db``, so a new data
layer under ``bastion/db/`` (or a new driver added to that list) is counted
there without changing this script. Each layer's heaviest modules are in the
JSON, to check the classification. Writes bench/results/cpu-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import CodeType, FrameType
from typing import Any

ROOT = Path(__file__).resolve().parent
EMAIL, PASSWORD = "bench@example.com", "tangerine-orbit-cascade-91"
# Scenario 6's wrong passwords go to an account of their own: they lock it
# (auth.lockout_*), and the other scenarios sign in again in the second pass.
FLOODED = "flooded@example.com"
NOTE = {"title": "bench", "body": "<p>hi <b>there</b></p>", "secret": "s3", "priority": 3}
# Module prefixes (dotted, as imported) of each layer; the longest matching
# prefix wins, and anything unmatched is "event loop, stdlib".
LAYERS: dict[str, tuple[str, ...]] = {
    layer: tuple(prefixes.split())
    for layer, prefixes in {
        "spine / middleware": "bastion.http bastion.asgi bastion.app bastion.logging bastion.health bastion.network"
        " structlog",
        "HTTP framework": "starlette fastapi anyio python_multipart multipart h11 granian",
        "auth / principal": "bastion.access bastion.sessions bastion.identity",
        "rate limiting": "limits bastion.http.ratelimit bastion.http.throttle bastion.identity.throttle"
        " bastion.identity.gate",
        "database": "sqlite3 _sqlite3 aiosqlite asyncpg psycopg sqlalchemy greenlet alembic bastion.db bastion.uow",
        "crypto": "cryptography joserfc argon2 _argon2_cffi_bindings _cffi_backend nacl hashlib _hashlib hmac _hmac"
        " _blake2 secrets bastion.security bastion.secrets bastion.data.sealing",
        "JSON / serialisation": "json _json orjson msgspec ujson",
        "validation": "pydantic pydantic_core email_validator nh3 bastion.data.validation",
        "records, audit": "bastion.data bastion.audit",
        "Bastion, other": "bastion",
        "harness (this script)": "cpu data",
    }.items()
}
OTHER = "event loop, stdlib"
UNSEEN = "other threads, unprofiled"
ORDER = (*LAYERS, OTHER, UNSEEN)
PREFIXES = sorted(((prefix, layer) for layer, prefixes in LAYERS.items() for prefix in prefixes),
                  key=lambda item: -len(item[0]))  # fmt: skip
# sys.path entries, longest first, to turn a file name into a module name.
PATHS = sorted({str(Path(p).resolve()) for p in sys.path if p}, key=len, reverse=True)
BUILTIN = (
    re.compile(r"<method '(?P<name>[^']+)' of '(?P<owner>[\w.]+)' objects>"),
    re.compile(r"<built-in method (?P<owner>[\w.]+)"),
    re.compile(r"<(?P<owner>[\w.]+)>"),
)

Call = Callable[[], Awaitable[int]]


def module_of(code: CodeType | str) -> str:
    """The dotted module a profiled function belongs to ("" when unknown)."""
    if isinstance(code, str):  # a C function: "<method 'execute' of 'sqlite3.Connection' objects>"
        for pattern in BUILTIN:
            if match := pattern.match(code):
                return match["owner"]
        return ""
    filename = code.co_filename
    if filename.startswith("<frozen "):
        return filename.removeprefix("<frozen ").removesuffix(">")
    for path in PATHS:
        if filename.startswith(path + os.sep):
            relative = filename[len(path) + 1 :].removesuffix(".py").removesuffix(f"{os.sep}__init__")
            return relative.replace(os.sep, ".")
    return ""


def layer_of(module: str) -> str:
    for prefix, layer in PREFIXES:
        if module == prefix or module.startswith(prefix + "."):
            return layer
    return OTHER


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


SCENARIOS = {
    "1": "1 password login",
    "2": "2 refresh rotation",
    "3": "3 read one record",
    "4": "4 validated create + audit",
    "5": "5 list 20 filtered",
    "6": "6 throttled login attempt",
    "h": "healthz (spine only)",
}
SHORT = {
    "1": "1 login",
    "2": "2 refresh",
    "3": "3 read",
    "4": "4 create",
    "5": "5 list",
    "6": "6 throttled",
    "h": "healthz",
}


async def scenarios(client: InProcess, record_id: str) -> dict[str, Call]:
    from bastion.security import hash_token

    login = await client.json("POST", "/api/v1/auth/login", body={"email": EMAIL, "password": PASSWORD})
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
        return (await client.call("POST", "/api/v1/auth/login", body={"email": FLOODED, "password": "wrong"}, ip=ip))[0]

    return {
        "1": sign_in,
        "2": rotate,
        "3": lambda: _status(client.call("GET", f"{records}/{record_id}", token=token)),
        "4": lambda: _status(client.call("POST", records, body=NOTE, token=token)),
        "5": lambda: _status(client.call("GET", f"{records}?priority.eq=3&limit=20", token=token)),
        "6": flood,
        "h": lambda: _status(client.call("GET", "/healthz")),
    }


async def _status(call: Awaitable[tuple[int, bytes]]) -> int:
    return (await call)[0]


def requests_for(key: str, requests: int) -> int:
    # A login is ~20-35 ms of hashing: fewer of them tell as much.
    return max(20, requests // 50) if key == "1" else requests


async def timed(call: Call, requests: int) -> dict[str, Any]:
    statuses: dict[int, int] = {}
    for _ in range(min(200, requests)):
        await call()
    wall, cpu, loop = time.perf_counter(), time.process_time(), time.thread_time()
    for _ in range(requests):
        status = await call()
        statuses[status] = statuses.get(status, 0) + 1
    wall, cpu, loop = time.perf_counter() - wall, time.process_time() - cpu, time.thread_time() - loop
    return {"cpu_us": 1e6 * cpu / requests, "loop_thread_us": 1e6 * loop / requests,
            "other_threads_us": 1e6 * max(0.0, cpu - loop) / requests, "wall_us": 1e6 * wall / requests,
            "statuses": statuses}  # fmt: skip


class ThreadProfiles:
    """A CPU-time profiler in every thread started after ``install`` (Python 3.11
    has no way to profile a thread that already runs)."""

    def __init__(self) -> None:
        self.profiles: list[cProfile.Profile] = []

    def install(self) -> None:
        def start(frame: FrameType, event: str, arg: Any) -> None:
            profile = cProfile.Profile(time.thread_time)
            self.profiles.append(profile)
            profile.enable()  # replaces this hook in this thread

        threading.setprofile(start)

    def snapshot(self) -> dict[CodeType | str, float]:
        return _own_times(self.profiles)


def _own_times(profiles: list[cProfile.Profile]) -> dict[CodeType | str, float]:
    """Own CPU seconds by function, summed over ``profiles`` (read while they run)."""
    totals: dict[CodeType | str, float] = {}
    for profile in list(profiles):
        for entry in profile.getstats():
            totals[entry.code] = totals.get(entry.code, 0.0) + entry.inlinetime
    return totals


def split(own: dict[CodeType | str, float], cpu_us: float) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """``cpu_us`` shared out by layer in proportion to profiled own time; and each layer's modules."""
    modules: dict[str, dict[str, float]] = {}
    for code, seconds in own.items():
        if seconds > 0:
            module = module_of(code) or "?"
            by_module = modules.setdefault(layer_of(module), {})
            by_module[module] = by_module.get(module, 0.0) + seconds
    total = sum(sum(m.values()) for m in modules.values())
    if total <= 0:
        return ({UNSEEN: cpu_us} if cpu_us > 0 else {}), {}
    layers = {layer: cpu_us * sum(m.values()) / total for layer, m in modules.items()}
    top = {layer: dict(sorted(((k, cpu_us * v / total) for k, v in m.items()), key=lambda kv: -kv[1])[:6])
           for layer, m in modules.items()}  # fmt: skip
    return layers, top


async def profiled(call: Call, requests: int, threads: ThreadProfiles, cpu: dict[str, Any]) -> dict[str, Any]:
    for _ in range(min(200, requests)):
        await call()
    before = threads.snapshot()
    loop_profile = cProfile.Profile(time.thread_time)
    loop_profile.enable()
    for _ in range(requests):
        await call()
    loop_profile.disable()
    after = threads.snapshot()
    others = {code: seconds - before.get(code, 0.0) for code, seconds in after.items()}
    loop_layers, loop_top = split(_own_times([loop_profile]), cpu["loop_thread_us"])
    other_layers, other_top = split(others, cpu["other_threads_us"])
    layers = {layer: loop_layers.get(layer, 0.0) + other_layers.get(layer, 0.0) for layer in ORDER}
    return {"layers_us": {k: v for k, v in layers.items() if v > 0},
            "loop_thread_layers_us": loop_layers, "other_threads_layers_us": other_layers,
            "top_modules_us": {"loop_thread": loop_top, "other_threads": other_top}}  # fmt: skip


def prepare(data: Path) -> dict[str, str]:
    """A data dir with the default collections and one verified user."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    env |= {"BASTION_DATA_DIR": str(data), "BASTION_LOG__LEVEL": "warning",
            "BASTION_SERVER__TRUSTED_PROXIES": '["127.0.0.1/32"]'}  # fmt: skip
    exe = str(Path(sys.executable).with_name("bastion"))
    for command in ("init", "migrate"):  # migrate applies the default collections
        subprocess.run([exe, command], env=env, check=True, capture_output=True)
    for email in (EMAIL, FLOODED):
        subprocess.run(
            [exe, "user", "create", "--email", email, "--password-stdin", "--verified"],
            env=env, input=PASSWORD + "\n", text=True, check=True, capture_output=True,
        )  # fmt: skip
    return env


def new_app(data: Path) -> Any:
    from bastion.app import create_app
    from bastion.logging import configure_logging
    from bastion.settings import load_settings

    configure_logging("warning")
    return create_app(load_settings(data))


async def fill(client: InProcess, data: Path, token: str, rows: int) -> None:
    """``rows`` notes for scenario 5: straight into the table with bench/data.py's ``seed`` (fast), or,
    when that no longer fits the data layer, through the records API (slower, the same rows)."""
    try:
        from data import seed

        me = await client.json("GET", "/api/v1/me", token=token)
        await seed(data, uuid.UUID(me["id"]), rows)
    except Exception as error:  # any failure of the shortcut: take the long way
        print(f"  bench/data.py's seed failed ({type(error).__name__}: {error}); seeding through the API")
        for i in range(rows):
            body = {**NOTE, "title": f"note {i}", "priority": 1 + i % 5}
            status, answer = await client.call("POST", "/api/v1/collections/notes/records", body=body, token=token)
            if status != 201:
                raise RuntimeError(f"seeding: {status} {answer[:200]!r}") from error


async def timed_pass(data: Path, chosen: list[str], requests: int, rows: int) -> tuple[str, dict[str, Any]]:
    """Seeds the data dir, creates the record scenario 3 reads, then times each scenario."""
    app = new_app(data)
    async with app.router.lifespan_context(app):
        client = InProcess(app)
        login = await client.json("POST", "/api/v1/auth/login", body={"email": EMAIL, "password": PASSWORD})
        if "5" in chosen:
            await fill(client, data, login["access_token"], rows)
        created = await client.json("POST", "/api/v1/collections/notes/records", body=NOTE,
                                    token=login["access_token"])  # fmt: skip
        calls = await scenarios(client, created["id"])
        results = {}
        for key in chosen:
            results[key] = await timed(calls[key], requests_for(key, requests))
            print(f"  timed   {SCENARIOS[key]:<28}{results[key]['cpu_us']:>9.0f} us CPU", flush=True)
        return created["id"], results


async def profiled_pass(
    data: Path, chosen: list[str], requests: int, record_id: str, cpu: dict[str, Any]
) -> dict[str, Any]:
    threads = ThreadProfiles()
    threads.install()  # before the app starts its threads
    try:
        app = new_app(data)
        async with app.router.lifespan_context(app):
            calls = await scenarios(InProcess(app), record_id)
            results = {}
            for key in chosen:
                results[key] = await profiled(calls[key], max(10, requests_for(key, requests) // 2), threads, cpu[key])
                print(f"  profiled {SCENARIOS[key]}", flush=True)
            return results
    finally:
        threading.setprofile(None)  # type: ignore[arg-type]


def us(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:.1f}" if value >= 0.05 else ""


def table(results: list[dict[str, Any]]) -> str:
    """Layers down, scenarios across, CPU microseconds per request."""
    head = "| layer (\N{MICRO SIGN}s CPU per request) | " + " | ".join(SHORT[r["key"]] for r in results) + " |"
    lines = [head, "|---|" + "---:|" * len(results)]
    seen = [layer for layer in ORDER if any(r["layers_us"].get(layer, 0) >= 0.05 for r in results)]
    for layer in seen:
        lines.append(f"| {layer} | " + " | ".join(us(r["layers_us"].get(layer, 0.0)) for r in results) + " |")
    for label, key in (("**total** (timed)", "cpu_us"), ("of which event-loop thread", "loop_thread_us"),
                       ("of which other threads", "other_threads_us"), ("wall per request", "wall_us")):  # fmt: skip
        lines.append(f"| {label} | " + " | ".join(us(r[key]) for r in results) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="timed requests per scenario (default 2000)")
    parser.add_argument("--rows", type=int, default=20_000, help="notes seeded for scenario 5 (default 20000)")
    parser.add_argument("--scenarios", default="1,2,3,4,5,6,h", help="comma-separated; h is /healthz (default all)")
    args = parser.parse_args()
    chosen = [key for key in SCENARIOS if key in args.scenarios.split(",")]
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        env = prepare(data)
        os.environ.update({k: v for k, v in env.items() if k.startswith("BASTION_")})
        # Every throttle raised except the per-account login limit scenario 6 hits.
        os.environ.update({"BASTION_AUTH__REFRESH_RATE_PER_IP": "1000000/minute",
                           "BASTION_AUTH__LOGIN_RATE_PER_IP": "1000000/minute"})  # fmt: skip
        record_id, cpu = asyncio.run(timed_pass(data, chosen, args.requests, args.rows))
        layers = asyncio.run(profiled_pass(data, chosen, args.requests, record_id, cpu))
    results = [{"key": key, "scenario": SCENARIOS[key], **cpu[key], **layers[key]} for key in chosen]
    print()
    print(table(results))
    print(f"(load average {load[0]:.2f} at the start, {os.getloadavg()[0]:.2f} at the end)")
    out = ROOT / "results" / f"cpu-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"requests": args.requests, "rows": args.rows, "load_average": [load, os.getloadavg()],
                               "layers": {k: list(v) for k, v in LAYERS.items()}, "results": results,
                               "table_markdown": table(results)}, indent=2))  # fmt: skip
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
