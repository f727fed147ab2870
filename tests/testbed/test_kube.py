"""The kube-apiserver test bed is real: LIST through its proxy, and each fault bites (official client)."""

from __future__ import annotations

import time

import pytest
import urllib3
from kubernetes import client, config

from resilient_etcd.testing.kube import KubeApiServer

pytestmark = pytest.mark.integration


def core(api: KubeApiServer) -> client.CoreV1Api:
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(api.kubeconfig()), client_configuration=cfg)
    cfg.retries = 0
    return client.CoreV1Api(client.ApiClient(cfg))


def namespaces(v1: client.CoreV1Api, timeout: float = 5) -> list[str]:
    return [n.metadata.name for n in v1.list_namespace(_request_timeout=timeout).items]


def test_list_through_proxy_and_blackhole(kube_apiserver: KubeApiServer) -> None:
    v1 = core(kube_apiserver)
    assert "kube-system" in namespaces(v1)
    kube_apiserver.require_proxy().blackhole()
    started = time.monotonic()
    with pytest.raises(urllib3.exceptions.HTTPError):
        namespaces(core(kube_apiserver), timeout=1)
    assert time.monotonic() - started < 3
    kube_apiserver.require_proxy().heal()
    assert "default" in namespaces(core(kube_apiserver))


def test_pause_and_kill(kube_apiserver: KubeApiServer) -> None:
    kube_apiserver.pause()
    try:
        with pytest.raises(urllib3.exceptions.HTTPError):
            namespaces(core(kube_apiserver), timeout=1)
    finally:
        kube_apiserver.resume()
    assert "default" in namespaces(core(kube_apiserver))
    kube_apiserver.kill()
    started = time.monotonic()
    with pytest.raises(urllib3.exceptions.HTTPError):
        namespaces(core(kube_apiserver), timeout=5)
    assert time.monotonic() - started < 2, "a dead apiserver refuses at once"
    kube_apiserver.start()
    assert "default" in namespaces(core(kube_apiserver))
