"""S13: the incident on real apiservers — one resource's etcd connection of apiserver A goes silent
(``S13-resource``: ``/readyz`` stays green), or A's ConfigMap storage goes through an
``--etcd-servers-overrides`` path that is blackholed (``S13-override``: A turns unready). Measured for
ours (an ``Informer``-style watch and LISTs through ``ApiClient`` with both apiservers) beside the
official client (a kubeconfig's ``ApiClient``, ``Watch().stream``) on A."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from resilient_etcd.testing import EtcdCluster, ToxiproxyServer, wait_until
from resilient_etcd.testing.kube import KubeApiServer

from .scenarios import Trial

CAP = 20.0


def _clients(a: KubeApiServer, b: KubeApiServer, name: str) -> tuple[Any, Any]:
    """(the client under test's CoreV1Api, a writer's CoreV1Api through B)."""
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config

    from resilient_etcd.kube import ApiClient

    if name == "resilient":
        api: Any = ApiClient.from_kubeconfig(a.kubeconfig(direct=True), endpoints=[b.direct_url])
    else:
        cfg = k8s.Configuration()
        k8s_config.load_kube_config(config_file=str(a.kubeconfig(direct=True)), client_configuration=cfg)
        api = k8s.ApiClient(cfg)
    writer = k8s.CoreV1Api(ApiClient.from_kubeconfig(b.kubeconfig(direct=True)))
    return k8s.CoreV1Api(api), writer


def _watch(v1: Any, name: str, rv: str, seen: dict[str, float], stop: threading.Event) -> threading.Thread:
    from kubernetes import watch as k8s_watch

    from resilient_etcd.kube import watch

    def consume() -> None:
        try:
            if name == "resilient":
                stream: Any = watch(v1.list_namespaced_config_map, "default", resource_version=rv, stop=stop)
            else:
                stream = k8s_watch.Watch().stream(v1.list_namespaced_config_map, "default", resource_version=rv,
                                                  _request_timeout=CAP * 2)
            for ev in stream:
                obj = ev["object"]
                meta = obj["metadata"] if isinstance(obj, dict) else obj.metadata.to_dict()
                seen.setdefault(meta["name"], time.monotonic())
                if stop.is_set():
                    return
        except Exception:  # the official watch may end in any of urllib3's ways: what it delivered counts
            pass

    t = threading.Thread(target=consume, daemon=True)
    t.start()
    return t


def trial(a: KubeApiServer, b: KubeApiServer, name: str, scenario: str,
          fault: Callable[[], Callable[[], None]]) -> Trial:
    """``fault()`` breaks A's ConfigMaps and returns the undo. A quiet ConfigMap watch on the client, then
    the fault; a write through B: when the watch delivers it; a LIST of ConfigMaps: how long it takes."""
    v1, writer = _clients(a, b, name)
    rv = writer.list_namespaced_config_map("default").metadata.resource_version
    seen: dict[str, float] = {}
    stop = threading.Event()
    consumer = _watch(v1, name, rv, seen, stop)
    time.sleep(1.0)  # the watch is up and quiet before the fault: the scenario
    undo = fault()
    marker = f"s13-{name}-{time.monotonic_ns()}"
    try:
        started = time.monotonic()
        writer.create_namespaced_config_map("default", {"metadata": {"name": marker}})
        wait_until(lambda: marker in seen, timeout=CAP, what="the write to reach the watch", on_timeout=lambda: "")
        delivered = seen[marker] - started
    except Exception:
        delivered = None
    listed: float | None
    try:
        started = time.monotonic()
        v1.list_namespaced_config_map("default", _request_timeout=CAP)
        listed = time.monotonic() - started
    except Exception:
        listed = None
    started = time.monotonic()
    v1.list_namespace(_request_timeout=CAP)
    other = time.monotonic() - started
    stop.set()
    undo()
    consumer.join(1.0)
    v1.api_client.close()
    writer.api_client.close()
    return Trial(scenario, name, CAP, delivered, 0, 0, 0,
                 {"watch_delivered": delivered, "list_seconds": listed, "other_resource_seconds": other})


def silence(a: KubeApiServer, writer: Any) -> Callable[[], Callable[[], None]]:
    """S13-resource's fault: A's ConfigMap etcd connection DROPped (see ``KubeApiServer.silence_resource``)."""

    def fault() -> Callable[[], None]:
        def traffic() -> None:
            for i in range(10):
                name = f"find-{time.monotonic_ns()}-{i}"
                writer.create_namespaced_config_map("default", {"metadata": {"name": name}, "data": {"v": "x" * 4000}})

        flow = a.silence_resource(traffic)
        return flow.restore

    return fault


def _answers(v1: Any) -> bool:
    """Does a ConfigMap LIST answer through this client within a second? (A's etcd connection recovered.)"""
    try:
        v1.list_namespaced_config_map("default", limit=1, _request_timeout=1.0)
        return True
    except Exception:
        return False


def run(quick: bool, log: Callable[[str], None]) -> list[Trial]:
    """Both variants, ours (several trials) beside the official client (one each)."""
    from kubernetes import client as k8s

    from resilient_etcd.kube import ApiClient

    trials: list[Trial] = []
    ours = 2 if quick else 5
    with ToxiproxyServer() as tp, EtcdCluster(size=1, netns=True, proxied=False) as etcd:
        with KubeApiServer(etcd) as a, KubeApiServer(etcd, peer=a) as b:
            writer = k8s.CoreV1Api(ApiClient.from_kubeconfig(a.kubeconfig(direct=True)))
            for name in ("resilient",) * ours + ("plain",):
                t = trial(a, b, name, "S13-resource", silence(a, writer))
                trials.append(t)
                log(f"S13-resource {name}: {t.extra}")
                wait_until(lambda: _answers(writer), timeout=60, what="A's ConfigMaps to answer again")
        # the override variant: A keeps ConfigMaps in etcd through a proxy that is then blackholed
        proxy = tp.create_proxy("s13-override", etcd.direct_endpoints[0])
        override = f"--etcd-servers-overrides=/configmaps#http://{proxy.address}"
        with KubeApiServer(etcd, extra_args=(override,)) as a, KubeApiServer(etcd, peer=a) as b:
            for name in ("resilient",) * ours + ("plain",):

                def fault() -> Callable[[], None]:
                    proxy.blackhole()
                    return proxy.heal

                t = trial(a, b, name, "S13-override", fault)
                trials.append(t)
                log(f"S13-override {name}: {t.extra}")
                a.wait_ready()
    return trials
