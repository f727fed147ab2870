"""python-etcd3's ``Lock``, held through a kept lease, with a fencing revision."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Generator
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .. import deadlines
from .._steps import Call, apply, call, drive
from ..exceptions import ConfigurationError, DeadlineExceeded, LockLostError, WatchTimedOut
from .lease import Lease

if TYPE_CHECKING:
    from .owner import SyncClient

LOCK_PREFIX = "/locks/"
_NOPUT = 0  # WatchCreateRequest.FilterType.NOPUT: only deletions wake us


Steps = Generator[Call, Any, Any]


class LockCore:
    """A lock's state and what taking and giving it up take, as steps (see :mod:`resilient_etcd._steps`):
    method calls on the client and the lease, the same names on either face."""

    def __init__(self, name: str, ttl: int = 60, etcd_client: Any = None,
                 on_lost: Callable[[Any], None] | None = None, *, keep_alive: bool = True) -> None:
        if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl <= 0:
            raise ConfigurationError(f"lock ttl must be a positive integer of seconds, got {ttl!r}")
        self.name = name
        self.ttl = ttl
        self.etcd_client = etcd_client
        self.key = LOCK_PREFIX + name
        self.uuid = uuid.uuid1().bytes
        self.lease: Any = None
        self.revision: int | None = None
        self.keep_alive = keep_alive
        self._on_lost = on_lost
        self._lost = threading.Event()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.name!r}, ttl={self.ttl}, revision={self.revision}, "
                f"keep_alive={self.keep_alive})")

    def _client(self) -> Any:
        if self.etcd_client is None:
            raise ValueError(f"this {type(self).__name__} is not bound to a client")
        return self.etcd_client

    def _acquire_steps(self, timeout: float | None) -> Steps:
        """Take the lock within ``timeout`` (and any scope): True when held, False when ``timeout`` ran out.
        Whatever a failed attempt started (its lease) is given up."""
        client = self._client()
        if timeout is not None:
            deadlines.validate_timeout("timeout", timeout)
        own_end = None if timeout is None else time.monotonic() + timeout
        with deadlines.deadline_of(timeout, None):
            try:
                return (yield from self._attempts(client))
            except (WatchTimedOut, DeadlineExceeded):
                if own_end is not None and time.monotonic() >= own_end - 0.005:
                    return False  # our own timeout, not an outer scope's
                raise

    def _attempts(self, client: Any) -> Steps:
        t = client.transactions
        while True:
            lease = yield call(client, "lease", self.ttl)
            try:
                ok, responses = yield call(client, "transaction", compare=[t.create(self.key) == 0],
                                           success=[t.put(self.key, self.uuid, lease=lease)],
                                           failure=[t.get(self.key)])
            except BaseException:
                yield call(lease, "abandon")  # the put may have been applied: revoking takes the key with it
                raise
            if ok:
                self.lease = lease
                self.revision = int(responses[0].header.revision)
                self._lost.clear()
                lease.keep_alive(on_lost=self._lease_lost, refresh=self.keep_alive)
                return True
            yield call(lease, "give_up")
            holder = responses[0]
            if not holder:
                continue  # released between our compare and now
            seen_at = holder[0][1].response_header.revision
            # wait for the holder's key to go (replaying from what we saw, so no release is missed)
            yield call(client, "watch_once", self.key, start_revision=seen_at + 1, filters=[_NOPUT])

    def _release_steps(self) -> Steps:
        """Give the lock up; False when we did not hold it. The lease is stopped and revoked whatever
        happens to the delete (if that fails, the lease's revocation still frees the lock)."""
        client = self._client()
        t = client.transactions
        lease, self.lease = self.lease, None
        try:
            ok, _ = yield call(client, "transaction", compare=[t.value(self.key) == self.uuid],
                               success=[t.delete(self.key)], failure=[])
        except BaseException:
            if lease is not None:
                yield call(lease, "abandon")
            raise
        if lease is not None:
            yield call(lease, "give_up")
        return bool(ok)

    def _held_steps(self) -> Steps:
        """True while we hold it: our value is on the key and the lease has not been lost."""
        if self.lease is None or self._lost.is_set():
            return False
        value, _ = yield call(self._client(), "get", self.key)
        return value == self.uuid

    def _refresh_call(self) -> Call:
        if self.lease is None:
            raise ValueError("no lease: the lock is not held")
        return call(self.lease, "refresh")

    def check(self) -> None:
        """Raise :class:`LockLostError` if the lock was lost."""
        if self._lost.is_set():
            raise LockLostError(f"lock {self.name!r} lost with its lease")

    def _lease_lost(self, lease: Any) -> None:
        self._lost.set()
        if self._on_lost is not None:
            self._on_lost(self)


class Lock(LockCore):
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

    etcd_client: SyncClient | None
    lease: Lease | None

    def __init__(self, name: str, ttl: int = 60, etcd_client: SyncClient | None = None,
                 on_lost: Callable[[Lock], None] | None = None, *, keep_alive: bool = True) -> None:
        super().__init__(name, ttl, etcd_client, on_lost, keep_alive=keep_alive)

    def acquire(self, timeout: float | None = 10) -> bool:
        """Take the lock, waiting up to ``timeout`` seconds (None: no limit of its own). True when held,
        False when ``timeout`` ran out. The whole call — lease grant, transaction, waiting — keeps
        within ``timeout`` and any :func:`deadline` scope (whose expiry raises
        :class:`DeadlineExceeded`). Whatever a failed attempt started (its lease) is given up."""
        return bool(drive(self._acquire_steps(timeout), apply))

    def release(self) -> bool:
        """Give the lock up; False when we did not hold it (see :meth:`LockCore._release_steps`)."""
        return bool(drive(self._release_steps(), apply))

    def refresh(self) -> list[Any]:
        """Refresh the lock's lease once (what keeps a ``keep_alive=False`` lock held)."""
        result: list[Any] = apply(self._refresh_call())
        return result

    def is_acquired(self) -> bool:
        """True while we hold it: our value is on the key and the lease has not been lost."""
        return bool(drive(self._held_steps(), apply))

    def __enter__(self) -> Lock:
        self.acquire(timeout=None)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
