"""examples/configmap-mirror end to end: two replicas, two apiservers, a 3-member etcd cluster.
Through an etcd member restart, a paused apiserver and a blackholed member, etcd's /mirror/
prefix converges to the labelled ConfigMaps; one replica is active at a time."""

from __future__ import annotations

import itertools
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from tenacity import Retrying, stop_after_delay, wait_fixed

import resilient_etcd as etcd3
from resilient_etcd.kube import ApiClient
from resilient_etcd.testing import EtcdCluster, ToxiproxyServer, wait_until
from resilient_etcd.testing.kube import KubeApiServer

from ._replica import Replica

MIRROR = Path(__file__).resolve().parents[2] / "examples" / "configmap-mirror" / "mirror.py"
BOUND = 10.0  # seconds from the last change to etcd holding it; the measured figures are printed


def replica(name: str, api: KubeApiServer, other: KubeApiServer, endpoints: list[str]) -> Replica:
    return Replica(name, [sys.executable, str(MIRROR), "--kubeconfig", str(api.kubeconfig()), "--apiservers",
                          other.url, "--endpoints", ",".join(endpoints), "--name", name, "--ttl", "3"])


def retry(fn: Callable[[], Any]) -> Any:
    """The test's own writes go through the fault too: retry them (the operator is under test, not the writer)."""
    for attempt in Retrying(stop=stop_after_delay(30), wait=wait_fixed(0.2), reraise=True):
        with attempt:
            return fn()


def test_mirror_converges_through_faults(etcd_cluster: EtcdCluster, toxiproxy_server: ToxiproxyServer) -> None:
    with KubeApiServer(etcd_cluster, toxiproxy=toxiproxy_server) as a, \
            KubeApiServer(etcd_cluster, toxiproxy=toxiproxy_server, peer=a) as b:
        writer_api = ApiClient.from_kubeconfig(b.kubeconfig(direct=True))
        writer = k8s.CoreV1Api(writer_api)
        checker = etcd3.client(endpoints=etcd_cluster.direct_endpoints, timeout=5)
        replicas = [replica("r1", a, b, etcd_cluster.endpoints), replica("r2", b, a, etcd_cluster.endpoints[::-1])]
        timings: dict[str, float] = {}
        totals: dict[str, float] = {}
        counter = [0]

        def want() -> dict[str, dict[str, str]]:
            items = retry(lambda: writer.list_namespaced_config_map("default", label_selector="mirror=etcd")).items
            return {f"/mirror/default/{c.metadata.name}": dict(c.data or {}) for c in items}

        def have() -> dict[str, dict[str, str]]:
            return {m.key.decode(): json.loads(v) for v, m in checker.get_prefix("/mirror/")}

        def churn() -> None:
            """Create, update and delete labelled ConfigMaps (and touch an unlabelled one)."""
            for _ in range(5):
                counter[0] += 1
                n = counter[0]
                retry(lambda n=n: writer.create_namespaced_config_map("default", {
                    "metadata": {"name": f"cm{n}", "labels": {"mirror": "etcd"}}, "data": {"v": str(n)}}))
            retry(lambda: writer.patch_namespaced_config_map(f"cm{counter[0] - 1}", "default",
                                                             {"data": {"v": "patched"}}))
            retry(lambda: writer.delete_namespaced_config_map(f"cm{counter[0] - 4}", "default"))
            retry(lambda: writer.create_namespaced_config_map("default", {
                "metadata": {"name": f"plain{counter[0]}"}, "data": {"v": "not mirrored"}}))

        def converge(label: str, fault_started: float) -> None:
            """Record (seconds from the last change to etcd agreeing, from the fault's start)."""
            last_change = time.monotonic()
            target = want()
            wait_until(lambda: have() == target, timeout=BOUND * 2, what=f"convergence after {label}")
            timings[label] = time.monotonic() - last_change
            totals[label] = time.monotonic() - fault_started

        try:
            wait_until(lambda: any(e["event"] == "synced" for r in replicas for e in r.drain()), timeout=30,
                       what="a replica to lead and sync")
            t0 = time.monotonic()
            churn()
            converge("steady", t0)

            m0 = etcd_cluster.members[0]  # r1's first etcd endpoint
            t0 = time.monotonic()
            m0.kill()
            churn()
            m0.start()
            converge("etcd member restarted", t0)

            t0 = time.monotonic()
            a.pause()  # r1's apiserver
            try:
                churn()
                converge("apiserver paused", t0)
            finally:
                a.resume()

            t0 = time.monotonic()
            m0.require_proxy().blackhole()
            try:
                churn()
                converge("etcd member blackholed", t0)
            finally:
                m0.require_proxy().heal()
        finally:
            for r in replicas:
                r.stop()
            checker.close()
            writer_api.close()
    print("configmap-mirror: seconds from the last change to etcd agreeing:",
          {k: round(v, 2) for k, v in timings.items()},
          "; from the fault's start (includes the test's own writes riding it out):",
          {k: round(v, 2) for k, v in totals.items()})
    assert max(timings.values()) < BOUND, timings
    # single-active: leadership terms never overlap (a term ends with lost/stepping-down, or with the process
    # stopping: its client is closed, so its lease is revoked or expires, before another replica can win)
    terms = []
    for r in replicas:
        start = None
        for e in r.drain():
            if e["event"] == "leader":
                start = e["t"]
            elif e["event"] in ("lost", "stepping-down", "stopped") and start is not None:
                terms.append((start, e["t"], r.name))
                start = None
        if start is not None:
            terms.append((start, float("inf"), r.name))
    terms.sort()
    for (_, e1, n1), (s2, _, n2) in itertools.pairwise(terms):
        assert s2 >= e1 or n1 == n2, f"{n1} and {n2} were both active: {terms}"
