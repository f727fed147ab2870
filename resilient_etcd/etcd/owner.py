"""What the sync face's leases, locks, elections and watcher call back on their client, as a Protocol:
they are built by the client and only call it, so they name no client module (no import circle).
``Etcd3Client`` satisfies it; mypy checks that where the client hands itself over."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

from .._proto import rpc_pb2
from .events import Event
from .transactions import Transactions


class SyncClient(Protocol):
    @property
    def transactions(self) -> Transactions: ...

    def revoke_lease(self, *args: Any, **kwargs: Any) -> Any: ...

    def refresh_lease(self, *args: Any, **kwargs: Any) -> Iterator[rpc_pb2.LeaseKeepAliveResponse]: ...

    def get_lease_info(self, *args: Any, **kwargs: Any) -> rpc_pb2.LeaseTimeToLiveResponse: ...

    def watch_prefix(self, *args: Any, **kwargs: Any) -> tuple[Iterator[Event], Callable[[], None]]: ...

    def add_watch_callback(self, *args: Any, **kwargs: Any) -> int: ...

    def cancel_watch(self, *args: Any, **kwargs: Any) -> None: ...
