"""The incident on real apiservers (S13-resource): one resource's etcd connection of apiserver A goes silent
while A's /readyz and every other resource stay fine. A ConfigMap watch on A notices and moves to B, a
ConfigMap LIST answers through B, other resources stay on A — and the official client waits."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from resilient_etcd import metrics
from resilient_etcd.kube import ApiClient, Informer, KubePolicy
from resilient_etcd.kube.resources import resource_of
from resilient_etcd.testing import EtcdCluster, netns_available, wait_until
from resilient_etcd.testing.kube import KubeApiServer

from ._kube import Collector
from .test_doctor import doctor

pytestmark = [pytest.mark.skipif(netns_available() is not None, reason=str(netns_available())),
              pytest.mark.etcd_cluster(size=1, netns=True, proxied=False)]


@pytest.fixture
def apiservers(etcd_cluster: EtcdCluster) -> Iterator[tuple[KubeApiServer, KubeApiServer]]:
    with KubeApiServer(etcd_cluster) as a, KubeApiServer(etcd_cluster, peer=a) as b:
        yield a, b


def test_resource_of_paths() -> None:
    assert resource_of("/api/v1/namespaces/ns/configmaps/x") == ("configmaps", "/api/v1/namespaces/ns/configmaps")
    assert resource_of("/api/v1/namespaces/ns/configmaps?watch=true") == \
        ("configmaps", "/api/v1/namespaces/ns/configmaps")
    assert resource_of("/api/v1/namespaces") == ("namespaces", "/api/v1/namespaces")
    assert resource_of("/api/v1/namespaces/default") == ("namespaces", "/api/v1/namespaces")
    assert resource_of("/apis/apps/v1/namespaces/ns/deployments/d/status") == \
        ("deployments.apps", "/apis/apps/v1/namespaces/ns/deployments")
    assert resource_of("/apis/apps/v1/deployments") == ("deployments.apps", "/apis/apps/v1/deployments")
    assert resource_of("/readyz") is None and resource_of("/version") is None and resource_of("/apis") is None


def _silence_configmaps(a: KubeApiServer) -> object:
    writer = k8s.CoreV1Api(ApiClient.from_kubeconfig(a.kubeconfig(direct=True)))

    def traffic() -> None:
        for i in range(10):
            writer.create_namespaced_config_map("default", {"metadata": {"name": f"find-{i}"},
                                                            "data": {"v": "x" * 4000}})

    return a.silence_resource(traffic)


def test_a_silent_resource_moves_alone_to_the_other_apiserver(apiservers: tuple[KubeApiServer, KubeApiServer]) -> None:
    a, b = apiservers
    api = ApiClient.from_kubeconfig(a.kubeconfig(direct=True), endpoints=[b.direct_url])
    v1 = k8s.CoreV1Api(api)
    writer = k8s.CoreV1Api(ApiClient.from_kubeconfig(b.kubeconfig(direct=True)))
    moves = sum(metrics.snapshot()["events"].get("stale_watch_moves", {}).values())
    c = Collector(v1)
    added: dict[str, float] = {}
    informer = Informer(v1.list_namespaced_config_map, "default",
                        on_add=lambda o: added.setdefault(o["metadata"]["name"], time.monotonic()))
    informer.start()
    assert informer.wait_synced(10)
    wait_until(lambda: sum(r["watches"] for r in api.resources.status()) >= 2, timeout=10,
               what="the watches to start")
    flow = _silence_configmaps(a)
    try:
        assert a.readyz(), "the fault must leave A's /readyz green, as in the incident"
        time.sleep(0.3)  # the watch is quiet when the write comes: that is the scenario
        started = time.monotonic()
        writer.create_namespaced_config_map("default", {"metadata": {"name": "after"}})
        wait_until(lambda: c.arrived("after") is not None, timeout=10,
                   what="the write through B to reach the watch that was on A")
        delivered = (c.arrived("after") or 0) - started
        wait_until(lambda: "after" in added, timeout=10, what="the informer to follow")
        informed = added["after"] - started
        started = time.monotonic()
        names = {cm.metadata.name for cm in v1.list_namespaced_config_map("default").items}
        listed = time.monotonic() - started
        assert "after" in names
        # other resources stay on A: its health record is untouched, and namespaces list through it
        started = time.monotonic()
        v1.list_namespace()
        other = time.monotonic() - started
        states = api.endpoint_states()
        out = [(r["endpoint"], r["resource"]) for r in api.resources.status() if r["out"]]
        flow.restore()  # type: ignore[attr-defined]
        # re-admitted once a limit=1 LIST answers there again (A's etcd client recovers the connection)
        wait_until(lambda: not any(r["out"] for r in api.resources.status()), timeout=30,
                   what="ConfigMaps on A to be re-admitted")
    finally:
        flow.restore()  # type: ignore[attr-defined]
        c.close()
        informer.stop()
        api.close()
    print(f"S13-resource: watch delivered {delivered:.2f} s after the write (informer {informed:.2f} s), "
          f"LIST {listed:.2f} s, namespaces {other * 1000:.0f} ms")
    assert delivered < 3.5, f"the quiet watch took {delivered:.2f} s to leave A's silent ConfigMaps"
    assert informed < 3.5, f"the informer took {informed:.2f} s"
    assert listed < 3.5, f"a ConfigMap LIST took {listed:.2f} s"
    assert out == [(a.direct_url, "configmaps")], out
    assert states[a.direct_url] == "healthy", states
    assert other < 1.0
    assert sum(metrics.snapshot()["events"].get("stale_watch_moves", {}).values()) > moves
    events = [e for _, e in c.events if e["object"]["metadata"]["name"] == "after"]
    assert len(events) == 1, "the moved watch repeated or lost the event"


def test_the_official_client_waits_on_the_silent_resource(apiservers: tuple[KubeApiServer, KubeApiServer]) -> None:
    """What the official client does (the baseline the benchmark reports): a GET waits for A's own etcd
    client to give up on the silent connection."""
    a, _ = apiservers
    cfg = k8s.Configuration()
    k8s_config.load_kube_config(config_file=str(a.kubeconfig(direct=True)), client_configuration=cfg)
    v1 = k8s.CoreV1Api(k8s.ApiClient(cfg))
    flow = _silence_configmaps(a)
    try:
        started = time.monotonic()
        v1.list_namespace()
        fast = time.monotonic() - started
        started = time.monotonic()
        v1.list_namespaced_config_map("default")
        slow = time.monotonic() - started
    finally:
        flow.restore()  # type: ignore[attr-defined]
    print(f"official client: namespaces {fast * 1000:.0f} ms, ConfigMaps {slow:.2f} s")
    assert fast < 1.0 and slow > 5.0


def test_a_list_on_the_silent_resource_answers_through_the_other_apiserver(
        apiservers: tuple[KubeApiServer, KubeApiServer]) -> None:
    """No watch to notice first, no hedge (turned off): the LIST itself gets no answer within the read
    timeout (2.5 s), the resource is put out on A, and the retry answers through B."""
    a, b = apiservers
    api = ApiClient.from_kubeconfig(a.kubeconfig(direct=True), endpoints=[b.direct_url],
                                    policy=KubePolicy(hedge_delay_min=None))
    v1 = k8s.CoreV1Api(api)
    v1.list_namespace()
    flow = _silence_configmaps(a)
    try:
        started = time.monotonic()
        v1.list_namespaced_config_map("default")
        listed = time.monotonic() - started
        started = time.monotonic()
        v1.list_namespaced_config_map("default")
        again = time.monotonic() - started
        out = [(r["endpoint"], r["resource"]) for r in api.resources.status() if r["out"]]
        states = api.endpoint_states()
    finally:
        flow.restore()  # type: ignore[attr-defined]
        api.close()
    print(f"S13-resource LIST: {listed:.2f} s, then {again * 1000:.0f} ms")
    assert listed < 3.5 and again < 0.5, (listed, again)
    assert out == [(a.direct_url, "configmaps")], out
    assert states[a.direct_url] == "healthy", states


def _hedges() -> tuple[dict[str, int], dict[str, int]]:
    events = metrics.snapshot()["events"]
    return dict(events.get("hedges", {})), dict(events.get("hedges_won", {}))


def test_a_list_on_the_silent_resource_is_hedged_to_the_other_apiserver(
        apiservers: tuple[KubeApiServer, KubeApiServer]) -> None:
    """The read timeout is 30 s, so only the hedge can answer in time: the LIST on A has no response
    headers after its usual time (at least 0.25 s), a copy goes to B and wins, A's stream is reset, and
    requests move to B (A is probed, not ejected). Without the hedge the LIST waits until A's own etcd
    client gives up on the connection (~10 s, see the official client's test)."""
    a, b = apiservers
    api = ApiClient.from_kubeconfig(a.kubeconfig(direct=True), endpoints=[b.direct_url],
                                    policy=KubePolicy(read_idle_timeout=30))
    v1 = k8s.CoreV1Api(api)
    for _ in range(5):  # A's usual time
        v1.list_namespace()
    sent, won = _hedges()
    flow = _silence_configmaps(a)
    try:
        started = time.monotonic()
        names = {cm.metadata.name for cm in v1.list_namespaced_config_map("default").items}
        listed = time.monotonic() - started
        started = time.monotonic()
        v1.list_namespace()
        other = time.monotonic() - started
        states = api.endpoint_states()
        active = api.active_endpoint
        # (A's /readyz probe, asked for by the hedge, may be on that connection too)
        streams = [st.url for c in api._h2.connections(a.direct_url)  # type: ignore[union-attr]
                   for st in list(c._streams.values()) if "configmaps" in st.url]
    finally:
        flow.restore()  # type: ignore[attr-defined]
        api.close()
    sent2, won2 = _hedges()
    print(f"S13-resource LIST hedged: {listed:.2f} s, namespaces {other * 1000:.0f} ms")
    assert {f"find-{i}" for i in range(10)} <= names
    assert listed < 5, f"the hedged LIST took {listed:.2f} s (its read timeout is 30 s)"
    assert sent2.get(a.direct_url, 0) > sent.get(a.direct_url, 0), (sent, sent2)
    assert won2.get(b.direct_url, 0) > won.get(b.direct_url, 0), (won, won2)
    assert streams == [], f"A's stream of the LIST was not reset: {streams}"
    assert states[a.direct_url] == "healthy" and active == b.direct_url, (states, active)
    assert other < 1.0


def test_doctor_shows_the_one_broken_resource(apiservers: tuple[KubeApiServer, KubeApiServer]) -> None:
    a, b = apiservers
    args = ("--kubeconfig", str(a.kubeconfig(direct=True)), "--apiservers", b.direct_url, "--timeout", "1",
            "--resources", "configmaps,namespaces,deployments.apps")
    healthy = doctor(*args, "--json")
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    flow = _silence_configmaps(a)
    try:
        proc = doctor(*args, "--json")
        table = doctor(*args)
    finally:
        flow.restore()  # type: ignore[attr-defined]
    assert proc.returncode == 1, proc.stdout + proc.stderr
    out = json.loads(proc.stdout)
    assert all(r["healthy"] for r in out["kubernetes"]), "both /readyz stay green"
    broken = [(r["apiserver"], r["resource"]) for r in out["resources"] if not r["healthy"]]
    assert broken == [(a.direct_url, "configmaps")], out["resources"]
    assert "configmaps" in table.stdout and "NO" in table.stdout, table.stdout
