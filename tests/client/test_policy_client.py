"""PolicyClient against real HTTP servers on loopback: the policy service, run by the one launcher
(:class:`policy_service.launch.ServiceProcess`: a real ``python -m policy_service`` with generated keys), and
socket servers in a thread that simulate faults (a trickling or slow answer).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from client.controllers import LoRAvenController
from client.policy_client import PolicyClient
from client.protocol import CompressionSetting, Decision, Objective, TelemetryRecord
from policy_service.launch import ServiceProcess, free_port

#: Start-up on a busy shared 2-core machine can take seconds.
STARTUP_TIMEOUT_S = 180.0
#: A key for clients of servers that never check it (fault servers, nothing listening).
UNCHECKED_KEY = "mango-test-api-key-0123456789"
OBJ = Objective(w_loss=1.0, w_memory=0.5, memory_budget_bytes=None)


def record(step: int, **kw: object) -> TelemetryRecord:
    base: dict[str, object] = dict(
        step=step,
        loss=3.0 - step / 1000,
        grad_norm=1.0,
        compression_error=0.5,
        state_bytes=10_000,
        interval_s=1.0,
        lr=1e-3,
        setting=CompressionSetting(rank=8, bits=8, gamma=0.0),
    )
    base.update(kw)
    return TelemetryRecord(**base)  # type: ignore[arg-type]


def wait_outcome(client: PolicyClient, timeout_s: float = 15.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        out = client.poll()
        if out is not None:
            return out
        time.sleep(0.01)
    raise AssertionError(f"no outcome within {timeout_s} s; counters {client.counters}")


def make_client(url: str, api_key: str = UNCHECKED_KEY, **kw: object) -> PolicyClient:
    args: dict[str, object] = dict(timeout_s=2.0, retries=1, backoff_s=0.05, breaker_cooldown_s=0.5)
    args.update(kw)
    return PolicyClient(url, api_key, "test-job", OBJ, **args)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def server() -> Iterator[ServiceProcess]:
    with ServiceProcess() as svc:
        svc.start(timeout_s=STARTUP_TIMEOUT_S)
        yield svc


# ---------------------------------------------------------------------------------------------- args


@pytest.mark.parametrize(
    ("kw", "exc", "match"),
    [
        ({"base_url": "127.0.0.1:80"}, ValueError, "http://"),
        ({"api_key": ""}, ValueError, "api_key"),
        ({"job_id": "bad job/id"}, ValueError, "job_id"),
        ({"policy": "x" * 65}, ValueError, "policy"),
        ({"objective": {"w_loss": 1.0}}, TypeError, "Objective"),
        ({"timeout_s": 0}, ValueError, "timeout_s"),
        ({"retries": -1}, ValueError, "retries"),
        ({"breaker_failures": 0}, ValueError, "breaker_failures"),
        ({"fallback": "loraven"}, TypeError, "Controller"),
    ],
)
def test_bad_construction_args(kw: dict[str, object], exc: type[Exception], match: str) -> None:
    args: dict[str, object] = dict(
        base_url="http://127.0.0.1:1", api_key="k", job_id="job", objective=OBJ, start=False
    )
    args.update(kw)
    with pytest.raises(exc, match=match):
        PolicyClient(**args)  # type: ignore[arg-type]


def test_submit_validates_window() -> None:
    with make_client("http://127.0.0.1:1", start=False) as c:
        with pytest.raises(ValueError, match="empty"):
            c.submit([])
        with pytest.raises(ValueError, match="history"):
            c.submit([record(50 * i) for i in range(1, 10)])  # 9 > MAX_HISTORY
    with pytest.raises(RuntimeError, match="closed"):
        c.submit([record(50)])


# ---------------------------------------------------------------------------------------------- live


def test_decision_from_the_service(server: ServiceProcess) -> None:
    with make_client(server.url, server.api_key) as c:
        assert c.poll() is None
        c.submit([record(50), record(100)])  # (not blocking: test_slow_server_times_out_to_fallback...)
        out = wait_outcome(c)
        assert out.source == "service" and not out.is_fallback and out.step == 100
        assert out.decision.policy == server.get("/v1/policies")["default"]  # the service's default decided
        assert isinstance(out.decision, Decision) and out.latency_ms > 0
        assert c.poll() is None  # consumed
        assert c.counters["requests"] == c.counters["successes"] == 1
        assert c.counters["fallbacks"] == 0 and c.breaker_state == "closed"


def test_wrong_key_falls_back_without_retry(server: ServiceProcess) -> None:
    with PolicyClient(server.url, "wrong-key", "job-x", OBJ, retries=3) as c:
        c.submit([record(50)])
        out = wait_outcome(c)
    assert out.is_fallback and ("HTTP 401" in out.error or "HTTP 403" in out.error)
    assert c.counters["requests"] == 1  # 4xx is not retried


def test_wrong_key_is_a_loud_configuration_error_not_an_outage(
    server: ServiceProcess, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.DEBUG, logger="client.policy_client"),
        PolicyClient(server.url, "wrong-key", "job-x", OBJ, retries=3, breaker_failures=1) as c,
    ):
        for i in range(3):
            c.submit([record(50 * (i + 1))])
            out = wait_outcome(c)
            assert out.is_fallback and "refused the API key" in out.error
        assert c.status == "auth_error" and "HTTP 401" in c.last_error
        assert c.breaker_state == "closed"  # not an outage: the breaker never opens
        counts = c.counters
    assert counts["requests"] == 3 and counts["auth_errors"] == 3 and counts["failures"] == 0
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "configuration error" in errors[0].getMessage()  # once, at error level
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]  # no outage warnings


def test_right_key_reports_ok_status(server: ServiceProcess) -> None:
    with make_client(server.url, server.api_key) as c:
        assert c.status == "ok"
        c.submit([record(50)])
        assert wait_outcome(c).source == "service"
        assert c.status == "ok"


class TrickleServer:
    """Accepts, then sends an HTTP response one byte every ``gap_s`` (a fault to simulate)."""

    def __init__(self, gap_s: float = 0.2) -> None:
        self.gap_s = gap_s
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.sock.settimeout(0.1)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn: socket.socket) -> None:
        with conn:
            for byte in b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Pad: " + b"x" * 1000:
                if self.stop.wait(self.gap_s):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.sock.close()


def test_trickling_server_hits_the_total_deadline() -> None:
    srv = TrickleServer(gap_s=0.1)  # each byte well inside a per-read timeout: only a total deadline helps
    try:
        with make_client(srv.url, timeout_s=0.5, retries=0) as c:
            t0 = time.perf_counter()
            c.submit([record(50)])
            out = wait_outcome(c, timeout_s=5.0)
            took_s = time.perf_counter() - t0
        assert out.is_fallback and "timeout" in out.error
        assert took_s < 1.5, took_s  # 0.5 s deadline (+ scheduling), not the minutes the trickle lasts
    finally:
        srv.close()


def test_close_aborts_a_request_in_flight_at_once() -> None:
    srv = TrickleServer(gap_s=0.1)
    try:
        c = make_client(srv.url, timeout_s=30.0, retries=0)
        c.submit([record(50)])
        deadline = time.monotonic() + 5
        while c.counters["requests"] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.3)  # the request is now reading the trickle
        t0 = time.perf_counter()
        c.close()
        close_s = time.perf_counter() - t0
        assert close_s < 0.5, close_s
        assert not c._thread.is_alive()
    finally:
        srv.close()


def test_no_server_fallback_is_used_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with (
        caplog.at_level(logging.INFO, logger="client.policy_client"),
        make_client(url, fallback=LoRAvenController(target_error=0.1), retries=1) as c,
    ):
        c.submit([record(50, compression_error=0.5)])
        out = wait_outcome(c)
    assert out.is_fallback and out.source == "fallback"
    assert out.decision.setting.rank == 16  # LoRAven raised the rank
    assert out.decision.policy == "fallback:loraven" and "ConnectError" in out.error
    assert "rank up" in out.decision.reason
    assert c.counters["requests"] == 2 and c.counters["failures"] == 2 and c.counters["fallbacks"] == 1
    assert "fallback decision" in caplog.text and "failed" in caplog.text


def test_hold_fallback_keeps_current_setting() -> None:
    with make_client(f"http://127.0.0.1:{free_port()}", retries=0) as c:
        s = CompressionSetting(rank=4, bits=2, gamma=0.5)
        c.submit([record(50, setting=s)])
        out = wait_outcome(c)
    assert out.is_fallback and out.decision.setting == s and out.decision.policy == "fallback:hold"


def test_breaker_opens_then_reconnects_when_server_returns() -> None:
    srv = ServiceProcess(port=free_port())
    c = make_client(srv.url, srv.api_key, retries=0, breaker_failures=2, breaker_cooldown_s=0.3)
    try:
        for i in range(2):
            c.submit([record(50 * (i + 1))])
            assert wait_outcome(c).is_fallback
        assert c.breaker_state == "open"
        sent = c.counters["requests"]
        c.submit([record(150)])
        out = wait_outcome(c)
        assert out.is_fallback and "circuit open" in out.error
        assert c.counters["requests"] == sent  # no network while open
        with srv:
            srv.start(timeout_s=STARTUP_TIMEOUT_S)  # the service comes up on the same port
            time.sleep(0.35)  # past the cooldown: the next window is a half-open probe
            c.submit([record(200)])
            out = wait_outcome(c)
            assert out.source == "service"
            assert c.breaker_state == "closed" and c.counters["reconnects"] == 1
    finally:
        c.close()


def test_slow_server_times_out_to_fallback_without_blocking() -> None:
    slow = TrickleServer(gap_s=5.0)  # the first byte of the answer after 5 s
    try:
        with make_client(slow.url, timeout_s=0.5, retries=0) as c:
            t0 = time.perf_counter()
            c.submit([record(50)])
            c.submit([record(50), record(100)])  # supersedes the first if still queued
            submit_s = time.perf_counter() - t0
            out = wait_outcome(c, timeout_s=4.0)  # well before the server's 5 s answer
            assert submit_s < 0.25  # a blocking submit would take the 0.5 s timeout at least
            assert out.is_fallback and "timeout" in out.error
            assert c.counters["failures"] >= 1
            t0 = time.perf_counter()
        assert time.perf_counter() - t0 < 2.0  # close() does not wait for the 5 s answer
    finally:
        slow.close()
