"""etcd's own history of the watched prefix, recorded while the run goes on.

The watch checks compare what our client delivered with what etcd recorded. Reading that back
after the run would forbid compaction faults (they erase it), so a raw watch — generated stubs, no
resilient_etcd, a fresh channel each time — follows the prefix from the start with ``prev_kv``,
moves to another member when a stream fails or stays quiet, and resumes after the last revision it
has whole. Compaction faults never compact past what it has.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass

import grpc

from resilient_etcd._proto import rpc_pb2, rpc_pb2_grpc
from resilient_etcd.etcd.models import prefix_range_end
from resilient_etcd.testing import EtcdCluster

QUIET = 3.0  # a stream that delivers nothing this long is replaced (traffic never stops that long)


@dataclass(frozen=True)
class Event:
    """One change, as etcd records it and as our watches must deliver it."""

    revision: int
    key: str
    kind: str  # PUT / DELETE
    value: str
    prev: tuple[int, str] | None  # the previous key-value's (mod_revision, value); None: there was none

    def without_prev(self) -> Event:
        return Event(self.revision, self.key, self.kind, self.value, None)


def from_proto(e: object) -> Event:
    kv, prev = e.kv, e.prev_kv  # type: ignore[attr-defined]
    kind = "DELETE" if e.type == 1 else "PUT"  # type: ignore[attr-defined]
    has_prev = e.HasField("prev_kv")  # type: ignore[attr-defined]
    return Event(kv.mod_revision, kv.key.decode(), kind, kv.value.decode(),
                 (prev.mod_revision, prev.value.decode()) if has_prev else None)


class Recorder:
    """Follows ``prefix`` from ``start`` until closed; ``events`` is etcd's history so far."""

    def __init__(self, cluster: EtcdCluster, prefix: str, start: int, seed: int) -> None:
        self.cluster = cluster
        key = prefix.encode()
        self._create = rpc_pb2.WatchCreateRequest(key=key, range_end=prefix_range_end(key), prev_kv=True)
        self.events: list[Event] = []
        self.deleted: dict[str, int] = {}  # key -> when the recorder first saw it deleted (monotonic ns)
        self.last = start - 1  # every revision up to this one is recorded whole
        self.errors: list[str] = []
        self.streams = 0
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="robustness-recorder", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            members = self.cluster.running_members()
            if not members:
                self._stop.wait(0.2)
                continue
            try:
                self._follow(self._rng.choice(members).direct_endpoint)
            except grpc.RpcError:
                pass  # that member failed or was frozen: another one
            except Exception as e:  # the harness's own failure must be seen, not hidden
                self.errors.append(repr(e))
                self._stop.wait(0.5)

    def _follow(self, endpoint: str) -> None:
        self.streams += 1
        with self.cluster.raw_channel(endpoint) as ch:
            md = self.cluster.auth_metadata(ch)
            create = rpc_pb2.WatchCreateRequest()
            create.CopyFrom(self._create)
            create.start_revision = self.last + 1
            stream = rpc_pb2_grpc.WatchStub(ch).Watch(iter([rpc_pb2.WatchRequest(create_request=create)]),
                                                      metadata=md)
            heard = [time.monotonic()]

            def watchdog() -> None:
                while not self._stop.wait(0.25) and stream.is_active():
                    if time.monotonic() - heard[0] > QUIET:
                        stream.cancel()
                        return
                stream.cancel()

            threading.Thread(target=watchdog, daemon=True).start()
            for resp in stream:
                heard[0] = time.monotonic()
                if resp.compact_revision:
                    self.errors.append(f"the recorder's history was compacted at {resp.compact_revision}")
                    self._stop.set()
                    return
                if resp.canceled:
                    return
                if resp.events:
                    now = time.monotonic_ns()
                    with self._lock:
                        fresh = [from_proto(e) for e in resp.events]
                        self.events += fresh
                        for e in fresh:
                            if e.kind == "DELETE":
                                self.deleted.setdefault(e.key, now)
                        self.last = resp.events[-1].kv.mod_revision

    def wait_for(self, revision: int, timeout: float = 60) -> None:
        """Until every revision up to ``revision`` is recorded."""
        deadline = time.monotonic() + timeout
        while self.last < revision:
            if time.monotonic() > deadline or self._stop.is_set():
                raise AssertionError(f"the recorder did not reach revision {revision} (at {self.last}; "
                                     f"errors: {self.errors})")
            time.sleep(0.05)  # polling with a deadline

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def history(self, end: int) -> list[Event]:
        with self._lock:
            return [e for e in self.events if e.revision <= end]
