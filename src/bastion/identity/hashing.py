"""Password hashing off the event loop, at most N at once.

Argon2id is deliberately slow and memory-hard (19 MiB each): run inline it
would stall every other request, and run without a cap a login flood would
allocate 19 MiB per concurrent attempt. A semaphore of about one per core
makes a flood queue instead.
"""

from __future__ import annotations

import anyio
import anyio.to_thread

from bastion.security import PasswordHasher


class AsyncHasher:
    def __init__(self, hasher: PasswordHasher, concurrency: int) -> None:
        self._hasher = hasher
        self._limiter = anyio.CapacityLimiter(concurrency)

    async def hash(self, password: str) -> str:
        return await anyio.to_thread.run_sync(self._hasher.hash, password, limiter=self._limiter)

    async def verify_and_update(self, encoded: str, password: str) -> tuple[bool, str | None]:
        return await anyio.to_thread.run_sync(self._hasher.verify_and_update, encoded, password, limiter=self._limiter)

    async def dummy_verify(self, password: str) -> None:
        """Spend what a real verify costs, so unknown accounts answer in the same time."""
        await anyio.to_thread.run_sync(self._hasher.dummy_verify, password, limiter=self._limiter)
