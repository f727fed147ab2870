"""Deadline scopes that nest, on :mod:`contextvars`.

>>> from resilient_etcd import deadline, remaining
>>> remaining() is None
True
>>> with deadline(5):
...     with deadline(60):          # an inner scope can only shorten the outer one
...         0 < remaining() <= 5
True

Every call the client makes inside a scope gets ``min(scope, per-call timeout, client
default)``; a scope that has already run out raises :class:`DeadlineExceeded` before any I/O.

Threads do not inherit context variables. To carry a scope into a worker thread, run the
worker in a copy of the caller's context::

    ctx = contextvars.copy_context()
    threading.Thread(target=ctx.run, args=(worker,)).start()

(``concurrent.futures`` executors need the same ``ctx.run`` wrapping; asyncio tasks copy the
context by themselves.)
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Callable
from contextvars import ContextVar, Token
from typing import Any, ParamSpec, TypeVar

from .exceptions import ConfigurationError, DeadlineExceeded

P = ParamSpec("P")
R = TypeVar("R")

# absolute time.monotonic() at which the innermost scope expires; None = no scope
_deadline: ContextVar[float | None] = ContextVar("resilient_etcd_deadline", default=None)


def current_deadline() -> float | None:
    """The absolute ``time.monotonic()`` deadline in force, or None."""
    return _deadline.get()


def remaining() -> float | None:
    """Seconds left in the innermost scope (may be ≤ 0), or None outside any scope."""
    d = _deadline.get()
    return None if d is None else d - time.monotonic()


class deadline:
    """A deadline scope: ``with deadline(2): ...`` or ``@deadline(2)``.

    Nested scopes take the earlier of the two deadlines. ``seconds`` must be a positive finite
    number.
    """

    __slots__ = ("_tokens", "seconds")

    def __init__(self, seconds: float) -> None:
        checked = validate_timeout("deadline seconds", seconds, allow_none=False)
        assert checked is not None  # allow_none=False never returns None
        self.seconds = checked
        self._tokens: list[Token[float | None]] = []

    def __repr__(self) -> str:
        return f"deadline({self.seconds:g})"

    def __enter__(self) -> deadline:
        outer = _deadline.get()
        mine = time.monotonic() + self.seconds
        self._tokens.append(_deadline.set(mine if outer is None else min(outer, mine)))
        return self

    def __exit__(self, *exc: object) -> None:
        _deadline.reset(self._tokens.pop())

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            with deadline(self.seconds):
                return fn(*args, **kwargs)

        return wrapper


def call_timeout(per_call: float | None, default: float | None) -> float | None:
    """Seconds this call may take: min(scope remaining, ``per_call``, ``default``).

    Raises :class:`DeadlineExceeded` when the scope has already run out. Returns None only when
    nothing bounds the call (no scope, no per-call timeout, no default).
    """
    if per_call is not None:
        validate_timeout("timeout", per_call)
    budget = per_call if per_call is not None else default
    d = _deadline.get()
    if d is None:
        return budget
    left = d - time.monotonic()
    if left <= 0:
        raise DeadlineExceeded(f"deadline exceeded {-left:.3f} s before the call started")
    return left if budget is None or left < budget else budget


def deadline_of(per_call: float | None, default: float | None) -> contextlib.AbstractContextManager[Any]:
    """A scope for an operation made of several calls: ``min(scope, per_call, default)`` covers them all."""
    budget = call_timeout(per_call, default)
    return contextlib.nullcontext() if budget is None else deadline(budget)


def validate_timeout(name: str, value: Any, *, allow_none: bool = True) -> float | None:
    """A positive finite number of seconds (or None when allowed); ConfigurationError otherwise."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(f"{name} must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ConfigurationError(f"{name} must be positive and finite, got {value!r}")
    return float(value)


_retries: ContextVar[bool] = ContextVar("resilient_etcd_retries", default=True)


def retries_enabled() -> bool:
    return _retries.get()


class no_retry:
    """Turn retries off for the calls inside: ``with no_retry(): client.put(k, v)``.

    Failures then raise at once (a request that never left is still reported, not resent).
    """

    __slots__ = ("_tokens",)

    def __init__(self) -> None:
        self._tokens: list[Token[bool]] = []

    def __enter__(self) -> no_retry:
        self._tokens.append(_retries.set(False))
        return self

    def __exit__(self, *exc: object) -> None:
        _retries.reset(self._tokens.pop())
