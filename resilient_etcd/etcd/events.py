"""Watch events, shaped like python-etcd3's: ``PutEvent`` / ``DeleteEvent`` with the key-value's
attributes (``key``, ``value``, ``version``, ``create_revision``, ``mod_revision``, ``lease``) and
the previous key-value's as ``prev_*`` (when the watch asked for ``prev_kv``)."""

from __future__ import annotations

from typing import Any

from .._proto import kv_pb2


class Event:
    """One change to a key: ``key``, ``value``, ``version``, ``create_revision``, ``mod_revision``,
    ``lease``, and ``prev_value`` etc. when the watch asked for ``prev_kv``."""

    __slots__ = ("_event", "key")

    def __init__(self, event: kv_pb2.Event) -> None:
        self.key: bytes = event.kv.key
        self._event = event

    def __getattr__(self, name: str) -> Any:
        if name.startswith("prev_"):
            return getattr(self._event.prev_kv, name[5:])
        return getattr(self._event.kv, name)

    @property
    def revision(self) -> int:
        """The revision of the change (the key's ``mod_revision``)."""
        return int(self._event.kv.mod_revision)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(key={self.key!r}, value={self._event.kv.value!r}, " \
               f"mod_revision={self._event.kv.mod_revision})"


class PutEvent(Event):
    """A key was created or updated."""

    __slots__ = ()


class DeleteEvent(Event):
    """A key was deleted (or expired with its lease)."""

    __slots__ = ()


def new_event(event: kv_pb2.Event) -> Event:
    return DeleteEvent(event) if event.type == kv_pb2.Event.DELETE else PutEvent(event)


class WatchResponse:
    """What a watch callback receives: ``header`` and ``events`` (possibly empty: a progress notice)."""

    __slots__ = ("events", "header")

    def __init__(self, header: Any, events: list[Event]) -> None:
        self.header = header
        self.events = events

    def __repr__(self) -> str:
        return f"WatchResponse(revision={self.header.revision}, events={self.events})"
