"""Scenarios 3, 4 and 5 of BENCHMARKS.md for Bastion alone, and the cost of
encrypted fields:

3. authenticated GET of one record with 3 encrypted fields (JWT + live session
   + RBAC + owner rule + primary-key fetch + 3 decryptions), against the same
   GET with 3 plain fields (encryption on ÷ off) and the bare-framework ceiling;
4. validated create with its durable audit event, against the fsync bound;
5. list 20 records with a filter over 100k rows.

    .venv/bin/python bench/data.py [--seconds 10] [--rows 100000]

Like bench/identity.py: `bastion serve --http` on loopback in a temporary data
dir, pinned to core 0, wrk pinned to core 1 where `taskset` exists.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from identity import EMAIL, PASSWORD, free_port, pinned

from bastion.clock import SystemClock
from bastion.data.schema import Catalog, new_record_id
from bastion.data.sealing import FieldSealer
from bastion.data.tables import DEFINITIONS_SELECT, parse_definitions, raw_definitions
from bastion.db import open_database, transaction
from bastion.secrets import open_keyrings
from bastion.security import BlindIndex, Encryptor, token_bytes
from bastion.settings import load_settings

ROOT = Path(__file__).resolve().parent
OWNER = dict.fromkeys(("list", "read", "create", "update", "delete"), "owner")
CONFIG = f"""
[collections.vault]
rules = {json.dumps(OWNER).replace('":', '" =')}
[collections.vault.fields]
a = {{ type = "encrypted" }}
b = {{ type = "encrypted" }}
c = {{ type = "encrypted" }}

[collections.plain]
rules = {json.dumps(OWNER).replace('":', '" =')}
[collections.plain.fields]
a = {{ type = "string" }}
b = {{ type = "string" }}
c = {{ type = "string" }}
"""
THREE = {"a": "secret number one", "b": "secret number two", "c": "secret number three"}


def wrk(url: str, seconds: int, *, method: str = "GET", token: str = "", body: str = "") -> dict[str, float]:
    env = {**os.environ, "BENCH_METHOD": method, "BENCH_TOKEN": token, "BENCH_BODY": body}
    argv = ["wrk", "-t1", "-c8", f"-d{seconds}s", "-s", str(ROOT / "lua" / "request.lua"), url]
    output = subprocess.run(pinned(1, argv), env=env, capture_output=True, text=True, check=True).stdout
    rps = float(next(line.split()[1] for line in output.splitlines() if line.startswith("Requests/sec")))
    stats = dict(item.split("=") for item in output.splitlines()[-1].split())
    return {"rps": rps, "p50_ms": float(stats["p50_ms"]), "p99_ms": float(stats["p99_ms"]),
            "non2xx": float(stats["non2xx"])}  # fmt: skip


def fsync_bound(path: Path, seconds: float = 3.0) -> float:
    """Single-row durable commits per second (WAL, synchronous=FULL) on this disk."""
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    count, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        connection.execute("INSERT INTO t (v) VALUES ('x')")
        count += 1
    connection.close()
    return count / seconds


async def seed(data: Path, user_id: uuid.UUID, rows: int) -> None:
    """``rows`` notes of one owner, written straight to the table (as the API would store them)."""
    settings = load_settings(data)
    rings = open_keyrings(settings)
    sealer = FieldSealer(Encryptor(rings.encryption), BlindIndex(rings.hmac))
    db = open_database(settings.sqlalchemy_url)
    try:
        catalog = Catalog.build(parse_definitions(raw_definitions(await db.all(DEFINITIONS_SELECT))))
        insert = catalog.collections["notes"].insert
        now = SystemClock().now()
        for start in range(0, rows, 5000):
            batch = []
            for i in range(start, min(rows, start + 5000)):
                record_id = new_record_id(int(now.timestamp() * 1000) + i, token_bytes(10))
                batch.append({"id": record_id, "owner": user_id, "created_at": now, "updated_at": now,
                              "title": f"note {i}", "body": "<p>body</p>", "priority": 1 + i % 5,
                              "secret": sealer.seal("notes", "secret", record_id, f"secret {i}")})  # fmt: skip
            async with transaction(db) as tx:
                await tx.execute_many(insert, batch)
    finally:
        await db.close()


def main() -> None:  # noqa: PLR0915 - one straight script
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    bastion = str(Path(sys.executable).with_name("bastion"))
    granian = str(Path(sys.executable).with_name("granian"))
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
        env |= {"BASTION_DATA_DIR": str(data), "BASTION_LOG__LEVEL": "warning",
                "BASTION_AUTH__LOGIN_RATE_PER_IP": "1000000/minute"}  # fmt: skip
        subprocess.run([bastion, "init"], env=env, check=True, capture_output=True)
        with (data / "bastion.toml").open("a") as config:
            config.write(CONFIG)
        subprocess.run([bastion, "migrate"], env=env, check=True, capture_output=True)
        subprocess.run([bastion, "user", "create", "--email", EMAIL, "--password-stdin", "--verified"], env=env,
                       input=PASSWORD + "\n", text=True, check=True, capture_output=True)  # fmt: skip
        port, bare_port = free_port(), free_port()
        server = subprocess.Popen(pinned(0, [bastion, "serve", "--http", "--port", str(port)]), env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        bare = subprocess.Popen(
            pinned(0, [granian, "--interface", "asgi", "--host", "127.0.0.1", "--port", str(bare_port),
                       "--log-level", "warning", "bare:app"]),
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(100):
                try:
                    httpx.get(f"{base}/healthz")
                    httpx.get(f"http://127.0.0.1:{bare_port}/record")
                    break
                except httpx.HTTPError:
                    time.sleep(0.1)
            login = httpx.post(f"{base}/api/v1/auth/login", json={"email": EMAIL, "password": PASSWORD}).json()
            token = login["access_token"]
            auth = {"authorization": f"Bearer {token}"}
            me = httpx.get(f"{base}/api/v1/me", headers=auth).json()
            vault = httpx.post(f"{base}/api/v1/collections/vault/records", json=THREE, headers=auth).json()
            plain = httpx.post(f"{base}/api/v1/collections/plain/records", json=THREE, headers=auth).json()
            asyncio.run(seed(data, uuid.UUID(me["id"]), args.rows))

            bound = fsync_bound(Path(tmp) / "fsync.db")
            ceiling = wrk(f"http://127.0.0.1:{bare_port}/record", args.seconds)
            read_enc = wrk(f"{base}/api/v1/collections/vault/records/{vault['id']}", args.seconds, token=token)
            read_plain = wrk(f"{base}/api/v1/collections/plain/records/{plain['id']}", args.seconds, token=token)
            create = wrk(f"{base}/api/v1/collections/notes/records", args.seconds, method="POST", token=token,
                         body=json.dumps({"title": "bench", "body": "<p>hi <b>there</b></p>", "secret": "s3",
                                          "priority": 3}))  # fmt: skip
            listing = wrk(f"{base}/api/v1/collections/notes/records?priority.eq=3&limit=20", args.seconds,
                          token=token)  # fmt: skip
        finally:
            for process in (server, bare):
                process.terminate()
                process.wait()
    result = {
        "machine": {"cores": os.cpu_count(), "pinning": "server core 0, wrk core 1 (taskset)"},
        "bare_framework": ceiling,
        "fsync_bound_per_s": bound,
        "scenario_3_read_3_encrypted": {**read_enc, "ratio_to_bare": read_enc["rps"] / ceiling["rps"]},
        "scenario_3_read_3_plain": {**read_plain, "ratio_to_bare": read_plain["rps"] / ceiling["rps"]},
        "encryption_cost_on_over_off": read_enc["rps"] / read_plain["rps"],
        "scenario_4_create": {**create, "ratio_to_fsync_bound": create["rps"] / bound},
        "scenario_5_list_20_filtered": {**listing, "rows": args.rows},
    }
    print(f"{'scenario':<36}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'non2xx':>8}{'ratio':>10}")
    rows = [
        ("bare framework (ceiling)", ceiling, None),
        ("3 read, 3 encrypted fields", read_enc, read_enc["rps"] / ceiling["rps"]),
        ("3 read, 3 plain fields", read_plain, read_plain["rps"] / ceiling["rps"]),
        ("4 validated create + audit", create, create["rps"] / bound),
        (f"5 list 20, filter, {args.rows} rows", listing, None),
    ]
    for name, figures, ratio in rows:
        shown = f"{ratio:>10.2f}" if ratio is not None else f"{'':>10}"
        print(f"{name:<36}{figures['rps']:>10.1f}{figures['p50_ms']:>10.2f}{figures['p99_ms']:>10.2f}"
              f"{figures['non2xx']:>8.0f}{shown}")  # fmt: skip
    print(f"{'fsync bound (durable commits/s)':<36}{bound:>10.1f}")
    print(f"encryption on ÷ off (scenario 3): {read_enc['rps'] / read_plain['rps']:.2f}")
    out = ROOT / "results" / f"data-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
