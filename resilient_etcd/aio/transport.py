"""The asyncio face of a client's transport: the same pool, retry steps and classification, awaited.

Everything that decides — which endpoint, whether a failure is retried and where, what error a call
ends with — is :class:`~resilient_etcd.transport.core.TransportCore`'s, shared with the blocking
face; this module only awaits the I/O (the calls, a wait for a leader, a re-authentication, the
diagnosis of a failed dial in a worker thread). No call blocks the event loop: the locks it takes
(the pool's) are held for bookkeeping only, never across I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from .. import deadlines
from .._steps import adrive
from ..balancer.retrying import make_async_retrying
from ..exceptions import ClientClosedError, DeadlineExceeded
from ..metrics import METRICS
from ..transport.channels import Channels, Stubs
from ..transport.core import (
    Authenticate,
    Invoke,
    Metadata,
    PickWriter,
    Step,
    Steps,
    TransportCore,
    _answered,
    _Attempt,
    _class_of,
    _qualified,
    _rclass,
    _Retry,
)
from ..transport.diagnose import permanent_cause
from ..transport.endpoints import TlsConfig
from ..transport.pool import Connection
from ..transport.retry import RetryableError, RetryClass
from .channels import AioChannels, rpc

T = TypeVar("T")
AsyncInvoke = Callable[[Stubs, float | None, Metadata], Awaitable[Any]]


class AsyncTransport(TransportCore):
    """Endpoints, health, auth token and retries for one asyncio client (made on its event loop)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.loop = asyncio.get_running_loop()
        super().__init__(*args, **kwargs)

    def _channels(self, tls: TlsConfig | None, options: list[tuple[str, Any]]) -> Channels:
        return AioChannels(self.loop, tls, options)

    def _token_lock(self) -> Any:
        return asyncio.Lock()

    def _scope(self) -> tuple[Any, ...]:
        return ("asyncio", id(self.loop))  # grpc.aio channels serve one event loop

    async def aclose(self) -> None:
        """:meth:`close`, then wait until the channels it closed are closed."""
        self.close()
        io = self.pool.conns[0].io if self.pool.conns else None
        if isinstance(io, AioChannels) and self.pool.closed:
            await io.drain()

    # ---- auth ----
    async def authenticate(self, timeout: float | None = None, *, stale: Metadata | None = None) -> None:
        """Fetch a fresh token within ``timeout`` (and the scope), one ``Authenticate`` at a time: tasks
        that saw the same token rejected wait for the one renewing it, then use the new token."""
        budget = deadlines.call_timeout(timeout, self.default_timeout)
        session = self._session
        lock: asyncio.Lock = session.token_lock
        try:
            await asyncio.wait_for(lock.acquire(), budget)
        except asyncio.TimeoutError:
            raise DeadlineExceeded(f"deadline exceeded waiting {budget:.3g} s for another task's "
                                   "re-authentication") from None
        try:
            if stale is None or session.token_md == stale:  # else renewed while we waited
                resp = await self.unary("auth", "Authenticate", session.auth_request(), with_token=False,
                                        timeout=budget)
                session.token_md = (("token", resp.token),)
                METRICS.inc("token_renewals")
        finally:
            lock.release()

    # ---- calls ----
    async def unary(self, service: str, method: str, request: Any, *, timeout: float | None = None,
                    idempotent: bool | None = None, pin: Connection | None = None, with_token: bool = True,
                    metadata: Metadata = ()) -> Any:
        """Call ``service.method`` (stub attribute names, e.g. ``"kv", "Range"``) with resilience; the
        arguments mean what they mean for the blocking ``Transport.unary``."""

        async def invoke(stubs: Stubs, left: float | None, md: Metadata) -> Any:
            return await getattr(getattr(stubs, service), method)(request, timeout=left, metadata=md)

        rclass = _class_of(service, method) if idempotent is None and pin is None else \
            _rclass(_qualified(service, method), idempotent, pin)
        # a linearizable single-key read (a serializable one may not move to a member further behind)
        hedge = self._hedge_floor is not None and method == "Range" and rclass is RetryClass.IDEMPOTENT \
            and not request.range_end and not request.serializable
        return await self._call(invoke, rclass, timeout, pin, with_token, metadata, self.default_timeout, method,
                                hedge=hedge)

    async def call(self, name: str, invoke: AsyncInvoke, *, timeout: float | None = None,
                   idempotent: bool | None = None, pin: Connection | None = None, with_token: bool = True,
                   metadata: Metadata = (), default_timeout: float | None = None) -> Any:
        """Await ``invoke(stubs, timeout, metadata)`` on the picked endpoint, retrying as the retry table
        (``name``, e.g. "Lease.LeaseKeepAlive") allows; ``invoke`` must finish its I/O before returning."""
        rclass = _rclass(name, idempotent, pin)
        return await self._call(invoke, rclass, timeout, pin, with_token, metadata, default_timeout, name)

    async def _call(self, invoke: AsyncInvoke, rclass: RetryClass, timeout: float | None, pin: Connection | None,
                    with_token: bool, metadata: Metadata, default: float | None, what: str, *,
                    hedge: bool = False) -> Any:
        if self._closed:
            raise ClientClosedError(f"the client was closed; {what} was not sent")
        budget = deadlines.call_timeout(timeout, default)
        deadline = None if budget is None else time.monotonic() + budget
        if pin is not None:
            conn = pin
        elif rclass is RetryClass.MUTATION:
            conn = await self._pick_writer(deadline, None)
            if deadline is not None:
                budget = deadline - time.monotonic()
                if budget <= 0:
                    raise DeadlineExceeded("deadline exceeded waiting for the cluster to name a new leader")
        else:
            conn = self.pool.pick()
        gen = conn.generation
        ready = True if rclass is RetryClass.IDEMPOTENT else conn.transport_ready()
        md = (self._token_md + metadata) if with_token else metadata
        try:
            if hedge:
                return await self._hedged(conn, gen, invoke, budget, md)
            return await self._send(conn, gen, invoke, budget, md)
        except (grpc.RpcError, ValueError) as e:
            first: BaseException = e
        r = _Retry(deadline, rclass, with_token, metadata, conn)
        r.last = await self._run_steps(self._failure_steps(_Attempt(conn, gen, ready, md), first, rclass, deadline),
                                       invoke)
        try:
            async for attempt in make_async_retrying(RetryableError, r.left, **self._retrying_args(r)):
                with attempt:
                    return await self._run_steps(self._attempt_steps(r), invoke)
        except RetryableError as e:
            raise self._gave_up(r, e) from e.error
        raise AssertionError("unreachable: the retry loop returns or raises")  # pragma: no cover

    async def _hedged(self, conn: Connection, gen: int, invoke: AsyncInvoke, budget: float | None,
                      md: Metadata) -> Any:
        """A hedgeable read: not answered within its endpoint's usual time (``CallTimes.hedge_delay``), a
        copy goes to the fastest other healthy endpoint, within the hedge budget; the first answer wins and
        the other call is cancelled. (Unlike grpcio's blocking call, the first copy keeps running: one
        extra request, not two.) Both failing: the first one's error, for the usual recovery."""
        pool = self.pool
        pool.hedges.deposit()
        delay = conn.call_times.hedge_delay(self._hedge_floor)  # type: ignore[arg-type]
        sent = time.monotonic()
        first = asyncio.ensure_future(self._send(conn, gen, invoke, budget, md))
        tasks = [first]
        hedge: tuple[Connection, float] | None = None  # where the copy went, and when
        try:
            done, _ = await asyncio.wait(tasks, timeout=None if budget is not None and delay >= budget else delay)
            if not done:
                conn.want_probe = True  # how slow is that connection itself? (latency-aware choice, ejection)
                pool.wake()
                other = pool.hedge_target(conn)
                left = None if budget is None else budget - (time.monotonic() - sent)
                if other is not None and (left is None or left > 0) and pool.hedges.withdraw(1):
                    METRICS.inc("hedges", conn.name)
                    hedge = (other, time.monotonic())
                    tasks.append(asyncio.ensure_future(self._send(other, other.generation, invoke, left, md)))
            pending = set(tasks)
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if task.exception() is not None:
                        continue
                    if hedge is None or task is first:
                        conn.call_times.observe(time.monotonic() - sent)
                    else:
                        winner, hedged_at = hedge
                        METRICS.inc("hedges_won", winner.name)
                        winner.call_times.observe(time.monotonic() - hedged_at)
                        pool.hedge_won(conn, winner)
                    return task.result()
            return first.result()  # both failed: the first copy's error
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _send(self, conn: Connection, gen: int, invoke: AsyncInvoke, left: float | None, md: Metadata) -> Any:
        def closed() -> bool:
            return conn.generation != gen or self.pool.closed

        return await self.pool.arun(conn, lambda peer: rpc(invoke(peer.stubs, left, md), closed), generation=gen,
                                    answered=_answered)

    async def _run_steps(self, steps: Steps[T], invoke: AsyncInvoke) -> T:
        """Await each step's I/O (see :mod:`resilient_etcd._steps`)."""
        return await adrive(steps, lambda step: self._io(step, invoke))

    async def _io(self, step: Step, invoke: AsyncInvoke) -> Any:
        if isinstance(step, Invoke):
            return await self._send(step.conn, step.gen, invoke, step.remaining, step.md)
        if isinstance(step, PickWriter):
            return await self._pick_writer(step.deadline, step.avoid)
        if isinstance(step, Authenticate):
            return await self.authenticate(step.remaining, stale=step.stale)
        diagnose = functools.partial(permanent_cause, step.conn.endpoint, self.tls is not None, step.details,
                                     probe_timeout=step.timeout)
        return await asyncio.to_thread(diagnose)

    async def _pick_writer(self, deadline: float | None, avoid: Connection | None) -> Connection:
        """``EndpointPool.pick_writer`` without blocking the loop: a wait for a leader awaits the pool's news."""
        pool = self.pool
        got = pool.writer_now(avoid)
        if got is not None:
            return got
        loop = self.loop
        with pool._lock:
            give_up = pool.hunt_for_writer()
        while True:
            news = loop.create_future()
            with pool._lock:
                step = pool.writer_or_wait(avoid, give_up, deadline)
                if isinstance(step, Connection):
                    return step
                pool.on_leader_news(functools.partial(_settle_soon, loop, news))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(news, max(0.0, step - time.monotonic()))


def _settle_soon(loop: asyncio.AbstractEventLoop, fut: asyncio.Future[None]) -> None:
    """From any thread: resolve ``fut`` on its loop (nothing to do once the loop is closed)."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(_settle, fut)


def _settle(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
