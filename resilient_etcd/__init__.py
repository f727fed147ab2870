"""resilient_etcd: python-etcd3's API, but a restarted, frozen or blackholed member never hangs you.

Usage (docs/quickstart.md; its samples run against real servers in tests/test_docs.py)::

    import resilient_etcd as etcd3
    client = etcd3.client(endpoints=["m1:2379", "m2:2379", "m3:2379"])
"""

from . import exceptions
from .client import DEFAULT_TIMEOUT, Etcd3Client, client
from .deadlines import current_deadline, deadline, no_retry, remaining
from .etcd.election import Election, NotLeaderError
from .etcd.events import DeleteEvent, Event, PutEvent, WatchResponse
from .etcd.lease import Lease
from .etcd.lock import Lock
from .etcd.models import Alarm, KVMetadata, Member, Status
from .etcd.transactions import Transactions
from .exceptions import (
    AuthenticationError,
    ClientClosedError,
    ConfigurationError,
    ConnectionFailedError,
    ConnectionTimeoutError,
    DeadlineExceeded,
    EndpointsUnavailable,
    Etcd3Exception,
    InternalServerError,
    LeaseLostError,
    LockLostError,
    NoLeaderError,
    PreconditionFailedError,
    RevisionCompactedError,
    WatchTimedOut,
)
from .policies import HealthPolicy, KeepalivePolicy, RetryPolicy
from .transport.endpoints import Endpoint
from .transport.pool import EndpointStatus

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_TIMEOUT",
    "Alarm",
    "AuthenticationError",
    "ClientClosedError",
    "ConfigurationError",
    "ConnectionFailedError",
    "ConnectionTimeoutError",
    "DeadlineExceeded",
    "DeleteEvent",
    "Election",
    "Endpoint",
    "EndpointStatus",
    "EndpointsUnavailable",
    "Etcd3Client",
    "Etcd3Exception",
    "Event",
    "HealthPolicy",
    "InternalServerError",
    "KVMetadata",
    "KeepalivePolicy",
    "Lease",
    "LeaseLostError",
    "Lock",
    "LockLostError",
    "Member",
    "NoLeaderError",
    "NotLeaderError",
    "PreconditionFailedError",
    "PutEvent",
    "RetryPolicy",
    "RevisionCompactedError",
    "Status",
    "Transactions",
    "WatchResponse",
    "WatchTimedOut",
    "client",
    "current_deadline",
    "deadline",
    "exceptions",
    "no_retry",
    "remaining",
]
