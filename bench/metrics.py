"""What the Prometheus metrics add per request, in microseconds.

    .venv/bin/python bench/metrics.py [--calls 200000] [--requests 20000]

Three figures, each in this process's CPU time (``time.process_time``):

1. the spine observer alone (``bastion.metrics.HttpObserver``): one count
   and one latency per answer, in-process values (tests, the CLI);
2. the same in multiprocess mode (what ``bastion serve`` runs: every value
   update also writes its memory-mapped file), in a child process that
   switches over first;
3. a whole request through the app in-process (``GET /healthz``, raw ASGI,
   no server, no network; with ``--multiprocess``, multiprocess values as
   under ``bastion serve``), with the observer and without it, in interleaved
   rounds so that drift on a shared machine hits both alike; the difference
   of the medians is what the metrics cost a real request.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROUTE = type("Route", (), {"path": "/api/v1/collections/{name}/records"})()


def observer_us(calls: int) -> float:
    from bastion.metrics import HttpObserver

    observe = HttpObserver()
    scope: dict[str, Any] = {"route": ROUTE, "method": "GET"}
    for _ in range(1000):
        observe(scope, 200, 0.001)
    began = time.process_time()
    for _ in range(calls):
        observe(scope, 200, 0.001)
    return (time.process_time() - began) / calls * 1e6


def multiprocess_us(calls: int) -> float:
    script = (
        "import shutil, sys; from bastion.metrics import start_multiprocess; samples = start_multiprocess(); "
        "sys.path.insert(0, 'bench'); from metrics import observer_us; "
        f"print(observer_us({calls})); shutil.rmtree(samples)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


async def request_us(requests: int, rounds: int = 10) -> tuple[float, float]:
    from bastion.app import create_app
    from bastion.instance import initialise
    from bastion.settings import load_settings

    data = Path(tempfile.mkdtemp(prefix="bastion-bench-metrics-")) / "data"
    os.environ["BASTION_LOG__ACCESS"] = "false"
    initialise(load_settings(data))
    settings = load_settings(data)
    app = create_app(settings)
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/healthz",
        "raw_path": b"/healthz",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"localhost")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        return None

    async def run(count: int) -> float:
        began = time.process_time()
        for _ in range(count):
            await app(dict(scope), receive, send)
        return (time.process_time() - began) / count * 1e6

    async with app.router.lifespan_context(app):
        observers = app.state.response_observers
        ours = list(observers)
        await run(500)
        with_metrics, without = [], []
        for _ in range(rounds):
            observers[:] = ours
            with_metrics.append(await run(requests // rounds))
            observers.clear()
            without.append(await run(requests // rounds))
        observers[:] = ours
    shutil.rmtree(data.parent, ignore_errors=True)
    return statistics.median(with_metrics), statistics.median(without)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument(
        "--multiprocess", action="store_true", help="the whole-request figure with multiprocess values, as served"
    )
    args = parser.parse_args()
    print(f"observer, in-process values:   {observer_us(args.calls):6.2f} µs per answer")
    print(f"observer, multiprocess values: {multiprocess_us(args.calls):6.2f} µs per answer")
    if args.multiprocess:
        from bastion.metrics import start_multiprocess

        samples_dir = start_multiprocess()
    with_metrics, without = asyncio.run(request_us(args.requests))
    if args.multiprocess:
        shutil.rmtree(samples_dir, ignore_errors=True)
    mode = "multiprocess" if args.multiprocess else "in-process"
    print(
        f"GET /healthz through the app ({mode}): {with_metrics:6.1f} µs with metrics, {without:6.1f} µs without "
        f"({with_metrics - without:+.1f} µs)"
    )


if __name__ == "__main__":
    main()
