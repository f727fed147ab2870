"""Health per (apiserver, resource): the incident where one resource's etcd connection of one apiserver
goes silent while that apiserver's ``/readyz`` and every other resource stay fine.

kube-apiserver keeps one etcd client per resource. When only the ConfigMaps one hangs, ``/readyz``
answers, namespaces list in milliseconds, and every ConfigMap request through that apiserver — and
every ConfigMap watch it serves — waits for that one connection. Judging health per apiserver cannot
see it; this module judges it per resource:

* a request for a resource that gets no answer within the read timeout while its apiserver is not known
  to be down puts *that resource on that apiserver* out (:meth:`Resources.put_out`): the request is
  retried on another apiserver, later requests for the resource go elsewhere, and other resources keep
  using the apiserver;
* a watch on a resource is *quiet-checked*: while it has been silent for ``check_interval``, a cheap
  ``limit=1`` LIST of the resource is sent to its apiserver (one per resource per interval, however many
  watches share it); no answer within ``check_timeout`` puts the resource out there and ends those
  watches' streams, which resume on another apiserver from the last version they delivered;
* a resource out on an apiserver is re-admitted when the same ``limit=1`` LIST answers there in time.

Pure bookkeeping: the checks themselves are sent by the ``ApiClient``'s apiserver set on the process's
prober workers (see ``kube/client.py``).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..metrics import METRICS

log = logging.getLogger("resilient_etcd.kube")


def resource_of(path: str) -> tuple[str, str] | None:
    """``(resource, list path)`` of an API path: ``/api/v1/namespaces/ns/configmaps/x`` →
    ``("configmaps", "/api/v1/namespaces/ns/configmaps")``; ``/apis/apps/v1/deployments`` →
    ``("deployments.apps", "/apis/apps/v1/deployments")``. None for a path that names no resource
    (``/readyz``, ``/version``, discovery)."""
    parts = path.split("?", 1)[0].strip("/").split("/")
    if parts[:2] == ["api", "v1"]:
        group, rest, base = "", parts[2:], "/api/v1"
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, rest, base = parts[1], parts[3:], "/" + "/".join(parts[:3])
    else:
        return None
    if len(rest) >= 3 and rest[0] == "namespaces":  # namespaced: namespaces/<ns>/<resource>[/...]
        base, rest = f"{base}/namespaces/{rest[1]}", rest[2:]
    if not rest or not rest[0]:
        return None
    resource = rest[0] if not group else f"{rest[0]}.{group}"
    return resource, f"{base}/{rest[0]}"


def abort(stream: Any) -> None:
    """End a response being read in another thread: our HTTP/2 response, or urllib3's (>= 2.3)."""
    end = getattr(stream, "abort", None) or getattr(stream, "shutdown", None) or stream.release_conn
    with contextlib.suppress(Exception):
        end()


@dataclass
class _State:
    """One resource on one apiserver."""

    list_path: str
    out: str | None = None  # why it is out, when it is
    checked_at: float = 0.0  # when the last check was sent
    checking: bool = False
    watches: dict[int, list[Any]] = field(default_factory=dict)  # token -> [stream, last heard]


class Resources:
    """The per-(apiserver, resource) records of one ``ApiClient`` (see the module docstring)."""

    def __init__(self, check_interval: float, check_timeout: float,
                 wake: Callable[[], None] = lambda: None) -> None:
        self.check_interval = check_interval
        self.check_timeout = check_timeout
        self._wake = wake  # the prober's schedule changed (a watch to check, a resource out)
        self._lock = threading.Lock()
        self._states: dict[tuple[str, str], _State] = {}
        self._tokens = itertools.count(1)

    def _state(self, endpoint: str, resource: str, list_path: str) -> _State:
        st = self._states.get((endpoint, resource))
        if st is None:
            st = self._states[(endpoint, resource)] = _State(list_path)
        return st

    def is_out(self, endpoint: str, resource: str) -> bool:
        st = self._states.get((endpoint, resource))
        return st is not None and st.out is not None

    def put_out(self, endpoint: str, resource: str, list_path: str, why: str) -> list[Any]:
        """``resource`` gets no answers through ``endpoint``: requests for it go elsewhere. Returns the
        watch streams on it there, for the caller to end (they resume elsewhere)."""
        with self._lock:
            st = self._state(endpoint, resource, list_path)
            if st.out is None:
                st.out = why
                METRICS.inc("resource_ejections", f"{endpoint} {resource}")
                log.warning("apiserver %s: %s out (%s); its requests go to the other apiservers", endpoint,
                            resource, why, extra={"endpoint": endpoint, "resource": resource,
                                                  "event": "resource_out", "reason": why})
            streams = [w[0] for w in st.watches.values()]
        self._wake()
        if streams:
            METRICS.inc("stale_watch_moves", f"{endpoint} {resource}", len(streams))
        return streams

    def admit(self, endpoint: str, resource: str) -> None:
        with self._lock:
            st = self._states.get((endpoint, resource))
            if st is None or st.out is None:
                return
            st.out = None
        log.info("apiserver %s: %s answers again; back in use", endpoint, resource,
                 extra={"endpoint": endpoint, "resource": resource, "event": "resource_in"})

    # ---- watches ----
    def watch_opened(self, endpoint: str, resource: str, list_path: str, stream: Any) -> int:
        with self._lock:
            token = next(self._tokens)
            self._state(endpoint, resource, list_path).watches[token] = [stream, time.monotonic()]
        self._wake()
        return token

    def watch_heard(self, endpoint: str, resource: str, token: int) -> None:
        st = self._states.get((endpoint, resource))
        w = None if st is None else st.watches.get(token)
        if w is not None:
            w[1] = time.monotonic()

    def watch_closed(self, endpoint: str, resource: str, token: int) -> None:
        with self._lock:
            st = self._states.get((endpoint, resource))
            if st is not None:
                st.watches.pop(token, None)

    # ---- checks ----
    def due(self, now: float) -> list[tuple[str, str, str]]:
        """``(endpoint, resource, list path)`` to check now: resources out (for re-admission), and resources
        whose watches have all been quiet for ``check_interval`` — each at most once per interval."""
        todo = []
        with self._lock:
            for (endpoint, resource), st in self._states.items():
                if st.checking or now - st.checked_at < self.check_interval:
                    continue
                quiet = bool(st.watches) and all(now - w[1] >= self.check_interval for w in st.watches.values())
                if st.out is not None or quiet:
                    st.checking, st.checked_at = True, now
                    todo.append((endpoint, resource, st.list_path))
        return todo

    def checked(self, endpoint: str, resource: str, error: str | None) -> list[Any]:
        """A check ended: answered in time (``error`` None) re-admits; else the resource is out there (the
        watch streams to end are returned)."""
        with self._lock:
            st = self._states.get((endpoint, resource))
            if st is None:
                return []
            st.checking = False
            list_path = st.list_path
        if error is None:
            self.admit(endpoint, resource)
            return []
        return self.put_out(endpoint, resource, list_path, error)

    def next_check(self, now: float) -> float:
        """When the next check may be due (for the prober's schedule): soon while anything is watched or out."""
        with self._lock:
            busy = any(st.watches or st.out is not None for st in self._states.values())
        return now + self.check_interval / 2 if busy else float("inf")

    def status(self) -> list[dict[str, Any]]:
        """Per (apiserver, resource): out or not (and why), watches open."""
        with self._lock:
            return [{"endpoint": ep, "resource": r, "out": st.out, "watches": len(st.watches)}
                    for (ep, r), st in sorted(self._states.items())]
