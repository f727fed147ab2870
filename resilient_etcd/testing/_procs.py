"""Child processes of the test bed: started in their own session, always reaped.

Every server the harness starts is registered here; an ``atexit`` hook kills
whatever is still running, so a crashed test run leaves no stray etcd or
toxiproxy behind (the context managers are the normal path).
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import threading
from collections.abc import Sequence
from typing import IO, Any, ClassVar


class ProcessRegistry:
    """Every server process the test bed started, so none outlives the session."""

    _live: ClassVar[set[subprocess.Popen[bytes]]] = set()
    _lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def spawn(
        cls, argv: Sequence[str], *, stdout: IO[Any], stderr: IO[Any], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start a server process in its own session and track it."""
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            env=env,
            start_new_session=True,
        )
        with cls._lock:
            cls._live.add(proc)
        return proc

    @classmethod
    def signal(cls, proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        """Send ``sig`` to a tracked process (ignored when it is gone)."""
        if proc.poll() is None:
            os.kill(proc.pid, sig)

    @classmethod
    def terminate(cls, proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
        """SIGTERM (after SIGCONT, in case it is paused), then SIGKILL after ``grace`` seconds."""
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.terminate()
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        cls._forget(proc)

    @classmethod
    def kill(cls, proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL a tracked process and reap it."""
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        cls._forget(proc)

    @classmethod
    def _forget(cls, proc: subprocess.Popen[bytes]) -> None:
        with cls._lock:
            cls._live.discard(proc)

    @classmethod
    def running(cls) -> list[int]:
        """The pids of tracked processes still running."""
        with cls._lock:
            return [p.pid for p in cls._live if p.poll() is None]

    @classmethod
    def kill_all(cls) -> None:
        """Kill every tracked process (at exit, or when a test leaked one)."""
        with cls._lock:
            procs = list(cls._live)
        for p in procs:
            cls.kill(p)


atexit.register(ProcessRegistry.kill_all)


class ServerProcess:
    """Process verbs shared by the servers of the test bed (an etcd member, a kube-apiserver).

    Subclasses set ``_proc`` when they start and ``label`` for messages.
    """

    _proc: subprocess.Popen[bytes] | None
    label: str

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        """Graceful stop (SIGTERM, SIGKILL after a grace period)."""
        if self._proc is not None:
            ProcessRegistry.terminate(self._proc)
            self._proc = None

    def kill(self) -> None:
        """SIGKILL, as a crash (scenario S1)."""
        if self._proc is not None:
            ProcessRegistry.kill(self._proc)
            self._proc = None

    def pause(self) -> None:
        """SIGSTOP: the kernel still accepts and ACKs, the process answers nothing (S2)."""
        if self._proc is None:
            from ._support import HarnessError

            raise HarnessError(f"{self.label} is not running")
        ProcessRegistry.signal(self._proc, signal.SIGSTOP)

    def resume(self) -> None:
        if self._proc is not None:
            ProcessRegistry.signal(self._proc, signal.SIGCONT)
