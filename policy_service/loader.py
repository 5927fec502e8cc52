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

The worker lowers its priority first thing (:func:`policy_service.loader_worker.init_worker`, before it
imports the policy runtime); it imports nothing heavier than that runtime (numpy, safetensors, pydantic).

The service starts the worker after it is ready (:meth:`LoaderProcess.start` from a background task of the
lifespan): serving never waits for a Python start-up, and a reload sent before the worker is up waits for it.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.resource_tracker
import os
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from client.policy.artifact import MAX_MANIFEST_BYTES, PolicyManifest, load_artifact, weights_bytes

from .jsonlimits import JSONLimitError, find_nul, loads_bounded
from .loader_worker import init_worker

__all__ = [
    "LoadedArtifact",
    "LoaderError",
    "LoaderProcess",
    "load_verified",
    "precheck_manifest",
    "stop_resource_tracker",
]

log = logging.getLogger(__name__)

#: A loader that takes longer than this for one artifact is killed; the artifact's last good version stays.
LOAD_TIMEOUT_S = 120.0


class LoaderError(Exception):
    """The loader process failed (crashed, timed out); the artifact itself may be fine."""


@dataclass(frozen=True)
class LoadedArtifact:
    """What the worker hands back for one verified artifact (picklable, plain data)."""

    manifest: PolicyManifest
    manifest_path: str
    weights_path: str
    weights: bytes  # safetensors bytes of the verified float32 tensors


def _ready() -> int:
    """The start-up probe: unpickling it imports this module (the policy runtime) in the worker."""
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
    GIL, so the event loop runs freely meanwhile. :attr:`status` says where the worker stands: ``stopped``
    (none: never started, closed, or replaced after a failure), ``starting`` (its Python start-up runs),
    ``up``, or ``failed`` (the start-up probe failed; the next load starts a fresh worker).
    """

    def __init__(self, timeout_s: float = LOAD_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        self._pool: ProcessPoolExecutor | None = None
        self._probe: Future[Any] | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=1, mp_context=multiprocessing.get_context("spawn"), initializer=init_worker
            )
        return self._pool

    @property
    def status(self) -> str:
        """``stopped``, ``starting``, ``up`` or ``failed`` (see the class docstring)."""
        probe = self._probe
        if self._pool is None or probe is None:
            return "stopped"
        if not probe.done():
            return "starting"
        return "up" if not probe.cancelled() and probe.exception() is None else "failed"

    def start(self) -> Future[Any]:
        """Start the worker now (a Python start-up) so a reload does not wait for it; idempotent.

        :returns: a future done (with the worker's pid) when the worker is up and has imported the runtime.
        """
        if self._probe is not None and self._pool is not None:
            return self._probe
        t0 = time.perf_counter()
        probe = self._executor().submit(_ready)

        def report(fut: Future[Any]) -> None:
            if fut.cancelled() or fut.exception() is not None:
                return  # whoever waits on it reports the failure
            ms = 1e3 * (time.perf_counter() - t0)
            log.info("hot-reload loader process up (pid %s, %.0f ms)", fut.result(), ms)

        probe.add_done_callback(report)
        self._probe = probe
        return probe

    def load(self, path: str) -> LoadedArtifact:
        """Load and verify ``path`` in the worker; artifact errors are re-raised as they were raised there.

        :raises LoaderError: the worker died or did not answer within ``timeout_s`` (it is replaced).
        """
        try:
            self.start()  # no-op when the worker is up or starting
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
        self._probe = None
        if pool is None:
            return
        procs = list(getattr(pool, "_processes", {}).values()) if kill else []
        pool.shutdown(wait=not kill, cancel_futures=True)
        for p in procs:
            with contextlib.suppress(Exception):  # already gone
                p.terminate()


def stop_resource_tracker() -> None:
    """Stop multiprocessing's resource tracker and reap it: at service shutdown, after the loader.

    The loader's ``spawn`` context starts the tracker as a child of the service. Left alone it exits only once
    the service has (its pipe closes), then waits as a zombie until init reaps it, and a launcher waiting
    for the service's process group to empty (``policy_service.launch``) waits for that too: 1.5-1.7 s of
    each stop on this project's machines. Uses the tracker's ``_stop`` (private; CPython 3.8+) where it
    exists; elsewhere nothing changes.
    """
    stop = getattr(multiprocessing.resource_tracker._resource_tracker, "_stop", None)
    if stop is None:
        return
    try:
        stop()
    except Exception as exc:  # shutting down: a tracker that will not stop is left to exit on its own
        log.debug("resource tracker did not stop: %s", exc)
