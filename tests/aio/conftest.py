"""The asyncio client's tests run their coroutines with :func:`run`: a fresh event loop in debug mode
whose ``slow_callback_duration`` is tight, failing the test on any callback that held the loop longer
(a blocking call on the loop would stall every task of a controller)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

# seconds one step of the loop may take: a quarter of the 1 s detection budget — a blocking call (a
# sync etcd call, a member's kill) takes far longer. Measured on this 2-core machine under fault load:
# at 0.02 s, steps of 40-60 ms in grpc.aio's own first call on a re-dialled channel and in tasks; in a
# fresh-clone CI run, one 102 ms step that only creates a task (AioChannels.start's handle): the
# process not being scheduled, not a blocking call, so 0.1 s was too tight to be a verdict.
SLOW_CALLBACK = 0.25


class _SlowCallbacks(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Executing") and " took " in message:
            self.seen.append(message)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on a new debug-mode loop; fail if any callback held the loop over SLOW_CALLBACK s."""
    slow = _SlowCallbacks()
    logger = logging.getLogger("asyncio")
    logger.addHandler(slow)
    loop = asyncio.new_event_loop()
    loop.set_debug(True)
    loop.slow_callback_duration = SLOW_CALLBACK
    try:
        result = loop.run_until_complete(coro)
        loop.run_until_complete(loop.shutdown_asyncgens())
        left = [t for t in asyncio.all_tasks(loop) if not t.done()]
        assert not left, f"tasks left running after the test: {left}"
    finally:
        loop.close()
        logger.removeHandler(slow)
    assert not slow.seen, "the event loop was blocked:\n" + "\n".join(slow.seen)
    return result
