"""Suite-wide hygiene: every Kubernetes ApiClient a test makes is closed when the test ends.

An unclosed ApiClient keeps its /readyz probe threads and HTTP/2 connections until the garbage
collector finds it; in a long suite that shows up as another test's thread or descriptor count.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(autouse=True)
def _close_kube_clients(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    try:
        from resilient_etcd.kube import ApiClient
    except ImportError:  # the kube extra is not installed
        yield
        return
    made: list[Any] = []
    init = ApiClient.__init__

    def tracking_init(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(ApiClient, "__init__", tracking_init)
    yield
    for api in made:
        api.close()
