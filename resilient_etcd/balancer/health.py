"""Per-endpoint health as a pure state machine: no I/O, no threads, time passed in.

States::

    HEALTHY ──probe late > dead/2──▶ SUSPECT ──answer──▶ HEALTHY
       │                               │
       └──── probe dead / hard failure ┴──▶ EJECTED ──backoff──▶ PROBING ──answer──▶ HEALTHY
                                                ▲                    │
                                                └──── probe fails ───┘

*dead* is ``max(policy.dead_after, policy.latency_factor * slowest recent probe answer)``:
a connection that keeps answering, however slowly, stays in. Silence is timed from the later of
the probe's sending and the last answer of any kind on the connection: a probe queued behind a
large answer that is still arriving (a page of a range read) says the connection is busy, not
dead. A hard failure (connection refused or reset, reported by a real call) ejects at once.
Each transition is returned to the driver, which logs it and acts on it (an ejection means:
close the channel, dial a fresh one).
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass
from typing import Protocol


class Timing(Protocol):
    """The numbers the state machine runs on (seconds): an endpoint's come from its client's
    :class:`~resilient_etcd.policies.HealthPolicy`, a Kubernetes resource path's from ``KubePolicy``."""

    @property
    def probe_interval(self) -> float: ...
    @property
    def idle_probe_interval(self) -> float: ...
    @property
    def dead_after(self) -> float: ...
    @property
    def latency_factor(self) -> float: ...
    @property
    def readmit_backoff(self) -> float: ...
    @property
    def readmit_backoff_max(self) -> float: ...
    @property
    def latency_window(self) -> int: ...


class State(enum.Enum):
    HEALTHY = "healthy"
    SUSPECT = "suspect"
    EJECTED = "ejected"
    PROBING = "probing"


@dataclass(frozen=True)
class Transition:
    old: State
    new: State
    reason: str

    @property
    def ejected(self) -> bool:
        return self.new is State.EJECTED


class EndpointHealth:
    """The health record of one endpoint. Every method takes ``now`` (monotonic seconds)."""

    def __init__(self, policy: Timing, now: float) -> None:
        self.policy = policy
        self.state = State.HEALTHY
        self.since = now
        self.latencies: deque[float] = deque(maxlen=policy.latency_window)  # silence before each answer
        self.round_trips: deque[float] = deque(maxlen=3)  # full probe round trips: what a new call would wait
        self.probe_sent_at: float | None = None
        self.last_probe_at = float("-inf")
        self.last_heard = float("-inf")  # when a real call on this endpoint was last answered
        self.consecutive_failures = 0
        self.last_error: str | None = None
        self.ejections = 0
        self.probe_timeouts = 0  # consecutive probes that got no answer in time
        self.readmit_at = 0.0
        self._maintenance = 0
        self.usable = True  # may carry traffic while other endpoints exist (see _refresh)
        self._confirm = False  # re-admitted: the next probe, sent at once, measures the path
        self._backoff = policy.readmit_backoff

    # ---- derived values ----
    @property
    def latency(self) -> float | None:
        """Mean of recent probe round trips (seconds)."""
        return sum(self.latencies) / len(self.latencies) if self.latencies else None

    def round_trip(self) -> float | None:
        """The recent probe round trip (mean of the last three), queueing included: for choosing."""
        return sum(self.round_trips) / len(self.round_trips) if self.round_trips else None

    def dead_time(self) -> float:
        """How long a probe may go unanswered: grows with observed latency, and doubles with every
        consecutive probe timeout (up to 32x) — a path slower than ``dead_after`` everywhere (all
        members slow) must not be redialled forever before a single answer can come back."""
        slowest = max(self.latencies, default=0.0)
        base = max(self.policy.dead_after, self.policy.latency_factor * slowest)
        return base * (1 << self.probe_timeouts)

    @property
    def maintenance(self) -> int:
        """Our own long actions running on this member (a defragment): no probes, no traffic."""
        return self._maintenance

    @maintenance.setter
    def maintenance(self, n: int) -> None:
        self._maintenance = n
        self._refresh()

    def _refresh(self) -> None:
        # ``usable`` is read on every call's pick: an attribute kept current, not a property computed there
        self.usable = self.state in (State.HEALTHY, State.SUSPECT) and not self._maintenance

    # ---- probes ----
    def probe_due(self, now: float, busy: bool = True) -> bool:
        """Is a probe worth sending? An ejected endpoint: at its re-admission time. A suspect or
        probing one: every ``probe_interval``. A healthy one: when it has been quiet (no probe
        answer, no call answered) for ``probe_interval`` while calls wait on it (``busy``), or for
        ``idle_probe_interval`` when none do."""
        return now >= self.next_probe_at(busy)

    def next_probe_at(self, busy: bool = True) -> float:
        """When :meth:`probe_due` turns true (inf: not while a probe is out or during maintenance)."""
        if self.probe_sent_at is not None or self.maintenance:
            return float("inf")
        if self.state is State.EJECTED:
            return self.readmit_at
        if self._confirm:
            return self.last_probe_at  # at once: was that re-admission answer a thaw or the path's latency?
        if self.state is not State.HEALTHY:
            return self.last_probe_at + self.policy.probe_interval
        interval = self.policy.probe_interval if busy else self.policy.idle_probe_interval
        return max(self.last_probe_at, self.last_heard) + interval

    def probe_sent(self, now: float) -> Transition | None:
        self.probe_sent_at = now
        self.last_probe_at = now
        if self.state is State.EJECTED:
            return self._move(State.PROBING, "re-admission probe", now)
        return None

    def silence(self, now: float) -> float:
        """How long the connection has been quiet with a probe out (0 when none is out): since the
        probe was sent or since the connection last answered anything, whichever is later."""
        if self.probe_sent_at is None:
            return 0.0
        return max(0.0, now - max(self.probe_sent_at, self.last_heard))

    def probe_answered(self, now: float) -> Transition | None:
        if self.state is State.PROBING:
            # A re-admission answer may come late because the path is slow, or because a frozen member
            # woke up and answered everything queued: only a second probe, answered at once, can tell.
            # Its time is not a latency sample (a thaw taken for latency stretched the dead time of the
            # next freeze to 3x the thaw), and the doubled dead time holds until the second answer.
            self._confirm = True
        else:
            if self.probe_sent_at is not None:
                self.latencies.append(self.silence(now))  # time behind a busy connection's answers is not latency
                self.round_trips.append(now - self.probe_sent_at)  # but a new call would wait behind them
            self._confirm = False
            self.probe_timeouts = 0
        self.probe_sent_at = None
        self.consecutive_failures = 0
        if self.state is not State.HEALTHY:
            self._backoff = self.policy.readmit_backoff
            return self._move(State.HEALTHY, "probe answered", now)
        return None

    def probe_failed(self, now: float, error: str, *, timed_out: bool = False) -> Transition | None:
        """The probe got no answer within the dead time (``timed_out``), or the connection failed.
        A timeout while the connection answered other calls in the meantime (:meth:`silence` shorter
        than the dead time) is no verdict: the probe waited behind them, and the next one asks again."""
        if timed_out and self.silence(now) < self.dead_time():
            self.probe_sent_at = None
            return None
        self.probe_sent_at = None
        if timed_out:
            self.probe_timeouts = min(self.probe_timeouts + 1, 5)
        return self.fail(now, error, hard=True)

    def tick(self, now: float) -> Transition | None:
        """Mark an endpoint suspect when its probe is late (ejection comes from the probe's deadline)."""
        quiet = self.silence(now)
        if self.state is State.HEALTHY and not self.maintenance and quiet > self.dead_time() / 2:
            return self._move(State.SUSPECT, f"probe unanswered, connection quiet for {quiet:.2f} s", now)
        return None

    # ---- passive signals from real calls ----
    def succeeded(self, now: float) -> Transition | None:
        """A real call was answered on this endpoint's current connection: it is alive."""
        self.consecutive_failures = 0
        if self.state is State.HEALTHY:
            return None
        self._backoff = self.policy.readmit_backoff
        return self._move(State.HEALTHY, "a call was answered", now)

    def fail(self, now: float, error: str, *, hard: bool) -> Transition | None:
        """A failure seen on this endpoint. ``hard``: the connection itself is gone or hung."""
        self.consecutive_failures += 1
        self.last_error = error
        if not hard:
            return None
        if self.state is State.EJECTED:
            return None
        if self.state is State.PROBING:
            self._backoff = min(self._backoff * 2, self.policy.readmit_backoff_max)
        self.ejections += 1
        self.readmit_at = now + self._backoff
        return self._move(State.EJECTED, error, now)

    def _move(self, new: State, reason: str, now: float) -> Transition:
        t = Transition(self.state, new, reason)
        self.state = new
        self.since = now
        self._refresh()
        return t
