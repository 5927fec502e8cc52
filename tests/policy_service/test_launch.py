"""The one service launcher (``policy_service.launch``): a real ``python -m policy_service`` on loopback,
ready when it says so, gone (process group and port) when stopped, and a failed start that says why."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from policy_service import launch
from policy_service.config import weak_secret_reason
from policy_service.launch import ServiceError, ServiceProcess, free_port, pid_alive, port_open


def test_free_port_is_bindable_and_not_listening() -> None:
    port = free_port()
    assert 1024 <= port <= 65535 and not port_open("127.0.0.1", port)
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # free right now: the OS gave it back


def test_start_answers_with_generated_keys_then_stop_leaves_nothing(tmp_path: Path) -> None:
    log = tmp_path / "service.log"
    with ServiceProcess(log, env={"MANGO_LOG_LEVEL": "info"}) as svc:
        svc.start(timeout_s=180)
        pid, port = svc.pid, svc.port
        assert pid is not None and port_open("127.0.0.1", port)
        assert svc.command[1:3] == ["-m", "policy_service"] and str(port) in svc.describe()
        policies = svc.get("/v1/policies")
        assert "default" in policies and "policies" in policies
        assert "mango_http_requests_total" in svc.get("/metrics")
        assert len(svc.api_key) >= 32 and svc.api_key != svc.admin_key
    assert svc.proc is None and not pid_alive(pid)
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # the whole process group is gone
    assert not port_open("127.0.0.1", port)
    assert "dev mode" not in log.read_text().lower()
    svc.stop()  # idempotent


def test_a_service_that_cannot_start_raises_with_its_log(tmp_path: Path) -> None:
    svc = ServiceProcess(env={"MANGO_LOG_LEVEL": "loud"})  # invalid: the service exits with status 2
    with pytest.raises(ServiceError, match="exited with status 2") as exc:
        svc.start(timeout_s=120, attempts=2)
    assert "log_level" in str(exc.value)  # the log's tail names the bad setting
    assert svc.proc is None
    svc.close()
    assert svc._temp_log is None


def test_generated_keys_are_never_refused_as_placeholders(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fresh-clone `make demo` once failed: its random key began with 'xxx', a placeholder the service
    refuses, on all three start attempts. The launcher draws again until the service's own check accepts."""
    draws = iter(["xxxQ" + "a1B2c3D4" * 5, "testing" + "Z9y8X7w6" * 5, "k" + "Q1w2E3r4" * 5])
    monkeypatch.setattr(launch.secrets, "token_urlsafe", lambda _n: next(draws))  # the fault: unlucky draws
    key = launch.strong_key()
    assert key.startswith("kQ1w2") and weak_secret_reason(key) is None
    monkeypatch.undo()
    assert all(weak_secret_reason(launch.strong_key()) is None for _ in range(200))
