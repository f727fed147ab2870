"""configmap-mirror: a small operator that mirrors labelled ConfigMaps into etcd keys.

    python examples/configmap-mirror/mirror.py --kubeconfig kc --apiservers https://10.0.0.3:6443 \\
        --endpoints 127.0.0.1:2379,127.0.0.1:22379 --name replica-a

* **single-active**: replicas campaign in the etcd election ``configmap-mirror``; only the leader
  mirrors, and every write is fenced (a transaction that applies only while the leader's election
  key still has the create revision it won with), so a replica that lost leadership without
  noticing yet can never write;
* **watch**: an :class:`resilient_etcd.kube.Informer` on ConfigMaps labelled ``--selector``
  (default ``mirror=etcd``) through :class:`resilient_etcd.kube.ApiClient` (HTTP/2 liveness,
  failover between apiservers);
* **mirror**: ConfigMap ``ns/name`` → etcd key ``<prefix>ns/name`` holding its ``data`` as JSON;
  deleted when the ConfigMap is deleted;
* **level-triggered**: handlers write as events come; a reconcile pass every ``--resync`` seconds
  (and after a relist) compares the informer's store with the etcd prefix and fixes any
  difference, so a write that failed during a fault is repaired, never lost.

Events go to stdout as JSON lines (``leader``, ``synced``, ``reconciled``, ``lost``, ``error``).
Stop it with SIGTERM or Ctrl-C (SIGINT): it exits within a second. It never reads stdin, so it runs
the same under a shell's ``&``, nohup, systemd or in a pod.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
import time
from typing import Any

from kubernetes import client as k8s

import resilient_etcd as etcd3
from resilient_etcd.kube import ApiClient, Informer
from resilient_etcd.kube.informer import object_key


def say(**event: object) -> None:
    print(json.dumps({"t": time.monotonic(), **event}), flush=True)


class Mirror:
    def __init__(self, client: etcd3.Etcd3Client, election: etcd3.Election, prefix: str) -> None:
        self.client, self.election, self.prefix = client, election, prefix
        self.fence = election.revision
        self.informer: Informer | None = None
        self.fenced = threading.Event()

    def _txn(self, op: Any) -> None:
        t = self.client.transactions
        ok, _ = self.client.transaction(compare=[t.create(self.election.key) == self.fence], success=[op],
                                        failure=[])
        if not ok:
            self.fenced.set()
            raise etcd3.LockLostError("no longer the leader: write fenced")

    def put(self, obj: dict[str, Any]) -> None:
        value = json.dumps(obj.get("data") or {}, sort_keys=True)
        self._txn(self.client.transactions.put(self.prefix + object_key(obj), value))

    def delete(self, obj: dict[str, Any]) -> None:
        self._txn(self.client.transactions.delete(self.prefix + object_key(obj)))

    def reconcile(self) -> int:
        """Make the etcd prefix equal the informer's store; returns the number of fixes."""
        assert self.informer is not None
        want = {self.prefix + object_key(o): json.dumps(o.get("data") or {}, sort_keys=True)
                for o in self.informer.items()}
        have = {meta.key.decode(): value.decode() for value, meta in self.client.get_prefix(self.prefix)}
        fixes = 0
        for key, value in want.items():
            if have.get(key) != value:
                self._txn(self.client.transactions.put(key, value))
                fixes += 1
        for key in have.keys() - want.keys():
            self._txn(self.client.transactions.delete(key))
            fixes += 1
        return fixes

    def handlers(self) -> dict[str, Any]:
        return {"on_add": lambda o: self.safely("put", self.put, o),
                "on_update": lambda _, o: self.safely("put", self.put, o),
                "on_delete": lambda o: self.safely("delete", self.delete, o)}

    def safely(self, what: str, fn: Any, *args: Any) -> None:
        """Handlers must not raise: a failed write is left to the next reconcile pass."""
        try:
            fn(*args)
        except etcd3.Etcd3Exception as e:
            say(event="error", during=what, error=f"{type(e).__name__}: {e}")


def run(args: argparse.Namespace, stop: threading.Event) -> None:
    api = ApiClient.from_kubeconfig(args.kubeconfig, endpoints=args.apiservers or None)
    v1 = k8s.CoreV1Api(api)
    with etcd3.client(endpoints=args.endpoints, timeout=5) as client:
        done = threading.Event()
        closer = close_on_stop(stop, done, client, api)
        try:
            _serve(args, stop, client, v1)
        except etcd3.ClientClosedError:
            pass  # stopping
        finally:
            done.set()
            stop.set()
            closer.join()
    say(event="stopped", name=args.name)
    api.close()


def close_on_stop(stop: threading.Event, done: threading.Event, *clients: Any) -> threading.Thread:
    """When ``stop`` is set (SIGTERM), give the loop half a second to step down cleanly — resigning
    hands leadership over at once — then close the clients, which ends whatever the loop still waits
    in (a campaign, a write) with ClientClosedError. Not a daemon: the caller sets ``done`` and
    ``stop`` when it returns, and joins it."""

    def closer() -> None:
        stop.wait()
        if not done.wait(0.5):
            for c in clients:
                c.close()

    t = threading.Thread(target=closer, name="closer")
    t.start()
    return t


def _serve(args: argparse.Namespace, stop: threading.Event, client: etcd3.Etcd3Client, v1: Any) -> None:
    """Campaign; while leader, mirror through an informer and reconcile every ``--resync`` seconds."""
    while not stop.is_set():
        lost = threading.Event()
        election = client.election("configmap-mirror", ttl=args.ttl, on_lost=lambda _, lost=lost: lost.set())
        try:
            if not election.campaign(args.name, timeout=2.0):  # bounded, so a stop request is noticed
                continue
        except etcd3.ClientClosedError:
            raise
        except etcd3.Etcd3Exception as e:  # e.g. the lease grant was cut off with its member: campaign again
            say(event="campaign-error", name=args.name, error=str(e))
            stop.wait(0.2)
            continue
        mirror = Mirror(client, election, args.prefix)
        say(event="leader", name=args.name, revision=mirror.fence)
        informer = mirror.informer = Informer(v1.list_namespaced_config_map, args.namespace,
                                              label_selector=args.selector, **mirror.handlers())
        with informer:
            while not informer.wait_synced(0.5):
                if stop.is_set() or lost.is_set():
                    break
            else:
                say(event="synced", name=args.name, objects=len(informer.keys()))
            while not (stop.is_set() or lost.is_set() or mirror.fenced.is_set()):
                try:
                    fixes = mirror.reconcile()
                    say(event="reconciled", name=args.name, fixes=fixes, objects=len(informer.keys()))
                except etcd3.ClientClosedError:
                    raise
                except etcd3.Etcd3Exception as e:
                    say(event="error", during="reconcile", error=f"{type(e).__name__}: {e}")
                stop.wait(args.resync)
        say(event="lost" if (lost.is_set() or mirror.fenced.is_set()) else "stepping-down", name=args.name)
        with contextlib.suppress(etcd3.Etcd3Exception):
            election.resign()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--apiservers", type=lambda s: s.split(","), default=[], help="extra apiserver URLs")
    p.add_argument("--endpoints", type=lambda s: s.split(","), required=True, help="etcd endpoints")
    p.add_argument("--name", required=True)
    p.add_argument("--namespace", default="default")
    p.add_argument("--selector", default="mirror=etcd")
    p.add_argument("--prefix", default="/mirror/")
    p.add_argument("--ttl", type=int, default=5)
    p.add_argument("--resync", type=float, default=1.0)
    a = p.parse_args()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    run(a, stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
