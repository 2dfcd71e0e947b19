"""Every benchmark of BENCHMARKS.md in one run: Bastion and PocketBase side by
side, with the bare-framework ceiling, the Argon2id bound and the fsync bound
measured on the same machine in the same run.

    .venv/bin/python bench/run.py [--seconds 10] [--scenarios 1,2,3,4,5,6,8] [--rows 100000] [--soak [SECONDS]]

Both servers listen on 127.0.0.1 only, over plain HTTP (TLS is not what these
scenarios measure), each in a temporary data dir that is deleted afterwards.
Where `taskset` exists and there are two cores, the server under test is
pinned to core 0 and wrk to core 1. Prints a table of every measurement,
then one summary row per target of BENCHMARKS.md (issue 12's table and
scenario 1) with its ratio and ok/MISS, and writes
bench/results/run-<time>.json. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from data import fsync_bound, seed
from identity import EMAIL, PASSWORD, argon2_bound, free_port
from pocketbase import PocketBase, wait_until_up

from bastion.settings import AuthSettings, OAuthSettings

ROOT = Path(__file__).resolve().parent
LUA = ROOT / "lua"
CAN_PIN = shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
SERVER_CORES = 1 if CAN_PIN else os.cpu_count() or 1
NAMES = {
    1: "1 password login, c=4",
    2: "2 refresh rotation, 4 chains",
    3: "3 read one record, c=8",
    4: "4 validated create, c=8",
    5: "5 list 20 filtered, c=8",
    6: "6 wrong-password flood",
    7: "7 soak: read + list + create",
    8: "8 OAuth token grants",
    9: "9 backup of 1 GB under 200 creates/s",
}
# The names of issue 12's table of targets.
SHORT = {
    1: "1 login",
    2: "2 refresh",
    3: "3 read",
    4: "4 create",
    5: "5 list",
    6: "6 under attack",
    7: "7 soak",
    8: "8 OAuth",
    9: "9 backup",
}
# Creates (4) run after the list (5), so both lists see exactly the seeded rows;
# the soak (7) before the flood (6), whose wrong passwords lock the account.
# The backup (9) last: it fills the database to a gigabyte.
ORDER = (1, 2, 3, 5, 4, 8, 7, 6, 9)
# Every throttle of the auth section, raised so the load generator measures the
# work and not the limiter (scenario 6 restarts Bastion with the defaults).
RAISED = {
    f"BASTION_AUTH__{name.upper()}": "1000000/minute"
    for name in AuthSettings.model_fields
    if name.endswith(("_rate_per_ip", "_rate_per_account", "_rate"))
} | {
    f"BASTION_OAUTH__{name.upper()}": "1000000/minute"
    for name in OAuthSettings.model_fields
    if name.endswith("_rate_per_ip")
}
SOAK_QUICK = 120  # `--soak` without a value: a quick check, not the 10-minute soak


@dataclass(frozen=True)
class Target:
    """One target of BENCHMARKS.md (issue 12's table and scenario 1), judged on Bastion's figures."""

    key: str
    scenario: int
    goal: str  # as the summary states it
    what: str  # after the value in a row of the table: "2.1 x PocketBase"
    bound: float
    upper: bool = False  # True when the target is a ceiling
    unit: str = "ratio"  # how the summary prints a value: ratio, x, percent, growth, MiB, count

    def met(self, value: float) -> bool:
        return value <= self.bound if self.upper else value >= self.bound

    def show(self, value: float) -> str:
        formats = {"x": "{:.2f}" + TIMES, "percent": "{:.2%}", "growth": "{:+.2%}",
                   "MiB": "{:.0f} MiB", "count": "{:.0f}", "per_s": "{:,.0f}/s", "ms": "{:.1f} ms",
                   "s": "{:.1f} s"}  # fmt: skip
        return formats.get(self.unit, "{:.3g}").format(value)


GE, LE, TIMES = "\N{GREATER-THAN OR EQUAL TO}", "\N{LESS-THAN OR EQUAL TO}", "\N{MULTIPLICATION SIGN}"
TARGETS = (
    Target("login_hash", 1, f"{GE} 0.9 of the hash bound", "of the hash bound", 0.9),
    Target("login_pb", 1, f"{GE} 1.0{TIMES} PocketBase", "x PocketBase", 1.0, unit="x"),
    Target("refresh_pb", 2, f"{GE} 0.5{TIMES} PocketBase", "x PocketBase", 0.5, unit="x"),
    Target("read_pb", 3, f"{GE} 2.0{TIMES} PocketBase", "x PocketBase", 2.0, unit="x"),
    Target("read_bare", 3, f"{GE} 0.5 of the bare framework", "of bare framework", 0.5),
    Target("create_pb", 4, f"{GE} 1.5{TIMES} PocketBase", "x PocketBase", 1.5, unit="x"),
    Target("create_fsync", 4, f"{GE} 0.5 of the fsync bound", "of fsync bound", 0.5),
    Target("list_pb", 5, f"{GE} 1.5{TIMES} PocketBase", "x PocketBase", 1.5, unit="x"),
    Target("flood_reads", 6, f"reads under flood {GE} 0.8 of unloaded", "of unloaded", 0.8),
    Target(
        "flood_cost", 6, f"a throttled attempt {LE} 1 % of one hash", "of one Argon2id verify", 0.01, True, "percent"
    ),
    Target("soak_rss", 7, f"whole tree {LE} 150 MiB after warm-up", "MiB after warm-up", 150, True, "MiB"),
    Target("soak_growth", 7, f"growth {LE} 5 % after warm-up", "RSS growth after warm-up", 0.05, True, "growth"),
    Target("soak_5xx", 7, "zero 5xx", "5xx", 0, True, "count"),
    # Issue 13: on one core, EdDSA tokens; 8x and 4x Keycloak's published 120/vCPU.
    Target("cc_rps", 8, f"{GE} 1,000 client-credentials grants/s (EdDSA)", "grants/s", 1000, unit="per_s"),
    Target("cc_p99", 8, "client credentials p99 < 50 ms (EdDSA)", "ms p99", 50, True, "ms"),
    Target("refresh_grant_rps", 8, f"{GE} 500 refresh grants/s (EdDSA)", "grants/s", 500, unit="per_s"),
    Target("refresh_grant_p99", 8, "refresh p99 < 50 ms (EdDSA)", "ms p99", 50, True, "ms"),
    # Issue 15: the backup of a 1 GB SQLite database while creates run at 200/s.
    Target("backup_p99", 9, f"create p99 during the backup {LE} 2{TIMES} unloaded", "x unloaded p99", 2.0, True, "x"),
    Target("backup_seconds", 9, "backup + encrypt + verify < 60 s", "s backup + verify", 60, True, "s"),
    Target("restore_seconds", 9, "restore < 60 s", "s restore", 60, True, "s"),
)
BY_KEY = {target.key: target for target in TARGETS}
NOTE = {"title": "bench", "body": "<p>hi <b>there</b></p>", "secret": "s3", "priority": 3}
WRONG = "not-the-password-at-all-42"


def pin(core: int) -> list[str]:
    return ["taskset", "-c", str(core)] if CAN_PIN else []


# --- wrk ---------------------------------------------------------------------


def start_wrk(
    url: str, seconds: float, script: str, connections: int, threads: int = 1, **env: str
) -> subprocess.Popen[str]:
    argv = [
        *pin(1),
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA / script),
        url,
    ]
    full_env = {**os.environ, "BENCH_LUA": str(LUA), **{f"BENCH_{k.upper()}": v for k, v in env.items()}}
    return subprocess.Popen(argv, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish_wrk(process: subprocess.Popen[str]) -> dict[str, Any]:
    stdout, stderr = process.communicate()
    line = next((line for line in stdout.splitlines() if line.startswith("BENCH ")), None)
    if process.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed: {stderr.strip() or stdout.strip()}")
    raw = json.loads(line.removeprefix("BENCH "))
    statuses = {int(k): v for k, v in raw["statuses"].items()}
    return {
        "rps": raw["requests"] / raw["seconds"],
        "p50_ms": raw["p50_ms"],
        "p99_ms": raw["p99_ms"],
        "requests": raw["requests"],
        "statuses": statuses,
        "non2xx": sum(n for status, n in statuses.items() if not 200 <= status < 300),
        "socket_errors": raw["socket_errors"],
    }


def wrk(
    url: str, seconds: float, script: str = "call.lua", connections: int = 8, threads: int = 1, **env: str
) -> dict[str, Any]:
    return finish_wrk(start_wrk(url, seconds, script, connections, threads, **env))


# --- the systems ---------------------------------------------------------------


class Bastion:
    name = "Bastion"

    def __init__(self, data: Path, settings: dict[str, str] | None = None) -> None:
        self.data = data
        # BASTION_* variables of an A/B run (--setting), on top of the harness's own.
        self.settings = settings or {}
        self.port, self.admin_port = free_port(), free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.exe = str(Path(sys.executable).with_name("bastion"))
        self.process: subprocess.Popen[bytes] | None = None
        self.user_id = ""

    def env(self, *, raised: bool) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
        env |= {
            "BASTION_DATA_DIR": str(self.data),
            "BASTION_LOG__LEVEL": "warning",
            "BASTION_SERVER__TRUSTED_PROXIES": '["127.0.0.1/32"]',
            **self.settings,
        }
        return env | RAISED if raised else env

    def prepare(self) -> None:
        env = self.env(raised=True)
        subprocess.run([self.exe, "init"], env=env, check=True, capture_output=True)
        subprocess.run(
            [self.exe, "user", "create", "--email", EMAIL, "--password-stdin", "--verified"],
            env=env,
            input=PASSWORD + "\n",
            text=True,
            check=True,
            capture_output=True,
        )

    def start(self, *, raised: bool = True) -> None:
        argv = [
            *pin(0),
            self.exe,
            "serve",
            "--http",
            "--port",
            str(self.port),
            "--admin-port",
            str(self.admin_port),
            "--workers",
            "1",
        ]
        self.process = subprocess.Popen(
            argv, env=self.env(raised=raised), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_until_up(f"{self.base}/healthz")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait()

    def login(self) -> dict[str, str]:
        response = httpx.post(f"{self.base}/api/v1/auth/login", json={"email": EMAIL, "password": PASSWORD})
        response.raise_for_status()
        tokens: dict[str, str] = response.json()
        if not self.user_id:
            me = httpx.get(f"{self.base}/api/v1/me", headers={"Authorization": f"Bearer {tokens['access_token']}"})
            self.user_id = me.json()["id"]
        return tokens


# --- results -------------------------------------------------------------------


@dataclass
class Row:
    system: str
    scenario: str
    figures: dict[str, Any] = field(default_factory=dict)
    # (what, measured, target, True when the target is an upper bound)
    ratios: list[tuple[str, float, float, bool]] = field(default_factory=list)
    note: str = ""

    def ratio_text(self) -> str:
        parts = []
        for what, value, target, upper in self.ratios:
            met = value <= target if upper else value >= target
            shown = f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"
            parts.append(f"{shown} {what} (target {'<=' if upper else '>='} {target:g}) {'ok' if met else 'MISS'}")
        return "; ".join(parts) or self.note


class Bench:
    def __init__(
        self,
        seconds: int,
        rows: int,
        tmp: Path,
        soak: int = 600,
        backup_gb: float = 1.0,
        *,
        settings: dict[str, str] | None = None,
    ) -> None:
        self.seconds, self.rows, self.tmp, self.soak, self.backup_gb = seconds, rows, tmp, soak, backup_gb
        self.bastion = Bastion(tmp / "bastion", settings)
        self.pb = PocketBase(tmp / "pocketbase", free_port(), pin(0))
        self.results: list[Row] = []
        self.bounds: dict[str, Any] = {}
        self.notes: list[str] = []
        self.by_key: dict[tuple[str, int], dict[str, Any]] = {}
        self.records_api = True
        self.record_ids: dict[str, str] = {}
        # target key -> (Bastion's value, the figures it comes from)
        self.verdicts: dict[str, tuple[float, str]] = {}

    def judge(self, row: Row, key: str, value: float, detail: str) -> None:
        """Bastion's ``value`` for one target, shown on its row and kept for the summary."""
        target = BY_KEY[key]
        row.ratios.append((target.what, value, target.bound, target.upper))
        self.verdicts[key] = (value, detail)

    def add(self, row: Row, scenario: int | None = None) -> Row:
        self.results.append(row)
        if scenario is not None:
            self.by_key[(row.system, scenario)] = row.figures
        non2xx = row.figures.get("non2xx", 0)
        if not row.note and non2xx and non2xx > 0.01 * row.figures["requests"]:
            row.note = f"{non2xx} non-2xx of {row.figures['requests']} {row.figures['statuses']}"
        print(f"  {row.system:<14}{row.scenario:<36}{row.figures.get('rps', 0):>10.1f}  {row.ratio_text()}", flush=True)
        return row

    # --- bounds --------------------------------------------------------------

    def measure_bounds(self) -> None:
        t_verify, _ = argon2_bound()
        self.bounds["argon2id_t_verify_ms"] = 1000 * t_verify
        self.bounds["argon2id_bound_per_s"] = SERVER_CORES / t_verify
        self.add(
            Row(
                "bound",
                f"Argon2id: {SERVER_CORES} core / t_verify",
                {"rps": SERVER_CORES / t_verify},
                note=f"t_verify {1000 * t_verify:.1f} ms (m=19 MiB, t=2, p=1)",
            )
        )
        self.bounds["fsync_bound_per_s"] = fsync_bound(self.tmp / "fsync.db")
        self.add(
            Row(
                "bound",
                "fsync: durable 1-row commits/s",
                {"rps": self.bounds["fsync_bound_per_s"]},
                note="SQLite WAL, synchronous=FULL",
            )
        )
        port = free_port()
        granian = str(Path(sys.executable).with_name("granian"))
        bare = subprocess.Popen(
            [
                *pin(0),
                granian,
                "--interface",
                "asgi",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
                "--log-level",
                "warning",
                "bare:app",
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_until_up(f"http://127.0.0.1:{port}/record")
            figures = wrk(f"http://127.0.0.1:{port}/record", self.seconds)
        finally:
            bare.terminate()
            bare.wait()
        self.bounds["bare_framework"] = figures
        self.add(Row("bound", "bare framework GET, c=8", figures, note="granian + plain Starlette JSON, 1 worker"))

    # --- set-up ----------------------------------------------------------------

    def start(self, scenarios: list[int]) -> None:
        self.bastion.prepare()
        self.bastion.start()
        if not set(scenarios) - {8, 9}:
            # Scenario 8 is Bastion alone (its anchor, Keycloak, is a published figure); 9 too (a backup).
            return
        self.pb.start()
        self.pb.define(EMAIL, PASSWORD)
        token = self.bastion.login()["access_token"]
        response = httpx.post(
            f"{self.bastion.base}/api/v1/collections/notes/records",
            json=NOTE,
            headers={"Authorization": f"Bearer {token}"},
        )
        if response.status_code == 201:
            self.record_ids["Bastion"] = response.json()["id"]
        else:
            self.records_api = False
            self.notes.append(f"Bastion's records API answered {response.status_code}: scenarios 3-5 not available")
        self.record_ids["PocketBase"] = self.pb.post(
            "/api/collections/notes/records",
            json.loads(self.pb.note_body()),
            {"Authorization": self.pb.login(EMAIL, PASSWORD)},
        )["id"]
        if 5 in scenarios:
            self.seed()

    def seed(self) -> None:
        if self.records_api:
            start = time.monotonic()
            asyncio.run(seed(self.bastion.data, uuid.UUID(self.bastion.user_id), self.rows))
            self.notes.append(
                f"Bastion: {self.rows} notes inserted straight into its SQLite table (the records API has no bulk "
                f"route), encrypted as the API would, in {time.monotonic() - start:.1f} s"
            )
        took = self.pb.seed(self.rows)
        self.notes.append(f"PocketBase: {self.rows} notes through its /api/batch (500 per request), {took:.1f} s")

    def stop(self) -> None:
        self.bastion.stop()
        self.pb.stop()

    def s8(self) -> None:
        """OAuth token endpoint: client credentials (c=8) and refresh rotation (4 chains), EdDSA then RS256."""
        from oauth import prepare

        start = time.monotonic()
        clients = prepare(self.bastion.data, self.bastion.env(raised=True), EMAIL, PASSWORD, chains=4)
        self.notes.append(
            f"scenario 8: 2 clients and 4 refresh chains each through the hosted pages, in process, "
            f"{time.monotonic() - start:.1f} s; client_secret_basic; refresh scope 'openid offline_access me:read' "
            "(each refresh returns a new ID token too), client credentials scope 'me:read'"
        )
        url = f"{self.bastion.base}/oauth2/token"
        for client in clients:
            cc = self.add(
                Row(f"Bastion {client.alg}", "8 client credentials, c=8",
                    wrk(url, self.seconds, "grant.lua", 8, 1, grant="client_credentials", auth=client.basic,
                        scope="me:read")),
            )  # fmt: skip
            refresh = self.add(
                Row(f"Bastion {client.alg}", "8 refresh grant, 4 chains",
                    wrk(url, self.seconds, "grant.lua", 4, 4, grant="refresh_token", auth=client.basic,
                        tokens=",".join(client.refresh_tokens))),
            )  # fmt: skip
            if client.alg == "EdDSA":
                for row, rps, p99 in ((cc, "cc_rps", "cc_p99"), (refresh, "refresh_grant_rps", "refresh_grant_p99")):
                    f = row.figures
                    self.judge(row, rps, f["rps"], f"{f['rps']:.0f} grants/s, p50 {f['p50_ms']:.1f} ms")
                    self.judge(row, p99, f["p99_ms"], f"p99 {f['p99_ms']:.1f} ms")
            else:
                for row in (cc, refresh):
                    row.note = f"RS256, beside EdDSA: p50 {row.figures['p50_ms']:.1f} ms"

    # --- scenarios -------------------------------------------------------------

    def creates(self, url: str, token: str, seconds: float, stop: Path) -> subprocess.Popen[str]:
        """Scenario 9's open-loop creates at 200/s (bench/backup.py), pinned with the client."""
        argv = [*pin(1), sys.executable, str(ROOT / "backup.py"), "load", "--url", url, "--token", token]
        argv += ["--seconds", str(seconds), "--stop", str(stop)]
        return subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)

    def timed(self, argv: list[str], env: dict[str, str]) -> tuple[float, str]:
        started = time.monotonic()
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[-4:])} failed: {done.stderr.strip()}")
        return time.monotonic() - started, done.stdout

    def s9(self) -> None:
        """A backup of a 1 GB SQLite database while creates run at 200/s; then verify, then restore."""
        from backup import RATE, fill, p99

        from bastion.security.age import new_identity

        data, exe = self.bastion.data, self.bastion.exe
        self.bastion.login()  # the user's id, for the rows
        started = time.monotonic()
        rows = asyncio.run(fill(data, uuid.UUID(self.bastion.user_id), self.backup_gb))
        size = (data / "bastion.db").stat().st_size
        self.notes.append(
            f"scenario 9: {rows} notes of ~6 KB ({size / 1e9:.2f} GB database) inserted straight into the table "
            f"in {time.monotonic() - started:.0f} s; the backup command pinned to the client's core"
        )
        identity, recipient = new_identity()
        identity_file = self.tmp / "backup-identity.txt"
        identity_file.write_text(identity + "\n")
        identity_file.chmod(0o600)
        env = self.bastion.env(raised=True) | {"BASTION_BACKUPS__RECIPIENTS": json.dumps([recipient])}
        # An API key, as the soak: no access token expires during a slow run.
        created = httpx.post(
            f"{self.bastion.base}/api/v1/me/api-keys",
            json={"name": "backup-bench", "scopes": ["records:*"]},
            headers={"Authorization": f"Bearer {self.bastion.login()['access_token']}"},
        )
        created.raise_for_status()
        token = created.json()["key"]
        url = f"{self.bastion.base}/api/v1/collections/notes/records"
        never = self.tmp / "never"
        out, _ = self.creates(url, token, 10, never).communicate()
        alone = [(lat, status) for _, lat, status in json.loads(out)]
        unloaded = p99([lat for lat, _ in alone])
        self.add(Row("Bastion", f"9 creates at {RATE}/s, no backup", {"rps": RATE, "p99_ms": unloaded,
                     "requests": len(alone), "non2xx": sum(s != 201 for _, s in alone),
                     "statuses": statuses(alone)}))  # fmt: skip

        stop = self.tmp / "stop"
        load = self.creates(url, token, 600, stop)
        time.sleep(3)
        began = time.time()
        create_s, stdout = self.timed([*pin(1), exe, "backup", "create"], env)
        ended = time.time()
        time.sleep(2)
        stop.touch()
        out, _ = load.communicate()
        during = [(lat, status) for at, lat, status in json.loads(out) if began <= at <= ended]
        backup_file = Path(stdout.strip().splitlines()[-1])
        loaded = p99([lat for lat, _ in during])
        row = self.add(Row("Bastion", f"9 creates at {RATE}/s during the backup", {"rps": RATE, "p99_ms": loaded,
                           "requests": len(during), "non2xx": sum(s != 201 for _, s in during),
                           "statuses": statuses(during),
                           "backup_seconds": create_s, "backup_bytes": backup_file.stat().st_size}))  # fmt: skip
        self.judge(row, "backup_p99", loaded / unloaded, f"p99 {loaded:.1f} ms vs {unloaded:.1f} ms unloaded")

        verify_s, _ = self.timed([exe, "backup", "verify", str(backup_file), "--identity", str(identity_file)], env)
        row = self.add(Row("Bastion", "9 backup + encrypt + verify", {"create_s": create_s, "verify_s": verify_s}))
        detail = f"create {create_s:.1f} s + verify {verify_s:.1f} s ({backup_file.stat().st_size / 1e9:.2f} GB file)"
        self.judge(row, "backup_seconds", create_s + verify_s, detail)

        keys = self.tmp / "public-keys.json"
        self.timed([exe, "keys", "export-public", "--out", str(keys)], env)
        restore = [exe, "backup", "restore", str(backup_file), "--identity", str(identity_file)]
        restore_s, _ = self.timed([*restore, "--data-dir", str(self.tmp / "restored"), "--key", str(keys)], env)
        row = self.add(Row("Bastion", "9 restore", {"restore_s": restore_s}))
        self.judge(row, "restore_seconds", restore_s, f"{restore_s:.1f} s into a new data dir (same disk)")

    def s1(self) -> None:
        bastion = self.add(
            Row(
                "Bastion",
                NAMES[1],
                wrk(
                    f"{self.bastion.base}/api/v1/auth/login",
                    self.seconds,
                    connections=4,
                    method="POST",
                    body=json.dumps({"email": EMAIL, "password": PASSWORD}),
                ),
            ),
            1,
        )
        pb = wrk(
            f"{self.pb.base}/api/collections/users/auth-with-password",
            self.seconds,
            connections=4,
            method="POST",
            body=json.dumps({"identity": EMAIL, "password": PASSWORD}),
        )
        self.add(Row("PocketBase", NAMES[1], pb, note="bcrypt cost 10"), 1)
        ours, bound = bastion.figures["rps"], self.bounds["argon2id_bound_per_s"]
        self.judge(bastion, "login_hash", ours / bound, f"{ours:.1f} logins/s, bound {bound:.1f}/s")
        self.judge(bastion, "login_pb", ours / pb["rps"], f"{ours:.1f} vs {pb['rps']:.1f} logins/s")

    def s2(self) -> None:
        tokens = ",".join(self.bastion.login()["refresh_token"] for _ in range(4))
        bastion = self.add(
            Row(
                "Bastion",
                NAMES[2],
                wrk(
                    f"{self.bastion.base}/api/v1/auth/refresh",
                    self.seconds,
                    "chain.lua",
                    4,
                    4,
                    chain="bastion",
                    tokens=tokens,
                ),
            ),
            2,
        )
        tokens = ",".join(self.pb.login(EMAIL, PASSWORD) for _ in range(4))
        pb = wrk(
            f"{self.pb.base}/api/collections/users/auth-refresh",
            self.seconds,
            "chain.lua",
            4,
            4,
            chain="pocketbase",
            tokens=tokens,
        )
        self.add(Row("PocketBase", NAMES[2], pb, note="stateless: the old token stays valid"), 2)
        ours = bastion.figures["rps"]
        self.judge(bastion, "refresh_pb", ours / pb["rps"], f"{ours:.0f} vs {pb['rps']:.0f} refreshes/s")

    def bastion_notes(self, scenario: int, suffix: str, **env: str) -> Row | None:
        if not self.records_api:
            self.add(Row("Bastion", NAMES[scenario], note="not available (records API)"))
            return None
        token = self.bastion.login()["access_token"]
        url = f"{self.bastion.base}/api/v1/collections/notes/records{suffix}"
        return self.add(
            Row("Bastion", NAMES[scenario], wrk(url, self.seconds, auth=f"Bearer {token}", **env)), scenario
        )

    def pb_notes(self, scenario: int, suffix: str, note: str = "", **env: str) -> dict[str, Any]:
        url = f"{self.pb.base}/api/collections/notes/records{suffix}"
        figures = wrk(url, self.seconds, auth=self.pb.login(EMAIL, PASSWORD), **env)
        self.add(Row("PocketBase", NAMES[scenario], figures, note=note), scenario)
        return figures

    def s3(self) -> None:
        bastion = self.bastion_notes(3, f"/{self.record_ids.get('Bastion')}")
        pb = self.pb_notes(3, f"/{self.record_ids['PocketBase']}")
        if bastion:
            ours, bare = bastion.figures["rps"], self.bounds["bare_framework"]["rps"]
            self.judge(bastion, "read_pb", ours / pb["rps"], f"{ours:.0f} vs {pb['rps']:.0f} reads/s")
            self.judge(bastion, "read_bare", ours / bare, f"{ours:.0f} vs bare {bare:.0f} req/s")

    def s4(self) -> None:
        body = json.dumps(NOTE)
        bastion = self.bastion_notes(4, "", method="POST", body=body)
        pb = self.pb_notes(4, "", method="POST", body=self.pb.note_body())
        if bastion:
            ours, fsync = bastion.figures["rps"], self.bounds["fsync_bound_per_s"]
            self.judge(bastion, "create_pb", ours / pb["rps"], f"{ours:.0f} vs {pb['rps']:.0f} creates/s")
            self.judge(bastion, "create_fsync", ours / fsync, f"{ours:.0f} vs fsync bound {fsync:.0f}/s")

    def s5(self) -> None:
        bastion = self.bastion_notes(5, "?priority.eq=3&limit=20")
        pb = self.pb_notes(5, "?filter=priority%3D3&perPage=20&skipTotal=1", note="skipTotal=1")
        if bastion:
            ours = bastion.figures["rps"]
            self.judge(bastion, "list_pb", ours / pb["rps"], f"{ours:.0f} vs {pb['rps']:.0f} lists/s")

    def s6(self) -> None:
        """Legit reads alone, the flood alone, then both at once, for each system."""
        self.bastion.stop()
        self.bastion.start(raised=False)  # the shipped throttles, X-Forwarded-For from 127.0.0.1 believed
        self.notes.append("scenario 6: Bastion restarted with its default throttles and trusted_proxies=127.0.0.1/32")
        token = self.bastion.login()["access_token"]
        if self.records_api:
            read = f"{self.bastion.base}/api/v1/collections/notes/records/{self.record_ids['Bastion']}"
        else:
            read = f"{self.bastion.base}/api/v1/me"
        self.flood(
            "Bastion",
            read,
            f"Bearer {token}",
            login=f"{self.bastion.base}/api/v1/auth/login",
            body=json.dumps({"email": EMAIL, "password": WRONG}),
            one_hash_s=self.bounds["argon2id_t_verify_ms"] / 1000,
            what="of one Argon2id verify",
        )
        login = self.by_key.get(("PocketBase", 1))
        self.flood(
            "PocketBase",
            f"{self.pb.base}/api/collections/notes/records/{self.record_ids['PocketBase']}",
            self.pb.login(EMAIL, PASSWORD),
            login=f"{self.pb.base}/api/collections/users/auth-with-password",
            body=json.dumps({"identity": EMAIL, "password": WRONG}),
            one_hash_s=SERVER_CORES / login["rps"] if login else 0.0,
            what="of one PocketBase login (scenario 1)",
        )

    def flood(self, system: str, read: str, auth: str, *, login: str, body: str, one_hash_s: float, what: str) -> None:
        seconds = self.seconds
        alone = wrk(read, seconds, connections=4, auth=auth)
        self.add(Row(system, "6 legit reads alone, c=4", alone))
        flood = wrk(login, seconds, "flood.lua", connections=8, body=body)
        cost = SERVER_CORES / flood["rps"]
        note = f"statuses {answers(flood)}; {1000 * cost:.2f} ms of server core per attempt"
        row = self.add(Row(system, "6 flood alone, c=8, random XFF", flood, note=note))
        row.figures["cost_per_attempt_ms"] = 1000 * cost
        if system == "Bastion":
            detail = f"{1000 * cost:.3f} ms of server core per attempt, one verify {1000 * one_hash_s:.1f} ms"
            self.judge(row, "flood_cost", cost / one_hash_s, detail)
        elif one_hash_s:
            row.ratios = [(what, cost / one_hash_s, 0.01, True)]
        attack = start_wrk(login, seconds + 2, "flood.lua", 8, body=body)
        time.sleep(1)
        loaded = wrk(read, seconds, connections=4, auth=auth)
        under = finish_wrk(attack)
        row = Row(system, "6 legit reads under flood, c=4", loaded)
        if system == "Bastion":
            detail = f"{loaded['rps']:.0f} vs {alone['rps']:.0f} reads/s"
            self.judge(row, "flood_reads", loaded["rps"] / alone["rps"], detail)
        else:
            row.ratios = [("of unloaded", loaded["rps"] / alone["rps"], 0.8, False)]
        self.add(row)
        self.add(Row(system, "6 the flood meanwhile, c=8", under, note=f"statuses {answers(under)}"))

    def s7(self) -> None:
        """Soak: reads, lists and creates at once for ``--soak`` seconds (an API
        key, so no token expires mid-run); the server's memory after a warm-up
        of a fifth of the run against its end, and every 5xx."""
        if not self.records_api:
            self.add(Row("Bastion", NAMES[7], note="not available (records API)"))
            return
        self.bastion.stop()
        self.bastion.start(raised=True)
        token = self.bastion.login()["access_token"]
        created = httpx.post(
            f"{self.bastion.base}/api/v1/me/api-keys",
            json={"name": "soak", "scopes": ["records:*"]},
            headers={"Authorization": f"Bearer {token}"},
        )
        created.raise_for_status()
        auth = f"Bearer {created.json()['key']}"
        notes = f"{self.bastion.base}/api/v1/collections/notes/records"
        loads = [
            start_wrk(f"{notes}/{self.record_ids['Bastion']}", self.soak, "call.lua", 2, auth=auth),
            start_wrk(f"{notes}?priority.eq=3&limit=20", self.soak, "call.lua", 2, auth=auth),
            start_wrk(notes, self.soak, "call.lua", 2, auth=auth, method="POST", body=json.dumps(NOTE)),
        ]
        assert self.bastion.process is not None
        samples: list[tuple[float, list[tuple[int, str, int]]]] = []
        started = time.monotonic()
        while any(load.poll() is None for load in loads):
            samples.append((time.monotonic() - started, tree_processes(self.bastion.process.pid)))
            time.sleep(min(5, max(1, self.soak // 20)))
        results = [finish_wrk(load) for load in loads]
        warm_processes = next((tree for at, tree in samples if at >= self.soak / 5), samples[-1][1])
        warm, end = sum(rss for *_, rss in warm_processes), sum(rss for *_, rss in samples[-1][1])
        statuses: dict[int, int] = {}
        for figures in results:
            for status, n in figures["statuses"].items():
                statuses[status] = statuses.get(status, 0) + n
        errors = sum(n for status, n in statuses.items() if status >= 500)
        requests = sum(figures["requests"] for figures in results)
        row = Row(
            "Bastion",
            f"{NAMES[7]}, {self.soak} s, c=2+2+2",
            {
                "rps": requests / self.soak,
                "requests": requests,
                "statuses": statuses,
                "rss_after_warmup_mib": warm / 2**20,
                "rss_end_mib": end / 2**20,
                "rss_samples": [(at, sum(rss for *_, rss in tree)) for at, tree in samples],
                "processes_after_warmup": [
                    {"pid": pid, "command": command, "rss_mib": rss / 2**20} for pid, command, rss in warm_processes
                ],
                "processes_end": [
                    {"pid": pid, "command": command, "rss_mib": rss / 2**20} for pid, command, rss in samples[-1][1]
                ],
            },
            note=f"RSS {warm / 2**20:.0f} MiB after warm-up, {end / 2**20:.0f} MiB at the end; statuses {statuses}",
        )
        self.judge(row, "soak_rss", warm / 2**20, f"{warm / 2**20:.0f} MiB after {self.soak // 5} s of {self.soak} s")
        self.judge(row, "soak_growth", (end - warm) / warm, f"{warm / 2**20:.0f} -> {end / 2**20:.0f} MiB")
        self.judge(row, "soak_5xx", errors, f"{errors} of {requests} requests")
        self.add(row, 7)
        each = ", ".join(f"{command} {rss / 2**20:.0f}" for _, command, rss in samples[-1][1])
        self.notes.append(f"scenario 7: resident MiB per process at the end of the soak: {each}")


def statuses(answers: list[tuple[float, int]]) -> dict[int, int]:
    counted: dict[int, int] = {}
    for _, status in answers:
        counted[status] = counted.get(status, 0) + 1
    return counted


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it, parents first (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, pending = [], [pid]
    while pending:
        current = pending.pop(0)
        found.append(current)
        pending.extend(sorted(children.get(current, [])))
    return found


def tree_processes(pid: int) -> list[tuple[int, str, int]]:
    """(pid, command, resident bytes) of a process and all its descendants (Linux /proc)."""
    found = []
    for current in descendants(pid):
        try:
            status = (Path("/proc") / str(current) / "status").read_text()
            argv = (Path("/proc") / str(current) / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        rss = next((int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmRSS:")), 0)
        found.append((current, command_of([arg.decode(errors="replace") for arg in argv if arg]), rss))
    return sorted(found)


def command_of(argv: list[str]) -> str:
    """`bastion serve`, `bastion.network listener public`: the program without the interpreter and paths."""
    words = [Path(argv[0]).name] if argv else []
    for arg in argv[1:]:
        if arg.startswith("--") or arg.isdigit():
            break
        words.append(Path(arg).name if "/" in arg else arg)
    if words[:1] and words[0].startswith("python"):
        words = [w for w in words[1:] if w != "-m"]
    return " ".join(words) or "?"


def answers(figures: dict[str, Any]) -> str:
    return ", ".join(f"{status}: {n}" for status, n in sorted(figures["statuses"].items()))


# --- report ------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
        platform.processor(),
    )
    meminfo = Path("/proc/meminfo").read_text() if Path("/proc/meminfo").exists() else ""
    kib = next((int(line.split()[1]) for line in meminfo.splitlines() if line.startswith("MemTotal")), 0)
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "memory_gib": round(kib / 2**20, 1),
        "kernel": platform.release(),
        "pinning": "server on core 0, wrk on core 1 (taskset)" if CAN_PIN else "not pinned",
    }


def table(rows: list[Row]) -> str:
    lines = ["| system | scenario | req/s | p50 ms | p99 ms | ratio to target |", "|---|---|---:|---:|---:|---|"]
    for row in rows:
        figures = row.figures
        rps = f"{figures['rps']:.1f}" if "rps" in figures else "n/a"
        p50 = f"{figures['p50_ms']:.2f}" if "p50_ms" in figures else ""
        p99 = f"{figures['p99_ms']:.2f}" if "p99_ms" in figures else ""
        text = row.ratio_text()
        if row.note and row.ratios:
            text += f"; {row.note}"
        lines.append(f"| {row.system} | {row.scenario} | {rps} | {p50} | {p99} | {text} |")
    return "\n".join(lines)


def summary(verdicts: dict[str, tuple[float, str]], chosen: list[int]) -> str:
    """Every target, in BENCHMARKS.md's order, with Bastion's value and ok/MISS (or why it has none)."""
    lines = ["| scenario | target | Bastion | verdict | from |", "|---|---|---:|---|---|"]
    met = 0
    for target in TARGETS:
        name = SHORT[target.scenario]
        if target.key in verdicts:
            value, detail = verdicts[target.key]
            met += target.met(value)
            verdict = "ok" if target.met(value) else "MISS"
            lines.append(f"| {name} | {target.goal} | {target.show(value)} | {verdict} | {detail} |")
        else:
            why = "not measured" if target.scenario in chosen else "not run"
            if target.scenario == 7 and 7 not in chosen:
                why += " (--soak)"
            lines.append(f"| {name} | {target.goal} |  | {why} |  |")
    lines.append(f"\n{met} of {len(TARGETS)} targets met ({len(verdicts)} measured).")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="per measurement (default 10)")
    parser.add_argument(
        "--scenarios",
        default="1,2,3,4,5,6,8",
        help="comma-separated (default 1-6 and 8; 7 is the soak, run on request)",
    )
    parser.add_argument(
        "--soak",
        type=int,
        nargs="?",
        const=SOAK_QUICK,
        help=f"also run scenario 7 for SECONDS (alone: {SOAK_QUICK}, a quick check; "
        "BENCHMARKS' soak is 600, the default when 7 is in --scenarios)",
    )
    parser.add_argument("--rows", type=int, default=100_000, help="rows seeded for scenario 5 (default 100000)")
    parser.add_argument("--backup-gb", type=float, default=1.0, help="database size for scenario 9 (default 1.0)")
    parser.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a BASTION_* variable for Bastion, for A/B runs (repeat), e.g. BASTION_MONITOR__ENABLED=false",
    )
    args = parser.parse_args()
    settings = dict(item.partition("=")[::2] for item in args.setting)
    if any(not name.startswith("BASTION_") or not value for name, value in settings.items()):
        parser.error("--setting is BASTION_NAME=VALUE")
    chosen = sorted(({int(s) for s in args.scenarios.split(",")} | ({7} if args.soak else set())) & set(NAMES))
    soak = args.soak or 600
    info = machine()
    load = os.getloadavg()
    print(f"machine: {info['nproc']} cores, {info['cpu']}, {info['memory_gib']} GiB; {info['pinning']}")
    print(
        "Bastion's throttles are raised for scenarios 1-5 so wrk is not rate limited: "
        + ", ".join(f"{k}={v}" for k, v in RAISED.items())
    )
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bastion-bench-") as tmp:
        bench = Bench(args.seconds, args.rows, Path(tmp), soak, args.backup_gb, settings=settings)
        try:
            if set(chosen) - {9}:  # the backup scenario needs none of the bounds (nor wrk)
                bench.measure_bounds()
            bench.start(chosen)
            for scenario in ORDER:
                if scenario in chosen:
                    getattr(bench, f"s{scenario}")()
        finally:
            bench.stop()
    rows = [r for r in bench.results if r.system == "bound"] + sorted(
        (r for r in bench.results if r.system != "bound"), key=lambda r: (r.scenario[:1], r.system != "Bastion")
    )
    print()
    print(table(rows))
    for note in bench.notes:
        print(f"- {note}")
    loads = {"start": load, "end": os.getloadavg()}
    print(
        f"({time.monotonic() - started:.0f} s; load average {loads['start'][0]:.2f} at the start, "
        f"{loads['end'][0]:.2f} at the end: other work on this machine disturbs the figures)"
    )
    print()
    print("Targets (BENCHMARKS.md; issue 12):")
    print()
    print(summary(bench.verdicts, chosen))
    result = {
        "machine": info,
        "seconds_per_measurement": args.seconds,
        "scenarios": chosen,
        "soak_seconds": soak if 7 in chosen else None,
        "load_average": loads,
        "throttles_raised_for_1_to_5": RAISED,
        "bounds": bench.bounds,
        "notes": bench.notes,
        "rows": [{**asdict(row), "ratio_text": row.ratio_text()} for row in rows],
        "table_markdown": table(rows),
        "summary": [
            {
                "key": t.key,
                "scenario": t.scenario,
                "target": t.goal,
                "bound": t.bound,
                "upper": t.upper,
                "value": bench.verdicts[t.key][0] if t.key in bench.verdicts else None,
                "met": t.met(bench.verdicts[t.key][0]) if t.key in bench.verdicts else None,
                "from": bench.verdicts[t.key][1] if t.key in bench.verdicts else "",
            }
            for t in TARGETS
        ],
        "summary_markdown": summary(bench.verdicts, chosen),
    }
    out = ROOT / "results" / f"run-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
