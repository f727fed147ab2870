"""resilient_etcd: python-etcd3's API, but a restarted, frozen or blackholed member never hangs you.

Usage (docs/quickstart.md; its samples run against real servers in tests/test_docs.py)::

    import resilient_etcd as etcd3
    client = etcd3.client(endpoints=["m1:2379", "m2:2379", "m3:2379"])
"""

import logging as _logging
import os as _os

# grpc-core logs failed handshakes and the like to stderr (hundreds of lines for one wrong CA); our
# errors carry the cause. GRPC_VERBOSITY set by the user wins (it must be set before grpc is imported).
_os.environ.setdefault("GRPC_VERBOSITY", "NONE")

from . import etcdrpc, events, exceptions, leases, locks, members, transactions, utils, watch
from ._base import DEFAULT_TIMEOUT
from ._compat import install_as_etcd3, uninstall_as_etcd3
from .client import Etcd3Client, MultiEndpointEtcd3Client, SRVDiscoveryEtcd3Client, client
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
    EndpointConfigurationError,
    EndpointsUnavailable,
    Etcd3Exception,
    InternalServerError,
    LeaseLostError,
    LockLostError,
    NoLeaderError,
    NoServerAvailableError,
    PreconditionFailedError,
    RevisionCompactedError,
    WatchTimedOut,
)
from .policies import HealthPolicy, KeepalivePolicy, RetryPolicy
from .transport.endpoints import Endpoint
from .transport.pool import EndpointStatus

# a library logs, the application decides where to: nothing reaches stderr unless logging is configured
_logging.getLogger("resilient_etcd").addHandler(_logging.NullHandler())

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
    "EndpointConfigurationError",
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
    "MultiEndpointEtcd3Client",
    "NoLeaderError",
    "NoServerAvailableError",
    "NotLeaderError",
    "PreconditionFailedError",
    "PutEvent",
    "RetryPolicy",
    "RevisionCompactedError",
    "SRVDiscoveryEtcd3Client",
    "Status",
    "Transactions",
    "WatchResponse",
    "WatchTimedOut",
    "client",
    "current_deadline",
    "deadline",
    "etcdrpc",
    "events",
    "exceptions",
    "install_as_etcd3",
    "leases",
    "locks",
    "members",
    "no_retry",
    "remaining",
    "transactions",
    "uninstall_as_etcd3",
    "utils",
    "watch",
]
