"""``AsyncLease``: the sync ``Lease`` for asyncio — the same state, loss signal and keeper schedule
(:class:`~resilient_etcd.etcd.lease.LeaseState`), with the keeper an asyncio task."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .._proto import rpc_pb2
from .._steps import adrive, apply
from ..etcd.lease import LeaseState
from ..exceptions import Etcd3Exception

if TYPE_CHECKING:
    from .owner import AsyncClient

log = logging.getLogger("resilient_etcd.lease")


class AsyncLease(LeaseState):
    """A granted lease: ``id``, ``ttl``; ``await refresh()``, ``await revoke()``; ``await remaining_ttl``,
    ``await granted_ttl`` and ``await keys`` ask the server each time. ``keep_alive(on_lost=…)`` starts a
    keeper task (see the sync ``Lease`` for what it promises)."""

    etcd_client: AsyncClient | None

    def __init__(self, lease_id: int, ttl: int, etcd_client: AsyncClient | None = None, *,
                 expires_at: float | None = None) -> None:
        super().__init__(lease_id, ttl, etcd_client)
        if expires_at is not None:
            self.expires_at = expires_at
        self._abandoning: asyncio.Task[None] | None = None

    def _client(self) -> AsyncClient:
        if self.etcd_client is None:
            raise ValueError("this AsyncLease is not bound to a client")
        self.check()
        return self.etcd_client

    async def revoke(self) -> bool:
        """Revoke the lease now (its keys go with it); the keeper stops."""
        self._stop.set()
        await self._client().revoke_lease(self.id)
        self._mark_lost("revoked", notify=False)
        return True

    async def refresh(self) -> list[rpc_pb2.LeaseKeepAliveResponse]:
        """One keep-alive; raises :class:`LeaseLostError` when the server says the lease is gone."""
        sent = time.monotonic()
        return self._refreshed(await self._client().refresh_lease(self.id), sent)

    async def _info(self) -> rpc_pb2.LeaseTimeToLiveResponse:
        return await self._client().get_lease_info(self.id)

    @property
    def remaining_ttl(self) -> Awaitable[int]:
        """Seconds the server still gives the lease (``await lease.remaining_ttl``)."""
        return _field(self._info(), lambda r: int(r.TTL))

    @property
    def granted_ttl(self) -> Awaitable[int]:
        """The TTL the server granted (``await lease.granted_ttl``)."""
        return _field(self._info(), lambda r: int(r.grantedTTL))

    @property
    def keys(self) -> Awaitable[list[bytes]]:
        """The keys attached to the lease (``await lease.keys``)."""
        return _field(self._info(), lambda r: list(r.keys))

    # ---- the keeper ----
    def keep_alive(self, on_lost: Callable[[AsyncLease], None] | None = None, *,
                   refresh: bool = True) -> AsyncLease:
        """Start refreshing in a task (idempotent); ``on_lost`` is called once if the lease is lost."""
        if on_lost is not None:
            self._on_lost.append(on_lost)
        if self._keeper is None:
            self._refreshing = refresh
            self._keeper = asyncio.get_running_loop().create_task(self._keep(), name=f"lease-{self.id:x}")
        return self

    async def stop_keep_alive(self, *, wait: bool = True) -> None:
        """Stop the keeper (a keep-alive in flight is cancelled) and, with ``wait``, wait for it to end; an
        answer after this is not reported as a loss."""
        self._stop.set()
        keeper: asyncio.Task[None] | None = self._keeper
        if keeper is not None and keeper is not asyncio.current_task():
            keeper.cancel()
            if wait:
                with contextlib.suppress(asyncio.CancelledError):
                    await keeper

    async def abandon(self) -> None:
        """Give the lease up on a failure path: the keeper stops, and a revoke is sent in a task (bounded
        by its TTL, after which the lease is gone anyway)."""
        await self.stop_keep_alive()
        if self._lost is not None or self.etcd_client is None:
            return
        self._mark_lost("abandoned", notify=False)
        client, lease_id, ttl = self.etcd_client, self.id, self.ttl

        async def revoke() -> None:
            try:
                await client.revoke_lease(lease_id, timeout=ttl)
            except Exception as e:  # it expires by itself within its TTL
                log.info("lease %#x: revoke after a failure did not get through (%s); it expires within %d s",
                         lease_id, e, ttl, extra={"lease": lease_id, "event": "lease_abandoned"})

        self._abandoning = asyncio.get_running_loop().create_task(revoke())

    async def give_up(self) -> None:
        """Stop the keeper and revoke now; if the revoke does not get through, :meth:`abandon`."""
        await self.stop_keep_alive()
        if self._lost is not None:
            return
        try:
            await self.revoke()
        except Etcd3Exception:
            await self.abandon()

    async def _keep(self) -> None:
        await adrive(self._keeper_steps(), apply)

    async def _nap(self, seconds: float) -> bool:
        """The keeper's wait; True when stopped meanwhile."""
        await asyncio.sleep(seconds)
        return self._stop.is_set()


async def _field(info: Awaitable[rpc_pb2.LeaseTimeToLiveResponse], pick: Callable[[Any], Any]) -> Any:
    return pick(await info)
