"""PolicyClient: asks the policy service for settings from a background thread, never blocking training.

The training loop calls :meth:`PolicyClient.submit` once per control interval with its telemetry window and
:meth:`PolicyClient.poll` to pick up an answer when one has arrived. A worker thread does the HTTP
(``POST /v1/decide`` with an ``X-API-Key`` header, one pooled ``httpx.Client``), with:

* a **total deadline** per attempt (``timeout_s`` covers connecting, sending and reading the whole answer,
  not each socket read: a server trickling one byte a second times out like a silent one) and **retries**
  (``retries`` extra attempts, exponential ``backoff_s * 2**k`` between them, capped at ``backoff_max_s``);
  a newer window submitted meanwhile supersedes the one being retried; :meth:`PolicyClient.close` aborts an
  attempt in flight at once;
* **configuration errors are loud**: a 401/403 (wrong or missing key, user key on an admin route) is not an
  outage: it is logged once at error level, never retried, does not count toward the breaker, and
  :attr:`PolicyClient.status` says ``"auth_error"`` (with the server's message in :attr:`last_error`) until
  a request succeeds; each window is still answered by the fallback, and still tried once (so a key fixed
  on the server side recovers without a restart);
* a **circuit breaker**: after ``breaker_failures`` consecutive failed requests (a request fails when all
  its attempts fail, or when its first attempts fail and a newer window is waiting) the breaker opens and
  windows are answered locally, without touching the network, for ``breaker_cooldown_s``; then one probe
  (half-open, no retries) goes out: success closes the breaker (a *reconnect*), failure re-opens it;
* a **fallback controller**: whenever the service cannot answer (request failed, breaker open), the local
  :class:`~client.policy.Controller` decides (a heuristic, or the learned policy in-process), and the
  outcome says ``source="fallback"``.

Worst case, with the service hanging: a window's answer comes ``(retries + 1) * timeout_s`` plus backoff
later, from the fallback; with the breaker open, at once. The caller never waits on any of it.

Tuning: ``timeout_s`` well under the control interval's wall time (a decision older than an interval is
stale); ``retries`` 1-2 (connection resets after a server restart are retried); ``breaker_failures`` 2-5;
``breaker_cooldown_s`` a few intervals.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import httpcore
import httpx
from pydantic import ValidationError

from client.controllers import StaticController
from client.policy.interface import Controller
from client.protocol import (
    CompressionSetting,
    CostProfile,
    DecideRequest,
    Decision,
    Objective,
    Reference,
    TelemetryRecord,
)

__all__ = ["BreakerState", "ClientStatus", "DecisionOutcome", "PolicyClient", "PolicyClientCounters"]

logger = logging.getLogger(__name__)

BreakerState = Literal["closed", "open", "half_open"]
#: ``ok``: the last request was answered (or none was sent yet); ``unreachable``: the last one failed
#: (network, timeout, 5xx, bad body); ``auth_error``: the service refused the key (401/403), a configuration
#: error no retry can fix.
ClientStatus = Literal["ok", "unreachable", "auth_error"]
DECIDE_PATH = "/v1/decide"


@dataclass(frozen=True)
class DecisionOutcome:
    """One answer for one submitted window.

    :param decision: the decision (from the service, or built from the fallback controller's setting).
    :param source: ``"service"`` or ``"fallback"``.
    :param step: the newest step of the window it answers.
    :param latency_ms: from submission (enqueue) to the answer, milliseconds (includes queueing, retries).
    :param error: why the service did not answer (fallbacks only).
    """

    decision: Decision
    source: Literal["service", "fallback"]
    step: int
    latency_ms: float
    error: str = ""

    @property
    def is_fallback(self) -> bool:
        return self.source == "fallback"


@dataclass
class PolicyClientCounters:
    """Running counts, read with :attr:`PolicyClient.counters` (a copy).

    ``requests``: HTTP POSTs attempted (retries and probes included); ``successes``: POSTs answered with a
    valid Decision; ``failures``: POSTs that failed (connection, timeout, bad status, bad body);
    ``fallbacks``: answers made by the local controller; ``reconnects``: times the service answered again
    after a failed request; ``superseded``: windows replaced in the queue by a newer one before being sent;
    ``auth_errors``: requests refused with 401/403 (counted here, not in ``failures``).
    """

    requests: int = 0
    successes: int = 0
    failures: int = 0
    auth_errors: int = 0
    fallbacks: int = 0
    reconnects: int = 0
    superseded: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class _Pending:
    history: list[TelemetryRecord]
    reference: Reference | None
    submitted: float = field(default_factory=time.perf_counter)

    @property
    def step(self) -> int:
        return self.history[-1].step


class _RequestFailed(Exception):
    def __init__(self, reason: str, retryable: bool, auth: bool = False) -> None:
        super().__init__(reason)
        self.retryable = retryable
        self.auth = auth


class _DeadlineStream(httpcore.NetworkStream):
    """A socket stream whose every read and write ends by the attempt's deadline, not ``timeout`` after it.

    httpcore gives each ``recv`` its own timeout, so a peer sending one byte per timeout never times out.
    Here each call's timeout is ``min(timeout, deadline - now)``, and past the deadline the call fails.
    """

    def __init__(self, inner: httpcore.NetworkStream, backend: _DeadlineBackend) -> None:
        self._inner = inner
        self._backend = backend

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._backend.remaining(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._backend.remaining(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        inner = self._inner.start_tls(
            ssl_context, server_hostname, self._backend.remaining(timeout, httpcore.ConnectTimeout)
        )
        return self._backend.track(inner)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's sync socket backend with a per-attempt deadline and an abort switch (one worker thread)."""

    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()
        self.deadline: float | None = None  # time.monotonic() by which the attempt must be over
        self._open: weakref.WeakSet[_DeadlineStream] = weakref.WeakSet()

    def remaining(self, timeout: float | None, error: type[Exception]) -> float | None:
        if self.deadline is None:
            return timeout
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise error("the request's total deadline passed")
        return left if timeout is None else min(timeout, left)

    def track(self, inner: httpcore.NetworkStream) -> _DeadlineStream:
        stream = _DeadlineStream(inner, self)
        self._open.add(stream)
        return stream

    def abort(self) -> None:
        """Wake any read or write blocked on an open socket (called from another thread by ``close``)."""
        self.deadline = time.monotonic()
        for stream in list(self._open):
            sock = stream.get_extra_info("socket")
            if isinstance(sock, socket.socket):
                with contextlib.suppress(OSError):  # already closed
                    sock.shutdown(socket.SHUT_RDWR)

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        timeout = self.remaining(timeout, httpcore.ConnectTimeout)
        return self.track(self._inner.connect_tcp(host, port, timeout, local_address, socket_options))

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        timeout = self.remaining(timeout, httpcore.ConnectTimeout)
        return self.track(self._inner.connect_unix_socket(path, timeout, socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _DeadlineTransport(httpx.HTTPTransport):
    """``httpx.HTTPTransport`` over :class:`_DeadlineBackend` (httpx has no ``network_backend`` option)."""

    def __init__(self, backend: _DeadlineBackend) -> None:
        super().__init__()
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=4,
            max_keepalive_connections=2,
            keepalive_expiry=30.0,
            network_backend=backend,
        )


class PolicyClient:
    """Background HTTP client of the policy service (see the module docstring for the behaviour).

    :param base_url: service root, e.g. ``"http://127.0.0.1:8000"``.
    :param api_key: sent as ``X-API-Key``.
    :param job_id: this job's id (``[A-Za-z0-9_.:-]``, 1-128 chars); the service logs and meters by it.
    :param objective: the job's trade-off weights and memory budget.
    :param policy: the service policy to ask (``"default"`` or a name from ``GET /v1/policies``).
    :param timeout_s: per-attempt timeout, seconds, > 0.
    :param retries: extra attempts after a failed one, >= 0.
    :param backoff_s: first backoff, seconds (doubles per retry), >= 0.
    :param backoff_max_s: backoff cap, seconds.
    :param breaker_failures: consecutive failed requests that open the breaker, >= 1.
    :param breaker_cooldown_s: how long the breaker stays open before a probe, seconds, >= 0.
    :param fallback: the local controller; default: hold the window's current setting
        (a :class:`StaticController` of the newest record's setting).
    :param start: start the worker thread now (``False``: call :meth:`start` later).
    :param profile: the job's hardware :class:`~client.protocol.CostProfile` (``mango profile``), sent with
        every request so the policy and the shield see what each setting costs on this hardware.

    Use as a context manager or call :meth:`close`.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        job_id: str,
        objective: Objective,
        policy: str = "default",
        *,
        timeout_s: float = 2.0,
        retries: int = 1,
        backoff_s: float = 0.1,
        backoff_max_s: float = 2.0,
        breaker_failures: int = 3,
        breaker_cooldown_s: float = 10.0,
        fallback: Controller | None = None,
        start: bool = True,
        profile: CostProfile | None = None,
    ) -> None:
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url={base_url!r} must start with http:// or https://")
        if not isinstance(api_key, str) or not api_key:
            raise ValueError("api_key must be a non-empty string (the service's X-API-Key)")
        if not isinstance(objective, Objective):
            raise TypeError(f"objective must be a client.protocol.Objective, got {type(objective).__name__}")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s={timeout_s} must be > 0 seconds")
        if retries < 0:
            raise ValueError(f"retries={retries} must be >= 0")
        if backoff_s < 0 or backoff_max_s < 0:
            raise ValueError(f"backoff_s={backoff_s} and backoff_max_s={backoff_max_s} must be >= 0")
        if breaker_failures < 1:
            raise ValueError(f"breaker_failures={breaker_failures} must be >= 1")
        if breaker_cooldown_s < 0:
            raise ValueError(f"breaker_cooldown_s={breaker_cooldown_s} must be >= 0 seconds")
        if fallback is not None and not isinstance(fallback, Controller):
            raise TypeError(
                "fallback must be a client.policy.Controller (decide, reset, name, reason), got "
                f"{type(fallback).__name__}"
            )
        _check_ids(job_id, policy, objective)
        self.base_url = base_url.rstrip("/")
        self.job_id = job_id
        self.objective = objective
        self.policy = policy
        self.timeout_s = float(timeout_s)
        self.retries = int(retries)
        self.backoff_s = float(backoff_s)
        self.backoff_max_s = float(backoff_max_s)
        self.breaker_failures = int(breaker_failures)
        self.breaker_cooldown_s = float(breaker_cooldown_s)
        self.fallback = fallback
        self.profile = profile

        self._backend = _DeadlineBackend()
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={"X-API-Key": api_key, "Content-Type": "application/json"},
            timeout=httpx.Timeout(self.timeout_s),
            transport=_DeadlineTransport(self._backend),
        )
        self._cv = threading.Condition()
        self._pending: _Pending | None = None
        self._outcome: DecisionOutcome | None = None
        self._stop = threading.Event()
        self._counters = PolicyClientCounters()
        self._consecutive_failures = 0
        self._breaker: BreakerState = "closed"
        self._opened_at = 0.0
        self._service_down = False  # a request failed and none succeeded since
        self._last_error = ""
        self._auth_error = ""  # the server's refusal while the key is wrong; "" once a request succeeds
        self._busy = False  # a window is being handled by the worker
        self._worker_cpu_s = 0.0
        self._thread = threading.Thread(target=self._run, name=f"mango-policy-client-{job_id}", daemon=True)
        logger.info(
            "PolicyClient %s -> %s policy=%s timeout_s=%g retries=%d breaker=%d/%gs fallback=%s",
            job_id,
            self.base_url,
            policy,
            self.timeout_s,
            self.retries,
            self.breaker_failures,
            self.breaker_cooldown_s,
            fallback.name if fallback else "hold",
        )
        if start:
            self.start()

    # ------------------------------------------------------------------ caller side (never blocks on I/O)

    def start(self) -> None:
        """Start the worker thread (done by the constructor unless ``start=False``)."""
        if not self._thread.is_alive() and not self._stop.is_set():
            self._thread.start()

    def submit(self, history: Sequence[TelemetryRecord], reference: Reference | None = None) -> None:
        """Queue the newest window (oldest first, 1..MAX_HISTORY records) for a decision.

        A window still waiting is replaced (only the newest matters). Returns at once.

        :raises ValueError: the window is empty or longer than ``MAX_HISTORY``.
        :raises RuntimeError: the client is closed.
        """
        if self._stop.is_set():
            raise RuntimeError("PolicyClient is closed")
        hist = list(history)
        if not hist:
            raise ValueError("history is empty: submit at least one TelemetryRecord")
        try:  # validates the window's length against the contract, in the caller's thread
            DecideRequest.model_validate(
                {"job_id": self.job_id, "policy": self.policy, "objective": self.objective, "history": hist}
            )
        except ValidationError as exc:
            raise ValueError(f"invalid window: {exc}") from None
        with self._cv:
            if self._pending is not None:
                self._counters.superseded += 1
            self._pending = _Pending(hist, reference)
            self._cv.notify()

    @property
    def has_outcome(self) -> bool:
        """Whether an answer is waiting for :meth:`poll` (a lock-free read, for a per-step check)."""
        return self._outcome is not None

    def poll(self) -> DecisionOutcome | None:
        """The newest answer that arrived since the last poll, or ``None``. Returns at once."""
        with self._cv:
            out, self._outcome = self._outcome, None
            return out

    @property
    def counters(self) -> dict[str, int]:
        """A copy of the counters (see :class:`PolicyClientCounters`)."""
        with self._cv:
            return self._counters.as_dict()

    @property
    def worker_cpu_s(self) -> float:
        """CPU seconds the background thread has used (serialization, HTTP, fallback decisions): the share of
        the client's cost that :attr:`AdaptiveCompression.overhead_s` does not see."""
        with self._cv:
            return self._worker_cpu_s

    @property
    def breaker_state(self) -> BreakerState:
        with self._cv:
            return self._breaker

    @property
    def status(self) -> ClientStatus:
        """``ok``, ``unreachable`` or ``auth_error`` (see :data:`ClientStatus`)."""
        with self._cv:
            if self._auth_error:
                return "auth_error"
            return "unreachable" if self._service_down else "ok"

    @property
    def last_error(self) -> str:
        """Why the last failed request failed (empty when none has)."""
        with self._cv:
            return self._last_error

    def wait_idle(self, timeout_s: float = 10.0) -> bool:
        """Block until no window is pending and no request is in flight (tests and shutdown only)."""
        deadline = time.monotonic() + timeout_s
        with self._cv:
            while self._pending is not None or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(left)
        return True

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the worker and the client; a request in flight is aborted (its socket shut down) at once.

        :param timeout_s: the longest wait for the worker thread to end (a daemon thread: never blocks exit).
        """
        if self._stop.is_set():
            return
        self._stop.set()
        with self._cv:
            self._cv.notify_all()
        self._backend.abort()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        self._http.close()
        logger.info("PolicyClient %s closed: %s", self.job_id, self._counters.as_dict())

    def __enter__(self) -> PolicyClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ worker thread

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._cv:
                while self._pending is None and not self._stop.is_set():
                    self._cv.wait()
                if self._stop.is_set():
                    return
                job, self._pending = self._pending, None
                self._busy = True
            assert job is not None
            cpu0 = time.thread_time()
            try:
                outcome = self._handle(job)
            except Exception as exc:  # never let the worker die: answer locally
                logger.exception("PolicyClient worker error")
                outcome = self._fallback_outcome(job, f"client error: {type(exc).__name__}: {exc}")
            cpu_s = time.thread_time() - cpu0
            with self._cv:
                self._worker_cpu_s += cpu_s
                if outcome is not None:
                    self._outcome = outcome
                self._busy = False
                self._cv.notify_all()

    def _handle(self, job: _Pending) -> DecisionOutcome | None:
        with self._cv:
            state = self._breaker
            if state == "open" and time.monotonic() - self._opened_at >= self.breaker_cooldown_s:
                state = self._breaker = "half_open"
                logger.info("PolicyClient %s: breaker half-open, probing the service", self.job_id)
        if state == "open":
            return self._fallback_outcome(job, f"circuit open ({self._last_error})")
        attempts = 1 if state == "half_open" else self.retries + 1
        body = DecideRequest(
            job_id=self.job_id,
            policy=self.policy,
            objective=self.objective,
            history=job.history,
            reference=job.reference,
            profile=self.profile,
        ).model_dump_json()
        error = ""
        for attempt in range(attempts):
            if attempt:
                with self._cv:
                    newer = self._pending is not None
                if newer:  # a newer window is waiting: it is the retry; answer this one locally
                    break
                delay = min(self.backoff_s * 2 ** (attempt - 1), self.backoff_max_s)
                if self._stop.wait(delay):
                    return None
            try:
                decision = self._post(body)
            except _RequestFailed as exc:
                error = str(exc)
                if self._stop.is_set():
                    return None
                if exc.auth:  # a configuration error: loud once, never retried, not an outage
                    self._on_auth_error(error)
                    return self._fallback_outcome(job, error)
                with self._cv:
                    self._counters.failures += 1
                    self._last_error = error
                logger.warning(
                    "PolicyClient %s: attempt %d/%d for step %d failed: %s",
                    self.job_id,
                    attempt + 1,
                    attempts,
                    job.step,
                    error,
                )
                if not exc.retryable:
                    break
                continue
            self._on_success()
            return DecisionOutcome(decision, "service", job.step, (time.perf_counter() - job.submitted) * 1e3)
        self._on_failure()
        return self._fallback_outcome(job, error)

    def _post(self, body: str) -> Decision:
        with self._cv:
            self._counters.requests += 1
        self._backend.deadline = time.monotonic() + self.timeout_s
        try:
            resp = self._http.post(DECIDE_PATH, content=body)
        except httpx.TimeoutException as exc:
            raise _RequestFailed(f"timeout after {self.timeout_s:g} s ({type(exc).__name__})", True) from exc
        except httpx.HTTPError as exc:
            raise _RequestFailed(f"{type(exc).__name__}: {exc}", True) from exc
        finally:
            self._backend.deadline = None
        if resp.status_code in (401, 403):
            raise _RequestFailed(
                f"HTTP {resp.status_code}: the service refused the API key ({resp.text[:200]}); check the "
                "key this job sends (PolicyClient api_key / MANGO_API_KEY on the service)",
                retryable=False,
                auth=True,
            )
        if resp.status_code != 200:
            retryable = resp.status_code >= 500 or resp.status_code == 429
            raise _RequestFailed(f"HTTP {resp.status_code}: {resp.text[:200]}", retryable)
        try:
            return Decision.model_validate_json(resp.content)
        except ValidationError as exc:
            raise _RequestFailed(f"bad Decision body: {exc.errors()[:1]}", False) from exc

    def _on_auth_error(self, error: str) -> None:
        with self._cv:
            first = not self._auth_error
            self._counters.auth_errors += 1
            self._auth_error = self._last_error = error
        if first:
            logger.error("PolicyClient %s: configuration error, not retried: %s", self.job_id, error)
        else:
            logger.debug("PolicyClient %s: still refused: %s", self.job_id, error)

    def _on_success(self) -> None:
        with self._cv:
            if self._auth_error:
                logger.info("PolicyClient %s: the service accepts the API key again", self.job_id)
                self._auth_error = ""
            self._counters.successes += 1
            if self._service_down:
                self._counters.reconnects += 1
                logger.info("PolicyClient %s: service reachable again (breaker closed)", self.job_id)
            self._service_down = False
            self._consecutive_failures = 0
            self._breaker = "closed"

    def _on_failure(self) -> None:
        with self._cv:
            self._service_down = True
            self._consecutive_failures += 1
            if self._breaker == "half_open" or self._consecutive_failures >= self.breaker_failures:
                if self._breaker != "open":
                    logger.warning(
                        "PolicyClient %s: breaker open for %g s after %d failed requests (%s)",
                        self.job_id,
                        self.breaker_cooldown_s,
                        self._consecutive_failures,
                        self._last_error,
                    )
                self._breaker = "open"
                self._opened_at = time.monotonic()

    def _fallback_outcome(self, job: _Pending, error: str) -> DecisionOutcome:
        controller = self.fallback or StaticController(job.history[-1].setting)
        setting: CompressionSetting = controller.decide(
            job.history, self.objective, reference=job.reference, profile=self.profile
        )
        name = self.fallback.name if self.fallback else "hold"
        why = controller.reason if self.fallback else f"hold {setting.label()}"
        decision = Decision(
            setting=setting,
            policy=f"fallback:{name}",
            policy_version="local",
            shielded=False,
            reason=f"fallback ({error}): {why}",
        )
        with self._cv:
            self._counters.fallbacks += 1
        logger.info(
            "PolicyClient %s: fallback decision %s for step %d", self.job_id, setting.label(), job.step
        )
        return DecisionOutcome(
            decision, "fallback", job.step, (time.perf_counter() - job.submitted) * 1e3, error=error
        )


def _check_ids(job_id: str, policy: str, objective: Objective) -> None:
    """Reject a job id or policy name the service would refuse, with the contract's own message."""
    probe = TelemetryRecord.model_validate(
        {"step": 0, "loss": 0.0, "grad_norm": 0.0, "state_bytes": 0, "interval_s": 0.0, "lr": 0.0,
         "setting": CompressionSetting.off()}
    )  # fmt: skip
    try:
        DecideRequest(job_id=job_id, policy=policy, objective=objective, history=[probe])
    except ValidationError as exc:
        fields = ", ".join(str(e["loc"][0]) for e in exc.errors())
        raise ValueError(
            f"invalid {fields}: job_id={job_id!r} policy={policy!r} "
            "(use 1-128 chars of [A-Za-z0-9_.:-]; policy up to 64)"
        ) from None
