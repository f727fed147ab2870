"""Random faults under KV traffic through resilient_etcd; porcupine checks every history.

On a violation the test fails with the seed, the fault schedule and porcupine's visualisation kept
under ``robustness-results/`` (replay one seed: ``pytest tests/robustness -k <seed>``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from resilient_etcd.testing import EtcdCluster

from .harness import check_linearizable, run

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "robustness-results"
# make test: 3 seeds x 45 s; make robustness: ROBUSTNESS_SEEDS / ROBUSTNESS_DURATION (seconds per seed)
SEEDS = tuple(int(s) for s in os.environ.get("ROBUSTNESS_SEEDS", "1,2,3").split(","))
DURATION = float(os.environ.get("ROBUSTNESS_DURATION", "45"))


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


@pytest.mark.parametrize("seed", SEEDS)
def test_random_faults_keep_kv_linearizable_and_watches_exact(seed: int, etcd_cluster: EtcdCluster) -> None:
    history, faults, watch_problems = run(etcd_cluster, seed, DURATION, OUT)
    ops = history.ops
    done = [o for o in ops if o.get("return") is not None]
    assert len(done) > 200, f"too little traffic got through to check anything ({len(done)} of {len(ops)})"
    assert len(faults) >= 5, faults
    assert not watch_problems, f"seed {seed}: the prefix watch broke etcd's watch properties: {watch_problems}"
    verdict = check_linearizable(OUT / f"history-{seed}.json", OUT / f"history-{seed}.html")
    assert verdict.returncode == 0, (f"seed {seed}: {verdict.stdout.strip()} {verdict.stderr.strip()}\n"
                                     f"faults:\n" + "\n".join(faults) + f"\nsee {OUT}/history-{seed}.html")
    print(f"seed {seed}: {len(ops)} operations ({len(ops) - len(done)} unknown), {len(faults)} faults: "
          f"{verdict.stdout.strip()}")


def test_a_planted_double_write_is_caught(etcd_cluster: EtcdCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the planted bug on — a write whose outcome is unknown is sent again elsewhere — the checker
    must find a history that is not linearizable within a few short seeds (etcd applied the first
    send after all: a put in flight to a member that is then killed, frozen or cut off)."""
    from resilient_etcd.transport import transport

    monkeypatch.setitem(transport._PLANTED, "retry_ambiguous_writes", True)
    verdicts = []
    for seed in (901, 902, 903, 904):
        run(etcd_cluster, seed, 30.0, OUT)  # (the watch's own checks are not this test's business)
        verdict = check_linearizable(OUT / f"history-{seed}.json", OUT / f"history-{seed}.html")
        verdicts.append(verdict.stdout.strip())
        if verdict.returncode == 1:
            return
    pytest.fail(f"the planted double write went unnoticed in {len(verdicts)} runs: {verdicts}")


def test_a_planted_late_watch_resume_is_caught(etcd_cluster: EtcdCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the planted bug on — a resumed watch starts one revision after the first it has not
    delivered — the watch checks report the lost event."""
    from resilient_etcd.etcd import watch

    monkeypatch.setitem(watch._PLANTED, "resume_one_late", True)
    for seed in (911, 912, 913):
        _, _, problems = run(etcd_cluster, seed, 20.0, OUT)
        if any(p.startswith("reliable:") for p in problems):
            return
    pytest.fail("the planted late resume went unnoticed in 3 runs")
