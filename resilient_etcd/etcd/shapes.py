"""What both faces of the client build and return alike: requests from python-etcd3's arguments, and
answers in python-etcd3's shapes. The sync ``Etcd3Client`` and the asyncio ``AsyncEtcd3Client`` differ
only in how they wait for the call between the two."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from .._proto import rpc_pb2
from ..exceptions import ConfigurationError
from ..policies import HealthPolicy, KeepalivePolicy, RetryPolicy
from ..transport.endpoints import Endpoint, parse_endpoint
from .models import Alarm, KVMetadata, Status, prefix_range_end, to_bytes
from .transactions import BaseCompare, build_txn, lease_id

_SORT_ORDERS = {None: rpc_pb2.RangeRequest.NONE, "ascend": rpc_pb2.RangeRequest.ASCEND,
                "descend": rpc_pb2.RangeRequest.DESCEND}
_SORT_TARGETS = {"key": rpc_pb2.RangeRequest.KEY, "version": rpc_pb2.RangeRequest.VERSION,
                 "create": rpc_pb2.RangeRequest.CREATE, "mod": rpc_pb2.RangeRequest.MOD,
                 "value": rpc_pb2.RangeRequest.VALUE}
ALARM_TYPES = {"none": rpc_pb2.NONE, "no_space": rpc_pb2.NOSPACE, "nospace": rpc_pb2.NOSPACE,
               "corrupt": rpc_pb2.CORRUPT}


# ---- arguments ----
def parse_endpoints(host: str, port: int | str, endpoints: Sequence[str | Endpoint] | None) -> list[Endpoint]:
    """The endpoints a client was given, as ``host``/``port`` or ``endpoints=[...]`` (never both)."""
    if endpoints is not None:
        if isinstance(endpoints, (str, bytes)):
            raise ConfigurationError("endpoints must be a list of addresses, not a single string")
        if (host, port) != ("localhost", 2379):
            raise ConfigurationError("give either host/port or endpoints, not both")
        parsed = [parse_endpoint(e) for e in endpoints]
        if not parsed:
            raise ConfigurationError("endpoints must not be empty")
        if len({e.target for e in parsed}) != len(parsed):
            raise ConfigurationError(f"duplicate endpoints in {[e.target for e in parsed]}")
        return parsed
    if isinstance(port, str) and port.strip().isdigit():  # python-etcd3 accepts "2379"
        port = int(port)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ConfigurationError(f"port must be an integer 1-65535, got {port!r}")
    return [parse_endpoint(f"{host}:{port}" if ":" not in host or host.startswith("[") else f"[{host}]:{port}")]


def check_client_args(user: str | None, password: str | None, keepalive: KeepalivePolicy | None,
                      health: HealthPolicy | None, retry: RetryPolicy | None) -> None:
    """Credentials come in pairs, policies are of their types: wrong ones fail at construction."""
    if (user is None) != (password is None):
        raise ConfigurationError("user and password must be given together")
    if user is not None and not user:
        raise ConfigurationError("user must not be empty")
    for name, policy, cls in (("keepalive", keepalive, KeepalivePolicy), ("health", health, HealthPolicy),
                              ("retry", retry, RetryPolicy)):
        if policy is not None and not isinstance(policy, cls):
            raise ConfigurationError(f"{name} must be a {cls.__name__}, got {type(policy).__name__}")


def check_ttl(ttl: Any) -> None:
    if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl <= 0:
        raise ConfigurationError(f"lease ttl must be a positive integer of seconds, got {ttl!r}")


# ---- requests ----
def range_request(
    key: bytes, range_end: bytes | None = None, limit: int | None = None, revision: int | None = None,
    sort_order: str | None = None, sort_target: str = "key", serializable: bool = False,
    keys_only: bool = False, count_only: bool = False, min_mod_revision: int | None = None,
    max_mod_revision: int | None = None, min_create_revision: int | None = None,
    max_create_revision: int | None = None,
) -> rpc_pb2.RangeRequest:
    if sort_order not in _SORT_ORDERS:
        raise ValueError(f'sort_order must be "ascend", "descend" or None, got {sort_order!r}')
    if sort_target not in _SORT_TARGETS:
        raise ValueError(f"sort_target must be one of {sorted(_SORT_TARGETS)}, got {sort_target!r}")
    return rpc_pb2.RangeRequest(
        key=key, range_end=range_end or b"", limit=limit or 0, revision=revision or 0,
        sort_order=_SORT_ORDERS[sort_order], sort_target=_SORT_TARGETS[sort_target],
        serializable=serializable, keys_only=keys_only, count_only=count_only,
        min_mod_revision=min_mod_revision or 0, max_mod_revision=max_mod_revision or 0,
        min_create_revision=min_create_revision or 0, max_create_revision=max_create_revision or 0,
    )


def get_request(key: Any, kwargs: dict[str, Any]) -> rpc_pb2.RangeRequest:
    return range_request(to_bytes(key), **kwargs) if kwargs else rpc_pb2.RangeRequest(key=to_bytes(key))


def prefix_request(key_prefix: Any, kwargs: dict[str, Any]) -> rpc_pb2.RangeRequest:
    if "range_end" in kwargs:
        raise TypeError("Don't use 'range_end' with 'get_prefix'")
    prefix = to_bytes(key_prefix)
    return range_request(prefix, prefix_range_end(prefix), **kwargs)


def range_of(range_start: Any, range_end: Any, sort_order: str | None, sort_target: str,
             kwargs: dict[str, Any]) -> rpc_pb2.RangeRequest:
    return range_request(to_bytes(range_start), to_bytes(range_end), sort_order=sort_order,
                         sort_target=sort_target, **kwargs)


def all_request(sort_order: str | None, sort_target: str, keys_only: bool,
                kwargs: dict[str, Any]) -> rpc_pb2.RangeRequest:
    return range_request(b"\0", b"\0", sort_order=sort_order, sort_target=sort_target, keys_only=keys_only,
                         **kwargs)


def put_request(key: Any, value: Any, lease: Any, prev_kv: bool) -> rpc_pb2.PutRequest:
    return rpc_pb2.PutRequest(key=to_bytes(key), value=to_bytes(value, "value"), lease=lease_id(lease),
                              prev_kv=prev_kv)


def delete_prefix_request(prefix: Any) -> rpc_pb2.DeleteRangeRequest:
    p = to_bytes(prefix)
    return rpc_pb2.DeleteRangeRequest(key=p, range_end=prefix_range_end(p))


def create_if_absent(transactions: Any, key: Any, value: Any, lease: Any) -> tuple[list[BaseCompare], list[Any]]:
    """``put_if_not_exists`` as a transaction: (compare, success)."""
    return [transactions.create(key) == 0], [transactions.put(key, value, lease=lease)]


def swap(transactions: Any, key: Any, initial_value: Any, new_value: Any) -> tuple[list[BaseCompare], list[Any]]:
    """``replace`` as a transaction: (compare, success)."""
    return [transactions.value(key) == initial_value], [transactions.put(key, new_value)]


def txn_request(compare: list[BaseCompare], success: list[Any] | None,
                failure: list[Any] | None) -> tuple[rpc_pb2.TxnRequest, list[Any]]:
    """The request, and every op of both branches (is the transaction read-only?)."""
    success, failure = success or [], failure or []
    return build_txn(compare, success, failure), success + failure


def alarm_request(action: Any, member_id: int, alarm_type: Any) -> rpc_pb2.AlarmRequest:
    return rpc_pb2.AlarmRequest(action=action, memberID=member_id, alarm=alarm_type)


def alarm_type(name: str) -> Any:
    if name.lower() not in ALARM_TYPES:
        raise ValueError(f"alarm_type must be one of {sorted(ALARM_TYPES)}, got {name!r}")
    return ALARM_TYPES[name.lower()]


# ---- answers ----
def value_of(resp: rpc_pb2.RangeResponse) -> tuple[bytes, KVMetadata] | tuple[None, None]:
    """``get``'s answer: ``(value, metadata)``, or ``(None, None)`` when the key does not exist."""
    for kv in resp.kvs:  # (the first, if any: no len() and index on the protobuf container)
        return kv.value, KVMetadata.of(kv, resp)
    return None, None


def items(resp: rpc_pb2.RangeResponse) -> Iterator[tuple[bytes, KVMetadata]]:
    """``(value, metadata)`` of every key in a range answer."""
    return ((kv.value, KVMetadata.of(kv, resp)) for kv in resp.kvs)


def txn_result(resp: rpc_pb2.TxnResponse) -> tuple[bool, list[Any]]:
    """``(succeeded, responses)``: a range op's response is a list of ``(value, metadata)``, other ops give
    their protobuf response."""
    responses: list[Any] = []
    for r in resp.responses:
        kind = r.WhichOneof("response")
        if kind == "response_range":
            responses.append([(kv.value, KVMetadata(kv, resp.header)) for kv in r.response_range.kvs])
        else:
            responses.append(getattr(r, kind))
    return resp.succeeded, responses


def alarms(resp: rpc_pb2.AlarmResponse) -> list[Alarm]:
    return [Alarm(rpc_pb2.AlarmType.Name(a.alarm), a.memberID) for a in resp.alarms]


def status(st: rpc_pb2.StatusResponse, members: Sequence[Any]) -> Status:
    """A member's ``Status`` with its leader resolved to one of ``members``."""
    leader = next((m for m in members if m.id == st.leader), None)
    return Status(st.version, st.dbSize, leader, st.raftIndex, st.raftTerm)
