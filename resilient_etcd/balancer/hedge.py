"""Hedged reads, the pure parts: when to hedge, and how many hedges the load allows.

A read not answered within :meth:`CallTimes.hedge_delay` is sent again — to its own endpoint and to
another healthy one — and the first answer wins (see ``Transport``: grpcio's blocking call has no
handle to race, so the first attempt is cut at the delay and two copies race). The delay follows the
endpoint's recent call times as TCP's retransmission timer does (RFC 6298: smoothed time plus four
deviations, a high percentile without keeping samples), never under a floor. :class:`HedgeBudget`
caps the extra load like gRPC's retry throttling: every hedgeable read adds ``ratio`` tokens (up to
``cap``), a hedge takes one token per extra request, none is sent on an empty bucket.
"""

from __future__ import annotations

import threading


class CallTimes:
    """Smoothed call time and deviation of one endpoint's hedgeable reads (seconds)."""

    __slots__ = ("dev", "mean")

    def __init__(self) -> None:
        self.mean: float | None = None
        self.dev = 0.0

    def observe(self, seconds: float) -> None:
        if self.mean is None:
            self.mean, self.dev = seconds, seconds / 2
        else:
            self.dev = 0.75 * self.dev + 0.25 * abs(self.mean - seconds)
            self.mean = 0.875 * self.mean + 0.125 * seconds

    def hedge_delay(self, floor: float) -> float:
        """How long a read may go unanswered before it is hedged."""
        if self.mean is None:
            return floor
        delay = self.mean + 4 * self.dev
        return delay if delay > floor else floor


class HedgeBudget:
    """A token bucket for hedges (see the module docstring). Thread-safe."""

    def __init__(self, ratio: float, cap: float = 10.0) -> None:
        self.ratio = ratio
        self.cap = cap
        self.tokens = cap
        self._lock = threading.Lock()

    def deposit(self) -> None:
        """A hedgeable read was sent (approximate without the lock: a lost update costs one read's share)."""
        t = self.tokens + self.ratio
        self.tokens = t if t < self.cap else self.cap

    def affordable(self, extra: int) -> bool:
        return self.tokens >= extra

    def withdraw(self, extra: int) -> bool:
        """Take ``extra`` requests' worth; False (nothing taken) when the bucket holds less."""
        with self._lock:
            if self.tokens < extra:
                return False
            self.tokens -= extra
            return True
