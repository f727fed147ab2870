"""Which endpoint a call goes to: pure, no I/O, no threads, no clock of its own (``now`` passed in).

A :class:`Balancer` holds the endpoints of one client (anything with the :class:`Peer` attributes:
the gRPC transport's connections, the Kubernetes client's apiservers) and the one in use. It does
not lock: its owner holds its own lock around every call except the lock-free :meth:`Balancer.pick`
fast path, which reads one attribute.

* **Choice.** The endpoint in use while it is usable; else the next healthy one, then the next
  suspect one (in order after the one in use, so every endpoint gets its turn); nothing usable
  (*panic*): every endpoint stays in play, the least recently ejected first, and deadlines speak.
* **Latency.** A slow but alive endpoint in use gives way to one whose recent probe round trips are
  under half of its own and :data:`SLOW_MARGIN` shorter — no ejection; it wins traffic back like any
  other endpoint once its own probes are fast. When every path is slow, moves are at least
  :data:`SLOW_HOLD` apart.
* **Probe schedule.** :meth:`Balancer.probe_round` marks late probes suspect and names the endpoints
  a probe buys something on (see :meth:`EndpointHealth.probe_due`); :meth:`Balancer.next_wake` says
  when to look again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Generic, Protocol, TypeVar

from .health import EndpointHealth, State, Transition

# latency-aware choice: the endpoint in use gives way when its round trips are over twice the best
# other's and at least this much longer (loopback noise never reaches it)
SLOW_MARGIN = 0.02
# ... and not within this many seconds of the last such move: when every path is slow (the endpoint
# in use only looks slower because our own large answers queue ahead of its probes), moves are rare
SLOW_HOLD = 5.0
SLOW_PROBE_EVERY = 1.0  # a slow call asks for a probe of its connection at most this often
MAX_SLEEP = 30.0  # the longest a driver sleeps with nothing due (a call starting wakes it)


class Peer(Protocol):
    """What the balancer needs of an endpoint."""

    name: str
    health: EndpointHealth
    want_probe: bool  # a call took long: measure its round trip against the others

    @property
    def outstanding(self) -> int:
        """Calls waiting on it now."""


P = TypeVar("P", bound=Peer)


class Balancer(Generic[P]):
    """The endpoints of one client and the one in use (see the module docstring)."""

    def __init__(self, peers: Sequence[P], on_move: Callable[[P, P, str], None] = lambda old, new, why: None) -> None:
        if not peers:
            raise ValueError("a balancer needs at least one endpoint")
        self.peers: list[P] = list(peers)  # replaced whole, never changed in place (pick() reads it unlocked)
        self.active: P = self.peers[0]
        self.moved_at = float("-inf")  # the last move for slowness
        self._on_move = on_move  # (from, to, why): the owner logs and counts it

    # ---- choosing ----
    def pick(self, avoid: P | None = None) -> P | None:
        """The endpoint in use if it is usable and not ``avoid``; None: the owner calls :meth:`choose`
        under its lock."""
        a = self.active
        if a is not avoid and a.health.usable:
            return a
        return None

    def choose(self, avoid: P | None = None) -> P:
        """Healthy, then suspect, in order after the one in use; panic: the least recently ejected."""
        peers = self.peers
        n = len(peers)
        start = peers.index(self.active) if self.active in peers else 0
        order = [peers[(start + i) % n] for i in range(n)]
        for wanted in (State.HEALTHY, State.SUSPECT):
            for p in order:
                if p is not avoid and p.health.state is wanted and not p.health.maintenance:
                    return self.activate(p, "the endpoint in use is out")
        candidates = [p for p in order if p is not avoid] or order
        return self.activate(min(candidates, key=lambda p: p.health.since), "no endpoint is usable")

    def activate(self, p: P, why: str) -> P:
        if p is not self.active:
            old, self.active = self.active, p
            self._on_move(old, p, why)
        return p

    def replace(self, peers: Sequence[P]) -> None:
        """A new endpoint set (endpoint sync); the one in use stays if it is still there."""
        if not peers:
            raise ValueError("a balancer needs at least one endpoint")
        old = self.active
        self.peers = list(peers)
        if old not in self.peers:
            self.active = self.peers[0]
            if not self.active.health.usable:
                self.choose()
            self._on_move(old, self.active, "the endpoint in use was removed")

    def compare_round_trips(self, now: float) -> float:
        """Latency-aware choice after a probe answer: maybe move off a slow endpoint in use. Returns
        how long a call must take to count as slow (it then asks for a probe of its connection)."""
        best = self._fastest()
        if best is None:
            return SLOW_MARGIN
        slow_call = SLOW_MARGIN + 2 * best[0]
        a = self.active
        faster = self.faster_than(a)
        if faster is not None and now - self.moved_at > SLOW_HOLD:
            self.moved_at = now
            self.activate(faster, f"{a.name} answers in {_recent(a) * 1000:.0f} ms, "
                                  f"{faster.name} in {(faster.health.round_trip() or 0) * 1000:.0f} ms")
        return slow_call

    def faster_than(self, p: P) -> P | None:
        """The healthy endpoint to use instead of ``p`` when ``p`` is slow: its last two probe round trips
        both over twice the other's recent round trip and :data:`SLOW_MARGIN` longer; else None."""
        if len(p.health.round_trips) < 2:
            return None
        best = self._fastest(but=p)
        if best is None:
            return None
        best_rt, q = best
        recent = _recent(p)  # two slow answers in a row, not one outlier
        return q if recent > 2 * best_rt and recent - best_rt > SLOW_MARGIN else None

    def _fastest(self, but: P | None = None) -> tuple[float, P] | None:
        timed = [(rt, p) for p in self.peers if p is not but and p.health.state is State.HEALTHY
                 and not p.health.maintenance and (rt := p.health.round_trip()) is not None]
        return min(timed, key=lambda x: x[0]) if timed else None

    # ---- probes ----
    def probe_round(self, now: float, *, hunting: bool = False) -> tuple[list[tuple[P, Transition]], list[P]]:
        """One look at every endpoint: the transitions of late probes (suspect), and the endpoints to
        probe now — each is marked as probed (``probe_sent``), and its transition, if any, is listed too.
        ``hunting``: probe everything at the busy rate (the owner looks for something, e.g. a leader)."""
        moves: list[tuple[P, Transition]] = []
        send: list[P] = []
        for p in self.peers:
            h = p.health
            if (t := h.tick(now)) is not None:
                moves.append((p, t))
            due = h.probe_due(now, busy=p.outstanding > 0 or hunting)
            if not due and hunting and h.usable:
                # the owner needs what a probe answers (the raft leader's name), not proof of life: answers to
                # reads on the other members must not hold their probes back
                due = h.probe_sent_at is None and now - h.last_probe_at >= h.policy.probe_interval
            if not due and p.want_probe:  # calls were slow: how slow is the connection itself?
                due = h.probe_sent_at is None and not h.maintenance and now - h.last_probe_at >= SLOW_PROBE_EVERY
            if due:
                p.want_probe = False
                if (t := h.probe_sent(now)) is not None:
                    moves.append((p, t))
                send.append(p)
        return moves, send

    def next_wake(self, now: float, tick: float, *, hunting: bool = False) -> float:
        """When the owner should run :meth:`probe_round` again (absolute): ``now + tick`` while anything
        waits, is out or is unwell (suspect marking needs it), else at the next heartbeat."""
        due = now + MAX_SLEEP
        for p in self.peers:
            h = p.health
            if p.outstanding or h.probe_sent_at is not None or h.state is not State.HEALTHY or hunting:
                return now + tick
            due = min(due, h.next_probe_at(busy=False))
            if p.want_probe:
                due = min(due, h.last_probe_at + SLOW_PROBE_EVERY)
        return max(now + tick, due)


def _recent(p: Peer) -> float:
    trips = p.health.round_trips
    return min(trips[-1], trips[-2])
