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


def test_pytest_plugin_is_inert_without_the_testing_extra(tmp_path: Path) -> None:
    """The pytest11 entry point loads our plugin in every project that installs us; it imported the
    test bed, whose `cryptography` is not a core dependency, so pytest itself failed to start."""
    import os
    import sys

    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['cryptography'] = None  # not installed\n")
    (tmp_path / "test_unrelated.py").write_text("def test_plain():\n    assert True\n")
    (tmp_path / "test_uses_fixture.py").write_text("def test_cluster(etcd_member):\n    pass\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}

    def pytest(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)

    unrelated = pytest("test_unrelated.py")
    assert unrelated.returncode == 0 and "1 passed" in unrelated.stdout, unrelated.stdout + unrelated.stderr
    uses = pytest("test_uses_fixture.py")
    assert uses.returncode == 1 and "1 error" in uses.stdout, uses.stdout + uses.stderr  # that test, not the session
    assert "resilient-etcd[testing]" in uses.stdout
