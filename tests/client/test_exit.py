"""A process that returns from main while our work runs in daemon threads exits 0.

CPython 3.10-3.13 aborts the process (SIGABRT, exit 134) when a daemon thread wakes up after
finalization has begun; a kube watch did exactly that. Each script below starts its work in a daemon
thread, lets it run with traffic, and returns from main.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from resilient_etcd.testing import EtcdCluster
from resilient_etcd.testing.kube import KubeApiServer

ROOT = Path(__file__).resolve().parent.parent.parent

_ETCD = """
import sys, threading, time
import resilient_etcd as etcd3
CLOSED = getattr(etcd3, "ClientClosedError", ())  # (the library before the fix had none)
c = etcd3.client(endpoints=sys.argv[1].split(","), timeout=5)
def write_once(i):
    c.put("/exit/k", str(i))
"""

_KUBE = """
import sys, threading, time
from kubernetes import client as k8s
import resilient_etcd
from resilient_etcd.kube import ApiClient, Informer, watch
CLOSED = getattr(resilient_etcd, "ClientClosedError", ())  # (the library before the fix had none)
v1 = k8s.CoreV1Api(ApiClient.from_kubeconfig(sys.argv[1]))
def write_once(i):
    v1.create_namespaced_config_map("default", {"metadata": {"name": f"exit-{time.time_ns()}"}})
"""

# the work in a daemon thread, a worker writing (in a daemon thread too) until its client is closed,
# and main returning while both run
_MAIN = """
started = threading.Event()
def work():
{work}
threading.Thread(target=work, daemon=True).start()
started.wait(10)
def write():
    i = 0
    while True:
        i += 1
        try:
            write_once(i)
        except CLOSED:
            threading.Event().wait()  # done: park (a daemon thread that runs on at exit is CPython's to abort)
        except Exception:
            pass
threading.Thread(target=write, daemon=True).start()
time.sleep(1.0)
print("main returns", flush=True)
"""

ETCD_WORK = {
    "watch": """
    events, cancel = c.watch_prefix("/exit/")
    started.set()
    for _ in events:
        pass
""",
    "watch callback": """
    c.add_watch_prefix_callback("/exit/", lambda r: None)
    started.set()
""",
    "lease keeper": """
    c.lease(2).keep_alive()
    started.set()
""",
    "lock": """
    c.lock("exit", ttl=2).acquire()
    started.set()
""",
}

KUBE_WORK = {
    "watch": """
    started.set()
    for _ in watch(v1.list_namespaced_config_map, "default"):
        pass
""",
    "informer": """
    Informer(v1.list_namespaced_config_map, "default").start()
    started.set()
""",
}


def _run(script: str, arg: str, runs: int = 3) -> None:
    for _ in range(runs):  # the abort was a race: a few runs each
        proc = subprocess.run([sys.executable, "-c", script, arg], cwd=ROOT, capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 0 and "main returns" in proc.stdout, (proc.returncode, proc.stderr[-2000:])


@pytest.mark.parametrize("work", sorted(ETCD_WORK))
def test_etcd_work_in_daemon_threads_exits_cleanly(work: str, etcd_cluster: EtcdCluster) -> None:
    script = _ETCD + _MAIN.format(work=textwrap.indent(textwrap.dedent(ETCD_WORK[work]), "    "))
    _run(script, ",".join(etcd_cluster.endpoints))


@pytest.mark.parametrize("work", sorted(KUBE_WORK))
def test_kube_work_in_daemon_threads_exits_cleanly(work: str, kube_apiserver: KubeApiServer) -> None:
    script = _KUBE + _MAIN.format(work=textwrap.indent(textwrap.dedent(KUBE_WORK[work]), "    "))
    _run(script, str(kube_apiserver.kubeconfig()))
