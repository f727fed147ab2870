"""The informer on two real apiservers: the store follows creates/updates/deletes through a
blackholed apiserver, handlers see each change once, and a relist is delivered as differences."""

from __future__ import annotations

import threading
from typing import Any

from kubernetes import client as k8s

from resilient_etcd.kube import ApiClient
from resilient_etcd.kube.informer import Informer, object_key
from resilient_etcd.testing import wait_until
from resilient_etcd.testing.kube import KubeApiServer


def server_state(v1: k8s.CoreV1Api) -> dict[str, dict[str, str]]:
    return {f"default/{c.metadata.name}": dict(c.data or {})
            for c in v1.list_namespaced_config_map("default").items}


def test_informer_follows_changes_through_a_blackholed_apiserver(two_apiservers: list[KubeApiServer]) -> None:
    a, b = two_apiservers
    writer = k8s.CoreV1Api(ApiClient.from_kubeconfig(b.kubeconfig(direct=True)))
    writer.create_namespaced_config_map("default", {"metadata": {"name": "pre"}, "data": {"v": "0"}})
    calls: list[tuple[str, str]] = []
    lock = threading.Lock()

    def record(kind: str) -> Any:
        def handler(*objs: dict[str, Any]) -> None:
            with lock:
                calls.append((kind, objs[-1]["metadata"]["name"]))
        return handler

    api = ApiClient.from_kubeconfig(a.kubeconfig(), endpoints=[b.url])
    inf = Informer(k8s.CoreV1Api(api).list_namespaced_config_map, "default",
                   on_add=record("add"), on_update=record("update"), on_delete=record("delete"))
    with inf:
        assert inf.wait_synced(10)
        assert inf.get("default/pre") is not None
        for i in range(10):
            writer.create_namespaced_config_map("default", {"metadata": {"name": f"cm{i}"}, "data": {"v": "0"}})
        a.require_proxy().blackhole()
        try:
            for i in range(10):
                writer.patch_namespaced_config_map(f"cm{i}", "default", {"data": {"v": "1"}})
            for i in range(0, 10, 2):
                writer.delete_namespaced_config_map(f"cm{i}", "default")
            want = server_state(writer)
            wait_until(lambda: {object_key(o): o.get("data", {}) for o in inf.items()} == want,
                       timeout=10, what="the informer's store to equal the server")
        finally:
            a.require_proxy().heal()
    api.close()
    assert inf.error is None
    assert sorted(n for k, n in calls if k == "add") == sorted(["pre", *[f"cm{i}" for i in range(10)]])
    assert sorted(n for k, n in calls if k == "update") == sorted(f"cm{i}" for i in range(10))
    assert sorted(n for k, n in calls if k == "delete") == sorted(f"cm{i}" for i in range(0, 10, 2))


def cm(name: str, rv: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "resourceVersion": rv}}


def test_relist_is_delivered_as_differences() -> None:
    seen: list[tuple[str, str]] = []
    inf = Informer(lambda *a, **k: None, on_add=lambda o: seen.append(("add", o["metadata"]["name"])),
                   on_update=lambda old, new: seen.append(("update", new["metadata"]["name"])),
                   on_delete=lambda o: seen.append(("delete", o["metadata"]["name"])),
                   on_relist=lambda: seen.append(("relist", "")))
    inf._replace([cm("kept", "1"), cm("changed", "1"), cm("gone", "1")])
    seen.clear()
    inf._apply({"type": "RELIST", "object": {"items": [cm("kept", "1"), cm("changed", "2"), cm("new", "3")]}})
    assert sorted(seen) == [("add", "new"), ("delete", "gone"), ("relist", ""), ("update", "changed")]
    assert inf.keys() == ["ns/changed", "ns/kept", "ns/new"]
    assert inf.relists == 1
