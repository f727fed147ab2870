"""Running *steps*: logic written once as a generator that yields the I/O it needs, run by either face.

A step generator (the retry decisions of :mod:`resilient_etcd.transport.core`, the pages of
:mod:`resilient_etcd.etcd.paging`) never does I/O itself: it yields a request and is sent the result,
or thrown the error. :func:`drive` does each request's I/O by blocking; :func:`adrive` by awaiting.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from typing import Any, NamedTuple, TypeVar

S = TypeVar("S")
T = TypeVar("T")


def drive(steps: Generator[S, Any, T], do: Callable[[S], Any]) -> T:
    """Run ``steps``, doing each yielded request with ``do`` on this thread."""
    outcome: tuple[bool, Any] = (True, None)
    while True:
        ok, value = outcome
        try:
            request = steps.send(value) if ok else steps.throw(value)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        try:
            outcome = (True, do(request))
        except BaseException as e:  # the steps decide what it means, or let it out
            outcome = (False, e)


async def adrive(steps: Generator[S, Any, T], do: Callable[[S], Awaitable[Any]]) -> T:
    """Run ``steps``, awaiting ``do`` for each yielded request."""
    reply: Any = None
    failed = False
    while True:
        try:
            request = steps.throw(reply) if failed else steps.send(reply)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        try:
            reply, failed = await do(request), False
        except BaseException as e:  # the steps decide what it means, or let it out
            reply, failed = e, True


class Call(NamedTuple):
    """A step's request that is a method call on a client-side object (a client, a lease): the same name
    and arguments on either face, whose asyncio objects return a coroutine :func:`adrive` awaits."""

    target: Any
    method: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


def call(target: Any, method: str, *args: Any, **kwargs: Any) -> Call:
    return Call(target, method, args, kwargs)


def apply(c: Call) -> Any:
    """Make the call (a value on the sync face, a coroutine on the asyncio one)."""
    return getattr(c.target, c.method)(*c.args, **c.kwargs)
