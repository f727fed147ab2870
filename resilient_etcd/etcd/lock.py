"""python-etcd3's ``Lock``, held through a kept lease, with a fencing revision."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ..exceptions import LeaseLostError, LockLostError, WatchTimedOut
from .lease import Lease

if TYPE_CHECKING:
    from ..client import Etcd3Client

LOCK_PREFIX = "/locks/"
_NOPUT = 0  # WatchCreateRequest.FilterType.NOPUT: only deletions wake us


class Lock:
    """A distributed lock (python-etcd3's API): ``acquire(timeout=10)``, ``release()``, ``refresh()``,
    ``is_acquired()``, and ``with lock:``.

    While held, the lock's lease is kept alive in the background. If the lease is lost (the client
    was cut off longer than ``ttl``), the lock is lost: ``on_lost(lock)`` is called and
    ``is_acquired()`` / ``check()`` report it. ``revision`` is the fencing token: the etcd revision at
    which this holder took the lock, larger for every later holder.
    """

    def __init__(self, name: str, ttl: int = 60, etcd_client: Etcd3Client | None = None,
                 on_lost: Callable[[Lock], None] | None = None) -> None:
        if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl <= 0:
            raise ValueError(f"lock ttl must be a positive integer of seconds, got {ttl!r}")
        self.name = name
        self.ttl = ttl
        self.etcd_client = etcd_client
        self.key = LOCK_PREFIX + name
        self.uuid = uuid.uuid1().bytes
        self.lease: Lease | None = None
        self.revision: int | None = None
        self._on_lost = on_lost
        self._lost = threading.Event()

    def __repr__(self) -> str:
        return f"Lock({self.name!r}, ttl={self.ttl}, revision={self.revision})"

    def _client(self) -> Etcd3Client:
        if self.etcd_client is None:
            raise ValueError("this Lock is not bound to a client")
        return self.etcd_client

    def acquire(self, timeout: float | None = 10) -> bool:
        """Take the lock, waiting up to ``timeout`` seconds (None: forever). True when held."""
        client = self._client()
        end = None if timeout is None else time.monotonic() + timeout
        t = client.transactions
        while True:
            self.lease = client.lease(self.ttl)
            ok, responses = client.transaction(
                compare=[t.create(self.key) == 0],
                success=[t.put(self.key, self.uuid, lease=self.lease)],
                failure=[t.get(self.key)],
            )
            if ok:
                self.revision = int(responses[0].header.revision)
                self._lost.clear()
                self.lease.keep_alive(on_lost=self._lease_lost)
                return True
            self.lease.revoke()
            self.lease = None
            left = None if end is None else end - time.monotonic()
            if left is not None and left <= 0:
                return False
            holder = responses[0]
            if not holder:
                continue  # released between our compare and now
            seen_at = holder[0][1].response_header.revision
            try:  # wait for the holder's key to go (replaying from what we saw, so no release is missed)
                client.watch_once(self.key, timeout=left, start_revision=seen_at + 1, filters=[_NOPUT])
            except WatchTimedOut:
                return False

    def release(self) -> bool:
        """Give the lock up; False when we did not hold it."""
        client = self._client()
        t = client.transactions
        ok, _ = client.transaction(compare=[t.value(self.key) == self.uuid], success=[t.delete(self.key)],
                                   failure=[])
        if self.lease is not None:
            self.lease.stop_keep_alive()
            with contextlib.suppress(LeaseLostError):
                self.lease.revoke()
            self.lease = None
        return ok

    def refresh(self) -> list[Any]:
        if self.lease is None:
            raise ValueError("no lease: the lock is not held")
        return self.lease.refresh()

    def is_acquired(self) -> bool:
        """True while we hold it: our value is on the key and the lease has not been lost."""
        if self.lease is None or self._lost.is_set():
            return False
        value, _ = self._client().get(self.key)
        return value == self.uuid

    def check(self) -> None:
        """Raise :class:`LockLostError` if the lock was lost."""
        if self._lost.is_set():
            raise LockLostError(f"lock {self.name!r} lost with its lease")

    def _lease_lost(self, lease: Lease) -> None:
        self._lost.set()
        if self._on_lost is not None:
            self._on_lost(self)

    def __enter__(self) -> Lock:
        self.acquire(timeout=None)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
