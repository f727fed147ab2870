"""Installing resilient-etcd must never break a user's project: check the built packages as users get them.

Builds the sdist and the wheel, then on every Python this project promises (3.10-3.13, from pyenv)
installs the wheel into fresh venvs - core only, and with each user extra - and in each:

* imports every public module that install should have (and nothing more is needed for it);
* runs an unrelated one-test project under pytest (our pytest11 plugin loads there: it must stay inert);
* with the core install: runs our unit tests against the installed wheel, not the source tree;
* with the testing extra on the oldest Python: runs the asyncio client's tests on real servers (asyncio's
  cancellation semantics differ before 3.11).

Also: the wheel holds ``py.typed``, the ``.proto`` files and the generated stubs; the sdist installs
too. Prints one line per check and a closing ``N passed, N failed``; exits 1 on any failure.

    python tools/check_packaging.py [--python 3.12 ...]
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHONS = ("3.10", "3.11", "3.12", "3.13")
CORE_MODULES = ["resilient_etcd", "resilient_etcd.exceptions", "resilient_etcd.deadlines", "resilient_etcd.policies",
                "resilient_etcd.metrics", "resilient_etcd.cli", "resilient_etcd.testing", "resilient_etcd.aio"]
EXTRAS = {
    "": CORE_MODULES,
    "kube": [*CORE_MODULES, "resilient_etcd.kube"],
    "metrics": [*CORE_MODULES, "prometheus_client"],
    "srv": [*CORE_MODULES, "resilient_etcd.discovery", "dns.resolver"],
    "testing": [*CORE_MODULES, "resilient_etcd.testing.plugin", "resilient_etcd.testing.tls",
                "resilient_etcd.testing.dns"],
}
WHEEL_MUST_HOLD = ["resilient_etcd/py.typed", "resilient_etcd/_proto/rpc.proto", "resilient_etcd/_proto/kv.proto",
                   "resilient_etcd/_proto/auth.proto", "resilient_etcd/_proto/rpc_pb2.py",
                   "resilient_etcd/_proto/rpc_pb2_grpc.py", "resilient_etcd/_proto/kv_pb2.py"]
IMPORT_ALL = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)"
UNRELATED_TEST = "def test_unrelated():\n    assert 1 + 1 == 2\n"


def find_python(version: str) -> str | None:
    """The interpreter for ``version``: pyenv's, else one on PATH."""
    root = os.environ.get("PYENV_ROOT") or str(Path.home() / ".pyenv")
    found = sorted(glob.glob(f"{root}/versions/{version}.*/bin/python{version}"))
    return found[-1] if found else shutil.which(f"python{version}")


class Checker:
    def __init__(self, work: Path, uv: str) -> None:
        self.work, self.uv = work, uv
        self.passed = self.failed = 0

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        if ok:
            self.passed += 1
            print(f"ok    {name}", flush=True)
        else:
            self.failed += 1
            print(f"FAIL  {name}\n{textwrap.indent(detail.strip()[-3000:], '      ')}", flush=True)
        return ok

    def run(self, argv: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        return subprocess.run(argv, cwd=cwd or self.work, capture_output=True, text=True, env=env, timeout=900)

    def venv(self, python: str, name: str, requirements: list[str]) -> Path | None:
        target = self.work / "venvs" / name
        made = self.run([self.uv, "venv", "-q", "--python", python, str(target)])
        if not self.check(f"{name}: venv", made.returncode == 0, made.stderr):
            return None
        py = target / "bin" / "python"
        got = self.run([self.uv, "pip", "install", "-q", "--python", str(py), *requirements])
        return py if self.check(f"{name}: install {' '.join(Path(r).name for r in requirements)}",
                                got.returncode == 0, got.stderr) else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--python", nargs="+", default=list(PYTHONS), help="versions to check (default 3.10-3.13)")
    a = p.parse_args(argv)
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if uv is None:
        print("check_packaging: needs uv (pip install uv: it is in the dev extra)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="re-pkg-") as tmp:
        c = Checker(Path(tmp), uv)
        dist = c.work / "dist"
        built = c.run([sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT)])
        if not c.check("build sdist and wheel", built.returncode == 0, built.stdout + built.stderr):
            return 1
        wheel = next(dist.glob("*.whl"))
        sdist = next(dist.glob("*.tar.gz"))
        names = set(zipfile.ZipFile(wheel).namelist())
        missing = [n for n in WHEEL_MUST_HOLD if n not in names]
        c.check("wheel holds py.typed, the .proto files and the generated stubs", not missing, f"missing: {missing}")
        project = c.work / "unrelated"
        project.mkdir()
        (project / "test_unrelated.py").write_text(UNRELATED_TEST)
        unit = c.work / "unit"
        shutil.copytree(ROOT / "tests" / "unit", unit, ignore=shutil.ignore_patterns("__pycache__", "__init__.py"))
        for version in a.python:
            python = find_python(version)
            if not c.check(f"python {version} on this machine", python is not None, "not found (pyenv or PATH)"):
                continue
            assert python is not None
            for extra, modules in EXTRAS.items():
                name = f"py{version}-{extra or 'core'}"
                spec = f"{wheel}[{extra}]" if extra else str(wheel)
                # pytest: the user's unrelated project has it; hypothesis: our unit tests (core only)
                asyncio_suite = extra == "testing" and version == PYTHONS[0]
                py = c.venv(python, name, [spec, "pytest", *(["hypothesis"] if not extra else []),
                                           *(["pytest-timeout"] if asyncio_suite else [])])
                if py is None:
                    continue
                imported = c.run([str(py), "-c", IMPORT_ALL, *modules])
                c.check(f"{name}: import {len(modules)} public modules", imported.returncode == 0, imported.stderr)
                where = c.run([str(py), "-c", "import resilient_etcd; print(resilient_etcd.__file__)"])
                c.check(f"{name}: imports the installed wheel", str(c.work / "venvs") in where.stdout,
                        where.stdout + where.stderr)
                other = c.run([str(py), "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=project)
                c.check(f"{name}: an unrelated project's pytest passes", other.returncode == 0 and "1 passed" in
                        other.stdout, other.stdout + other.stderr)
                if not extra:
                    tests = c.run([str(py), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not integration",
                                   str(unit)], cwd=unit)
                    c.check(f"{name}: unit tests against the installed wheel", tests.returncode == 0,
                            tests.stdout + tests.stderr)
                if asyncio_suite:
                    # asyncio's cancellation semantics differ before 3.11 (no Task.cancelling()): the asyncio
                    # client's suite on real servers, on the oldest Python promised (from the source tree)
                    suite = c.run([str(py), "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/aio"], cwd=ROOT)
                    c.check(f"{name}: the asyncio client's tests on real servers", suite.returncode == 0
                            and " passed" in suite.stdout, suite.stdout + suite.stderr)
        py = c.venv(sys.executable, "sdist", [str(sdist)])
        if py is not None:
            imported = c.run([str(py), "-c", "import resilient_etcd"])
            c.check("sdist: installs and imports", imported.returncode == 0, imported.stderr)
        print(f"{c.passed} passed, {c.failed} failed")
        return 0 if c.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
