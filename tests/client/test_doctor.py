"""`python -m resilient_etcd doctor` on a real cluster: healthy → 0; a paused member → reported, exit 1."""

from __future__ import annotations

import json
import subprocess
import sys

from resilient_etcd.testing import EtcdCluster


def doctor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "resilient_etcd", "doctor", *args],
                          capture_output=True, text=True, timeout=60)


def test_healthy_cluster(etcd_cluster: EtcdCluster) -> None:
    proc = doctor("--endpoints", ",".join(etcd_cluster.endpoints), "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    reports = json.loads(proc.stdout)
    assert [r["healthy"] for r in reports] == [True, True, True]
    assert sum(r["is_leader"] for r in reports) == 1
    table = doctor("--endpoints", ",".join(etcd_cluster.endpoints))
    assert table.returncode == 0 and "endpoint" in table.stdout.splitlines()[0]


def test_paused_member_is_unhealthy(etcd_cluster: EtcdCluster) -> None:
    victim = etcd_cluster.members[1]
    victim.pause()
    try:
        proc = doctor("--endpoints", ",".join(etcd_cluster.endpoints), "--json", "--timeout", "1")
    finally:
        victim.resume()
    assert proc.returncode == 1, proc.stdout + proc.stderr
    reports = {r["endpoint"]: r for r in json.loads(proc.stdout)}
    assert reports[victim.endpoint]["healthy"] is False
    error = reports[victim.endpoint]["error"]
    assert "Deadline" in error or "ejected" in error, error


def test_bad_arguments_exit_2() -> None:
    assert doctor("--endpoints", "bad host:1").returncode == 2
    assert doctor("--endpoints", "a:1", "--timeout", "-1").returncode == 2
