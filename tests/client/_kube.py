"""What the Kubernetes tests share: a watch running in a thread that records what it delivers."""

from __future__ import annotations

import threading
import time
from typing import Any

from kubernetes import client as k8s

from resilient_etcd.kube import watch


class Collector:
    """``resilient_etcd.kube.watch`` on ConfigMaps in ``default``, in a thread; ``events`` are (arrival time, event)."""

    def __init__(self, v1: k8s.CoreV1Api, **kw: Any) -> None:
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(v1, kw), daemon=True)
        self.thread.start()

    def _run(self, v1: k8s.CoreV1Api, kw: dict[str, Any]) -> None:
        for ev in watch(v1.list_namespaced_config_map, "default", stop=self.stop, **kw):
            self.events.append((time.monotonic(), ev))

    def arrived(self, name: str) -> float | None:
        return next((t for t, e in self.events if e["object"]["metadata"]["name"] == name), None)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
