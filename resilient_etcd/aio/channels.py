"""``grpc.aio`` channels for the shared :class:`~resilient_etcd.transport.pool.EndpointPool`.

grpc.aio objects may be used only on the thread of the event loop they were made on, while the pool is
driven from the process's prober thread too (probes, ejections and their redials). So a channel here
is a :class:`LoopChannel`: made on the loop when first used, and every operation another thread asks
for (start a probe, close) is handed to the loop with ``call_soon_threadsafe``, never waited for
there. A call cut by its channel's close ends in grpc.aio with ``asyncio.CancelledError``, as if the
caller's task had been cancelled; :func:`rpc` turns that into the ``CANCELLED`` status the sync stack
gives, unless the task itself is being cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from ..transport.channels import Method, Outcome, Stubs
from ..transport.endpoints import Endpoint, TlsConfig

_READY = grpc.ChannelConnectivity.READY


class ChannelClosed(grpc.RpcError):  # type: ignore[misc]
    """A call on a channel closed under it (its connection was ejected, or the client closed)."""

    def __init__(self, details: str = "channel closed") -> None:
        super().__init__(details)
        self._details = details

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.CANCELLED

    def details(self) -> str:
        return self._details


class LoopChannel:
    """One endpoint's ``grpc.aio`` channel, made on the loop at its first use."""

    __slots__ = ("_channel", "_closed", "_make", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, make: Callable[[], grpc.aio.Channel]) -> None:
        self.loop = loop
        self._make = make
        self._channel: grpc.aio.Channel | None = None
        self._closed = False

    def get(self) -> grpc.aio.Channel:
        """The channel (on the loop's thread only); ValueError once closed, as grpcio's sync stack says."""
        if self._closed:
            raise ValueError("Cannot invoke RPC on closed channel!")
        if self._channel is None:
            self._channel = self._make()
        return self._channel

    @property
    def made(self) -> grpc.aio.Channel | None:
        return self._channel

    def close(self) -> Awaitable[None] | None:
        """Close on the loop (returns grpc's close to await, if the channel was ever made)."""
        self._closed = True
        ch, self._channel = self._channel, None
        return None if ch is None else ch.close()


class _LoopStubs(Stubs):
    """The stubs of a :class:`LoopChannel`, made with it on the loop at first use."""

    __slots__ = ("_channel",)

    def __init__(self, channel: LoopChannel) -> None:
        self._channel = channel

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        Stubs.__init__(self, self._channel.get())
        return object.__getattribute__(self, name)


class AioChannels:
    """The pool's channel I/O on one event loop (see the module docstring)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, tls: TlsConfig | None, options: list[tuple[str, Any]]) -> None:
        self.loop = loop
        self._tls = tls
        self._options = options
        self._tasks: set[asyncio.Task[Any]] = set()  # probes and closes under way (kept from the collector)

    def dial(self, endpoint: Endpoint) -> LoopChannel:
        def make() -> grpc.aio.Channel:
            if self._tls is not None:
                return grpc.aio.secure_channel(endpoint.target, self._tls.credentials(), options=self._options)
            return grpc.aio.insecure_channel(endpoint.target, options=self._options)

        return LoopChannel(self.loop, make)

    def stubs(self, channel: LoopChannel) -> Stubs:
        return _LoopStubs(channel)

    def close(self, channel: LoopChannel) -> None:
        with contextlib.suppress(ValueError):  # the loop is closed: its channels went with it
            self._on_loop(lambda: self._spawn(channel.close()))

    def ready(self, channel: LoopChannel) -> bool:
        made = channel.made
        if made is None:
            return False  # never dialled: a call failing now was never sent
        try:
            return bool(made.get_state(False) == _READY)
        except Exception:  # closed under us: the call itself will say so
            return True

    def start(self, channel: LoopChannel, stubs: Stubs, method: Method, request: Any, timeout: float,
              metadata: Any, done: Callable[[Outcome], None]) -> None:
        async def run() -> None:
            try:
                result = await rpc(method(stubs)(request, timeout=timeout, metadata=metadata),
                                   lambda: channel.made is None)
            except grpc.RpcError as e:
                done(_Done(e.code(), e.details(), None))
            except ValueError as e:  # closed before the call
                done(_Done(grpc.StatusCode.CANCELLED, str(e), None))
            else:
                done(_Done(grpc.StatusCode.OK, "", result))

        self._on_loop(lambda: self._spawn(run()))

    def call(self, channel: LoopChannel, stubs: Stubs, method: Method, request: Any, timeout: float,
             metadata: Any) -> Any:
        async def run() -> Any:
            return await rpc(method(stubs)(request, timeout=timeout, metadata=metadata))

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout + 1.0)

    async def drain(self) -> None:
        """Wait for the closes and probes handed to the loop so far (a client's ``aclose``)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # ---- on the loop ----
    def _on_loop(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the loop: now when called there, else soon (ValueError: the loop is closed)."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            fn()
            return
        if self.loop.is_closed():
            raise ValueError("closed channel: its event loop is closed")
        try:
            self.loop.call_soon_threadsafe(fn)
        except RuntimeError as e:  # the loop was closed: nothing on it runs again
            raise ValueError(f"closed channel: its event loop is closed ({e})") from e

    def _spawn(self, aw: Awaitable[Any] | None) -> None:
        if aw is None:
            return
        task = asyncio.ensure_future(aw, loop=self.loop)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


class _Done:
    """A finished call's outcome, in grpc.Future's words."""

    __slots__ = ("_code", "_details", "_result")

    def __init__(self, code: grpc.StatusCode | None, details: str | None, result: Any) -> None:
        self._code, self._details, self._result = code, details, result

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def details(self) -> str | None:
        return self._details

    def result(self) -> Any:
        return self._result


async def rpc(call: Awaitable[Any], closed: Callable[[], bool] | None = None) -> Any:
    """Await a grpc.aio call; a close of its channel under it is ``CANCELLED`` (:class:`ChannelClosed`),
    a cancellation of the awaiting task stays a cancellation, a call on a closed channel a ValueError.
    ``closed()``: was the call's channel closed? (Python 3.10 cannot tell a task's own cancellation apart.)"""
    try:
        return await call
    except (asyncio.CancelledError, grpc.aio.UsageError) as e:
        raise translate(e, closed) from None


def translate(error: BaseException, closed: Callable[[], bool] | None) -> BaseException:
    """What a grpc.aio call's ``CancelledError`` or ``UsageError`` means (see :func:`rpc`): the error to raise."""
    if isinstance(error, grpc.aio.UsageError):
        return ValueError(f"Cannot invoke RPC on closed channel! ({error})")
    if not isinstance(error, asyncio.CancelledError):
        return error
    cancelling = _cancelling()
    if cancelling or (cancelling is None and (closed is None or not closed())):
        return error
    return ChannelClosed("the channel was closed with the call in flight")


def _cancelling() -> bool | None:
    """Is the current task being cancelled, rather than its call cut by a channel's close? (None: cannot
    tell, before Python 3.11.)"""
    task = asyncio.current_task()
    if task is None:
        return True
    if sys.version_info >= (3, 11):
        return task.cancelling() > 0
    return None
