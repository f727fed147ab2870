"""What the asyncio face's leases, locks and elections call back on their client, as a Protocol (see
``resilient_etcd.etcd.owner``): ``AsyncEtcd3Client`` builds them and satisfies it; they do not import it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from .._proto import rpc_pb2
from ..etcd.transactions import Transactions
from .watch import EventIterator


class AsyncClient(Protocol):
    @property
    def transactions(self) -> Transactions: ...

    async def revoke_lease(self, *args: Any, **kwargs: Any) -> Any: ...

    async def refresh_lease(self, *args: Any, **kwargs: Any) -> list[rpc_pb2.LeaseKeepAliveResponse]: ...

    async def get_lease_info(self, *args: Any, **kwargs: Any) -> rpc_pb2.LeaseTimeToLiveResponse: ...

    async def watch_prefix(self, *args: Any, **kwargs: Any) -> tuple[EventIterator, Callable[[], Awaitable[None]]]: ...
