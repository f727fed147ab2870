from __future__ import annotations

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from resilient_etcd.etcd.models import prefix_range_end
from resilient_etcd.etcd.transactions import Delete, Get, Put, Txn, Value, build_txn, is_read_only
from resilient_etcd.transport.retry import IDEMPOTENT, Failure, classify, may_retry

U = grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("code, details, expected", [
    (U, "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: Connection refused",
     Failure.NOT_SENT),
    (U, "Socket closed", Failure.BROKEN),
    (U, "etcdserver: leader changed", Failure.SERVER_UNAVAILABLE),
    (grpc.StatusCode.UNAUTHENTICATED, "etcdserver: invalid auth token", Failure.AUTH_TOKEN),
    (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: user name is empty", Failure.AUTH_TOKEN),
    (grpc.StatusCode.CANCELLED, "Channel closed!", Failure.EJECTED),
    (grpc.StatusCode.CANCELLED, "etcdserver: request cancelled", Failure.SERVER_UNAVAILABLE),
    (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", Failure.TIMEOUT),
    (grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: duplicate key", Failure.FATAL),
])
def test_classify(code: grpc.StatusCode, details: str, expected: Failure) -> None:
    assert classify(code, details) is expected


def test_mutations_only_retry_when_never_sent() -> None:
    for f in Failure:
        assert may_retry(f, idempotent=False) == (f in (Failure.NOT_SENT, Failure.AUTH_TOKEN))
    assert not may_retry(Failure.TIMEOUT, idempotent=True), "never retry after the deadline"
    assert "KV.Range" in IDEMPOTENT and "KV.Put" not in IDEMPOTENT and "KV.Txn" not in IDEMPOTENT


def test_txn_read_only_detection() -> None:
    assert is_read_only([Get("a"), Txn([Value("a") == "1"], [Get("b")])])
    assert not is_read_only([Get("a"), Txn([], [Put("b", "1")])])
    assert not is_read_only([Delete("a")])
    msg = build_txn([Value("a") == "x"], [Put("a", "y")], [Get("a")])
    assert msg.success[0].request_put.value == b"y" and msg.compare[0].value == b"x"


def test_compare_without_operator_is_an_error() -> None:
    with pytest.raises(ValueError, match="needs a comparison"):
        build_txn([Value("a")], [], [])


@given(st.binary(max_size=8))
def test_prefix_range_end_bounds_exactly_the_prefix(prefix: bytes) -> None:
    end = prefix_range_end(prefix)
    if prefix.strip(b"\xff") == b"":
        assert end == b"\0"
        return
    assert prefix < end
    assert (prefix + b"\xff" * 4) < end
    assert not end.startswith(prefix)
