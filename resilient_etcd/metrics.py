"""What the resilience machinery did, as numbers: a plain snapshot, and Prometheus when installed.

>>> from resilient_etcd.metrics import Metrics
>>> m = Metrics()
>>> m.inc("failovers", "10.0.0.1:2379")
>>> m.snapshot()["events"]["failovers"]["10.0.0.1:2379"]
1

Events counted per endpoint: ``ejections``, ``redials``, ``failovers`` (traffic moved *to* the
endpoint), ``retries`` (attempts after the first), ``watch_resumes``, ``lease_losses``. Also kept:
each endpoint's current health state and its last probe round trip.

``enable_prometheus()`` mirrors everything into ``prometheus_client`` metrics
(``resilient_etcd_events_total{event,endpoint}``, ``resilient_etcd_endpoint_state{endpoint,state}``,
``resilient_etcd_probe_seconds{endpoint}``) on the default or a given registry.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import Any

STATES = ("healthy", "suspect", "ejected", "probing")


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self._states: dict[str, str] = {}
        self._probe: dict[str, float] = {}
        self._prom: dict[str, Any] | None = None

    def inc(self, event: str, endpoint: str = "", n: int = 1) -> None:
        with self._lock:
            self._events[event][endpoint] += n
            prom = self._prom
        if prom is not None:
            prom["events"].labels(event=event, endpoint=endpoint).inc(n)

    def set_state(self, endpoint: str, state: str) -> None:
        with self._lock:
            self._states[endpoint] = state
            prom = self._prom
        if prom is not None:
            for s in STATES:
                prom["state"].labels(endpoint=endpoint, state=s).set(1 if s == state else 0)

    def observe_probe(self, endpoint: str, seconds: float) -> None:
        with self._lock:
            self._probe[endpoint] = seconds
            prom = self._prom
        if prom is not None:
            prom["probe"].labels(endpoint=endpoint).observe(seconds)

    def snapshot(self) -> dict[str, Any]:
        """``{"events": {event: {endpoint: n}}, "states": {endpoint: state}, "probe_seconds": {...}}``."""
        with self._lock:
            return {
                "events": {e: dict(per) for e, per in self._events.items()},
                "states": dict(self._states),
                "probe_seconds": dict(self._probe),
            }

    def enable_prometheus(self, registry: Any = None) -> None:
        """Export to Prometheus (needs ``pip install resilient-etcd[metrics]``)."""
        try:
            from prometheus_client import REGISTRY, Counter, Gauge, Histogram
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("enable_prometheus() needs prometheus_client: pip install 'resilient-etcd[metrics]'") \
                from exc
        reg = registry if registry is not None else REGISTRY
        prom: dict[str, Any] = {
            "events": Counter("resilient_etcd_events", "Resilience events by kind and endpoint",
                              ["event", "endpoint"], registry=reg),
            "state": Gauge("resilient_etcd_endpoint_state", "1 for the endpoint's current health state",
                           ["endpoint", "state"], registry=reg),
            "probe": Histogram("resilient_etcd_probe_seconds", "Health probe round trips", ["endpoint"],
                               buckets=(0.001, 0.005, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5), registry=reg),
        }
        with self._lock:
            for event, per in self._events.items():
                for endpoint, n in per.items():
                    prom["events"].labels(event=event, endpoint=endpoint).inc(n)
            states = dict(self._states)
            self._prom = prom
        for endpoint, state in states.items():
            self.set_state(endpoint, state)


    def disable_prometheus(self) -> None:
        """Stop mirroring into Prometheus (the counted values stay in :meth:`snapshot`)."""
        with self._lock:
            self._prom = None


METRICS = Metrics()
"""The process-wide instance every client reports to (as prometheus_client's default registry)."""


def snapshot() -> dict[str, Any]:
    return METRICS.snapshot()


def enable_prometheus(registry: Any = None) -> None:
    METRICS.enable_prometheus(registry)
