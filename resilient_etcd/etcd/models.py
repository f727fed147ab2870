"""Records returned by the client, shaped like python-etcd3's."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from .._proto import rpc_pb2

Key = str | bytes


def to_bytes(value: Key | int, what: str = "key") -> bytes:
    """str → UTF-8 bytes; bytes unchanged; anything else is a TypeError naming ``what``."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    raise TypeError(f"{what} must be str or bytes, not {type(value).__name__}")


def prefix_range_end(prefix: bytes) -> bytes:
    """The first key after every key starting with ``prefix`` (``b"\\0"`` = to the end)."""
    end = bytearray(prefix)
    for i in reversed(range(len(end))):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\0"


class KVMetadata:
    """Metadata of a key-value pair: ``key``, ``create_revision``, ``mod_revision``, ``version``,
    ``lease_id`` and the ``response_header`` of the response it came in.

    The fields are read from the message on first use (most callers of ``get`` look at the value
    only, and five protobuf reads are a fifth of a read's Python cost); after that they are plain
    attributes, as python-etcd3's are."""

    __slots__ = ("_kv", "_response", "create_revision", "key", "lease_id", "mod_revision", "response_header",
                 "version")

    key: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease_id: int
    response_header: rpc_pb2.ResponseHeader | None
    _kv: Any
    _response: Any  # (set by ``of`` only: the response whose header is read on first use)

    def __init__(self, keyvalue: Any, header: rpc_pb2.ResponseHeader | None) -> None:
        self._kv = keyvalue
        self.response_header = header

    @classmethod
    def of(cls, keyvalue: Any, response: Any) -> KVMetadata:
        """The metadata of ``keyvalue``, one of ``response``'s (its header too is read on first use)."""
        m = cls.__new__(cls)
        m._kv, m._response = keyvalue, response
        return m

    def __getattr__(self, name: str) -> Any:
        # only for a slot not set yet: a field never read (or ``_kv`` itself, unpickled without it)
        if name == "response_header":
            self.response_header = header = self._response.header
            return header
        if name not in _KV_FIELDS:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        kv = self._kv
        self.key, self.create_revision, self.mod_revision = kv.key, kv.create_revision, kv.mod_revision
        self.version, self.lease_id = kv.version, kv.lease
        return object.__getattribute__(self, name)

    def __repr__(self) -> str:
        return (f"KVMetadata(key={self.key!r}, create_revision={self.create_revision}, "
                f"mod_revision={self.mod_revision}, version={self.version}, lease_id={self.lease_id})")


_KV_FIELDS = frozenset(("key", "create_revision", "mod_revision", "version", "lease_id"))


class _MemberClient(Protocol):
    """What a :class:`Member` calls back on its client (the client builds members: it is not imported)."""

    def remove_member(self, *args: Any, **kwargs: Any) -> Any: ...

    def update_member(self, *args: Any, **kwargs: Any) -> Any: ...

    def list_alarms(self, *args: Any, **kwargs: Any) -> Iterable[Alarm]: ...


class Member:
    """A cluster member: ``id``, ``name``, ``peer_urls``, ``client_urls``; ``remove()``, ``update()``."""

    def __init__(self, id: int, name: str, peer_urls: list[str], client_urls: list[str],
                 etcd_client: _MemberClient | None = None) -> None:
        self.id = id
        self.name = name
        self.peer_urls = peer_urls
        self.client_urls = client_urls
        self._etcd_client = etcd_client

    def __repr__(self) -> str:
        return f"Member({self.id}, name={self.name!r}, peer_urls={self.peer_urls}, client_urls={self.client_urls})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Member) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def _client(self) -> _MemberClient:
        if self._etcd_client is None:
            raise ValueError("this Member is not bound to a client")
        return self._etcd_client

    def remove(self) -> None:
        """Remove this member from the cluster."""
        self._client().remove_member(self.id)

    def update(self, peer_urls: list[str]) -> None:
        """Change this member's peer URLs."""
        self._client().update_member(self.id, peer_urls)

    @property
    def active_alarms(self) -> Iterator[Alarm]:
        """The alarms raised on this member."""
        return iter(self._client().list_alarms(member_id=self.id))

    @classmethod
    def from_proto(cls, m: rpc_pb2.Member, client: _MemberClient | None) -> Member:
        """A :class:`Member` from etcd's ``Member`` message, bound to ``client``."""
        return cls(m.ID, m.name, list(m.peerURLs), list(m.clientURLs), client)


class Status:
    """``version``, ``db_size``, ``leader`` (a :class:`Member` or None), ``raft_index``, ``raft_term``."""

    def __init__(self, version: str, db_size: int, leader: Member | None, raft_index: int, raft_term: int) -> None:
        self.version = version
        self.db_size = db_size
        self.leader = leader
        self.raft_index = raft_index
        self.raft_term = raft_term

    def __repr__(self) -> str:
        return (f"Status(version={self.version!r}, db_size={self.db_size}, leader={self.leader!r}, "
                f"raft_index={self.raft_index}, raft_term={self.raft_term})")


class Alarm:
    """An active alarm: ``alarm_type`` (e.g. ``"NOSPACE"``) and ``member_id``."""

    def __init__(self, alarm_type: str, member_id: int) -> None:
        self.alarm_type = alarm_type
        self.member_id = member_id

    def __repr__(self) -> str:
        return f"Alarm({self.alarm_type}, member_id={self.member_id})"
