"""The scenarios of ../shared/BRIEF.md as repeatable trials on a real cluster."""

from __future__ import annotations

import itertools
import os
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc

import resilient_etcd as etcd3
from resilient_etcd._proto import rpc_pb2, rpc_pb2_grpc
from resilient_etcd.testing import EtcdCluster, EtcdMember, wait_until

from .baselines import ClientSpec
from .drivers import Driver

Fault = Callable[[EtcdMember], None]


@dataclass
class Trial:
    scenario: str
    client: str
    cap: float
    recover: float | None = None        # seconds from fault to the first success of a call started after it
    failed_calls: int = 0
    overruns: int = 0                   # calls that took longer than their deadline + 100 ms
    failovers: int = 0                  # endpoint changes seen by the client during the trial
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


FAULTS: dict[str, tuple[str, Fault, Fault]] = {
    "S1": ("kill -9 the member in use, start it again", lambda m: m.kill(), lambda m: m.start()),
    "S2": ("SIGSTOP the member in use", lambda m: m.pause(), lambda m: m.resume()),
    "S3": ("toxiproxy timeout toxic (blackhole) on the member in use", lambda m: m.require_proxy().blackhole(),
           lambda m: m.require_proxy().heal()),
    "S4": ("iptables DROP in the member's namespace", lambda m: m.drop(), lambda m: m.undrop()),
    "S8": ("toxiproxy reset_peer on the member in use (RST)", lambda m: m.require_proxy().reset_peer(),
           lambda m: m.require_proxy().heal()),
}


def _victim(cluster: EtcdCluster, driver: Driver) -> EtcdMember:
    ep = driver.current_endpoint() if driver.spec.multi_endpoint else None
    for m in cluster.members:
        if ep in (m.endpoint, m.direct_endpoint):
            return m
    return cluster.members[0]


def _count(calls: list[Any], timeout: float | None, before: str | None = None) -> tuple[int, int, int]:
    """Failed calls, deadline overruns, and endpoint changes (counting from ``before``)."""
    failed = sum(1 for c in calls if not c.ok)
    overruns = sum(1 for c in calls if timeout is not None and c.e - c.s > timeout + 0.1)
    eps = ([before] if before else []) + [c.ep for c in calls if c.ok and c.ep]
    failovers = sum(1 for a, b in itertools.pairwise(eps) if a != b)
    return failed, overruns, failovers


class Session:
    """One driver per client, restarted when a trial leaves it wedged."""

    def __init__(self, cluster: EtcdCluster, spec: ClientSpec) -> None:
        self.cluster, self.spec = cluster, spec
        self.timeout = spec.timeout
        self.driver: Driver | None = None

    def ready(self) -> Driver:
        if self.driver is not None and self.driver.warm(timeout=10):
            return self.driver
        if self.driver is not None:
            self.driver.stop()
        self.driver = Driver(self.spec, self.cluster.endpoints, self.timeout)
        if not self.driver.warm(timeout=60):
            raise RuntimeError(f"{self.spec.name} driver never warmed up")
        return self.driver

    def close(self) -> None:
        if self.driver is not None:
            self.driver.stop()


def recovery_trial(session: Session, scenario: str, cap: float, hold: float) -> Trial:
    """Fault the member in use for at least ``hold`` s; recovery = the longest time the client's loop
    went without a successful call while the fault held (from the fault to the first success, or
    between two successes — a round-robin client that stalls on its next turn is caught too)."""
    _, inject, heal = FAULTS[scenario]
    driver = session.ready()
    victim = _victim(session.cluster, driver)
    was_leader = session.cluster.leader() is victim
    if was_leader and len(session.cluster.running_members()) > 1:
        # the scenarios fault a follower (a frozen leader stalls every linearizable read until the next
        # election, whoever asks: that is S2-leader's measurement)
        session.cluster.move_leader(next(m for m in session.cluster.running_members() if m is not victim))
        wait_until(lambda: session.cluster.leader() is not victim, timeout=10, what="the leader moved off the victim")
        driver.warm()
    moved, was_leader = was_leader, session.cluster.leader() is victim  # (what the fault met)
    n0 = len(driver.calls)
    before = driver.current_endpoint()
    t0 = time.monotonic()
    inject(victim)
    try:
        first = driver.wait_for(lambda c: c.ok and c.s >= t0, cap)
        linger = t0 + hold - time.monotonic()
        if first is not None and linger > 0:
            time.sleep(linger)  # the fault's duration is part of the scenario
        t_end = time.monotonic()
    finally:
        heal(victim)
    session.cluster.wait_healthy()
    calls = driver.calls[n0:]
    failed, overruns, failovers = _count(calls, session.timeout, before)
    done = sorted(c.e for c in calls if c.ok and t0 <= c.e <= t_end)
    points = [t0, *done, t_end]
    stall = max(b - a for a, b in itertools.pairwise(points))
    capped = first is None or stall >= cap
    return Trial(scenario, session.spec.name, cap, None if capped else stall, failed, overruns, failovers,
                 {"victim": victim.name, "victim_was_leader": was_leader, "leader_moved_off": moved,
                  "first_success": None if first is None else first.e - t0, "held": t_end - t0})


def slow_trial(session: Session, scenario: str, hold: float) -> Trial:
    """S6: latency on the member in use. Correct behaviour: slower calls, no failover, no errors."""
    driver = session.ready()
    victim = _victim(session.cluster, driver)
    assert victim.proxy is not None
    n0 = len(driver.calls)
    before = driver.current_endpoint()
    victim.require_proxy().latency(300, jitter=100)
    try:
        time.sleep(hold)  # the fault's duration is the measurement window itself
    finally:
        victim.require_proxy().heal()
    calls = driver.calls[n0:]
    failed, overruns, failovers = _count(calls, session.timeout, before)
    lat = sorted(c.e - c.s for c in calls if c.ok)
    extra = {"calls": len(calls), "p50_latency": statistics.median(lat) if lat else None,
             "victim": victim.name}
    return Trial(scenario, session.spec.name, hold, None, failed, overruns, failovers, extra)


def slow_stream_trial(cluster: EtcdCluster, hold: float, kbps: int = 256) -> Trial:
    """S7: large get_prefix through a bandwidth-limited proxy: not killed while it makes progress."""
    value = b"x" * 8192
    with etcd3.client(endpoints=cluster.endpoints, timeout=60) as c:
        for i in range(128):  # 1 MiB
            c.put(f"/bench/big/{i:04d}", value)
        c.get("/bench/big/0000")
        victim = next(m for m in cluster.members if m.endpoint == next(h.endpoint for h in c.endpoint_health()
                                                                         if h.active))
        assert victim.proxy is not None
        victim.require_proxy().bandwidth(kbps)
        started = time.monotonic()
        done = 0
        errors: list[str] = []
        try:
            while time.monotonic() - started < hold:
                try:
                    done += len(list(c.get_prefix("/bench/big/")))
                except etcd3.Etcd3Exception as e:
                    errors.append(str(e))
        finally:
            victim.require_proxy().heal()
        health = c.endpoint_health()
        ejections = sum(h.ejections for h in health)
        c.delete_prefix("/bench/big/")
    return Trial("S7", "resilient", hold, None, len(errors), 0, ejections,
                 {"keys_read": done, "kbps": kbps, "errors": errors[:3]})


def restart_gap_trial(cluster: EtcdCluster, session: Session, cap: float) -> Trial:
    """Single member: kill -9, start again; gap between etcd serving and the client's first success."""
    driver = session.ready()
    member = cluster.members[0]
    served: list[float] = []

    member.kill()
    killed = time.monotonic()
    time.sleep(0.5)  # the outage lasts half a second: part of the scenario, not a synchronisation
    member.start(wait=False)
    poller = threading.Thread(target=lambda: served.append(member.first_served(timeout=cap)), daemon=True)
    poller.start()
    first = driver.wait_for(lambda c: c.ok and c.e > killed, cap)
    poller.join(cap)
    member.wait_ready()
    gap = None if first is None or not served else first.e - served[0]
    return Trial("S1-restart", session.spec.name, cap, gap, 0, 0, 0,
                 {"note": "recover = first success minus the moment etcd first served a request"})


def steady_throughput(cluster: EtcdCluster, seconds: float, rounds: int, threads: int = 1) -> dict[str, Any]:
    """Range calls in this process from ``threads`` threads: raw generated stubs vs resilient_etcd, in
    pairs of back-to-back rounds, the order alternating (ABBA), so the machine's drift (toxiproxy and
    three etcd members share its two cores) falls on both alike. The ratio is the median of the pairs'
    ratios. Rounds are short and many: with rounds of seconds, a shift of the machine between the two
    halves of a pair moved the median of nine pairs by ±3 % from run to run; with 60-120 short pairs, by
    about ±1 %.

    A round is a fixed time (``seconds``) in which every thread calls back to back from a common start;
    its throughput is the calls answered within it. (Rounds of a fixed number of calls per thread, as
    before, measured the unluckiest thread: with 16 threads on the GIL, how evenly the threads happened
    to be scheduled set the round's end — its last stretch ran with a few threads only — and a pair's
    ratio ranged 0.53 to 1.79.)"""
    endpoint = cluster.endpoints[0]
    opts = [("grpc.use_local_subchannel_pool", 1)]
    results: dict[str, list[float]] = {"raw": [], "resilient": []}
    lat: dict[str, list[float]] = {"raw": [], "resilient": []}
    with grpc.insecure_channel(endpoint, options=opts) as ch, \
            etcd3.client(endpoints=[endpoint], timeout=5) as client:
        stub = rpc_pb2_grpc.KVStub(ch)
        # a hand-rolled client builds its request per call too (bytes key, as etcd3 users pass str)
        ops: dict[str, Callable[[], object]] = {
            "raw": lambda: stub.Range(rpc_pb2.RangeRequest(key=b"/bench/key"), timeout=5),
            "resilient": lambda: client.get("/bench/key"),
        }
        for fn in ops.values():
            for _ in range(200):
                fn()

        def loop(fn: Callable[[], object], start: threading.Barrier, end: list[float], out: list[float],
                 answered: list[int], i: int) -> None:
            start.wait()
            until, n = end[0], 0
            while True:
                s = time.perf_counter()
                fn()
                e = time.perf_counter()
                out.append(e - s)
                if e >= until:  # (answered after the round: not counted)
                    break
                n += 1
            answered[i] = n

        pairs: list[float] = []
        for r in range(rounds):
            order = list(ops.items()) if r % 2 == 0 else list(reversed(ops.items()))
            for name, fn in order:
                outs: list[list[float]] = [[] for _ in range(threads)]
                answered = [0] * threads
                start, end = threading.Barrier(threads + 1), [0.0]
                workers = [threading.Thread(target=loop, args=(fn, start, end, outs[i], answered, i))
                           for i in range(threads)]
                for w in workers:
                    w.start()
                end[0] = time.perf_counter() + seconds
                start.wait()
                for w in workers:
                    w.join()
                results[name].append(sum(answered) / seconds)
                for o in outs:
                    lat[name].extend(o)
            pairs.append(results["resilient"][-1] / results["raw"][-1])
    summary = throughput_summary(results, lat, pairs)
    summary["round_seconds"] = seconds
    return summary


def throughput_summary(results: dict[str, list[float]], lat: dict[str, list[float]],
                       pairs: list[float]) -> dict[str, Any]:
    """Per client: the median of its rounds' ops/s, p50 and p99 call time; the median of the pairs' ratios."""
    out: dict[str, Any] = {}
    for name in results:
        ls = sorted(lat[name])
        out[name] = {"ops_per_s": statistics.median(results[name]), "rounds": results[name],
                     "p50_ms": ls[len(ls) // 2] * 1e3, "p99_ms": ls[int(len(ls) * 0.99)] * 1e3}
    out["ratio"] = statistics.median(pairs)
    out["pair_ratios"] = pairs
    return out


def watch_stall_trial(cluster: EtcdCluster) -> Trial:
    """A quiet watch whose member is blackholed: time until it sees a write made right after the fault."""
    with etcd3.client(endpoints=cluster.endpoints, timeout=5) as c:
        got: list[tuple[float, Any]] = []
        seen = threading.Event()

        def on_response(item: Any) -> None:
            if isinstance(item, BaseException) or item.events:
                got.append((time.monotonic(), item))
                seen.set()

        wid = c.add_watch_callback("/bench/quiet", on_response)
        active = next(h.endpoint for h in c.endpoint_health() if h.active)
        victim = next(m for m in cluster.members if m.endpoint == active)
        other = next(m for m in cluster.members if m is not victim)
        with etcd3.client(endpoints=[other.endpoint], timeout=5) as w2:
            t0 = time.monotonic()
            victim.require_proxy().blackhole()
            rev = w2.put("/bench/quiet", f"{t0}").header.revision
            ok = seen.wait(20)
        victim.require_proxy().heal()
        c.cancel_watch(wid)
        return stall_result("resilient", got, rev, t0, ok, victim.name)


def stall_result(client: str, got: list[tuple[float, Any]], rev: int, t0: float, ok: bool, victim: str) -> Trial:
    """A watch-stall trial from what the watch delivered (``(when, item)``): the write at ``rev`` seen, when."""
    events = [e for _, item in got if not isinstance(item, BaseException) for e in item.events]
    lost = 0 if any(e.mod_revision == rev for e in events) else 1
    dups = len(events) - len({e.mod_revision for e in events})
    return Trial("watch-stall", client, 20.0, (got[0][0] - t0) if ok else None, lost, 0, dups,
                 {"lost": lost, "duplicates": dups, "victim": victim})


def watch_many_trial(cluster: EtcdCluster, n: int = 1000) -> Trial:
    """``n`` watches on one client; the member in use is killed (and restarted); time until every watch
    has seen a write made right after the kill; memory per watch."""
    import gc
    import tracemalloc

    with etcd3.client(endpoints=cluster.endpoints, timeout=10) as c:
        seen = [0] * n
        all_seen = threading.Event()
        remaining = [n]
        lock = threading.Lock()

        def callback_for(i: int) -> Callable[[Any], None]:
            def cb(item: Any) -> None:
                if isinstance(item, BaseException) or not item.events:
                    return
                with lock:
                    seen[i] += len(item.events)
                    if seen[i] == len(item.events):
                        remaining[0] -= 1
                        if remaining[0] == 0:
                            all_seen.set()
            return cb

        c.get("/bench/many")
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        ids = [c.add_watch_callback("/bench/many", callback_for(i)) for i in range(n)]
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        per_watch = sum(s.size_diff for s in after.compare_to(before, "filename")) / n
        active = next(h.endpoint for h in c.endpoint_health() if h.active)
        victim = next(m for m in cluster.members if m.endpoint == active)
        other = next(m for m in cluster.members if m is not victim)
        if cluster.leader() is victim:  # a killed leader fails the write below until an election: S2-leader's topic
            cluster.move_leader(other)
            wait_until(lambda: cluster.leader() is not victim, timeout=10, what="the leader moved off the victim")
        with etcd3.client(endpoints=[other.endpoint], timeout=10) as w:
            t0 = time.monotonic()
            victim.kill()
            w.put("/bench/many", "after-restart")
            ok = all_seen.wait(30)
            took = time.monotonic() - t0
            victim.start()
        for wid in ids:
            c.cancel_watch(wid)
        lost = sum(1 for s in seen if s == 0)
        dups = sum(1 for s in seen if s > 1)
    return Trial("watch-1000", "resilient", 30.0, took if ok else None, lost, 0, dups,
                 {"watches": n, "bytes_per_watch": per_watch, "lost": lost, "duplicates": dups})


def kube_list_trial(apis: list[Any], client_name: str, fault: str, cap: float) -> Trial:
    """S12: LIST namespaces while the apiserver in use is blackholed or SIGSTOPped; time to an answer.

    ``plain`` is the official client as configured by a kubeconfig (no timeout); ``resilient`` is
    :class:`resilient_etcd.kube.ApiClient` with the second apiserver as an extra endpoint.
    """
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config

    from resilient_etcd.kube import ApiClient

    a = apis[0]
    if client_name == "resilient":
        api: Any = ApiClient.from_kubeconfig(a.kubeconfig(), endpoints=[x.url for x in apis[1:]])
    else:
        cfg = k8s.Configuration()
        k8s_config.load_kube_config(config_file=str(a.kubeconfig()), client_configuration=cfg)
        api = k8s.ApiClient(cfg)
    v1 = k8s.CoreV1Api(api)
    v1.list_namespace()
    done = threading.Event()
    result: list[float] = []

    def call() -> None:
        started = time.monotonic()
        try:
            v1.list_namespace()
            result.append(time.monotonic() - started)
        except Exception:  # the plain client may fail in any of urllib3's ways once the fault heals
            pass
        done.set()

    if fault == "blackhole":
        a.require_proxy().blackhole()
    else:
        a.pause()
    try:
        threading.Thread(target=call, daemon=True).start()
        done.wait(cap)
    finally:
        a.resume()
        a.require_proxy().heal()
    done.wait(5)
    return Trial(f"S12-{fault}", client_name, cap, result[0] if result and result[0] < cap else None, 0, 0, 0,
                 {"fault": fault})


def kube_watch_trial(apis: list[Any], client_name: str, fault: str, cap: float) -> Trial:
    """S12-watch: a *quiet* ConfigMap watch whose apiserver is blackholed or SIGSTOPped; a write made
    through the other apiserver right after the fault; time until the watch delivers it.

    ``plain`` is ``kubernetes.watch.Watch().stream`` on the official client from a kubeconfig;
    ``resilient`` is :func:`resilient_etcd.kube.watch` on an ``ApiClient`` with both apiservers.
    """
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config
    from kubernetes import watch as k8s_watch

    from resilient_etcd.kube import ApiClient, watch

    a, b = apis[0], apis[1]
    name = f"quiet-{client_name}-{fault}-{time.monotonic_ns()}"
    writer_api = ApiClient.from_kubeconfig(b.kubeconfig(direct=True))
    writer = k8s.CoreV1Api(writer_api)
    meta = writer.list_namespaced_config_map("default").metadata
    assert meta is not None
    rv = meta.resource_version
    arrived = threading.Event()
    stop = threading.Event()
    if client_name == "resilient":
        api: Any = ApiClient.from_kubeconfig(a.kubeconfig(), endpoints=[b.url])
    else:
        cfg = k8s.Configuration()
        k8s_config.load_kube_config(config_file=str(a.kubeconfig()), client_configuration=cfg)
        api = k8s.ApiClient(cfg)
    v1 = k8s.CoreV1Api(api)
    started_watch = threading.Event()

    def consume() -> None:
        try:
            if client_name == "resilient":
                stream: Any = watch(v1.list_namespaced_config_map, "default", resource_version=rv, stop=stop)
            else:
                stream = k8s_watch.Watch().stream(v1.list_namespaced_config_map, "default", resource_version=rv)
            started_watch.set()
            for ev in stream:
                obj = ev["object"]
                got = obj["metadata"]["name"] if isinstance(obj, dict) else obj.metadata.name
                if got == name:
                    arrived.set()
                    return
                if stop.is_set():
                    return
        except Exception:  # the plain watch may end in any of urllib3's ways once the fault heals
            pass

    threading.Thread(target=consume, daemon=True).start()
    started_watch.wait(10)
    stop.wait(1.0)  # the watch is established and quiet before the fault: that is the scenario
    if fault == "blackhole":
        a.require_proxy().blackhole()
    else:
        a.pause()
    t0 = time.monotonic()
    try:
        writer.create_namespaced_config_map("default", k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name=name)))
        ok = arrived.wait(cap)
        took = time.monotonic() - t0
    finally:
        a.resume()
        a.require_proxy().heal()
        stop.set()
    if client_name == "resilient":
        api.close()
    writer_api.close()
    return Trial(f"S12-watch-{fault}", client_name, cap, took if ok else None, 0, 0, 0, {"fault": fault})


# ---- idle cost (issue: one balancer) ----

_IDLE_CHILD = """
import sys, time
import resilient_etcd as etcd3
endpoints, n, seconds = sys.argv[1].split(","), int(sys.argv[2]), float(sys.argv[3])
clients = [etcd3.client(endpoints=endpoints, timeout=5) for _ in range(n)]
for c in clients:
    c.get("/idle")
print("ready", flush=True)
time.sleep(seconds)  # idle on purpose: the scenario is the passage of time
"""


def _cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (and its finished children) in seconds, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def idle_cost_trial(cluster: EtcdCluster, clients: int, processes: int, seconds: float = 30.0,
                    kind: str = "resilient") -> Trial:
    """``clients`` idle clients spread over ``processes`` processes (this one when 1): etcd CPU added
    (cores, over an idle cluster's own), the clients' CPU (cores), and RPCs per second per client
    (etcd's ``grpc_server_handled_total``)."""
    import subprocess
    import sys

    pids = [m.pid for m in cluster.members if m.pid]

    def etcd_cpu() -> float:
        return sum(_cpu_seconds(p) for p in pids)

    def handled() -> float:
        return sum(m.metric("grpc_server_handled_total") for m in cluster.members)

    time.sleep(2)  # let the previous scenario's traffic end (the measurement is of idleness)
    c0 = etcd_cpu()
    time.sleep(seconds)
    baseline = (etcd_cpu() - c0) / seconds
    children: list[subprocess.Popen[str]] = []
    made: list[Any] = []
    if processes == 1:
        for _ in range(clients):
            if kind == "raw":
                ch = grpc.insecure_channel(cluster.endpoints[0], options=[("grpc.use_local_subchannel_pool", 1)])
                rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=b"/idle"), timeout=5)
                made.append(ch)
            else:  # resilient (shared connections, the default) or resilient-unshared (each its own)
                health = etcd3.HealthPolicy(share_connections=kind != "resilient-unshared")
                c = etcd3.client(endpoints=cluster.endpoints, timeout=5, health=health)
                c.get("/idle")
                made.append(c)
        mine = [0]
    else:
        per = clients // processes
        for _ in range(processes):
            p = subprocess.Popen([sys.executable, "-c", _IDLE_CHILD, ",".join(cluster.endpoints), str(per),
                                  str(seconds + 30)], stdout=subprocess.PIPE, text=True)
            children.append(p)
        for p in children:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        mine = [p.pid for p in children]
    try:
        time.sleep(2)  # connections settle
        me = os.getpid()
        cpu0 = [_cpu_seconds(p or me) for p in mine]
        e0, r0 = etcd_cpu(), handled()
        time.sleep(seconds)
        etcd_added = (etcd_cpu() - e0) / seconds - baseline
        client_cpu = sum(_cpu_seconds(p or me) - c for p, c in zip(mine, cpu0, strict=True)) / seconds
        rpcs = (handled() - r0) / seconds / clients
    finally:
        for x in made:
            x.close()
        for p in children:
            p.kill()
            p.wait()
    name = f"idle-{clients}x{processes}"
    return Trial(name, kind, cap=seconds, recover=None,
                 extra={"etcd_cpu_added_cores": round(etcd_added, 4), "client_cpu_cores": round(client_cpu, 4),
                        "rpc_per_s_per_client": round(rpcs, 3), "etcd_idle_baseline_cores": round(baseline, 4),
                        "clients": clients, "processes": processes, "seconds": seconds})
