"""An example operator run as a subprocess that prints one JSON event per line."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import threading
import time
from typing import Any


class Replica:
    """``wait(event, timeout)`` consumes events up to the named one; ``drain()`` takes the rest;
    ``seen`` is everything consumed so far. Started with stdin closed (as under nohup, systemd or in a
    pod) and stopped with SIGTERM, as the examples' READMEs say; ``stop()`` returns how long it took."""

    EXIT_BOUND = 2.0  # the examples aim at 1 s; the bound is generous for a loaded machine

    def __init__(self, name: str, argv: list[str]) -> None:
        self.name = name
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
        self.events: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        self.seen: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.events.put(json.loads(line))

    def wait(self, event: str, timeout: float) -> dict[str, Any] | None:
        end = time.monotonic() + timeout
        while (left := end - time.monotonic()) > 0:
            try:
                e = self.events.get(timeout=left)
            except queue.Empty:
                return None
            self.seen.append(e)
            if e["event"] == event:
                return e
        return None

    def drain(self) -> list[dict[str, Any]]:
        while True:
            try:
                self.seen.append(self.events.get_nowait())
            except queue.Empty:
                return self.seen

    def stop(self) -> float:
        os.kill(self.proc.pid, signal.SIGCONT)  # a test may have frozen it
        started = time.monotonic()
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        took = time.monotonic() - started
        assert self.proc.returncode == 0, f"{self.name} exited with {self.proc.returncode}"
        assert took < self.EXIT_BOUND, f"{self.name} took {took:.2f} s to exit on SIGTERM"
        return took
