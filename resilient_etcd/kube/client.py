"""``ApiClient``: the official client's ``ApiClient`` with deadlines, liveness, health and failover.

What changes for every generated ``*Api`` class that uses it:

* **HTTP/2** (``KubePolicy.http2``, on by default): one multiplexed connection per apiserver with
  client-go's health check — a PING after ``ping_idle`` seconds without a frame, the connection
  closed when no frame follows within ``ping_timeout``. A quiet watch on a dead, frozen or stale
  connection fails within ``ping_idle + ping_timeout`` (≈ 2 s) and resumes; see
  :mod:`resilient_etcd.kube.h2pool`. Servers without ``h2`` get HTTP/1.1 with the socket options below;
* **socket options** on every apiserver connection: TCP keepalive (idle/interval/count) and
  ``TCP_USER_TIMEOUT``, so a dead peer is noticed by the kernel in seconds, not ~15 minutes;
* **deadlines**: every non-watch call gets ``min(deadline() scope, _request_timeout, default)``;
  a watch gets the scope (or its own ``_request_timeout``) only;
* **read-idle timeout** for non-watch calls: a response that stops *arriving* for
  ``read_idle_timeout`` seconds is a hung call (the timeout is per read, so a slow but progressing
  LIST is never cut);
* **health**: each apiserver has the same health record as an etcd endpoint
  (:class:`~resilient_etcd.balancer.health.EndpointHealth`) and the same choice
  (:class:`~resilient_etcd.balancer.choice.Balancer`): ``GET /readyz`` probes on the connection the
  traffic uses, sent by the process's one prober when they buy something — every ``probe_interval``
  while requests wait on an apiserver and nothing came back for that long, a heartbeat every
  ``idle_probe_interval`` otherwise (a quiet HTTP/2 watch has the connection's PING check instead) —
  plus the outcome of every real call. An apiserver whose probe goes unanswered for
  ``probe_dead_after`` (or that answers "not ready") is ejected: its connections are closed, so
  streams stuck on it fail at once and resume elsewhere; it is re-admitted on its next answered probe;
* **failover and retries** (tenacity): safe requests (GET, HEAD, watch establishment) move to the
  next usable apiserver on connection errors and hangs, and are retried on 429/5xx honouring
  ``Retry-After`` within the deadline; other verbs are retried only when the request never left.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import socket
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client import rest
from tenacity import RetryCallState

from .. import _lifecycle, deadlines
from ..balancer.driver import BasePeer, Cleanup, HealthDriver, if_alive
from ..balancer.health import Transition
from ..balancer.prober import PROBER, Registration, Waker
from ..balancer.retrying import make_retrying
from ..exceptions import ClientClosedError, ConfigurationError, DeadlineExceeded
from ..metrics import METRICS
from ..policies import HealthPolicy, _count, _seconds
from .h2pool import H2PoolManager, Hedge, StreamRefused, hedging, ssl_context_for
from .resources import ResourcePath, Resources, abort, resource_of

log = logging.getLogger("resilient_etcd.kube")

_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
_MAX_ATTEMPTS = 11
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_CONNECT_ERRORS = (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError)
_NEVER_SENT = (*_CONNECT_ERRORS, StreamRefused)
_BROKEN_ERRORS = (urllib3.exceptions.ProtocolError, urllib3.exceptions.ReadTimeoutError,
                  urllib3.exceptions.SSLError, urllib3.exceptions.MaxRetryError)


@dataclass(frozen=True)
class KubePolicy:
    """Timeouts, liveness and health checks for the apiserver connections (seconds; validated when built).

    ``http2``/``ping_idle``/``ping_timeout``: HTTP/2 with a PING when a connection has been silent for
    ``ping_idle`` and the connection closed when ``ping_timeout`` passes without a frame (client-go:
    30 s and 15 s). ``probe_interval``/``probe_dead_after``: ``/readyz`` probes of an apiserver while
    requests wait on it (``probe_interval=0`` turns probes off); ``idle_probe_interval``: the heartbeat
    probe of an apiserver nothing waits on. ``read_idle_timeout``: how long a non-watch response may
    stop arriving. ``keepalive_*``/``user_timeout``: kernel-level TCP liveness (both protocols).
    ``max_retry_after``: the longest ``Retry-After`` honoured in one wait.
    ``resource_check_interval``/``resource_check_timeout``: health per (apiserver, resource) — a watch
    quiet this long has its resource checked on its apiserver with a ``limit=1`` LIST, and a resource put
    out on an apiserver (no answer to a request or a check) is checked this often; no answer within the
    timeout puts it out there (see ``resilient_etcd.kube.resources``).
    ``hedge_delay_min``/``hedge_max_extra``: a GET (not a watch) over HTTP/2 with no response headers
    after its apiserver's usual time (smoothed plus four deviations, at least ``hedge_delay_min``; None
    turns hedging off) is sent also to another healthy apiserver; the first response wins and the other
    stream is reset. Hedges add at most ``hedge_max_extra`` of the GETs sent (a token bucket).
    """

    connect_timeout: float = 2.0
    read_idle_timeout: float = 2.5
    default_timeout: float = 30.0
    http2: bool = True
    ping_idle: float = 1.0
    ping_timeout: float = 1.0
    probe_interval: float = 0.5
    probe_dead_after: float = 1.5
    idle_probe_interval: float = 10.0
    keepalive_idle: int = 5
    keepalive_interval: int = 2
    keepalive_count: int = 3
    user_timeout: float = 10.0
    max_retry_after: float = 10.0
    resource_check_interval: float = 1.0
    resource_check_timeout: float = 1.0
    hedge_delay_min: float | None = 0.25
    hedge_max_extra: float = 0.05

    def __post_init__(self) -> None:
        for name in ("connect_timeout", "read_idle_timeout", "default_timeout", "user_timeout", "max_retry_after",
                     "ping_idle", "ping_timeout", "probe_dead_after", "idle_probe_interval",
                     "resource_check_interval", "resource_check_timeout"):
            _seconds(self, name)
        if self.probe_interval != 0 or isinstance(self.probe_interval, bool):
            _seconds(self, "probe_interval")
            if self.idle_probe_interval < self.probe_interval:
                raise ConfigurationError(f"KubePolicy.idle_probe_interval ({self.idle_probe_interval} s) must be "
                                         f"≥ probe_interval ({self.probe_interval} s)")
        for name in ("keepalive_idle", "keepalive_interval", "keepalive_count"):
            _count(self, name)
        if not isinstance(self.http2, bool):
            raise ConfigurationError(f"KubePolicy.http2 must be a bool, got {self.http2!r}")
        if self.hedge_delay_min is not None:
            _seconds(self, "hedge_delay_min")
        extra = self.hedge_max_extra
        if isinstance(extra, bool) or not isinstance(extra, (int, float)) or not 0 < extra <= 1:
            raise ConfigurationError(f"KubePolicy.hedge_max_extra must be a fraction in (0, 1], got {extra!r}")

    def health_policy(self) -> HealthPolicy:
        """The :class:`HealthPolicy` the apiserver probes use, derived from this policy."""
        return HealthPolicy(probe_interval=self.probe_interval or 1.0, dead_after=self.probe_dead_after,
                            idle_probe_interval=max(self.idle_probe_interval, self.probe_interval or 1.0),
                            hedge_delay_min=self.hedge_delay_min, hedge_max_extra=self.hedge_max_extra)

    def socket_options(self) -> list[tuple[int, int, int]]:
        """Socket options for every apiserver connection (TCP keepalive, TCP_USER_TIMEOUT)."""
        opts = list(urllib3.connection.HTTPConnection.default_socket_options)
        opts.append((socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1))
        for name, value in (("TCP_KEEPIDLE", self.keepalive_idle), ("TCP_KEEPINTVL", self.keepalive_interval),
                            ("TCP_KEEPCNT", self.keepalive_count),
                            ("TCP_USER_TIMEOUT", int(self.user_timeout * 1000))):
            if hasattr(socket, name):
                opts.append((socket.IPPROTO_TCP, getattr(socket, name), value))
        return opts


class ApiDeadlineExceeded(DeadlineExceeded, urllib3.exceptions.MaxRetryError):
    """A Kubernetes call's deadline ran out: our :class:`~resilient_etcd.DeadlineExceeded`, and urllib3's
    ``MaxRetryError`` (what the official client raises when it gives up), so either ``except`` catches it.
    ``reason``: the last error seen, if any."""

    def __init__(self, message: str, url: str, reason: Exception | None = None) -> None:
        Exception.__init__(self, message)  # (both bases' __init__ would call the other's with their arguments)
        self.detail_message = message
        self.pool, self.url, self.reason = None, url, reason  # type: ignore[assignment]

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (str(self), self.url, None)

    def __str__(self) -> str:
        return self.detail_message or type(self).__name__


def _as_official(error: BaseException, url: str) -> BaseException:
    """The error the official client raises for ``error``: urllib3 wraps connection, timeout and proxy
    failures in ``MaxRetryError`` once its retries are spent (ours are, by now)."""
    if isinstance(error, urllib3.exceptions.MaxRetryError):
        return error
    if isinstance(error, DeadlineExceeded):
        cause = error.__cause__ if isinstance(error.__cause__, Exception) else None
        return ApiDeadlineExceeded(str(error), url, cause)
    if isinstance(error, urllib3.exceptions.HTTPError):
        return urllib3.exceptions.MaxRetryError(None, url, error)  # type: ignore[arg-type]
    return error


class _Installed:
    """The defaults :func:`resilient_etcd.kube.install` gives every ``ApiClient`` built without its own."""

    def __init__(self) -> None:
        self.endpoints: list[str] = []
        self.policy: KubePolicy | None = None


INSTALLED = _Installed()


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


class ApiClient(k8s.ApiClient):
    """Drop-in for ``kubernetes.client.ApiClient`` (same arguments); extra apiservers in ``endpoints`` share
    its credentials. Constructs whenever the official class does: an empty ``Configuration.host`` (no
    kubeconfig loaded yet) is fine until the first request, which then raises ``ConfigurationError``; a
    malformed host given explicitly fails here. ``endpoints``/``policy`` default to those given to
    :func:`resilient_etcd.kube.install`. Probes start with the first request: a client only used to
    deserialize (the official ``Watch()`` builds one) costs the apiserver nothing."""

    def __init__(self, configuration: k8s.Configuration | None = None, header_name: str | None = None,
                 header_value: str | None = None, cookie: str | None = None, pool_threads: int = 1, *,
                 endpoints: list[str] | None = None, policy: KubePolicy | None = None) -> None:
        cfg = copy.copy(configuration) if configuration is not None else k8s.Configuration.get_default_copy()
        if policy is not None and not isinstance(policy, KubePolicy):
            raise ConfigurationError(f"policy must be a KubePolicy, got {type(policy).__name__}")
        self.policy = policy or INSTALLED.policy or KubePolicy()
        cfg.socket_options = self.policy.socket_options()
        cfg.retries = False  # retries are ours, inside the deadline
        host = _check_url(cfg.host) if cfg.host else None
        extra = [_check_url(e) for e in (endpoints if endpoints is not None else INSTALLED.endpoints)]
        if endpoints is None:  # install()'s endpoints: the configured host may be one of them
            extra = [e for e in extra if e != host]
        self.endpoints = ([host] if host else []) + extra
        if len(set(self.endpoints)) != len(self.endpoints):
            raise ConfigurationError(f"duplicate apiserver endpoints: {self.endpoints}")
        for name in ("ssl_ca_cert", "cert_file", "key_file"):
            path = getattr(cfg, name, None)
            if path and not Path(path).is_file():
                raise ConfigurationError(f"{name} {path!r} does not exist or is not a file")
        super().__init__(cfg, header_name, header_value, cookie, pool_threads)
        self._stop = threading.Event()
        self._h2: H2PoolManager | None = None
        # (no apiserver configured yet: the first request says so)
        servers = _ApiServers(self, self.endpoints, self.policy, self._stop) if self.endpoints else None
        # through a proxy, HTTP/1.1 only: HTTP/2 here dials the apiserver itself (no CONNECT tunnel)
        proxied = bool(cfg.proxy) and not rest.should_bypass_proxies(cfg.host or "", cfg.no_proxy or "")
        if self.policy.http2 and servers is not None and not proxied:
            ctx, server_name = ssl_context_for(cfg)
            on_close = weakref.WeakMethod(servers.connection_closed)
            self._h2 = H2PoolManager(
                self.rest_client.pool_manager, ssl_context=ctx, server_hostname=server_name,
                connect_timeout=self.policy.connect_timeout, read_idle_timeout=self.policy.ping_idle,
                ping_timeout=self.policy.ping_timeout, socket_options=self.policy.socket_options(),
                on_close=lambda origin, reason, broken: (m := on_close()) and m(origin, reason, broken))
            self.rest_client.pool_manager = self._h2  # type: ignore[assignment]
            servers.h2 = self._h2
        self._servers = servers
        self.resources = Resources(self.policy.resource_check_interval, self.policy.resource_check_timeout,
                                   wake=functools.partial(if_alive, weakref.ref(servers), _ApiServers.wake)
                                   if servers else lambda: None)
        if servers is not None:
            servers.resources = self.resources
        self._watch_target = threading.local()  # where this thread's last watch request went
        self.health = {srv.name: srv.health for srv in servers.peers} if servers else {}
        self._finalizer = weakref.finalize(self, _shutdown, self._stop, self.rest_client.pool_manager, servers)
        _lifecycle.register(self)

    def close(self) -> None:
        """Leave the prober and close every apiserver connection (also done when garbage-collected,
        and at process exit); watches on this client end."""
        self._finalizer()
        super().close()  # type: ignore[no-untyped-call]

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran (or the client was collected): calls raise ``ClientClosedError``."""
        return self._stop.is_set()

    def _sleep(self, seconds: float) -> None:
        """Wait between attempts; close() ends the wait."""
        self._stop.wait(seconds)

    def _apiservers(self) -> _ApiServers:
        """The apiservers, probed from the first request on; a clear error when none is configured."""
        servers = self._servers
        if servers is None:
            raise ConfigurationError("no apiserver configured: Configuration.host is empty (load a kubeconfig with "
                                     "kubernetes.config.load_kube_config() or load_incluster_config() first)")
        if servers.registration is None and self.policy.probe_interval:
            servers.start()
        return servers

    @classmethod
    def from_kubeconfig(cls, path: str | Path, context: str | None = None, **kwargs: Any) -> ApiClient:
        """An ``ApiClient`` from a kubeconfig file (``context``: its context; kwargs: ``endpoints``, ``policy``)."""
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
        """The apiserver URL calls go to now ("" while none is configured)."""
        return self._servers.active.name if self._servers is not None else ""

    def auth_headers(self) -> dict[str, str]:
        """The configuration's credential headers (bearer token), for requests made outside ``*Api`` classes.

        Probes need them: an anonymous HTTP/2 request makes kube-apiserver close the connection after
        it (UnauthenticatedHTTP2DOSMitigation). Client certificates are in the TLS context instead."""
        headers: dict[str, str] = {}
        self.update_params_for_auth(headers, [], ["BearerToken"], "", "GET", None)
        return headers

    def endpoint_states(self) -> dict[str, str]:
        """``{endpoint: "healthy" | "suspect" | "ejected" | "probing"}``."""
        return {ep: h.state.value for ep, h in self.health.items()}

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
        """The generated code's entry point: deadline, apiserver pick, retries and failover around one request.
        Failures keep the official client's types: a connection or proxy failure that outlasts the retries
        is urllib3's ``MaxRetryError`` (reason: the last error), and so is a deadline (:class:`ApiDeadlineExceeded`)."""
        with _lifecycle.busy():  # at process exit, a call in flight is waited for (briefly) once clients close
            try:
                return self._call_api(method, url, header_params, body, post_params, _request_timeout)
            except (DeadlineExceeded, urllib3.exceptions.HTTPError) as e:
                official = _as_official(e, url)
                if official is e:
                    raise
                raise official from e

    def _call_api(self, method: str, url: str, header_params: Any, body: Any, post_params: Any,
                  _request_timeout: Any) -> rest.RESTResponse:
        if self.closed:
            raise ClientClosedError(f"the ApiClient was closed; {method} was not sent")
        base = self.configuration.host.rstrip("/")
        path = url[len(base):] if url.startswith(base) else None
        if path is None:  # an operation-specific host: leave it alone
            plain: rest.RESTResponse = super().call_api(method, url, header_params, body, post_params,
                                                        _request_timeout)
            return plain
        servers = self._apiservers()
        watch = "watch=true" in url.split("?", 1)[-1].lower()
        budget, timeout = self._timeouts(watch, _request_timeout)
        deadline = None if budget is None else time.monotonic() + budget
        safe = method.upper() in _SAFE

        # a quiet HTTP/2 watch is checked by its connection's PINGs; anything else waiting asks for probes
        counted = not watch or self._h2 is None

        failed: list[_ApiServer] = []  # apiservers whose connection failed this call: tried last
        resource = resource_of(path)
        # a GET over HTTP/2 not answered in its apiserver's usual time is sent to another one too
        hedgeable = self._h2 is not None and not watch and method.upper() == "GET" \
            and self.policy.hedge_delay_min is not None and len(servers.peers) > 1

        def attempt() -> rest.RESTResponse:
            srv = servers.pick(failed[-1] if failed else None)
            if resource is not None and self.resources.is_out(srv.name, resource[0]):
                # that resource gets no answers there: another apiserver, if one serves it
                srv = next((p for p in servers.peers if p.health.usable and p not in failed
                            and not self.resources.is_out(p.name, resource[0])), srv)
            endpoint = srv.name
            if watch:
                self._watch_target.value = (endpoint, resource)
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise DeadlineExceeded(f"deadline exceeded before {method} {path}")
            connect, read = timeout
            t = (min(connect, left) if left else connect, (min(read, left) if left and read else read))
            plan = self._hedge_plan(servers, srv, failed, resource, t[1]) if hedgeable else None

            def send(srv: _ApiServer) -> rest.RESTResponse:
                # the scope bounds the whole response as it is read, not only each read (a LIST that keeps
                # trickling in must still end at the deadline); a watch without a deadline streams on
                with deadlines.deadline(left) if left else contextlib.nullcontext(), \
                        hedging(plan) if plan is not None else contextlib.nullcontext():
                    resp: rest.RESTResponse = self.rest_client.request(
                        method, endpoint + path, headers=header_params, body=body, post_params=post_params,
                        _request_timeout=t)
                    if not watch:  # read the body here: inside the deadline, and retried if it breaks
                        resp.response.data  # noqa: B018
                return resp

            try:
                resp = servers.run(srv, send, counted=counted,
                                   proof=lambda _: plan is None or not plan.won_by_copy)
            except _NEVER_SENT as e:  # never sent: safe to retry anything, elsewhere
                failed.append(srv)
                self._failover(srv, e)
                raise _Retryable(e) from e
            except _BROKEN_ERRORS as e:
                if plan is not None and plan.won_by_copy:  # the winning copy's body broke, elsewhere: again
                    METRICS.inc("retries", endpoint)
                    raise _Retryable(e) from e
                failed.append(srv)
                if resource is not None and not watch and safe and _read_timeout(e) and len(servers.peers) > 1:
                    # no answer for this resource, and nothing says the apiserver is down: that resource's
                    # path there (its etcd connection) is broken; a probe of the apiserver will tell the rest
                    for stream in self.resources.put_out(endpoint, *resource, f"{method} got no answer within "
                                                                            f"{t[1]} s"):
                        abort(stream)
                    srv.want_probe = True
                    servers.wake()
                    METRICS.inc("retries", endpoint)
                    raise _Retryable(e) from e
                if _never_sent(e):
                    self._failover(srv, e)
                    raise _Retryable(e) from e
                if not safe:
                    raise
                self._failover(srv, e)
                raise _Retryable(e) from e
            finally:
                if plan is not None:
                    servers.hedge_ended(srv, plan)
            if resp.status in _RETRY_STATUS and (safe or resp.status == 429):
                METRICS.inc("retries", endpoint)
                log.info("apiserver %s answered %s to %s %s; retrying", endpoint, resp.status, method, path,
                         extra={"endpoint": endpoint, "event": "retry", "status": resp.status})
                raise _Retryable(None, _retry_after(resp), resp)
            return resp

        def out_of_time() -> bool:
            return deadline is not None and time.monotonic() >= deadline

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            wait = state.next_action.sleep if state.next_action else 0.0
            status = getattr(getattr(exc, "response", None), "status", None)
            log.info("%s %s: attempt %d failed (%s); retrying in %.2f s", method, path, state.attempt_number,
                     status or exc, wait, extra={"event": "retry_wait", "status": status, "wait": wait,
                                                 "retry_after": getattr(exc, "retry_after", None)})

        # client-go retries a Retry-After answer up to 10 times; connection failures get a few per apiserver
        retrying = make_retrying(
            _Retryable, lambda: None if deadline is None else deadline - time.monotonic(),
            attempts=max(_MAX_ATTEMPTS, 4 * len(self.endpoints) + 2), backoff_initial=0.05, backoff_max=1.0,
            closed=lambda: self.closed, retry_after=lambda e: getattr(e, "retry_after", None),
            retry_after_max=self.policy.max_retry_after, before_sleep=before_sleep, sleep=self._sleep)
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

    def watch_target(self) -> tuple[str, tuple[str, str] | None] | None:
        """Where this thread's last watch request went: ``(endpoint, (resource, list path))`` (for the
        quiet-watch check of ``resilient_etcd.kube.watch``)."""
        return getattr(self._watch_target, "value", None)

    def _hedge_plan(self, servers: _ApiServers, srv: _ApiServer, failed: list[_ApiServer],
                    resource: tuple[str, str] | None, read: float | None) -> Hedge | None:
        """How a GET on ``srv`` is hedged (None: it is not, its usual time is beyond the read timeout). The
        copy goes to the healthy apiserver with the shortest round trip that did not fail this call and
        serves the resource, if the budget allows."""
        servers.hedges.deposit()
        assert self.policy.hedge_delay_min is not None
        delay = srv.call_times.hedge_delay(self.policy.hedge_delay_min)
        if read is not None and delay >= read:
            return None

        def serves(p: _ApiServer) -> bool:
            return p not in failed and (resource is None or not self.resources.is_out(p.name, resource[0]))

        def copy_to() -> str | None:
            other = servers.hedge_start(srv, 1, also=serves)
            if other is None:
                return None
            other.begin()
            return other.name

        return Hedge(delay, copy_to)

    def _failover(self, srv: _ApiServer, error: BaseException) -> None:
        """A call's connection to ``srv`` failed or hung: eject it (the next attempt goes elsewhere, panic
        included: every apiserver gets its turn)."""
        METRICS.inc("retries", srv.name)
        self._apiservers().report_failure(srv, f"{type(error).__name__}: {error}", hard=True)


class _ApiServer(BasePeer):
    """One apiserver in the balancer."""

    def __repr__(self) -> str:
        return f"_ApiServer({self.name}, {self.health.state.value})"


class _ApiServers(HealthDriver[_ApiServer]):
    """The apiservers of one ``ApiClient``: their health, the choice, and their ``/readyz`` probes, sent by
    the process's prober on its workers (over the client's own connections, with its credentials)."""

    kind = "apiserver"

    def __init__(self, client: ApiClient, endpoints: list[str], policy: KubePolicy, closed: threading.Event) -> None:
        hp = policy.health_policy()
        waker = Waker()
        super().__init__([_ApiServer(ep, hp, waker) for ep in endpoints], hp, waker, log=log, tick_cap=0.25,
                         closed=closed)
        self._start_lock = threading.Lock()
        self.kube_policy = policy
        self._client = weakref.ref(client)  # the prober holds us weakly, we hold the client weakly
        self.h2: H2PoolManager | None = None
        self.resources: Resources | None = None

    @property
    def registration(self) -> Registration | None:
        return self._reg

    def start(self) -> None:
        """Take a place in the process's prober (once; at the client's first request)."""
        with self._start_lock:
            if self._reg is None and not self.closed:
                self._register()

    def _changed(self, srv: _ApiServer, t: Transition) -> Cleanup | None:
        if t.ejected and self.h2 is not None:  # streams stuck there (quiet watches) fail now and resume elsewhere
            return functools.partial(self.h2.close_origin, _origin(srv.name), f"apiserver ejected: {t.reason}")
        return None

    def hedge_ended(self, srv: _ApiServer, plan: Hedge) -> None:
        """A hedged GET on ``srv`` ended: its copy's apiserver no longer waits on it, and the winner's time
        to its response headers feeds its hedge delay. A copy that wins moves requests to its apiserver, as
        a hedge won does on the etcd side (``srv`` is not ejected: its probe, sent now, judges it, and it
        wins requests back like any apiserver once it answers as fast)."""
        other = next((p for p in self.peers if p.name == plan.copy), None) if plan.copy else None
        if other is not None:
            other.end(plan.won_by_copy)
        if plan.headers_after is None:
            return
        if plan.won_by_copy and other is not None:
            self.hedge_answered(srv, other, plan.headers_after)
        elif not plan.won_by_copy:
            srv.call_times.observe(plan.headers_after)

    def connection_closed(self, origin: str, reason: str, broken: bool) -> None:
        """An HTTP/2 connection to ``origin`` closed (``broken``: it failed, it was not ours to close)."""
        for srv in self.peers:
            if _origin(srv.name) == origin:
                METRICS.inc("redials", srv.name)
                if broken:
                    self.report_failure(srv, reason, hard=True)

    def _send_probe(self, srv: _ApiServer) -> None:
        PROBER.run_blocking(functools.partial(if_alive, weakref.ref(self), _ApiServers.probe, srv))

    def _after_round(self, now: float) -> float:
        """The per-resource checks due (quiet watches, resources out), on the prober's workers."""
        if self.resources is None:
            return float("inf")
        for path in self.resources.due(now):
            PROBER.run_blocking(functools.partial(if_alive, weakref.ref(self), _ApiServers.check_resource, path))
        return self.resources.next_check(now)

    def check_resource(self, path: ResourcePath) -> None:
        """A ``limit=1`` LIST of a resource on one apiserver (on a prober worker), already marked sent:
        answered within the check's dead time, the resource is in use there; not, it is out there and its
        watches there end (they resume elsewhere)."""
        client, resources = self._client(), self.resources
        if client is None or resources is None:
            return
        # the check's dead time (longer after answers that were slow); capped, as a check holds one of the
        # prober's few workers: one cut by the cap before its dead time is no verdict, and is sent again
        timeout = min(path.health.dead_time(), _CHECK_CAP * resources.policy.dead_after)
        timed_out = False
        try:
            resp = client.rest_client.pool_manager.request(
                "GET", f"{path.endpoint}{path.list_path}?limit=1", headers=client.auth_headers(),
                preload_content=True,
                timeout=urllib3.Timeout(connect=min(self.kube_policy.connect_timeout, timeout), read=timeout))
            error = None if resp.status < 500 else f"a limit=1 LIST answered {resp.status}"
        except Exception as e:  # no answer: that resource's path on that apiserver is broken
            timed_out = isinstance(e, urllib3.exceptions.TimeoutError) or isinstance(
                getattr(e, "reason", None), urllib3.exceptions.TimeoutError)
            error = f"a limit=1 LIST got no answer within {timeout:.3g} s ({type(e).__name__})"
        del client
        for stream in resources.checked(path, error, timed_out=timed_out):
            abort(stream)
        self.wake()

    def probe(self, srv: _ApiServer) -> None:
        """One ``/readyz`` probe, already marked sent by the balancer (on a prober worker thread)."""
        client = self._client()
        if client is None:
            return
        METRICS.inc("probes", srv.name)
        h = srv.health
        try:
            resp = client.rest_client.pool_manager.request(
                "GET", srv.name + "/readyz", headers=client.auth_headers(), preload_content=True,
                timeout=urllib3.Timeout(connect=min(self.kube_policy.connect_timeout, h.dead_time()),
                                        read=h.dead_time()))
        except Exception as e:  # any failure of the probe is the endpoint's
            del client
            self.probe_ended(srv, f"/readyz: {type(e).__name__}: {e}",
                             timed_out=isinstance(e, urllib3.exceptions.TimeoutError))
        else:
            del client
            self.probe_ended(srv, None if resp.status == 200 else f"/readyz answered {resp.status}")

    def _probe_failing(self, srv: _ApiServer) -> None:
        # a probe queued behind a large answer still arriving on the same HTTP/2 connection is no verdict:
        # the silence that counts runs from the last frame the connection delivered
        srv.health.last_heard = max([srv.health.last_heard, *self._frames_heard(srv.name)])

    def _frames_heard(self, endpoint: str) -> list[float]:
        """When each HTTP/2 connection to ``endpoint`` last received bytes (none on HTTP/1.1)."""
        if self.h2 is None:
            return []
        return [c.last_heard for c in self.h2.connections(_origin(endpoint))]


_CHECK_CAP = 4  # the longest per-resource check, in check timeouts


def _read_timeout(error: BaseException) -> bool:
    """No answer within the read timeout (the request went out; the apiserver stayed silent)."""
    return isinstance(error, urllib3.exceptions.ReadTimeoutError) or isinstance(
        getattr(error, "reason", None), urllib3.exceptions.ReadTimeoutError)


def _shutdown(stop: threading.Event, pool: Any, servers: _ApiServers | None) -> None:
    stop.set()
    if servers is not None:
        with servers._start_lock:  # a request starting the probes now sees the stop
            if servers.registration is not None:
                servers.registration.close()
    (pool.close if isinstance(pool, H2PoolManager) else pool.clear)()


def _origin(endpoint: str) -> str:
    parts = urlsplit(endpoint)
    return f"{parts.scheme}://{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"


def _never_sent(error: BaseException) -> bool:
    reason = getattr(error, "reason", None)
    return isinstance(reason, _CONNECT_ERRORS)


def _retry_after(resp: rest.RESTResponse) -> float | None:
    value = resp.headers.get("Retry-After") if resp.headers else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
