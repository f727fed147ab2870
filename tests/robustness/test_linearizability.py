"""Random faults under traffic through resilient_etcd; every history checked.

On a violation the test fails with the seed, the violations and the fault schedule; the histories
and porcupine's visualisation stay under ``robustness-results/`` (replay one seed:
``ROBUSTNESS_SEEDS=<seed> pytest tests/robustness -k random_faults``).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from resilient_etcd.testing import EtcdCluster

from .harness import ROOT, Result, check_linearizable, run

OUT = ROOT / "robustness-results"
# make test: 3 seeds x 60 s; make robustness: ROBUSTNESS_SEEDS / ROBUSTNESS_DURATION (seconds per seed)
SEEDS = tuple(int(s) for s in os.environ.get("ROBUSTNESS_SEEDS", "1,2,3").split(","))
DURATION = float(os.environ.get("ROBUSTNESS_DURATION", "60"))
# the seed picks the cluster: no auth; auth with JWTs that expire every 2 s; auth with simple tokens,
# which every member restart invalidates
CLUSTERS = ({"size": 3}, {"size": 3, "auth": True, "jwt_ttl": 2}, {"size": 3, "auth": True})


def _seeds() -> list[object]:
    return [pytest.param(s, marks=pytest.mark.etcd_cluster(**CLUSTERS[s % 3]), id=f"seed{s}") for s in SEEDS]


def test_the_checker_can_fail(tmp_path: Path) -> None:
    """A put applied twice (as a retry after an ambiguous failure would) is caught; the same history
    with that put's outcome unknown is fine."""
    twice = [
        {"client": 0, "key": "k", "op": "put", "value": "a", "expect": None, "call": 0, "return": 10},
        {"client": 1, "key": "k", "op": "put", "value": "b", "expect": None, "call": 20, "return": 30},
        {"client": 2, "key": "k", "op": "get", "value": "", "expect": None, "call": 40, "return": 50,
         "found": True, "got": "b"},
        {"client": 2, "key": "k", "op": "get", "value": "", "expect": None, "call": 60, "return": 70,
         "found": True, "got": "a"},
    ]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(twice))
    verdict = check_linearizable(bad, tmp_path / "bad.html")
    assert verdict.returncode == 1 and "NOT linearizable" in verdict.stdout, verdict.stdout + verdict.stderr
    assert (tmp_path / "bad.html").stat().st_size > 1000
    twice[0]["return"] = None
    ok = tmp_path / "ok.json"
    ok.write_text(json.dumps(twice))
    verdict = check_linearizable(ok, tmp_path / "ok.html")
    assert verdict.returncode == 0, verdict.stdout + verdict.stderr


def _summary(result: Result, verdict: str) -> dict[str, object]:
    return {"seed": result.seed, "counts": result.counts, "violations": result.violations,
            "fenced windows": result.windows, "porcupine": verdict,
            "faults": [asdict(f) for f in result.faults], "timeline": result.timeline}


@pytest.mark.parametrize("seed", _seeds())
def test_random_faults_break_no_promise(seed: int, etcd_cluster: EtcdCluster) -> None:
    result = run(etcd_cluster, seed, DURATION, OUT)
    verdict = check_linearizable(OUT / f"history-{seed}.json", OUT / f"history-{seed}.html")
    (OUT / f"summary-{seed}.json").write_text(json.dumps(_summary(result, verdict.stdout.strip()), indent=1))
    faults = "\n".join(str(f) for f in result.faults)
    counts = result.counts
    print(f"\nseed {seed}: {json.dumps(counts)}\n{verdict.stdout.strip()}")
    for w in result.windows:
        print(f"  fenced overlap: {w}")
    assert not result.violations, f"seed {seed}:\n" + "\n".join(result.violations) + f"\nfaults:\n{faults}"
    assert verdict.returncode == 0, (f"seed {seed}: {verdict.stdout.strip()} {verdict.stderr.strip()}\n"
                                     f"faults:\n{faults}\nsee {OUT}/history-{seed}.html")
    done = counts["operations"] - counts["unknown"]
    assert done > 200, f"too little traffic got through to check anything ({done} of {counts['operations']})"
    assert sum(1 for f in result.faults if "not injected" not in f.note) >= DURATION / 10, faults
    assert counts[f"holds of lock rob-{seed}"] > 3 and counts[f"holds of election rob-{seed}"] > 3, counts
    assert counts["leases"] > 5, counts


# ---- the checks can fail: known bugs planted behind private switches ----

@pytest.mark.etcd_cluster(size=3)
def test_a_planted_double_write_is_caught(etcd_cluster: EtcdCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write whose outcome is unknown is sent again elsewhere: etcd applied the first send after all
    (a put in flight to a member that is then killed, frozen or cut off). Porcupine or the unique-write
    check must notice within a few short seeds."""
    from resilient_etcd.transport import transport

    monkeypatch.setitem(transport._PLANTED, "retry_ambiguous_writes", True)
    seen = []
    for seed in (901, 902, 903, 904):
        result = run(etcd_cluster, seed, 30.0, OUT, second_process=False)
        verdict = check_linearizable(OUT / f"history-{seed}.json", OUT / f"history-{seed}.html")
        seen.append(verdict.stdout.strip())
        if verdict.returncode == 1 or any(v.startswith("unique writes") for v in result.violations):
            return
    pytest.fail(f"the planted double write went unnoticed in {len(seen)} runs: {seen}")


def _caught(cluster: EtcdCluster, seeds: tuple[int, ...], says: str, **kwargs: Any) -> None:
    """Short runs with a bug planted: one of them must report a violation containing ``says``."""
    for seed in seeds:
        result = run(cluster, seed, 20.0, OUT, second_process=False, **kwargs)
        if any(says in v for v in result.violations):
            return
    pytest.fail(f"the planted bug went unnoticed in {len(seeds)} runs (no violation saying {says!r})")


@pytest.mark.etcd_cluster(size=3)
def test_a_planted_late_watch_resume_is_caught(etcd_cluster: EtcdCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """A resumed watch starts one revision after the first it has not delivered: the lost events."""
    from resilient_etcd.etcd import watch

    monkeypatch.setitem(watch._PLANTED, "resume_one_late", True)
    _caught(etcd_cluster, (911, 912, 913), ": reliable:")


@pytest.mark.etcd_cluster(size=3)
def test_a_planted_silent_lease_loss_is_caught(etcd_cluster: EtcdCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """The keeper notices its lease ran out but tells nobody: a key vanishes with no on_lost."""
    from resilient_etcd.etcd import lease

    monkeypatch.setitem(lease._PLANTED, "skip_lost_signal", True)
    # client partitions longer than every lease's TTL (2-4 s): leases expire on a healthy cluster
    _caught(etcd_cluster, (921, 922, 923), "on_lost was never called", faults={"partition": 1}, hold=(4.5, 6.0))
