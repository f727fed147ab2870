"""Leader election with clientv3 ``concurrency`` semantics, for controllers that must run single-active.

Each candidate puts ``<prefix><lease id>`` under its own kept lease; the candidate whose key has the
lowest create revision leads. ``campaign()`` blocks until every earlier key is gone. Leadership
is lost with the lease: ``on_lost`` fires within the lease TTL of being cut off, and
``is_leader()`` turns False. ``revision`` (the key's create revision) is a fencing token: a later
leader always has a larger one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator, Iterator
from typing import TYPE_CHECKING, Any

from .._steps import Call, apply, call, drive
from ..deadlines import deadline_of, validate_timeout
from ..exceptions import ConfigurationError, DeadlineExceeded, Etcd3Exception, WatchTimedOut
from .lease import Lease
from .models import Key, KVMetadata, to_bytes

if TYPE_CHECKING:
    from .owner import SyncClient

_NOPUT = 0  # only deletions


class NotLeaderError(Etcd3Exception):
    """The operation needs leadership this candidate does not hold (never had it, resigned, or lost it)."""


Steps = Generator[Call, Any, Any]


class ElectionCore:
    """A candidacy's state and what campaigning, proclaiming, resigning and asking take, as steps (see
    :mod:`resilient_etcd._steps`): method calls on the client and the lease, the same on either face."""

    def __init__(self, client: Any, name: str, ttl: int = 10, on_lost: Callable[[Any], None] | None = None) -> None:
        if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl <= 0:
            raise ConfigurationError(f"election ttl must be a positive integer of seconds, got {ttl!r}")
        self.client = client
        self.prefix = f"/election/{name}/".encode()
        self.ttl = ttl
        self._on_lost = on_lost
        self.lease: Any = None
        self.key: bytes | None = None
        self.revision: int | None = None
        self._lost = threading.Event()

    def _campaign_steps(self, value: Key, timeout: float | None) -> Steps:
        """Become leader with ``value`` within ``timeout`` (and any scope); False when ``timeout`` ran out.
        On False or any error the candidacy is withdrawn."""
        if timeout is not None:
            validate_timeout("timeout", timeout)
        own_end = None if timeout is None else time.monotonic() + timeout
        try:
            with deadline_of(timeout, None):
                yield from self._candidacy(to_bytes(value, "value"))
            return True
        except (WatchTimedOut, DeadlineExceeded):
            yield from self._withdraw()
            if own_end is not None and time.monotonic() >= own_end - 0.005:
                return False  # our own timeout, not an outer scope's
            raise
        except BaseException:
            yield from self._withdraw()
            raise

    def _candidacy(self, value: bytes) -> Steps:
        c = self.client
        t = c.transactions
        if self.lease is None or self.lease.is_lost or self.key is None:
            yield from self._withdraw()
            self._lost.clear()
            lease = yield call(c, "lease", self.ttl)
            self.lease = lease.keep_alive(on_lost=self._lease_lost)
            self.key = self.prefix + f"{lease.id:x}".encode()
        ok, responses = yield call(c, "transaction", compare=[t.create(self.key) == 0],
                                   success=[t.put(self.key, value, lease=self.lease)], failure=[t.get(self.key)])
        if ok:
            self.revision = int(responses[0].header.revision)
        else:  # our candidacy exists already (a campaign again): publish the new value on it
            self.revision = responses[0][0][1].create_revision
            yield call(c, "transaction", compare=[t.create(self.key) == self.revision],
                       success=[t.put(self.key, value, lease=self.lease)], failure=[])
        while True:  # wait until no key created before ours remains
            resp = yield call(c, "get_prefix_response", self.prefix, sort_order="descend", sort_target="create",
                              limit=1, max_create_revision=self.revision - 1)
            if not resp.kvs:
                return
            yield call(c, "watch_once", resp.kvs[0].key, start_revision=resp.header.revision + 1, filters=[_NOPUT])
            self._check()

    def _withdraw(self) -> Steps:
        """Stop and give up whatever candidacy exists, without waiting for the cluster."""
        lease, self.lease = self.lease, None
        self.key = self.revision = None
        if lease is not None:
            yield call(lease, "abandon")

    def _check(self) -> None:
        if self._lost.is_set():
            raise NotLeaderError("leadership lost with the lease")
        if self.key is None:
            raise NotLeaderError("not campaigning")

    def _proclaim_steps(self, value: Key) -> Steps:
        self._check()
        t = self.client.transactions
        ok, _ = yield call(self.client, "transaction", compare=[t.create(self.key) == self.revision],
                           success=[t.put(self.key, to_bytes(value, "value"), lease=self.lease)], failure=[])
        if not ok:
            raise NotLeaderError("our election key is gone: leadership was lost")

    def _resign_steps(self) -> Steps:
        key, revision, lease = self.key, self.revision, self.lease
        self.key = self.revision = self.lease = None
        try:
            if key is not None and revision is not None:
                t = self.client.transactions
                yield call(self.client, "transaction", compare=[t.create(key) == revision], success=[t.delete(key)],
                           failure=[])
        except BaseException:
            if lease is not None:
                yield call(lease, "abandon")
            raise
        if lease is not None:
            yield call(lease, "give_up")

    def _leader_steps(self) -> Steps:
        """``(value, metadata)`` of the current leader's key, or None when nobody leads."""
        resp = yield call(self.client, "get_prefix_response", self.prefix, sort_order="ascend", sort_target="create",
                          limit=1)
        if not resp.kvs:
            return None
        kv = resp.kvs[0]
        return kv.value, KVMetadata(kv, resp.header)

    def _is_leader_steps(self) -> Steps:
        if self.key is None or self._lost.is_set():
            return False
        current = yield from self._leader_steps()
        return current is not None and current[1].key == self.key

    def _lease_lost(self, lease: Any) -> None:
        self._lost.set()
        if self._on_lost is not None:
            self._on_lost(self)


class Election(ElectionCore):
    """``campaign(value)``, ``proclaim(value)``, ``resign()``, ``leader()``, ``observe()``."""

    client: SyncClient
    lease: Lease | None

    def __init__(self, client: SyncClient, name: str, ttl: int = 10,
                 on_lost: Callable[[Election], None] | None = None) -> None:
        super().__init__(client, name, ttl, on_lost)

    def __repr__(self) -> str:
        return f"Election({self.prefix!r}, leader={self.is_leader()}, revision={self.revision})"

    def campaign(self, value: Key, timeout: float | None = None) -> bool:
        """Become leader with ``value``; waits for earlier candidates, up to ``timeout`` seconds (None: no
        limit of its own; a :func:`deadline` scope still applies and raises :class:`DeadlineExceeded`).

        Returns False when ``timeout`` runs out. On False or any error the candidacy is withdrawn:
        its keeper stops and its lease (with the key) is revoked, or expires within ``ttl`` if the
        cluster cannot be reached. Campaigning again while a candidacy is alive reuses it.
        """
        return bool(drive(self._campaign_steps(value, timeout), apply))

    def is_leader(self) -> bool:
        """True while this candidate's key is the oldest under the prefix and its lease is alive."""
        return bool(drive(self._is_leader_steps(), apply))

    def proclaim(self, value: Key) -> None:
        """Publish a new value as the current leader, without re-election."""
        drive(self._proclaim_steps(value), apply)

    def resign(self) -> None:
        """Give up leadership (or candidacy). The keeper stops and the lease is revoked whatever
        happens to the delete (if the cluster cannot be reached, the lease expires within ``ttl``)."""
        drive(self._resign_steps(), apply)

    def leader(self) -> tuple[bytes, KVMetadata] | None:
        """``(value, metadata)`` of the current leader's key, or None when nobody leads."""
        result: tuple[bytes, KVMetadata] | None = drive(self._leader_steps(), apply)
        return result

    def observe(self) -> tuple[Iterator[bytes | None], Callable[[], None]]:
        """``(iterator, cancel)``: the leader's value now and after every change (None: nobody leads)."""
        events, cancel = self.client.watch_prefix(self.prefix)

        def values() -> Iterator[bytes | None]:
            last: Any = object()
            current = self.leader()
            value = None if current is None else current[0]
            while True:
                if value != last:
                    last = value
                    yield value
                if next(events, None) is None:
                    return  # cancelled, or the client was closed
                current = self.leader()
                value = None if current is None else current[0]

        return values(), cancel

    def __enter__(self) -> Election:
        return self

    def __exit__(self, *exc: object) -> None:
        self.resign()


__all__ = ["Election", "ElectionCore", "NotLeaderError"]
