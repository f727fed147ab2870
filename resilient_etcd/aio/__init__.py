"""resilient_etcd for asyncio: ``AsyncEtcd3Client``, the sync client's API as coroutines (docs/asyncio.md).

Usage::

    from resilient_etcd import aio

    async with aio.client(endpoints=["m1:2379", "m2:2379", "m3:2379"]) as client:
        await client.put("/key", "value")
        value, meta = await client.get("/key")
"""

from .client import AsyncEtcd3Client, client
from .election import AsyncElection
from .lease import AsyncLease
from .lock import AsyncLock

__all__ = ["AsyncElection", "AsyncEtcd3Client", "AsyncLease", "AsyncLock", "client"]
