"""An informer: list + resilient watch + a local store + handlers, for controllers.

Usage (docs/kubernetes.md runs an example against a real kube-apiserver)::

    inf = Informer(v1.list_namespaced_config_map, "default", on_add=print)
    inf.start().wait_synced(10)
    inf.get("default/my-config")

Objects are the API's JSON (plain dicts), keyed ``namespace/name`` (``name`` for cluster-scoped
kinds). Handlers run on the informer's thread, in event order; a handler that raises is logged
and the informer goes on. When the watch has to relist (its version was compacted away: ``410
Gone``), the new list is compared with the store and the differences are delivered as adds,
updates and deletes, so handlers see every change that happened in between exactly once — and
``on_relist`` is called for callers that want to know.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from .. import _lifecycle
from .watches import _relist, watch

log = logging.getLogger("resilient_etcd.kube.informer")

Obj = dict[str, Any]
Handler = Callable[[Obj], None]


def object_key(obj: Obj) -> str:
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{ns}/{meta['name']}" if ns else str(meta["name"])


class Informer:
    """Keeps a local copy of one resource up to date and calls handlers on every change."""

    def __init__(self, list_func: Callable[..., Any], *args: Any, on_add: Handler | None = None,
                 on_update: Callable[[Obj, Obj], None] | None = None, on_delete: Handler | None = None,
                 on_relist: Callable[[], None] | None = None, **kwargs: Any) -> None:
        self._list_func, self._args, self._kwargs = list_func, args, kwargs
        self.on_add, self.on_update, self.on_delete, self.on_relist = on_add, on_update, on_delete, on_relist
        self._store: dict[str, Obj] = {}
        self._lock = threading.Lock()
        self._synced = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.relists = 0

    # ---- lifecycle ----
    def start(self) -> Informer:
        """Start listing and watching in a thread of its own; returns ``self``."""
        if self._thread is not None:
            raise RuntimeError("informer already started")
        self._thread = threading.Thread(target=self._run, name="informer", daemon=True)
        self._thread.start()
        _lifecycle.register(self)
        return self

    def wait_synced(self, timeout: float | None = None) -> bool:
        """True once the initial list is in the store and its handlers have run."""
        return self._synced.wait(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop and wait up to ``timeout`` seconds for the thread (a quiet watch ends within 0.1 s)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def close(self) -> None:
        """Stop, waiting briefly (at process exit, the informer is closed this way)."""
        self.stop(timeout=1.0)

    def __enter__(self) -> Informer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- the store ----
    def get(self, key: str) -> Obj | None:
        """The stored object under ``key`` (``namespace/name``), or None."""
        with self._lock:
            return self._store.get(key)

    def keys(self) -> list[str]:
        """The keys of every stored object, sorted."""
        with self._lock:
            return sorted(self._store)

    def items(self) -> list[Obj]:
        """Every stored object, sorted by key."""
        with self._lock:
            return [self._store[k] for k in sorted(self._store)]

    # ---- the loop ----
    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    rv, listing = _relist(self._list_func, self._args, self._kwargs)
                except Exception as e:  # the ApiClient already retried within its deadline; try again
                    log.warning("informer list failed (%s); retrying", e)
                    self._stop.wait(1.0)
                    continue
                self._replace(listing.get("items") or [])
                self._synced.set()
                for event in watch(self._list_func, *self._args, resource_version=rv, stop=self._stop,
                                   **self._kwargs):
                    self._apply(event)
                return
        except BaseException as e:  # surfaced on .error; the thread must not die silently
            self.error = e
            log.exception("informer stopped")
            raise

    def _apply(self, event: dict[str, Any]) -> None:
        kind, obj = event["type"], event["object"]
        if kind == "RELIST":
            self.relists += 1
            self._replace(obj.get("items") or [])
            self._call(self.on_relist)
            return
        key = object_key(obj)
        with self._lock:
            old = self._store.get(key)
            if kind == "DELETED":
                self._store.pop(key, None)
            else:
                self._store[key] = obj
        if kind == "DELETED":
            self._call(self.on_delete, obj)
        elif old is None:
            self._call(self.on_add, obj)
        else:
            self._call(self.on_update, old, obj)

    def _replace(self, items: list[Obj]) -> None:
        """Make the store equal ``items`` and deliver the differences as adds/updates/deletes."""
        fresh = {object_key(o): o for o in items}
        with self._lock:
            old, self._store = self._store, dict(fresh)
        for key, obj in old.items():
            if key not in fresh:
                self._call(self.on_delete, obj)
        for key, obj in fresh.items():
            before = old.get(key)
            if before is None:
                self._call(self.on_add, obj)
            elif _rv(before) != _rv(obj):
                self._call(self.on_update, before, obj)

    def _call(self, handler: Callable[..., None] | None, *args: Any) -> None:
        if handler is None:
            return
        try:
            handler(*args)
        except Exception:
            log.exception("informer handler %s failed", getattr(handler, "__name__", handler))


def _rv(obj: Obj) -> str | None:
    rv = (obj.get("metadata") or {}).get("resourceVersion")
    return str(rv) if rv is not None else None
