"""JSON results → markdown report and PNG plot. Numbers in docs/benchmarks.md come only from here."""

from __future__ import annotations

import json
import math
import random
import statistics
from pathlib import Path
from typing import Any

from .baselines import CLIENTS
from .scenarios import FAULTS

DESCRIPTIONS = {
    **{k: v[0] + " (a follower: a leader in use is moved off first; the leader's case is S2-leader)"
       for k, v in FAULTS.items()},
    "S1-restart": "single member: kill -9, start again; gap from etcd serving its first request to the "
                  "client's first success",
    "S6": "toxiproxy latency 300 ms ± 100 ms each way (round trip ≈ 600 ms) on the member in use (slow but alive)",
    "S7": "1 MiB get_prefix loop through a 256 KB/s bandwidth toxic on the member in use (slow stream)",
    "S2-leader": "SIGSTOP the raft leader under a stream of writes (a put every 10 ms); time from the freeze to "
                 "the first successful write started after it; `resilient-follower` = the same client with "
                 "`prefer_leader=False` on a follower",
    "S7-all": "every path slow: toxiproxy bandwidth on every etcd member / on the API server; large answers "
              "must complete as for raw stubs / the official client, with no ejection",
    "S12-blackhole": "Kubernetes: LIST namespaces while the apiserver in use is blackholed (toxiproxy); a second "
                     "apiserver on the same etcd; `plain` = the official client from a kubeconfig",
    "S12-pause": "Kubernetes: LIST namespaces while the apiserver in use is SIGSTOPped (as S12-blackhole)",
    "S12-watch-blackhole": "Kubernetes: a quiet ConfigMap watch whose apiserver is blackholed; time until it "
                           "delivers a write made through the other apiserver right after the fault; `plain` = "
                           "`kubernetes.watch.Watch().stream` from a kubeconfig",
    "S12-watch-pause": "Kubernetes: as S12-watch-blackhole, the apiserver SIGSTOPped",
    "watch-stall": "a quiet watch whose member is blackholed; time until it delivers a write made right "
                   "after the fault (through another member)",
    "idle": "100 idle clients (each made one call) in one process — sharing their connections (the default) and "
            "each with its own (`share_connections=False`) — 100 raw gRPC channels for comparison, and 100 idle "
            "clients in 10 processes: what they cost etcd and themselves",
    "watch-1000": "1,000 watches on one key, one client; the member in use is killed; time until every "
                  "watch has delivered a write made right after the kill; Python heap per watch",
    "watch-10000": "as watch-1000 with 10,000 watches on one asyncio client (`resilient-aio`)",
    "S13-resource": "Kubernetes, the incident: apiserver A's etcd connection for ConfigMaps DROPped (its /readyz and "
                    "other resources fine), a second apiserver B on the same etcd; recovery = a quiet ConfigMap "
                    "watch delivering a write made through B; also the time of a ConfigMap LIST and of a "
                    "namespaces LIST; `plain` = the official client from A's kubeconfig",
    "S13-override": "as S13-resource, A storing ConfigMaps through `--etcd-servers-overrides` via a proxy that is "
                    "blackholed (A's /readyz fails)",
}


def _pct(values: list[float], q: float) -> float:
    """The q-quantile (nearest rank); a capped trial is ``inf`` and sorts last."""
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def _recovery(t: dict[str, Any]) -> float:
    """A trial's recovery time; a trial still stalled at the cap is ``inf`` (shown as ``> cap``)."""
    return math.inf if t["recover"] is None else float(t["recover"])


def summarize(trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    keys = sorted({(t["scenario"], t["client"]) for t in trials},
                  key=lambda k: (k[0], list(CLIENTS).index(k[1]) if k[1] in CLIENTS else 99))
    for scenario, client in keys:
        ts = [t for t in trials if t["scenario"] == scenario and t["client"] == client]
        rec = [_recovery(t) for t in ts]
        capped = sum(1 for r in rec if math.isinf(r))
        cap = max(t["cap"] for t in ts)
        row: dict[str, Any] = {
            "scenario": scenario, "client": client, "trials": len(ts), "capped": capped, "cap": cap,
            "failed_calls": sum(t["failed_calls"] for t in ts), "overruns": sum(t["overruns"] for t in ts),
            "failovers": sum(t["failovers"] for t in ts),
        }
        row.update(p50=_pct(rec, 0.5), p99=_pct(rec, 0.99), max=max(rec))
        follower = [_recovery(t) for t in ts if t.get("extra", {}).get("victim_was_leader") is False]
        if follower and len(follower) < len(ts):
            row["p99_follower"] = _pct(follower, 0.99)
            row["n_follower"] = len(follower)
        extra = [t["extra"] for t in ts if t.get("extra")]
        if extra and "p50_latency" in extra[0]:
            row["p50_latency"] = statistics.median(e["p50_latency"] for e in extra if e.get("p50_latency"))
        rows.append(row)
    return rows


def _fmt(v: float | None, capped: bool, cap: float) -> str:
    """Seconds for a table cell: a capped trial (``inf``) counts in every percentile, as ``> cap``."""
    if v is None:
        return "-"
    if math.isinf(v):
        return f"> {cap:g} s"
    return f"{v * 1000:.0f} ms" if v < 1 else f"{v:.2f} s"


def _follower(r: dict[str, Any]) -> str:
    if "p99_follower" not in r:
        return "-"
    return f"{_fmt(r['p99_follower'], False, r['cap'])} (n={r['n_follower']})"


def markdown(results: dict[str, Any]) -> str:
    rows = summarize(results["trials"])
    out = [
        "# Benchmarks",
        "",
        "Generated by `python -m benchmarks report` from "
        f"`{results.get('json_path', 'results JSON')}`; do not edit the numbers by hand.",
        "",
        f"- run: {results['started']} ({results['duration_s']:.0f} s), mode `{results['mode']}`",
        *[f"- merged run: {m['started']} ({m['duration_s']:.0f} s): {', '.join(m.get('scenarios_requested', []))}"
          + (f" (on {m['machine']})" if m.get("machine") else "")
          for m in results.get("merged_runs", [])],
        f"- machine: {results['machine']}",
        f"- servers: etcd {results['etcd_version']}, 3 members on loopback, each behind toxiproxy "
        "(S4: members in network namespaces)",
        "- recovery = the longest time the client's loop (a get every 10 ms) went without a successful "
        "call while the fault held (at least 3 s): from the fault to the first success, or between two "
        "successes; a client still stalled when the cap runs out counts as the cap in every percentile and "
        "shows as `> cap`",
        "- reads are linearizable (python-etcd3's default), so when the faulty member was the raft "
        "leader (S1, S2) no client can succeed until the others elect a new one (election timeout "
        "1 s): the follower column shows the client's own share",
        "- clients: " + "; ".join(f"`{k}` = {v.label}" for k, v in CLIENTS.items()),
        "",
        "## Recovery after faults on the member in use",
        "",
        "| scenario | client | trials | p50 | p99 | max | p99 when the victim was a follower "
        "| failed calls | overran deadline | failovers |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["scenario"] in ("S6", "S7") or r["scenario"].startswith(("watch", "idle", "S7-", "S13")):
            continue
        capped = r["capped"] > 0
        out.append(
            f"| {r['scenario']} | {r['client']} | {r['trials']} | {_fmt(r.get('p50'), False, r['cap'])} "
            f"| {_fmt(r.get('p99'), capped, r['cap'])} | {_fmt(r.get('max'), capped, r['cap'])} "
            f"| {_follower(r)} | {r['failed_calls']} | {r['overruns']} | {r['failovers']} |"
        )
    out += ["", "## Slow but alive (no failover expected)", "",
            "| scenario | client | trials | failed calls | failovers / ejections | p50 call latency |",
            "|---|---|---|---|---|---|"]
    for r in rows:
        if r["scenario"] in ("S6", "S7"):
            lat = r.get("p50_latency")
            out.append(f"| {r['scenario']} | {r['client']} | {r['trials']} | {r['failed_calls']} "
                       f"| {r['failovers']} | {'-' if lat is None else f'{lat * 1000:.0f} ms'} |")
    watch_rows = [r for r in rows if r["scenario"].startswith("watch")]
    if watch_rows:
        out += ["", "## Watches", "", "| scenario | client | trials | p50 | p99 | max | events lost | duplicated | "
                "heap per watch |", "|---|---|---|---|---|---|---|---|---|"]
        for r in watch_rows:
            ts = [t for t in results["trials"] if t["scenario"] == r["scenario"] and t["client"] == r["client"]]
            lost = sum(t["extra"].get("lost", 0) for t in ts)
            dups = sum(t["extra"].get("duplicates", 0) for t in ts)
            per = [t["extra"]["bytes_per_watch"] for t in ts if "bytes_per_watch" in t["extra"]]
            capped = r["capped"] > 0
            out.append(f"| {r['scenario']} | {r['client']} | {r['trials']} | {_fmt(r.get('p50'), False, r['cap'])} "
                       f"| {_fmt(r.get('p99'), capped, r['cap'])} | {_fmt(r.get('max'), capped, r['cap'])} "
                       f"| {lost} | {dups} | {f'{statistics.median(per) / 1024:.1f} KiB' if per else '-'} |")
    slow = [t for t in results["trials"] if t["scenario"] == "S7-all"]
    if slow:
        out += ["", "## Slow everywhere (S7-all: nothing to fail over to)", "",
                "| what | client | seconds | ours / baseline | error | ejections |", "|---|---|---|---|---|---|"]
        base: dict[str, float] = {}
        for t in slow:
            e = t["extra"]
            sec = e.get("seconds")
            if t["client"] != "resilient" and sec:
                base[e["what"]] = sec
            ratio = f"{sec / base[e['what']]:.2f}" if t["client"] == "resilient" and sec and e["what"] in base else "-"
            out.append(f"| {e['what']} | {t['client']} | {'-' if sec is None else f'{sec:.2f}'} | {ratio} "
                       f"| {e.get('error') or '-'} | {t['failovers']} |")
    idle = [t for t in results["trials"] if t["scenario"].startswith("idle")]
    if idle:
        out += ["", "## Idle cost (clients that connected, then do nothing)", "",
                "| clients x processes | client | etcd CPU added (cores) | client CPU (cores) | RPC/s per client |",
                "|---|---|---|---|---|"]
        for t in idle:
            e = t["extra"]
            out.append(f"| {e['clients']} x {e['processes']} | {t['client']} | {e['etcd_cpu_added_cores']:.4f} "
                       f"| {e['client_cpu_cores']:.4f} | {e['rpc_per_s_per_client']:.3f} |")
        out += ["", "etcd CPU is the members' utime + stime from `/proc` over the window, minus the idle "
                "cluster's own over an equal window before; RPCs from etcd's `grpc_server_handled_total`."]
    for key, title, ratio_label in (
            ("steady", "Steady state, same process (sequential Range on one member)", ""),
            ("steady16", "Steady state, 16 threads (Range on one member)", " with 16 threads"),
            ("steady64", "Steady state, asyncio: 64 tasks on one loop (Range on one member; raw = grpc.aio stubs)",
             " (asyncio, 64 tasks)")):
        st = results.get(key)
        if st:
            out += ["", f"## {title}", "", "| client | ops/s (median of rounds) | p50 | p99 |", "|---|---|---|---|"]
            for name in ("raw", "resilient"):
                s = st[name]
                out.append(f"| {name} | {s['ops_per_s']:.0f} | {s['p50_ms']:.3f} ms | {s['p99_ms']:.3f} ms |")
            out += ["", f"Throughput ratio resilient / raw stubs{ratio_label}: **{st['ratio']:.3f}**"]
            if st.get("pair_ratios"):
                pairs = sorted(st["pair_ratios"])
                low, high = median_interval(pairs)
                rounds = f"rounds of {st['round_seconds']:g} s" if st.get("round_seconds") else "rounds"
                out[-1] += (f" (median of {len(pairs)} back-to-back pairs of {rounds}, order alternating; "
                            f"90 % bootstrap interval of that median {low:.3f} to {high:.3f}; "
                            f"pairs ranged {pairs[0]:.3f} to {pairs[-1]:.3f})")
    s13 = [t for t in results["trials"] if t["scenario"].startswith("S13")]
    if s13:
        out += ["", "## The Kubernetes incident (S13)", "",
                "| scenario | client | trials | watch delivered (p50 / max) | ConfigMap LIST (max) "
                "| namespaces LIST (max) |", "|---|---|---|---|---|---|"]
        for scenario, client in sorted({(t["scenario"], t["client"]) for t in s13}):
            ts = [t for t in s13 if (t["scenario"], t["client"]) == (scenario, client)]
            cap = ts[0]["cap"]
            got = sorted(_recovery(t) for t in ts)
            lists = [t["extra"]["list_seconds"] for t in ts]
            lst = math.inf if any(v is None for v in lists) else max(lists)
            other = max(t["extra"]["other_resource_seconds"] for t in ts)
            out.append(f"| {scenario} | {client} | {len(ts)} | {_fmt(_pct(got, 0.5), False, cap)} / "
                       f"{_fmt(got[-1], math.isinf(got[-1]), cap)} | {_fmt(lst, math.isinf(lst), cap)} "
                       f"| {_fmt(other, False, cap)} |")
        out += ["", "The LIST is made after the watch's write arrived (for ours, the quiet-watch check has put "
                "the resource out on A by then); a LIST with no watch to notice first answers after the read "
                "timeout, 2.5 s (`tests/client/test_kube_resources.py`)."]
    out += ["", "## Scenarios", ""]
    out += [f"- **{k}**: {v}" for k, v in DESCRIPTIONS.items()]
    out += ["", "![recovery p99](benchmarks.png)", "",
            "Reproduce: `make bench` (full, ~20 min) or `python -m benchmarks run --quick --out DIR`."]
    return "\n".join(out) + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in summarize(results["trials"])
            if r["scenario"] not in ("S6", "S7", "S7-all")
            and not r["scenario"].startswith(("idle", "watch-1", "S13"))]
    scenarios = sorted({r["scenario"] for r in rows})
    clients = [c for c in CLIENTS if any(r["client"] == c for r in rows)]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / max(1, len(clients))
    for i, client in enumerate(clients):
        xs, ys, colors = [], [], []
        for j, sc in enumerate(scenarios):
            r = next((r for r in rows if r["scenario"] == sc and r["client"] == client), None)
            if r is None:
                continue
            capped = math.isinf(r["p99"])
            xs.append(j + i * width)
            ys.append(r["cap"] if capped else r["p99"])
            colors.append("lightgray" if capped else None)
        bars = ax.bar(xs, ys, width, label=CLIENTS[client].label)
        for b, c in zip(bars, colors, strict=False):
            if c:
                b.set_hatch("//")
    ax.set_yscale("log")
    ax.set_xticks([j + width * (len(clients) - 1) / 2 for j in range(len(scenarios))], scenarios)
    ax.set_ylabel("p99 time to recover (s, log); hatched = still hung at the cap")
    ax.axhline(1.5, color="red", linestyle=":", linewidth=1)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(results: dict[str, Any], out_dir: Path, docs: Path | None = None) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.md").write_text(markdown(results))
    plot(results, out_dir / "benchmarks.png")
    if docs is not None:
        docs.parent.mkdir(parents=True, exist_ok=True)
        docs.write_text(markdown(results))
        plot(results, docs.with_suffix(".png"))


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    data["json_path"] = str(path)
    return data


def median_interval(values: list[float], level: float = 0.90, resamples: int = 2000) -> tuple[float, float]:
    """A bootstrap interval of the median of ``values`` (seeded: the same numbers give the same report).
    With one round's noise of ±10 % on this machine, it says how far the median itself may be off.

    >>> median_interval([1.0] * 9)
    (1.0, 1.0)
    """
    rng = random.Random(0)
    meds = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(resamples))
    cut = int(resamples * (1 - level) / 2)
    return meds[cut], meds[resamples - 1 - cut]
