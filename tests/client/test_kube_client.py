"""resilient_etcd.kube.ApiClient on real kube-apiservers: failover, deadlines, socket options, bad input."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from kubernetes import client as k8s

import resilient_etcd as etcd3
from resilient_etcd.kube import ApiClient, KubePolicy
from resilient_etcd.testing.kube import KubeApiServer


def resilient(apis: list[KubeApiServer], **kw: object) -> ApiClient:
    return ApiClient.from_kubeconfig(apis[0].kubeconfig(), endpoints=[api.url for api in apis[1:]], **kw)


@pytest.mark.parametrize("fault", ["blackhole", "pause", "reset_peer"])
def test_list_fails_over_within_3s(two_apiservers: list[KubeApiServer], fault: str) -> None:
    a, _ = two_apiservers
    api = resilient(two_apiservers)
    v1 = k8s.CoreV1Api(api)
    assert "default" in [n.metadata.name for n in v1.list_namespace().items]
    if fault == "blackhole":
        a.require_proxy().blackhole()
    elif fault == "reset_peer":  # every connection (and TLS handshake) to it is reset
        a.require_proxy().reset_peer()
    else:
        a.pause()
    try:
        started = time.monotonic()
        names = [n.metadata.name for n in v1.list_namespace().items]
        took = time.monotonic() - started
    finally:
        a.resume()
        a.require_proxy().heal()
    assert "default" in names
    assert took < 3.0, f"failover took {took:.2f} s"
    assert api.active_endpoint == two_apiservers[1].url


def test_deadline_scope_reaches_every_call(two_apiservers: list[KubeApiServer]) -> None:
    a, b = two_apiservers
    a.require_proxy().blackhole()
    b.require_proxy().blackhole()
    try:
        v1 = k8s.CoreV1Api(resilient(two_apiservers))
        started = time.monotonic()
        with pytest.raises(etcd3.DeadlineExceeded), etcd3.deadline(1.0):
            v1.list_namespace()
        assert time.monotonic() - started < 1.3
    finally:
        a.require_proxy().heal()
        b.require_proxy().heal()


def test_socket_options_are_set() -> None:
    cfg = k8s.Configuration()
    cfg.host = "https://127.0.0.1:1"
    api = ApiClient(cfg, policy=KubePolicy(user_timeout=4, keepalive_idle=3))
    assert api._h2 is not None
    # both the HTTP/2 connections and the HTTP/1.1 fallback pool (servers without h2) carry them;
    # test_kube_h2 reads them back from a live socket
    for opts in (api._h2._socket_options, api._h2.fallback.connection_pool_kw["socket_options"]):
        assert (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1) in opts
        assert (socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 4000) in opts
        assert (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 3) in opts
    api.close()


def test_bad_input(tmp_path: Path) -> None:
    with pytest.raises(etcd3.ConfigurationError, match="cannot read kubeconfig"):
        ApiClient.from_kubeconfig(tmp_path / "missing")
    bad = tmp_path / "bad"
    bad.write_text("{}")
    with pytest.raises(etcd3.ConfigurationError, match="bad kubeconfig"):
        ApiClient.from_kubeconfig(bad)
    cfg = k8s.Configuration()
    cfg.host = "https://127.0.0.1:6443"
    with pytest.raises(etcd3.ConfigurationError, match="bad apiserver URL"):
        ApiClient(cfg, endpoints=["ftp://x"])
    with pytest.raises(etcd3.ConfigurationError, match="read_idle_timeout"):
        KubePolicy(read_idle_timeout=-1)
    with pytest.raises(etcd3.ConfigurationError, match="keepalive_count"):
        KubePolicy(keepalive_count=0)
    with pytest.raises(etcd3.ConfigurationError, match="ping_timeout"):
        KubePolicy(ping_timeout=0)
    with pytest.raises(etcd3.ConfigurationError, match="probe_interval"):
        KubePolicy(probe_interval=-0.5)
    with pytest.raises(etcd3.ConfigurationError, match="http2"):
        KubePolicy(http2="yes")  # type: ignore[arg-type]
    cfg.ssl_ca_cert = str(tmp_path / "no-ca.pem")
    with pytest.raises(etcd3.ConfigurationError, match="ssl_ca_cert"):
        ApiClient(cfg)


def test_a_certificate_the_ca_does_not_sign_fails_at_once(two_apiservers: list[KubeApiServer], tmp_path: Path) -> None:
    """Certificate verification is configuration, not a transient fault: no retry loop, a clear error."""
    from kubernetes.client.exceptions import ApiException

    from resilient_etcd.testing.tls import make_certs

    other_ca = make_certs(tmp_path / "other", ["127.0.0.1"]).ca
    kc = two_apiservers[0].kubeconfig()
    kc.write_text(kc.read_text().replace(str(two_apiservers[0].certs.ca), str(other_ca)))
    api = ApiClient.from_kubeconfig(kc)
    started = time.monotonic()
    with pytest.raises(ApiException) as info:
        k8s.CoreV1Api(api).list_namespace()
    api.close()
    assert time.monotonic() - started < 1.0
    assert info.value.status == 0 and "CERTIFICATE_VERIFY_FAILED" in str(info.value.reason)


def test_client_certificate_auth_over_http2(two_apiservers: list[KubeApiServer]) -> None:
    a, b = two_apiservers
    admin = ApiClient.from_kubeconfig(a.kubeconfig())
    k8s.RbacAuthorizationV1Api(admin).create_cluster_role_binding({
        "metadata": {"name": "cert-admin"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "User", "name": "admin", "apiGroup": "rbac.authorization.k8s.io"}]})
    admin.close()
    api = ApiClient.from_kubeconfig(a.kubeconfig(user="admin-cert"), endpoints=[b.url])
    try:
        assert "default" in [n.metadata.name for n in k8s.CoreV1Api(api).list_namespace().items]
        assert api._h2 is not None and api._h2.connections(a.url)  # the certificate went over our h2 TLS
        a.require_proxy().blackhole()
        try:
            k8s.CoreV1Api(api).list_namespace(_request_timeout=5)  # and to the other apiserver
        finally:
            a.require_proxy().heal()
        assert api.active_endpoint == b.url
    finally:
        api.close()


def test_deadline_bounds_the_whole_response(kube_apiserver: KubeApiServer) -> None:
    """The deadline used to bound each read only: a LIST that kept trickling in ran past ``deadline()``."""
    v1 = k8s.CoreV1Api(ApiClient.from_kubeconfig(kube_apiserver.kubeconfig(), policy=KubePolicy(probe_interval=0)))
    blob = "x" * 64 * 1024
    for i in range(16):
        v1.create_namespaced_config_map("default", {"metadata": {"name": f"big-{i}"}, "data": {"v": blob}})
    kube_apiserver.require_proxy().bandwidth(256)  # KB/s: the 1 MiB LIST needs ~4 s
    try:
        started = time.monotonic()
        with etcd3.deadline(1.5), pytest.raises(etcd3.DeadlineExceeded):
            v1.list_namespaced_config_map("default")
        took = time.monotonic() - started
    finally:
        kube_apiserver.require_proxy().heal()
        for i in range(16):
            v1.delete_namespaced_config_map(f"big-{i}", "default")
    assert took < 1.5 + 0.1 + 0.2, took
