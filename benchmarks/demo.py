"""``make demo``: replay the incident — a member freezes, then blackholes — with a plain client and
with resilient_etcd side by side, on a real 3-member etcd cluster behind toxiproxy.

Each client runs the same controller-like loop: read its config key, write a status key, refresh a
lease. The plain client is what a hand-written or python-etcd3-style client does by default: one
endpoint, no deadline, no keepalive. Faults hit the member each client is using.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc

import resilient_etcd as etcd3
from resilient_etcd._proto import rpc_pb2, rpc_pb2_grpc
from resilient_etcd.testing import EtcdCluster, EtcdMember

TICK = 0.05


@dataclass
class Loop:
    name: str
    ok: list[float] = field(default_factory=list)          # completion times of successful ticks
    errors: list[tuple[float, str]] = field(default_factory=list)
    busy_since: float | None = None                        # start of the tick in progress
    endpoint: str = ""

    def stalled_for(self, now: float) -> float:
        return 0.0 if self.busy_since is None else now - self.busy_since


class PlainClient:
    """Raw generated stubs on one endpoint with no deadline (python-etcd3's defaults)."""

    def __init__(self, endpoint: str) -> None:
        self.channel = grpc.insecure_channel(endpoint)
        self.kv = rpc_pb2_grpc.KVStub(self.channel)
        self.lease = rpc_pb2_grpc.LeaseStub(self.channel)
        self.lease_id = self.lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=30)).ID
        self.endpoint = endpoint

    def tick(self, name: str) -> None:
        self.kv.Range(rpc_pb2.RangeRequest(key=b"/demo/config"))
        self.kv.Put(rpc_pb2.PutRequest(key=f"/demo/status/{name}".encode(), value=b"alive", lease=self.lease_id))
        stream = self.lease.LeaseKeepAlive(iter([rpc_pb2.LeaseKeepAliveRequest(ID=self.lease_id)]))
        next(stream)
        stream.cancel()

    def close(self) -> None:
        self.channel.close()  # cancels a call that is still hung


class ResilientClient:
    def __init__(self, endpoints: list[str]) -> None:
        self.client = etcd3.client(endpoints=endpoints, timeout=5)
        self.lease = self.client.lease(30)

    @property
    def endpoint(self) -> str:
        return next(h.endpoint for h in self.client.endpoint_health() if h.active)

    def tick(self, name: str) -> None:
        self.client.get("/demo/config")
        self.client.put(f"/demo/status/{name}", "alive", lease=self.lease)
        self.lease.refresh()

    def close(self) -> None:
        self.client.close()


def run_loop(loop: Loop, client: PlainClient | ResilientClient, stop: threading.Event) -> None:
    while not stop.is_set():
        loop.busy_since = time.monotonic()
        try:
            client.tick(loop.name)
            loop.ok.append(time.monotonic())
        except (grpc.RpcError, etcd3.Etcd3Exception) as e:
            if stop.is_set():
                break
            loop.errors.append((time.monotonic(), type(e).__name__))
        finally:
            loop.busy_since = None
        with contextlib.suppress(StopIteration):
            loop.endpoint = client.endpoint
        stop.wait(TICK)


def member_at(cluster: EtcdCluster, endpoint: str) -> EtcdMember:
    return next(m for m in cluster.members if m.endpoint == endpoint)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.demo", description=__doc__)
    p.add_argument("--fault-seconds", type=float, default=15.0, help="how long each fault lasts (default 15)")
    p.add_argument("--out", type=Path, default=Path("demo-output"))
    a = p.parse_args(argv)
    if a.fault_seconds <= 0:
        p.error("--fault-seconds must be positive")
    # resilient_etcd logs one line per endpoint state change: show them inline in the timeline
    logging.basicConfig(level=logging.WARNING, format="        | %(name)s: %(message)s")
    print("starting a 3-member etcd cluster behind toxiproxy …", flush=True)
    with EtcdCluster(size=3) as cluster:
        plain = PlainClient(cluster.endpoints[0])
        ours = ResilientClient(cluster.endpoints)
        loops = {"plain": Loop("plain"), "resilient": Loop("resilient")}
        stop = threading.Event()
        threads = [threading.Thread(target=run_loop, args=(loops["plain"], plain, stop), daemon=True),
                   threading.Thread(target=run_loop, args=(loops["resilient"], ours, stop), daemon=True)]
        for t in threads:
            t.start()
        t0 = time.monotonic()
        f = a.fault_seconds
        phases = [("normal", 0.0, 4.0),
                  ("S2 freeze (SIGSTOP)", 4.0, 4.0 + f),
                  ("recovering", 4.0 + f, 8.0 + f),
                  ("S3 blackhole (toxiproxy)", 8.0 + f, 8.0 + 2 * f),
                  ("healed", 8.0 + 2 * f, 12.0 + 2 * f)]
        windows: list[tuple[str, float, float]] = []
        victims: list[EtcdMember] = []
        print(f"\n{'t (s)':>6}  {'phase':<26} {'plain client':<34} {'resilient_etcd':<34}")
        print("-" * 104)
        try:
            for phase, _start, end in phases:
                now = time.monotonic() - t0
                if phase.startswith("S2"):
                    victims = list({member_at(cluster, loops[n].endpoint).name: member_at(cluster, loops[n].endpoint)
                                    for n in loops}.values())
                    for v in victims:
                        v.pause()
                elif phase.startswith("S3"):
                    victims = list({member_at(cluster, loops[n].endpoint).name: member_at(cluster, loops[n].endpoint)
                                    for n in loops}.values())
                    for v in victims:
                        v.require_proxy().blackhole()
                if phase.startswith("S"):
                    windows.append((phase, now, end))
                    print(f"{now:6.1f}  >>> {phase} on {', '.join(v.name for v in victims)}", flush=True)
                while time.monotonic() - t0 < end:
                    time.sleep(1.0 - ((time.monotonic() - t0) % 1.0))
                    now = time.monotonic()
                    cells = []
                    for n in ("plain", "resilient"):
                        lp = loops[n]
                        recent = sum(1 for x in lp.ok if x > now - 1.0)
                        stalled = lp.stalled_for(now)
                        state = (f"STALLED {stalled:5.1f} s" if stalled > 1.0 else f"{recent:3d} ticks/s")
                        cells.append(f"{state:<18} via {lp.endpoint.split(':')[-1]:<6}")
                    print(f"{now - t0:6.1f}  {phase:<26} {cells[0]:<34} {cells[1]:<34}", flush=True)
                if phase.startswith("S2"):
                    for v in victims:
                        v.resume()
                elif phase.startswith("S3"):
                    for v in victims:
                        v.require_proxy().heal()
        finally:
            stop.set()
            for v in victims:
                v.resume()
                if v.proxy:
                    v.proxy.heal()
            plain.close()
            ours.close()
            for t in threads:
                t.join(5)
    summary = summarize(loops, windows, t0)
    print("\n" + summary)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "demo.md").write_text(summary)
    plot(loops, windows, t0, a.out / "demo.png")
    print(f"wrote {a.out / 'demo.md'} and {a.out / 'demo.png'}")
    return 0


def summarize(loops: dict[str, Loop], windows: list[tuple[str, float, float]], t0: float) -> str:
    lines = ["| client | ticks ok | errors | longest gap between ticks | "
             + " | ".join(f"first tick after {w[0].split()[0]} starts" for w in windows) + " |",
             "|---" * (4 + len(windows)) + "|"]
    for name, lp in loops.items():
        times = [t0, *lp.ok]
        gap = max(b - a for a, b in itertools.pairwise(times)) if lp.ok else float("inf")
        firsts = []
        for _, start, end in windows:
            after = [x - t0 - start for x in lp.ok if x - t0 > start + 0.0]
            first = after[0] if after else None
            firsts.append("never" if first is None else (f"{first:.2f} s" if first < end - start
                                                         else f"{first:.1f} s (after the fault ended)"))
        lines.append(f"| {name} | {len(lp.ok)} | {len(lp.errors)} | {gap:.1f} s | " + " | ".join(firsts) + " |")
    return "\n".join(lines) + "\n"


def plot(loops: dict[str, Loop], windows: list[tuple[str, float, float]], t0: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 3.6))
    end = max((x for lp in loops.values() for x in lp.ok), default=t0) - t0
    for name, lp in loops.items():
        secs = [int(x - t0) for x in lp.ok]
        xs = list(range(int(end) + 1))
        width, color = (3.5, "tab:red") if name == "plain" else (1.8, "tab:green")
        ax.plot(xs, [secs.count(s) for s in xs], label=name, linewidth=width, color=color)
    for label, start, stop in windows:
        ax.axvspan(start, stop, color="red", alpha=0.1)
        ax.text(start + 0.3, ax.get_ylim()[1] * 0.9, label, fontsize=8)
    ax.set_xlabel("seconds")
    ax.set_ylabel("controller ticks per second")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
