"""The set-up commands build what their target needs and no more."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_make_demo_builds_only_what_the_demo_needs() -> None:
    """`make demo` used to build kube-apiserver too: 326 s on a fresh machine, most of it that build."""
    plan = subprocess.run(["make", "-n", "demo"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "tools/build-servers.sh etcd etcdctl toxiproxy" in plan
    assert "kube-apiserver" not in plan
    demo = (ROOT / "benchmarks" / "demo.py").read_text()
    assert "kube" not in demo.lower(), "the demo would need the server it no longer builds"


def test_build_script_refuses_unknown_servers() -> None:
    proc = subprocess.run(["bash", "tools/build-servers.sh", "no-such-server"], cwd=ROOT, capture_output=True,
                          text=True)
    assert proc.returncode == 2 and "unknown server" in proc.stderr
