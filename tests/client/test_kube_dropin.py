"""The Kubernetes drop-in as unmodified code uses it: the official client's documented usage run three
times on one real kube-apiserver — with the official ``ApiClient``, with ours, and with no client named
after ``resilient_etcd.kube.install()`` — and the same results asserted; construction and errors as the
official class has them."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes import dynamic, informer, utils, watch

import resilient_etcd as etcd3
from resilient_etcd import kube
from resilient_etcd.testing import wait_until
from resilient_etcd.testing.kube import KubeApiServer
from resilient_etcd.testing.tls import make_certs

from ._proxy import ConnectProxy


@pytest.fixture
def installed() -> Iterator[None]:
    """``install()`` for the test, the official default configuration restored after it."""
    saved = k8s.Configuration.get_default_copy()
    kube.install()
    try:
        yield
    finally:
        kube.uninstall()
        k8s.Configuration.set_default(saved)


def _config(api: KubeApiServer) -> k8s.Configuration:
    cfg = k8s.Configuration()
    k8s_config.load_kube_config(config_file=str(api.kubeconfig()), client_configuration=cfg)
    return cfg


def _usage(ns: str, client: Callable[[], Any]) -> dict[str, Any]:
    """The official client's documented usage; what it returns, with ``ns`` taken out of names."""
    out: dict[str, Any] = {}
    v1, apps = k8s.CoreV1Api(client()), k8s.AppsV1Api(client())
    v1.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=ns)))
    out["namespace listed"] = ns in [n.metadata.name for n in v1.list_namespace().items]
    cm = k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name="cm", labels={"app": "x"}), data={"a": "1"})
    created = v1.create_namespaced_config_map(ns, cm)
    out["created"] = (type(created).__name__, created.data)
    rv = created.metadata.resource_version
    replaced = v1.replace_namespaced_config_map("cm", ns, k8s.V1ConfigMap(
        metadata=k8s.V1ObjectMeta(name="cm", resource_version=rv), data={"a": "2"}))
    out["replaced"] = replaced.data
    out["strategic merge"] = v1.patch_namespaced_config_map("cm", ns, {"data": {"b": "3"}}).data
    out["merge patch"] = v1.patch_namespaced_config_map(
        "cm", ns, {"data": {"c": "4"}}, _content_type="application/merge-patch+json").data
    out["json patch"] = v1.patch_namespaced_config_map(
        "cm", ns, [{"op": "remove", "path": "/data/a"}], _content_type="application/json-patch+json").data
    with pytest.raises(k8s.ApiException) as missing:
        v1.read_namespaced_config_map("nope", ns)
    out["missing"] = (type(missing.value).__name__, missing.value.status, missing.value.reason)
    with pytest.raises(k8s.ApiException) as conflict:
        v1.create_namespaced_config_map(ns, cm)
    out["conflict"] = conflict.value.status
    svc = v1.create_namespaced_service(ns, k8s.V1Service(
        metadata=k8s.V1ObjectMeta(name="svc"),
        spec=k8s.V1ServiceSpec(ports=[k8s.V1ServicePort(port=80)], selector={"app": "x"})))
    out["service"] = (svc.spec.type, [p.port for p in svc.spec.ports])
    dep = apps.create_namespaced_deployment(ns, k8s.V1Deployment(
        metadata=k8s.V1ObjectMeta(name="dep"),
        spec=k8s.V1DeploymentSpec(
            replicas=0, selector=k8s.V1LabelSelector(match_labels={"app": "x"}),
            template=k8s.V1PodTemplateSpec(metadata=k8s.V1ObjectMeta(labels={"app": "x"}), spec=k8s.V1PodSpec(
                containers=[k8s.V1Container(name="c", image="example.invalid/none")])))))
    out["deployment"] = (dep.metadata.name, dep.spec.replicas)
    # the official Watch with a resource version: the events after it, in order
    start = v1.list_namespaced_config_map(ns).metadata.resource_version
    v1.create_namespaced_config_map(ns, k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name="w1")))
    v1.delete_namespaced_config_map("w1", ns)
    seen = []
    w = watch.Watch()
    for ev in w.stream(v1.list_namespaced_config_map, ns, resource_version=start, timeout_seconds=10):
        seen.append((ev["type"], ev["object"].metadata.name))
        if ev["type"] == "DELETED":
            w.stop()
    out["watch"] = seen
    # utils.create_from_yaml and the dynamic client take the client they are given
    created_yaml = utils.create_from_yaml(client(), yaml_objects=[
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "from-yaml"}, "data": {"y": "1"}}],
        namespace=ns)
    out["create_from_yaml"] = [o.metadata.name for group in created_yaml for o in group]
    dyn = dynamic.DynamicClient(client())
    cms = dyn.resources.get(api_version="v1", kind="ConfigMap")
    out["dynamic"] = sorted(i.metadata.name for i in cms.get(namespace=ns).items
                            if i.metadata.name != "kube-root-ca.crt")
    # the official informer: its own thread, its own Watch()
    inf = informer.SharedInformer(v1.list_namespaced_config_map, namespace=ns)
    added: list[str] = []
    inf.add_event_handler(informer.ADDED, lambda obj: added.append(obj.metadata.name))
    inf.start()
    try:
        for name in ("late", "later"):
            v1.create_namespaced_config_map(ns, k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name=name)))
            wait_until(lambda name=name: name in added, timeout=20, what=f"the informer's ADDED {name}")
    finally:
        # (only once an event came through its watch: "late" may come from the initial list, and the
        # official informer's stop() during the watch request leaves its thread blocked on the quiet
        # stream — Watch.stop() has no response to shut down yet, and the stream resets its stop flag)
        inf.stop()
    out["informer"] = sorted(set(added) - {"kube-root-ca.crt"})
    out["async_req"] = type(v1.read_namespace(ns, async_req=True).get(timeout=10)).__name__
    v1.delete_namespace(ns)
    return out


def test_official_usage_gives_the_same_results_on_every_client(kube_apiserver: KubeApiServer) -> None:
    cfg = _config(kube_apiserver)
    official = _usage("dropin-official", lambda: k8s.ApiClient(cfg))
    ours = _usage("dropin-ours", lambda: kube.ApiClient(cfg))
    saved = k8s.Configuration.get_default_copy()
    kube.install()
    try:
        k8s_config.load_kube_config(config_file=str(kube_apiserver.kubeconfig()))  # what unmodified code does
        assert isinstance(k8s.CoreV1Api().api_client, kube.ApiClient), "no client named: ours after install()"
        assert isinstance(watch.Watch()._api_client, kube.ApiClient)
        through_install = _usage("dropin-installed", lambda: k8s.ApiClient())
    finally:
        kube.uninstall()
        k8s.Configuration.set_default(saved)
    assert ours == official
    assert through_install == official
    assert not isinstance(k8s.CoreV1Api().api_client, kube.ApiClient), "uninstall() undoes it"


def test_constructs_whenever_the_official_class_does(installed: None) -> None:
    k8s.Configuration.set_default(k8s.Configuration(host=""))
    api = k8s.ApiClient()  # what Watch() does, before any kubeconfig is loaded
    assert isinstance(api, kube.ApiClient)
    w = watch.Watch()  # builds one only to deserialize
    assert isinstance(w._api_client, kube.ApiClient)
    cm = k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name="x"), data={"k": "v"})
    assert api.sanitize_for_serialization(cm) == k8s.api_client.ApiClient.sanitize_for_serialization(api, cm)
    assert api.select_header_accept(["application/json", "text/plain"]) == "application/json"
    assert api.select_header_content_type(["application/json"]) == "application/json"
    with pytest.raises(etcd3.ConfigurationError, match="no apiserver configured"):
        k8s.CoreV1Api(api).list_namespace()
    with kube.ApiClient(k8s.Configuration(host=""), pool_threads=2) as ctx:
        assert ctx.pool_threads == 2
    assert ctx.closed
    with pytest.raises(etcd3.ConfigurationError, match="bad apiserver URL"):
        kube.ApiClient(k8s.Configuration(host="ftp://nowhere"))


def test_connection_failures_keep_the_official_types() -> None:
    with socket.socket() as refused:  # bound, never listening: connections are refused
        refused.bind(("127.0.0.1", 0))
        cfg = k8s.Configuration(host=f"http://127.0.0.1:{refused.getsockname()[1]}")
        with pytest.raises(urllib3.exceptions.MaxRetryError) as theirs:
            k8s.CoreV1Api(k8s.ApiClient(cfg)).list_namespace(_request_timeout=2)
        with pytest.raises(urllib3.exceptions.MaxRetryError) as ours:
            k8s.CoreV1Api(kube.ApiClient(cfg)).list_namespace(_request_timeout=5)
    assert isinstance(theirs.value.reason, urllib3.exceptions.NewConnectionError)
    assert isinstance(ours.value.reason, urllib3.exceptions.NewConnectionError)


def test_a_deadline_is_ours_and_the_official_type() -> None:
    with socket.socket() as silent:  # listening, never accepting: the request is never answered
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        cfg = k8s.Configuration(host=f"http://127.0.0.1:{silent.getsockname()[1]}")
        with pytest.raises(urllib3.exceptions.MaxRetryError) as caught, etcd3.deadline(1.0):
            k8s.CoreV1Api(kube.ApiClient(cfg)).list_namespace()
    assert isinstance(caught.value, etcd3.DeadlineExceeded) and isinstance(caught.value, kube.ApiDeadlineExceeded)


def test_proxies_work_as_with_the_official_client(kube_apiserver: KubeApiServer, tmp_path: Path,
                                                   installed: None) -> None:
    """HTTP/1.1 through ``configuration.proxy`` (a real CONNECT proxy), and an ``https://`` proxy whose
    certificate does not verify (``MaxRetryError`` naming the reason) until ``proxy_ssl_context`` trusts it."""
    def through_install(cfg: k8s.Configuration) -> Any:  # unmodified code: the default configuration, no client
        k8s.Configuration.set_default(cfg)
        return k8s.ApiClient()  # (installed: ours)

    kinds: dict[str, Callable[[k8s.Configuration], Any]] = {
        "official": k8s.api_client.ApiClient, "ours": kube.ApiClient, "installed": through_install}

    def list_through(proxy_url: str, make: Callable[[k8s.Configuration], Any],
                     ctx: ssl.SSLContext | None = None) -> bool:
        cfg = _config(kube_apiserver)
        cfg.proxy, cfg.proxy_ssl_context = proxy_url, ctx
        api = make(cfg)
        try:
            return "default" in [n.metadata.name for n in k8s.CoreV1Api(api).list_namespace(_request_timeout=5).items]
        finally:
            api.close()

    with ConnectProxy() as proxy:
        for name, make in kinds.items():
            before = len(proxy.tunnels)
            assert list_through(proxy.url, make), name
            assert len(proxy.tunnels) > before, f"{name}: the request did not go through the proxy"
    certs = make_certs(tmp_path / "proxy", ["127.0.0.1"])
    server_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_side.load_cert_chain(str(certs.server_cert), str(certs.server_key))
    with ConnectProxy(server_side) as proxy:
        for name, make in kinds.items():
            with pytest.raises(urllib3.exceptions.MaxRetryError, match="CERTIFICATE_VERIFY_FAILED"):
                list_through(proxy.url, make)
            assert list_through(proxy.url, make, ssl.create_default_context(cafile=str(certs.ca))), name
            assert proxy.tunnels, f"{name}: nothing went through the https proxy"


@pytest.mark.parametrize("fault", ["pause", "blackhole"])
def test_the_official_watch_and_informer_notice_a_dead_apiserver(two_apiservers: list[KubeApiServer],
                                                                 fault: str) -> None:
    """Over our transport a frozen (SIGSTOP) or blackholed apiserver ends the official ``Watch().stream()``
    in seconds (the official client waits for the kernel), and the official informer's loop re-opens it
    on the next apiserver."""
    a, b = two_apiservers
    saved = k8s.Configuration.get_default_copy()
    kube.install(endpoints=[b.url])
    try:
        k8s_config.load_kube_config(config_file=str(a.kubeconfig()))
        v1 = k8s.CoreV1Api()
        writer = k8s.CoreV1Api(kube.ApiClient(_config(b)))
        inf = informer.SharedInformer(v1.list_namespaced_config_map, namespace="default")
        arrived: dict[str, float] = {}
        inf.add_event_handler(informer.ADDED, lambda obj: arrived.setdefault(obj.metadata.name, time.monotonic()))
        ended: list[tuple[float, BaseException]] = []
        watched: list[str] = []

        def official_watch() -> None:
            try:
                for ev in watch.Watch().stream(v1.list_namespaced_config_map, "default"):
                    watched.append(ev["object"].metadata.name)
            except BaseException as e:  # the finding: how and when the stream ended
                ended.append((time.monotonic(), e))

        inf.start()
        try:
            writer.create_namespaced_config_map("default", k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name="before")))
            wait_until(lambda: "before" in arrived, timeout=20, what="the informer running")
            t = threading.Thread(target=official_watch, daemon=True)
            t.start()
            writer.create_namespaced_config_map("default", k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name="opened")))
            wait_until(lambda: "opened" in arrived and "opened" in watched, timeout=20,
                       what="both watches delivering before the freeze")
            if fault == "pause":
                a.pause()
            else:
                a.require_proxy().blackhole()
            frozen = time.monotonic()
            writer.create_namespaced_config_map("default", k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name="during")))
            wait_until(lambda: "during" in arrived, timeout=20, what="the informer resumed on the other apiserver")
            t.join(20)
        finally:
            a.resume()
            a.require_proxy().heal()
            inf.stop()
        print(f"{fault}: the official watch ended after {ended[0][0] - frozen if ended else -1:.2f} s, "
              f"the informer delivered the next event after {arrived['during'] - frozen:.2f} s")
        assert arrived["during"] - frozen < 8, f"the informer resumed after {arrived['during'] - frozen:.1f} s"
        assert ended, "the official watch never noticed the frozen apiserver"
        assert ended[0][0] - frozen < 8, f"the official watch ended {ended[0][0] - frozen:.1f} s after the freeze"
    finally:
        kube.uninstall()
        k8s.Configuration.set_default(saved)
