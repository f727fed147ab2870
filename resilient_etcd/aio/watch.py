"""Watches for the asyncio client: the sync client's Watch protocol bookkeeping
(:class:`~resilient_etcd.etcd.watch.WatchBook`: resume points, refusals, progress, stalls), run by
two tasks instead of two threads — a reader that keeps one stream open for every watch of the client,
and a watchdog that asks a quiet stream for progress and re-opens a stalled one. Callbacks run on the
event loop; the iterators are fed through ``asyncio.Queue``."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import grpc

from .._proto import rpc_pb2
from ..etcd.events import Event, WatchResponse
from ..etcd.watch import _PROGRESS, ResponseItems, WatchBook, _end, _safe, _StreamEnded, _Watch
from ..exceptions import ClientClosedError, Etcd3Exception, WatchTimedOut
from ..transport.pool import Connection
from .channels import _cancelling, rpc

if TYPE_CHECKING:
    from .transport import AsyncTransport


class AsyncWatchManager(WatchBook):
    """The watches of one asyncio client (created on first use, on its loop)."""

    def __init__(self, transport: AsyncTransport, *, progress_interval: float = 0.5, stall_timeout: float = 1.0,
                 require_leader: bool = True) -> None:
        super().__init__(transport, progress_interval=progress_interval, stall_timeout=stall_timeout,
                         require_leader=require_leader)
        self._t: AsyncTransport = transport
        self._closed = False
        self._have_watches = asyncio.Event()
        self._requests: asyncio.Queue[rpc_pb2.WatchRequest | None] | None = None  # the stream's, while one is up
        self._call: Any = None
        self._cut = False  # we cancelled the stream's call (stall, no watches left): not the reader's end
        self._reader = asyncio.get_running_loop().create_task(self._run(), name="resilient-etcd-watch")
        self._monitor = asyncio.get_running_loop().create_task(self._watchdog(), name="resilient-etcd-watchdog")

    # ---- public ----
    async def add(self, key: bytes, range_end: bytes, callback: Callable[[Any], None], *,
                  start_revision: int | None, progress_notify: bool, filters: list[int] | None, prev_kv: bool,
                  timeout: float | None) -> int:
        if self._closed:
            raise ClientClosedError("the client was closed")
        w = _Watch(next(self._ids), key, range_end, callback, start_revision, progress_notify, list(filters or []),
                   prev_kv, created=asyncio.Event())
        with self._lock:
            self._watches[w.id] = w
            if self._requests is not None:
                w.on_stream = True
                self._unanswered.append(w.id)
                self._requests.put_nowait(w.create_request())
        self._have_watches.set()
        try:
            await asyncio.wait_for(w.created.wait(), timeout)
        except asyncio.TimeoutError:
            await self.cancel(w.id)
            raise WatchTimedOut(f"watch on {key!r} was not created within {timeout} s") from None
        except BaseException:
            await self.cancel(w.id)  # cancelled while waiting: no watch left behind
            raise
        if w.error is not None:
            raise w.error
        return w.id

    async def cancel(self, watch_id: int) -> None:
        """Stop one watch (nothing is delivered to it afterwards); the last one closes the stream."""
        with self._lock:
            w = self._watches.pop(watch_id, None)
            if w is None:
                return
            w.cancelled = True
            if not self._watches:
                self._have_watches.clear()  # the reader waits for the next add
            if self._requests is None or not w.on_stream:
                return
            if self._watches:
                self._requests.put_nowait(rpc_pb2.WatchRequest(
                    cancel_request=rpc_pb2.WatchCancelRequest(watch_id=w.id)))
                return
            self._idle = True
        self._cut_stream()

    async def close(self) -> None:
        """End every watch (its callback gets :class:`ClientClosedError`) and stop both tasks."""
        self._closed = True
        with self._lock:
            watches, self._watches = list(self._watches.values()), {}
        for task in (self._reader, self._monitor):
            task.cancel()
        for task in (self._reader, self._monitor):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        _end(watches)

    def _deliver(self, w: _Watch, item: Any) -> None:
        if not w.cancelled:
            _safe(w.callback, item)

    # ---- the reader ----
    async def _run(self) -> None:
        while True:
            if not self._watches:  # the set decides, the event only wakes: etcd may cancel the last watch
                self._have_watches.clear()  # (compacted, no leader) without going through cancel()
                await self._have_watches.wait()
                continue
            pause = self._pause_after(await self._pump())
            if pause:
                await asyncio.sleep(pause)

    async def _pump(self) -> bool:
        """Run one stream until it ends; True if it delivered anything (the next may start at once)."""
        if self._token_refused:
            self._token_refused = False
            with contextlib.suppress(Etcd3Exception):
                await self._t.authenticate()
        if not self._watches:
            return True  # all cancelled meanwhile: no stream until the next add
        conn = self._t.pool.pick(avoid=self._avoid)
        self._avoid = None
        gen = conn.generation
        version = await self._server_version(conn)
        requests: asyncio.Queue[rpc_pb2.WatchRequest | None] = asyncio.Queue()
        try:
            call = conn.stubs.watch.Watch(_drain(requests), metadata=self._metadata())
        except (ValueError, grpc.aio.UsageError):  # channel closed under us: pick again
            return False
        delivered = False
        with self._lock:
            self._requests, self._call, self._cut = requests, call, False
            for req in self._opened(version):
                requests.put_nowait(req)
        try:
            async for resp in call:
                self._received(conn, resp)
                delivered = True
                if self._version_unknown:  # the member answers now: ask once more
                    self._learn_version(await self._server_version(conn), again=True)
        except grpc.RpcError as e:
            if not self._idle:
                self._ended(conn, gen, e.code(), e.details() or "")
        except asyncio.CancelledError:
            if self._closed or _cancelling() or not (self._cut or conn.generation != gen or self._t.pool.closed):
                raise  # the reader itself is cancelled (close: Python 3.10 cannot tell it from a cut otherwise)
            if not self._idle:  # cut by the watchdog, or the channel closed under it (ejection)
                self._ended(conn, gen, grpc.StatusCode.CANCELLED, "stream cut")
        except _StreamEnded:
            pass
        finally:
            requests.put_nowait(None)
            with self._lock:
                self._requests = self._call = None
                self._closed_stream()
            call.cancel()
        self._count_resume(conn, self._closed)
        return delivered

    async def _server_version(self, conn: Connection) -> str | None:
        cached = conn.server_version
        if cached is not None and cached[0] == conn.generation:
            return cached[1]
        gen, pool = conn.generation, self._t.pool
        try:  # a channel closed under the call ends it with CancelledError: rpc() makes that CANCELLED
            st = await rpc(conn.stubs.maintenance.Status(rpc_pb2.StatusRequest(), timeout=self.stall_timeout,
                                                         metadata=self._t.token_metadata),
                           lambda: conn.generation != gen or pool.closed)
        except (grpc.RpcError, ValueError, grpc.aio.UsageError):
            return None
        conn.server_version = (gen, st.version)
        return str(st.version)

    def _cut_stream(self) -> None:
        call = self._call
        if call is not None:
            self._cut = True
            call.cancel()

    # ---- the watchdog ----
    async def _watchdog(self) -> None:
        tick = min(self.progress_interval, self.stall_timeout) / 4
        while True:
            await asyncio.sleep(tick)
            requests = self._requests
            if requests is None:
                continue
            now = time.monotonic()
            if self._progress_due(now):
                requests.put_nowait(_PROGRESS)
            elif self._stall(now):
                self._cut_stream()


async def _drain(q: asyncio.Queue[rpc_pb2.WatchRequest | None]) -> AsyncIterator[rpc_pb2.WatchRequest]:
    while True:
        item = await q.get()
        if item is None:
            return
        yield item


class WatchIterator(ResponseItems):
    """``async for`` over one watch's responses; raises the ending error (a transient NoLeaderError and goes
    on); ends when the watch is cancelled or its client closed."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Any] = asyncio.Queue()

    def close(self) -> None:
        self.done = True
        self.queue.put_nowait(None)

    def __aiter__(self) -> WatchIterator:
        return self

    async def __anext__(self) -> WatchResponse:
        if self.done:
            raise StopAsyncIteration
        resp = self._item(await self.queue.get())
        if resp is None:
            raise StopAsyncIteration
        return resp


class EventIterator:
    """``async for`` over the events of a watch, flattened from its responses."""

    def __init__(self, responses: WatchIterator) -> None:
        self._responses = responses
        self._pending: list[Event] = []

    def __aiter__(self) -> EventIterator:
        return self

    async def __anext__(self) -> Event:
        while not self._pending:
            self._pending = list((await self._responses.__anext__()).events)
        return self._pending.pop(0)
