from __future__ import annotations

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from resilient_etcd.etcd.models import prefix_range_end
from resilient_etcd.etcd.transactions import Delete, Get, Put, Txn, Value, build_txn, is_read_only
from resilient_etcd.transport.retry import IDEMPOTENT, Failure, RetryClass, classify, may_retry, retry_class

U = grpc.StatusCode.UNAVAILABLE
REFUSED = "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: Connection refused"


def test_connect_failure_words_prove_nothing_on_a_ready_transport() -> None:
    """Only the transport's state proves "never sent": the words alone come also from an established
    connection whose pending ICMP error surfaces when its timer fires."""
    assert classify(U, REFUSED, transport_ready=False) is Failure.NOT_SENT
    assert classify(U, REFUSED, transport_ready=True) is Failure.BROKEN
    assert classify(U, REFUSED) is Failure.BROKEN, "unknown state must not count as proof"
    assert classify(U, "recvmsg: No route to host", transport_ready=True) is Failure.BROKEN
    assert classify(U, "Socket closed", transport_ready=False) is Failure.BROKEN


@pytest.mark.parametrize("code, details, expected", [
    (U, REFUSED, Failure.BROKEN),
    (U, "Socket closed", Failure.BROKEN),
    (U, "etcdserver: leader changed", Failure.SERVER_UNAVAILABLE),
    (grpc.StatusCode.UNAUTHENTICATED, "etcdserver: invalid auth token", Failure.AUTH_TOKEN),
    (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: user name is empty", Failure.AUTH_TOKEN),
    (grpc.StatusCode.CANCELLED, "Channel closed!", Failure.EJECTED),
    (grpc.StatusCode.CANCELLED, "etcdserver: request cancelled", Failure.SERVER_UNAVAILABLE),
    # the server reset the stream (gRPC servers do at a deadline they see expire first): given up there
    (grpc.StatusCode.CANCELLED, "Stream removed (RST_STREAM (Received RST_STREAM with error code 8))",
     Failure.SERVER_UNAVAILABLE),
    (grpc.StatusCode.CANCELLED, "Locally cancelled by application!", Failure.FATAL),
    (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", Failure.TIMEOUT),
    (grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: duplicate key", Failure.FATAL),
])
def test_classify(code: grpc.StatusCode, details: str, expected: Failure) -> None:
    assert classify(code, details) is expected


def test_mutations_and_pinned_calls_only_retry_when_never_sent() -> None:
    for f in Failure:
        for rclass in (RetryClass.MUTATION, RetryClass.PINNED):
            assert may_retry(f, rclass) == (f in (Failure.NOT_SENT, Failure.AUTH_TOKEN))
    assert not may_retry(Failure.TIMEOUT, RetryClass.IDEMPOTENT), "never retry after the deadline"
    assert "KV.Range" in IDEMPOTENT and "KV.Put" not in IDEMPOTENT and "KV.Txn" not in IDEMPOTENT


@pytest.mark.parametrize("name", ["Maintenance.Status", "Maintenance.Hash", "Maintenance.HashKV",
                                  "Maintenance.Defragment", "Maintenance.Snapshot", "Maintenance.MoveLeader"])
def test_per_member_operations_are_pinned(name: str) -> None:
    assert retry_class(name) is RetryClass.PINNED and name not in IDEMPOTENT


def test_unknown_rpcs_are_mutations() -> None:
    assert retry_class("KV.Put") is RetryClass.MUTATION
    assert retry_class("Maintenance.Alarm") is RetryClass.MUTATION


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
