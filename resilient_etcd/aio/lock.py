"""``AsyncLock``: the sync ``Lock`` for asyncio — the same steps (:class:`~resilient_etcd.etcd.lock.LockCore`),
awaited; ``async with client.lock(name):``."""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .._steps import adrive, apply
from ..etcd.lock import LockCore

if TYPE_CHECKING:
    from .lease import AsyncLease
    from .owner import AsyncClient


class AsyncLock(LockCore):
    """A distributed lock: ``await acquire(timeout=10)``, ``await release()``, ``await refresh()``,
    ``await is_acquired()``, ``async with lock:``. A task cancelled while taking it leaves no lease and
    no key behind (the attempt's lease is given up)."""

    etcd_client: AsyncClient | None
    lease: AsyncLease | None

    async def acquire(self, timeout: float | None = 10) -> bool:
        """Take the lock within ``timeout`` seconds (None: no limit of its own); False when it ran out."""
        return bool(await adrive(self._acquire_steps(timeout), apply))

    async def release(self) -> bool:
        """Give the lock up; False when we did not hold it."""
        return bool(await adrive(self._release_steps(), apply))

    async def refresh(self) -> list[Any]:
        """Refresh the lock's lease once (what keeps a ``keep_alive=False`` lock held)."""
        result: list[Any] = await apply(self._refresh_call())
        return result

    async def is_acquired(self) -> bool:
        """True while we hold it: our value is on the key and the lease has not been lost."""
        return bool(await adrive(self._held_steps(), apply))

    async def __aenter__(self) -> AsyncLock:
        await self.acquire(timeout=None)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        # released even when the task was cancelled inside the block
        await asyncio.shield(self.release())
