"""``AsyncEtcd3Client``: the sync client's API as coroutines, on ``grpc.aio``.

Same arguments, same return shapes (a range is a list rather than a generator), same exceptions, and
the same guarantees: the endpoint pool, health probes, retry table and deadline scopes are the sync
client's own (see docs/asyncio.md). Make it inside a running event loop, and use it on that loop.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

from .. import deadlines
from .._base import ClientBase
from .._proto import rpc_pb2
from .._steps import adrive
from ..client import lease_gone
from ..etcd import paging, shapes
from ..etcd.events import Event, WatchResponse
from ..etcd.models import Alarm, Key, KVMetadata, Member, Status, prefix_range_end, to_bytes
from ..etcd.transactions import BaseCompare, is_read_only
from ..exceptions import ClientClosedError, DeadlineExceeded, WatchTimedOut
from ..transport.channels import Stubs
from ..transport.core import Metadata
from .election import AsyncElection
from .lease import AsyncLease
from .lock import AsyncLock
from .transport import AsyncTransport
from .watch import AsyncWatchManager, EventIterator, WatchIterator

Values = list[tuple[bytes, KVMetadata]]


class AsyncEtcd3Client(ClientBase):
    """An etcd v3 client for asyncio with python-etcd3's API (see ``Etcd3Client`` for the arguments)."""

    _transport_class = AsyncTransport
    _transport: AsyncTransport

    def _started(self) -> None:
        self._leases: weakref.WeakSet[AsyncLease] = weakref.WeakSet()  # kept ones stop when the client closes
        self._closers: list[Callable[[], Any]] = []  # what else ends with the client (the watch manager)
        self._authenticated = self._user is None
        self._watch_manager: AsyncWatchManager | None = None

    # ---- lifecycle ----
    async def close(self) -> None:
        """:meth:`aclose` (python-etcd3's name)."""
        await self.aclose()

    async def aclose(self) -> None:
        """Stop lease keepers and watches, close every channel; later calls raise ``ClientClosedError``."""
        for lease in list(self._leases):
            await lease.stop_keep_alive()
            revoking = lease._abandoning
            if revoking is not None and not revoking.done():  # a revoke after a failure: a moment, no more
                _, pending = await asyncio.wait([revoking], timeout=1.0)
                for task in pending:
                    task.cancel()
        for close in self._closers:
            await close()
        await self._transport.aclose()

    async def __aenter__(self) -> AsyncEtcd3Client:
        await self._login()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def _login(self) -> None:
        if not self._authenticated:
            await self._transport.authenticate()
            self._authenticated = True

    async def _unary(self, service: str, method: str, request: Any, **kwargs: Any) -> Any:
        if not self._authenticated:
            await self._login()
        return await self._transport.unary(service, method, request, **kwargs)

    # ---- KV ----
    async def _range(self, req: rpc_pb2.RangeRequest, timeout: float | None) -> rpc_pb2.RangeResponse:
        if not paging.pageable(req):
            resp: rpc_pb2.RangeResponse = await self._unary("kv", "Range", req, timeout=timeout)
            return resp
        with deadlines.deadline_of(timeout, self.timeout):  # one budget for every page
            return await adrive(paging.page_steps(req, self._pages), self._page)

    async def _page(self, req: rpc_pb2.RangeRequest) -> rpc_pb2.RangeResponse:
        resp: rpc_pb2.RangeResponse = await self._unary("kv", "Range", req)
        return resp

    async def get_response(self, key: Key, *, timeout: float | None = None, **kwargs: Any) -> rpc_pb2.RangeResponse:
        """The raw ``RangeResponse`` for ``key`` (kwargs: revision, serializable, keys_only, …)."""
        return await self._range(shapes.get_request(key, kwargs), timeout)

    async def get(self, key: Key, *, timeout: float | None = None,
                  **kwargs: Any) -> tuple[bytes, KVMetadata] | tuple[None, None]:
        """``(value, metadata)`` of ``key``, or ``(None, None)`` when it does not exist."""
        if kwargs or not self._authenticated:
            return shapes.value_of(await self.get_response(key, timeout=timeout, **kwargs))
        # the hot path: one key is never paged, straight to the transport
        return shapes.value_of(await self._transport.read(rpc_pb2.RangeRequest(key=to_bytes(key)), timeout))

    async def get_prefix_response(self, key_prefix: Key, *, timeout: float | None = None,
                                  **kwargs: Any) -> rpc_pb2.RangeResponse:
        """The raw ``RangeResponse`` for every key under ``key_prefix``."""
        return await self._range(shapes.prefix_request(key_prefix, kwargs), timeout)

    async def get_prefix(self, key_prefix: Key, *, timeout: float | None = None, **kwargs: Any) -> Values:
        """``(value, metadata)`` for every key under ``key_prefix`` (sort_order, sort_target, keys_only …)."""
        return list(shapes.items(await self.get_prefix_response(key_prefix, timeout=timeout, **kwargs)))

    async def get_range_response(self, range_start: Key, range_end: Key, sort_order: str | None = None,
                                 sort_target: str = "key", *, timeout: float | None = None,
                                 **kwargs: Any) -> rpc_pb2.RangeResponse:
        """The raw ``RangeResponse`` for the keys in ``[range_start, range_end)``."""
        return await self._range(shapes.range_of(range_start, range_end, sort_order, sort_target, kwargs), timeout)

    async def get_range(self, range_start: Key, range_end: Key, *, timeout: float | None = None,
                        **kwargs: Any) -> Values:
        """Keys in ``[range_start, range_end)``."""
        return list(shapes.items(await self.get_range_response(range_start, range_end, timeout=timeout, **kwargs)))

    async def get_all_response(self, sort_order: str | None = None, sort_target: str = "key",
                               keys_only: bool = False, *, timeout: float | None = None,
                               **kwargs: Any) -> rpc_pb2.RangeResponse:
        """The raw ``RangeResponse`` for every key in the store."""
        return await self._range(shapes.all_request(sort_order, sort_target, keys_only, kwargs), timeout)

    async def get_all(self, *, timeout: float | None = None, **kwargs: Any) -> Values:
        """Every key in the store."""
        return list(shapes.items(await self.get_all_response(timeout=timeout, **kwargs)))

    async def put(self, key: Key, value: Key, lease: AsyncLease | int | None = None, prev_kv: bool = False,
                  *, timeout: float | None = None) -> rpc_pb2.PutResponse:
        """Write ``value`` to ``key``; never sent twice unless the first send provably never left."""
        with lease_gone(lease):
            resp: rpc_pb2.PutResponse = await self._unary(
                "kv", "Put", shapes.put_request(key, value, lease, prev_kv), timeout=timeout)
        return resp

    async def put_if_not_exists(self, key: Key, value: Key, lease: AsyncLease | int | None = None,
                                *, timeout: float | None = None) -> bool:
        """Create ``key`` only if absent; True when it was created."""
        compare, success = shapes.create_if_absent(self.transactions, key, value, lease)
        with lease_gone(lease):
            return (await self.transaction(compare, success, [], timeout=timeout))[0]

    async def replace(self, key: Key, initial_value: Key, new_value: Key, *, timeout: float | None = None) -> bool:
        """Set ``key`` to ``new_value`` only if it holds ``initial_value``; True when replaced."""
        compare, success = shapes.swap(self.transactions, key, initial_value, new_value)
        return (await self.transaction(compare, success, [], timeout=timeout))[0]

    async def delete(self, key: Key, prev_kv: bool = False, return_response: bool = False,
                     *, timeout: float | None = None) -> bool | rpc_pb2.DeleteRangeResponse:
        """Delete ``key``; True if it existed (or the response with ``return_response=True``)."""
        req = rpc_pb2.DeleteRangeRequest(key=to_bytes(key), prev_kv=prev_kv)
        resp: rpc_pb2.DeleteRangeResponse = await self._unary("kv", "DeleteRange", req, timeout=timeout)
        return resp if return_response else resp.deleted >= 1

    async def delete_prefix(self, prefix: Key, *, timeout: float | None = None) -> rpc_pb2.DeleteRangeResponse:
        """Delete every key under ``prefix``."""
        resp: rpc_pb2.DeleteRangeResponse = await self._unary(
            "kv", "DeleteRange", shapes.delete_prefix_request(prefix), timeout=timeout)
        return resp

    async def transaction(self, compare: list[BaseCompare], success: list[Any] | None = None,
                          failure: list[Any] | None = None, *,
                          timeout: float | None = None) -> tuple[bool, list[Any]]:
        """Atomic compare-and-swap: ``(succeeded, responses)``. Retried only when read-only."""
        req, ops = shapes.txn_request(compare, success, failure)
        return shapes.txn_result(await self._unary("kv", "Txn", req, timeout=timeout, idempotent=is_read_only(ops)))

    async def compact(self, revision: int, physical: bool = False, *, timeout: float | None = None) -> None:
        """Compact the history up to ``revision``."""
        await self._unary("kv", "Compact", rpc_pb2.CompactionRequest(revision=revision, physical=physical),
                          timeout=timeout)

    # ---- leases ----
    async def lease(self, ttl: int, lease_id: int | None = None, *, timeout: float | None = None) -> AsyncLease:
        """Grant a lease of ``ttl`` seconds."""
        shapes.check_ttl(ttl)
        sent = time.monotonic()
        resp = await self._unary("lease", "LeaseGrant", rpc_pb2.LeaseGrantRequest(TTL=ttl, ID=lease_id or 0),
                                 timeout=timeout)
        lease = AsyncLease(resp.ID, resp.TTL, self, expires_at=sent + resp.TTL)
        self._leases.add(lease)
        return lease

    async def revoke_lease(self, lease_id: int, *, timeout: float | None = None) -> None:
        """Revoke lease ``lease_id``: every key attached to it is deleted. Not retried unless unsent."""
        await self._unary("lease", "LeaseRevoke", rpc_pb2.LeaseRevokeRequest(ID=lease_id), timeout=timeout)

    async def refresh_lease(self, lease_id: int, *,
                            timeout: float | None = None) -> list[rpc_pb2.LeaseKeepAliveResponse]:
        """One keep-alive for ``lease_id``; the server's answer in a list (python-etcd3 yields it)."""

        async def invoke(stubs: Stubs, budget: float | None, md: Metadata) -> list[rpc_pb2.LeaseKeepAliveResponse]:
            call = stubs.lease.LeaseKeepAlive(iter([rpc_pb2.LeaseKeepAliveRequest(ID=lease_id)]), timeout=budget,
                                              metadata=md)
            try:
                return [await call.read()]
            finally:
                call.cancel()

        await self._login()
        resp: list[rpc_pb2.LeaseKeepAliveResponse] = await self._transport.call(
            "Lease.LeaseKeepAlive", invoke, timeout=timeout, idempotent=True, default_timeout=self.timeout)
        return resp

    async def get_lease_info(self, lease_id: int, *,
                             timeout: float | None = None) -> rpc_pb2.LeaseTimeToLiveResponse:
        """``TTL`` (remaining; -1 when gone), ``grantedTTL`` and the attached ``keys`` of a lease."""
        resp: rpc_pb2.LeaseTimeToLiveResponse = await self._unary(
            "lease", "LeaseTimeToLive", rpc_pb2.LeaseTimeToLiveRequest(ID=lease_id, keys=True), timeout=timeout)
        return resp

    # ---- watches ----
    def _watcher(self) -> AsyncWatchManager:
        if self._transport.closed:
            raise ClientClosedError("the client was closed")
        if self._watch_manager is None:
            self._watch_manager = AsyncWatchManager(self._transport)
            self._closers.append(self._watch_manager.close)
        return self._watch_manager

    async def add_watch_callback(self, key: Key, callback: Callable[[Any], None], range_end: Key | None = None,
                                 start_revision: int | None = None, progress_notify: bool = False,
                                 filters: list[int] | None = None, prev_kv: bool = False, *,
                                 timeout: float | None = None) -> int:
        """Call ``callback`` (on the event loop: it must not block) with each :class:`WatchResponse` for
        ``key`` (or ``[key, range_end)``), or with the exception that ended the watch; the watch id for
        :meth:`cancel_watch`. It resumes by itself, from the first revision not delivered."""
        await self._login()
        end = to_bytes(range_end) if range_end is not None else b""
        return await self._watcher().add(
            to_bytes(key), end, callback, start_revision=start_revision, progress_notify=progress_notify,
            filters=filters, prev_kv=prev_kv, timeout=deadlines.call_timeout(timeout, self.timeout))

    async def add_watch_prefix_callback(self, key_prefix: Key, callback: Callable[[Any], None],
                                        **kwargs: Any) -> int:
        """:meth:`add_watch_callback` for every key under ``key_prefix``."""
        p = to_bytes(key_prefix)
        return await self.add_watch_callback(p, callback, range_end=prefix_range_end(p), **kwargs)

    async def cancel_watch(self, watch_id: int) -> None:
        """Stop a watch; its iterator ends."""
        if self._watch_manager is not None:
            await self._watch_manager.cancel(watch_id)

    async def watch_response(self, key: Key, **kwargs: Any) -> tuple[WatchIterator, Callable[[], Awaitable[None]]]:
        """``(async iterator of WatchResponse, cancel)``: the iterator raises the error that ends the watch
        (a :class:`NoLeaderError` is transient: keep iterating); ``await cancel()`` ends it."""
        it = WatchIterator()
        watch_id = await self.add_watch_callback(key, it.queue.put_nowait, **kwargs)

        async def cancel() -> None:
            it.close()
            await self.cancel_watch(watch_id)

        return it, cancel

    async def watch_prefix_response(self, key_prefix: Key,
                                    **kwargs: Any) -> tuple[WatchIterator, Callable[[], Awaitable[None]]]:
        """:meth:`watch_response` for every key under ``key_prefix``."""
        p = to_bytes(key_prefix)
        return await self.watch_response(p, range_end=prefix_range_end(p), **kwargs)

    async def watch(self, key: Key, **kwargs: Any) -> tuple[EventIterator, Callable[[], Awaitable[None]]]:
        """``(async iterator of events, cancel)`` for ``key``."""
        responses, cancel = await self.watch_response(key, **kwargs)
        return EventIterator(responses), cancel

    async def watch_prefix(self, key_prefix: Key,
                           **kwargs: Any) -> tuple[EventIterator, Callable[[], Awaitable[None]]]:
        """:meth:`watch` for every key under ``key_prefix``."""
        p = to_bytes(key_prefix)
        return await self.watch(p, range_end=prefix_range_end(p), **kwargs)

    async def watch_once_response(self, key: Key, timeout: float | None = None, **kwargs: Any) -> WatchResponse:
        """The next ``WatchResponse`` with events on ``key``; :class:`WatchTimedOut` after ``timeout``
        seconds (:class:`DeadlineExceeded` when a :func:`deadline` scope ends first)."""
        scope = deadlines.remaining()
        by_scope = scope is not None and (timeout is None or scope < timeout)
        wait = deadlines.call_timeout(timeout, None)
        end = None if wait is None else time.monotonic() + wait
        responses, cancel = await self.watch_response(key, timeout=wait, **kwargs)

        async def first() -> WatchResponse:
            async for resp in responses:
                if resp.events:
                    return resp
            raise ClientClosedError("the watch ended before an event")

        try:  # one deadline for the watch's creation and its first event
            return await asyncio.wait_for(first(), None if end is None else max(0.0, end - time.monotonic()))
        except asyncio.TimeoutError:
            if by_scope:
                raise DeadlineExceeded(f"deadline exceeded waiting for an event on {key!r}") from None
            raise WatchTimedOut(f"no event on {key!r} within {timeout} s") from None
        finally:
            await cancel()

    async def watch_once(self, key: Key, timeout: float | None = None, **kwargs: Any) -> Event:
        """The next event on ``key`` (timeouts as :meth:`watch_once_response`)."""
        event: Event = (await self.watch_once_response(key, timeout=timeout, **kwargs)).events[0]
        return event

    async def watch_prefix_once(self, key_prefix: Key, timeout: float | None = None, **kwargs: Any) -> Event:
        """:meth:`watch_once` for every key under ``key_prefix``."""
        p = to_bytes(key_prefix)
        return await self.watch_once(p, timeout=timeout, range_end=prefix_range_end(p), **kwargs)

    async def watch_prefix_once_response(self, key_prefix: Key, timeout: float | None = None,
                                         **kwargs: Any) -> WatchResponse:
        """:meth:`watch_once_response` for every key under ``key_prefix``."""
        p = to_bytes(key_prefix)
        return await self.watch_once_response(p, timeout=timeout, range_end=prefix_range_end(p), **kwargs)

    @property
    def watcher(self) -> AsyncWatcher:
        """python-etcd3's ``client.watcher``: ``await add_callback(key, callback, **kwargs)``, ``await cancel(id)``."""
        return AsyncWatcher(self)

    # ---- locks ----
    def lock(self, name: str, ttl: int = 60, on_lost: Callable[[AsyncLock], None] | None = None, *,
             keep_alive: bool = True) -> AsyncLock:
        """An :class:`AsyncLock` named ``name`` (key ``/locks/<name>``) on a lease of ``ttl`` s kept alive by a task."""
        return AsyncLock(name, ttl=ttl, etcd_client=self, on_lost=on_lost, keep_alive=keep_alive)

    def election(self, name: str, ttl: int = 10,
                 on_lost: Callable[[AsyncElection], None] | None = None) -> AsyncElection:
        """An :class:`AsyncElection` under ``/election/<name>/``; candidates hold a kept lease of ``ttl`` s."""
        return AsyncElection(self, name, ttl=ttl, on_lost=on_lost)

    # ---- cluster ----
    async def members(self) -> list[Member]:
        """Every member of the cluster (a coroutine: the sync client's ``members`` property)."""
        resp = await self._unary("cluster", "MemberList", rpc_pb2.MemberListRequest())
        return [Member.from_proto(m, None) for m in resp.members]

    async def add_member(self, urls: list[str], *, timeout: float | None = None) -> Member:
        """Add a member with peer ``urls`` to the cluster; the new :class:`Member` (start it afterwards)."""
        resp = await self._unary("cluster", "MemberAdd", rpc_pb2.MemberAddRequest(peerURLs=urls), timeout=timeout)
        return Member.from_proto(resp.member, None)

    async def remove_member(self, member_id: int, *, timeout: float | None = None) -> None:
        """Remove member ``member_id`` from the cluster."""
        await self._unary("cluster", "MemberRemove", rpc_pb2.MemberRemoveRequest(ID=member_id), timeout=timeout)

    async def update_member(self, member_id: int, peer_urls: list[str], *, timeout: float | None = None) -> None:
        """Change the peer URLs of member ``member_id``."""
        await self._unary("cluster", "MemberUpdate", rpc_pb2.MemberUpdateRequest(ID=member_id, peerURLs=peer_urls),
                          timeout=timeout)

    # ---- maintenance ----
    async def status(self, *, endpoint: str | None = None, timeout: float | None = None) -> Status:
        """Status of one member (default: the member in use), never taken from another member."""
        with deadlines.deadline_of(timeout, self.timeout):
            st = await self._unary("maintenance", "Status", rpc_pb2.StatusRequest(), pin=self._member_conn(endpoint))
            return shapes.status(st, await self.members())

    async def hash(self, *, endpoint: str | None = None, timeout: float | None = None) -> int:
        """The KV hash of one member (default: the member in use)."""
        resp = await self._unary("maintenance", "Hash", rpc_pb2.HashRequest(), timeout=timeout,
                                 pin=self._member_conn(endpoint))
        return int(resp.hash)

    async def defragment(self, *, endpoint: str | None = None,
                         timeout: float | None = None) -> rpc_pb2.DefragmentResponse:
        """Defragment one member (default: the member in use), never another; traffic moves to the others
        and the member is not probed or ejected while it runs."""
        conn = self._member_conn(endpoint)
        with self._transport.pool.maintenance(conn):
            resp: rpc_pb2.DefragmentResponse = await self._unary(
                "maintenance", "Defragment", rpc_pb2.DefragmentRequest(), timeout=timeout, pin=conn)
        return resp

    async def snapshot(self, file_obj: IO[bytes], *, endpoint: str | None = None,
                       timeout: float | None = None) -> None:
        """Stream one member's backend database into ``file_obj`` chunk by chunk (no default deadline: see
        the sync ``snapshot``); ``file_obj.write`` runs on the loop, so give it something that does not block
        for long (a local file)."""
        conn = self._member_conn(endpoint)

        async def invoke(stubs: Stubs, budget: float | None, md: Metadata) -> None:
            async for r in stubs.maintenance.Snapshot(rpc_pb2.SnapshotRequest(), timeout=budget, metadata=md):
                conn.heard()  # every chunk proves the connection alive
                file_obj.write(r.blob)

        await self._login()
        await self._transport.call("Maintenance.Snapshot", invoke, timeout=timeout, pin=conn, default_timeout=None)

    async def create_alarm(self, member_id: int = 0, *, timeout: float | None = None) -> list[Alarm]:
        """Raise a NOSPACE alarm (for tests of alarm handling)."""
        return await self._alarm(rpc_pb2.AlarmRequest.ACTIVATE, member_id, rpc_pb2.NOSPACE, timeout)

    async def _alarm(self, action: Any, member_id: int, alarm_type: Any, timeout: float | None) -> list[Alarm]:
        resp = await self._unary("maintenance", "Alarm", shapes.alarm_request(action, member_id, alarm_type),
                                 timeout=timeout, idempotent=action == rpc_pb2.AlarmRequest.GET)
        return shapes.alarms(resp)

    async def list_alarms(self, member_id: int = 0, alarm_type: str = "none",
                          *, timeout: float | None = None) -> list[Alarm]:
        """The active alarms (of ``member_id``, 0: all members; of ``alarm_type``, "none": all types)."""
        return await self._alarm(rpc_pb2.AlarmRequest.GET, member_id, shapes.alarm_type(alarm_type), timeout)

    async def disarm_alarm(self, member_id: int = 0, *, timeout: float | None = None) -> list[Alarm]:
        """Clear the NOSPACE alarm (of ``member_id``, 0: every member); the alarms it cleared."""
        return await self._alarm(rpc_pb2.AlarmRequest.DEACTIVATE, member_id, rpc_pb2.NOSPACE, timeout)


class AsyncWatcher:
    """python-etcd3's ``Watcher`` for the asyncio client."""

    def __init__(self, client: AsyncEtcd3Client) -> None:
        self._client = client

    async def add_callback(self, key: Key, callback: Callable[[Any], None], **kwargs: Any) -> int:
        return await self._client.add_watch_callback(key, callback, **kwargs)

    async def cancel(self, watch_id: int) -> None:
        await self._client.cancel_watch(watch_id)


client = AsyncEtcd3Client
"""``resilient_etcd.aio.client(...)``: python-etcd3's ``etcd3.client(...)``, for asyncio."""


if TYPE_CHECKING:  # what its leases, locks, elections and watcher call back on it (they do not import it)
    from .owner import AsyncClient

    _owner: type[AsyncClient] = AsyncEtcd3Client
