"""Random apiserver and etcd faults under ConfigMap churn; ``resilient_etcd.kube.watch`` and
``Informer`` checked.

Two apiservers over the 3-member etcd cluster; our ApiClient knows both (through toxiproxy). A
writer that is not under test (the official client, straight to either apiserver, retried)
creates, updates and deletes labelled ConfigMaps and notes each acknowledged write's
resourceVersion. The checks: the watch's resourceVersions only go up and never repeat; every
acknowledged write reaches the watch unless a re-list (after ``410 Gone``) covered it; the watch's
state and the informer's store equal a final LIST.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import threading
import time
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from resilient_etcd.kube import ApiClient, Informer, watch
from resilient_etcd.testing import EtcdCluster, ToxiproxyServer, wait_until
from resilient_etcd.testing.kube import KubeApiServer

SEED = int(os.environ.get("ROBUSTNESS_KUBE_SEED", "7"))
DURATION = float(os.environ.get("ROBUSTNESS_KUBE_DURATION", "60"))
NS = "default"
SELECTOR = "robustness=kube"
FAULTS = ("pause", "blackhole", "reset_peer", "latency", "restart", "etcd_kill", "etcd_pause")


class Writer:
    """ConfigMap churn through the official client, straight to one apiserver or the other."""

    def __init__(self, apis: list[KubeApiServer], rng: random.Random) -> None:
        self.clients = [k8s.CoreV1Api(k8s.ApiClient(_config(a))) for a in apis]
        self.rng = rng
        self.acked: list[tuple[str, str, int]] = []  # (verb, name, resourceVersion)
        self.live: set[str] = set()
        self.n = 0

    def step(self) -> None:
        verb = "create" if len(self.live) < 4 or self.rng.random() < 0.4 else self.rng.choice(("update", "delete"))
        if verb == "create":
            self.n += 1
            name = f"rob{self.n}"
        else:
            name = self.rng.choice(sorted(self.live))
        for api in self.rng.sample(self.clients, len(self.clients)):
            obj: Any
            try:
                if verb == "create":
                    body: Any = {"metadata": {"name": name, "labels": {"robustness": "kube"}}, "data": {"n": "0"}}
                    obj = api.create_namespaced_config_map(NS, body, _request_timeout=2)
                elif verb == "update":
                    obj = api.patch_namespaced_config_map(name, NS, {"data": {"n": str(self.n)}}, _request_timeout=2)
                else:
                    obj = api.delete_namespaced_config_map(name, NS, _request_timeout=2)
            except ApiException as e:
                if e.status == 409:  # an earlier try of this create was applied after all
                    self.live.add(name)
                    return
                if e.status == 404:  # an earlier try of this delete was applied after all
                    self.live.discard(name)
                    return
                continue
            except Exception:  # a timeout or reset through the fault: the other apiserver
                continue
            # (a delete answers with a Status, which carries no resourceVersion: only its absence is checked)
            rv = int(getattr(getattr(obj, "metadata", None), "resource_version", None) or 0)
            self.acked.append((verb, name, rv))
            (self.live.discard if verb == "delete" else self.live.add)(name)
            return

    def close(self) -> None:
        for api in self.clients:
            api.api_client.close()

    def final_list(self) -> tuple[int, dict[str, int]]:
        for api in self.clients:
            with contextlib.suppress(Exception):
                got: Any = api.list_namespaced_config_map(NS, label_selector=SELECTOR, _preload_content=False,
                                                     _request_timeout=10)
                listing = json.loads(got.data)
                return int(listing["metadata"]["resourceVersion"]), {
                    o["metadata"]["name"]: int(o["metadata"]["resourceVersion"]) for o in listing["items"]}
        raise AssertionError("no apiserver answered the final LIST")


def _config(api: KubeApiServer) -> k8s.Configuration:
    cfg = k8s.Configuration()
    cfg.host = api.direct_url
    cfg.ssl_ca_cert = str(api.certs.ca)
    cfg.api_key = {"authorization": f"Bearer {api.token}"}
    cfg.retries = False
    return cfg


def _faults(apis: list[KubeApiServer], etcd: EtcdCluster, rng: random.Random, stop: threading.Event,
            log: list[str], t0: float) -> None:
    """One fault at a time (never both apiservers, never etcd quorum), held 0.5-3 s."""
    while not stop.wait(rng.uniform(0.5, 2.0)):
        kind = rng.choice(FAULTS)
        hold = rng.uniform(0.5, 3.0)
        api = rng.choice(apis)
        member = rng.choice(etcd.members)
        log.append(f"{time.monotonic() - t0:6.2f}s {kind} {'etcd ' + member.name if 'etcd' in kind else api.port}"
                   f" {hold:.2f}s")
        if kind == "pause":
            api.pause()
            stop.wait(hold)
            api.resume()
        elif kind == "restart":
            api.restart()  # waits for /readyz
        elif kind == "etcd_kill":
            member.kill()
            stop.wait(hold)
            member.start()
        elif kind == "etcd_pause":
            member.pause()
            stop.wait(hold)
            member.resume()
        else:
            proxy = api.require_proxy()
            if kind == "blackhole":
                proxy.blackhole()
            elif kind == "reset_peer":
                proxy.reset_peer(rng.randrange(0, 300))
            else:
                proxy.latency(rng.randrange(50, 500))
            stop.wait(hold)
            proxy.heal()


def check_watch(events: list[dict[str, Any]], acked: list[tuple[str, str, int]]) -> list[str]:
    """Ordered and unique resourceVersions; every acknowledged write delivered or covered by a re-list."""
    problems = []
    last = 0
    delivered: set[int] = set()
    relists: list[tuple[int, int]] = []  # (last rv before, the listing's rv)
    for e in events:
        if e["type"] == "RELIST":
            rv = int(e["object"]["metadata"]["resourceVersion"])
            relists.append((last, rv))
            if rv < last:
                problems.append(f"kube watch: re-list at {rv} after an event at {last}")
            last = rv
            continue
        rv = int(e["object"]["metadata"]["resourceVersion"])
        if rv <= last:
            problems.append(f"kube watch: {e['type']} {e['object']['metadata']['name']} at {rv} after {last}")
        last = max(last, rv)
        delivered.add(rv)
    for verb, name, rv in acked:
        if rv and rv not in delivered and not any(lo < rv <= hi for lo, hi in relists):
            problems.append(f"kube watch: the {verb} of {name} at {rv} was never delivered")
    return problems


def state(events: list[dict[str, Any]]) -> dict[str, int]:
    """The objects the watch's events leave behind: name -> resourceVersion."""
    out: dict[str, int] = {}
    for e in events:
        if e["type"] == "RELIST":
            out = {o["metadata"]["name"]: int(o["metadata"]["resourceVersion"]) for o in e["object"].get("items") or []}
        elif e["type"] == "DELETED":
            out.pop(e["object"]["metadata"]["name"], None)
        else:
            out[e["object"]["metadata"]["name"]] = int(e["object"]["metadata"]["resourceVersion"])
    return out


@pytest.mark.etcd_cluster(size=3)
def test_kube_watch_and_informer_through_random_faults(etcd_cluster: EtcdCluster,
                                                       toxiproxy_server: ToxiproxyServer) -> None:
    rng = random.Random(SEED)
    with KubeApiServer(etcd_cluster, toxiproxy=toxiproxy_server) as a, \
            KubeApiServer(etcd_cluster, toxiproxy=toxiproxy_server, peer=a) as b:
        api = ApiClient.from_kubeconfig(a.kubeconfig(), endpoints=[b.url])
        v1 = k8s.CoreV1Api(api)
        writer = Writer([a, b], random.Random(rng.random()))
        events: list[dict[str, Any]] = []
        stop_watch, stop_faults = threading.Event(), threading.Event()

        def follow() -> None:
            for ev in watch(v1.list_namespaced_config_map, NS, label_selector=SELECTOR, stop=stop_watch):
                events.append(ev)

        watcher = threading.Thread(target=follow, daemon=True)
        watcher.start()
        informer = Informer(v1.list_namespaced_config_map, NS, label_selector=SELECTOR).start()
        assert informer.wait_synced(30)
        log: list[str] = []
        t0 = time.monotonic()
        faulter = threading.Thread(target=_faults, args=([a, b], etcd_cluster, random.Random(rng.random()),
                                                         stop_faults, log, t0), daemon=True)
        faulter.start()
        try:
            while time.monotonic() - t0 < DURATION:
                writer.step()
        finally:
            stop_faults.set()
            faulter.join(120)
            etcd_cluster.heal_all()
            for s in (a, b):
                s.resume()
                s.require_proxy().heal()
        rv, final = writer.final_list()
        writer.close()

        def store() -> dict[str, int]:
            return {o["metadata"]["name"]: int(o["metadata"]["resourceVersion"]) for o in informer.items()}

        wait_until(lambda: state(events) == final and store() == final, timeout=60,
                   what="the watch and the informer to reach the final LIST",
                   on_timeout=lambda: f"watch {state(events)}\ninformer {store()}\nfinal {final}")
        stop_watch.set()
        informer.close()
        watcher.join(10)
        api.close()
    problems = check_watch(events, writer.acked)
    faults = "\n".join(log)
    print(f"\nkube seed {SEED}: {len(writer.acked)} acknowledged writes, {len(events)} watch events "
          f"({sum(1 for e in events if e['type'] == 'RELIST')} re-lists), informer re-lists {informer.relists}, "
          f"{len(log)} faults; final LIST at {rv} with {len(final)} objects")
    assert not problems, "\n".join(problems) + f"\nfaults:\n{faults}"
    assert len(writer.acked) > 50 and len(log) >= DURATION / 6, (len(writer.acked), faults)
    assert informer.error is None
