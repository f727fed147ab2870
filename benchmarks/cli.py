"""``python -m benchmarks run [--scenario …] [--trials N] [--quick] --out DIR`` and ``… report``."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from resilient_etcd.testing import EtcdCluster, ToxiproxyServer, netns_available

from . import aio, incident, leader, report, slow
from .baselines import CLIENTS
from .scenarios import (
    FAULTS,
    Session,
    Trial,
    idle_cost_trial,
    kube_list_trial,
    kube_watch_trial,
    recovery_trial,
    restart_gap_trial,
    slow_stream_trial,
    slow_trial,
    steady_throughput,
    watch_many_trial,
    watch_stall_trial,
)

ALL = ["S1", "S2", "S3", "S4", "S8", "S6", "S7", "S1-restart", "steady", "watch-stall", "watch-1000", "S12", "idle",
       "S7-all", "S2-leader", "aio-steady", "aio-watch-stall", "aio-watch-10000", "S13"]
QUICK = ["S3", "S1-restart", "steady"]


def _machine() -> str:
    cpu = "unknown cpu"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    system = f"{platform.system()} {platform.release()}"
    return f"{system}, {os.cpu_count()} cores, {cpu}, Python {platform.python_version()}"


def run(args: argparse.Namespace) -> dict[str, Any]:
    scenarios = args.scenario or (QUICK if args.quick else ALL)
    clients = args.client or (["resilient", "raw"] if args.quick else list(CLIENTS))
    cap = args.cap or (5.0 if args.quick else 20.0)
    hold = 2.0 if args.quick else 3.0
    ours_trials = args.trials or (2 if args.quick else 20)
    base_trials = args.baseline_trials or (1 if args.quick else 3)
    trials: list[Trial] = []
    steady: dict[str, Any] | None = None
    steady16: dict[str, Any] | None = None
    steady64: dict[str, Any] | None = None
    started = time.monotonic()

    def log(msg: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {msg}", flush=True)

    def each_client(cluster: EtcdCluster, name: str, trial: Callable[[Session], Trial]) -> None:
        """Run ``trial`` for every client (20 trials for ours, fewer for baselines that may hang)."""
        for cname in clients:
            session = Session(cluster, CLIENTS[cname])
            try:
                for i in range(ours_trials if cname.startswith("resilient") else base_trials):
                    t = trial(session)
                    trials.append(t)
                    log(f"{name} {cname} #{i + 1}: recover={t.recover} failed={t.failed_calls} "
                        f"failovers={t.failovers}")
            finally:
                session.close()

    with ToxiproxyServer() as tp:
        with EtcdCluster(size=3, toxiproxy=tp) as cluster:
            etcd_version = cluster.members[0].status().version
            s6_hold = 3.0 if args.quick else 10.0
            for name in [s for s in scenarios if s in ("S1", "S2", "S3", "S8", "S6")]:

                def trial(session: Session, name: str = name) -> Trial:
                    if name == "S6":
                        return slow_trial(session, name, hold=s6_hold)
                    return recovery_trial(session, name, cap, hold)

                each_client(cluster, name, trial)
            if "S7" in scenarios:
                t = slow_stream_trial(cluster, hold=5.0 if args.quick else 15.0)
                trials.append(t)
                log(f"S7: keys read={t.extra['keys_read']} errors={t.failed_calls} ejections={t.failovers}")
            if "S2-leader" in scenarios:
                for prefer in (True, False):
                    for i in range(ours_trials if prefer else base_trials):
                        t = leader.leader_freeze_trial(cluster, prefer_leader=prefer, cap=cap)
                        trials.append(t)
                        log(f"S2-leader {t.client} #{i + 1}: {t.recover} failed={t.failed_calls}")
            if "S7-all" in scenarios:
                for t in slow.etcd_trials(cluster, quick=args.quick):
                    trials.append(t)
                    log(f"S7-all {t.client}: {t.extra}")
            if "watch-stall" in scenarios:
                for i in range(ours_trials):
                    t = watch_stall_trial(cluster)
                    trials.append(t)
                    log(f"watch-stall #{i + 1}: {t.recover} lost={t.extra['lost']} dup={t.extra['duplicates']}")
            if "watch-1000" in scenarios:
                for i in range(1 if args.quick else 3):
                    t = watch_many_trial(cluster, n=100 if args.quick else 1000)
                    trials.append(t)
                    log(f"watch-1000 #{i + 1}: {t.recover} lost={t.extra['lost']} "
                        f"bytes/watch={t.extra['bytes_per_watch']:.0f}")
            if "idle" in scenarios:
                for kind, procs in (("resilient", 1), ("resilient-unshared", 1), ("raw", 1), ("resilient", 10)):
                    t = idle_cost_trial(cluster, 100, procs, seconds=10.0 if args.quick else 30.0, kind=kind)
                    trials.append(t)
                    log(f"idle 100x{procs} {kind}: {t.extra}")
            if "steady" in scenarios:
                # many short pairs: a shift of the shared machine falls within one pair, not across them
                steady = steady_throughput(cluster, seconds=0.25, rounds=11 if args.quick else 61)
                log(f"steady: ratio {steady['ratio']:.3f}")
                steady16 = steady_throughput(cluster, seconds=1.0, rounds=11 if args.quick else 121, threads=16)
                log(f"steady, 16 threads: ratio {steady16['ratio']:.3f}")
            if "aio-steady" in scenarios:
                steady64 = aio.steady64(cluster, calls=1280, rounds=11 if args.quick else 101)
                log(f"asyncio steady, 64 tasks: ratio {steady64['ratio']:.3f}")
            if "aio-watch-stall" in scenarios:
                for i in range(ours_trials):
                    t = aio.watch_stall_trial(cluster)
                    trials.append(t)
                    log(f"watch-stall asyncio #{i + 1}: {t.recover} lost={t.extra['lost']} dup={t.extra['duplicates']}")
            if "aio-watch-10000" in scenarios:
                for i in range(1 if args.quick else 3):
                    t = aio.watch_many_trial(cluster, n=1000 if args.quick else 10_000)
                    trials.append(t)
                    log(f"{t.scenario} asyncio #{i + 1}: {t.recover} lost={t.extra['lost']} "
                        f"bytes/watch={t.extra['bytes_per_watch']:.0f}")
        if "S4" in scenarios:
            if netns_available() is not None:
                log(f"S4 skipped: {netns_available()}")
            else:
                with EtcdCluster(size=3, netns=True, proxied=False) as ncluster:
                    each_client(ncluster, "S4", lambda s: recovery_trial(s, "S4", cap, hold))
        if "S12" in scenarios:
            from resilient_etcd.testing.kube import KubeApiServer

            with EtcdCluster(size=1, toxiproxy=tp) as kube_etcd, \
                    KubeApiServer(kube_etcd, toxiproxy=tp) as api_a, \
                    KubeApiServer(kube_etcd, toxiproxy=tp, peer=api_a) as api_b:
                for fault in ("blackhole", "pause"):
                    for cname in ("resilient", "plain"):
                        for i in range(ours_trials if cname == "resilient" else base_trials):
                            t = kube_list_trial([api_a, api_b], cname, fault, cap)
                            trials.append(t)
                            log(f"S12-{fault} {cname} #{i + 1}: {t.recover}")
                            t = kube_watch_trial([api_a, api_b], cname, fault, cap)
                            trials.append(t)
                            log(f"S12-watch-{fault} {cname} #{i + 1}: {t.recover}")
        if "S7-all" in scenarios:
            from resilient_etcd.testing.kube import KubeApiServer

            with EtcdCluster(size=1, toxiproxy=tp) as kube_etcd, KubeApiServer(kube_etcd, toxiproxy=tp) as api:
                for t in slow.kube_trials(api, quick=args.quick):
                    trials.append(t)
                    log(f"S7-all {t.client}: {t.extra}")
        if "S13" in scenarios:
            if netns_available() is not None:
                log(f"S13 skipped: {netns_available()}")
            else:
                trials += incident.run(args.quick, log)
        if "S1-restart" in scenarios:
            with EtcdCluster(size=1, toxiproxy=tp, proxied=False) as single:
                each_client(single, "S1-restart", lambda s: restart_gap_trial(single, s, cap=max(cap, 15.0)))
    return {
        "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "duration_s": time.monotonic() - started,
        "mode": "quick" if args.quick else "full",
        "machine": _machine(),
        "etcd_version": etcd_version,
        "scenarios_requested": scenarios,
        "known_scenarios": sorted(FAULTS),
        "trials": [t.as_dict() for t in trials],
        "steady": steady,
        "steady16": steady16,
        "steady64": steady64,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run scenarios and write JSON, markdown and PNG")
    r.add_argument("--scenario", nargs="+", choices=ALL)
    r.add_argument("--client", nargs="+", choices=sorted(CLIENTS))
    r.add_argument("--trials", type=int, help="trials per scenario for resilient_etcd (default 20, quick 2)")
    r.add_argument("--baseline-trials", type=int, help="trials per scenario for baselines (default 3)")
    r.add_argument("--cap", type=float, help="seconds before a hung client is reported as '> cap'")
    r.add_argument("--quick", action="store_true", help="a smoke run: few scenarios, 2 clients, short caps")
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--docs", type=Path, help="also write the report here (e.g. docs/benchmarks.md)")
    r.add_argument("--merge", type=Path, help="add these trials to an earlier results JSON (same run set)")
    rep = sub.add_parser("report", help="regenerate markdown and PNG from a results JSON")
    rep.add_argument("--json", type=Path, required=True)
    rep.add_argument("--out", type=Path, required=True)
    rep.add_argument("--docs", type=Path)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.ERROR, format="%(name)s: %(message)s")  # endpoint state changes are expected
    if a.cmd == "run":
        if a.trials is not None and a.trials < 1:
            p.error("--trials must be ≥ 1")
        results = run(a)
        if a.merge is not None:
            earlier = json.loads(a.merge.read_text())
            replaced = {(t["scenario"], t["client"]) for t in results["trials"]}
            earlier["trials"] = [t for t in earlier["trials"] if (t["scenario"], t["client"]) not in replaced]
            earlier["trials"] += results["trials"]
            earlier["steady"] = results["steady"] or earlier.get("steady")
            earlier["steady16"] = results.get("steady16") or earlier.get("steady16")
            earlier["steady64"] = results.get("steady64") or earlier.get("steady64")
            earlier.setdefault("merged_runs", []).append(
                {k: results[k] for k in ("started", "duration_s", "scenarios_requested", "machine")})
            results = earlier
        a.out.mkdir(parents=True, exist_ok=True)
        path = a.out / "results.json"
        path.write_text(json.dumps(results, indent=1))
        report.write(report.load(path), a.out, a.docs)
        print(f"wrote {path}, {a.out / 'report.md'}, {a.out / 'benchmarks.png'}")
        return 0
    report.write(report.load(a.json), a.out, a.docs)
    return 0
