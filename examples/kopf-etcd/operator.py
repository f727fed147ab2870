"""resilient_etcd inside kopf's async handlers: ConfigMaps labelled ``mirror=etcd`` are written to etcd.

    ETCD_ENDPOINTS=10.0.0.1:2379,10.0.0.2:2379 kopf run --standalone -n default examples/kopf-etcd/operator.py

kopf owns the Kubernetes side (its own watch, retries and finalizers); the handlers are coroutines on
kopf's event loop and talk to etcd through :class:`resilient_etcd.aio.AsyncEtcd3Client`, made on that
loop at startup — no handler thread is tied up waiting for etcd. Two things make them safe on a bad night:

* every etcd call runs inside ``etcd3.deadline(...)`` shorter than kopf's handler timeout, so a
  frozen or blackholed member costs a failover (about a second), never a hung handler;
* a handler that still fails raises ``kopf.TemporaryError``, so kopf retries it later — the write
  is redone, not lost. Writes are idempotent (put the whole value, delete is a no-op when gone).
"""

from __future__ import annotations

import json
import os
from typing import Any

import kopf

import resilient_etcd as etcd3
from resilient_etcd import aio

PREFIX = os.environ.get("MIRROR_PREFIX", "/kopf-mirror/")
_client: aio.AsyncEtcd3Client | None = None


def client() -> aio.AsyncEtcd3Client:
    if _client is None:
        raise kopf.TemporaryError("the etcd client is not up yet", delay=1)
    return _client


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    global _client
    settings.persistence.finalizer = "mirror.example/finalizer"
    settings.posting.enabled = False
    # on kopf's loop; bad endpoints fail here (ConfigurationError), before any event
    _client = aio.client(endpoints=os.environ["ETCD_ENDPOINTS"].split(","), timeout=5)


@kopf.on.cleanup()
async def close(**_: Any) -> None:
    if _client is not None:
        await _client.aclose()


@kopf.on.create("configmaps", labels={"mirror": "etcd"})
@kopf.on.update("configmaps", labels={"mirror": "etcd"})
@kopf.on.resume("configmaps", labels={"mirror": "etcd"})
async def mirror(namespace: str, name: str, body: kopf.Body, **_: Any) -> None:
    value = json.dumps(dict(body.get("data") or {}), sort_keys=True)
    try:
        with etcd3.deadline(4.0):
            await client().put(f"{PREFIX}{namespace}/{name}", value)
    except etcd3.Etcd3Exception as e:
        raise kopf.TemporaryError(f"etcd write failed: {e}", delay=1) from e


@kopf.on.delete("configmaps", labels={"mirror": "etcd"})
async def unmirror(namespace: str, name: str, **_: Any) -> None:
    try:
        with etcd3.deadline(4.0):
            await client().delete(f"{PREFIX}{namespace}/{name}")
    except etcd3.Etcd3Exception as e:
        raise kopf.TemporaryError(f"etcd delete failed: {e}", delay=1) from e
