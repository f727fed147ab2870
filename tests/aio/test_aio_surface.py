"""The asyncio client has the sync client's surface: every public method, with the same parameters,
as a coroutine (or, for properties that ask the server, an awaitable); the handles too."""

from __future__ import annotations

import inspect

import pytest

import resilient_etcd as etcd3
from resilient_etcd import aio

# properties of the sync client that are coroutine methods on the asyncio one (a property cannot await)
_ASKS_THE_SERVER = {"members"}
# what only one face has, and why
_ONLY_SYNC = {"close"}  # the asyncio client has it too, as a coroutine (aclose)


def _public(cls: type) -> dict[str, object]:
    return {n: inspect.getattr_static(cls, n) for n in dir(cls) if not n.startswith("_")}


@pytest.mark.parametrize(("sync_cls", "async_cls"), [
    (etcd3.Etcd3Client, aio.AsyncEtcd3Client), (etcd3.Lease, aio.AsyncLease), (etcd3.Lock, aio.AsyncLock),
    (etcd3.Election, aio.AsyncElection),
])
def test_same_methods_same_parameters(sync_cls: type, async_cls: type) -> None:
    sync, asyncs = _public(sync_cls), _public(async_cls)
    missing = sorted(set(sync) - set(asyncs))
    assert not missing, f"{async_cls.__name__} lacks {missing}"
    for name, member in sync.items():
        other = asyncs[name]
        if isinstance(member, property):
            if name in _ASKS_THE_SERVER:
                assert inspect.iscoroutinefunction(other), name
            else:
                assert isinstance(other, property), f"{name} should stay a property"
            continue
        if not callable(member) or isinstance(member, (staticmethod, classmethod)):
            continue
        params = list(inspect.signature(member).parameters)
        other_params = list(inspect.signature(other).parameters)  # type: ignore[arg-type]
        assert other_params[:len(params)] == params, f"{name}: {params} vs {other_params}"
        extra = other_params[len(params):]
        assert all(inspect.signature(other).parameters[p].kind is inspect.Parameter.KEYWORD_ONLY  # type: ignore[arg-type]
                   for p in extra), f"{name}: extra parameters {extra} must be keyword-only"
        blocking = name in {"keep_alive", "lock", "election", "endpoint_health", "check"}
        assert inspect.iscoroutinefunction(other) != blocking or name == "close", \
            f"{async_cls.__name__}.{name} should {'not ' if blocking else ''}be a coroutine"
