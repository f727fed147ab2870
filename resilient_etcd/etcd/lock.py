"""python-etcd3's ``Lock``, held through a kept lease, with a fencing revision."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .. import deadlines
from ..exceptions import ConfigurationError, DeadlineExceeded, LockLostError, WatchTimedOut
from .lease import Lease, abandoned_on_error

if TYPE_CHECKING:
    from ..client import Etcd3Client

LOCK_PREFIX = "/locks/"
_NOPUT = 0  # WatchCreateRequest.FilterType.NOPUT: only deletions wake us


class Lock:
    """A distributed lock (python-etcd3's API): ``acquire(timeout=10)``, ``release()``, ``refresh()``,
    ``is_acquired()``, and ``with lock:``.

    ``keep_alive=True`` (the default): while held, the lock's lease is refreshed in the background,
    so a holder that is busy (or whose main thread is stuck) keeps the lock until ``release()`` or
    until it is cut off from the cluster for longer than ``ttl``. ``keep_alive=False`` is
    python-etcd3's behaviour: the lock expires ``ttl`` seconds after it was taken or last
    ``refresh()``-ed. Either way, a lost lock calls ``on_lost(lock)`` and ``is_acquired()`` /
    ``check()`` report it. ``revision`` is the fencing token: the etcd revision at which this holder
    took the lock, larger for every later holder.
    """

    def __init__(self, name: str, ttl: int = 60, etcd_client: Etcd3Client | None = None,
                 on_lost: Callable[[Lock], None] | None = None, *, keep_alive: bool = True) -> None:
        if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl <= 0:
            raise ConfigurationError(f"lock ttl must be a positive integer of seconds, got {ttl!r}")
        self.name = name
        self.ttl = ttl
        self.etcd_client = etcd_client
        self.key = LOCK_PREFIX + name
        self.uuid = uuid.uuid1().bytes
        self.lease: Lease | None = None
        self.revision: int | None = None
        self.keep_alive = keep_alive
        self._on_lost = on_lost
        self._lost = threading.Event()

    def __repr__(self) -> str:
        return f"Lock({self.name!r}, ttl={self.ttl}, revision={self.revision}, keep_alive={self.keep_alive})"

    def _client(self) -> Etcd3Client:
        if self.etcd_client is None:
            raise ValueError("this Lock is not bound to a client")
        return self.etcd_client

    def acquire(self, timeout: float | None = 10) -> bool:
        """Take the lock, waiting up to ``timeout`` seconds (None: no limit of its own). True when held,
        False when ``timeout`` ran out. The whole call — lease grant, transaction, waiting — keeps
        within ``timeout`` and any :func:`deadline` scope (whose expiry raises
        :class:`DeadlineExceeded`). Whatever a failed attempt started (its lease) is given up."""
        client = self._client()
        if timeout is not None:
            deadlines.validate_timeout("timeout", timeout)
        own_end = None if timeout is None else time.monotonic() + timeout
        with deadlines.deadline_of(timeout, None):
            try:
                return self._acquire(client)
            except (WatchTimedOut, DeadlineExceeded):
                if own_end is not None and time.monotonic() >= own_end - 0.005:
                    return False  # our own timeout, not an outer scope's
                raise

    def _acquire(self, client: Etcd3Client) -> bool:
        t = client.transactions
        while True:
            lease = client.lease(self.ttl)
            with abandoned_on_error(lease):  # the put may have been applied: revoking takes the key with it
                ok, responses = client.transaction(
                    compare=[t.create(self.key) == 0],
                    success=[t.put(self.key, self.uuid, lease=lease)],
                    failure=[t.get(self.key)],
                )
            if ok:
                self.lease = lease
                self.revision = int(responses[0].header.revision)
                self._lost.clear()
                lease.keep_alive(on_lost=self._lease_lost, refresh=self.keep_alive)
                return True
            lease.give_up()
            holder = responses[0]
            if not holder:
                continue  # released between our compare and now
            seen_at = holder[0][1].response_header.revision
            # wait for the holder's key to go (replaying from what we saw, so no release is missed)
            client.watch_once(self.key, start_revision=seen_at + 1, filters=[_NOPUT])

    def release(self) -> bool:
        """Give the lock up; False when we did not hold it. The lease is stopped and revoked whatever
        happens to the delete (if that fails, the lease's revocation still frees the lock)."""
        client = self._client()
        t = client.transactions
        lease, self.lease = self.lease, None
        with abandoned_on_error(lease):
            ok, _ = client.transaction(compare=[t.value(self.key) == self.uuid], success=[t.delete(self.key)],
                                       failure=[])
        if lease is not None:
            lease.give_up()
        return bool(ok)

    def refresh(self) -> list[Any]:
        """Refresh the lock's lease once (what keeps a ``keep_alive=False`` lock held)."""
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
