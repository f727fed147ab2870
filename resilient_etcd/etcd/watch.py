"""Watches that survive restarts, hangs and token loss without losing or repeating an event.

All watches of a client share one gRPC Watch stream on the active endpoint, created with
client-assigned watch ids (etcd ≥ 3.4) so a resumed stream re-creates them under the same ids.
Each watch remembers the first revision it has not delivered yet (``next_revision``); every
(re)creation starts there, and events below it are dropped, so a resume never repeats an event
and never skips one.

Liveness: every ``progress_interval`` the monitor sends a ``WatchProgressRequest`` on the stream;
if nothing at all comes back within ``stall_timeout`` the stream is declared dead, cancelled and
re-opened on another endpoint — a quiet watch is checked as often as a busy one. The endpoint
prober catches hung connections independently (closing the channel ends the stream here too).
Progress answers also advance every watch's ``next_revision`` (they promise that everything up
to their revision has been sent), which keeps resumes clear of compaction — but only from servers
that keep that promise: etcd before 3.4.25 / 3.5.8 could answer a progress request ahead of events
still pending for an unsynced watcher (etcd #15220), and raising the floor then would drop those
events. The server's version comes from ``Status`` on the stream's own connection; unknown counts
as old.

A watch whose resume point was compacted away receives :class:`RevisionCompactedError` (with the
compacted revision) and ends: never silently. A token the server no longer knows (restart, TTL)
is renewed and the stream re-opened.
"""

from __future__ import annotations

import collections
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc
from tenacity import wait_random_exponential

from .._proto import rpc_pb2
from ..balancer.prober import PROBER
from ..balancer.retrying import delay_after
from ..exceptions import ClientClosedError, Etcd3Exception, NoLeaderError, RevisionCompactedError, WatchTimedOut
from ..metrics import METRICS
from ..transport.retry import Failure, classify, is_hard
from .events import WatchResponse, new_event

if TYPE_CHECKING:
    from ..transport.core import Metadata
    from ..transport.pool import Connection
    from ..transport.transport import Transport

log = logging.getLogger("resilient_etcd.watch")

Callback = Callable[[Any], None]
# Known bugs the robustness tests plant, to show their checks catch them. Never set outside those tests.
_PLANTED = {"resume_one_late": False}
_PROGRESS = rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest())
_ALL_WATCHERS = -1  # the watch id etcd puts on answers to a progress request
_BACKOFF = wait_random_exponential(multiplier=0.02, max=1.0)  # between streams that delivered nothing


@dataclass
class _Watch:
    id: int
    key: bytes
    range_end: bytes
    callback: Callback
    start_revision: int | None
    progress_notify: bool
    filters: list[Any]
    prev_kv: bool
    next_revision: int | None = None   # first revision not delivered yet
    created: Any = field(default_factory=threading.Event)  # an asyncio.Event for the asyncio face
    error: BaseException | None = None
    on_stream: bool = False
    acked_after: int = -1  # the last progress request sent before etcd acknowledged this watch's create
    cancelled: bool = False  # by cancel(): nothing more is delivered to it

    def create_request(self) -> rpc_pb2.WatchRequest:
        start = self.next_revision if self.next_revision is not None else (self.start_revision or 0)
        if _PLANTED["resume_one_late"] and self.next_revision is not None:
            start += 1  # the planted bug: a resume skips the first revision not yet delivered
        return rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(
            key=self.key, range_end=self.range_end, start_revision=start, progress_notify=self.progress_notify,
            filters=self.filters, prev_kv=self.prev_kv, watch_id=self.id))


def progress_is_ordered(version: str | None) -> bool:
    """Does an etcd of ``version`` answer a progress request only after every event before it
    (etcd #15220, fixed in 3.4.25 and 3.5.8)? False when unknown."""
    try:
        major, minor, patch = (int(p) for p in (version or "").split("-")[0].split(".")[:3])
    except ValueError:
        return False
    if (major, minor) == (3, 4):
        return patch >= 25
    if (major, minor) == (3, 5):
        return patch >= 8
    return (major, minor) >= (3, 6)


def _requests(q: queue.SimpleQueue[rpc_pb2.WatchRequest | None]) -> Iterator[rpc_pb2.WatchRequest]:
    while True:
        item = q.get()
        if item is None:
            return
        yield item


def _safe(callback: Callback, arg: Any) -> None:
    try:
        callback(arg)
    except Exception:
        log.exception("watch callback failed")


class ResponseItems:
    """What a watch's iterator (either face) makes of the items its callback queued."""

    done = False

    def _item(self, item: Any) -> WatchResponse | None:
        """The response ``item`` is; None when the watch ended (the iterator is done). Raises the error that
        ended the watch (done too), or a transient one (NoLeaderError: the iterator goes on after it)."""
        if item is None:
            self.done = True
            return None
        if isinstance(item, BaseException):
            if not getattr(item, "transient", False):
                self.done = True
            raise item
        resp: WatchResponse = item
        return resp


def _end(watches: list[_Watch]) -> None:
    """The client closed: every watch ends with :class:`ClientClosedError` (one still being created raises it)."""
    for w in watches:
        err = ClientClosedError("the client was closed; the watch ended")
        if not w.created.is_set():
            w.error = err
            w.created.set()
        else:
            _safe(w.callback, err)


class _StreamEnded(Exception):
    pass


class WatchBook:
    """The watches of one client and the Watch protocol's bookkeeping, whatever does the I/O: which
    revision each watch resumes from, which create an anonymous refusal answers, what a progress answer
    proves, when a quiet stream counts as stalled, and what a stream's end means. A face (threads:
    :class:`WatchManager`; asyncio: ``resilient_etcd.aio``'s) runs the stream and delivers."""

    def __init__(self, transport: Any, *, progress_interval: float, stall_timeout: float,
                 require_leader: bool) -> None:
        self._t = transport
        self.progress_interval = progress_interval
        self.stall_timeout = stall_timeout
        self._require_leader = require_leader
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._watches: dict[int, _Watch] = {}
        # the creates sent on the current stream and not answered yet, in the order sent: etcd answers a
        # create it refuses before making a watch (expired token, permission) with watch id -1, in order
        self._unanswered: collections.deque[int] = collections.deque()
        self._last_activity = 0.0
        self._progress_ordered = False  # may progress answers raise the floor? (per stream, by server version)
        self._version_unknown = False  # the stream opened before its server's version could be asked
        self._progress_sent: float | None = None  # when the progress request out now was sent (one at a time)
        self._progress_requests = 0  # progress requests sent by this manager
        self._last_progress = 0.0
        self._stalled = False
        self._idle = False  # the stream was closed on purpose (no watches left): not a resume
        self._leaderless = False  # NoLeaderError already delivered for the current outage
        self._token_refused = False  # a create was refused for our token: renew it before the next stream
        self.resumes = 0
        self._avoid: Any = None  # the connection whose stream just failed: try another one first
        self._failures = 0  # streams in a row that delivered nothing

    def _deliver(self, w: _Watch, item: Any) -> None:
        raise NotImplementedError

    # ---- a stream's life ----
    def _metadata(self) -> Metadata:
        md: Metadata = self._t.token_metadata
        return md + ((("hasleader", "true"),) if self._require_leader else ())

    def _opened(self, version: str | None) -> list[rpc_pb2.WatchRequest]:
        """A new stream is up (lock held): the creates to send on it, every watch from its resume point.
        ``version`` is the server's etcd version, None when it could not be asked (asked again once the
        stream has answered: a stream opened while its member restarts would otherwise never trust a
        progress answer)."""
        self._learn_version(version)
        self._stalled = False
        self._progress_sent = None
        self._last_activity = self._last_progress = time.monotonic()
        self._unanswered = collections.deque(self._watches)
        for w in self._watches.values():
            w.on_stream = True
        return [w.create_request() for w in self._watches.values()]

    def _learn_version(self, version: str | None, *, again: bool = False) -> None:
        """The stream's server version (None: unknown); ``again``: the one re-ask after its first answer."""
        self._progress_ordered = progress_is_ordered(version)
        self._version_unknown = version is None and not again

    def _closed_stream(self) -> None:
        """The stream ended (lock held): no watch is on one."""
        for w in self._watches.values():
            w.on_stream = False

    def _ended(self, conn: Connection, gen: int, code: grpc.StatusCode, details: str) -> None:
        """The stream on ``conn`` failed with ``code``: what it says of the endpoint, and of the cluster."""
        failure = classify(code, details)
        if failure is Failure.AUTH_TOKEN and self._t.has_credentials:
            self._token_refused = True
        elif self._stalled:
            self._avoid = conn
            self._t.pool.report_failure(conn, "watch stream stalled", hard=False, generation=gen)
        elif "no leader" in details:
            self._avoid = conn
            self._notify_no_leader(f"{details} [{conn.name}]")
        elif code != grpc.StatusCode.CANCELLED:
            self._avoid = conn
            self._t.pool.report_failure(conn, f"watch: {code.name}: {details}", hard=is_hard(failure),
                                        generation=gen)
        log.info("watch stream on %s ended (%s: %s); resuming", conn.name, code.name, details,
                 extra={"endpoint": conn.name, "event": "watch_resume"})

    def _pause_after(self, delivered: bool) -> float:
        """Seconds to wait before the next stream: none after one that delivered, else a jittered backoff
        growing with the streams in a row that did not (a member refusing watches is not hammered)."""
        self._failures = 0 if delivered else self._failures + 1
        return delay_after(_BACKOFF, self._failures) if self._failures else 0.0

    def _count_resume(self, conn: Connection, closing: bool) -> None:
        if self._idle:
            self._idle = False
        elif not closing:
            self.resumes += 1
            METRICS.inc("watch_resumes", conn.name)

    def _progress_due(self, now: float) -> bool:
        """Time to ask for progress on a quiet stream? (Counts the request as sent.)"""
        if self._progress_sent is not None or now - self._last_progress < self.progress_interval:
            return False
        self._last_progress = self._progress_sent = now
        self._progress_requests += 1
        return True

    def _stall(self, now: float) -> bool:
        """Has the stream been silent for ``stall_timeout`` with a progress request out? (Marks it stalled.)"""
        sent = self._progress_sent
        if sent is None or now - max(sent, self._last_activity) <= self.stall_timeout:
            return False
        log.warning("watch stream silent for %.2f s with a progress request out; re-opening",
                    now - max(sent, self._last_activity), extra={"event": "watch_stall"})
        self._stalled = True
        return True

    # ---- answers ----
    def _received(self, conn: Connection, resp: rpc_pb2.WatchResponse) -> None:
        """An answer on the stream from ``conn``: proof of life (for the stall check and the prober), then
        what it says."""
        self._last_activity = time.monotonic()
        conn.heard()
        self._handle(resp)
        self._leaderless = False

    def _handle(self, resp: rpc_pb2.WatchResponse) -> None:
        wid = resp.watch_id
        if wid == _ALL_WATCHERS and (resp.created or resp.canceled):
            self._refused(resp)
            return
        if wid == _ALL_WATCHERS:
            self._progress_sent = None  # answered: the watchdog may ask again
            if not self._progress_ordered:
                return  # proof of life only (the watchdog saw it); events may still be pending
            answered = self._progress_requests  # one request out at a time: this answers the last one
            with self._lock:
                for w in self._watches.values():
                    # only watches etcd had made before that request: a request sent before a create may be
                    # answered after the create's ack (etcd sends both from one select), and its revision
                    # says nothing of a watch still replaying history from a start in the past
                    if w.on_stream and w.next_revision is not None and w.acked_after < answered:
                        w.next_revision = max(w.next_revision, resp.header.revision + 1)
            return
        with self._lock:
            found = self._watches.get(wid)
        if found is None:
            return
        w = found
        if resp.created:
            with self._lock:
                if wid in self._unanswered:
                    self._unanswered.remove(wid)
        if resp.created and not resp.canceled and not resp.compact_revision:
            if w.next_revision is None:
                w.next_revision = (w.start_revision or resp.header.revision + 1)
            w.acked_after = self._progress_requests
            w.created.set()
            return
        if resp.canceled or resp.compact_revision:
            self._canceled(w, resp)
            return
        if not resp.events:  # progress_notify for this watch
            if w.next_revision is not None:
                w.next_revision = max(w.next_revision, resp.header.revision + 1)
            self._deliver(w, WatchResponse(resp.header, []))
            return
        floor = w.next_revision or 0
        fresh = [e for e in resp.events if e.kv.mod_revision >= floor]
        if fresh:
            w.next_revision = fresh[-1].kv.mod_revision + 1
            self._deliver(w, WatchResponse(resp.header, [new_event(e) for e in fresh]))

    def _refused(self, resp: rpc_pb2.WatchResponse) -> None:
        """A create refused before a watch was made: the answer (id -1) names no watch, so it is the
        oldest create not answered yet. Read as a progress notice, it left that watch uncreated and
        silent for good (an expired token after a resume: every watch)."""
        with self._lock:
            wid = self._unanswered.popleft() if self._unanswered else None
            w = self._watches.get(wid) if wid is not None else None
        if w is not None:
            self._canceled(w, resp)
            return
        self._renew_if_token(resp.cancel_reason)
        log.warning("watch create refused: %s", resp.cancel_reason, extra={"event": "watch_refused"})

    def _renew_if_token(self, reason: str) -> None:
        """A refusal for our token: re-open the stream after re-authenticating (raises _StreamEnded); the
        watches resume on the new stream. Any other reason: nothing to do here."""
        if classify(grpc.StatusCode.UNAUTHENTICATED, reason) is Failure.AUTH_TOKEN and self._t.has_credentials:
            self._token_refused = True
            raise _StreamEnded

    def _canceled(self, w: _Watch, resp: rpc_pb2.WatchResponse) -> None:
        reason = resp.cancel_reason or "watch canceled by the server"
        self._renew_if_token(reason)
        err: Etcd3Exception = (RevisionCompactedError(resp.compact_revision) if resp.compact_revision
                               else Etcd3Exception(reason))
        with self._lock:
            self._watches.pop(w.id, None)
        if not w.created.is_set():
            w.error = err
            w.created.set()
            return
        self._deliver(w, err)

    def _notify_no_leader(self, reason: str) -> None:
        """Tell every watch once per outage that there is no leader; the watches stay and resume."""
        if self._leaderless:
            return
        self._leaderless = True
        log.warning("watch: no leader (%s); watches will resume when quorum returns", reason,
                    extra={"event": "watch_no_leader"})
        with self._lock:
            watches = list(self._watches.values())
        for w in watches:
            if not w.created.is_set():
                w.error = NoLeaderError(reason)
                w.created.set()
                with self._lock:
                    self._watches.pop(w.id, None)
            else:
                self._deliver(w, NoLeaderError(reason))


class WatchManager(WatchBook):
    """The watch machinery of one sync client, created on first use: a reader thread runs the stream,
    a watchdog thread asks quiet streams for progress and re-opens stalled ones."""

    def __init__(self, transport: Transport, *, progress_interval: float = 0.5, stall_timeout: float = 1.0,
                 require_leader: bool = True) -> None:
        super().__init__(transport, progress_interval=progress_interval, stall_timeout=stall_timeout,
                         require_leader=require_leader)
        self._wake = threading.Condition(self._lock)
        self._closed = threading.Event()
        self._stream: tuple[Any, queue.SimpleQueue[rpc_pb2.WatchRequest | None]] | None = None
        self._in_callback = False
        # the watch whose callback runs now (reader thread); cancel() waits while it is the one cancelled
        self._running: _Watch | None = None
        self._callback_done = threading.Condition(threading.Lock())
        self._reader = threading.Thread(target=self._run, name="resilient-etcd-watch", daemon=True)
        self._monitor = threading.Thread(target=self._watchdog, name="resilient-etcd-watchdog", daemon=True)
        self._reader.start()
        self._monitor.start()

    # ---- public ----
    def add(self, key: bytes, range_end: bytes, callback: Callback, *, start_revision: int | None,
            progress_notify: bool, filters: list[int] | None, prev_kv: bool, timeout: float | None) -> int:
        w = _Watch(next(self._ids), key, range_end, callback, start_revision, progress_notify,
                   list(filters or []), prev_kv)
        with self._lock:
            self._watches[w.id] = w
            if self._stream is not None:
                w.on_stream = True
                self._unanswered.append(w.id)
                self._stream[1].put(w.create_request())
            self._wake.notify_all()
        if not w.created.wait(timeout):
            self.cancel(w.id)
            raise WatchTimedOut(f"watch on {key!r} was not created within {timeout} s")
        if w.error is not None:
            raise w.error
        return w.id

    def cancel(self, watch_id: int) -> None:
        """Stop one watch; the last one to go closes the stream (the thread idles until the next add).
        When it returns, no callback of that watch runs any more, nor will one: a callback in progress
        has returned (unless ``cancel`` is called from a callback, which cannot wait for itself)."""
        with self._lock:
            w = self._watches.pop(watch_id, None)
            if w is not None:
                w.cancelled = True
            stream = self._stream
            if w is not None and stream is not None and w.on_stream:
                if self._watches:
                    stream[1].put(rpc_pb2.WatchRequest(cancel_request=rpc_pb2.WatchCancelRequest(watch_id=w.id)))
                    stream = None
                else:
                    self._idle = True
            else:
                stream = None
        if stream is not None:
            # not on the caller's time: grpc's cancel waits for the call's lock, which the stream's own
            # threads may hold a while on a loaded machine (a lock acquire returned 122 ms past its
            # deadline, 50 ms of it here); the reader takes the end as idle, not as a failure
            PROBER.run_blocking(stream[0].cancel)
        if w is not None and threading.current_thread() is not self._reader:
            with self._callback_done:  # a callback of this watch that was running has returned
                while self._running is w:
                    self._callback_done.wait()

    def close(self) -> None:
        """End every watch: its callback gets :class:`ClientClosedError` (so a ``watch_once`` or a
        lock waiting on it returns at once), and the stream and threads stop."""
        self._closed.set()
        with self._lock:
            self._wake.notify_all()
            stream = self._stream
            watches, self._watches = list(self._watches.values()), {}
        if stream is not None:
            stream[0].cancel()
        _end(watches)
        for th in (self._reader, self._monitor):
            if th is not threading.current_thread():
                th.join(timeout=5)

    # ---- the reader ----
    def _run(self) -> None:
        while not self._closed.is_set():
            with self._lock:
                while not self._watches and not self._closed.is_set():
                    self._wake.wait()
            if self._closed.is_set():
                return
            pause = self._pause_after(self._pump())
            if pause and not self._closed.is_set():
                self._closed.wait(pause)

    def _pump(self) -> bool:
        """Run one stream until it ends; True if it delivered anything (the next may start at once)."""
        if self._token_refused:
            self._token_refused = False
            self._reauth()
        conn = self._t.pool.pick(avoid=self._avoid)
        self._avoid = None
        gen = conn.generation
        q: queue.SimpleQueue[rpc_pb2.WatchRequest | None] = queue.SimpleQueue()
        delivered = False
        version = self._server_version(conn)
        try:
            call = conn.stubs.watch.Watch(_requests(q), metadata=self._metadata())
        except ValueError:  # channel closed under us: pick again
            return False
        with self._lock:
            self._stream = (call, q)
            for req in self._opened(version):
                q.put(req)
        try:
            for resp in call:
                self._received(conn, resp)
                delivered = True
                if self._version_unknown:  # the member answers now: ask once more
                    self._learn_version(self._server_version(conn), again=True)
        except grpc.RpcError as e:
            if self._closed.is_set() or self._idle:
                return True
            self._ended(conn, gen, e.code(), e.details() or "")
        except _StreamEnded:
            pass
        finally:
            q.put(None)
            with self._lock:
                self._stream = None
                self._closed_stream()
            call.cancel()
        self._count_resume(conn, self._closed.is_set())
        return delivered

    def _server_version(self, conn: Connection) -> str | None:
        """The etcd version behind ``conn`` (cached per connection generation); None when unknown."""
        cached = conn.server_version
        if cached is not None and cached[0] == conn.generation:
            return cached[1]
        try:
            st = conn.stubs.maintenance.Status(rpc_pb2.StatusRequest(), timeout=self.stall_timeout,
                                               metadata=self._t.token_metadata)
        except (grpc.RpcError, ValueError):
            return None
        conn.server_version = (conn.generation, st.version)
        return str(st.version)

    def _reauth(self) -> None:
        try:
            self._t.authenticate()
        except Etcd3Exception as e:
            log.warning("watch could not re-authenticate: %s", e)

    def _deliver(self, w: _Watch, item: Any) -> None:
        with self._callback_done:
            if w.cancelled:
                return  # cancelled after this response arrived: cancel() promised nothing more comes
            self._running = w
        self._in_callback = True
        try:
            _safe(w.callback, item)
        finally:
            self._in_callback = False
            self._last_activity = time.monotonic()
            with self._callback_done:
                self._running = None
                self._callback_done.notify_all()

    # ---- the watchdog ----
    def _watchdog(self) -> None:
        tick = min(self.progress_interval, self.stall_timeout) / 4
        while not self._closed.wait(tick):
            with self._lock:
                stream = self._stream
            if stream is None or self._in_callback:
                continue
            now = time.monotonic()
            if self._progress_due(now):
                stream[1].put(_PROGRESS)
            elif self._stall(now):
                stream[0].cancel()
