"""Process exit: stop our work while the interpreter still runs it.

CPython 3.10 to 3.13 ends a daemon thread that wakes up after finalization has begun with
``pthread_exit``, which aborts the whole process (SIGABRT, "Fatal Python error: Aborted", exit
134) when the thread's stack cannot be unwound. A watch running in a daemon thread wakes up
whenever data or a timeout arrives, so a script that simply returns from ``main`` died that way.

So, at exit (an :mod:`atexit` hook, which runs before finalization), every live client is closed —
which ends its watches, keepers and I/O threads — and every thread still inside one of our
iterators is given a moment to leave it. Nothing here runs during normal operation.
"""

from __future__ import annotations

import atexit
import contextlib
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Protocol


class _Closeable(Protocol):
    def close(self) -> None: ...


_clients: weakref.WeakSet[_Closeable] = weakref.WeakSet()
_busy: weakref.WeakSet[threading.Thread] = weakref.WeakSet()
_lock = threading.Lock()
EXIT_GRACE = 2.0
"""Seconds the exit hook waits, in all, for threads to leave our iterators."""


def register(client: _Closeable) -> None:
    """Close ``client`` at process exit if it is still alive then."""
    with _lock:
        _clients.add(client)


@contextlib.contextmanager
def busy() -> Iterator[None]:
    """Mark the current thread as running our code (an iterator of a watch) until the block ends."""
    me = threading.current_thread()
    with _lock:
        _busy.add(me)
    try:
        yield
    finally:
        with _lock:
            _busy.discard(me)


def _at_exit() -> None:
    with _lock:
        clients, threads = list(_clients), list(_busy)
    for c in clients:
        with contextlib.suppress(Exception):
            c.close()
    end = time.monotonic() + EXIT_GRACE
    me = threading.current_thread()
    for t in threads:
        if t is not me:
            t.join(max(0.0, end - time.monotonic()))


atexit.register(_at_exit)
