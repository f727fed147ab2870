"""python-etcd3's ``etcd3.utils``: the helpers code written for it imports, under the same names.

>>> increment_last_byte(b"/app/")
b'/app0'
>>> to_bytes("k"), lease_to_id(7)
(b'k', 7)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from .etcd.events import Event
from .etcd.models import prefix_range_end

__all__ = ["increment_last_byte", "lease_to_id", "response_to_event_iterator", "to_bytes"]


def increment_last_byte(byte_string: str | bytes) -> bytes:
    """The end of the range of keys that start with ``byte_string``. (python-etcd3 raises ValueError on a
    trailing ``0xff``; this returns the right end, as etcd's own clients do.)"""
    return prefix_range_end(to_bytes(byte_string))


def to_bytes(maybe_bytestring: Any) -> Any:
    """``str`` as UTF-8 bytes; anything else unchanged (python-etcd3's behaviour, kept for callers that
    pass bytes-like values through it)."""
    if isinstance(maybe_bytestring, str):
        return maybe_bytestring.encode("utf-8")
    return maybe_bytestring


def lease_to_id(lease: Any) -> int:
    """A lease's id from a :class:`Lease`, an int or anything ``int()`` takes; 0 when there is none."""
    if hasattr(lease, "id"):
        return int(lease.id)
    try:
        return int(lease)
    except TypeError:
        return 0


def response_to_event_iterator(response_iterator: Iterable[Any]) -> Iterator[Event]:
    """The events of an iterator of watch responses, one by one."""
    for response in response_iterator:
        yield from response.events
