"""Where signed checkpoints go besides the database: a directory (best on
another disk or a mount the database's host cannot rewrite), webhooks, and
syslog. Someone who can rewrite the database, tree and all, cannot reach
these copies, and ``bastion audit verify`` checks the tree against them.

Each sink's ``send(size, note)`` raises on failure; the sequencer logs it and
records an ``audit:sink_failed`` event, and the checkpoint stays stored.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import os
import socket
from pathlib import Path
from typing import Protocol

import httpx

from bastion.http.urls import shown_url
from bastion.settings import Settings

WEBHOOK_ATTEMPTS = 3
WEBHOOK_TIMEOUT = 5.0
LATEST = "latest"
SUFFIX = ".checkpoint"


class Sink(Protocol):
    name: str

    async def send(self, size: int, note: str) -> None: ...


class FileSink:
    """``<dir>/<size>.checkpoint`` and ``<dir>/latest``, each written whole (temp file + rename)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.name = f"file:{directory}"

    async def send(self, size: int, note: str) -> None:
        await asyncio.to_thread(self._write, size, note)

    def _write(self, size: int, note: str) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for name in (f"{size}{SUFFIX}", LATEST):
            target = self.directory / name
            temporary = self.directory / f".{name}.{os.getpid()}.tmp"
            temporary.write_text(note, encoding="utf-8")
            os.replace(temporary, target)


class WebhookSink:
    """POST the note as ``text/plain``; a few tries with a growing pause; redirects are not followed."""

    def __init__(self, url: str, *, attempts: int = WEBHOOK_ATTEMPTS, pause: float = 0.5) -> None:
        self.url = url
        # By origin only: the path or query may hold a token, and the name reaches logs and events.
        self.name = f"webhook:{shown_url(url)}"
        self.attempts = attempts
        self.pause = pause

    async def send(self, size: int, note: str) -> None:
        error: Exception | None = None
        async with httpx.AsyncClient(timeout=WEBHOOK_TIMEOUT, follow_redirects=False) as client:
            for attempt in range(self.attempts):
                try:
                    answer = await client.post(
                        self.url,
                        content=note.encode(),
                        headers={"Content-Type": "text/plain; charset=utf-8", "X-Bastion-Checkpoint-Size": str(size)},
                    )
                    if answer.is_success:
                        return
                    error = RuntimeError(f"answered {answer.status_code}")
                except httpx.HTTPError as exc:
                    error = exc
                if attempt + 1 < self.attempts:
                    await asyncio.sleep(self.pause * 2**attempt)
        assert error is not None  # noqa: S101 - the loop ran at least once
        # Some httpx errors quote the URL; what is logged shows its origin only.
        message = f"{type(error).__name__}: {error}".replace(self.url, shown_url(self.url))
        raise RuntimeError(message) from error


class SyslogSink:
    """One RFC 5424 line per checkpoint over UDP (``host:port``) or a Unix datagram socket (a path).

    The message carries the size, the key line and the whole note in base64,
    so the checkpoint can be taken back out of the syslog archive.
    """

    def __init__(self, target: str) -> None:
        self.target = target
        self.name = f"syslog:{target}"

    def line(self, size: int, note: str) -> bytes:
        at = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        host = socket.gethostname() or "-"
        encoded = base64.b64encode(note.encode()).decode()
        # PRI 134 = facility local0 (16) * 8 + severity informational (6).
        return f"<134>1 {at} {host} bastion {os.getpid()} audit-checkpoint - size={size} note={encoded}".encode()

    async def send(self, size: int, note: str) -> None:
        await asyncio.to_thread(self._send, self.line(size, note))

    def _send(self, message: bytes) -> None:
        if self.target.startswith("/"):
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as unix:
                unix.sendto(message, self.target)
            return
        host, _, port = self.target.rpartition(":")
        host = host.strip("[]") or "127.0.0.1"
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as udp:
            udp.sendto(message, (host, int(port)))


def sinks_of(settings: Settings) -> list[Sink]:
    """The sinks ``[audit]`` configures."""
    audit = settings.audit
    sinks: list[Sink] = []
    if audit.checkpoint_dir is not None:
        sinks.append(FileSink(audit.checkpoint_dir))
    sinks.extend(WebhookSink(url) for url in audit.checkpoint_webhook_urls)
    if audit.checkpoint_syslog:
        sinks.append(SyslogSink(audit.checkpoint_syslog))
    return sinks
