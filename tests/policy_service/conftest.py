"""A real ``mango serve`` (uvicorn, one process) on a free loopback port, shared by the session's tests."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from .support import export_tiny, free_port

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
    api_key, admin_key = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    env = {
        **os.environ,
        "MANGO_API_KEY": api_key,
        "MANGO_ADMIN_KEY": admin_key,
        "MANGO_POLICY_DIR": str(policy_dir),
        "MANGO_DEFAULT_POLICY_DIR": "",  # independent of whether a shipped default exists
        "MANGO_MAX_BODY_BYTES": str(64 * 1024),
        "MANGO_LOG_LEVEL": "info",
    }
    port = free_port()
    log_path = tmp / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mango_cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = LiveServer(f"http://127.0.0.1:{port}", api_key, admin_key, policy_dir, log_path, proc)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited with {proc.returncode}:\n{server.log()}")
            try:
                if httpx.get(f"{server.base_url}/readyz", timeout=2.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"server not ready after {STARTUP_TIMEOUT_S} s:\n{server.log()}")
            time.sleep(0.2)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
