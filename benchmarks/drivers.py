"""Run a driver process and read its call records as they arrive."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
import time
from dataclasses import dataclass

from resilient_etcd.testing import ProcessRegistry

from .baselines import ClientSpec


@dataclass(frozen=True)
class Call:
    s: float
    e: float
    ok: bool
    ep: str | None
    err: str


class Driver:
    """A client loop in a child process; ``records`` fills as calls complete."""

    def __init__(self, spec: ClientSpec, endpoints: list[str], timeout: float | None) -> None:
        self.spec = spec
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_ROOT), env.get("PYTHONPATH", "")) if p)
        self._log = open(os.devnull, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(spec.argv(endpoints, timeout), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._log, env=env, start_new_session=True)
        ProcessRegistry._live.add(self.proc)  # reaped at exit even if a benchmark crashes
        self.calls: list[Call] = []
        self._new: queue.SimpleQueue[Call] = queue.SimpleQueue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                d = json.loads(line)
            except ValueError:
                continue
            c = Call(d["s"], d["e"], d["ok"], d.get("ep"), d.get("err", ""))
            self.calls.append(c)
            self._new.put(c)

    def wait_for(self, pred: object, timeout: float) -> Call | None:
        """The first *new* call for which ``pred(call)`` holds, or None after ``timeout`` seconds."""
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return None
            try:
                c = self._new.get(timeout=min(left, 0.2))
            except queue.Empty:
                if self.proc.poll() is not None:
                    return None
                continue
            if pred(c):  # type: ignore[operator]
                return c

    def warm(self, n: int = 10, timeout: float = 30) -> bool:
        """Wait for ``n`` consecutive successes."""
        streak = 0
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            c = self.wait_for(lambda c: True, end - time.monotonic())
            if c is None:
                return False
            streak = streak + 1 if c.ok else 0
            if streak >= n:
                return True
        return False

    def current_endpoint(self) -> str | None:
        for c in reversed(self.calls):
            if c.ok:
                return c.ep
        return None

    def stop(self) -> None:
        ProcessRegistry.kill(self.proc)
        self._log.close()


_ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent
