"""Run the policy service as a child process: real uvicorn on a free loopback port, stopped with its group.

The one launcher that the demo (``mango demo``), the benchmarks (``mango bench service``, ``mango bench
overhead``) and anything else that needs a live service share::

    with ServiceProcess(log_path, env={"MANGO_POLICY_DIR": "/policies"}) as svc:
        svc.start()                      # picks a free port, waits for GET /readyz
        svc.get("/v1/policies")          # JSON with the generated API key

* **Keys**: fresh random ``MANGO_API_KEY`` / ``MANGO_ADMIN_KEY`` (``secrets.token_urlsafe(32)``), so the
  service runs in production mode (``--dev`` is never needed on loopback). Inherited ``MANGO_*`` variables
  are dropped: what the child serves depends on ``env`` alone, not on the caller's shell.
* **Port**: :func:`free_port` asks the OS for one; a port taken between that probe and uvicorn's bind makes
  the child exit, and :meth:`ServiceProcess.start` tries again with another port (``attempts``). A child
  that hangs is not retried.
* **Stopping**: the child runs in its own process group (``start_new_session``), so a Ctrl-C in the
  caller's terminal reaches the caller only, which then stops the whole group: SIGTERM, SIGKILL after
  ``grace_s``, then a wait until the group is empty. On Linux the child also gets SIGTERM if the caller dies
  without cleaning up (``PR_SET_PDEATHSIG``). :meth:`ServiceProcess.stop` is idempotent and holds SIGINT /
  SIGTERM off while it runs, so a second Ctrl-C cannot cut the clean-up short.

This module imports only the standard library and ``httpx``: launching the service does not load FastAPI,
uvicorn or torch in the caller.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from policy_service.config import weak_secret_reason

__all__ = [
    "ServiceError",
    "ServiceProcess",
    "free_port",
    "pid_alive",
    "port_open",
    "signals_deferred",
    "strong_key",
]

#: The directory that holds the ``policy_service`` package: the child's working directory, so that it
#: imports the same code as the caller (a checkout or an installed package alike).
PACKAGE_PARENT = Path(__file__).resolve().parent.parent


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the OS picks it; another process may take it later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (a zombie, exited but not yet reaped, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Ignore SIGINT / SIGTERM inside the block (main thread only): a second Ctrl-C cannot cut a clean-up."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


class ServiceError(RuntimeError):
    """The policy service did not start or did not become ready (the message ends with its log's tail)."""


def _parent_death_signal() -> Callable[[], None] | None:
    """A ``preexec_fn`` that asks Linux to SIGTERM the child if the caller dies (``None`` elsewhere)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # loaded here: nothing is loaded between fork and exec
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None

    def preexec() -> None:
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG; one call, async-signal-safe

    return preexec


def _reap_group(pgid: int, wait_s: float = 5.0) -> None:
    """Wait for the process group to empty, then SIGKILL what is left.

    The service's reload worker (``policy_service.loader``) runs under multiprocessing ``spawn``, whose
    resource tracker ignores SIGTERM and exits only once its parent's pipe closes, a moment after the
    service: without this wait a caller could still find it in the group.
    """
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def strong_key() -> str:
    """A fresh random key the service accepts: ``secrets.token_urlsafe(32)``, drawn again in the rare case
    (about 1 in 30,000) where it starts with a placeholder word such as ``xxx`` that
    :func:`policy_service.config.weak_secret_reason` refuses; a demo once failed to start on one."""
    while True:
        key = secrets.token_urlsafe(32)
        if weak_secret_reason(key) is None:
            return key


class ServiceProcess:
    """``python -m policy_service`` (``mango serve``) in its own process group on a free loopback port.

    :param log_path: the service's stdout and stderr go here (appended); ``None``: a temporary file, removed
        by :meth:`stop`.
    :param env: ``MANGO_*`` settings for the child (``MANGO_POLICY_DIR``, ``MANGO_LOG_LEVEL``, ...); they
        override the launcher's own (keys, ``MANGO_DEV_MODE=false``).
    :param host: bind address; loopback unless you mean to expose the service.
    :param port: a fixed port (e.g. a client built before the service starts); ``None``: a free one, and
        another one if a different process takes it first.

    Use as a context manager (``__exit__`` stops it); :meth:`start` picks the port and waits for readiness.
    """

    def __init__(
        self,
        log_path: Path | str | None = None,
        env: Mapping[str, str] | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
    ) -> None:
        self.host = host
        self._fixed_port = port
        self.port = port or 0
        self.log_path = Path(log_path) if log_path is not None else None
        self.api_key = strong_key()
        self.admin_key = strong_key()
        self.extra_env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        #: Seconds from the child's spawn to the first 200 of ``GET /readyz`` (the service's cold start, to
        #: within ``poll_s``), and that answer's JSON; set by :meth:`start`.
        self.ready_after_s: float | None = None
        self.ready_body: dict[str, Any] | None = None
        self._log_file: IO[bytes] | None = None
        self._temp_log: Path | None = None
        self._spawned_at = 0.0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def command(self) -> list[str]:
        """The child's command line (with the port in use)."""
        return [sys.executable, "-m", "policy_service", "--host", self.host, "--port", str(self.port)]

    def describe(self) -> str:
        """The command as a shell would show it (for reports)."""
        return shlex.join(["python", *self.command[1:]])

    def start(self, timeout_s: float = 180.0, attempts: int = 3, poll_s: float = 0.2) -> ServiceProcess:
        """Start the child and wait up to ``timeout_s`` for ``GET /readyz`` to answer 200 (asked every
        ``poll_s``; the cold-start benchmark polls faster).

        ``ServiceError`` when it exits first on every attempt (a lost port race gets another port) or hangs.
        """
        last = ""
        for _ in range(attempts):
            self.port = self._fixed_port or free_port(self.host)
            self._spawn()
            try:
                self._wait_ready(timeout_s, poll_s)
                return self
            except ServiceError as exc:
                last = str(exc)
                exited = self.proc is not None and self.proc.poll() is not None
                self.stop()
                if not exited:  # hung, not a lost port race: do not retry
                    break
        raise ServiceError(last)

    def _spawn(self) -> None:
        env = {
            **{k: v for k, v in os.environ.items() if not k.upper().startswith("MANGO_")},
            "MANGO_API_KEY": self.api_key,
            "MANGO_ADMIN_KEY": self.admin_key,
            "MANGO_DEV_MODE": "false",
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }
        if self.log_path is None and self._temp_log is None:
            fd, name = tempfile.mkstemp(prefix="mango-service-", suffix=".log")
            os.close(fd)
            self._temp_log = Path(name)
        path = self._log()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(path, "ab")  # noqa: SIM115 - closed in stop()
        self._spawned_at = time.monotonic()
        self.proc = subprocess.Popen(
            self.command,
            cwd=PACKAGE_PARENT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: Ctrl-C goes to the caller, which stops the group
            preexec_fn=_parent_death_signal(),
        )

    def _log(self) -> Path:
        path = self.log_path or self._temp_log
        assert path is not None
        return path

    def _wait_ready(self, timeout_s: float, poll_s: float) -> None:
        import httpx

        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServiceError(
                    f"the policy service exited with status {self.proc.returncode} before it was ready; "
                    f"its log ({self._log()}) ends with:\n{self.log_tail()}"
                )
            try:
                r = httpx.get(f"{self.url}/readyz", timeout=2.0)
                if r.status_code == 200:
                    self.ready_after_s = time.monotonic() - self._spawned_at
                    self.ready_body = r.json()
                    return
            except httpx.HTTPError:
                pass
            time.sleep(poll_s)
        raise ServiceError(
            f"the policy service was not ready after {timeout_s:g} s; "
            f"its log ({self._log()}) ends with:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines of the service's log."""
        try:
            return "\n".join(self._log().read_text(errors="replace").splitlines()[-lines:])
        except (OSError, AssertionError):
            return "(no log)"

    def get(self, path: str, admin: bool = False, timeout_s: float = 10.0) -> Any:
        """``GET path`` with the API (or admin) key: parsed JSON, or the body text (``/metrics``)."""
        import httpx

        key = self.admin_key if admin else self.api_key
        r = httpx.get(f"{self.url}{path}", headers={"X-API-Key": key}, timeout=timeout_s)
        r.raise_for_status()
        return r.json() if "json" in r.headers.get("content-type", "") else r.text

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM the process group, SIGKILL it after ``grace_s``, wait for it to empty. Idempotent."""
        proc = self.proc
        if proc is None:
            return
        with signals_deferred():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(grace_s)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(5.0)
            else:  # the leader exited: take down anything it left in its group
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
            _reap_group(proc.pid)
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None
        self.proc = None

    def close(self) -> None:
        """:meth:`stop`, then remove the temporary log (when no ``log_path`` was given)."""
        self.stop()
        if self._temp_log is not None:
            self._temp_log.unlink(missing_ok=True)
            self._temp_log = None

    def __enter__(self) -> ServiceProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
