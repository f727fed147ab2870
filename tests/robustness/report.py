"""Turn robustness summaries into a plot and a markdown table (``make robustness`` runs this).

    python -m tests.robustness.report robustness-results docs/robustness-run.png

Reads every ``summary-<seed>.json`` in the directory; prints the markdown table; draws operations
per second and the faults injected (one row per fault kind) over time for each seed.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any


def load(results: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(results.glob("summary-*.json"))]


def table(summaries: list[dict[str, Any]]) -> str:
    lines = ["| seed | operations (unknown) | etcd events | watch deliveries | leases (lost) | lock / leader holds "
             "| faults injected | violations | porcupine |",
             "|---|---|---|---|---|---|---|---|---|"]
    for s in summaries:
        c = s["counts"]
        holds = " / ".join(str(v) for k, v in c.items() if k.startswith("holds of"))
        faults = sum(v for k, v in c.items() if k.startswith("fault ") and not k.endswith("not injected"))
        lines.append(f"| {s['seed']} | {c['operations']} ({c['unknown']}) | {c['etcd events']} | "
                     f"{c['watch deliveries']} | {c['leases']} ({c['leases lost']}) | {holds} | {faults} | "
                     f"{len(s['violations'])} | {s['porcupine']} |")
    kinds: Counter[str] = Counter()
    for s in summaries:
        for f in s["faults"]:
            if "not injected" not in f["note"]:
                kinds[f["kind"]] += 1
    lines += ["", "Faults by kind: " + ", ".join(f"{k} {n}" for k, n in kinds.most_common())]
    return "\n".join(lines)


def plot(summaries: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(summaries), 1, figsize=(11, 3.2 * len(summaries)), squeeze=False)
    for ax, s in zip(axes[:, 0], summaries, strict=True):
        times = [t for t, _ in s["timeline"]]
        if times:
            width = max(1, int(max(times)) + 1)
            per_second = Counter(int(t) for t in times if t >= 0)
            ax.plot(range(width), [per_second.get(i, 0) for i in range(width)], lw=0.8, color="tab:blue")
        ax.set_ylabel("KV operations / s")
        ax.set_title(f"seed {s['seed']}: {len(s['violations'])} violations, porcupine: {s['porcupine']}", fontsize=9)
        kinds = sorted({f["kind"] for f in s["faults"]})
        top = ax.get_ylim()[1]
        band = top / max(1, len(kinds)) / 3
        for row, kind in enumerate(kinds):
            y = top + band * row
            for f in s["faults"]:
                if f["kind"] == kind and "not injected" not in f["note"]:
                    ax.broken_barh([(f["at"], max(f["hold"], 0.3))], (y, band * 0.8), color="tab:red", alpha=0.6)
            ax.text(0, y, kind, fontsize=6, va="bottom")
        ax.set_ylim(0, top + band * len(kinds) + band)
        ax.set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main(argv: list[str]) -> None:
    results, image = Path(argv[0]), Path(argv[1])
    summaries = load(results)
    if not summaries:
        raise SystemExit(f"no summary-*.json in {results}")
    print(table(summaries))
    plot(summaries, image)
    print(f"\nplot: {image}")


if __name__ == "__main__":
    main(sys.argv[1:])
