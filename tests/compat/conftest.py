from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType

import pytest

import resilient_etcd

collect_ignore = ["legacy_app.py"]  # python-etcd3 code, run in a subprocess by test_install.py


@pytest.fixture
def etcd3() -> Iterator[ModuleType]:
    """resilient_etcd installed as ``etcd3`` for the test, removed after it."""
    resilient_etcd.install_as_etcd3()
    import etcd3 as module

    try:
        yield module
    finally:
        resilient_etcd.uninstall_as_etcd3()
