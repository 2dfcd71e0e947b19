"""What ``bastion serve`` becomes once its listeners are under way: a supervisor that holds nothing else.

``bastion serve`` checks the settings, migrates and prepares the listeners
with the application loaded, forks the public listener from that image (so it
starts without importing anything again), then replaces itself with this
module (``bastion.network.serve.launch``). ``exec`` keeps the pid that
systemd and the operator signal, and drops the ~120 MiB the application
took: this process is an interpreter with the standard library only, run as
a script with ``-I -S`` (no site-packages on its path), ~10 MiB resident.
Keep it that way: tests/functional/network/test_supervisor.py checks what it imports.

From here it:

- starts the listeners that run in fresh processes (``python -m
  bastion.network listener NAME``): the redirect listener at once, the admin
  listener when its first connection arrives. The admin socket is bound by
  ``bastion serve`` and held here, so that connection waits in the kernel's
  backlog while the listener loads (~1.5 s, once); an admin plane nobody
  uses costs no memory;
- passes SIGHUP on to every running listener;
- on SIGTERM or SIGINT asks every listener to stop (each drains its
  in-flight requests, up to ``drain_seconds``), kills what is left after
  that and 5 s more, and exits 0;
- when a listener ends by itself: the one-line cause it reported, if it
  could not start (``error: …``, exit 2), or a log line (exit 1); the
  others are stopped first.

The plan comes as JSON in ``argv[1]``; it carries no secret (the settings
travel in the environment, as before the ``exec``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# Kept in step with bastion.network.startup (which this module cannot import).
REPORT_ENV = "BASTION_STARTUP_REPORT"
STARTUP_FAILED = 2
# The environment variable that hands a listener its already bound socket.
LISTENER_FD_ENV = "BASTION_LISTENER_FD"
# The supervisor's pid, in every listener's environment (and so its workers'):
# the rotation job sends it SIGHUP when a certificate or secret file changes.
SUPERVISOR_PID_ENV = "BASTION_SUPERVISOR_PID"
_KILL_GRACE_SECONDS = 5
# The signals this process handles. `bastion serve` blocks them across the
# exec; ``run`` unblocks them once its handlers are in place.
HANDLED = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}


class Supervisor:
    """The listeners of one ``bastion serve``, by name."""

    def __init__(self, plan: dict[str, Any]) -> None:
        self.reports = Path(plan["report_dir"])
        # The listeners' metric samples (bastion.metrics): gone with the instance.
        self.metrics = Path(plan["metrics_dir"]) if plan.get("metrics_dir") else None
        self.drain_seconds = float(plan["drain_seconds"])
        self.log_format = str(plan["log_format"])
        # name -> pid of a running listener (forked before the exec, or spawned here).
        self.running: dict[str, int] = {str(name): int(pid) for name, pid in plan["running"].items()}
        self.to_start: list[str] = [str(name) for name in plan["start"]]
        # name -> listening socket whose first connection starts the listener.
        self.waiting: dict[str, socket.socket] = {
            str(name): socket.socket(fileno=int(fd)) for name, fd in plan["on_connection"].items()
        }
        self.stopping = False
        self.code = 0

    def run(self) -> int:
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        previous_wakeup = signal.set_wakeup_fd(wake_w)
        handlers = {
            signal.SIGTERM: self._on_stop,
            signal.SIGINT: self._on_stop,
            signal.SIGHUP: self._on_hup,
            # A handler (not SIG_DFL) so that a listener's exit wakes the wait below.
            signal.SIGCHLD: lambda signum, frame: None,
        }
        previous = {signum: signal.signal(signum, handler) for signum, handler in handlers.items()}
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED)
        try:
            for name in self.to_start:
                self._spawn(name)
            while not self.stopping:
                self._reap()
                if self.stopping:
                    break
                watched: list[int] = [wake_r, *(listening.fileno() for listening in self.waiting.values())]
                readable, _, _ = select.select(watched, [], [], 1.0)
                if wake_r in readable:
                    os.read(wake_r, 512)
                for name, listening in list(self.waiting.items()):
                    if listening.fileno() in readable and not self.stopping:
                        self._spawn(name, listening)
        finally:
            self._stop_all()
            shutil.rmtree(self.reports, ignore_errors=True)
            if self.metrics is not None:
                shutil.rmtree(self.metrics, ignore_errors=True)
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            signal.set_wakeup_fd(previous_wakeup)
            os.close(wake_r)
            os.close(wake_w)
        return self.code

    def _on_stop(self, signum: int, frame: object) -> None:
        self.stopping = True

    def _on_hup(self, signum: int, frame: object) -> None:
        for pid in self.running.values():
            _signal(pid, signal.SIGHUP)

    def _spawn(self, name: str, listening: socket.socket | None = None) -> None:
        env = {**os.environ, REPORT_ENV: str(self.reports / name)}
        fds: tuple[int, ...] = ()
        if listening is not None:
            env[LISTENER_FD_ENV] = str(listening.fileno())
            fds = (listening.fileno(),)
        # A fixed argument list of our own module; settings travel in the environment.
        child = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "bastion.network", "listener", name, str(os.getpid())], env=env, pass_fds=fds
        )
        # Reaped with os.waitpid like the forked ones; the Popen object is not consulted again.
        child.returncode = 0
        self.running[name] = child.pid
        if listening is not None:
            del self.waiting[name]
            listening.close()  # the listener holds its own copy

    def _reap(self) -> None:
        """Notice a listener that ended by itself: report it and stop the rest."""
        for name, pid in list(self.running.items()):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done, status = pid, 0
            if done:
                del self.running[name]
                self.code = self._exited(name, os.waitstatus_to_exitcode(status))
                self.stopping = True
                return

    def _exited(self, name: str, exit_code: int) -> int:
        try:
            cause = (self.reports / name).read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            cause = []
        if cause:
            # Several workers may have failed alike: the first line says it.
            sys.stderr.write(f"error: the {name} listener did not start: {cause[0]}\n")
            sys.stderr.flush()
            return STARTUP_FAILED
        self._log_error("listener exited", listener=name, exit_code=exit_code)
        return 1

    def _stop_all(self) -> None:
        for listening in self.waiting.values():
            listening.close()
        for pid in self.running.values():
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.drain_seconds + _KILL_GRACE_SECONDS
        pending = dict(self.running)
        while pending:
            for name, pid in list(pending.items()):
                try:
                    done, _ = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    done = pid
                if done:
                    del pending[name]
            if not pending:
                break
            if time.monotonic() > deadline:
                for pid in pending.values():
                    _signal(pid, signal.SIGKILL)
                    with contextlib.suppress(ChildProcessError):
                        os.waitpid(pid, 0)
                break
            time.sleep(0.05)
        self.running.clear()

    def _log_error(self, event: str, **fields: object) -> None:
        """One error line in the server's log format (``log.format``), as bastion.logging writes it.

        Written by hand: structlog and its dependencies are most of what this
        process avoids loading. The fields are this module's own (a listener
        name, an exit code), nothing a client sent, so there is nothing to redact.
        """
        now = dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
        if self.log_format == "json":
            line = json.dumps(
                {**fields, "event": event, "level": "error", "logger": "bastion.network", "timestamp": now}
            )
        else:
            pairs = " ".join(f"{key}={value}" for key, value in sorted(fields.items()))
            line = f"{now} [error    ] {event:<30} {pairs}"
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def main(argv: list[str]) -> int:
    if len(argv) != 2:  # the script and its plan
        sys.stderr.write("usage: supervisor.py PLAN_JSON (run by `bastion serve`)\n")
        return STARTUP_FAILED
    return Supervisor(json.loads(argv[1])).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
