"""Load and verify artifacts in a separate process, so a hot reload does not hold the serving process's GIL.

A forced reload re-reads every artifact: the bounded manifest pre-check and
:func:`client.policy.load_artifact` (pickle sniffing, sha256, shapes, finite values). Done in a thread of the
serving process, that work competes with the event loop for the GIL and stalls decisions (issue 14 measured
this when loading also traced a torch model; an operator's folder may also hold many or large artifacts).

:class:`LoaderProcess` runs :func:`load_verified` in one long-lived ``spawn`` worker (lowered CPU priority).
The worker returns only plain data: the validated manifest and the verified weights as safetensors bytes.
Nothing in this exchange comes from the policy folder unverified: the bytes were produced by this service's
own code after the checks. The serving process then only rebuilds the numpy model from those tensors, see
:func:`policy_service.registry.policy_from_loaded`.

The worker lowers its priority (:func:`_init_worker`) first thing; it imports nothing heavier than the policy
runtime (numpy, safetensors, pydantic).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from client.policy.artifact import MAX_MANIFEST_BYTES, PolicyManifest, load_artifact, weights_bytes

from .jsonlimits import JSONLimitError, find_nul, loads_bounded

__all__ = ["LoadedArtifact", "LoaderError", "LoaderProcess", "load_verified", "precheck_manifest"]

log = logging.getLogger(__name__)

#: A loader that takes longer than this for one artifact is killed; the artifact's last good version stays.
LOAD_TIMEOUT_S = 120.0
#: How often the worker checks that the serving process still exists (it exits when not).
PARENT_POLL_S = 1.0
#: ``nice`` increment of the worker: on a small machine the serving process wins the CPU.
WORKER_NICE = 10


class LoaderError(Exception):
    """The loader process failed (crashed, timed out); the artifact itself may be fine."""


@dataclass(frozen=True)
class LoadedArtifact:
    """What the worker hands back for one verified artifact (picklable, plain data)."""

    manifest: PolicyManifest
    manifest_path: str
    weights_path: str
    weights: bytes  # safetensors bytes of the verified float32 tensors


def _exit_with_parent(parent: int) -> None:
    """Ends the worker once the serving process is gone (killed without shutting the pool down)."""
    while True:
        time.sleep(PARENT_POLL_S)
        if os.getppid() != parent:
            os._exit(0)


def _init_worker() -> None:
    """Runs first in the worker: watch the parent, lower the priority."""
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    with contextlib.suppress(OSError):  # not permitted: run at normal priority
        os.nice(WORKER_NICE)


def _ready() -> int:
    return os.getpid()


def precheck_manifest(path: Path) -> None:
    """Refuse a manifest the artifact loader must never see: too big, not UTF-8, too deep, or a NUL byte.

    :raises JSONLimitError: naming the limit or the field (``weights.file holds a NUL byte``).
    """
    with open(path, "rb") as f:
        raw = f.read(MAX_MANIFEST_BYTES + 1)
    data = loads_bounded(raw, max_bytes=MAX_MANIFEST_BYTES, what="manifest")
    where = find_nul(data)
    if where is not None:
        raise JSONLimitError(
            f"manifest field {where} holds a NUL byte; file names and text may not contain one"
        )


def load_verified(path: str) -> LoadedArtifact:
    """In the worker: every check the in-process load does, then serialize the result.

    :raises ArtifactError, JSONLimitError, OSError: as the in-process load would (pickled back).
    """
    precheck_manifest(Path(path))
    artifact = load_artifact(path)
    return LoadedArtifact(
        manifest=artifact.manifest,
        manifest_path=str(artifact.manifest_path),
        weights_path=str(artifact.weights_path),
        weights=weights_bytes(artifact.weights),
    )


class LoaderProcess:
    """One ``spawn`` worker process, started on demand, replaced if it dies or hangs.

    Calls come from the registry's reload (already serialized by its lock); waiting on the worker releases the
    GIL, so the event loop runs freely meanwhile.
    """

    def __init__(self, timeout_s: float = LOAD_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=1, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker
            )
        return self._pool

    def start(self) -> Future[Any]:
        """Start the worker now (a Python start-up) so the first reload does not wait for it."""
        return self._executor().submit(_ready)

    def load(self, path: str) -> LoadedArtifact:
        """Load and verify ``path`` in the worker; artifact errors are re-raised as they were raised there.

        :raises LoaderError: the worker died or did not answer within ``timeout_s`` (it is replaced).
        """
        try:
            fut = self._executor().submit(load_verified, path)
            result: LoadedArtifact = fut.result(timeout=self.timeout_s)
        except BrokenProcessPool as exc:
            self.close(kill=True)
            raise LoaderError(f"the loader process died ({exc}); try the reload again") from None
        except FutureTimeout:
            self.close(kill=True)
            raise LoaderError(f"the loader process did not finish within {self.timeout_s:g} s") from None
        return result

    def close(self, *, kill: bool = False) -> None:
        """Stop the worker (``kill``: terminate it at once, e.g. when it hangs)."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        procs = list(getattr(pool, "_processes", {}).values()) if kill else []
        pool.shutdown(wait=not kill, cancel_futures=True)
        for p in procs:
            with contextlib.suppress(Exception):  # already gone
                p.terminate()
