"""``ApiClient``: the official client's ``ApiClient`` with deadlines, TCP liveness and failover.

What changes for every generated ``*Api`` class that uses it:

* **socket options** on every apiserver connection: TCP keepalive (idle/interval/count) and
  ``TCP_USER_TIMEOUT``, so a dead peer is noticed by the kernel in seconds, not ~15 minutes;
* **deadlines**: every non-watch call gets ``min(deadline() scope, _request_timeout, default)``;
  a watch gets the scope (or its own ``_request_timeout``) only;
* **read-idle timeout** for non-watch calls: a response that stops *arriving* for
  ``read_idle_timeout`` seconds is a hung connection (urllib3's read timeout is per ``recv``, so
  a slow but progressing LIST is never cut);
* **failover and retries** (tenacity): safe requests (GET, HEAD, watch establishment) move to the
  next apiserver on connection errors and hangs, and are retried on 429/5xx honouring
  ``Retry-After`` within the deadline; other verbs are retried only when the connection could not
  be made (the request never left).

Not here yet: per-connection liveness on *quiet watches* (needs HTTP/2 PINGs or similar) and
active ``/readyz`` probes; see the project notes.
"""

from __future__ import annotations

import copy
import logging
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client import rest
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_base, wait_random_exponential

from .. import deadlines
from ..exceptions import ConfigurationError, DeadlineExceeded
from ..policies import _count, _seconds
from ..transport.retry import stop_when

log = logging.getLogger("resilient_etcd.kube")

_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_CONNECT_ERRORS = (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError)
_BROKEN_ERRORS = (urllib3.exceptions.ProtocolError, urllib3.exceptions.ReadTimeoutError,
                  urllib3.exceptions.SSLError, urllib3.exceptions.MaxRetryError)


@dataclass(frozen=True)
class KubePolicy:
    """Timeouts and TCP liveness for the apiserver connections (seconds; validated when built)."""

    connect_timeout: float = 2.0
    read_idle_timeout: float = 2.5
    default_timeout: float = 30.0
    keepalive_idle: int = 5
    keepalive_interval: int = 2
    keepalive_count: int = 3
    user_timeout: float = 10.0
    max_retry_after: float = 10.0

    def __post_init__(self) -> None:
        for name in ("connect_timeout", "read_idle_timeout", "default_timeout", "user_timeout", "max_retry_after"):
            _seconds(self, name)
        for name in ("keepalive_idle", "keepalive_interval", "keepalive_count"):
            _count(self, name)

    def socket_options(self) -> list[tuple[int, int, int]]:
        opts = list(urllib3.connection.HTTPConnection.default_socket_options)
        opts.append((socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1))
        for name, value in (("TCP_KEEPIDLE", self.keepalive_idle), ("TCP_KEEPINTVL", self.keepalive_interval),
                            ("TCP_KEEPCNT", self.keepalive_count),
                            ("TCP_USER_TIMEOUT", int(self.user_timeout * 1000))):
            if hasattr(socket, name):
                opts.append((socket.IPPROTO_TCP, getattr(socket, name), value))
        return opts


def _check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"bad apiserver URL {url!r}: expected http(s)://host[:port]")
    try:
        parts.port  # noqa: B018 - validates the port
    except ValueError:
        raise ConfigurationError(f"bad apiserver URL {url!r}: port must be 1-65535") from None
    return url.rstrip("/")


class _Retryable(Exception):
    def __init__(self, error: BaseException | None, retry_after: float | None = None,
                 response: Any = None) -> None:
        self.error, self.retry_after, self.response = error, retry_after, response
        super().__init__(str(error) if error else f"HTTP {getattr(response, 'status', '?')}")


class _wait_retry_after(wait_base):
    """Honour the server's Retry-After when it gave one, else jittered exponential backoff."""

    def __init__(self, cap: float) -> None:
        self.cap = cap
        self.fallback = wait_random_exponential(multiplier=0.05, max=1.0)

    def __call__(self, retry_state: RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(exc, _Retryable) and exc.retry_after is not None:
            return min(exc.retry_after, self.cap)
        return float(self.fallback(retry_state))


class ApiClient(k8s.ApiClient):
    """Drop-in for ``kubernetes.client.ApiClient``; extra apiservers in ``endpoints`` share its credentials."""

    def __init__(self, configuration: k8s.Configuration | None = None, *, endpoints: list[str] | None = None,
                 policy: KubePolicy | None = None, **kwargs: Any) -> None:
        cfg = copy.copy(configuration) if configuration is not None else k8s.Configuration.get_default_copy()
        if policy is not None and not isinstance(policy, KubePolicy):
            raise ConfigurationError(f"policy must be a KubePolicy, got {type(policy).__name__}")
        self.policy = policy or KubePolicy()
        cfg.socket_options = self.policy.socket_options()
        cfg.retries = False  # retries are ours, inside the deadline
        self.endpoints = [_check_url(cfg.host)] + [_check_url(e) for e in (endpoints or [])]
        if len(set(self.endpoints)) != len(self.endpoints):
            raise ConfigurationError(f"duplicate apiserver endpoints: {self.endpoints}")
        self._active = 0
        super().__init__(cfg, **kwargs)

    @classmethod
    def from_kubeconfig(cls, path: str | Path, context: str | None = None, **kwargs: Any) -> ApiClient:
        p = Path(path).expanduser()
        try:
            p.read_bytes()
        except OSError as exc:
            raise ConfigurationError(f"cannot read kubeconfig {str(p)!r}: {exc.strerror or exc}") from None
        cfg = k8s.Configuration()
        try:
            k8s_config.load_kube_config(config_file=str(p), context=context, client_configuration=cfg)
        except k8s_config.ConfigException as exc:
            raise ConfigurationError(f"bad kubeconfig {str(p)!r}: {exc}") from None
        return cls(cfg, **kwargs)

    @property
    def active_endpoint(self) -> str:
        return self.endpoints[self._active]

    def _timeouts(self, watch: bool, explicit: Any) -> tuple[float | None, tuple[float, float | None]]:
        """(total budget, (connect, read)) for one call."""
        per_call = explicit if isinstance(explicit, (int, float)) and not isinstance(explicit, bool) else None
        read: float | None
        if isinstance(explicit, tuple):
            connect, read = explicit
        else:
            connect, read = self.policy.connect_timeout, None if watch else self.policy.read_idle_timeout
        budget = deadlines.call_timeout(per_call, None if watch else self.policy.default_timeout)
        if budget is not None:
            connect = min(connect, budget)
            read = budget if read is None else min(read, budget)
        return budget, (connect, read)

    def call_api(self, method: str, url: str, header_params: Any = None, body: Any = None,
                 post_params: Any = None, _request_timeout: Any = None) -> rest.RESTResponse:
        base = self.configuration.host.rstrip("/")
        path = url[len(base):] if url.startswith(base) else None
        if path is None:  # an operation-specific host: leave it alone
            plain: rest.RESTResponse = super().call_api(method, url, header_params, body, post_params,
                                                        _request_timeout)
            return plain
        watch = "watch=true" in url.split("?", 1)[-1].lower()
        budget, timeout = self._timeouts(watch, _request_timeout)
        deadline = None if budget is None else time.monotonic() + budget
        safe = method.upper() in _SAFE

        def attempt() -> rest.RESTResponse:
            endpoint = self.endpoints[self._active]
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise DeadlineExceeded(f"deadline exceeded before {method} {path}")
            connect, read = timeout
            t = (min(connect, left) if left else connect, (min(read, left) if left and read else read))
            try:
                resp: rest.RESTResponse = self.rest_client.request(
                    method, endpoint + path, headers=header_params, body=body, post_params=post_params,
                    _request_timeout=t)
            except _CONNECT_ERRORS as e:  # never sent: safe to retry anything, elsewhere
                self._failover(endpoint, e)
                raise _Retryable(e) from e
            except _BROKEN_ERRORS as e:
                if _never_sent(e):
                    self._failover(endpoint, e)
                    raise _Retryable(e) from e
                if not safe:
                    raise
                self._failover(endpoint, e)
                raise _Retryable(e) from e
            if resp.status in _RETRY_STATUS and (safe or resp.status == 429):
                raise _Retryable(None, _retry_after(resp), resp)
            return resp

        def out_of_time() -> bool:
            return deadline is not None and time.monotonic() >= deadline

        retrying = Retrying(stop=stop_after_attempt(4 * len(self.endpoints) + 2) | stop_when(out_of_time),
                            wait=_wait_retry_after(self.policy.max_retry_after),
                            retry=retry_if_exception_type(_Retryable), reraise=True)
        try:
            result: rest.RESTResponse = retrying(attempt)
        except _Retryable as e:
            if e.response is not None:
                last: rest.RESTResponse = e.response  # the last 429/5xx: the generated code raises ApiException
                return last
            if out_of_time():
                raise DeadlineExceeded(f"{method} {path}: deadline exceeded; last error: {e.error}") from e.error
            raise e.error from None  # type: ignore[misc]
        return result

    def _failover(self, endpoint: str, error: BaseException) -> None:
        if len(self.endpoints) > 1 and self.endpoints[self._active] == endpoint:
            self._active = (self._active + 1) % len(self.endpoints)
            log.warning("apiserver %s failed (%s); now using %s", endpoint, type(error).__name__,
                        self.endpoints[self._active],
                        extra={"endpoint": endpoint, "event": "failover", "next": self.endpoints[self._active]})


def _never_sent(error: BaseException) -> bool:
    reason = getattr(error, "reason", None)
    return isinstance(reason, _CONNECT_ERRORS)


def _retry_after(resp: rest.RESTResponse) -> float | None:
    value = resp.headers.get("Retry-After") if resp.headers else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
