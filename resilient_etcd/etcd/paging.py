"""Large ranges in pages, so that a slow link is never taken for a dead one.

grpcio shows a unary call's answer only when all of it has arrived, and a health probe on the same
connection queues behind it: one 8 MiB answer at 256 KB/s is 32 s of silence, and a connection that
is silent longer than the dead time is ejected. A range read is therefore sent as pages of a bounded
size, the way kube-apiserver pages LISTs with ``limit``/``continue``: every page answered is proof
that the connection is alive, and no probe waits behind more than one page.

All pages are read at the revision of the first one, so the result is the same consistent snapshot
one Range would return. A page is sized from what this client measured: the link's throughput and
the largest key seen under the range, so that it takes at most about :attr:`PageSizer.page_time` to arrive.
Nothing known yet: one key. Keys not seen yet may be larger than any seen so far (a small key first,
then 64 KiB values), so a page has at most twice the keys of the one before it: what a page costs is
learnt a step at a time, never staked on one large guess. A fast link: pages of megabytes after a few
doublings, so the extra round trips cost nothing measurable. Ranges sorted by anything but the key in
ascending order cannot be continued from a key, and are sent whole.

Pure logic: :func:`page_steps` yields each page's request and is sent its answer (see
:mod:`resilient_etcd._steps`); :func:`paged_range` runs it with a blocking ``send``; time is passed in
through ``clock``.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Generator

from .._proto import rpc_pb2
from .._steps import drive
from ..exceptions import Etcd3Exception, RevisionCompactedError

MAX_PAGE_KEYS = 100_000
_MEASURED_BYTES = 32 << 10  # smaller answers time the round trip, not the link
_REMEMBERED_RANGES = 256


class PageSizer:
    """What this client knows of its links and of the sizes of its keys (shared by its threads)."""

    def __init__(self, page_time: float) -> None:
        self.page_time = page_time
        self.throughput: float | None = None  # bytes/s
        self._key_size: OrderedDict[bytes, int] = OrderedDict()  # range start -> its largest key (bytes)
        self._lock = threading.Lock()

    def first_limit(self, start: bytes) -> int:
        """Keys in the first page of a range starting at ``start``."""
        with self._lock:
            per_key = self._key_size.get(start)
            if per_key is not None:
                self._key_size.move_to_end(start)
        return self.limit(per_key)

    def limit(self, per_key: float | None) -> int:
        """Keys per page for keys of up to ``per_key`` bytes (None: unknown) on the link measured so far."""
        if per_key is None or self.throughput is None:
            return 1
        return max(1, min(MAX_PAGE_KEYS, int(self.throughput * self.page_time / max(per_key, 1.0))))

    def answered(self, start: bytes, nbytes: int, largest: int, elapsed: float) -> None:
        """A page of ``nbytes`` whose largest key took ``largest`` bytes (0: no key) arrived ``elapsed``
        seconds after it was sent."""
        rate = nbytes / max(elapsed, 1e-6)
        with self._lock:
            if self.throughput is None or rate > self.throughput:
                # a fast answer proves a fast link; a slow small one may only be the round trip
                self.throughput = rate
            elif nbytes >= _MEASURED_BYTES:
                self.throughput = 0.5 * self.throughput + 0.5 * rate
            if largest:
                self._key_size[start] = largest
                self._key_size.move_to_end(start)
                while len(self._key_size) > _REMEMBERED_RANGES:
                    self._key_size.popitem(last=False)


def pageable(req: rpc_pb2.RangeRequest) -> bool:
    """Can this range be read in pages continued from the last key? (A range of keys, in key order,
    that returns keys.)"""
    in_key_order = req.sort_order == rpc_pb2.RangeRequest.NONE or (
        req.sort_order == rpc_pb2.RangeRequest.ASCEND and req.sort_target == rpc_pb2.RangeRequest.KEY)
    return bool(req.range_end) and in_key_order and not req.count_only


def paged_range(req: rpc_pb2.RangeRequest, send: Callable[[rpc_pb2.RangeRequest], rpc_pb2.RangeResponse],
                sizer: PageSizer, clock: Callable[[], float] = time.monotonic,
                restarts: int = 3) -> rpc_pb2.RangeResponse:
    """:func:`page_steps` with ``send`` doing each page's request on this thread."""
    return drive(page_steps(req, sizer, clock, restarts), send)


PageSteps = Generator[rpc_pb2.RangeRequest, rpc_pb2.RangeResponse, rpc_pb2.RangeResponse]


def page_steps(req: rpc_pb2.RangeRequest, sizer: PageSizer, clock: Callable[[], float] = time.monotonic,
               restarts: int = 3) -> PageSteps:
    """Read ``req`` page by page at one revision; returns one ``RangeResponse`` as a single Range would
    (header and ``count`` of the first page, every key, ``more`` only when the caller's ``limit`` cut
    the range short).

    When the revision of the first page is compacted before the last page arrives (the read took
    longer than the compaction interval), or a later page meets a member that has not applied it yet
    (a serializable read moved to a lagging member), the read starts again at a new revision,
    ``restarts`` times; a revision the caller asked for is never replaced.
    """
    for attempt in range(restarts + 1):
        try:
            return (yield from _read(req, sizer, clock))
        except RevisionCompactedError:
            if req.revision or attempt == restarts:
                raise
        except Etcd3Exception as e:
            if req.revision or attempt == restarts or "future revision" not in str(e):
                raise
    raise AssertionError("unreachable")


def _read(req: rpc_pb2.RangeRequest, sizer: PageSizer, clock: Callable[[], float]) -> PageSteps:
    wanted = req.limit or None
    page = rpc_pb2.RangeRequest()
    page.CopyFrom(req)
    limit = sizer.first_limit(req.key)
    result: rpc_pb2.RangeResponse | None = None
    largest = 0  # sized by the largest key seen so far: keys of mixed sizes never make a page too long
    while True:
        page.limit = limit if wanted is None else min(limit, wanted - _got(result))
        sent = clock()
        resp = yield _copy(page)
        largest = max([largest, *(kv.ByteSize() for kv in resp.kvs)])
        sizer.answered(req.key, resp.ByteSize(), largest, clock() - sent)
        if result is None:
            result = resp
            # every further page at the revision of the first (the header names the store's current
            # revision, which is the one read only when the caller did not ask for another)
            page.revision = req.revision or resp.header.revision
        else:
            result.kvs.extend(resp.kvs)
        cut = wanted is not None and len(result.kvs) >= wanted
        if not resp.more or not resp.kvs or cut:
            result.more = bool(resp.more and resp.kvs)
            return result
        page.key = resp.kvs[-1].key + b"\0"
        limit = min(sizer.limit(largest), 2 * page.limit)  # unseen keys may be larger: grow a step at a time


def _copy(page: rpc_pb2.RangeRequest) -> rpc_pb2.RangeRequest:
    """The page as sent (the request object is reused for the next page while an asyncio face may still
    hold this one)."""
    sent = rpc_pb2.RangeRequest()
    sent.CopyFrom(page)
    return sent


def _got(result: rpc_pb2.RangeResponse | None) -> int:
    return 0 if result is None else len(result.kvs)
