"""python-etcd3's ``etcd3.events``."""

from .etcd.events import DeleteEvent, Event, PutEvent, WatchResponse, new_event

__all__ = ["DeleteEvent", "Event", "PutEvent", "WatchResponse", "new_event"]
