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
* a watch on a resource is *quiet-checked*: while its watches there have all been silent for
  ``check_interval``, a cheap ``limit=1`` LIST of the resource is sent to its apiserver (one per
  resource per interval, however many watches share it); no answer within the check's dead time puts
  the resource out there and ends those watches' streams, which resume on another apiserver from the
  last version they delivered;
* a resource out on an apiserver is re-admitted when the same ``limit=1`` LIST answers there.

Each (apiserver, resource) is a :class:`~resilient_etcd.balancer.driver.BasePeer` judged by the
balancer's own health state machine (:class:`~resilient_etcd.balancer.health.EndpointHealth`), with
the check as its probe: "out" is *ejected* or *probing*, re-admission backs off as an endpoint's does,
a check that waited while the watches delivered events is no verdict, and the dead time grows with the
checks' own answer times (slow is not dead). Pure bookkeeping: the checks themselves are sent by the
``ApiClient``'s apiserver set on the process's prober workers (see ``kube/client.py``).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..balancer.driver import BasePeer
from ..balancer.health import State, Transition
from ..metrics import METRICS

log = logging.getLogger("resilient_etcd.kube")

_READMIT_BACKOFF_MAX = 5.0  # a resource out everywhere is checked at least this often on each apiserver


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


@dataclass(frozen=True)
class CheckTiming:
    """The state machine's numbers for a resource path (``KubePolicy.resource_check_*``): its probe is
    the ``limit=1`` LIST, sent when its watches have been quiet for ``probe_interval``; a path in use
    with no watch is never probed (``idle_probe_interval``)."""

    probe_interval: float
    dead_after: float
    readmit_backoff: float
    readmit_backoff_max: float
    idle_probe_interval: float = math.inf
    latency_factor: float = 3.0
    latency_window: int = 10


class ResourcePath(BasePeer):
    """One resource on one apiserver (named ``"<apiserver> <resource>"``), and the watches on it there."""

    def __init__(self, endpoint: str, resource: str, list_path: str, policy: CheckTiming) -> None:
        super().__init__(f"{endpoint} {resource}", policy)
        self.endpoint, self.resource, self.list_path = endpoint, resource, list_path
        self.watches: dict[int, Any] = {}  # token -> the stream, to end when the resource goes out here

    @property
    def out(self) -> str | None:
        """Why the resource is out on this apiserver, when it is."""
        return None if self.health.usable else (self.health.last_error or "out")


class Resources:
    """The per-(apiserver, resource) records of one ``ApiClient`` (see the module docstring)."""

    def __init__(self, check_interval: float, check_timeout: float, wake: Callable[[], None] = lambda: None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = CheckTiming(probe_interval=check_interval, dead_after=check_timeout,
                                  readmit_backoff=check_interval,
                                  readmit_backoff_max=max(check_interval, _READMIT_BACKOFF_MAX))
        self._wake = wake  # the prober's schedule changed (a watch to check, a resource out)
        self._clock = clock
        self._lock = threading.Lock()
        self._paths: dict[tuple[str, str], ResourcePath] = {}
        self._tokens = itertools.count(1)

    def _path(self, endpoint: str, resource: str, list_path: str) -> ResourcePath:
        p = self._paths.get((endpoint, resource))
        if p is None:
            p = self._paths[(endpoint, resource)] = ResourcePath(endpoint, resource, list_path, self.policy)
        return p

    def is_out(self, endpoint: str, resource: str) -> bool:
        p = self._paths.get((endpoint, resource))
        return p is not None and not p.health.usable

    def put_out(self, endpoint: str, resource: str, list_path: str, why: str) -> list[Any]:
        """``resource`` gets no answers through ``endpoint``: requests for it go elsewhere. Returns the
        watch streams on it there, for the caller to end (they resume elsewhere)."""
        with self._lock:
            p = self._path(endpoint, resource, list_path)
            streams = self._apply(p, p.health.fail(self._clock(), why, hard=True))
        self._wake()
        return streams

    # ---- watches ----
    def watch_opened(self, endpoint: str, resource: str, list_path: str, stream: Any) -> int:
        with self._lock:
            token = next(self._tokens)
            p = self._path(endpoint, resource, list_path)
            p.watches[token] = stream
            p.health.last_heard = self._clock()  # the stream's headers: its quiet time counts from its opening
        self._wake()
        return token

    def watch_heard(self, endpoint: str, resource: str) -> None:
        """A watch on ``resource`` through ``endpoint`` delivered something: that path is alive."""
        p = self._paths.get((endpoint, resource))
        if p is not None:
            p.health.last_heard = self._clock()

    def watch_closed(self, endpoint: str, resource: str, token: int) -> None:
        with self._lock:
            p = self._paths.get((endpoint, resource))
            if p is not None:
                p.watches.pop(token, None)

    # ---- checks (the state machine's probes) ----
    def due(self, now: float) -> list[ResourcePath]:
        """The paths to check now, marked sent: those out (at their re-admission time) and those whose
        watches have all been quiet for ``check_interval``. A resource in use with no watch is not checked
        (its requests speak for it)."""
        todo = []
        with self._lock:
            for p in self._paths.values():
                h = p.health
                if (h.usable and not p.watches) or not h.probe_due(now):
                    continue
                self._apply(p, h.probe_sent(now))
                todo.append(p)
        return todo

    def checked(self, p: ResourcePath, error: str | None, *, timed_out: bool = False) -> list[Any]:
        """A check of ``p`` ended: answered (``error`` None) re-admits; else the resource is out there
        (the watch streams to end are returned)."""
        now = self._clock()
        with self._lock:
            h = p.health
            t = h.probe_answered(now) if error is None else h.probe_failed(now, error, timed_out=timed_out)
            return self._apply(p, t)

    def next_check(self, now: float) -> float:
        """When the next check may be due (for the prober's schedule)."""
        with self._lock:
            return min((p.health.next_probe_at() for p in self._paths.values()
                        if p.watches or not p.health.usable), default=float("inf"))

    def _apply(self, p: ResourcePath, t: Transition | None) -> list[Any]:
        """Log and count a transition (lock held); an ejection returns the watch streams to end."""
        if t is None:
            return []
        fields = {"endpoint": p.endpoint, "resource": p.resource, "from_state": t.old.value,
                  "to_state": t.new.value, "reason": t.reason}
        if t.ejected:
            METRICS.inc("resource_ejections", p.name)
            log.warning("apiserver %s: %s out (%s); its requests go to the other apiservers", p.endpoint,
                        p.resource, t.reason, extra={**fields, "event": "resource_out"})
            streams = list(p.watches.values())
            if streams:
                METRICS.inc("stale_watch_moves", p.name, len(streams))
            return streams
        if t.new is State.HEALTHY and t.old is State.PROBING:
            log.info("apiserver %s: %s answers again; back in use", p.endpoint, p.resource,
                     extra={**fields, "event": "resource_in"})
        else:  # suspect and back, a re-admission check sent
            log.debug("apiserver %s: %s %s -> %s: %s", p.endpoint, p.resource, t.old.value, t.new.value, t.reason,
                      extra={**fields, "event": "resource_state"})
        return []

    def status(self) -> list[dict[str, Any]]:
        """Per (apiserver, resource): its state, out or not (and why), watches open."""
        with self._lock:
            return [{"endpoint": p.endpoint, "resource": p.resource, "state": p.health.state.value, "out": p.out,
                     "watches": len(p.watches)} for _, p in sorted(self._paths.items())]
