"""The docs site builds with ``mkdocs build --strict``, its generated reference is current, every
Python sample in docs/*.md runs against a real etcd cluster and kube-apiserver, and the README's
samples (short forms of the docs' ones, with made-up addresses) at least compile and name only what
the package exports."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from resilient_etcd.testing import EtcdCluster, ToxiproxyServer
from resilient_etcd.testing.kube import KubeApiServer

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / "docs").glob("*.md"))
SAMPLE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def samples(page: Path) -> list[str]:
    return SAMPLE.findall(page.read_text())


def test_mkdocs_builds_strict(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "site" / "kubernetes" / "index.html").exists()


def test_configuration_reference_is_current() -> None:
    out = subprocess.run([sys.executable, "tools/gen_config_docs.py", "--check"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def test_the_docs_have_samples() -> None:
    counts = {p.name: len(samples(p)) for p in PAGES}
    for page in ("quickstart.md", "concepts.md", "kubernetes.md", "testing.md"):
        assert counts[page] >= 1, f"{page} has no Python sample: {counts}"


@pytest.mark.parametrize("page", [p for p in PAGES if samples(p)], ids=lambda p: p.name)
def test_samples_run(page: Path, etcd_cluster: EtcdCluster, toxiproxy_server: ToxiproxyServer,
                     capsys: pytest.CaptureFixture[str]) -> None:
    """A page's samples run in order in one namespace, like a reader typing them in."""
    ns: dict[str, object] = {"ENDPOINTS": etcd_cluster.endpoints, "__name__": f"docs.{page.stem}"}
    if "KUBECONFIG" in page.read_text():
        api = KubeApiServer(etcd_cluster, toxiproxy=toxiproxy_server).start()
        ns["KUBECONFIG"] = str(api.kubeconfig())
    else:
        api = None
    try:
        for i, code in enumerate(samples(page)):
            compiled = compile(code, f"{page.name}[sample {i + 1}]", "exec")
            exec(compiled, ns)  # running our own documentation is the point
            # a sample that defines test functions (the testing guide) is run too, with the real fixture
            for name, fn in list(ns.items()):
                if name.startswith("test_") and callable(fn):
                    fn(etcd_cluster)
                    del ns[name]
    finally:
        if api is not None:
            api.close()


def test_readme_samples_compile_and_name_what_exists() -> None:
    import importlib
    import importlib.util

    readme = (ROOT / "README.md").read_text()
    found = SAMPLE.findall(readme)
    assert found, "the README has no Python sample"
    for i, code in enumerate(found):
        compile(code, f"README.md[sample {i + 1}]", "exec")
    for module, names in re.findall(r"^from (resilient_etcd[\w.]*) import (.+)$", readme, re.M):
        mod = importlib.import_module(module)
        for name in (n.strip() for n in names.split("#")[0].split(",")):
            assert hasattr(mod, name) or importlib.util.find_spec(f"{module}.{name}"), f"README: {module} has no {name}"
    for attr in re.findall(r"\betcd3\.(\w+)\(", readme):
        assert hasattr(importlib.import_module("resilient_etcd"), attr), f"README: resilient_etcd has no {attr}"


def test_every_public_name_has_a_docstring() -> None:
    """The API reference is generated from docstrings: a public name without one is a hole in it (the
    docs hook makes the strict build fail on it; this says which, faster)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("docstrings_hook", ROOT / "docs" / "hooks" / "docstrings.py")
    assert spec is not None and spec.loader is not None
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    assert [n for m in hook.MODULES for n in hook.undocumented(m)] == []
