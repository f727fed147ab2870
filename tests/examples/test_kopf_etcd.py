"""examples/kopf-etcd end to end: kopf (standalone) against a real kube-apiserver, its handlers
writing through resilient_etcd to a 3-member cluster whose member in use is blackholed mid-way (through
its proxy, which only the operator uses: the apiserver's own etcd connections stay healthy)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kubernetes import client as k8s

import resilient_etcd as etcd3
from resilient_etcd.kube import ApiClient
from resilient_etcd.testing import EtcdCluster, wait_until
from resilient_etcd.testing.kube import KubeApiServer

pytest.importorskip("kopf", reason="kopf is installed by the test extra")
OPERATOR = Path(__file__).resolve().parents[2] / "examples" / "kopf-etcd" / "operator.py"


def test_kopf_handlers_write_past_a_blackholed_member(etcd_cluster: EtcdCluster, tmp_path: Path) -> None:
    with KubeApiServer(etcd_cluster) as api:
        env = {**os.environ, "KUBECONFIG": str(api.kubeconfig(direct=True)),
               "ETCD_ENDPOINTS": ",".join(etcd_cluster.endpoints)}
        log_path = tmp_path / "kopf.log"
        with open(log_path, "w") as log:
            proc = subprocess.Popen([sys.executable, "-m", "kopf", "run", "--standalone", "-n", "default",
                                     str(OPERATOR)], env=env, stdout=log, stderr=subprocess.STDOUT)

        def kopf_log() -> str:
            return log_path.read_text()[-3000:]

        writer_api = ApiClient.from_kubeconfig(api.kubeconfig(direct=True))
        v1 = k8s.CoreV1Api(writer_api)
        checker = etcd3.client(endpoints=etcd_cluster.direct_endpoints, timeout=5)

        def mirrored() -> dict[str, dict[str, str]]:
            return {m.key.decode(): json.loads(v) for v, m in checker.get_prefix("/kopf-mirror/")}

        try:
            v1.create_namespaced_config_map("default", {"metadata": {"name": "a", "labels": {"mirror": "etcd"}},
                                                        "data": {"v": "1"}})
            v1.create_namespaced_config_map("default", {"metadata": {"name": "plain"}, "data": {"v": "x"}})
            wait_until(lambda: mirrored() == {"/kopf-mirror/default/a": {"v": "1"}}, timeout=30,
                       what="kopf to mirror the first ConfigMap", on_timeout=kopf_log)
            etcd_cluster.members[0].require_proxy().blackhole()  # the member the operator's client uses first
            started = time.monotonic()
            try:
                v1.patch_namespaced_config_map("a", "default", {"data": {"v": "2"}})
                v1.create_namespaced_config_map("default", {"metadata": {"name": "b", "labels": {"mirror": "etcd"}},
                                                            "data": {"v": "3"}})
                wait_until(lambda: mirrored() == {"/kopf-mirror/default/a": {"v": "2"},
                                                  "/kopf-mirror/default/b": {"v": "3"}},
                           timeout=20, what="the handlers to write past the blackholed member", on_timeout=kopf_log)
                took = time.monotonic() - started
            finally:
                etcd_cluster.members[0].require_proxy().heal()
            v1.delete_namespaced_config_map("a", "default")
            wait_until(lambda: "/kopf-mirror/default/a" not in mirrored(), timeout=20, what="the delete handler")
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            checker.close()
            writer_api.close()
    print(f"kopf-etcd: both changes mirrored {took:.2f} s after the member was blackholed")
    assert took < 10
