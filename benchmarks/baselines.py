"""The clients we compare with, each runnable as a driver process (see driver.py).

python-etcd3 0.12 does not import on protobuf >= 4 and etcd-sdk-python registers etcd's proto
names too, so each Python baseline lives in its own venv under the build cache, made on first use.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from resilient_etcd.testing._support import cache_dir, find_binary

DRIVER = Path(__file__).with_name("driver.py")
ROOT = Path(__file__).resolve().parent.parent

VENVS = {
    "etcd3": ["etcd3==0.12.0", "protobuf==3.20.3", "grpcio>=1.60"],
    "pyetcd": ["etcd-sdk-python==0.0.7", "protobuf>=5.28,<6", "grpcio>=1.66.2"],
}


def ensure_venv(name: str) -> str:
    """The python of the baseline venv ``name``, created (idempotently) under the cache."""
    spec = VENVS[name]
    digest = hashlib.sha256("\n".join(spec).encode()).hexdigest()[:8]
    venv = cache_dir() / "venvs" / f"{name}-{digest}"
    python = venv / "bin" / "python"
    stamp = venv / ".installed"
    if not stamp.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *spec], check=True)
        stamp.touch()
    return str(python)


@dataclass(frozen=True)
class ClientSpec:
    """One client as the benchmarks run it: ``driver`` names the implementation (default ``name``),
    ``timeout`` the per-call deadline it runs with in the fault scenarios (None: its own default)."""

    name: str
    label: str
    multi_endpoint: bool
    timeout: float | None = None
    driver: str | None = None

    def argv(self, endpoints: list[str], timeout: float | None) -> list[str]:
        t = "none" if timeout is None else str(timeout)
        impl = self.driver or self.name
        if impl == "clientv3":
            return [find_binary("clientv3-driver"), "-endpoints", ",".join(endpoints),
                    "-timeout", "0" if timeout is None else f"{timeout}s"]
        eps = endpoints if self.multi_endpoint else endpoints[:1]
        python = ensure_venv(impl) if impl in VENVS else sys.executable
        return [python, str(DRIVER), "--client", impl, "--endpoints", ",".join(eps), "--timeout", t]


def _with_2s(spec: ClientSpec) -> ClientSpec:
    """The same baseline with a 2 s per-call timeout: what a careful user of it would set."""
    return ClientSpec(f"{spec.name}-2s", f"{spec.label}, timeout 2 s", spec.multi_endpoint, 2.0, spec.name)


_BASELINES = [
    ClientSpec("raw", "raw stubs, no deadline", False),
    ClientSpec("etcd3", "python-etcd3 0.12", False),
    ClientSpec("pyetcd", "etcd-sdk-python 0.0.7", False),
    ClientSpec("clientv3", "Go clientv3, kube-apiserver keepalive", True),
]
CLIENTS = {
    "resilient": ClientSpec("resilient", "resilient_etcd (defaults, 2 s per call)", True, 2.0),
    "resilient-aio": ClientSpec("resilient-aio", "resilient_etcd.aio (asyncio, defaults, 2 s per call)", True, 2.0),
    **{b.name: b for b in _BASELINES},
    **{f"{b.name}-2s": _with_2s(b) for b in _BASELINES},
    "plain": ClientSpec("plain", "official kubernetes client (S12)", False),
}
"""Every client the benchmarks know, baselines beside themselves with a 2 s per-call timeout."""
