"""install_as_etcd3(): unmodified python-etcd3 code runs on resilient_etcd; refused when a real
python-etcd3 is imported already."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pytest

import resilient_etcd
from resilient_etcd.testing import EtcdCluster

APP = Path(__file__).with_name("legacy_app.py")
RUN = ("import runpy, sys, resilient_etcd; resilient_etcd.install_as_etcd3(); "
       "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")


@pytest.mark.etcd_cluster(size=1)
def test_unmodified_python_etcd3_code_runs(etcd_cluster: EtcdCluster) -> None:
    proc = subprocess.run([sys.executable, "-c", RUN, str(APP), etcd_cluster.endpoints[0]],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "legacy app ok" in proc.stdout


def test_without_install_etcd3_is_not_ours() -> None:
    proc = subprocess.run([sys.executable, "-c", "import etcd3"], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 or "resilient_etcd" not in proc.stdout  # python-etcd3 is not installed here


def test_refused_when_python_etcd3_is_already_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("etcd3")
    fake.__file__ = "/site-packages/etcd3/__init__.py"
    monkeypatch.setitem(sys.modules, "etcd3", fake)
    with pytest.raises(ImportError, match=r"python-etcd3 is already imported .* before anything imports etcd3"):
        resilient_etcd.install_as_etcd3()
    assert sys.modules["etcd3"] is fake


def test_install_is_idempotent_and_undone() -> None:
    resilient_etcd.install_as_etcd3()
    resilient_etcd.install_as_etcd3()
    try:
        import etcd3

        assert etcd3 is resilient_etcd
    finally:
        resilient_etcd.uninstall_as_etcd3()
    assert "etcd3" not in sys.modules and "etcd3.utils" not in sys.modules


@pytest.mark.etcd_cluster(size=1)
def test_master_multi_endpoint_client(etcd_cluster: EtcdCluster) -> None:
    """python-etcd3 master's ``MultiEndpointEtcd3Client(endpoints=[Endpoint(...)])``."""
    resilient_etcd.install_as_etcd3()
    try:
        import etcd3

        eps = []
        for address in etcd_cluster.endpoints:
            host, port = address.rsplit(":", 1)
            eps.append(etcd3.Endpoint(host, int(port), secure=False))
        client = etcd3.MultiEndpointEtcd3Client(endpoints=eps, timeout=5, failover=True)
        try:
            client.put("/compat/multi", "1")
            assert client.get("/compat/multi")[0] == b"1"
        finally:
            client.close()
        with pytest.raises(etcd3.exceptions.Etcd3Exception, match="call_credentials are not supported"):
            etcd3.MultiEndpointEtcd3Client(endpoints=eps, call_credentials=object())
    finally:
        resilient_etcd.uninstall_as_etcd3()
