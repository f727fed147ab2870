"""S7-all: every path slow (toxiproxy ``bandwidth`` on every member / on the API server). Large answers
must complete as they do for raw stubs and the official client, with no ejection; a path that dies in
the middle of one is still noticed."""

from __future__ import annotations

import functools
import io
import threading
import time
from collections.abc import Callable
from typing import IO, Any, cast

import grpc

import resilient_etcd as etcd3
from resilient_etcd._proto import rpc_pb2, rpc_pb2_grpc
from resilient_etcd.etcd.models import prefix_range_end
from resilient_etcd.testing import EtcdCluster

from .scenarios import Trial

VALUE = b"x" * 65536
_RAW_OPTIONS = [("grpc.use_local_subchannel_pool", 1), ("grpc.max_receive_message_length", -1)]


def _timed(fn: Callable[[], Any]) -> tuple[float | None, str | None]:
    started = time.monotonic()
    try:
        fn()
    except Exception as e:  # a failure is a result here
        return None, f"{type(e).__name__}: {e}"[:200]
    return time.monotonic() - started, None


def _trial(what: str, client: str, seconds: float | None, error: str | None, ejections: int,
           **extra: Any) -> Trial:
    return Trial("S7-all", client, 0.0, seconds, 0 if error is None else 1, 0, ejections,
                 {"what": what, "seconds": seconds, "error": error, **extra})


def _slow(cluster: EtcdCluster, kbps: int) -> None:
    for m in cluster.members:
        m.require_proxy().bandwidth(kbps)


def etcd_trials(cluster: EtcdCluster, *, quick: bool) -> list[Trial]:
    """get_prefix of 1 MiB and 8 MiB at 256 KB/s on every member (ours vs one raw Range); the same
    1 MiB with the member in use blackholed half-way; snapshot() of a large database at 1 MB/s."""
    trials: list[Trial] = []
    sizes = [1] if quick else [1, 8]
    with etcd3.client(endpoints=cluster.endpoints, timeout=120) as c:
        for mib in sizes:
            prefix = f"/bench/slow{mib}/"
            for i in range(16 * mib):
                c.put(f"{prefix}{i:04d}", VALUE)
            _slow(cluster, 256)
            try:
                channel = grpc.insecure_channel(cluster.endpoints[1], options=_RAW_OPTIONS)
                kv = rpc_pb2_grpc.KVStub(channel)
                req = rpc_pb2.RangeRequest(key=prefix.encode(), range_end=prefix_range_end(prefix.encode()))
                raw, raw_err = _timed(functools.partial(kv.Range, req, timeout=120))
                channel.close()
                before = sum(h.ejections for h in c.endpoint_health())
                ours, err = _timed(functools.partial(c.get_prefix_response, prefix))
                ejected = sum(h.ejections for h in c.endpoint_health()) - before
            finally:
                cluster.heal_all()
            what = f"etcd get_prefix {mib} MiB, every member 256 KB/s"
            trials.append(_trial(what, "raw", raw, raw_err, 0))
            trials.append(_trial(what, "resilient", ours, err, ejected))
        trials.append(_mid_transfer(cluster, c))
        c.delete_prefix("/bench/slow")
    trials += _snapshot(cluster, mb=10 if quick else 50, kbps=1024)
    return trials


def _mid_transfer(cluster: EtcdCluster, c: etcd3.Etcd3Client) -> Trial:
    _slow(cluster, 256)
    result: list[tuple[float | None, str | None]] = []
    reader = threading.Thread(target=lambda: result.append(_timed(lambda: list(c.get_prefix("/bench/slow1/")))))
    try:
        reader.start()
        reader.join(1.5)  # a few pages are in when the path dies
        active = next(h.endpoint for h in c.endpoint_health() if h.active)
        victim = next(m for m in cluster.members if m.endpoint == active)
        victim.require_proxy().blackhole()
        reader.join(120)
    finally:
        cluster.heal_all()
    seconds, err = result[0] if result else (None, "still running")
    ejected = next(h.ejections for h in c.endpoint_health() if h.endpoint == victim.endpoint)
    return _trial("etcd get_prefix 1 MiB at 256 KB/s, member in use blackholed after 1.5 s", "resilient",
                  seconds, err, ejected)


def _snapshot(cluster: EtcdCluster, mb: int, kbps: int) -> list[Trial]:
    with etcd3.client(endpoints=cluster.direct_endpoints, timeout=60) as filler:
        i = 0
        while filler.status().db_size < mb * 1_000_000:
            for _ in range(64):
                filler.put(f"/bench/snap/{i:06d}", VALUE)
                i += 1
        size = filler.status().db_size
    trials = []
    _slow(cluster, kbps)
    try:
        channel = grpc.insecure_channel(cluster.endpoints[0], options=_RAW_OPTIONS)
        raw_sink = _Counter()

        def raw_snapshot() -> None:
            for r in rpc_pb2_grpc.MaintenanceStub(channel).Snapshot(rpc_pb2.SnapshotRequest(), timeout=600):
                raw_sink.write(r.blob)

        seconds, err = _timed(raw_snapshot)
        channel.close()
        what = f"etcd snapshot of {size / 1e6:.0f} MB at {kbps} KB/s"
        trials.append(_trial(what, "raw", seconds, err, 0, bytes=raw_sink.n))
        with etcd3.client(endpoints=cluster.endpoints, timeout=600) as c:
            sink = _Counter()
            seconds, err = _timed(lambda: c.snapshot(cast(IO[bytes], sink), timeout=600))
            ejected = sum(h.ejections for h in c.endpoint_health())
            trials.append(_trial(what, "resilient", seconds, err, ejected, bytes=sink.n))
    finally:
        cluster.heal_all()
    with etcd3.client(endpoints=cluster.direct_endpoints, timeout=60) as c:
        c.delete_prefix("/bench/snap/")
    return trials


class _Counter(io.RawIOBase):
    def __init__(self) -> None:
        self.n = 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self.n += len(b)
        return len(b)


def kube_trials(api: Any, *, quick: bool) -> list[Trial]:
    """A 1 MiB LIST (16 ConfigMaps x 64 KiB) through the API server's proxy at 256 KB/s, ours vs the
    official client; a watch delivering 64 KiB objects on the same slow path."""
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config

    from resilient_etcd.kube import ApiClient, watch

    ours = ApiClient.from_kubeconfig(api.kubeconfig())
    cfg = k8s.Configuration()
    k8s_config.load_kube_config(config_file=str(api.kubeconfig()), client_configuration=cfg)
    official = k8s.ApiClient(cfg)
    trials: list[Trial] = []
    try:
        v1, plain = k8s.CoreV1Api(ours), k8s.CoreV1Api(official)
        blob = "x" * 65536
        for i in range(16):
            body = k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name=f"bench-slow-{i:02d}", labels={"bench": "slow"}),
                                   data={"blob": blob})
            try:
                v1.create_namespaced_config_map("default", body)
            except k8s.ApiException as e:
                if e.status != 409:
                    raise
        what = "Kubernetes LIST 1 MiB, API server path 256 KB/s"
        api.require_proxy().bandwidth(256)
        try:
            for name, v in (("plain", plain), ("resilient", v1)):
                before = ours.health[api.url].ejections

                def list_all(v: Any = v) -> Any:
                    return v.list_namespaced_config_map("default", label_selector="bench=slow", _request_timeout=120)

                seconds, err = _timed(list_all)
                trials.append(_trial(what, name, seconds, err, ours.health[api.url].ejections - before))
            trials.append(_watch_keeps_up(v1, ours, api, watch, k8s, blob, updates=8 if quick else 20))
        finally:
            api.require_proxy().heal()
        for i in range(16):
            v1.delete_namespaced_config_map(f"bench-slow-{i:02d}", "default")
    finally:
        ours.close()
        official.close()
    return trials


def _watch_keeps_up(v1: Any, ours: Any, api: Any, watch: Any, k8s: Any, blob: str, updates: int) -> Trial:
    """Update one ConfigMap ``updates`` times with a fresh 64 KiB blob while a watch on it runs over the
    slow path; the watch must deliver every version (each is ~0.25 s of the link)."""
    name = "bench-slow-00"
    stop = threading.Event()
    seen: list[tuple[float, str]] = []
    ready = threading.Event()

    def run() -> None:
        ready.set()
        for ev in watch(v1.list_namespaced_config_map, "default", field_selector=f"metadata.name={name}",
                        stop=stop):
            seen.append((time.monotonic(), ev["object"]["metadata"]["resourceVersion"]))

    before = ours.health[api.url].ejections
    t = threading.Thread(target=run, daemon=True)
    t.start()
    ready.wait(10)
    deadline = time.monotonic() + 30
    while not seen and time.monotonic() < deadline:  # the initial ADDED arrived: the watch is on
        time.sleep(0.05)
    started = time.monotonic()
    versions = []
    for i in range(updates):
        cm = v1.read_namespaced_config_map(name, "default")
        cm.data = {"blob": (str(i) + blob)[:65536]}
        versions.append(v1.replace_namespaced_config_map(name, "default", cm).metadata.resource_version)
    wrote = time.monotonic() - started
    deadline = time.monotonic() + 120
    while versions[-1] not in {rv for _, rv in seen} and time.monotonic() < deadline:
        time.sleep(0.05)
    delivered = {rv for _, rv in seen}
    last = next((ts for ts, rv in seen if rv == versions[-1]), None)
    stop.set()
    lost = sum(1 for v in versions if v not in delivered)
    return _trial(f"Kubernetes watch of {updates} updates of a 64 KiB ConfigMap at 256 KB/s", "resilient",
                  None if last is None else last - started, None if lost == 0 else f"{lost} updates not delivered",
                  ours.health[api.url].ejections - before, writes_took=wrote, lost=lost)
