"""Start, memory and stop of `bastion serve`, per process.

    .venv/bin/python bench/memory.py [--rows 100000] [--requests 3000] [--workers 1]

Sets Bastion up as bench/run.py does (`bastion init`, one verified user,
`bastion serve --http --workers 1` on loopback in a temporary data dir, the
admin listener on its own port), optionally seeds ``--rows`` notes with
bench/data.py's ``seed``, then measures:

- **start**: seconds from launching `bastion serve` to the first 200 from
  ``/healthz`` (polled every 10 ms), on the migrated data directory;
- **memory after warm-up**: ``--requests`` requests (logins, creates, reads,
  filtered lists, ``/healthz``) from 4 threads, then, per process of the
  server's tree, RSS (``VmRSS``), PSS and USS (private clean + private dirty)
  from ``/proc/<pid>/smaps_rollup``. RSS counts shared pages (the
  interpreter, libraries) once per process; PSS splits them among the
  processes sharing them, so the PSS column adds up to what the tree costs;
- **stop**: seconds from SIGTERM to the supervisor's exit, idle, and with
  requests in flight (a create loop from 4 threads while it stops).

Prints one table and writes bench/results/memory-<time>.json. Linux only
(``/proc``). Start it twice to see a warm page cache; the first start after
boot reads the interpreter and libraries from disk.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from identity import EMAIL, PASSWORD
from run import NOTE, Bastion, descendants

ROOT = Path(__file__).resolve().parent
# CPU seconds the server's tree had used when /healthz first answered, per start.
CPU_AT_HEALTHZ: list[float] = []


def role(cmdline: list[str], depth: int) -> str:
    """What a process of the tree is, from its command line and depth."""
    if depth == 0:
        return "supervisor (bastion serve)"
    if depth >= 2:  # below a listener: granian's worker
        return "granian worker"
    if "listener" in cmdline:
        name = cmdline[cmdline.index("listener") + 1]
        return f"{name} listener" + (" (uvicorn)" if name == "admin" else " (granian)")
    if "serve" in cmdline:  # forked from `bastion serve`, so it has its command line
        return "public listener (granian)"
    return " ".join(cmdline)[:60]


def process_memory(pid: int) -> dict[str, Any]:
    """RSS, PSS and USS in KiB, thread count and role of one process."""
    proc = Path("/proc") / str(pid)
    status = dict(line.split(":", 1) for line in (proc / "status").read_text().splitlines() if ":" in line)
    rollup: dict[str, int] = {}
    for line in (proc / "smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":", 1)
        rollup[key] = int(value.split()[0])
    cmdline = [part for part in (proc / "cmdline").read_bytes().decode().split("\0") if part]
    return {
        "pid": pid,
        "cmdline": cmdline,
        "rss_kib": int(status["VmRSS"].split()[0]),
        "pss_kib": rollup.get("Pss", 0),
        "uss_kib": rollup.get("Private_Clean", 0) + rollup.get("Private_Dirty", 0),
        "threads": int(status["Threads"]),
    }


def tree_memory(pid: int) -> list[dict[str, Any]]:
    parents = {pid: 0}
    rows = []
    for current in descendants(pid):
        try:
            row = process_memory(current)
            ppid = int((Path("/proc") / str(current) / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            continue
        depth = parents.get(ppid, -1) + 1 if current != pid else 0
        parents[current] = depth
        row["role"] = role(row["cmdline"], depth)
        rows.append(row)
    return rows


def tree_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) the tree has used: every live process's, plus the reaped children's of each."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for current in descendants(pid):
        try:
            fields = (Path("/proc") / str(current) / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # utime, stime, cutime, cstime (fields 14-17 of proc(5); 0-based 11-14 after the name)
        total += sum(int(value) for value in fields[11:15])
    return total / tick


def time_to_healthz(bastion: Bastion, env: dict[str, str], workers: int) -> tuple[subprocess.Popen[bytes], float]:
    argv = [bastion.exe, "serve", "--http", "--port", str(bastion.port), "--admin-port", str(bastion.admin_port),
            "--workers", str(workers)]  # fmt: skip
    started = time.monotonic()
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    with httpx.Client(timeout=2) as client:
        while True:
            try:
                if client.get(f"{bastion.base}/healthz").status_code == 200:
                    took = time.monotonic() - started
                    CPU_AT_HEALTHZ.append(tree_cpu_seconds(process.pid))
                    return process, took
            except httpx.HTTPError:
                pass
            if process.poll() is not None:
                raise RuntimeError(f"bastion serve exited {process.returncode}: {process.stderr.read()!r}")  # type: ignore[union-attr]
            if time.monotonic() - started > 60:
                raise RuntimeError("bastion serve did not answer /healthz within 60 s")
            time.sleep(0.01)


def warm_up(base: str, requests: int) -> dict[str, int]:
    """``requests`` requests of the benchmark's kinds from 4 threads; the count per status."""
    with httpx.Client(base_url=base, timeout=10) as client:
        tokens = client.post("/api/v1/auth/login", json={"email": EMAIL, "password": PASSWORD}).json()
        auth = {"Authorization": f"Bearer {tokens['access_token']}"}
        record = client.post("/api/v1/collections/notes/records", json=NOTE, headers=auth).json()["id"]
    statuses: dict[int, int] = {}
    lock = threading.Lock()

    def one_thread(share: int) -> None:
        with httpx.Client(base_url=base, timeout=10, headers=auth) as client:
            for i in range(share):
                kind = i % 10
                if kind == 0:
                    response = client.post("/api/v1/collections/notes/records", json=NOTE)
                elif kind < 5:
                    response = client.get(f"/api/v1/collections/notes/records/{record}")
                elif kind < 8:
                    response = client.get("/api/v1/collections/notes/records?priority.eq=3&limit=20")
                elif kind == 8:
                    response = client.get("/healthz")
                else:
                    response = client.get("/api/v1/me")
                with lock:
                    statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one_thread, [requests // 4] * 4))
    # A few logins too (the Argon2id path and its worker thread).
    with httpx.Client(base_url=base, timeout=10) as client:
        for _ in range(5):
            response = client.post("/api/v1/auth/login", json={"email": EMAIL, "password": PASSWORD})
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
    return statuses


def stop_seconds(process: subprocess.Popen[bytes]) -> float:
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)
    return time.monotonic() - started


def busy_stop(bastion: Bastion, process: subprocess.Popen[bytes]) -> dict[str, Any]:
    """SIGTERM while 4 threads create records; how long the stop took and how the requests ended."""
    with httpx.Client(base_url=bastion.base, timeout=10) as client:
        tokens = client.post("/api/v1/auth/login", json={"email": EMAIL, "password": PASSWORD}).json()
    auth = {"Authorization": f"Bearer {tokens['access_token']}"}
    outcomes: dict[str, int] = {}
    lock = threading.Lock()
    stopping = threading.Event()

    def one_thread() -> None:
        with httpx.Client(base_url=bastion.base, timeout=10, headers=auth) as client:
            while True:
                try:
                    outcome = str(client.post("/api/v1/collections/notes/records", json=NOTE).status_code)
                except httpx.HTTPError as exc:
                    outcome = type(exc).__name__
                with lock:
                    outcomes[outcome] = outcomes.get(outcome, 0) + 1
                if stopping.is_set() and outcome != "201":
                    return

    threads = [threading.Thread(target=one_thread) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(1)
    stopping.set()
    seconds = stop_seconds(process)
    for thread in threads:
        thread.join()
    return {"seconds": seconds, "outcomes": outcomes}


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| process | pid | threads | RSS MiB | PSS MiB | USS MiB |", "|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['role']} | {row['pid']} | {row['threads']} | {row['rss_kib'] / 1024:.1f} | "
                     f"{row['pss_kib'] / 1024:.1f} | {row['uss_kib'] / 1024:.1f} |")  # fmt: skip
    total = {key: sum(row[key] for row in rows) / 1024 for key in ("rss_kib", "pss_kib", "uss_kib")}
    lines.append(f"| **tree** | | {sum(row['threads'] for row in rows)} | {total['rss_kib']:.1f} | "
                 f"{total['pss_kib']:.1f} | {total['uss_kib']:.1f} |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=0, help="notes to seed before the start is timed")
    parser.add_argument("--requests", type=int, default=3000, help="warm-up requests")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--admin", action="store_true", help="also send admin requests, which start the admin listener")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bastion = Bastion(Path(tmp) / "data")
        bastion.prepare()
        env = bastion.env(raised=True)
        if args.rows:
            # The seed needs the user's id: one start, one login.
            process, _ = time_to_healthz(bastion, env, args.workers)
            bastion.login()
            stop_seconds(process)
            from data import seed  # only with --rows: it loads the database layer

            asyncio.run(seed(bastion.data, uuid.UUID(bastion.user_id), args.rows))
        CPU_AT_HEALTHZ.clear()
        process, first = time_to_healthz(bastion, env, args.workers)
        idle = stop_seconds(process)
        process, second = time_to_healthz(bastion, env, args.workers)
        statuses = warm_up(bastion.base, args.requests)
        if args.admin:
            admin = f"https://127.0.0.1:{bastion.admin_port}/admin/api/v1/users"
            with httpx.Client(verify=str(bastion.data / "tls" / "ca.pem"), timeout=30) as client:
                for _ in range(50):
                    status = client.get(admin.replace("127.0.0.1", "localhost")).status_code
                    statuses[status] = statuses.get(status, 0) + 1
        time.sleep(1)  # let freed memory settle
        rows = tree_memory(process.pid)
        busy = busy_stop(bastion, process)
    result = {
        "rows": args.rows,
        "workers": args.workers,
        "admin_used": args.admin,
        "start_seconds": [round(first, 3), round(second, 3)],
        "start_cpu_seconds": [round(cpu, 3) for cpu in CPU_AT_HEALTHZ],
        "idle_stop_seconds": round(idle, 3),
        "busy_stop": busy,
        "warm_up_statuses": statuses,
        "processes": rows,
    }
    print(table(rows))
    cpu = ", ".join(f"{value:.2f}" for value in CPU_AT_HEALTHZ)
    print(
        f"\nstart to /healthz: {first:.2f} s, then {second:.2f} s ({args.rows} seeded rows); CPU used by then: {cpu} s"
    )
    print(f"SIGTERM to exit: idle {idle:.2f} s; busy {busy['seconds']:.2f} s, requests ended {busy['outcomes']}")
    print(f"warm-up statuses: {statuses}")
    out = ROOT / "results" / f"memory-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out.relative_to(ROOT.parent)}")


if __name__ == "__main__":
    sys.exit(main())
