"""One prober thread per process, whatever the number of clients.

Every client (an etcd connection pool, a Kubernetes ``ApiClient``) registers itself as a *driver*:
an object with ``probe_step(now) -> float`` that sends the probes due on its endpoints and says when
it wants to be called again (absolute, ``time.monotonic()``). The prober thread sleeps until the
earliest of those times, or until a driver is woken (a call started on an idle connection) or a
probe's completion is posted to it. Drivers are held weakly: a client nobody holds is collected and
its finalizer unregisters it. The thread (and the workers) end when no driver is left; the next
driver starts it again.

Probes that block (HTTP requests) run on a few daemon worker threads (:meth:`Prober.run_blocking`,
at most :data:`WORKERS`); gRPC probes are futures whose completions are posted back
(:meth:`Prober.post`). So a process holds at most ``1 + WORKERS`` probe threads for any number of
clients, and 100 idle clients cost one wake-up per heartbeat each, not a thread each.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
import weakref
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger("resilient_etcd.health")

WORKERS = 4  # threads for blocking probes, per process
_WORKER_IDLE = 30.0  # a worker with nothing to do for this long ends
_LONGEST_SLEEP = 60.0  # the prober's longest single wait (queue.get refuses an infinite timeout)


class Driver(Protocol):
    def probe_step(self, now: float) -> float:
        """Send what is due; return when to be called next (``time.monotonic()`` seconds)."""
        ...


class Registration:
    """A driver's place in the prober: :meth:`wake` it, :meth:`close` to leave."""

    __slots__ = ("at", "closed", "prober", "ref")

    def __init__(self, prober: Prober, driver: Driver) -> None:
        self.prober = prober
        self.ref = weakref.ref(driver)
        self.at = 0.0  # due now
        self.closed = False

    def wake(self) -> None:
        """Run the driver's step now (from any thread; costs one queue put)."""
        self.prober._queue.put(self)

    def close(self) -> None:
        self.prober.unregister(self)


class Waker:
    """Wakes a driver's prober step when a call starts on an idle endpoint — only while the driver sleeps
    past its tick (``dozing``, set by the driver's step); while it ticks it sees the call anyway, so
    back-to-back calls cost no wake-up."""

    __slots__ = ("dozing", "reg")

    def __init__(self) -> None:
        self.dozing = False
        self.reg: Registration | None = None

    def __call__(self) -> None:
        if self.dozing and self.reg is not None:
            self.dozing = False
            self.reg.wake()


class Prober:
    """The process's prober thread (see the module docstring); :data:`PROBER` is the one in use."""

    def __init__(self, name: str = "resilient-etcd-prober") -> None:
        self.name = name
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Lock()
        # a driver to step now; (driver, completion) to run, then step it; None: look at the drivers again
        self._queue: queue.SimpleQueue[Registration | tuple[Registration, Callable[[], None]] | None] = \
            queue.SimpleQueue()
        self._regs: set[Registration] = set()
        self._thread: threading.Thread | None = None
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()  # None: a worker ends
        self._workers = 0
        self._idle_workers = 0
        self._pending = 0  # jobs queued and not yet taken by a worker

    def register(self, driver: Driver) -> Registration:
        reg = Registration(self, driver)
        with self._lock:
            self._regs.add(reg)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
                self._thread.start()
        self._queue.put(None)  # due at once: a sleeping thread must see it
        return reg

    def unregister(self, reg: Registration) -> None:
        with self._lock:
            reg.closed = True
            self._regs.discard(reg)
        self._queue.put(None)  # let the thread see that it may be the last

    @property
    def drivers(self) -> int:
        return len(self._regs)

    def post(self, reg: Registration, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the prober thread, then the driver's step (a probe's completion: gRPC's
        callback threads only enqueue)."""
        self._queue.put((reg, fn))

    def run_blocking(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on one of at most :data:`WORKERS` daemon threads (a blocking probe)."""
        with self._lock:
            self._jobs.put(fn)
            self._pending += 1
            # an idle worker may be about to take another queued job: count jobs, not idle workers alone
            if self._pending > self._idle_workers and self._workers < WORKERS:
                self._workers += 1
                threading.Thread(target=self._work, name=f"{self.name}-worker", daemon=True).start()

    def _work(self) -> None:
        while True:
            with self._lock:
                self._idle_workers += 1
            try:
                job = self._jobs.get(timeout=_WORKER_IDLE)
            except queue.Empty:
                with self._lock:
                    self._idle_workers -= 1
                    if self._jobs.empty():
                        self._workers -= 1
                        return
                continue
            with self._lock:
                self._idle_workers -= 1
                if job is None:
                    self._workers -= 1
                    return
                self._pending -= 1
            try:
                job()
            except Exception:  # a probe's failure is its driver's to report; never the thread's end
                log.exception("blocking probe failed")
            del job
            with self._lock:
                if not self._regs and self._jobs.empty():  # nobody left to probe for
                    self._workers -= 1
                    return

    def _loop(self) -> None:
        try:
            while self._turn():
                pass
        finally:
            with self._lock:
                if self._thread is threading.current_thread():
                    self._thread = None  # (only if something unforeseen ended the loop: the next driver restarts it)

    def _turn(self) -> bool:
        """One wait and what follows it; False: no driver is left, the thread ends."""
        with self._lock:
            if not self._regs:  # the last driver left: no prober, no workers
                self._thread = None
                for _ in range(self._workers):
                    self._jobs.put(None)
                return False
            now = time.monotonic()
            wake_at = min(r.at for r in self._regs)
        try:  # (a driver with nothing ever due says inf: sleep in bounded steps)
            item = self._queue.get(timeout=min(max(0.0, wake_at - now), _LONGEST_SLEEP))
        except queue.Empty:
            item = None
        try:
            if isinstance(item, Registration):
                item.at = 0.0
            elif item is not None:
                reg, fn = item
                reg.at = 0.0
                fn()
            del item
            self._step_due()
        except Exception:  # one driver's bug must not end every client's probes
            log.exception("prober step failed")
        return True

    def _step_due(self) -> None:
        now = time.monotonic()
        with self._lock:
            self._regs -= {r for r in self._regs if r.ref() is None}  # collected without leaving
            due = [r for r in self._regs if r.at <= now]
        for r in due:
            driver = r.ref()
            if driver is None or r.closed:
                self.unregister(r)
                continue
            try:
                r.at = driver.probe_step(now)
            except Exception:
                log.exception("prober step failed")
                r.at = now + 1.0
            del driver


PROBER = Prober()

if hasattr(os, "register_at_fork"):  # a forked child has none of the parent's threads
    os.register_at_fork(after_in_child=PROBER._reset)
