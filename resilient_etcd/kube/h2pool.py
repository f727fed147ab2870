"""HTTP/2 to the apiservers: one multiplexed connection per apiserver, with client-go's health check.

:class:`H2PoolManager` stands in for the ``urllib3.PoolManager`` inside the official client's
``RESTClientObject`` (it only needs ``request()`` and ``clear()``), so every generated ``*Api``
method, watches included, runs over it unchanged. Per connection:

* one TLS socket (ALPN ``h2``) carrying every request to that apiserver as streams; a server that
  does not offer ``h2`` is remembered and served by the HTTP/1.1 pool it replaced;
* one I/O thread that owns the socket (reads, writes, flow-control updates);
* **liveness**: when no frame has arrived for ``read_idle_timeout`` seconds the thread sends a PING;
  no frame within ``ping_timeout`` after it closes the connection, and every stream on it fails
  with ``urllib3.exceptions.ProtocolError`` — client-go's ``ReadIdleTimeout``/``PingTimeout``,
  with seconds instead of 30 s + 15 s. A quiet watch on a connection whose path went dead (or whose
  NAT mapping went stale while new connections work) is therefore noticed in about
  ``read_idle_timeout + ping_timeout``, without re-opening the watch;
* the errors callers see are urllib3's, so code written for the official client keeps working:
  ``NewConnectionError``/``ConnectTimeoutError`` (never sent), ``ProtocolError`` (connection lost),
  ``ReadTimeoutError`` (no response data within the read timeout; the stream is reset, the
  connection kept).

Response bodies are flow-controlled: window updates are sent as the caller consumes the body, so
a slow reader of a big LIST holds at most one window of it in memory.
"""

from __future__ import annotations

import contextlib
import contextvars
import http
import logging
import os
import queue
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlencode, urlsplit

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import urllib3
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError, ProtocolError, ReadTimeoutError

from .. import deadlines
from ..exceptions import DeadlineExceeded

log = logging.getLogger("resilient_etcd.kube.h2")

_HOP_BY_HOP = frozenset({"connection", "host", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"})
_STREAM_WINDOW = 4 << 20
_CONNECTION_WINDOW = 16 << 20


class ConnectionDead(ProtocolError):
    """The HTTP/2 connection under a stream was closed (liveness check, GOAWAY, peer close, eject)."""


class StreamRefused(ProtocolError):
    """The apiserver never processed this stream (GOAWAY below its id, REFUSED_STREAM): safe to resend."""


class _NoH2(Exception):
    pass


class _H2State(h2.connection.H2Connection):
    """h2's state machine closes the whole connection on *any* GOAWAY, so the frames of streams the
    server still finishes (ids ≤ last_stream_id, RFC 9113 §6.8) then raise ProtocolError. A graceful
    GOAWAY (NO_ERROR) is turned into the event alone; we open no new streams after it (``goaway``)."""

    def _receive_goaway_frame(self, frame: Any) -> tuple[list[Any], list[h2.events.Event]]:
        if frame.error_code != 0:
            return super()._receive_goaway_frame(frame)
        event = h2.events.ConnectionTerminated()
        event.error_code = h2.errors.ErrorCodes.NO_ERROR
        event.last_stream_id = frame.last_stream_id
        event.additional_data = frame.additional_data or None
        return [], [event]


class _GracefulGoaway(ConnectionDead):
    pass


_END = object()


class _Stream:
    def __init__(self, conn: H2Connection, stream_id: int, url: str, race: threading.Event | None) -> None:
        self.conn, self.id, self.url = conn, stream_id, url
        self.headers: list[tuple[bytes, bytes]] | None = None
        self.ready = threading.Event()
        self.race = race  # set too when this stream is ready: the one event a hedged GET waits on
        self.error: BaseException | None = None
        self.chunks: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.ended = False

    def answered(self, headers: list[tuple[bytes, bytes]]) -> None:
        self.headers = headers
        self._ready()

    def fail(self, error: BaseException) -> None:
        if self.error is None:
            self.error = error
        self._ready()
        self.chunks.put(error)

    def _ready(self) -> None:
        self.ready.set()
        if self.race is not None:
            self.race.set()


class H2Connection:
    """One HTTP/2 connection to one apiserver; see the module docstring."""

    def __init__(self, host: str, port: int, *, ssl_context: ssl.SSLContext | None, server_hostname: str | None,
                 connect_timeout: float, read_idle_timeout: float, ping_timeout: float,
                 socket_options: list[tuple[int, int, int]],
                 on_close: Callable[[H2Connection, str, bool], None]) -> None:
        """``ssl_context=None``: cleartext HTTP/2 with prior knowledge (h2c), as etcd's client port speaks."""
        self.scheme = "https" if ssl_context is not None else "http"
        self.origin = f"{self.scheme}://{host}:{port}"
        self._authority = (f"[{host}]:{port}" if ":" in host else f"{host}:{port}").encode()  # IPv6 in brackets
        self.read_idle_timeout, self.ping_timeout = read_idle_timeout, ping_timeout
        self.last_heard = time.monotonic()  # when bytes last arrived: every DATA frame is proof of life
        self._on_close = on_close
        url = self.origin
        try:
            raw = socket.create_connection((host, port), timeout=connect_timeout)
        except TimeoutError as e:
            raise ConnectTimeoutError(None, url, f"connect to {self.origin} timed out ({connect_timeout} s)") from e
        except OSError as e:
            raise NewConnectionError(None, f"cannot connect to {self.origin}: {e}") from e  # type: ignore[arg-type]
        try:
            for opt in socket_options:
                raw.setsockopt(*opt)
            self._sock = (ssl_context.wrap_socket(raw, server_hostname=server_hostname)  # handshake, same timeout
                          if ssl_context is not None else raw)
        except TimeoutError as e:
            raw.close()
            raise ConnectTimeoutError(None, url, f"TLS handshake with {self.origin} timed out") from e
        except ssl.SSLCertVerificationError as e:  # configuration, not weather: surfaces at once (ApiException 0)
            raw.close()
            raise urllib3.exceptions.SSLError(f"TLS with {self.origin} failed: {e}") from e
        except ssl.SSLError as e:  # a handshake cut short (restart, reset, EOF): transient, and nothing was sent
            raw.close()
            raise NewConnectionError(None, f"TLS handshake with {self.origin} failed: {e}") from e  # type: ignore[arg-type]
        except OSError as e:
            raw.close()
            raise NewConnectionError(None, f"TLS with {self.origin} failed: {e}") from e  # type: ignore[arg-type]
        if isinstance(self._sock, ssl.SSLSocket) and self._sock.selected_alpn_protocol() != "h2":
            self._sock.close()
            raise _NoH2(self.origin)
        self._sock.setblocking(False)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._lock = threading.Lock()  # guards the h2 state machine, _streams and _bodies
        self._h2 = _H2State(h2.config.H2Configuration(client_side=True, header_encoding=None))
        self._h2.initiate_connection()
        self._h2.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: _STREAM_WINDOW,
                                  h2.settings.SettingCodes.ENABLE_PUSH: 0})
        self._h2.increment_flow_control_window(_CONNECTION_WINDOW - 65535)
        self._streams: dict[int, _Stream] = {}
        self._bodies: dict[int, memoryview] = {}
        self._ping_waiters: dict[bytes, threading.Event] = {}
        self.closed: str | None = None  # the reason, once closed
        self.goaway = False
        self.pings = 0
        self._thread = threading.Thread(target=self._loop, name=f"h2 {self.origin}", daemon=True)
        self._thread.start()

    # ---- caller side ----
    @property
    def usable(self) -> bool:
        return self.closed is None and not self.goaway and self._h2.open_outbound_streams < min(
            self._h2.remote_settings.max_concurrent_streams, 1000)

    def request(self, method: str, path: str, headers: dict[str, str], body: bytes | None,
                read_timeout: float | None) -> H2Response:
        return self.response(self.open(method, path, headers, body), read_timeout)

    def open(self, method: str, path: str, headers: dict[str, str], body: bytes | None,
             race: threading.Event | None = None) -> _Stream:
        """Send a request on a new stream (``race``: set too when its response headers, or its failure, arrive)."""
        url = self.origin + path
        out = [(b":method", method.encode()), (b":scheme", self.scheme.encode()),
               (b":authority", self._authority), (b":path", path.encode())]
        out += [(k.lower().encode(), str(v).encode()) for k, v in headers.items() if k.lower() not in _HOP_BY_HOP]
        if body:
            out.append((b"content-length", str(len(body)).encode()))
        with self._lock:
            if self.closed is not None or self.goaway:
                raise StreamRefused(f"connection to {self.origin} is closing ({self.closed or 'GOAWAY'})")
            try:
                sid = self._h2.get_next_available_stream_id()
                self._h2.send_headers(sid, out, end_stream=not body)
            except h2.exceptions.H2Error as e:
                raise StreamRefused(f"cannot open a stream to {self.origin}: {e!r}") from e
            stream = _Stream(self, sid, url, race)
            self._streams[sid] = stream
            if body:
                self._bodies[sid] = memoryview(body)
        self._wake()
        return stream

    def response(self, stream: _Stream, read_timeout: float | None, wait: float | bool | None = True) -> H2Response:
        """The response of ``stream`` once its headers arrive (``ReadTimeoutError`` and a reset stream if they
        do not within ``wait``, by default ``read_timeout``: the body's own idle limit)."""
        if not stream.ready.wait(read_timeout if wait is True else wait):
            self.cancel(stream)
            raise ReadTimeoutError(None, stream.url, f"no response from {self.origin} within {read_timeout} s")  # type: ignore[arg-type]
        if stream.headers is None:
            assert stream.error is not None
            raise stream.error
        return H2Response(stream, stream.headers, read_timeout)

    def ping(self, timeout: float) -> float:
        """Send a PING and return its round trip in seconds; ``ConnectionDead`` if no ack within ``timeout``."""
        payload, done = os.urandom(8), threading.Event()
        with self._lock:
            if self.closed is not None:
                raise ConnectionDead(f"connection to {self.origin} is closed: {self.closed}")
            self._ping_waiters[payload] = done
            self._h2.ping(payload)
        started = time.monotonic()
        self._wake()
        try:
            if not done.wait(timeout):
                raise ConnectionDead(f"no PING ack from {self.origin} within {timeout} s")
        finally:
            with self._lock:
                self._ping_waiters.pop(payload, None)
        return time.monotonic() - started

    def cancel(self, stream: _Stream) -> None:
        with self._lock:
            if self._streams.pop(stream.id, None) is not None and self.closed is None:
                self._bodies.pop(stream.id, None)
                with contextlib.suppress(h2.exceptions.H2Error):
                    self._h2.reset_stream(stream.id, h2.errors.ErrorCodes.CANCEL)
        self._wake()

    def consumed(self, stream: _Stream, length: int) -> None:
        if not length:
            return
        with self._lock:
            if self.closed is not None:
                return
            with contextlib.suppress(h2.exceptions.H2Error, KeyError):
                self._h2.acknowledge_received_data(length, stream.id)
        self._wake()

    def close(self, reason: str = "closed by the client") -> None:
        self._fail(ConnectionDead(f"connection to {self.origin} closed: {reason}"), reason, broken=False)

    def join(self, timeout: float) -> None:
        """Wait up to ``timeout`` for the I/O thread to end (after :meth:`close`)."""
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    # ---- the I/O thread ----
    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def _loop(self) -> None:
        out = b""
        self.last_heard = last_frame = time.monotonic()
        ping_sent: float | None = None
        try:
            while self.closed is None:
                if self.goaway and not self._streams:
                    raise _GracefulGoaway(f"{self.origin} sent GOAWAY; its last stream ended")
                with self._lock:
                    self._push_bodies()
                    out += self._h2.data_to_send()
                if out:
                    with contextlib.suppress(ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
                        out = out[self._sock.send(out):]
                now = time.monotonic()
                if ping_sent is None:
                    wait = last_frame + self.read_idle_timeout - now
                    if wait <= 0:
                        with self._lock:
                            self._h2.ping(os.urandom(8))
                        ping_sent, self.pings = now, self.pings + 1
                        continue
                else:
                    wait = ping_sent + self.ping_timeout - now
                    if wait <= 0:
                        raise ConnectionDead(f"no frame from {self.origin} for {now - last_frame:.1f} s "
                                             f"(PING unanswered for {self.ping_timeout} s)")
                readable = isinstance(self._sock, ssl.SSLSocket) and self._sock.pending() > 0
                if not readable:
                    r, _, _ = select.select([self._sock, self._wake_r], [self._sock] if out else [], [], wait)
                    if self._wake_r in r:
                        with contextlib.suppress(BlockingIOError):
                            self._wake_r.recv(4096)
                    readable = self._sock in r
                if not readable:
                    continue
                try:
                    data = self._sock.recv(1 << 16)
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                    continue
                if not data:
                    cls = _GracefulGoaway if self.goaway else ConnectionDead
                    raise cls(f"{self.origin} closed the connection")
                self.last_heard = last_frame = time.monotonic()
                ping_sent = None
                with self._lock:
                    self._dispatch(self._h2.receive_data(data))
        except _GracefulGoaway as e:
            self._fail(ConnectionDead(str(e)), str(e), broken=False)
        except ConnectionDead as e:
            self._fail(e, str(e), broken=True)
        except (OSError, ValueError, h2.exceptions.H2Error) as e:  # ValueError: select on a socket close() shut
            self._fail(ConnectionDead(f"connection to {self.origin} lost: {e}"), f"{type(e).__name__}: {e}",
                       broken=True)

    def _push_bodies(self) -> None:
        for sid, view in list(self._bodies.items()):
            try:
                while view:
                    window = min(self._h2.local_flow_control_window(sid), self._h2.max_outbound_frame_size)
                    if window <= 0:
                        break
                    self._h2.send_data(sid, view[:window].tobytes())
                    view = view[window:]
                if view:
                    self._bodies[sid] = view
                else:
                    del self._bodies[sid]
                    self._h2.end_stream(sid)
            except h2.exceptions.StreamClosedError:
                self._bodies.pop(sid, None)

    def _dispatch(self, events: list[h2.events.Event]) -> None:
        for ev in events:
            sid = getattr(ev, "stream_id", None)
            stream = self._streams.get(sid) if sid else None
            if isinstance(ev, h2.events.ResponseReceived) and stream:
                stream.answered(list(ev.headers))
            elif isinstance(ev, h2.events.DataReceived):
                if stream:
                    stream.chunks.put((ev.data, ev.flow_controlled_length))
                elif sid:  # a cancelled stream: give the window back at once
                    with contextlib.suppress(h2.exceptions.H2Error):
                        self._h2.acknowledge_received_data(ev.flow_controlled_length, sid)
            elif isinstance(ev, h2.events.StreamEnded) and stream:
                stream.ended = True
                stream.chunks.put(_END)
                del self._streams[stream.id]
            elif isinstance(ev, h2.events.StreamReset) and stream:
                cls = StreamRefused if ev.error_code == h2.errors.ErrorCodes.REFUSED_STREAM else ProtocolError
                stream.fail(cls(f"{self.origin} reset the stream ({ev.error_code!r})"))
                del self._streams[stream.id]
            elif isinstance(ev, h2.events.PingAckReceived):
                waiter = self._ping_waiters.get(ev.ping_data)
                if waiter is not None:
                    waiter.set()
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.goaway = True
                last = ev.last_stream_id or 0
                for s in [s for s in self._streams.values() if s.id > last]:
                    s.fail(StreamRefused(f"{self.origin} sent GOAWAY before processing the request"))
                    del self._streams[s.id]
                if ev.error_code != h2.errors.ErrorCodes.NO_ERROR:
                    raise ConnectionDead(f"{self.origin} sent GOAWAY ({ev.error_code!r})")
                if not self._streams:
                    raise _GracefulGoaway(f"{self.origin} sent GOAWAY (graceful)")

    def _fail(self, error: BaseException, reason: str, *, broken: bool) -> None:
        with self._lock:
            if self.closed is not None:
                return
            self.closed = reason
            streams, self._streams = list(self._streams.values()), {}
            self._bodies.clear()
        for sock in (self._sock, self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                sock.close()
        # the owner hears first (it ejects the endpoint), then the streams: a watch woken by its
        # error must not re-open on the very apiserver this connection just proved dead
        try:
            self._on_close(self, reason, broken)
        finally:
            for s in streams:
                s.fail(error)


class H2Response:
    """What urllib3 returns from ``request(..., preload_content=False)``, as far as the kubernetes client uses it."""

    def __init__(self, stream: _Stream, headers: list[tuple[bytes, bytes]], read_timeout: float | None) -> None:
        self._stream, self._read_timeout = stream, read_timeout
        self._deadline = deadlines.current_deadline()  # the scope in force when the request was made
        self.headers = urllib3.HTTPHeaderDict()
        self.status = 0
        for k, v in headers:
            if k == b":status":
                self.status = int(v)
            elif not k.startswith(b":"):
                self.headers.add(k.decode("latin-1"), v.decode("latin-1"))
        try:
            self.reason = http.HTTPStatus(self.status).phrase
        except ValueError:
            self.reason = ""
        self._body: bytes | None = None
        self._buffer = b""
        self._done = False

    def _chunks(self) -> Iterator[bytes]:
        if self._buffer:
            data, self._buffer = self._buffer, b""
            yield data
        while not self._done:
            wait = self._read_timeout
            if self._deadline is not None:
                left = max(0.0, self._deadline - time.monotonic())
                wait = left if wait is None else min(wait, left)
            try:
                item = self._stream.chunks.get(timeout=wait)
            except queue.Empty:
                self.release_conn()
                if self._deadline is not None and time.monotonic() >= self._deadline:
                    raise DeadlineExceeded(f"deadline exceeded while the response of {self._stream.url} "
                                           "was arriving") from None
                raise ReadTimeoutError(None, self._stream.url,  # type: ignore[arg-type]
                                       f"no data for {self._read_timeout} s") from None
            if item is _END:
                self._done = True
                return
            if isinstance(item, BaseException):
                self._done = True
                raise item
            data, length = item
            self._stream.conn.consumed(self._stream, length)
            if data:
                yield data

    def stream(self, amt: int | None = 2 ** 16, decode_content: bool | None = None) -> Iterator[bytes]:
        yield from self._chunks()

    def read(self, amt: int | None = None, decode_content: bool | None = None, cache_content: bool = False) -> bytes:
        if amt is None:
            return self.data
        out = b""
        for chunk in self._chunks():
            out += chunk
            if len(out) >= amt:
                break
        out, self._buffer = out[:amt], out[amt:] + self._buffer
        return out

    @property
    def data(self) -> bytes:
        if self._body is None:
            self._body = b"".join(self._chunks())
        return self._body

    def release_conn(self) -> None:
        if not self._done:
            self._done = True
            self._stream.conn.cancel(self._stream)

    close = release_conn

    def abort(self) -> None:
        """From another thread: end the body here (a reader blocked on it sees its end) and reset the stream."""
        self._stream.chunks.put(_END)
        self._stream.conn.cancel(self._stream)

    @property
    def closed(self) -> bool:
        return self._done

    @property
    def connection(self) -> _StreamShutdown:
        """What the official ``Watch.stop()`` reaches for to unblock a reader from another thread
        (``resp.connection.sock.shutdown()``): here it ends this stream only — the connection is shared."""
        return _StreamShutdown(self)

    def getheaders(self) -> urllib3.HTTPHeaderDict:
        return self.headers

    def getheader(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name, default)

    def __repr__(self) -> str:
        return f"<H2Response {self.status} {self._stream.url}>"


class _StreamShutdown:
    """``connection.sock.shutdown(how)`` of one :class:`H2Response`: aborts that response's stream."""

    def __init__(self, resp: H2Response) -> None:
        self._resp = resp

    @property
    def sock(self) -> _StreamShutdown:
        return self

    def shutdown(self, how: int) -> None:
        self._resp.abort()


class Hedge:
    """How :meth:`H2PoolManager.request` hedges a GET made under :func:`hedging`. The decisions are the
    caller's (its balancer): when ``delay`` passes without response headers, ``copy_to()`` names the base
    URL of another apiserver for a copy, or None. The first response wins; the other stream is reset.
    Afterwards ``copy`` says where a copy went (None: nowhere), ``won_by_copy`` which one won, and
    ``headers_after`` how long the winner took to its headers (seconds)."""

    __slots__ = ("copy", "copy_to", "delay", "headers_after", "won_by_copy")

    def __init__(self, delay: float, copy_to: Callable[[], str | None]) -> None:
        self.delay, self.copy_to = delay, copy_to
        self.copy: str | None = None
        self.won_by_copy = False
        self.headers_after: float | None = None


_HEDGE: contextvars.ContextVar[Hedge | None] = contextvars.ContextVar("resilient_etcd_h2_hedge", default=None)


@contextlib.contextmanager
def hedging(plan: Hedge) -> Iterator[Hedge]:
    """GETs made in this block (over HTTP/2) are hedged as ``plan`` says."""
    token = _HEDGE.set(plan)
    try:
        yield plan
    finally:
        _HEDGE.reset(token)


class H2PoolManager:
    """The ``pool_manager`` of a kubernetes ``RESTClientObject``, speaking HTTP/2 where it can."""

    def __init__(self, fallback: Any, *, ssl_context: ssl.SSLContext, server_hostname: str | None,
                 connect_timeout: float, read_idle_timeout: float, ping_timeout: float,
                 socket_options: list[tuple[int, int, int]],
                 on_close: Callable[[str, str, bool], None] | None = None) -> None:
        self.fallback = fallback
        self._ssl, self._server_hostname = ssl_context, server_hostname
        self._connect_timeout = connect_timeout
        self._idle, self._ping = read_idle_timeout, ping_timeout
        self._socket_options = socket_options
        self._on_close = on_close
        self._lock = threading.Lock()
        self._conns: dict[str, list[H2Connection]] = {}
        self._http1: set[str] = set()
        self._dialing: dict[str, threading.Lock] = {}
        self._shut = False

    def request(self, method: str, url: str, fields: Any = None, headers: dict[str, str] | None = None,
                body: str | bytes | None = None, preload_content: bool = True, timeout: Any = None,
                **kw: Any) -> Any:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.hostname}:{parts.port or 443}"
        if parts.scheme != "https" or origin in self._http1 or (fields and body is None and method not in ("GET",
                                                                                                          "HEAD")):
            return self.fallback.request(method, url, fields=fields, headers=headers, body=body,
                                         preload_content=preload_content, timeout=timeout, **kw)
        path = parts.path or "/"
        query = parts.query
        if fields and method in ("GET", "HEAD"):
            query = "&".join(q for q in (query, urlencode(fields)) if q)
        if query:
            path += "?" + query
        connect, read = _timeouts(timeout, self._connect_timeout)
        data = body.encode() if isinstance(body, str) else body
        try:
            conn = self._connection(origin, parts.hostname or "", parts.port or 443, connect)
        except _NoH2:
            log.info("%s does not offer HTTP/2; using HTTP/1.1", origin)
            with self._lock:
                self._http1.add(origin)
            return self.fallback.request(method, url, fields=fields, headers=headers, body=body,
                                         preload_content=preload_content, timeout=timeout, **kw)
        plan = _HEDGE.get() if method == "GET" else None
        if plan is None:
            resp = conn.request(method, path, dict(headers or {}), data, read)
        else:
            resp = self._hedged(plan, conn, path, dict(headers or {}), connect, read)
        if preload_content:
            resp.data  # noqa: B018 - read it all now, like urllib3
        return resp

    def _hedged(self, plan: Hedge, conn: H2Connection, path: str, headers: dict[str, str], connect: float,
                read: float | None) -> H2Response:
        """A GET on ``conn``, and a copy elsewhere if ``plan`` says so once its delay passed unanswered."""
        sent = time.monotonic()
        end = None if read is None else sent + read

        def left() -> float | None:
            return None if end is None else max(0.0, end - time.monotonic())

        race = threading.Event()
        first = conn.open("GET", path, headers, None, race)
        if first.ready.wait(plan.delay if read is None else min(plan.delay, read)) or (
                read is not None and plan.delay >= read):
            return self._won(plan, first, read, left(), sent)
        base = plan.copy_to()
        if base is None:
            return self._won(plan, first, read, left(), sent)
        plan.copy = base
        parts = urlsplit(base)
        origin = f"{parts.scheme}://{parts.hostname}:{parts.port or 443}"
        copied, budget = time.monotonic(), left()
        try:
            if origin in self._http1:
                raise _NoH2(origin)
            if budget is not None and budget <= 0:
                raise TimeoutError("no time left for a copy")
            other = self._connection(origin, parts.hostname or "", parts.port or 443,
                                     connect if budget is None else min(connect, budget))
            second = other.open("GET", path, headers, None, race)
        except Exception as e:  # the copy could not be sent (no h2 there, a failed dial): the first goes on alone
            if isinstance(e, _NoH2):
                with self._lock:
                    self._http1.add(origin)
            log.debug("hedge of GET %s to %s not sent: %r", path, base, e)
            return self._won(plan, first, read, left(), sent)
        while True:
            race.clear()  # before looking: an answer arriving after the look wakes the wait below
            for stream, at in ((first, sent), (second, copied)):
                if stream.headers is not None:
                    loser = second if stream is first else first
                    loser.conn.cancel(loser)
                    plan.won_by_copy = stream is second
                    return self._won(plan, stream, read, 0, at)
            if first.ready.is_set() and second.ready.is_set():  # both failed: the first's error is the caller's
                return conn.response(first, read, 0)
            if not race.wait(left()) and end is not None and time.monotonic() >= end:
                other.cancel(second)
                return conn.response(first, read, 0)  # raises ReadTimeoutError and resets the first

    @staticmethod
    def _won(plan: Hedge, stream: _Stream, read: float | None, wait: float | None, since: float) -> H2Response:
        resp = stream.conn.response(stream, read, wait)
        plan.headers_after = time.monotonic() - since
        return resp

    def _connection(self, origin: str, host: str, port: int, connect_timeout: float) -> H2Connection:
        with self._lock:
            if self._shut:
                raise StreamRefused(f"the client is closed: no new connection to {origin}")
            for c in self._conns.get(origin, []):
                if c.usable:
                    return c
            dial_lock = self._dialing.setdefault(origin, threading.Lock())
        with dial_lock:  # one dial per origin at a time; the others then share it
            with self._lock:
                for c in self._conns.get(origin, []):
                    if c.usable:
                        return c
            conn = H2Connection(host, port, ssl_context=self._ssl, server_hostname=self._server_hostname or host,
                                connect_timeout=connect_timeout, read_idle_timeout=self._idle,
                                ping_timeout=self._ping, socket_options=self._socket_options,
                                on_close=self._closed)
            with self._lock:
                closed = self._shut
                if not closed:
                    self._conns.setdefault(origin, []).append(conn)
            if closed:  # close() ran while we dialled: this connection must not outlive it
                conn.close("the client was closed")
                raise StreamRefused(f"the client is closed: no new connection to {origin}")
            log.debug("HTTP/2 connection to %s open", origin)
            return conn

    def _closed(self, conn: H2Connection, reason: str, broken: bool) -> None:
        with self._lock:
            conns = self._conns.get(conn.origin, [])
            if conn in conns:
                conns.remove(conn)
        log.info("HTTP/2 connection to %s closed: %s", conn.origin, reason,
                 extra={"endpoint": conn.origin, "event": "connection_closed", "reason": reason})
        if self._on_close is not None:
            self._on_close(conn.origin, reason, broken)

    def connections(self, origin: str) -> list[H2Connection]:
        with self._lock:
            return list(self._conns.get(origin, []))

    def close_origin(self, origin: str, reason: str) -> None:
        """Close every connection to ``origin`` (streams on them fail; the next request redials)."""
        for c in self.connections(origin):
            c.close(reason)

    def clear(self) -> None:
        """Close every connection (like urllib3's ``clear()``: later requests dial again)."""
        with self._lock:
            conns = [c for cs in self._conns.values() for c in cs]
        for c in conns:
            c.close("pool cleared")
        self.fallback.clear()

    def close(self) -> None:
        """``clear()`` for good: no connection is dialled afterwards (the ``ApiClient`` is closed); waits
        briefly for the connections' I/O threads to end."""
        with self._lock:
            self._shut = True
            conns = [c for cs in self._conns.values() for c in cs]
        self.clear()
        for c in conns:
            c.join(timeout=1.0)


def _timeouts(timeout: Any, default_connect: float) -> tuple[float, float | None]:
    if isinstance(timeout, urllib3.Timeout):
        # the raw fields: urllib3's read_timeout property needs a started connect timer when total is set
        total = timeout.total if isinstance(timeout.total, (int, float)) else None
        connect, read = getattr(timeout, "_connect", None), getattr(timeout, "_read", None)
        c = connect if isinstance(connect, (int, float)) else (total or default_connect)
        r = read if isinstance(read, (int, float)) else total
        if total is not None:
            c, r = min(c, total), (total if r is None else min(r, total))
        return float(c), (float(r) if r is not None else None)
    if isinstance(timeout, (int, float)):
        return float(timeout), float(timeout)
    return default_connect, None


def ssl_context_for(configuration: Any) -> tuple[ssl.SSLContext, str | None]:
    """An ``h2``-offering TLS context and server name from a kubernetes ``Configuration``."""
    ctx = ssl.create_default_context(cafile=configuration.ssl_ca_cert or None)
    if configuration.cert_file:
        ctx.load_cert_chain(configuration.cert_file, configuration.key_file or None)
    if not configuration.verify_ssl:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif configuration.assert_hostname is False:
        ctx.check_hostname = False
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    return ctx, getattr(configuration, "tls_server_name", None) or None
