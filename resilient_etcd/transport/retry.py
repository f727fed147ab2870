"""Which RPCs may be retried and how a gRPC failure is classified (the loop itself: :mod:`..balancer.retrying`).

One table (:data:`RETRY_CLASSES`) gives every RPC its retry class:

* **idempotent** — safe to send twice: retried after any connection failure, on another member;
* **mutation** (the default) — retried, on any member, only when the request provably never left;
* **pinned** — an answer *about* one member or an action *on* it (``Status``, ``Hash``,
  ``Defragment``, ``Snapshot``, ``MoveLeader``): never moved to another member, and retried on the
  same member only when provably unsent.

"Provably unsent" is decided from states, never from error text alone (see :func:`classify`).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import grpc

from .. import exceptions as exc


class RetryClass(enum.Enum):
    IDEMPOTENT = "idempotent"  # may be sent again, to any member
    MUTATION = "mutation"      # to any member, again only when provably unsent
    PINNED = "pinned"          # to this member only, again only when provably unsent


RETRY_CLASSES: Mapping[str, RetryClass] = MappingProxyType({
    "KV.Range": RetryClass.IDEMPOTENT,
    "Maintenance.Alarm.GET": RetryClass.IDEMPOTENT,  # alarms are cluster state (raft), any member answers
    "Cluster.MemberList": RetryClass.IDEMPOTENT,
    "Lease.LeaseTimeToLive": RetryClass.IDEMPOTENT,
    "Lease.LeaseLeases": RetryClass.IDEMPOTENT,
    "Lease.LeaseKeepAlive": RetryClass.IDEMPOTENT,
    "Auth.Authenticate": RetryClass.IDEMPOTENT,
    "Auth.AuthStatus": RetryClass.IDEMPOTENT,
    "Maintenance.Status": RetryClass.PINNED,
    "Maintenance.Hash": RetryClass.PINNED,
    "Maintenance.HashKV": RetryClass.PINNED,
    "Maintenance.Defragment": RetryClass.PINNED,
    "Maintenance.Snapshot": RetryClass.PINNED,
    "Maintenance.MoveLeader": RetryClass.PINNED,
})
"""The retry class of each RPC by ``Service.Method``; an RPC not named here is a mutation (Put,
DeleteRange, Txn with writes, LeaseGrant/Revoke, Compact, alarm and member/auth changes)."""

IDEMPOTENT: frozenset[str] = frozenset(n for n, c in RETRY_CLASSES.items() if c is RetryClass.IDEMPOTENT)


def retry_class(name: str) -> RetryClass:
    return RETRY_CLASSES.get(name, RetryClass.MUTATION)


class Failure(enum.Enum):
    NOT_SENT = "not sent"          # provably never left (see classify): safe to retry anything
    BROKEN = "broken"              # connection failed or broke, maybe mid-call: ambiguous for mutations
    EJECTED = "ejected"            # we closed the channel under the call (endpoint ejected)
    SERVER_UNAVAILABLE = "server"  # etcd answered "unavailable" (no leader, leader changed …)
    AUTH_TOKEN = "auth token"      # token expired or unknown after a restart: re-authenticate
    TIMEOUT = "timeout"            # the call's own deadline ran out
    FATAL = "fatal"                # an answer; retrying cannot help


_CONNECT_MARKERS = ("failed to connect to all addresses", "failed to connect to remote host", "errors resolving",
                    "connection refused", "dns resolution failed", "no route to host")
_TOKEN_MARKERS = ("invalid auth token", "user name is empty", "auth token is expired")


def server_reset(code: grpc.StatusCode | None, details: str | None) -> bool:
    """The server reset the call's stream with CANCEL. gRPC servers do that when they see the call's deadline
    expire before the client's own timer does (the protocol asks clients to check their deadline on such a
    CANCELLED); grpc-core then reports CANCELLED, not DEADLINE_EXCEEDED. Before the deadline it means the
    server gave the call up."""
    return code == grpc.StatusCode.CANCELLED and "rst_stream" in (details or "").lower()


def classify(code: grpc.StatusCode | None, details: str, *, transport_ready: bool = True) -> Failure:
    """Pure classification of one gRPC outcome.

    ``transport_ready``: whether the channel had a READY connection when the call started (True
    when unknown). NOT_SENT needs that state as its proof: a channel with no ready connection must
    dial before it can send, and a failed dial fails the call at the pick, before any byte of it
    left. The connect-failure words only tell that case apart from a connection that came up and
    then broke. On a connection that was READY, the same words prove nothing: grpc-core reports a
    pending ICMP error ("connection refused", "no route to host") of an *established* connection
    when its timer fires, after the request may have been delivered.
    """
    text = (details or "").lower()
    if any(m in text for m in _TOKEN_MARKERS):
        return Failure.AUTH_TOKEN  # the server answered: it refused the request, nothing was applied
    if code == grpc.StatusCode.UNAVAILABLE:
        if text.startswith("etcdserver:"):
            return Failure.SERVER_UNAVAILABLE
        if not transport_ready and any(m in text for m in _CONNECT_MARKERS):
            return Failure.NOT_SENT
        return Failure.BROKEN
    if code == grpc.StatusCode.CANCELLED and "channel closed" in text:
        return Failure.EJECTED
    if code == grpc.StatusCode.CANCELLED and (text.startswith("etcdserver:") or server_reset(code, text)):
        return Failure.SERVER_UNAVAILABLE  # a leader stepping down cancels in-flight requests; a server reset
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return Failure.TIMEOUT
    return Failure.FATAL


def is_hard(failure: Failure) -> bool:
    """Does this failure say the *connection* is gone (eject the endpoint now)?"""
    return failure in (Failure.NOT_SENT, Failure.BROKEN)


def may_retry(failure: Failure, rclass: RetryClass) -> bool:
    """May a call of ``rclass`` that failed with ``failure`` be sent again (pinned: to the same member)?"""
    if failure in (Failure.NOT_SENT, Failure.AUTH_TOKEN):
        return True
    if failure in (Failure.BROKEN, Failure.EJECTED, Failure.SERVER_UNAVAILABLE):
        return rclass is RetryClass.IDEMPOTENT
    return False


class RetryableError(Exception):
    """Internal: one attempt failed in a way the retry loop may try again."""

    def __init__(self, failure: Failure, error: BaseException, endpoint: str,
                 token: tuple[tuple[str, str], ...] = ()) -> None:
        self.failure, self.error, self.endpoint, self.token = failure, error, endpoint, token
        if isinstance(error, grpc.RpcError) and hasattr(error, "code"):
            text = f"{error.code().name}: {' '.join((error.details() or '').split())}"
        else:
            text = " ".join(str(error).split())
        super().__init__(f"{endpoint}: {failure.value}: {text}")


def to_exception(error: grpc.RpcError | BaseException, endpoint: str | None = None) -> exc.Etcd3Exception:
    """Map a gRPC error to python-etcd3's exception types (ours subclass them)."""
    if isinstance(error, exc.Etcd3Exception):
        return error
    code: Any = error.code() if isinstance(error, grpc.RpcError) and hasattr(error, "code") else None
    details: str = (error.details() if isinstance(error, grpc.RpcError) and hasattr(error, "details")
                    else str(error)) or ""
    where = f" [{endpoint}]" if endpoint else ""
    msg = f"{details}{where}"
    lower = details.lower()
    result: exc.Etcd3Exception
    if "compacted" in lower:
        result = exc.RevisionCompactedError(-1, msg)
    elif code == grpc.StatusCode.UNAVAILABLE or code == grpc.StatusCode.CANCELLED:
        result = exc.ConnectionFailedError(msg)
    elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
        result = exc.DeadlineExceeded(msg)
    elif code == grpc.StatusCode.FAILED_PRECONDITION:
        result = exc.PreconditionFailedError(msg)
    elif code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.DATA_LOSS):
        result = exc.InternalServerError(msg)
    elif code == grpc.StatusCode.PERMISSION_DENIED or "authentication failed" in lower:
        result = exc.AuthenticationError(msg)
    else:
        result = exc.Etcd3Exception(msg)
    result.code = code  # type: ignore[attr-defined]
    return result
