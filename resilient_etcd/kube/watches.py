"""A Kubernetes watch that resumes: ``for event in watch(v1.list_namespaced_config_map, "ns"): ...``.

* watches with ``allowWatchBookmarks`` and resumes from the last ``resourceVersion`` it delivered
  (bookmarks advance it without being yielded), so a broken stream loses and repeats nothing;
* ``410 Gone`` (the version was compacted away) → a fresh LIST, signalled to the caller as one
  ``{"type": "RELIST", "object": <list>}`` event, then watching from the list's version;
* a stream that goes *silent* for ``idle_timeout`` seconds (default 1.5) is re-established, and a
  re-open whose headers do not come within ``idle_timeout`` moves to the next apiserver through the
  ``ApiClient``'s failover — so a hung path is left within about twice ``idle_timeout``. A healthy quiet
  watch is therefore re-opened every ``idle_timeout`` seconds: one cheap GET served from the
  apiserver's watch cache, resuming from its version. HTTP/2 PINGs would avoid the re-opens; see the
  project notes.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import urllib3
from kubernetes.client.exceptions import ApiException

log = logging.getLogger("resilient_etcd.kube.watch")

_STREAM_ERRORS = (urllib3.exceptions.HTTPError, OSError, ApiException)


def watch(list_func: Callable[..., Any], *args: Any, resource_version: str | None = None,
          idle_timeout: float = 1.5, stop: threading.Event | None = None, **kwargs: Any) -> Iterator[dict[str, Any]]:
    """Yield ``{"type", "object"}`` dicts (``object`` as the API's JSON) until ``stop`` is set.

    ``list_func`` is a generated list method (``CoreV1Api.list_namespaced_config_map`` …) of a
    client built on :class:`resilient_etcd.kube.ApiClient`; ``args``/``kwargs`` are its arguments.
    """
    if idle_timeout <= 0:
        raise ValueError(f"idle_timeout must be positive, got {idle_timeout!r}")
    stop = stop or threading.Event()
    rv = resource_version
    if rv is None:
        rv, listing = _relist(list_func, args, kwargs)
    while not stop.is_set():
        try:
            resp = list_func(*args, watch=True, allow_watch_bookmarks=True, resource_version=rv,
                             _preload_content=False, _request_timeout=(2.0, idle_timeout), **kwargs)
        except _STREAM_ERRORS as e:
            log.info("watch could not start (%s); retrying", e)
            stop.wait(0.2)
            continue
        try:
            for line in _lines(resp):
                event = json.loads(line)
                kind = event.get("type")
                obj = event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        rv, listing = _relist(list_func, args, kwargs)
                        yield {"type": "RELIST", "object": listing}
                        break
                    raise ApiException(status=obj.get("code"), reason=obj.get("message"))
                rv = obj.get("metadata", {}).get("resourceVersion", rv)
                if kind == "BOOKMARK":
                    continue
                yield event
                if stop.is_set():
                    break
        except _STREAM_ERRORS as e:
            log.debug("watch stream ended (%s); resuming from %s", type(e).__name__, rv)
        finally:
            resp.release_conn()


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
