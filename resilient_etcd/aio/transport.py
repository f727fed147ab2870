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
from .._proto import rpc_pb2
from .._steps import adrive
from ..balancer.health import State
from ..balancer.retrying import make_async_retrying
from ..exceptions import ClientClosedError, ConfigurationError, DeadlineExceeded
from ..metrics import METRICS
from ..transport import core
from ..transport.channels import Channels, Stubs
from ..transport.core import Metadata, Steps, TransportCore
from ..transport.diagnose import permanent_cause
from ..transport.endpoints import TlsConfig
from ..transport.pool import Connection
from ..transport.retry import RetryableError, RetryClass
from .channels import AioChannels, rpc, translate

T = TypeVar("T")
_HEALTHY = State.HEALTHY  # (a module global: an enum member's lookup is the dearer one on the hot path)
AsyncInvoke = Callable[[Stubs, float | None, Metadata], Awaitable[Any]]


class AsyncTransport(TransportCore):
    """Endpoints, health, auth token and retries for one asyncio client (made on its event loop)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        try:
            self.loop = asyncio.get_running_loop()
        except RuntimeError:
            raise ConfigurationError("an asyncio client is made inside a running event loop (in an async def), "
                                     "whose thread it then stays on") from None
        super().__init__(*args, **kwargs)
        self._racing: dict[_Race, None] = {}  # hedgeable reads out now, for the sweeper
        self._sweeper: asyncio.TimerHandle | None = None
        self._sweep_every = (self._hedge_floor or 0.1) / 4

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
        that saw the same token rejected wait for the one renewing it, then use the new token. The wait
        for the lock comes out of the same budget."""
        budget = deadlines.call_timeout(timeout, self.default_timeout)
        end = None if budget is None else time.monotonic() + budget
        session = self._session
        lock: asyncio.Lock = session.token_lock
        try:
            await asyncio.wait_for(lock.acquire(), budget)
        except asyncio.TimeoutError:
            raise DeadlineExceeded(f"deadline exceeded waiting {budget:.3g} s for another task's "
                                   "re-authentication") from None
        try:
            if stale is None or session.token_md == stale:  # else renewed while we waited
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    raise DeadlineExceeded("deadline exceeded waiting for another task's re-authentication")
                resp = await self.unary("auth", "Authenticate", session.auth_request(), with_token=False,
                                        timeout=left)
                session.token_md = (("token", resp.token),)
                METRICS.inc("token_renewals")
        finally:
            lock.release()

    # ---- calls ----
    async def unary(self, service: str, method: str, request: Any, *, timeout: float | None = None,
                    idempotent: bool | None = None, pin: Connection | None = None, with_token: bool = True,
                    metadata: Metadata = ()) -> Any:
        """Call ``service.method`` (stub attribute names, e.g. ``"kv", "Range"``) with resilience; the
        arguments mean what they mean for the blocking ``Transport.unary``. A linearizable single-key
        read goes to :meth:`read` (a serializable one may not move to a member further behind)."""
        rclass = core._class_of(service, method) if idempotent is None and pin is None else \
            core._rclass(core._qualified(service, method), idempotent, pin)
        if method == "Range" and rclass is RetryClass.IDEMPOTENT and not request.range_end \
                and not request.serializable:
            return await self.read(request, timeout, with_token=with_token, metadata=metadata)
        return await self._call(_Invoke(service, method, request), rclass, timeout, pin, with_token, metadata,
                                self.default_timeout, method)

    async def read(self, request: rpc_pb2.RangeRequest, timeout: float | None = None, *, with_token: bool = True,
                   metadata: Metadata = ()) -> rpc_pb2.RangeResponse:
        """A linearizable single-key ``Range`` (the caller's word: no ``range_end``, not serializable),
        with resilience, *hedged*: not answered within its endpoint's usual time
        (``CallTimes.hedge_delay``), a copy goes to the fastest other healthy endpoint, within the hedge
        budget; the first answer wins and the other call is cancelled. Unlike grpcio's blocking call, the
        first copy keeps running: one extra request, not two. One loop timer watches every read out
        (:meth:`_sweep`), so a read answered in time costs a dict entry. Both copies failing: the first
        one's error, for the usual recovery. The hot path of ``get``, written out as the blocking face's is."""
        if self._hedge_floor is None or self._closed:
            return await self._call(_Invoke("kv", "Range", request), RetryClass.IDEMPOTENT,  # type: ignore[no-any-return]
                                    timeout, None, with_token, metadata, self.default_timeout, "Range")
        budget = deadlines.call_timeout(timeout, self.default_timeout)
        pool = self.pool
        conn = pool.pick()
        sent = time.monotonic()
        race = _Race(request, conn, sent, budget, (self._token_md + metadata) if with_token else metadata)
        # the hedge (see _sweep): registered, unless the deadline comes first — or there is no other
        # endpoint to hedge to (a silent connection with calls out is the prober's to check then)
        hedged = len(pool.balancer.peers) > 1
        if hedged:
            pool.hedges.deposit()
            delay = conn.call_times.hedge_delay(self._hedge_floor)
            if budget is None or delay < budget:
                race.due = sent + delay
                self._racing[race] = None
                if self._sweeper is None:
                    self._sweeper = self.loop.call_later(self._sweep_every, self._sweep)
        conn.begin()  # (HealthDriver.arun's frame, written out on the hot path)
        try:
            race.first = conn.stubs.kv.Range(request, timeout=budget, metadata=race.md)
            result = await race.first
        except BaseException as e:
            conn.end(core._answered(e))
            self._racing.pop(race, None)
            error = translate(e, race.cut)
            if not isinstance(error, (grpc.RpcError, ValueError)):
                raise  # our task is cancelled (its hedge with it, below)
            hedge = race.hedge
            if hedge is not None:
                with contextlib.suppress(grpc.RpcError, ValueError):  # the hedge's answer, if it has one
                    return await hedge  # type: ignore[no-any-return]
            first: BaseException = error
        else:
            now = time.monotonic()
            conn.answered_at(now)
            if hedged:
                self._racing.pop(race, None)
                conn.call_times.observe(now - sent)
            if conn.health.state is not _HEALTHY:
                pool.report_success(conn, race.gen)
            return result  # type: ignore[no-any-return]
        finally:
            if race.hedge is not None and not race.hedge.done():
                race.hedge.cancel()
        deadline = None if budget is None else sent + budget
        return await self._recover(race, deadline, RetryClass.IDEMPOTENT, with_token, metadata,  # type: ignore[no-any-return]
                                   core._Attempt(conn, race.gen, True, race.md), first)

    async def call(self, name: str, invoke: AsyncInvoke, *, timeout: float | None = None,
                   idempotent: bool | None = None, pin: Connection | None = None, with_token: bool = True,
                   metadata: Metadata = (), default_timeout: float | None = None) -> Any:
        """Await ``invoke(stubs, timeout, metadata)`` on the picked endpoint, retrying as the retry table
        (``name``, e.g. "Lease.LeaseKeepAlive") allows; ``invoke`` must finish its I/O before returning."""
        rclass = core._rclass(name, idempotent, pin)
        return await self._call(invoke, rclass, timeout, pin, with_token, metadata, default_timeout, name)

    async def _call(self, invoke: AsyncInvoke, rclass: RetryClass, timeout: float | None, pin: Connection | None,
                    with_token: bool, metadata: Metadata, default: float | None, what: str) -> Any:
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
            return await self._send(conn, gen, invoke, budget, md)
        except (grpc.RpcError, ValueError) as e:
            first: BaseException = e
        return await self._recover(invoke, deadline, rclass, with_token, metadata, core._Attempt(conn, gen, ready, md),
                                   first)

    async def _recover(self, invoke: AsyncInvoke, deadline: float | None, rclass: RetryClass, with_token: bool,
                       metadata: Metadata, first_attempt: core._Attempt, first: BaseException) -> Any:
        """The first attempt failed: classify it, and retry as the core's steps decide."""
        r = core._Retry(deadline, rclass, with_token, metadata, first_attempt.conn)
        r.last = await self._run_steps(self._failure_steps(first_attempt, first, rclass, deadline), invoke)
        try:
            async for attempt in make_async_retrying(RetryableError, r.left, **self._retrying_args(r)):
                with attempt:
                    return await self._run_steps(self._attempt_steps(r), invoke)
        except RetryableError as e:
            raise self._gave_up(r, e) from e.error
        raise AssertionError("unreachable: the retry loop returns or raises")  # pragma: no cover

    def _sweep(self) -> None:
        """Every ``hedge_delay_min / 4`` while reads are out (one loop timer for all of them, not one each):
        hedge those past their delay."""
        now = time.monotonic()
        due = []
        for race in self._racing:  # in the order sent: none sent after one within the floor can be due
            if race.due <= now:
                due.append(race)
            elif race.sent + self._sweep_every * 4 > now:
                break
        for race in due:
            del self._racing[race]
            self._hedge(race)
        self._sweeper = self.loop.call_later(self._sweep_every, self._sweep) if self._racing else None

    def _hedge(self, race: _Race) -> None:
        """The read on ``race.conn`` is not answered after its hedge delay: send the copy."""
        conn, pool, budget = race.conn, self.pool, race.budget
        left = None if budget is None else budget - (time.monotonic() - race.sent)
        other = pool.hedge_start(conn, 1, left)
        if other is None:
            return
        race.hedge = self.loop.create_task(self._hedge_copy(race, other, race, left, race.md))
        race.hedge.add_done_callback(_retrieved)

    async def _hedge_copy(self, race: _Race, other: Connection, invoke: AsyncInvoke, left: float | None,
                          md: Metadata) -> Any:
        hedged_at = time.monotonic()
        result = await self._send(other, other.generation, invoke, left, md)
        self.pool.hedge_answered(race.conn, other, time.monotonic() - hedged_at)
        race.beaten = True
        if race.first is not None:
            race.first.cancel()  # the first copy's await ends, and takes this answer
        return result

    async def _send(self, conn: Connection, gen: int, invoke: AsyncInvoke, left: float | None, md: Metadata) -> Any:
        def closed() -> bool:
            return conn.generation != gen or self.pool.closed

        return await self.pool.arun(conn, lambda peer: rpc(invoke(peer.stubs, left, md), closed), generation=gen,
                                    answered=core._answered)

    async def _run_steps(self, steps: Steps[T], invoke: AsyncInvoke) -> T:
        """Await each step's I/O (see :mod:`resilient_etcd._steps`)."""
        return await adrive(steps, lambda step: self._io(step, invoke))

    async def _io(self, step: core.Step, invoke: AsyncInvoke) -> Any:
        if isinstance(step, core.Invoke):
            return await self._send(step.conn, step.gen, invoke, step.remaining, step.md)
        if isinstance(step, core.PickWriter):
            return await self._pick_writer(step.deadline, step.avoid)
        if isinstance(step, core.Authenticate):
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


class _Invoke:
    """``service.method(request)`` on a connection's stubs: the grpc.aio call (awaitable, cancellable)."""

    __slots__ = ("method", "request", "service")

    def __init__(self, service: str, method: str, request: Any) -> None:
        self.service, self.method, self.request = service, method, request

    def __call__(self, stubs: Stubs, left: float | None, md: Metadata) -> Any:
        return getattr(getattr(stubs, self.service), self.method)(self.request, timeout=left, metadata=md)


class _Race:
    """A hedged read out now (itself the invoke its copies are made with): the first copy's call, the
    hedge's task, and who won."""

    __slots__ = ("beaten", "budget", "conn", "due", "first", "gen", "hedge", "md", "request", "sent")

    def __init__(self, request: rpc_pb2.RangeRequest, conn: Connection, sent: float, budget: float | None,
                 md: Metadata) -> None:
        self.request = request
        self.conn = conn
        self.gen = conn.generation
        self.sent = sent
        self.due = float("inf")  # when to hedge it
        self.budget, self.md = budget, md
        self.first: Any = None  # the first copy's grpc.aio call
        self.hedge: asyncio.Task[Any] | None = None
        self.beaten = False  # the hedge answered first and cancelled the first copy's call

    def __call__(self, stubs: Stubs, left: float | None, md: Metadata) -> Any:
        return stubs.kv.Range(self.request, timeout=left, metadata=md)

    def cut(self) -> bool:
        """Was the first copy's call cancelled by us (beaten by the hedge, or its channel closed)?"""
        return self.beaten or self.conn.generation != self.gen


def _retrieved(task: asyncio.Task[Any]) -> None:
    """A hedge's failure is nobody's to report once the first copy answered (and the first copy's own
    error is the one recovered from): taken here, so asyncio does not log it as never retrieved."""
    if not task.cancelled():
        task.exception()


def _settle_soon(loop: asyncio.AbstractEventLoop, fut: asyncio.Future[None]) -> None:
    """From any thread: resolve ``fut`` on its loop (nothing to do once the loop is closed)."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(_settle, fut)


def _settle(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
