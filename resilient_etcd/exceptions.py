"""Exceptions: python-etcd3's names (so ``except etcd3.exceptions.X`` keeps working) plus ours.

Hierarchy::

    Etcd3Exception
    ├── ConnectionFailedError          gRPC UNAVAILABLE: the member could not be reached
    │   ├── EndpointsUnavailable       no endpoint answered within the deadline (also a DeadlineExceeded)
    │   ├── EndpointConfigurationError no endpoint can work as configured (DNS, TLS): raised at once
    │   ├── ClientClosedError          the client (or its watch) was closed
    │   └── NoLeaderError              no raft leader (on watches: transient, the watch resumes)
    ├── ConnectionTimeoutError         gRPC DEADLINE_EXCEEDED
    │   └── DeadlineExceeded           the caller's deadline ran out (before or during I/O)
    ├── InternalServerError            gRPC INTERNAL / DATA_LOSS
    ├── PreconditionFailedError        gRPC FAILED_PRECONDITION
    ├── RevisionCompactedError         a revision was compacted (``compacted_revision``)
    ├── WatchTimedOut                  a ``watch_once`` timed out
    ├── AuthenticationError            bad credentials or permission denied
    ├── LeaseLostError                 a kept lease expired or was revoked (``lease_id``, ``reason``)
    ├── LockLostError                  a held lock was lost with its lease
    └── ConfigurationError (also ValueError)   bad arguments at construction
"""

from __future__ import annotations


class Etcd3Exception(Exception):
    """Base of every error this library raises. ``detail_message`` keeps the server's text."""

    def __init__(self, detail_message: str | None = None, *args: object) -> None:
        self.detail_message = detail_message
        super().__init__(detail_message, *args)

    def __str__(self) -> str:
        return self.detail_message or self.__class__.__name__


class WatchTimedOut(Etcd3Exception):
    """``watch_once`` saw no event within its timeout."""


class InternalServerError(Etcd3Exception):
    """gRPC INTERNAL or DATA_LOSS from the server."""


class ConnectionFailedError(Etcd3Exception):
    """gRPC UNAVAILABLE: the member could not be reached (python-etcd3's name)."""


class ConnectionTimeoutError(Etcd3Exception):
    """gRPC DEADLINE_EXCEEDED (python-etcd3's name; :class:`DeadlineExceeded` is ours)."""


class PreconditionFailedError(Etcd3Exception):
    """gRPC FAILED_PRECONDITION from the server."""


class RevisionCompactedError(Etcd3Exception):
    """The requested revision is older than the last compaction."""

    def __init__(self, compacted_revision: int, detail_message: str | None = None) -> None:
        self.compacted_revision = compacted_revision
        super().__init__(detail_message or f"revision compacted (compacted revision {compacted_revision})")


class NoLeaderError(ConnectionFailedError):
    """The member has no raft leader (no quorum). On a watch this is a *transient* notice: the watch
    stays registered and resumes by itself when a leader is back (``transient`` is True)."""

    transient = True


class DeadlineExceeded(ConnectionTimeoutError):
    """The deadline for the call (scope, per-call ``timeout`` or client default) ran out."""


class NoServerAvailableError(Etcd3Exception):
    """python-etcd3 master's "no endpoint available": here raised as :class:`EndpointsUnavailable`,
    which this catches."""


class EndpointsUnavailable(ConnectionFailedError, DeadlineExceeded, NoServerAvailableError):
    """The deadline ran out with no endpoint answering (refused, unreachable, or silent); ``errors`` maps
    each endpoint to its last error. python-etcd3's ``ConnectionFailedError`` (and master's
    ``NoServerAvailableError``) and our :class:`DeadlineExceeded` all catch it."""

    def __init__(self, detail_message: str, errors: dict[str, str] | None = None) -> None:
        self.errors = dict(errors or {})
        super().__init__(detail_message)


class EndpointConfigurationError(ConnectionFailedError):
    """No endpoint can work as configured, and waiting will not change that: a host name that does not
    resolve, a certificate that fails verification, TLS spoken to a plaintext port or the reverse.
    Raised at once, not at the deadline; ``errors`` maps each endpoint to its cause."""

    def __init__(self, detail_message: str, errors: dict[str, str] | None = None) -> None:
        self.errors = dict(errors or {})
        super().__init__(detail_message)


class ClientClosedError(ConnectionFailedError):
    """The client was closed: the call was not sent (or the watch it fed has ended)."""


class AuthenticationError(Etcd3Exception):
    """Authentication failed (wrong user/password) or the user lacks permission."""


class LeaseLostError(Etcd3Exception):
    """The lease is gone (expired, revoked, or never refreshed in time); ``lease_id`` and ``reason``."""

    def __init__(self, lease_id: int, reason: str) -> None:
        self.lease_id, self.reason = lease_id, reason
        super().__init__(f"lease {lease_id:#x} lost: {reason}")


class LockLostError(Etcd3Exception):
    """A lock was lost with its lease: someone else may hold it now."""


class ConfigurationError(Etcd3Exception, ValueError):
    """An argument is invalid; raised when the client or policy is built, never later."""


__all__ = [
    "AuthenticationError",
    "ClientClosedError",
    "ConfigurationError",
    "ConnectionFailedError",
    "ConnectionTimeoutError",
    "DeadlineExceeded",
    "EndpointConfigurationError",
    "EndpointsUnavailable",
    "Etcd3Exception",
    "InternalServerError",
    "LeaseLostError",
    "LockLostError",
    "NoLeaderError",
    "NoServerAvailableError",
    "PreconditionFailedError",
    "RevisionCompactedError",
    "WatchTimedOut",
]
