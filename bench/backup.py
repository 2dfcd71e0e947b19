"""Scenario 9: a backup of a 1 GB SQLite database while creates go on at 200/s (issue 15).

    .venv/bin/python bench/run.py --scenarios 9 [--backup-gb 1.0]

What `run.py`'s ``s9`` measures, against the running ``bastion serve``:

1. the data dir is filled to ``--backup-gb`` GB of notes, inserted straight
   into the table with Bastion's own code (as ``data.seed`` does), each with a
   ~6 KB body of hex text (compresses about 2:1, like most text);
2. creates at a fixed 200/s for 10 s, no backup: their p99 (unloaded);
3. the same creates, and ``bastion backup create`` started 3 s in: the p99
   of the creates *scheduled* while the backup ran (latency counted from the
   scheduled send time, so a stalled server cannot hide behind a slow client);
4. ``bastion backup verify FILE --identity F`` (decrypt, integrity_check,
   every table's digest): with 3, "backup + encrypt + verify";
5. ``bastion backup restore FILE --identity F --data-dir DIR --key K``.

The load generator is this file run as a process of its own (``load``),
open-loop: request i is sent at t0 + i/rate whatever came back before. It
is pinned with the backup command to core 1; the server has core 0 to itself.
(Not ``nice 19``: on a shared machine that starved the backup to a few MB/s.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from pathlib import Path

import httpx

RATE = 200


async def fill(data: Path, user_id: uuid.UUID, gigabytes: float) -> int:
    """Notes of one owner until the database file holds ``gigabytes`` GB; how many rows."""
    from bastion.clock import SystemClock
    from bastion.data.schema import Catalog, new_record_id
    from bastion.data.tables import DEFINITIONS_SELECT, parse_definitions, raw_definitions
    from bastion.db import open_database, transaction
    from bastion.security import token_bytes
    from bastion.settings import load_settings

    settings = load_settings(data)
    database = data / "bastion.db"
    db = open_database(settings.sqlalchemy_url)
    rows = 0
    try:
        catalog = Catalog.build(parse_definitions(raw_definitions(await db.all(DEFINITIONS_SELECT))))
        insert = catalog.collections["notes"].insert
        now = SystemClock().now()
        while database.stat().st_size < gigabytes * 1e9:
            batch = []
            for i in range(rows, rows + 2000):
                record_id = new_record_id(int(now.timestamp() * 1000) + i, token_bytes(10))
                body = f"<p>{token_bytes(3000).hex()}</p>"
                batch.append({"id": record_id, "owner": user_id, "created_at": now, "updated_at": now,
                              "title": f"fill {i}", "body": body, "priority": 1 + i % 5, "secret": None})  # fmt: skip
            async with transaction(db) as tx:
                await tx.execute_many(insert, batch)
            rows += len(batch)
    finally:
        await db.close()
    return rows


async def load(url: str, token: str, rate: int, seconds: float, stop: Path) -> list[tuple[float, float, int]]:
    """Open-loop creates: (scheduled wall time, latency in ms from it, status) for each."""
    body = json.dumps({"title": "during backup", "body": "<p>x</p>", "secret": "s", "priority": 2})
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    results: list[tuple[float, float, int]] = []
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def one(at_wall: float, at: float) -> None:
            try:
                response = await client.post(url, content=body, headers=headers)
                status = response.status_code
            except httpx.HTTPError:
                status = 0
            results.append((at_wall, 1000 * (time.monotonic() - at), status))

        start, start_wall = time.monotonic() + 0.1, time.time() + 0.1
        tasks = []
        i = 0
        while i < rate * seconds and not (i % rate == 0 and _stopped(stop)):
            at = start + i / rate
            # Always yield, even when behind: a loop that never awaits would queue every
            # request of the run at once and measure its own backlog.
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            tasks.append(asyncio.create_task(one(start_wall + i / rate, at)))
            i += 1
        await asyncio.gather(*tasks)
    return results


def _stopped(stop: Path) -> bool:
    return stop.exists()


def p99(latencies: list[float]) -> float:
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] if ordered else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description="scenario 9's load generator")
    parser.add_argument("command", choices=["load"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--rate", type=int, default=RATE)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--stop", type=Path, required=True, help="stop early once this file exists")
    args = parser.parse_args()
    results = asyncio.run(load(args.url, args.token, args.rate, args.seconds, args.stop))
    sys.stdout.write(json.dumps(results) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
