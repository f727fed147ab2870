"""python-etcd3's ``Lease`` handle, plus a keeper that keeps it alive through restarts and failovers
and says so — loudly — when the lease is gone."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

from .._proto import rpc_pb2
from .._steps import Call, apply, call, drive
from ..deadlines import deadline, remaining
from ..exceptions import Etcd3Exception, LeaseLostError
from ..metrics import METRICS

if TYPE_CHECKING:
    from .owner import SyncClient

log = logging.getLogger("resilient_etcd.lease")

# Known bugs the robustness tests plant, to show their checks catch them. Never set outside those tests.
_PLANTED = {"skip_lost_signal": False}


class LeaseState:
    """What a lease handle knows and decides whatever face it has: its id and TTL, the local estimate
    of its expiry, whether it is lost (and telling ``on_lost`` once), and the keeper's schedule."""

    def __init__(self, lease_id: int, ttl: int, etcd_client: Any = None) -> None:
        self.id = lease_id
        self.ttl = ttl
        self.etcd_client = etcd_client
        self._lost: str | None = None
        self._on_lost: list[Callable[[Any], None]] = []
        self._keeper: Any = None  # a thread, or an asyncio task
        self._refreshing = True
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.expires_at = time.monotonic() + ttl  # local, conservative estimate of the server's expiry

    def __repr__(self) -> str:
        state = f", lost: {self._lost}" if self._lost else ""
        return f"Lease(id={self.id:#x}, ttl={self.ttl}{state})"

    @property
    def is_lost(self) -> bool:
        """True once the lease is known to be gone (expired, revoked, abandoned)."""
        return self._lost is not None

    def check(self) -> None:
        """Raise :class:`LeaseLostError` if the lease is known to be gone."""
        if self._lost is not None:
            raise LeaseLostError(self.id, self._lost)

    def _refreshed(self, responses: list[rpc_pb2.LeaseKeepAliveResponse],
                   sent: float) -> list[rpc_pb2.LeaseKeepAliveResponse]:
        """Take the answers to a keep-alive sent at ``sent``: the new expiry, or the loss (TTL 0)."""
        for r in responses:
            if r.TTL <= 0:
                # (a keep-alive answered after the owner stopped the keeper, or revoked: not a loss to report)
                self._mark_lost("expired or revoked on the server (keep-alive answered TTL 0)",
                                notify=not self._stop.is_set())
                self.check()
            self.expires_at = sent + r.TTL
        return responses

    # ---- the keeper's schedule, the same for every face ----
    @property
    def refresh_interval(self) -> float:
        return max(self.ttl / 3.0, 0.2)

    def _sleep(self, interval: float) -> float:
        """How long the keeper sleeps now: never past the expiry, so the loss is signalled when the TTL
        runs out, before the server (which counts from the last keep-alive it received) drops the keys."""
        return 0 if self._lost is not None else max(0.0, min(interval, self.expires_at - time.monotonic()))

    def _due(self) -> float | None:
        """The keeper woke: seconds of TTL left, or None when the keeper is done (lost; now marked so)."""
        if self._lost is not None:
            return None
        left = self.expires_at - time.monotonic()
        if left <= 0:
            why = "no keep-alive got through" if self._refreshing else "refresh() was not called"
            self._mark_lost(f"{why} within its TTL ({self.ttl} s)")
            return None
        return left

    def _retry_after(self, left: float, error: BaseException) -> float:
        """A keep-alive failed with ``left`` seconds of TTL: try again soon, well before it runs out."""
        log.warning("lease %#x keep-alive failed (%.1f s of TTL left): %s", self.id, left, error,
                    extra={"lease": self.id, "event": "lease_keepalive_failed"})
        return min(0.5, max(left / 4, 0.05))

    def _keeper_steps(self) -> Generator[Call, Any, None]:
        """The keeper, as steps (see :mod:`resilient_etcd._steps`): ``_nap`` (True: stopped) and ``refresh``
        are the face's. It refreshes every ``ttl / 3``; after a failure, again soon, until the TTL says the
        lease is gone (then it is marked lost and ``on_lost`` told)."""
        interval = self.refresh_interval
        while True:
            if (yield call(self, "_nap", self._sleep(interval))):
                return
            left = self._due()
            if left is None or self._stop.is_set():
                return
            if not self._refreshing:
                interval = left + 0.01  # only watch the clock; refresh() moves expires_at
                continue
            try:
                with deadline(left):
                    yield call(self, "refresh")
                interval = self.refresh_interval
            except LeaseLostError:
                return
            except Exception as e:  # any failure: keep trying until the TTL says the lease is gone
                interval = self._retry_after(left, e)

    def _mark_lost(self, reason: str, *, notify: bool = True) -> None:
        with self._lock:
            if self._lost is not None:
                return
            self._lost = reason
            callbacks = list(self._on_lost) if notify else []
        self._stop.set()
        if notify and _PLANTED["skip_lost_signal"]:
            callbacks = []  # the planted bug: the loss is recorded but nobody is told
        if notify:
            METRICS.inc("lease_losses")
            log.error("lease %#x lost: %s", self.id, reason, extra={"lease": self.id, "event": "lease_lost"})
        for cb in callbacks:
            try:
                cb(self)
            except Exception:
                log.exception("on_lost callback failed")


class Lease(LeaseState):
    """A granted lease: ``id``, ``ttl``; ``refresh()``, ``revoke()``; ``remaining_ttl``,
    ``granted_ttl`` and ``keys`` ask the server each time.

    ``keep_alive(on_lost=…)`` starts a keeper thread that refreshes every ``ttl / 3`` seconds through
    the client's failover and retries. When the lease is gone — the server says it expired or was
    revoked, or no refresh got through before the TTL ran out — the lease flips to *lost*,
    ``on_lost(lease)`` is called once, and every later use raises :class:`LeaseLostError`.
    ``keep_alive(on_lost=…, refresh=False)`` only watches the clock: the lease expires unless the
    owner calls ``refresh()`` in time (python-etcd3's behaviour), and ``on_lost`` says when it did.
    """

    etcd_client: SyncClient | None

    def _client(self) -> SyncClient:
        if self.etcd_client is None:
            raise ValueError("this Lease is not bound to a client")
        self.check()
        return self.etcd_client

    def revoke(self) -> bool:
        """Revoke the lease now (its keys go with it); the keeper stops."""
        self._stop.set()
        self._client().revoke_lease(self.id)
        self._mark_lost("revoked", notify=False)
        return True

    def refresh(self) -> list[rpc_pb2.LeaseKeepAliveResponse]:
        """One keep-alive; raises :class:`LeaseLostError` when the server says the lease is gone."""
        sent = time.monotonic()
        return self._refreshed(list(self._client().refresh_lease(self.id)), sent)

    @property
    def remaining_ttl(self) -> int:
        """Seconds the server still gives the lease (asked each time)."""
        return int(self._client().get_lease_info(self.id).TTL)

    @property
    def granted_ttl(self) -> int:
        """The TTL the server granted (asked each time)."""
        return int(self._client().get_lease_info(self.id).grantedTTL)

    @property
    def keys(self) -> list[bytes]:
        """The keys attached to the lease (asked each time)."""
        return list(self._client().get_lease_info(self.id).keys)

    # ---- the keeper ----
    def keep_alive(self, on_lost: Callable[[Lease], None] | None = None, *, refresh: bool = True) -> Lease:
        """Start refreshing in the background (idempotent); ``on_lost`` is called once if it is lost.

        ``refresh=False``: no refreshes, only the loss signal when ``refresh()`` was not called in time.
        """
        with self._lock:
            if on_lost is not None:
                self._on_lost.append(on_lost)
            if self._keeper is None:
                self._refreshing = refresh
                self._keeper = threading.Thread(target=self._keep, name=f"resilient-etcd-lease-{self.id:x}",
                                                daemon=True)
                self._keeper.start()
        return self

    def stop_keep_alive(self, *, wait: bool = True) -> None:
        """Stop the keeper (the lease then expires at its TTL unless refreshed or revoked).

        ``wait``: also wait for a keep-alive in flight to end (up to 5 s, or what is left of a
        :func:`deadline` scope). Either way, an answer that comes after this call is not reported
        as a loss (``on_lost`` is for losses the owner did not ask for).
        """
        self._stop.set()
        keeper = self._keeper
        if wait and keeper is not None and keeper is not threading.current_thread():
            left = remaining()
            keeper.join(timeout=5 if left is None else max(0.0, min(5, left)))

    def abandon(self) -> None:
        """Give the lease up on a failure path: stop the keeper now, and revoke it in the background
        (bounded by its TTL, after which it is gone anyway) so the caller does not wait for a cluster
        that may be unreachable. Whatever it carried goes with it."""
        self.stop_keep_alive(wait=False)
        if self._lost is not None or self.etcd_client is None:
            return
        self._mark_lost("abandoned", notify=False)
        client, lease_id, ttl = self.etcd_client, self.id, self.ttl

        def revoke() -> None:
            try:
                client.revoke_lease(lease_id, timeout=ttl)
            except Exception as e:  # it expires by itself within its TTL
                log.info("lease %#x: revoke after a failure did not get through (%s); it expires within %d s",
                         lease_id, e, ttl, extra={"lease": lease_id, "event": "lease_abandoned"})

        threading.Thread(target=revoke, name=f"resilient-etcd-revoke-{lease_id:x}", daemon=True).start()

    def give_up(self) -> None:
        """Stop the keeper and revoke now; if the revoke does not get through, :meth:`abandon`."""
        self.stop_keep_alive(wait=False)
        if self._lost is not None:
            return
        try:
            self.revoke()
        except Etcd3Exception:
            self.abandon()

    def _keep(self) -> None:
        drive(self._keeper_steps(), apply)

    def _nap(self, seconds: float) -> bool:
        """The keeper's wait; True when stopped meanwhile."""
        return self._stop.wait(seconds)

