"""Stops when asked: close(), cancel(), stop() and leaving a ``with`` end every iterator, callback,
keeper, observer and I/O thread of that client within 0.5 s."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from kubernetes import client as k8s

import resilient_etcd as etcd3
from resilient_etcd.kube import ApiClient, Informer, watch
from resilient_etcd.testing import EtcdCluster, wait_until
from resilient_etcd.testing.kube import KubeApiServer

BOUND = 0.5


def _ours() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith(("resilient-etcd", "readyz", "h2 ", "informer"))}


def _consume(it: Iterator[Any]) -> tuple[threading.Thread, list[object]]:
    """Iterate ``it`` in a thread (as a service's watch loop does); the thread and what ended it."""
    ended: list[object] = []

    def run() -> None:
        try:
            for _ in it:
                pass
            ended.append("end")
        except BaseException as e:
            ended.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, ended


def _ends_within(t: threading.Thread, action: Callable[[], object], what: str) -> float:
    started = time.monotonic()
    action()
    t.join(BOUND + 2)
    took = time.monotonic() - started
    assert not t.is_alive(), f"{what}: still running {took:.1f} s later"
    assert took < BOUND, f"{what}: took {took:.2f} s"
    return took


def test_close_ends_iterators_callbacks_keepers_and_observers(etcd_cluster: EtcdCluster) -> None:
    before = _ours()
    c = etcd3.client(endpoints=etcd_cluster.endpoints, timeout=5)
    events, _ = c.watch_prefix("/shut/")
    loop, ended = _consume(events)
    got: list[object] = []
    c.add_watch_callback("/shut/cb", got.append)
    lease = c.lease(5).keep_alive()
    election = c.election("shut", ttl=5)
    assert election.campaign("me", timeout=5)
    observed, _ = election.observe()
    assert next(observed) == b"me"
    observer, observer_ended = _consume(observed)
    c.put("/shut/a", "1")
    _ends_within(loop, c.close, "a watch loop after close()")
    observer.join(BOUND)
    assert not observer.is_alive() and observer_ended == ["end"], observer_ended
    assert ended == ["end"], ended
    assert any(isinstance(g, etcd3.ClientClosedError) for g in got), "a callback hears that its watch ended"
    assert lease._keeper is not None and not lease._keeper.is_alive()
    started = time.monotonic()
    assert list(events) == [] and time.monotonic() - started < 0.1, "an ended iterator stays ended"
    assert {s.state for s in c.endpoint_health()} == {"closed"}
    wait_until(lambda: not (_ours() - before), timeout=BOUND, what=f"threads to go: {_ours() - before}")


def test_cancel_ends_its_iterator(client: etcd3.Etcd3Client) -> None:
    events, cancel = client.watch("/shut/c")
    loop, ended = _consume(events)
    _ends_within(loop, cancel, "a watch loop after cancel()")
    assert ended == ["end"]


def test_informer_and_watch_stop_at_once_when_quiet(kube_apiserver: KubeApiServer) -> None:
    """Informer.stop() used to wait its whole join timeout (30 s asked, 30 s taken) and a watch's
    stop to take effect at its next event (none: not within 200 s)."""
    before = _ours()
    api = ApiClient.from_kubeconfig(kube_apiserver.kubeconfig())
    v1 = k8s.CoreV1Api(api)
    informer = Informer(v1.list_namespaced_config_map, "default").start()
    assert informer.wait_synced(10)
    started = time.monotonic()
    informer.stop(timeout=30)
    assert time.monotonic() - started < BOUND and informer._thread is not None and not informer._thread.is_alive()
    with Informer(v1.list_namespaced_config_map, "default") as ctx:
        assert ctx.wait_synced(10)
        started = time.monotonic()
    assert time.monotonic() - started < BOUND, "leaving `with Informer(...)`"
    stop = threading.Event()
    loop, ended = _consume(watch(v1.list_namespaced_config_map, "default", stop=stop))
    time.sleep(0.5)  # the watch is open and quiet: that is the scenario
    _ends_within(loop, stop.set, "kube.watch(stop=...)")
    assert ended == ["end"], ended
    loop, ended = _consume(watch(v1.list_namespaced_config_map, "default"))
    time.sleep(0.5)
    _ends_within(loop, api.close, "kube.watch after ApiClient.close()")
    assert ended == ["end"], ended
    wait_until(lambda: not (_ours() - before), timeout=BOUND, what=f"threads to go: {_ours() - before}")
