"""python-etcd3's ``etcd3.watch``: ``WatchResponse``, and ``Watcher`` — what ``client.watcher`` is."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .etcd.events import WatchResponse

if TYPE_CHECKING:
    from .etcd.owner import SyncClient

__all__ = ["WatchResponse", "Watcher"]


class Watcher:
    """``client.watcher``: ``add_callback(key, callback, **kwargs)`` → watch id, ``cancel(watch_id)``.
    The watches run on the client's one resumable watch stream (``add_watch_callback``)."""

    def __init__(self, client: SyncClient) -> None:
        self._client = client

    def add_callback(self, key: str | bytes, callback: Any, **kwargs: Any) -> int:
        return self._client.add_watch_callback(key, callback, **kwargs)

    def cancel(self, watch_id: int) -> None:
        self._client.cancel_watch(watch_id)

    def close(self) -> None:
        """Kept for python-etcd3 callers; the client's ``close()`` ends the watches."""
