"""The retry loop every transport uses: tenacity, bounded by the call's deadline.

What to retry, and where, is each transport's business (gRPC's retry table and failure classes,
HTTP's safe verbs and statuses); *how* is the same for all of them and lives here: stop after a
number of attempts, when the deadline is gone, or when the client closes; wait a jittered
exponential backoff — or what the server asked for (``Retry-After``), capped — but never past the
deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    nap,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)
from tenacity.stop import stop_base
from tenacity.wait import wait_base

Left = Callable[[], float | None]
"""Seconds left of a call's deadline (None: it has none)."""


class stop_when(stop_base):
    """Stop retrying when ``predicate()`` is true (the deadline has passed, the client closed)."""

    def __init__(self, predicate: Callable[[], bool]) -> None:
        self.predicate = predicate

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.predicate()


def deadline_gone(left: Left) -> bool:
    """Is the deadline ``left`` measures gone?"""
    remaining = left()
    return remaining is not None and remaining <= 0


def delay_after(wait: wait_base, failures: int) -> float:
    """What a tenacity ``wait`` strategy says to wait after ``failures`` failures in a row, for loops
    that retry by themselves (a watch stream) rather than through ``Retrying``."""
    state = RetryCallState(None, None, (), {})  # type: ignore[arg-type]
    state.attempt_number = failures
    return float(wait(state))


def make_retrying(
    retry_on: type[BaseException], left: Left, *, attempts: int | None, backoff_initial: float,
    backoff_max: float, closed: Callable[[], bool] | None = None,
    retry_after: Callable[[BaseException], float | None] | None = None, retry_after_max: float = float("inf"),
    before_sleep: Callable[[RetryCallState], None] | None = None, sleep: Callable[[float], None] | None = None,
) -> Retrying:
    """A tenacity ``Retrying`` that retries ``retry_on`` (re-raised when it gives up).

    Stops after ``attempts`` (None: no count), when the deadline is gone, or when ``closed()``. Waits a
    jittered exponential backoff (``backoff_initial`` doubling up to ``backoff_max``), or the server's
    ``retry_after(error)`` when it gave one (at most ``retry_after_max``) — never past the deadline.
    ``sleep``: the wait itself (a client's close may end it early).
    """
    return Retrying(**_policy(retry_on, left, attempts, backoff_initial, backoff_max, closed, retry_after,
                              retry_after_max), before_sleep=before_sleep, sleep=sleep or nap.sleep)


def make_async_retrying(
    retry_on: type[BaseException], left: Left, *, attempts: int | None, backoff_initial: float,
    backoff_max: float, closed: Callable[[], bool] | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> AsyncRetrying:
    """:func:`make_retrying` for coroutines: the same stops and waits, the wait an ``asyncio.sleep``."""
    return AsyncRetrying(**_policy(retry_on, left, attempts, backoff_initial, backoff_max, closed, None,
                                   float("inf")), sleep=sleep)


def _policy(retry_on: type[BaseException], left: Left, attempts: int | None, backoff_initial: float,
            backoff_max: float, closed: Callable[[], bool] | None,
            retry_after: Callable[[BaseException], float | None] | None, retry_after_max: float) -> dict[str, Any]:
    stop: stop_base = stop_when(lambda: deadline_gone(left))
    if attempts is not None:
        stop = stop_after_attempt(attempts) | stop
    if closed is not None:
        stop = stop | stop_when(closed)
    backoff = wait_random_exponential(multiplier=backoff_initial, max=backoff_max)

    def wait(state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        asked = retry_after(error) if retry_after is not None and error is not None else None
        seconds = min(asked, retry_after_max) if asked is not None else float(backoff(state))
        remaining = left()
        return seconds if remaining is None else max(0.0, min(seconds, remaining))

    return {"stop": stop, "wait": wait, "retry": retry_if_exception_type(retry_on), "reraise": True}
