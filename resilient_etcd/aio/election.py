"""``AsyncElection``: the sync ``Election`` for asyncio — the same steps
(:class:`~resilient_etcd.etcd.election.ElectionCore`), awaited."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .._steps import adrive, apply
from ..etcd.election import ElectionCore
from ..etcd.models import Key, KVMetadata

if TYPE_CHECKING:
    from .lease import AsyncLease
    from .owner import AsyncClient


class AsyncElection(ElectionCore):
    """``await campaign(value)``, ``await proclaim(value)``, ``await resign()``, ``await leader()``,
    ``observe()``; ``async with`` resigns on the way out. Leadership is lost with the lease (``on_lost``)."""

    client: AsyncClient
    lease: AsyncLease | None

    def __repr__(self) -> str:
        return f"AsyncElection({self.prefix!r}, key={self.key!r}, revision={self.revision})"

    async def campaign(self, value: Key, timeout: float | None = None) -> bool:
        """Become leader with ``value`` (see ``Election.campaign``); a cancelled campaign withdraws."""
        return bool(await adrive(self._campaign_steps(value, timeout), apply))

    async def is_leader(self) -> bool:
        """True while this candidate's key is the oldest under the prefix and its lease is alive."""
        return bool(await adrive(self._is_leader_steps(), apply))

    async def proclaim(self, value: Key) -> None:
        """Publish a new value as the current leader, without re-election."""
        await adrive(self._proclaim_steps(value), apply)

    async def resign(self) -> None:
        """Give up leadership (or candidacy); the lease is revoked whatever happens to the delete."""
        await adrive(self._resign_steps(), apply)

    async def leader(self) -> tuple[bytes, KVMetadata] | None:
        """``(value, metadata)`` of the current leader's key, or None when nobody leads."""
        result: tuple[bytes, KVMetadata] | None = await adrive(self._leader_steps(), apply)
        return result

    async def observe(self) -> tuple[AsyncIterator[bytes | None], Callable[[], Awaitable[None]]]:
        """``(async iterator, cancel)``: the leader's value now and after every change (None: nobody leads)."""
        events, cancel = await self.client.watch_prefix(self.prefix)

        async def values() -> AsyncIterator[bytes | None]:
            last: Any = object()
            while True:
                current = await self.leader()
                value = None if current is None else current[0]
                if value != last:
                    last = value
                    yield value
                if await anext(events, None) is None:
                    return  # cancelled, or the client was closed

        return values(), cancel

    async def __aenter__(self) -> AsyncElection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.resign()
