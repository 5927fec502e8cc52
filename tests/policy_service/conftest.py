"""A real ``mango serve`` (uvicorn, one process; :mod:`policy_service.launch`) on a free loopback port, shared
by the session's tests."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from policy_service.launch import ServiceError, ServiceProcess

from .support import export_tiny

ROOT = Path(__file__).resolve().parents[2]
#: Start-up imports FastAPI and the policy runtime; on a busy shared 2-core machine that can take seconds.
STARTUP_TIMEOUT_S = 180.0


@dataclass
class LiveServer:
    base_url: str
    api_key: str
    admin_key: str
    policy_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes]

    def client(self, key: str | None = "user", timeout_s: float = 30.0) -> httpx.Client:
        """An HTTP client with the user key, the admin key, or (``None``) no key."""
        headers = {}
        if key == "user":
            headers["X-API-Key"] = self.api_key
        elif key == "admin":
            headers["X-API-Key"] = self.admin_key
        elif key is not None:
            headers["X-API-Key"] = key
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout_s)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("policy_service")
    policy_dir = tmp / "policies"
    export_tiny(policy_dir)
    env = {
        "MANGO_POLICY_DIR": str(policy_dir),
        "MANGO_DEFAULT_POLICY_DIR": "",  # independent of whether a shipped default exists
        "MANGO_MAX_BODY_BYTES": str(64 * 1024),
        "MANGO_LOG_LEVEL": "info",
    }
    log_path = tmp / "server.log"
    with ServiceProcess(log_path, env=env) as svc:
        try:
            svc.start(timeout_s=STARTUP_TIMEOUT_S)
        except ServiceError as exc:
            pytest.fail(str(exc))
        assert svc.proc is not None
        yield LiveServer(svc.url, svc.api_key, svc.admin_key, policy_dir, log_path, svc.proc)
