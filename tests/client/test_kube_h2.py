"""The HTTP/2 transport and health checks of resilient_etcd.kube.ApiClient on real kube-apiservers:
one multiplexed connection, PING liveness on a quiet watch, a stale flow behind a moved virtual IP
(S5), /readyz ejection and re-admission, and real 429s from API Priority and Fairness."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import ProtocolError

from resilient_etcd import metrics
from resilient_etcd.kube import ApiClient, KubePolicy
from resilient_etcd.kube.h2pool import H2Connection
from resilient_etcd.testing import EtcdCluster, ToxiproxyServer, netns_available, wait_until
from resilient_etcd.testing.kube import KubeApiServer
from resilient_etcd.testing.netns import VirtualIP

from ._kube import Collector


def test_an_idle_client_probes_only_its_heartbeat_and_a_waiting_request_gets_probes(
        two_apiservers: list[KubeApiServer]) -> None:
    """/readyz used to go to every apiserver twice a second from every client, busy or idle."""
    a, b = two_apiservers
    api = ApiClient.from_kubeconfig(a.kubeconfig(), endpoints=[b.url])

    def probes() -> int:
        return sum(metrics.snapshot()["events"].get("probes", {}).get(u, 0) for u in (a.url, b.url))

    try:
        k8s.CoreV1Api(api).list_namespace()
        wait_until(lambda: probes() >= 2, timeout=5, what="the first probe of each apiserver")
        before = probes()
        time.sleep(2.0)  # (checking that nothing happens while idle)
        assert probes() == before, "no probe while idle, before the 10 s heartbeat"
        a.pause()
        try:
            k8s.CoreV1Api(api).list_namespace(_request_timeout=5)  # waits on a: probed, ejected, moved
            assert api.active_endpoint == b.url
            assert probes() > before
        finally:
            a.resume()
    finally:
        api.close()


@pytest.fixture
def apiserver(etcd_cluster: EtcdCluster, toxiproxy_server: ToxiproxyServer) -> Iterator[KubeApiServer]:
    with KubeApiServer(etcd_cluster, toxiproxy=toxiproxy_server) as a:
        yield a


def connections(api: ApiClient) -> list[H2Connection]:
    assert api._h2 is not None
    return api._h2.connections(api.endpoints[0].rstrip("/"))


def test_one_connection_carries_calls_and_a_pinged_quiet_watch(apiserver: KubeApiServer) -> None:
    api = ApiClient.from_kubeconfig(apiserver.kubeconfig(), policy=KubePolicy(probe_interval=0))
    v1 = k8s.CoreV1Api(api)
    c = Collector(v1)
    try:
        errors: list[BaseException] = []

        def calls() -> None:
            try:
                for _ in range(5):
                    v1.list_namespace()
            except BaseException as e:  # collected and asserted below
                errors.append(e)

        threads = [threading.Thread(target=calls) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not errors
        (conn,) = connections(api)
        # the watch is quiet: the connection is kept alive by PINGs, and the watch is not re-opened
        wait_until(lambda: conn.pings >= 2, timeout=10, what="two PINGs on the quiet connection")
        assert connections(api) == [conn] and conn.closed is None
        v1.create_namespaced_config_map("default", {"metadata": {"name": "after-quiet"}})
        wait_until(lambda: c.arrived("after-quiet") is not None, timeout=5, what="the event on the same watch")
        assert connections(api) == [conn]
        # the live socket carries the policy's TCP options
        sock = conn._sock
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 10000
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 5
    finally:
        c.close()
        api.close()
    assert conn.closed is not None  # close() closed it


@pytest.mark.parametrize("fault", ["blackhole", "pause"])
def test_quiet_watch_on_a_dead_connection_fails_within_3s(apiserver: KubeApiServer, fault: str) -> None:
    """One apiserver, no probes: only the PING check can notice; the watch resumes once it heals."""
    api = ApiClient.from_kubeconfig(apiserver.kubeconfig(), policy=KubePolicy(probe_interval=0))
    v1 = k8s.CoreV1Api(api)
    c = Collector(v1)
    try:
        (conn,) = wait_until(lambda: connections(api), timeout=5, what="the watch's connection")
        started = time.monotonic()
        if fault == "blackhole":
            apiserver.require_proxy().blackhole()
        else:
            apiserver.pause()
        wait_until(lambda: conn.closed is not None, timeout=6, what="the PING check to close the connection")
        took = time.monotonic() - started
        apiserver.resume()
        apiserver.require_proxy().heal()
        writer = k8s.CoreV1Api(ApiClient.from_kubeconfig(apiserver.kubeconfig(direct=True)))
        writer.create_namespaced_config_map("default", {"metadata": {"name": "healed"}})
        wait_until(lambda: c.arrived("healed") is not None, timeout=10, what="the watch to resume")
    finally:
        apiserver.resume()
        apiserver.require_proxy().heal()
        c.close()
        api.close()
    assert took < 3.0, f"the dead connection was noticed after {took:.2f} s"
    assert "PING" in (conn.closed or "")


@pytest.mark.skipif(netns_available() is not None, reason=str(netns_available()))
def test_s5_quiet_watch_behind_a_moved_virtual_ip(etcd_cluster: EtcdCluster) -> None:
    """One endpoint (a virtual IP) moved to another apiserver: the old flow goes silent while new
    connections work. The quiet watch must notice on its own connection and resume, losing nothing."""
    with KubeApiServer(etcd_cluster) as a, KubeApiServer(etcd_cluster, peer=a) as b:
        vip = VirtualIP(6443, ("127.0.0.1", a.port), "lo").install()
        try:
            cfg = k8s.Configuration()
            cfg.host = f"https://{vip.endpoint}"
            cfg.ssl_ca_cert = str(a.certs.ca)
            cfg.tls_server_name = "127.0.0.1"  # the certificate names the loopback address
            cfg.api_key = {"authorization": f"Bearer {a.token}"}
            api = ApiClient(cfg)
            v1 = k8s.CoreV1Api(api)
            writer = k8s.CoreV1Api(ApiClient.from_kubeconfig(b.kubeconfig(direct=True)))
            created = writer.create_namespaced_config_map("default", {"metadata": {"name": "before"}})
            c = Collector(v1, resource_version=created.metadata.resource_version)
            try:
                (old,) = wait_until(lambda: connections(api), timeout=5, what="the watch's connection")
                vip.move_to(("127.0.0.1", b.port))
                started = time.monotonic()
                writer.create_namespaced_config_map("default", {"metadata": {"name": "moved"}})
                wait_until(lambda: c.arrived("moved") is not None, timeout=10,
                           what="the event through the moved virtual IP")
                took = (c.arrived("moved") or 0) - started
            finally:
                c.close()
                api.close()
        finally:
            vip.remove()
    assert old.closed is not None, "the stale connection was never closed"
    assert took < 3.0, f"the stale flow was left after {took:.2f} s"
    names = [e["object"]["metadata"]["name"] for _, e in c.events]
    assert names.count("moved") == 1


def test_readyz_probes_eject_a_paused_apiserver_and_readmit_it(two_apiservers: list[KubeApiServer]) -> None:
    a, b = two_apiservers
    # an idle client probes every 10 s by default; here the heartbeat is what finds the paused apiserver
    api = ApiClient.from_kubeconfig(a.kubeconfig(), endpoints=[b.url], policy=KubePolicy(idle_probe_interval=0.5))
    try:
        assert not api._servers.registration, "no request yet: no probes (a client may only deserialize)"  # type: ignore[union-attr]
        k8s.CoreV1Api(api).list_namespace()  # probes start with the first request; idle from here on
        wait_until(lambda: set(api.endpoint_states().values()) == {"healthy"}, timeout=5, what="all healthy")
        a.pause()
        started = time.monotonic()
        try:
            wait_until(lambda: api.endpoint_states()[a.url] == "ejected", timeout=6, what="ejection")
            took = time.monotonic() - started
            snap = metrics.snapshot()  # the same state, for users without Prometheus
            assert snap["states"][a.url] == "ejected" and snap["events"]["ejections"][a.url] >= 1
            assert api.active_endpoint == a.url  # no call yet: the choice moves on the next call
            k8s.CoreV1Api(api).list_namespace(_request_timeout=3)
            assert api.active_endpoint == b.url
        finally:
            a.resume()
        wait_until(lambda: api.endpoint_states()[a.url] == "healthy", timeout=10, what="re-admission")
    finally:
        api.close()
    assert took < 3.0, f"/readyz probes took {took:.2f} s to eject a paused apiserver"


@pytest.fixture
def throttled(etcd_cluster: EtcdCluster) -> Iterator[KubeApiServer]:
    # a small server-wide concurrency, so a priority level with 1 share of ~246 gets a single seat
    with KubeApiServer(etcd_cluster, extra_args=("--max-requests-inflight=20",
                                                 "--max-mutating-requests-inflight=10")) as a:
        admin = ApiClient.from_kubeconfig(a.kubeconfig())
        rbac = k8s.RbacAuthorizationV1Api(admin)  # (no controller-manager here: "view" is never aggregated)
        rbac.create_cluster_role({"metadata": {"name": "configmap-reader"}, "rules": [
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]}]})
        rbac.create_cluster_role_binding({
            "metadata": {"name": "limited-view"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "configmap-reader"},
            "subjects": [{"kind": "User", "name": "limited", "apiGroup": "rbac.authorization.k8s.io"}]})
        fc = k8s.FlowcontrolApiserverV1Api(admin)
        fc.create_priority_level_configuration({
            "metadata": {"name": "tiny"},
            "spec": {"type": "Limited", "limited": {"nominalConcurrencyShares": 1, "lendablePercent": 0,
                                                    "borrowingLimitPercent": 0,
                                                    "limitResponse": {"type": "Reject"}}}})
        fc.create_flow_schema({
            "metadata": {"name": "tiny"},
            "spec": {"priorityLevelConfiguration": {"name": "tiny"}, "matchingPrecedence": 100,
                     "rules": [{"subjects": [{"kind": "User", "user": {"name": "limited"}}],
                                "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"],
                                                   "namespaces": ["*"], "clusterScope": True}]}]}})
        # LISTs big enough (~300 objects, ~0.6 MB) to overlap on the one seat, so throttling is certain
        v1 = k8s.CoreV1Api(admin)
        for i in range(300):
            v1.create_namespaced_config_map("default", {"metadata": {"name": f"bulk-{i}"}, "data": {"x": "y" * 2000}})
        admin.close()
        yield a


def hammer(v1: k8s.CoreV1Api, threads: int = 12, calls: int = 6) -> tuple[int, list[BaseException]]:
    """Concurrent LISTs of ~0.6 MB, read as bytes: decoding them into models would serialise the
    threads on the GIL, and the requests would rarely meet at the server."""
    ok, errors, lock = [0], [], threading.Lock()

    def run() -> None:
        for _ in range(calls):
            try:
                resp = v1.list_namespaced_config_map("default", _preload_content=False)
                assert b'"ConfigMapList"' in resp.data
                with lock:
                    ok[0] += 1
            except BaseException as e:  # counted
                with lock:
                    errors.append(e)

    ts = [threading.Thread(target=run) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    return ok[0], errors


def test_real_429s_from_priority_and_fairness_are_retried_after_retry_after(
        throttled: KubeApiServer, caplog: pytest.LogCaptureFixture) -> None:
    # the plain official client meets real 429s under this load (a few rounds at most: it is a race) …
    plain = k8s.CoreV1Api(k8s.ApiClient(_limited_configuration(throttled)))
    plain_errors: list[BaseException] = []
    for _ in range(5):
        plain_errors += hammer(plain)[1]
        if any(getattr(e, "status", None) == 429 for e in plain_errors):
            break
    statuses = {getattr(e, "status", None) for e in plain_errors}
    assert 429 in statuses, f"no 429 from the throttled apiserver in 5 rounds: {plain_errors[:3]}"
    assert statuses == {429}, plain_errors[:3]
    assert all(e.headers.get("Retry-After") for e in plain_errors if isinstance(e, ApiException))
    # … ours rides them out, every call succeeding, waiting what the server asked for
    caplog.set_level(logging.INFO, logger="resilient_etcd.kube")
    api = ApiClient.from_kubeconfig(throttled.kubeconfig(user="limited"), policy=KubePolicy(probe_interval=0))
    waits: list[logging.LogRecord] = []
    for _ in range(5):
        ok, errors = hammer(k8s.CoreV1Api(api), threads=8, calls=4)
        assert not errors, errors[:3]
        assert ok == 8 * 4
        waits = [r for r in caplog.records if getattr(r, "event", None) == "retry_wait" and r.status == 429]
        if waits:
            break
    api.close()
    assert waits, "no 429 reached our client in 5 rounds"
    for r in waits:  # the server's Retry-After (APF varies it) decided every wait, within the call's deadline
        assert r.retry_after is not None and r.retry_after >= 1
        assert r.wait == pytest.approx(min(r.retry_after, 10.0), abs=0.01) or r.wait < r.retry_after


def _limited_configuration(api: KubeApiServer) -> k8s.Configuration:
    cfg = k8s.Configuration()
    cfg.host = api.url
    cfg.ssl_ca_cert = str(api.certs.ca)
    cfg.api_key = {"authorization": f"Bearer {api.limited_token}"}
    return cfg


def test_close_leaves_no_thread_or_socket(apiserver: KubeApiServer) -> None:
    def ours() -> list[str]:
        return [t.name for t in threading.enumerate() if t.name.startswith(("h2 ", "readyz "))]

    before = set(ours())
    api = ApiClient.from_kubeconfig(apiserver.kubeconfig(), policy=KubePolicy(probe_interval=0.05))
    k8s.CoreV1Api(api).list_namespace()
    (conn,) = connections(api)
    assert set(ours()) - before
    api.close()
    assert conn.closed is not None
    wait_until(lambda: set(ours()) <= before, timeout=5, what="the client's threads to end")
    # a probe or call racing close() cannot dial a connection that would outlive it
    assert api._h2 is not None
    with pytest.raises(ProtocolError, match="closed"):
        api._h2.request("GET", apiserver.url + "/readyz")
    assert not connections(api)


def test_a_watch_woken_by_a_dead_connection_resumes_on_the_other_apiserver(
        two_apiservers: list[KubeApiServer]) -> None:
    """Probes off: only the PING check notices. The apiserver must be ejected *before* the watch
    wakes, or the watch re-opens on the dead one and pays a connect timeout first."""
    a, b = two_apiservers
    api = ApiClient.from_kubeconfig(a.kubeconfig(), endpoints=[b.url], policy=KubePolicy(probe_interval=0))
    writer = k8s.CoreV1Api(ApiClient.from_kubeconfig(b.kubeconfig(direct=True)))
    c = Collector(k8s.CoreV1Api(api))
    try:
        wait_until(lambda: connections(api), timeout=5, what="the watch's connection")
        a.require_proxy().blackhole()
        started = time.monotonic()
        writer.create_namespaced_config_map("default", {"metadata": {"name": "via-b"}})
        wait_until(lambda: c.arrived("via-b") is not None, timeout=10, what="the event through b")
        took = (c.arrived("via-b") or 0) - started
    finally:
        a.require_proxy().heal()
        c.close()
    assert took < 3.0, f"{took:.2f} s: the watch went back to the dead apiserver first"
