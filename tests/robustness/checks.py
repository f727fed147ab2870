"""The checks run on a robustness history (porcupine runs separately, in Go).

Each check returns a list of violations, one line each; an empty list is a pass. Watch properties
follow etcd's own robustness tests: ordered, unique, atomic, reliable, resumable, ``prev_kv``
correct, filters respected — all against the :class:`~.recorder.Recorder`'s record of etcd.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from .recorder import Event
from .traffic import History, Hold

NOPUT, NODELETE = 0, 1  # etcd's WatchCreateRequest.FilterType


@dataclass
class Delivery:
    """One event as a watch delivered it: which response carried it, and when (monotonic ns)."""

    event: Event
    response: int
    at: int


@dataclass
class Segment:
    """One watch from ``start``: what it delivered and how it ended. ``compacted``: the revision a
    ``RevisionCompactedError`` named, if the watch ended with one; ``end``: the last revision it
    was responsible for (the run's last revision, unless it ended early)."""

    name: str
    start: int
    prev_kv: bool = False
    filters: tuple[int, ...] = ()
    deliveries: list[Delivery] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    compacted: int | None = None
    end: int | None = None
    excused: list[tuple[int, int]] = field(default_factory=list)  # revision ranges a compaction took

    def compaction_gap(self) -> tuple[int, int] | None:
        """The revisions this watch could not deliver because a compaction took them: after the last
        it delivered, before the compacted revision it was told of."""
        if self.compacted is None:
            return None
        last = max((d.event.revision for d in self.deliveries), default=self.start - 1)
        return (last + 1, self.compacted - 1)


def check_watch(seg: Segment, truth: list[Event], compacted_to: int = 0) -> list[str]:
    """One watch segment against etcd's history. ``compacted_to``: the highest revision the run
    compacted to. etcd reads an event's ``prev_kv`` at the revision before it and leaves it out when
    that revision is compacted away (its watch server ignores the read's error), so an event with no
    ``prev_kv`` whose previous revision lies below a compaction is as etcd sends it."""
    name = f"watch {seg.name} from {seg.start}"
    problems: list[str] = []
    got = [d.event for d in seg.deliveries]
    revisions = [e.revision for e in got]
    if revisions != sorted(revisions):
        back = next(i for i in range(1, len(revisions)) if revisions[i] < revisions[i - 1])
        problems.append(f"{name}: ordered: revision {revisions[back]} after {revisions[back - 1]}")
    counts = Counter((e.revision, e.key) for e in got)
    twice = [k for k, n in counts.items() if n > 1]
    if twice:
        problems.append(f"{name}: unique: {len(twice)} events delivered more than once, first {sorted(twice)[:3]}")
    carriers: dict[int, set[int]] = defaultdict(set)
    for d in seg.deliveries:
        carriers[d.event.revision].add(d.response)
    split = sorted(r for r, c in carriers.items() if len(c) > 1)
    if split:
        problems.append(f"{name}: atomic: revisions split across responses, first {split[:3]}")
    end = seg.end if seg.end is not None else (revisions[-1] if revisions else seg.start - 1)
    expected = [e for e in truth if seg.start <= e.revision <= end and _passes(e, seg.filters)]
    if not seg.prev_kv:
        expected = [e.without_prev() for e in expected]
    else:
        bare = {(e.revision, e.key) for e in got if e.prev is None}
        expected = [e.without_prev() if (e.revision, e.key) in bare and e.revision - 1 < compacted_to else e
                    for e in expected]
    want, have = set(expected), {e for e in got if e.revision <= end}  # (leases expiring after the run's end)
    missing = sorted(want - have, key=lambda e: e.revision)
    # the watch said the history it needed was gone: the events it could not have had are excused
    gaps = seg.excused + [g for g in [seg.compaction_gap()] if g is not None]
    missing = [e for e in missing if not any(lo <= e.revision <= hi for lo, hi in gaps)]
    if missing:
        problems.append(f"{name}: reliable: {len(missing)} events never delivered, first {missing[:2]}")
    wrong = sorted(have - want, key=lambda e: e.revision)
    if wrong:
        by_rev = {(e.revision, e.key): e for e in expected}
        first = wrong[0]
        problems.append(f"{name}: {len(wrong)} events not as etcd recorded them (prev_kv, filter or value), "
                        f"first {first} where etcd has {by_rev.get((first.revision, first.key))}")
    problems += [f"{name}: error {e}" for e in seg.errors]
    return problems


def _passes(e: Event, filters: tuple[int, ...]) -> bool:
    return not ((e.kind == "PUT" and NOPUT in filters) or (e.kind == "DELETE" and NODELETE in filters))


def check_resumable(segments: list[Segment], truth: list[Event], start: int, end: int,
                    compacted_to: int = 0) -> list[str]:
    """A watch re-created by its user after the last revision it delivered, over and over: together
    the pieces are exactly etcd's history (nothing lost or repeated at the seams)."""
    joined = Segment("resumed by its user", start, end=end)
    response = 0
    for seg in segments:
        for d in seg.deliveries:
            joined.deliveries.append(Delivery(d.event, response + d.response, d.at))
        response += 1_000_000
        joined.errors += seg.errors
        gap = seg.compaction_gap()
        if gap is not None:
            joined.excused.append(gap)
    return check_watch(joined, truth, compacted_to)


def check_unique_writes(truth: list[Event], keys: set[str]) -> list[str]:
    """Every value is written once by the traffic; etcd must have applied each at most once."""
    applied = Counter(e.value for e in truth if e.kind == "PUT" and e.key in keys)
    twice = sorted(v for v, n in applied.items() if n > 1)
    return [f"unique writes: {len(twice)} values applied more than once, first {twice[:3]}"] if twice else []


def check_serializable(history: History) -> list[str]:
    """A serializable read may be stale, but its value must be one somebody wrote."""
    written = {o["value"] for o in history.ops if o["op"] in ("put", "cas")}
    bad = sorted({v for _, v in history.serial if v is not None and v not in written})
    return [f"serializable reads returned {len(bad)} values never written, first {bad[:3]}"] if bad else []


def check_deadlines(history: History, t0: int = 0) -> list[str]:
    """No call may return later than its deadline + 100 ms, beyond the time the interpreter itself was
    stalled in that window (the canary's late wake-ups: a saturated 2-core machine running three
    etcd members, toxiproxy and two busy Python processes)."""
    problems = []
    for what, called, returned, limit, pid, stack in history.overruns:
        deadline = called + int(limit * 1e9)
        stalled = sum(late for at, late, p in history.stalls if p == pid and deadline - late <= at <= returned)
        over = returned - deadline
        if over > 100_000_000 + stalled:
            problems.append(f"deadline: {what} called at {(called - t0) / 1e9:.2f} s (pid {pid}) returned "
                            f"{over / 1e6:.0f} ms after its {limit:g} s deadline (the interpreter stalled "
                            f"{stalled / 1e6:.0f} ms of it); 50 ms late it was at:\n{stack}")
    return problems


def check_leases(history: History, gone: dict[str, int], t0: int) -> list[str]:
    """A lease's key vanishing before we revoked it means the lease expired: the client must have
    said so (``on_lost``) by the time the recorder (on its own, unpartitioned connections) saw the
    key go. ``gone``: key -> when the recorder saw it deleted (monotonic ns)."""
    problems = []
    for rec in history.leases:
        seen = gone.get(rec.key)
        if seen is None or (rec.revoke_called is not None and rec.revoke_called <= seen):
            continue
        at = f"+{(seen - t0) / 1e9:.2f} s"
        if rec.lost is None:
            problems.append(f"lease {rec.lease:#x} (ttl {rec.ttl} s): its key vanished at {at} and on_lost "
                            "was never called")
        elif rec.lost > seen:
            problems.append(f"lease {rec.lease:#x} (ttl {rec.ttl} s): its key vanished at {at}, on_lost came "
                            f"{(rec.lost - seen) / 1e6:.0f} ms later")
    return problems


def check_exclusion(name: str, holds: list[Hold]) -> tuple[list[str], list[str]]:
    """No two holders at once, unless the later one's fencing revision is higher (a holder cut off
    from the cluster believes it holds until its TTL says otherwise; fencing protects what it
    guards). Returns (violations, the fenced overlap windows to report)."""
    problems: list[str] = []
    windows: list[str] = []
    ordered = sorted(holds, key=lambda h: h.start)
    for i, a in enumerate(ordered):
        for b in ordered[i + 1:]:
            if b.start >= a.end:
                break
            overlap = (min(a.end, b.end) - b.start) / 1e6
            text = (f"{name}: {a.who} (rev {a.revision}, {a.how}) and {b.who} (rev {b.revision}) both held it "
                    f"for {overlap:.0f} ms")
            (windows if b.revision > a.revision else problems).append(text)
    return problems, windows
