"""The packages as users get them: built, installed into fresh venvs on every Python we promise,
core only and with each user extra (tools/check_packaging.py says what each venv runs)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.integration
def test_wheel_and_sdist_install_cleanly_on_every_promised_python() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "check_packaging.py")], capture_output=True,
                          text=True, timeout=1800)
    print(proc.stdout)
    assert proc.returncode == 0 and re.search(r"^\d+ passed, 0 failed$", proc.stdout, re.M), \
        proc.stdout[-4000:] + proc.stderr[-2000:]
    for version in ("3.10", "3.11", "3.12", "3.13"):
        assert f"ok    py{version}-core: unit tests against the installed wheel" in proc.stdout


def test_classifiers_name_the_checked_pythons() -> None:
    from tools.check_packaging import PYTHONS  # type: ignore[import-not-found]

    text = (ROOT / "pyproject.toml").read_text()
    named = set(re.findall(r'"Programming Language :: Python :: (3\.\d+)"', text))
    assert named == set(PYTHONS), named
    assert 'requires-python = ">=3.10"' in text
