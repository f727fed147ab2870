"""``Etcd3Client``: python-etcd3's API over resilient transport.

Every method keeps python-etcd3's name, arguments and return shape, and takes an extra
keyword-only ``timeout`` (seconds) where a call is made. Each call's deadline is
``min(deadline() scope, timeout, client default)``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import queue
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

from . import _lifecycle, deadlines
from ._base import ClientBase
from ._proto import rpc_pb2
from .discovery import resolve_srv
from .etcd import paging, shapes
from .etcd.election import Election
from .etcd.events import Event, WatchResponse
from .etcd.lease import Lease, LeaseState
from .etcd.lock import Lock
from .etcd.models import Alarm, Key, KVMetadata, Member, Status, prefix_range_end, to_bytes
from .etcd.transactions import BaseCompare, is_read_only
from .etcd.transactions import Transactions as Transactions  # python-etcd3's etcd3.client.Transactions
from .etcd.watch import ResponseItems, WatchManager
from .exceptions import (
    ClientClosedError,
    ConfigurationError,
    DeadlineExceeded,
    Etcd3Exception,
    LeaseLostError,
    WatchTimedOut,
)
from .transport.channels import Stubs
from .transport.endpoints import Endpoint
from .transport.transport import Metadata, Transport
from .watch import Watcher

log = logging.getLogger("resilient_etcd")


class Etcd3Client(ClientBase):
    """An etcd v3 client with python-etcd3's API that survives member restarts and hung connections.

    ``host``/``port`` name one member; ``endpoints=[...]`` names several (``"host:port"`` or
    ``"http(s)://host:port"``). ``timeout`` is the default deadline of every call (10 s when None).
    ``user``/``password`` enable auth (the token travels as gRPC metadata and is renewed when the
    server forgets it). ``ca_cert``, ``cert_key``, ``cert_cert`` are PEM file paths for TLS/mTLS, checked at
    construction and followed afterwards: files replaced on disk (certificate rotation) are used by the
    connections dialled from then on, once they load whole and the certificate matches its key.
    """

    _transport_class = Transport
    _transport: Transport

    def _started(self) -> None:
        self._watch_lock = threading.Lock()
        self._watch_manager: WatchManager | None = None
        self._watch_holder: list[WatchManager] = []  # for the finalizer, which must not hold self
        self._leases: weakref.WeakSet[Lease] = weakref.WeakSet()  # kept ones stop when the client closes
        self._iterators: weakref.WeakSet[_WatchIterator] = weakref.WeakSet()
        # a client dropped without close() still stops its threads and closes its channels
        self._finalizer = weakref.finalize(self, _shut, self._transport, self._watch_holder, self._leases,
                                           self._iterators)
        _lifecycle.register(self)
        if self._user is not None:
            try:
                self._transport.authenticate()
            except BaseException:
                self._finalizer()
                raise

    # ---- lifecycle ----
    def close(self) -> None:
        """Stop the watches, close every channel and stop the health prober. Calls made afterwards
        raise :class:`ClientClosedError` at once."""
        with self._watch_lock:
            self._watch_manager = None
        self._finalizer()

    def __enter__(self) -> Etcd3Client:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # ---- KV ----
    def _range(self, req: rpc_pb2.RangeRequest, timeout: float | None) -> rpc_pb2.RangeResponse:
        if not paging.pageable(req):
            resp: rpc_pb2.RangeResponse = self._transport.unary("kv", "Range", req, timeout=timeout)
            return resp
        with deadlines.deadline_of(timeout, self.timeout):  # one budget for every page
            return paging.paged_range(req, functools.partial(self._transport.unary, "kv", "Range"), self._pages)

    def get_response(self, key: Key, *, timeout: float | None = None, **kwargs: Any) -> rpc_pb2.RangeResponse:
        """The raw ``RangeResponse`` for ``key`` (kwargs: revision, serializable, keys_only, …)."""
        return self._range(shapes.get_request(key, kwargs), timeout)

    def get(self, key: Key, *, timeout: float | None = None,
            **kwargs: Any) -> tuple[bytes, KVMetadata] | tuple[None, None]:
        """``(value, metadata)`` of ``key``, or ``(None, None)`` when it does not exist."""
        if kwargs:
            resp = self.get_response(key, timeout=timeout, **kwargs)
        else:  # the hot path: one key is never paged, straight to the transport
            resp = self._transport.unary("kv", "Range", rpc_pb2.RangeRequest(
                key=key.encode("utf-8") if type(key) is str else to_bytes(key)), timeout=timeout)
        return shapes.value_of(resp)

    def get_prefix_response(self, key_prefix: Key, *, timeout: float | None = None,
                            **kwargs: Any) -> rpc_pb2.RangeResponse:
        """The raw ``RangeResponse`` for every key under ``key_prefix`` (kwargs as :meth:`get`)."""
        return self._range(shapes.prefix_request(key_prefix, kwargs), timeout)

    def get_prefix(self, key_prefix: Key, *, timeout: float | None = None,
                   **kwargs: Any) -> Iterator[tuple[bytes, KVMetadata]]:
        """``(value, metadata)`` for every key under ``key_prefix`` (sort_order, sort_target, keys_only …)."""
        return shapes.items(self.get_prefix_response(key_prefix, timeout=timeout, **kwargs))

    def get_range_response(self, range_start: Key, range_end: Key, sort_order: str | None = None,
                           sort_target: str = "key", *, timeout: float | None = None,
                           **kwargs: Any) -> rpc_pb2.RangeResponse:
        """The raw ``RangeResponse`` for the keys in ``[range_start, range_end)``."""
        return self._range(shapes.range_of(range_start, range_end, sort_order, sort_target, kwargs), timeout)

    def get_range(self, range_start: Key, range_end: Key, *, timeout: float | None = None,
                  **kwargs: Any) -> Iterator[tuple[bytes, KVMetadata]]:
        """Keys in ``[range_start, range_end)``."""
        return shapes.items(self.get_range_response(range_start, range_end, timeout=timeout, **kwargs))

    def get_all_response(self, sort_order: str | None = None, sort_target: str = "key", keys_only: bool = False,
                         *, timeout: float | None = None, **kwargs: Any) -> rpc_pb2.RangeResponse:
        """The raw ``RangeResponse`` for every key in the store."""
        return self._range(shapes.all_request(sort_order, sort_target, keys_only, kwargs), timeout)

    def get_all(self, *, timeout: float | None = None, **kwargs: Any) -> Iterator[tuple[bytes, KVMetadata]]:
        """Every key in the store."""
        return shapes.items(self.get_all_response(timeout=timeout, **kwargs))

    def put(self, key: Key, value: Key, lease: Lease | int | None = None, prev_kv: bool = False,
            *, timeout: float | None = None) -> rpc_pb2.PutResponse:
        """Write ``value`` to ``key``; never sent twice unless the first send provably never left."""
        with lease_gone(lease):
            resp: rpc_pb2.PutResponse = self._transport.unary(
                "kv", "Put", shapes.put_request(key, value, lease, prev_kv), timeout=timeout)
        return resp

    def put_if_not_exists(self, key: Key, value: Key, lease: Lease | int | None = None,
                          *, timeout: float | None = None) -> bool:
        """Create ``key`` only if absent; True when it was created."""
        compare, success = shapes.create_if_absent(self.transactions, key, value, lease)
        with lease_gone(lease):
            return self.transaction(compare, success, [], timeout=timeout)[0]

    def replace(self, key: Key, initial_value: Key, new_value: Key, *, timeout: float | None = None) -> bool:
        """Set ``key`` to ``new_value`` only if it holds ``initial_value``; True when replaced."""
        compare, success = shapes.swap(self.transactions, key, initial_value, new_value)
        return self.transaction(compare, success, [], timeout=timeout)[0]

    def delete(self, key: Key, prev_kv: bool = False, return_response: bool = False,
               *, timeout: float | None = None) -> bool | rpc_pb2.DeleteRangeResponse:
        """Delete ``key``; True if it existed (or the response with ``return_response=True``)."""
        req = rpc_pb2.DeleteRangeRequest(key=to_bytes(key), prev_kv=prev_kv)
        resp: rpc_pb2.DeleteRangeResponse = self._transport.unary("kv", "DeleteRange", req, timeout=timeout)
        return resp if return_response else resp.deleted >= 1

    def delete_prefix(self, prefix: Key, *, timeout: float | None = None) -> rpc_pb2.DeleteRangeResponse:
        """Delete every key under ``prefix``."""
        resp: rpc_pb2.DeleteRangeResponse = self._transport.unary(
            "kv", "DeleteRange", shapes.delete_prefix_request(prefix), timeout=timeout)
        return resp

    def transaction(self, compare: list[BaseCompare], success: list[Any] | None = None,
                    failure: list[Any] | None = None, *, timeout: float | None = None) -> tuple[bool, list[Any]]:
        """Atomic compare-and-swap. Returns ``(succeeded, responses)``; a range op's response is a list of
        ``(value, metadata)``, other ops give their protobuf response. Retried only when read-only."""
        req, ops = shapes.txn_request(compare, success, failure)
        return shapes.txn_result(self._transport.unary("kv", "Txn", req, timeout=timeout, idempotent=is_read_only(ops)))

    def compact(self, revision: int, physical: bool = False, *, timeout: float | None = None) -> None:
        """Compact the history up to ``revision``."""
        self._transport.unary("kv", "Compact", rpc_pb2.CompactionRequest(revision=revision, physical=physical),
                              timeout=timeout)

    # ---- leases ----
    def lease(self, ttl: int, lease_id: int | None = None, *, timeout: float | None = None) -> Lease:
        """Grant a lease of ``ttl`` seconds."""
        shapes.check_ttl(ttl)
        sent = time.monotonic()
        resp = self._transport.unary("lease", "LeaseGrant", rpc_pb2.LeaseGrantRequest(TTL=ttl, ID=lease_id or 0),
                                     timeout=timeout)
        lease = Lease(resp.ID, resp.TTL, self)
        lease.expires_at = sent + resp.TTL  # the server's clock started no earlier than our send
        self._leases.add(lease)
        return lease

    def revoke_lease(self, lease_id: int, *, timeout: float | None = None) -> None:
        """Revoke lease ``lease_id``: every key attached to it is deleted. Not retried unless unsent."""
        self._transport.unary("lease", "LeaseRevoke", rpc_pb2.LeaseRevokeRequest(ID=lease_id), timeout=timeout)

    def refresh_lease(self, lease_id: int, *, timeout: float | None = None) -> Iterator[rpc_pb2.LeaseKeepAliveResponse]:
        """One keep-alive for ``lease_id``; yields the server's answer (python-etcd3 shape)."""

        def invoke(stubs: Stubs, budget: float | None, md: Metadata) -> list[rpc_pb2.LeaseKeepAliveResponse]:
            stream = stubs.lease.LeaseKeepAlive(iter([rpc_pb2.LeaseKeepAliveRequest(ID=lease_id)]),
                                                timeout=budget, metadata=md)
            try:
                return [next(stream)]
            finally:
                stream.cancel()

        return iter(self._transport.call("Lease.LeaseKeepAlive", invoke, timeout=timeout, idempotent=True))

    def get_lease_info(self, lease_id: int, *, timeout: float | None = None) -> rpc_pb2.LeaseTimeToLiveResponse:
        """``TTL`` (remaining; -1 when gone), ``grantedTTL`` and the attached ``keys`` of a lease."""
        resp: rpc_pb2.LeaseTimeToLiveResponse = self._transport.unary(
            "lease", "LeaseTimeToLive", rpc_pb2.LeaseTimeToLiveRequest(ID=lease_id, keys=True), timeout=timeout)
        return resp

    # ---- watches ----
    @property
    def _watcher(self) -> WatchManager:
        with self._watch_lock:
            if not self._finalizer.alive:
                raise ClientClosedError("the client was closed")
            if self._watch_manager is None:
                self._watch_manager = WatchManager(self._transport)
                self._watch_holder.append(self._watch_manager)
            return self._watch_manager

    def add_watch_callback(self, key: Key, callback: Callable[[Any], None], range_end: Key | None = None,
                           start_revision: int | None = None, progress_notify: bool = False,
                           filters: list[int] | None = None, prev_kv: bool = False) -> int:
        """Call ``callback`` with each :class:`WatchResponse` for ``key`` (or ``[key, range_end)``), or
        with the exception that ended the watch. Returns the watch id for :meth:`cancel_watch`.

        The watch resumes by itself after restarts, hangs and failovers, from the first revision it has
        not delivered: no event is lost or repeated. Callbacks run on the watch thread; keep them short.
        """
        return self._add_watch(key, callback, range_end=range_end, start_revision=start_revision,
                               progress_notify=progress_notify, filters=filters, prev_kv=prev_kv)

    def _add_watch(self, key: Key, callback: Callable[[Any], None], *, range_end: Key | None = None,
                   start_revision: int | None = None, progress_notify: bool = False,
                   filters: list[int] | None = None, prev_kv: bool = False, timeout: float | None = None) -> int:
        """``add_watch_callback`` whose creation waits at most ``timeout`` (and the scope)."""
        k = to_bytes(key)
        end = to_bytes(range_end) if range_end is not None else b""
        timeout = deadlines.call_timeout(timeout, self.timeout)
        return self._watcher.add(k, end, callback, start_revision=start_revision, progress_notify=progress_notify,
                                 filters=filters, prev_kv=prev_kv, timeout=timeout)

    def add_watch_prefix_callback(self, key_prefix: Key, callback: Callable[[Any], None], **kwargs: Any) -> int:
        """:meth:`add_watch_callback` for every key under ``key_prefix``."""
        p = to_bytes(key_prefix)
        return self.add_watch_callback(p, callback, range_end=prefix_range_end(p), **kwargs)

    def cancel_watch(self, watch_id: int) -> None:
        """Stop a watch; its iterator ends (nothing to do once the client is closed)."""
        with self._watch_lock:
            manager = self._watch_manager
        if manager is not None:
            manager.cancel(watch_id)

    def watch_response(self, key: Key, **kwargs: Any) -> tuple[Iterator[WatchResponse], Callable[[], None]]:
        """``(iterator of WatchResponse, cancel)``; the iterator raises the error that ends the watch.

        :class:`NoLeaderError` is the exception to that: it is raised when the cluster loses its
        leader (require-leader watches), and the *same* iterator goes on after it once quorum is back.
        """
        responses: queue.SimpleQueue[Any] = queue.SimpleQueue()
        watch_id = self.add_watch_callback(key, responses.put, **kwargs)
        it = _WatchIterator(responses, self)
        self._iterators.add(it)

        def cancel() -> None:
            it.close()
            self.cancel_watch(watch_id)

        return it, cancel

    def watch_prefix_response(self, key_prefix: Key,
                              **kwargs: Any) -> tuple[Iterator[WatchResponse], Callable[[], None]]:
        """:meth:`watch_response` for every key under ``key_prefix``."""
        p = to_bytes(key_prefix)
        return self.watch_response(p, range_end=prefix_range_end(p), **kwargs)

    def watch(self, key: Key, **kwargs: Any) -> tuple[Iterator[Event], Callable[[], None]]:
        """``(iterator of events, cancel)`` for ``key``: python-etcd3's ``watch``, but resumable
        (a :class:`NoLeaderError` from it is transient: keep iterating)."""
        responses, cancel = self.watch_response(key, **kwargs)
        return _EventIterator(responses), cancel

    def watch_prefix(self, key_prefix: Key, **kwargs: Any) -> tuple[Iterator[Event], Callable[[], None]]:
        """:meth:`watch` for every key under ``key_prefix``: ``(iterator of events, cancel)``."""
        p = to_bytes(key_prefix)
        return self.watch(p, range_end=prefix_range_end(p), **kwargs)

    def watch_once(self, key: Key, timeout: float | None = None, **kwargs: Any) -> Event:
        """The next event on ``key``, or :class:`WatchTimedOut` after ``timeout`` seconds (None: no
        limit of its own, but a :func:`deadline` scope still applies, then as :class:`DeadlineExceeded`)."""
        event: Event = self.watch_once_response(key, timeout=timeout, **kwargs).events[0]
        return event

    def watch_once_response(self, key: Key, timeout: float | None = None, **kwargs: Any) -> WatchResponse:
        """The next ``WatchResponse`` with events on ``key`` (timeouts as :meth:`watch_once`)."""
        got: queue.SimpleQueue[Any] = queue.SimpleQueue()

        def first(item: Any) -> None:
            if isinstance(item, BaseException) or item.events:
                got.put(item)

        scope = deadlines.remaining()
        by_scope = scope is not None and (timeout is None or scope < timeout)
        wait = deadlines.call_timeout(timeout, None)
        end = None if wait is None else time.monotonic() + wait
        watch_id = self._add_watch(key, first, timeout=wait, **kwargs)
        try:
            item = got.get(timeout=None if end is None else max(0.0, end - time.monotonic()))
        except queue.Empty:
            if by_scope:
                raise DeadlineExceeded(f"deadline exceeded waiting for an event on {key!r}") from None
            raise WatchTimedOut(f"no event on {key!r} within {timeout} s") from None
        finally:
            self.cancel_watch(watch_id)
        if isinstance(item, BaseException):
            raise item
        response: WatchResponse = item
        return response

    def watch_prefix_once(self, key_prefix: Key, timeout: float | None = None, **kwargs: Any) -> Event:
        """:meth:`watch_once` for every key under ``key_prefix``."""
        p = to_bytes(key_prefix)
        return self.watch_once(p, timeout=timeout, range_end=prefix_range_end(p), **kwargs)

    def watch_prefix_once_response(self, key_prefix: Key, timeout: float | None = None,
                                   **kwargs: Any) -> WatchResponse:
        """:meth:`watch_once_response` for every key under ``key_prefix``."""
        p = to_bytes(key_prefix)
        return self.watch_once_response(p, timeout=timeout, range_end=prefix_range_end(p), **kwargs)

    @property
    def watcher(self) -> Watcher:
        """python-etcd3's ``client.watcher``: ``add_callback(key, callback, **kwargs)`` and ``cancel(watch_id)``."""
        return Watcher(self)

    # ---- locks ----
    def lock(self, name: str, ttl: int = 60, on_lost: Callable[[Lock], None] | None = None, *,
             keep_alive: bool = True) -> Lock:
        """A :class:`Lock` named ``name`` (key ``/locks/<name>``) on a lease of ``ttl`` s, kept alive in the
        background (``keep_alive=False``: python-etcd3's behaviour, it expires unless ``refresh()``-ed)."""
        return Lock(name, ttl=ttl, etcd_client=self, on_lost=on_lost, keep_alive=keep_alive)

    def election(self, name: str, ttl: int = 10, on_lost: Callable[[Election], None] | None = None) -> Election:
        """An :class:`Election` under ``/election/<name>/``; candidates hold a kept lease of ``ttl`` s."""
        return Election(self, name, ttl=ttl, on_lost=on_lost)

    # ---- cluster ----
    @property
    def members(self) -> Iterator[Member]:
        """Every member of the cluster, as the member asked knows it (a serializable read, as in
        python-etcd3: it answers without a quorum; with several endpoints a member change just made
        through another one may show a moment later)."""
        resp = self._transport.unary("cluster", "MemberList", rpc_pb2.MemberListRequest())
        return (Member.from_proto(m, self) for m in resp.members)

    def add_member(self, urls: list[str], *, timeout: float | None = None) -> Member:
        """Add a member with peer ``urls`` to the cluster; the new :class:`Member` (start it afterwards)."""
        resp = self._transport.unary("cluster", "MemberAdd", rpc_pb2.MemberAddRequest(peerURLs=urls),
                                     timeout=timeout)
        return Member.from_proto(resp.member, self)

    def remove_member(self, member_id: int, *, timeout: float | None = None) -> None:
        """Remove member ``member_id`` from the cluster."""
        self._transport.unary("cluster", "MemberRemove", rpc_pb2.MemberRemoveRequest(ID=member_id), timeout=timeout)

    def update_member(self, member_id: int, peer_urls: list[str], *, timeout: float | None = None) -> None:
        """Change the peer URLs of member ``member_id``."""
        self._transport.unary("cluster", "MemberUpdate",
                              rpc_pb2.MemberUpdateRequest(ID=member_id, peerURLs=peer_urls), timeout=timeout)

    # ---- maintenance ----
    def status(self, *, endpoint: str | None = None, timeout: float | None = None) -> Status:
        """Status of one member (``endpoint``, default: the member in use), with the leader resolved to a
        :class:`Member`. Answers about one member are never taken from another: if that member fails,
        this raises."""
        with deadlines.deadline_of(timeout, self.timeout):
            st = self._transport.unary("maintenance", "Status", rpc_pb2.StatusRequest(),
                                       pin=self._member_conn(endpoint))
            return shapes.status(st, list(self.members))

    def defragment(self, *, endpoint: str | None = None, timeout: float | None = None) -> rpc_pb2.DefragmentResponse:
        """Defragment one member (``endpoint``, default: the member in use) — never another one, even if
        it fails (etcd's guidance: one member at a time). While it runs, traffic goes to the other
        members and this one is not probed or ejected (a defragmenting member stalls reads)."""
        conn = self._member_conn(endpoint)
        with self._transport.pool.maintenance(conn):
            resp: rpc_pb2.DefragmentResponse = self._transport.unary(
                "maintenance", "Defragment", rpc_pb2.DefragmentRequest(), timeout=timeout, pin=conn)
        return resp

    def hash(self, *, endpoint: str | None = None, timeout: float | None = None) -> int:
        """The KV hash of one member (``endpoint``, default: the member in use)."""
        return int(self._transport.unary("maintenance", "Hash", rpc_pb2.HashRequest(), timeout=timeout,
                                         pin=self._member_conn(endpoint)).hash)

    def _alarm(self, action: Any, member_id: int, alarm_type: Any, timeout: float | None) -> list[Alarm]:
        req = shapes.alarm_request(action, member_id, alarm_type)
        return shapes.alarms(self._transport.unary("maintenance", "Alarm", req, timeout=timeout,
                                                   idempotent=action == rpc_pb2.AlarmRequest.GET))

    def create_alarm(self, member_id: int = 0, *, timeout: float | None = None) -> list[Alarm]:
        """Raise a NOSPACE alarm (for tests of alarm handling)."""
        return self._alarm(rpc_pb2.AlarmRequest.ACTIVATE, member_id, rpc_pb2.NOSPACE, timeout)

    def list_alarms(self, member_id: int = 0, alarm_type: str = "none",
                    *, timeout: float | None = None) -> list[Alarm]:
        """The active alarms (of ``member_id``, 0: all members; of ``alarm_type``, "none": all types)."""
        return self._alarm(rpc_pb2.AlarmRequest.GET, member_id, shapes.alarm_type(alarm_type), timeout)

    def disarm_alarm(self, member_id: int = 0, *, timeout: float | None = None) -> list[Alarm]:
        """Clear the NOSPACE alarm (of ``member_id``, 0: every member); the alarms it cleared."""
        return self._alarm(rpc_pb2.AlarmRequest.DEACTIVATE, member_id, rpc_pb2.NOSPACE, timeout)

    def snapshot(self, file_obj: IO[bytes], *, endpoint: str | None = None, timeout: float | None = None) -> None:
        """Stream a snapshot of one member's backend database (``endpoint``, default: the member in use)
        into ``file_obj``, chunk by chunk: memory stays flat whatever the database size.

        A snapshot of a large database over a slow link takes as long as it takes, so it has **no
        default deadline**: only ``timeout`` or a :func:`deadline` scope bound it. It is not moved to
        another member if this one fails mid-way (``file_obj`` then holds a partial snapshot, and the
        error is raised).
        """

        conn = self._member_conn(endpoint)

        def invoke(stubs: Stubs, budget: float | None, md: Metadata) -> None:
            for r in stubs.maintenance.Snapshot(rpc_pb2.SnapshotRequest(), timeout=budget, metadata=md):
                conn.heard()  # every chunk proves the connection alive: a probe behind them is no verdict
                file_obj.write(r.blob)

        self._transport.call("Maintenance.Snapshot", invoke, timeout=timeout, pin=conn, default_timeout=None)


@contextlib.contextmanager
def lease_gone(lease: LeaseState | int | None) -> Iterator[None]:
    """A write on a lease the server no longer knows raises :class:`LeaseLostError` (and marks a
    :class:`Lease` lost), as promised, instead of a bare "requested lease not found"."""
    if isinstance(lease, LeaseState):
        lease.check()
    try:
        yield
    except Etcd3Exception as e:
        if lease is None or lease == 0 or "lease not found" not in str(e):
            raise
        if isinstance(lease, LeaseState):
            lease._mark_lost("not found on the server (expired or revoked)", notify=False)
            raise LeaseLostError(lease.id, "not found on the server (expired or revoked)") from e
        raise LeaseLostError(int(lease), "not found on the server (expired or revoked)") from e


def _shut(transport: Transport, watch_holder: list[WatchManager], leases: weakref.WeakSet[Lease],
          iterators: weakref.WeakSet[_WatchIterator]) -> None:
    """Close a client (from ``close()``, when it is collected, or at exit): its lease keepers stop, its
    watch iterators end, its watch threads, prober and channels go."""
    for lease in list(leases):
        lease.stop_keep_alive()
    for it in list(iterators):
        it.close()
    for manager in watch_holder:
        manager.close()
    watch_holder.clear()
    transport.close()


class _WatchIterator(ResponseItems):
    """Responses of one watch; raises the ending error, or a transient NoLeaderError and goes on.
    Ends when the watch is cancelled or its client closed."""

    def __init__(self, responses: queue.SimpleQueue[Any], client: Etcd3Client) -> None:
        self._responses = responses
        self._client = client  # a watch in use keeps its client (and so its connections) alive

    def close(self) -> None:
        self.done = True
        self._responses.put(None)

    def __iter__(self) -> _WatchIterator:
        return self

    def __next__(self) -> WatchResponse:
        if self.done:
            raise StopIteration
        with _lifecycle.busy():
            resp = self._item(self._responses.get())
        if resp is None:
            raise StopIteration
        return resp


class _EventIterator:
    """Events of a watch, flattened from its responses (transient errors pass through)."""

    def __init__(self, responses: Iterator[WatchResponse]) -> None:
        self._responses = responses
        self._pending: list[Event] = []

    def __iter__(self) -> _EventIterator:
        return self

    def __next__(self) -> Event:
        while not self._pending:
            self._pending = list(next(self._responses).events)
        return self._pending.pop(0)


client = Etcd3Client
"""``resilient_etcd.client(...)`` builds an :class:`Etcd3Client` — python-etcd3's ``etcd3.client``
signature (``host, port, ca_cert, cert_key, cert_cert, timeout, user, password, grpc_options``)
plus keyword-only ``endpoints``, ``keepalive``, ``health`` and ``retry``."""


class MultiEndpointEtcd3Client(Etcd3Client):
    """python-etcd3 master's multi-endpoint client: ``MultiEndpointEtcd3Client(endpoints=[Endpoint(host,
    port, secure=False), ...], timeout=...)``. Failing over is what every client here does, so ``failover``
    changes nothing; per-call gRPC ``call_credentials`` are not supported (use ``user``/``password`` or
    client certificates on :class:`Etcd3Client`)."""

    def __init__(self, endpoints: Sequence[str | Endpoint] | None = None, timeout: float | None = None,
                 call_credentials: Any = None, watch_timeout: float | None = None, failover: bool = False,
                 **kwargs: Any) -> None:
        if call_credentials is not None:
            raise ConfigurationError("call_credentials are not supported: give user/password or client certificates")
        if endpoints is None:
            raise ConfigurationError("MultiEndpointEtcd3Client needs endpoints=[...]")
        super().__init__(endpoints=endpoints, timeout=timeout, **kwargs)
        self.failover = failover

    @property
    def endpoints(self) -> dict[str, Endpoint]:
        """python-etcd3 master's ``{"host:port": Endpoint}`` of the client's endpoints."""
        return {c.endpoint.target: c.endpoint for c in self._transport.pool.conns}

    @property
    def endpoint_in_use(self) -> Endpoint:
        """The endpoint reads go to now (writes go to the raft leader's)."""
        return self._transport.pool.active.endpoint

    def get_watcher(self) -> Watcher:
        """python-etcd3 master's ``get_watcher()``: the same as :attr:`watcher`."""
        return self.watcher


class EtcdTokenCallCredentials:
    """python-etcd3 master's token call credentials (a ``grpc.AuthMetadataPlugin``), kept for imports:
    clients here carry the token themselves (``user``/``password``) and refuse ``call_credentials``."""

    def __init__(self, access_token: str) -> None:
        self._access_token = access_token

    def __call__(self, context: Any, callback: Callable[[Metadata, Exception | None], None]) -> None:
        callback((("token", self._access_token),), None)

    def __repr__(self) -> str:
        return "EtcdTokenCallCredentials(<token>)"  # never the token


class SRVDiscoveryEtcd3Client(MultiEndpointEtcd3Client):
    """python-etcd3 master's DNS SRV client: ``SRVDiscoveryEtcd3Client(srv, ca_cert=None, cert_key=None,
    cert_cert=None, timeout=None, user=None, password=None, grpc_options=None)``. The endpoints are the
    targets of the SRV records of ``srv`` (e.g. ``_etcd-client._tcp.example.com``; see
    :mod:`resilient_etcd.discovery`); :meth:`refresh_endpoints` looks them up again and follows the
    answer. Needs dnspython (``pip install 'resilient-etcd[srv]'``). Keyword-only extras: ``resolver``
    (a ``dns.resolver.Resolver``; default: the system's), and :class:`Etcd3Client`'s ``keepalive``,
    ``health``, ``retry``. A name that does not exist or has no SRV record is a ``ConfigurationError``
    at construction."""

    def __init__(self, srv: str, ca_cert: str | None = None, cert_key: str | None = None,
                 cert_cert: str | None = None, timeout: float | None = None, user: str | None = None,
                 password: str | None = None, grpc_options: Sequence[tuple[str, Any]] | None = None, *,
                 resolver: Any = None, **kwargs: Any) -> None:
        self.srv = srv
        self._resolver = resolver
        endpoints = resolve_srv(srv, lifetime=deadlines.validate_timeout("timeout", timeout), resolver=resolver)
        super().__init__(endpoints=endpoints, timeout=timeout, ca_cert=ca_cert, cert_key=cert_key,
                         cert_cert=cert_cert, user=user, password=password, grpc_options=grpc_options, **kwargs)

    def refresh_endpoints(self) -> list[Endpoint]:
        """Look the SRV records up again and make them the endpoint set: connections to members still
        listed keep their health, new members get connections, the others are closed (calls in flight
        there fail over like after an ejection). Returns the endpoints now in use. A failed lookup raises
        (``ConnectionFailedError``, or ``ConfigurationError`` when the name is gone) and changes nothing."""
        if not self._finalizer.alive:
            raise ClientClosedError("the client was closed; its endpoints were not refreshed")
        endpoints = resolve_srv(self.srv, lifetime=self.timeout, resolver=self._resolver)
        self._transport.pool.follow_endpoints(endpoints, f"SRV refresh of {self.srv}")
        return endpoints


if TYPE_CHECKING:  # what its leases, locks, elections and watcher call back on it (they do not import it)
    from .etcd.owner import SyncClient

    _owner: type[SyncClient] = Etcd3Client
