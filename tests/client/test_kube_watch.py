"""resilient_etcd.kube.watch on two real apiservers: a quiet watch leaves a blackholed path,
≥ 1,000 ConfigMap updates arrive exactly once and in order through faults, 410 → RELIST."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from tenacity import Retrying, stop_after_delay, wait_fixed

from resilient_etcd.kube import ApiClient, watch
from resilient_etcd.testing import wait_until
from resilient_etcd.testing.kube import KubeApiServer

from ._kube import Collector


def test_quiet_watch_leaves_a_blackholed_apiserver(two_apiservers: list[KubeApiServer]) -> None:
    a, b = two_apiservers
    v1 = k8s.CoreV1Api(ApiClient.from_kubeconfig(a.kubeconfig(), endpoints=[b.url]))
    writer = k8s.CoreV1Api(ApiClient.from_kubeconfig(b.kubeconfig(direct=True)))
    c = Collector(v1)
    try:
        time.sleep(0.5)  # the watch is quiet before the fault: that is the scenario
        a.require_proxy().blackhole()
        started = time.monotonic()
        writer.create_namespaced_config_map("default", {"metadata": {"name": "quiet"}})
        wait_until(lambda: any(e["object"]["metadata"]["name"] == "quiet" for _, e in c.events), timeout=10,
                   what="the write to arrive through the other apiserver")
        took = next(t for t, e in c.events if e["object"]["metadata"]["name"] == "quiet") - started
    finally:
        a.require_proxy().heal()
        c.close()
    assert took < 3.5, f"a quiet watch took {took:.2f} s to leave the blackholed apiserver"


def test_thousand_updates_exactly_once_through_faults(two_apiservers: list[KubeApiServer]) -> None:
    a, b = two_apiservers
    api = ApiClient.from_kubeconfig(a.kubeconfig(), endpoints=[b.url])
    writer = k8s.CoreV1Api(ApiClient.from_kubeconfig(b.kubeconfig(direct=True)))
    created = writer.create_namespaced_config_map("default", {"metadata": {"name": "hist"}, "data": {"n": "0"}})
    # watch from the creation's version, so update 1 is an event even if the writer is faster than the watch
    c = Collector(k8s.CoreV1Api(api), resource_version=created.metadata.resource_version)
    n = 1000
    done = threading.Event()

    def write() -> None:
        # the writer's own apiserver is frozen too: a PATCH in flight then fails with an unknown outcome.
        # Setting n=i again is idempotent (an unchanged object makes no new version, hence no event).
        for i in range(1, n + 1):
            for attempt in Retrying(stop=stop_after_delay(30), wait=wait_fixed(0.1), reraise=True):
                with attempt:
                    writer.patch_namespaced_config_map("hist", "default", {"data": {"n": str(i)}})
        done.set()

    w = threading.Thread(target=write)
    w.start()
    try:
        faults = [("blackhole", a), ("pause", a), ("blackhole", b), ("pause", b)]
        for kind, victim in faults:
            if done.is_set():
                break
            time.sleep(0.5)
            if kind == "blackhole":
                victim.require_proxy().blackhole()
            else:
                victim.pause()
            time.sleep(2.0)  # the fault holds for two seconds of writes
            victim.resume()
            victim.require_proxy().heal()
        w.join(120)
        wait_until(lambda: any(e["type"] == "MODIFIED" and e["object"]["data"]["n"] == str(n)
                               for _, e in c.events), timeout=30, what="the last update to arrive")
    finally:
        c.close()
    seen = [int(e["object"]["data"]["n"]) for _, e in c.events
            if e["type"] == "MODIFIED" and e["object"]["metadata"]["name"] == "hist"]
    assert seen == list(range(1, n + 1)), (
        f"lost {sorted(set(range(1, n + 1)) - set(seen))[:10]}…, duplicates {len(seen) - len(set(seen))}")


def test_gone_resource_version_relists(two_apiservers: list[KubeApiServer]) -> None:
    a, _ = two_apiservers
    v1 = k8s.CoreV1Api(ApiClient.from_kubeconfig(a.kubeconfig()))
    stop = threading.Event()
    first = next(watch(v1.list_namespaced_config_map, "default", resource_version="1", stop=stop))
    stop.set()
    assert first["type"] == "RELIST"
    assert first["object"]["kind"] == "ConfigMapList"


def test_permanent_errors_reach_the_caller(kube_apiserver: KubeApiServer) -> None:
    """A 403 at the start used to be retried every 0.2 s forever, logged at INFO."""
    v1 = k8s.CoreV1Api(ApiClient.from_kubeconfig(kube_apiserver.kubeconfig(user="limited")))
    started = time.monotonic()
    with pytest.raises(ApiException) as err:
        next(watch(v1.list_namespaced_config_map, "default"))
    assert err.value.status == 403 and time.monotonic() - started < 5


class _FakeResponse:
    """What a generated list method returns with ``_preload_content=False``: the lines of a watch."""

    def __init__(self, lines: list[dict[str, object]]) -> None:
        self.data = json.dumps({"metadata": {"resourceVersion": "1"}}).encode()
        self._body = b"".join(json.dumps(line).encode() + b"\n" for line in lines)

    def stream(self, amt: object = None, decode_content: bool = True) -> Iterator[bytes]:
        yield self._body

    def release_conn(self) -> None:
        pass


def test_error_events_raise_permanent_and_retry_transient() -> None:
    """An ERROR event used to be raised inside the ``try`` that catches ApiException: swallowed, and
    the watch re-opened at once, forever. (The apiserver sends such events rarely and not on demand,
    so the server's side is a stand-in here; the start-of-watch 403 above is real.)"""
    calls: list[int] = []
    script = [
        [{"type": "ERROR", "object": {"code": 500, "message": "internal error"}}],
        [{"type": "ADDED", "object": {"metadata": {"name": "a", "resourceVersion": "5"}}},
         {"type": "ERROR", "object": {"code": 403, "message": "forbidden"}}],
    ]

    def list_func(*args: object, **kwargs: object) -> _FakeResponse:
        calls.append(1)
        return _FakeResponse(script[len(calls) - 1])

    events = watch(list_func, resource_version="1")
    assert next(events)["object"]["metadata"]["name"] == "a", "a transient ERROR is retried"
    with pytest.raises(ApiException) as err:
        next(events)
    assert err.value.status == 403 and len(calls) == 2
