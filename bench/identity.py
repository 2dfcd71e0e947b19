"""Scenarios 1 and 2 of BENCHMARKS.md for Bastion alone: password logins/s
against the Argon2id bound, and refresh-token rotations/s.

    .venv/bin/python bench/identity.py [--seconds 10]

Starts `bastion serve` over plain HTTP on loopback in a temporary data dir
(the TLS handshake is not what these scenarios measure), pins it to core 0
and the load generator to core 1 where `taskset` exists.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bastion.security import Argon2Params, PasswordHasher

ROOT = Path(__file__).resolve().parent
EMAIL, PASSWORD = "bench@example.com", "tangerine-orbit-cascade-91"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pinned(core: int, argv: list[str]) -> list[str]:
    return ["taskset", "-c", str(core), *argv] if shutil.which("taskset") else argv


def argon2_bound(samples: int = 20) -> tuple[float, float]:
    hasher = PasswordHasher(Argon2Params())
    encoded = hasher.hash(PASSWORD)
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        hasher.verify(encoded, PASSWORD)
        times.append(time.perf_counter() - start)
    t_verify = statistics.median(times)
    return t_verify, (os.cpu_count() or 1) / t_verify


def wrk_login(port: int, seconds: int) -> dict[str, float]:
    env = {**os.environ, "BENCH_EMAIL": EMAIL, "BENCH_PASSWORD": PASSWORD}
    argv = [
        "wrk",
        "-t1",
        "-c4",
        f"-d{seconds}s",
        "-s",
        str(ROOT / "lua" / "login.lua"),
        f"http://127.0.0.1:{port}/api/v1/auth/login",
    ]
    output = subprocess.run(pinned(1, argv), env=env, capture_output=True, text=True, check=True).stdout
    rps = float(next(line.split()[1] for line in output.splitlines() if line.startswith("Requests/sec")))
    stats = dict(item.split("=") for item in output.splitlines()[-1].split())
    return {
        "rps": rps,
        "p50_ms": float(stats["p50_ms"]),
        "p99_ms": float(stats["p99_ms"]),
        "non2xx": float(stats["non2xx"]),
    }


async def refresh_chains(port: int, seconds: int, chains: int = 4) -> dict[str, float]:
    latencies: list[float] = []
    failures = 0
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:

        async def chain() -> None:
            nonlocal failures
            login = await client.post("/api/v1/auth/login", json={"email": EMAIL, "password": PASSWORD})
            assert login.status_code == 200, login.text
            token = login.json()["refresh_token"]
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                start = time.perf_counter()
                response = await client.post("/api/v1/auth/refresh", json={"refresh_token": token})
                latencies.append(time.perf_counter() - start)
                if response.status_code != 200:
                    failures += 1
                    return
                token = response.json()["refresh_token"]

        start = time.monotonic()
        await asyncio.gather(*(chain() for _ in range(chains)))
        elapsed = time.monotonic() - start
    latencies.sort()
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)],
        "non2xx": failures,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    bastion = str(Path(sys.executable).with_name("bastion"))
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
        # The throttles would (rightly) stop a load generator at its first few requests.
        env |= {
            "BASTION_DATA_DIR": str(data),
            "BASTION_AUTH__LOGIN_RATE_PER_IP": "1000000/minute",
            "BASTION_AUTH__LOGIN_RATE_PER_ACCOUNT": "1000000/minute",
            "BASTION_AUTH__REFRESH_RATE_PER_IP": "1000000/minute",
            "BASTION_LOG__LEVEL": "warning",
        }
        subprocess.run([bastion, "init"], env=env, check=True, capture_output=True)
        subprocess.run(
            [bastion, "user", "create", "--email", EMAIL, "--password-stdin", "--verified"],
            env=env,
            input=PASSWORD + "\n",
            text=True,
            check=True,
            capture_output=True,
        )
        port = free_port()
        server = subprocess.Popen(
            pinned(0, [bastion, "serve", "--http", "--port", str(port)]),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            for _ in range(100):
                try:
                    httpx.get(f"http://127.0.0.1:{port}/healthz")
                    break
                except httpx.HTTPError:
                    time.sleep(0.1)
            t_verify, bound = argon2_bound()
            login = wrk_login(port, args.seconds)
            refresh = asyncio.run(refresh_chains(port, args.seconds))
        finally:
            server.terminate()
            server.wait()
    result = {
        "machine": {"cores": os.cpu_count()},
        "argon2": {"t_verify_ms": 1000 * t_verify, "bound_per_s": bound},
        "scenario_1_login": {**login, "ratio_to_hash_bound": login["rps"] / bound},
        "scenario_2_refresh": refresh,
    }
    print(f"{'scenario':<28}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'ratio':>10}")
    print(f"{'argon2id bound (cores/t)':<28}{bound:>10.1f}{'':>10}{'':>10}{'':>10}")
    for name, figures in (("1 password login (c=4)", login), ("2 refresh rotation (4 chains)", refresh)):
        ratio = f"{figures['rps'] / bound:>10.2f}" if figures is login else ""
        print(f"{name:<28}{figures['rps']:>10.1f}{figures['p50_ms']:>10.1f}{figures['p99_ms']:>10.1f}{ratio}")
    out = ROOT / "results" / f"identity-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
