"""Policies the service can answer with, held in an immutable snapshot that a reload swaps atomically.

Names a request may use (``DecideRequest.policy``):

* every **learned** policy: an artifact (``<name>.json`` + ``<name>.safetensors``, see
  :mod:`client.policy.artifact`) in the shipped default directory (``client/policy/default_policy/``) or in
  ``MANGO_POLICY_DIR`` (flat or one level deep; an artifact there overrides a shipped one of the same name);
* every **heuristic** in ``client.controllers.HEURISTICS``, looked up at request time, so a controller added
  to that dict is served without a reload; a fresh controller is built per request (the service is
  stateless: anything a heuristic needs must be in the request's history window);
* ``default``: ``MANGO_DEFAULT_POLICY`` if set, else the shipped learned policy if it loads, else
  ``MANGO_FALLBACK_POLICY`` (``static``).

Both kinds are :class:`client.policy.Controller` s, called with the request's window, objective, reference
and profile. A learned policy (:class:`client.policy.LearnedPolicy`) decides by
``ObservationSpec(window, grid).encode(...)`` -> the numpy TinyFormer's argmax -> ``ActionGrid.setting``;
serving imports no torch.

Hot reload (:meth:`PolicyRegistry.reload`) builds a complete new :class:`Snapshot` off to the side and
then replaces one reference; a request reads that reference once, so it finishes on the snapshot it started
with and no request sees a half-loaded state. An artifact that fails to load keeps its last good version (the
failure is reported); an unchanged artifact (same file stats of manifest and weights) is reused, not re-read.

With ``isolate=True`` (the service's default, ``MANGO_RELOAD_IN_SUBPROCESS``) every reload after the first
loads and verifies artifacts in a separate worker process (:mod:`policy_service.loader`), so that reading and
hashing files does not compete with the event loop for the GIL; the serving process only rebuilds each
policy from the verified tensors (:func:`policy_from_loaded`). The first load (at start-up, before any
request) runs in-process.

Nothing in a policy folder can stop the service: each manifest is first read through the bounded JSON parser
(:mod:`policy_service.jsonlimits`: size, UTF-8, depth, no NUL byte in any string), and any exception while
loading one artifact is that artifact's error, logged with its reason; at start-up the service comes up with
the artifacts that did load. A new version of an artifact that is refused for its name (a reserved name, or
one another artifact already provides) also keeps the last good version in service.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from safetensors.numpy import load as st_load

from client.controllers import HEURISTICS
from client.policy import (
    ArtifactError,
    Controller,
    LearnedPolicy,
    NumpyTinyFormer,
    PolicyArtifact,
    ProfileFeatures,
    TinyFormerConfig,
    find_manifests,
    load_artifact,
)
from client.protocol import DEFAULT_GRID, CompressionSetting, Objective, Reference, TelemetryRecord

from .errors import UnknownPolicyError
from .jsonlimits import JSONLimitError
from .loader import LoadedArtifact, LoaderError, LoaderProcess, precheck_manifest

__all__ = ["DEFAULT_ALIAS", "HeuristicPolicy", "PolicyRegistry", "ServedPolicy", "Snapshot"]

log = logging.getLogger(__name__)

#: The alias every client may use without knowing what is deployed.
DEFAULT_ALIAS = "default"


class HeuristicPolicy(Controller):
    """A ``client.controllers`` heuristic; a fresh controller per call keeps requests independent."""

    kind = "heuristic"
    grid = DEFAULT_GRID

    def __init__(self, name: str, factory: Callable[..., Controller]) -> None:
        self.name = name
        self.factory = factory
        self.version = str(getattr(factory, "version", "heuristic"))

    def decide(
        self,
        history: Sequence[TelemetryRecord],
        objective: Objective,
        *,
        reference: Reference | None = None,
        profile: ProfileFeatures | None = None,
    ) -> CompressionSetting:
        controller = self.factory()
        setting = controller.decide(history, objective, reference=reference, profile=profile)
        self.reason = controller.reason
        return setting

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "version": self.version, "source": "client.controllers"}


#: HeuristicPolicy wrappers by (name, factory): a wrapper holds nothing per request but the last reason, so
#: requests share it; a factory replaced in ``HEURISTICS`` gets a new one. Bounded by the heuristics known.
_HEURISTIC_WRAPPERS: dict[tuple[str, Callable[..., Controller]], HeuristicPolicy] = {}


def _heuristic(name: str, factory: Callable[..., Controller]) -> HeuristicPolicy:
    wrapper = _HEURISTIC_WRAPPERS.get((name, factory))
    if wrapper is None:
        wrapper = _HEURISTIC_WRAPPERS[(name, factory)] = HeuristicPolicy(name, factory)
    return wrapper


#: What a policy name resolves to: both kinds are :class:`client.policy.Controller` s with a version and grid.
ServedPolicy = LearnedPolicy | HeuristicPolicy


class _NameRefused(Exception):
    """A freshly loaded artifact's name cannot be served (reserved or taken); its old version may stay."""


@dataclass(frozen=True)
class _Source:
    """One manifest file and what it loaded to (``key`` detects unchanged files)."""

    key: tuple[Any, ...]
    policy: LearnedPolicy


@dataclass(frozen=True)
class Snapshot:
    """Everything a request needs to pick a policy; never mutated after a reload publishes it."""

    generation: int
    learned: Mapping[str, LearnedPolicy]
    default_target: str
    fallback: str
    errors: Mapping[str, str]
    loaded_at: float
    sources: Mapping[str, _Source] = field(default_factory=dict)

    def names(self) -> list[str]:
        """Every name a request may use (heuristics as of now)."""
        return [DEFAULT_ALIAS, *sorted(self.learned), *sorted(n for n in HEURISTICS if n not in self.learned)]

    def resolve(self, name: str) -> ServedPolicy:
        """The policy ``name`` refers to; ``UnknownPolicyError`` (404) if there is none.

        ``default`` never fails while the fallback heuristic exists: if its target vanished (a heuristic
        removed from ``HEURISTICS``), the fallback answers.
        """
        targets = (self.default_target, self.fallback) if name == DEFAULT_ALIAS else (name,)
        for target in targets:
            learned = self.learned.get(target)
            if learned is not None:
                return learned
            factory = HEURISTICS.get(target)
            if factory is not None:
                return _heuristic(target, factory)
        raise UnknownPolicyError(name, self.names())


@dataclass(frozen=True)
class ReloadReport:
    """What a reload did: the new generation, the learned policies now served, and per-file errors."""

    generation: int
    learned: dict[str, str]  # name -> version
    reused: list[str]
    default_target: str
    errors: dict[str, str]
    duration_s: float


def _file_key(manifest: Path) -> tuple[Any, ...]:
    """Changes when the manifest or any sibling weights file is rewritten (stat only: cheap, bounded).

    The exporter replaces files atomically (new inode), so a rewrite is seen even within one mtime tick.
    """
    stats = []
    for f in [manifest, *sorted(manifest.parent.glob("*.safetensors"))]:
        try:
            st = f.stat()
        except OSError:
            continue
        stats.append((f.name, st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(stats)


def _load_policy(path: Path, *, shipped: bool) -> LearnedPolicy:
    precheck_manifest(path)
    return LearnedPolicy(load_artifact(path), shipped=shipped)


def policy_from_loaded(loaded: LoadedArtifact, *, shipped: bool) -> LearnedPolicy:
    """Rebuild a policy the loader process verified: the serving process's only reload work.

    The tensors were produced by :func:`policy_service.loader.load_verified` after every check of
    :func:`client.policy.load_artifact`; this parses them back and builds the numpy model.
    """
    config = TinyFormerConfig.from_dict(loaded.manifest.config)
    weights = st_load(loaded.weights)
    artifact = PolicyArtifact(
        manifest=loaded.manifest,
        config=config,
        weights=weights,
        model=NumpyTinyFormer(config, weights),
        manifest_path=Path(loaded.manifest_path),
        weights_path=Path(loaded.weights_path),
    )
    return LearnedPolicy(artifact, shipped=shipped)


#: Failures with a message written for the operator; anything else is also logged with its traceback.
_EXPECTED = (ArtifactError, JSONLimitError, LoaderError, _NameRefused)


def _reason(exc: BaseException) -> str:
    """A one-line reason for an artifact that failed; unexpected exception types are named."""
    if isinstance(exc, _EXPECTED):
        return str(exc)
    if isinstance(exc, OSError):
        return f"cannot read ({exc.strerror or exc})"
    return f"cannot load ({type(exc).__name__}: {exc})"


class PolicyRegistry:
    """Loads learned policies, publishes :class:`Snapshot` s, serializes reloads.

    :param policy_dir: the operator's directory of artifacts (``MANGO_POLICY_DIR``); ``None`` for none.
    :param default_policy_dir: the shipped learned default (``client.policy.DEFAULT_POLICY_DIR``); ``None`` to
        skip.
    :param default_policy: what ``default`` aliases; ``None`` = shipped learned policy, else ``fallback``.
    :param fallback: heuristic for ``default`` when nothing else is available and for failing policies.
    :param isolate: load and verify in a worker process on every reload after the first, so the
        reload's CPU work does not hold up requests (call :meth:`close` to stop the worker).
    """

    def __init__(
        self,
        *,
        policy_dir: Path | None = None,
        default_policy_dir: Path | None = None,
        default_policy: str | None = None,
        fallback: str = "static",
        isolate: bool = False,
    ) -> None:
        if fallback not in HEURISTICS:
            raise ValueError(
                f"fallback policy {fallback!r} is not a heuristic; choose one of {sorted(HEURISTICS)}"
            )
        self.policy_dir = policy_dir
        self.default_policy_dir = default_policy_dir
        self.default_policy = default_policy
        self.fallback = fallback
        self.isolate = isolate
        self._loader = LoaderProcess() if isolate else None
        self._closed = False  # close() ran: a background start_loader() that comes late starts nothing
        self._reload_lock = threading.Lock()
        self._snapshot: Snapshot | None = None

    @property
    def snapshot(self) -> Snapshot | None:
        """The current snapshot (``None`` before the first reload). Read it once per request."""
        return self._snapshot

    def start_loader(self) -> Future[Any] | None:
        """Start the loader process now (a Python start-up) so a hot reload does not wait for it; idempotent.

        The service calls it once it is ready (serving never waits for it); a reload that comes first starts
        the worker itself and waits for it.

        :returns: a future done when the worker is up (``None`` without ``isolate``).
        """
        if self._loader is None:
            return None
        with self._reload_lock:  # a reload may be creating the worker right now
            return None if self._closed else self._loader.start()

    @property
    def loader_status(self) -> str:
        """The hot-reload worker: ``off`` (no ``isolate``), ``stopped``, ``starting``, ``up``, ``failed``."""
        return self._loader.status if self._loader is not None else "off"

    def close(self) -> None:
        """Stop the loader process, if any (a later reload starts a new one; start_loader no longer does)."""
        if self._loader is not None:
            with self._reload_lock:
                self._closed = True
                self._loader.close()

    def _load(self, path: Path, *, shipped: bool, first: bool) -> LearnedPolicy:
        if self._loader is None or first:
            return _load_policy(path, shipped=shipped)
        loaded = self._loader.load(str(path))
        return policy_from_loaded(loaded, shipped=shipped)

    def _candidates(self) -> list[tuple[Path, bool]]:
        out: list[tuple[Path, bool]] = []
        if self.default_policy_dir is not None:
            out += [(p, True) for p in find_manifests(self.default_policy_dir)]
        if self.policy_dir is not None:
            if not self.policy_dir.is_dir():
                log.warning("policy_dir %s is not a directory; serving no policies from it", self.policy_dir)
            out += [(p, False) for p in find_manifests(self.policy_dir)]
        return out

    def reload(self, force: bool = False) -> ReloadReport:
        """Load every artifact again and publish a new snapshot; concurrent calls run one after another.

        ``force=True`` re-reads unchanged artifacts too. Never raises for a bad artifact: it is reported in
        ``errors`` and its last good version (if any) stays in service.
        """
        with self._reload_lock:
            t0 = time.perf_counter()
            prev = self._snapshot
            prev_sources = prev.sources if prev is not None else {}
            errors: dict[str, str] = {}
            sources: dict[str, _Source] = {}
            learned: dict[str, LearnedPolicy] = {}
            origin: dict[str, str] = {}
            shipped_names: set[str] = set()
            reused: list[str] = []
            try:
                candidates = self._candidates()
            except Exception as exc:  # an unreadable folder: serve what is built in, report why
                errors["policy_dir"] = f"cannot list policy folders ({type(exc).__name__}: {exc})"
                candidates = []
            for path, shipped in candidates:
                src = str(path)
                old = prev_sources.get(src)
                policy: LearnedPolicy | None = None
                try:
                    key = _file_key(path)
                    if old is not None and old.key == key and not force:
                        policy = old.policy
                        reused.append(policy.name)
                    else:
                        policy = self._load(path, shipped=shipped, first=prev is None)
                        refused = self._refuse_name(policy.name, learned, shipped, origin)
                        if refused:
                            policy = None
                            raise _NameRefused(refused)
                except Exception as exc:  # one bad artifact never fails a reload (or the start-up)
                    reason = _reason(exc)
                    if not isinstance(exc, (*_EXPECTED, OSError)):
                        log.warning("policy artifact %s failed unexpectedly", src, exc_info=exc)
                    if old is None or self._refuse_name(old.policy.name, learned, shipped, origin):
                        errors[src] = reason
                        continue
                    errors[src] = f"{reason} (still serving {old.policy.name} version {old.policy.version})"
                    policy, key = old.policy, old.key
                assert policy is not None
                name = policy.name
                refused = self._refuse_name(name, learned, shipped, origin)
                if refused:  # an unchanged artifact whose name another one took first
                    errors[src] = refused
                    continue
                if name in learned:
                    log.info("policy %s from %s overrides the shipped one at %s", name, src, origin[name])
                learned[name] = policy
                origin[name] = src
                sources[src] = _Source(key=key, policy=policy)
                if shipped:
                    shipped_names.add(name)

            default_target = self._default_target(learned, shipped_names, errors)
            snap = Snapshot(
                generation=(prev.generation + 1) if prev is not None else 1,
                learned=MappingProxyType(learned),
                default_target=default_target,
                fallback=self.fallback,
                errors=MappingProxyType(errors),
                loaded_at=time.time(),
                sources=MappingProxyType(sources),
            )
            self._snapshot = snap  # the atomic swap: one reference assignment
            duration = time.perf_counter() - t0
            for src, msg in errors.items():
                log.warning("policy artifact %s: %s", src, msg)
            log.info(
                "policy snapshot %d: learned %s, default -> %s (%.0f ms)",
                snap.generation,
                {n: p.version for n, p in learned.items()},
                default_target,
                duration * 1e3,
            )
            return ReloadReport(
                generation=snap.generation,
                learned={n: p.version for n, p in learned.items()},
                reused=reused,
                default_target=default_target,
                errors=dict(errors),
                duration_s=duration,
            )

    @staticmethod
    def _refuse_name(
        name: str, learned: Mapping[str, LearnedPolicy], shipped: bool, origin: Mapping[str, str]
    ) -> str | None:
        """Why ``name`` cannot be served from this artifact in this pass (``None`` if it can)."""
        if name == DEFAULT_ALIAS or name in HEURISTICS:
            return f"policy name {name!r} is reserved (the default alias or a heuristic); rename it"
        if name in learned and not (learned[name].shipped and not shipped):
            return f"duplicate policy name {name!r}; {origin[name]} already provides it"
        return None

    def _default_target(
        self, learned: Mapping[str, LearnedPolicy], shipped_names: set[str], errors: dict[str, str]
    ) -> str:
        if self.default_policy:
            if self.default_policy in learned or self.default_policy in HEURISTICS:
                return self.default_policy
            errors["default_policy"] = (
                f"MANGO_DEFAULT_POLICY={self.default_policy!r} is neither a loaded learned policy nor a "
                f"heuristic; 'default' answers with {self.fallback!r}"
            )
            return self.fallback
        shipped = sorted(n for n in shipped_names if n in learned)  # an operator override keeps the name
        return shipped[0] if shipped else self.fallback
