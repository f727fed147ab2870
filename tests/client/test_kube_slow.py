"""Slow is not dead, Kubernetes side: a large LIST through a slow path to the API server completes,
as it does with the official client (it used to fail: the /readyz probe, queued behind the LIST on
the same HTTP/2 connection, timed out and ejected a working API server)."""

from __future__ import annotations

import threading
import time
from typing import Any

from kubernetes import client as k8s

from resilient_etcd.kube import ApiClient
from resilient_etcd.testing.kube import KubeApiServer

COUNT = 16
BLOB = "x" * 65536  # 16 x 64 KiB: ~4 s at 256 KB/s
NAMESPACE = "default"


def _configmaps(v1: k8s.CoreV1Api, prefix: str) -> None:
    for i in range(COUNT):
        body = k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name=f"{prefix}-{i:02d}", labels={"slow": prefix}),
                               data={"blob": BLOB})
        try:
            v1.create_namespaced_config_map(NAMESPACE, body)
        except k8s.ApiException as e:
            if e.status != 409:
                raise


def _list(v1: k8s.CoreV1Api, prefix: str) -> tuple[int, float]:
    started = time.monotonic()
    items = v1.list_namespaced_config_map(NAMESPACE, label_selector=f"slow={prefix}", _request_timeout=60).items
    return len(items), time.monotonic() - started


def test_a_large_list_completes_over_a_slow_path(kube_apiserver: KubeApiServer) -> None:
    ours = ApiClient.from_kubeconfig(kube_apiserver.kubeconfig())
    official = k8s.ApiClient(_official_configuration(kube_apiserver))
    try:
        v1, plain = k8s.CoreV1Api(ours), k8s.CoreV1Api(official)
        _configmaps(v1, "big")
        kube_apiserver.require_proxy().bandwidth(256)
        try:
            n_plain, t_plain = _list(plain, "big")
            n_ours, t_ours = _list(v1, "big")
        finally:
            kube_apiserver.require_proxy().heal()
        ejections = ours.health[kube_apiserver.url].ejections
    finally:
        ours.close()
        official.close()
    assert n_plain == n_ours == COUNT
    assert ejections == 0
    assert t_plain > 3, f"the path was not slow ({t_plain:.1f} s): the test proves nothing"
    assert t_ours < 2 * t_plain + 2, f"ours {t_ours:.1f} s, official {t_plain:.1f} s"


def test_a_path_that_dies_during_a_large_list_is_noticed(two_apiservers: list[KubeApiServer]) -> None:
    """Both API servers slow; the one in use goes silent half-way through a LIST: the stall is noticed
    and the LIST completes on the other."""
    a, b = two_apiservers
    ours = ApiClient.from_kubeconfig(a.kubeconfig(), endpoints=[b.url])
    try:
        v1 = k8s.CoreV1Api(ours)
        _configmaps(v1, "mid")
        assert ours.active_endpoint == a.url
        for api in two_apiservers:
            api.require_proxy().bandwidth(256)
        outcome: list[Any] = []

        def run() -> None:
            try:
                outcome.append(_list(v1, "mid"))
            except Exception as e:
                outcome.append(e)

        reader = threading.Thread(target=run)
        try:
            started = time.monotonic()
            reader.start()
            reader.join(1.5)  # part of the answer is on the way
            a.require_proxy().blackhole()
            reader.join(60)
            took = time.monotonic() - started
        finally:
            for api in two_apiservers:
                api.require_proxy().heal()
        ejections = ours.health[a.url].ejections
    finally:
        ours.close()
    assert not reader.is_alive()
    assert outcome and outcome[0][0] == COUNT, outcome
    assert ejections >= 1
    # ~4 s to read it once, the stall noticed within read_idle + ping timeout (3 s), read again from B
    assert took < 20, f"took {took:.1f} s"


def _official_configuration(api: KubeApiServer) -> k8s.Configuration:
    from kubernetes import config

    cfg = k8s.Configuration()
    config.load_kube_config(config_file=str(api.kubeconfig()), client_configuration=cfg)
    return cfg
