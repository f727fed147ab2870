"""The benchmark runner works end to end (a --quick run); it asserts outputs, never timings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.integration
def test_quick_run_writes_json_report_and_plot(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "run", "--quick", "--scenario", "S3", "S1-restart", "steady",
         "--client", "resilient", "raw", "--trials", "1", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    results = json.loads((tmp_path / "results.json").read_text())
    seen = {(t["scenario"], t["client"]) for t in results["trials"]}
    assert seen == {("S3", "resilient"), ("S3", "raw"), ("S1-restart", "resilient"), ("S1-restart", "raw")}
    assert results["steady"]["ratio"] > 0
    report = (tmp_path / "report.md").read_text()
    assert "| S3 | resilient |" in report and "Throughput ratio" in report
    assert (tmp_path / "benchmarks.png").stat().st_size > 1000


def test_report_regenerates_from_json(tmp_path: Path) -> None:
    from benchmarks import report

    data = {"started": "2026-01-01T00:00:00+00:00", "duration_s": 1.0, "mode": "quick", "machine": "m",
            "etcd_version": "3.6.16", "trials": [
                {"scenario": "S3", "client": "resilient", "cap": 5, "recover": 0.9, "failed_calls": 0,
                 "overruns": 0, "failovers": 1, "extra": {"victim_was_leader": False}},
                {"scenario": "S3", "client": "raw", "cap": 5, "recover": None, "failed_calls": 1,
                 "overruns": 0, "failovers": 0, "extra": {}},
            ], "steady": None}
    path = tmp_path / "r.json"
    path.write_text(json.dumps(data))
    report.write(report.load(path), tmp_path / "out")
    md = (tmp_path / "out" / "report.md").read_text()
    assert "| S3 | resilient | 1 | 900 ms | 900 ms | 900 ms |" in md
    assert "> 5 s" in md


def test_capped_trials_count_in_every_percentile_and_merged_runs_are_listed() -> None:
    """p50/p99 used to be computed over the successful trials only: two of three trials at the cap
    showed as a p50 of the one that recovered."""
    from benchmarks import report

    def trial(recover: float | None) -> dict[str, object]:
        return {"scenario": "S2", "client": "clientv3", "cap": 20, "recover": recover, "failed_calls": 0,
                "overruns": 0, "failovers": 0, "extra": {}}

    data = {"started": "2026-01-01T00:00:00+00:00", "duration_s": 100.0, "mode": "full", "machine": "m",
            "etcd_version": "3.6.16", "trials": [trial(2.98), trial(None), trial(None)], "steady": None,
            "merged_runs": [{"started": "2026-01-02T00:00:00+00:00", "duration_s": 50.0,
                             "scenarios_requested": ["S2"]}]}
    md = report.markdown(data)
    assert "| S2 | clientv3 | 3 | > 20 s | > 20 s | > 20 s |" in md
    assert "merged run: 2026-01-02T00:00:00+00:00 (50 s): S2" in md


def test_baselines_also_run_with_a_2s_timeout() -> None:
    from benchmarks.baselines import CLIENTS

    for name in ("raw", "etcd3", "pyetcd", "clientv3"):
        assert CLIENTS[name].timeout is None
        assert CLIENTS[f"{name}-2s"].timeout == 2.0 and CLIENTS[f"{name}-2s"].driver == name
