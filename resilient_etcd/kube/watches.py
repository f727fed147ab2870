"""A Kubernetes watch that resumes: ``for event in watch(v1.list_namespaced_config_map, "ns"): ...``.

* watches with ``allowWatchBookmarks`` and resumes from the last ``resourceVersion`` it delivered
  (bookmarks advance it without being yielded), so a broken stream loses and repeats nothing;
* ``410 Gone`` (the version was compacted away) → a fresh LIST, signalled to the caller as one
  ``{"type": "RELIST", "object": <list>}`` event, then watching from the list's version;
* a dead, frozen or stale *connection* is the ``ApiClient``'s job: over HTTP/2 its PING check
  and ``/readyz`` probes fail the stream within about 2 s and the watch resumes on the next
  usable apiserver;
* errors that waiting cannot heal — 400, 401, 403, 404, 405, 422, at the start or as an ``ERROR``
  event — raise :class:`ApiException` to the caller; transient ones (429, 5xx, connection errors)
  are retried with jittered exponential backoff capped at 5 s (the server's ``Retry-After`` is
  honoured by the ``ApiClient`` underneath);
* a stream that stays *silent* for ``idle_timeout`` seconds is re-established — this catches an
  apiserver that is alive but whose watch has stopped (its own etcd connection hung). Over HTTP/2
  the default is 75 s: with bookmarks on, a healthy watch hears from the apiserver about once a
  minute even when nothing changes. Over HTTP/1.1 (no per-connection liveness) the default is
  1.5 s, so a quiet watch is re-opened that often: one cheap GET served from the watch cache.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import urllib3
from kubernetes.client.exceptions import ApiException
from tenacity import wait_random_exponential

from .. import _lifecycle
from ..balancer.retrying import delay_after
from .resources import abort

log = logging.getLogger("resilient_etcd.kube.watch")

_STREAM_ERRORS = (urllib3.exceptions.HTTPError, OSError, ApiException)
PERMANENT = frozenset({400, 401, 403, 404, 405, 422})
"""HTTP statuses a watch raises at once: no amount of waiting changes the answer."""


def is_permanent(error: BaseException) -> bool:
    return isinstance(error, ApiException) and error.status in PERMANENT


HTTP1_IDLE_TIMEOUT = 1.5
HTTP2_IDLE_TIMEOUT = 75.0


def watch(list_func: Callable[..., Any], *args: Any, resource_version: str | None = None,
          idle_timeout: float | None = None, stop: threading.Event | None = None,
          **kwargs: Any) -> Iterator[dict[str, Any]]:
    """Yield ``{"type", "object"}`` dicts (``object`` as the API's JSON) until ``stop`` is set.

    ``list_func`` is a generated list method (``CoreV1Api.list_namespaced_config_map`` …) of a
    client built on :class:`resilient_etcd.kube.ApiClient`; ``args``/``kwargs`` are its arguments.
    """
    if idle_timeout is None:
        policy = getattr(getattr(getattr(list_func, "__self__", None), "api_client", None), "policy", None)
        idle_timeout = HTTP2_IDLE_TIMEOUT if getattr(policy, "http2", False) else HTTP1_IDLE_TIMEOUT
    if isinstance(idle_timeout, bool) or not isinstance(idle_timeout, (int, float)) or not idle_timeout > 0:
        raise ValueError(f"idle_timeout must be a positive number of seconds, got {idle_timeout!r}")
    stop = stop or threading.Event()
    api = getattr(getattr(list_func, "__self__", None), "api_client", None)
    with _lifecycle.busy():
        yield from _watch(list_func, args, kwargs, rv=resource_version, idle_timeout=idle_timeout, stop=stop,
                          closed=lambda: bool(getattr(api, "closed", False)))


def _watch(list_func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], *, rv: str | None,
           idle_timeout: float, stop: threading.Event, closed: Callable[[], bool]) -> Iterator[dict[str, Any]]:
    """The loop of :func:`watch`; ends when ``stop`` is set or the client is closed."""
    backoff = wait_random_exponential(multiplier=0.1, max=5.0)
    failures = 0

    def pause(error: BaseException) -> None:
        nonlocal failures
        if closed():
            return
        if is_permanent(error):
            raise error
        failures += 1
        delay = delay_after(backoff, failures)
        log.log(logging.WARNING if failures in (3, 10) else logging.DEBUG,
                "watch failed %d time(s) in a row (%s); retrying in %.2f s", failures, error, delay,
                extra={"event": "kube_watch_retry", "failures": failures})
        stop.wait(delay)

    while rv is None and not stop.is_set() and not closed():
        try:
            rv, listing = _relist(list_func, args, kwargs)
        except _STREAM_ERRORS as e:
            pause(e)
    while not stop.is_set() and not closed():
        try:
            resp = list_func(*args, watch=True, allow_watch_bookmarks=True, resource_version=rv,
                             _preload_content=False, _request_timeout=(2.0, idle_timeout), **kwargs)
        except _STREAM_ERRORS as e:
            pause(e)
            continue
        error: ApiException | None = None
        token = _STOPPER.add(stop, resp)
        quiet = _QuietCheck(list_func, resp)  # its resource checked on its apiserver while it is quiet
        try:
            for line in _lines(resp):
                quiet.heard()
                event = json.loads(line)
                kind = event.get("type")
                obj = event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        rv, listing = _relist(list_func, args, kwargs)
                        yield {"type": "RELIST", "object": listing}
                    else:
                        error = ApiException(status=obj.get("code"), reason=obj.get("message"))
                    break
                failures = 0
                rv = obj.get("metadata", {}).get("resourceVersion", rv)
                if kind == "BOOKMARK":
                    continue
                yield event
                if stop.is_set():
                    break
        except _STREAM_ERRORS as e:
            log.debug("watch stream ended (%s); resuming from %s", type(e).__name__, rv)
        finally:
            _STOPPER.remove(token)
            quiet.close()
            resp.release_conn()
        if error is not None:
            pause(error)  # raises the permanent ones


class _QuietCheck:
    """A watch stream's place in its ``ApiClient``'s per-resource checks (none on other clients)."""

    def __init__(self, list_func: Callable[..., Any], resp: Any) -> None:
        api: Any = getattr(getattr(list_func, "__self__", None), "api_client", None)
        target = api.watch_target() if hasattr(api, "watch_target") else None
        self._at: tuple[Any, str, str, int] | None = None
        if target is not None and target[1] is not None:
            endpoint, (resource, list_path) = target
            self._at = (api.resources, endpoint, resource,
                        api.resources.watch_opened(endpoint, resource, list_path, resp))

    def heard(self) -> None:
        if self._at is not None:
            resources, endpoint, resource, _ = self._at
            resources.watch_heard(endpoint, resource)

    def close(self) -> None:
        if self._at is not None:
            resources, endpoint, resource, token = self._at
            resources.watch_closed(endpoint, resource, token)


class _Stopper:
    """One thread for the whole process that ends the open response of every watch whose ``stop`` event
    is set, within :data:`STOP_TICK` — so ``stop.set()`` ends a quiet watch at once instead of at its
    next event. It runs only while some watch is open, and is stopped at process exit."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[int, tuple[threading.Event, Any]] = {}
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()

    def add(self, stop: threading.Event, resp: Any) -> int:
        with self._lock:
            token = next(self._ids)
            self._open[token] = (stop, resp)
            if self._thread is None and not self._closed.is_set():
                self._thread = threading.Thread(target=self._run, name="resilient-etcd-kube-stopper", daemon=True)
                self._thread.start()
        return token

    def remove(self, token: int) -> None:
        with self._lock:
            self._open.pop(token, None)

    def _run(self) -> None:
        while not self._closed.wait(STOP_TICK):
            with self._lock:
                if not self._open:
                    self._thread = None
                    return
                due = [(t, resp) for t, (stop, resp) in self._open.items() if stop.is_set()]
                for t, _ in due:
                    del self._open[t]
            for _, resp in due:
                abort(resp)

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(1.0)


STOP_TICK = 0.1
"""Seconds between the stopper's looks at the watches' ``stop`` events."""
_STOPPER = _Stopper()
_lifecycle.register(_STOPPER)


def _relist(list_func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, Any]:
    resp = list_func(*args, _preload_content=False, **kwargs)
    try:
        listing = json.loads(resp.data)
    finally:
        resp.release_conn()
    return str(listing["metadata"]["resourceVersion"]), listing


def _lines(resp: Any) -> Iterator[bytes]:
    buffer = b""
    for chunk in resp.stream(amt=None, decode_content=True):
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if line.strip():
                yield line
