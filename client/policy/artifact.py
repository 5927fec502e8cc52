"""Policy artifacts: a TinyFormer's weights in safetensors plus a JSON manifest, and nothing executable.

An artifact named ``<name>`` is the file pair ``<name>.safetensors`` + ``<name>.json`` in one directory::

    {
      "format": "mango-policy-v1",
      "name": "tinyformer-ppo", "version": "2026-11-22.1",
      "architecture": "tinyformer", "config": {...TinyFormerConfig...},
      "action_grid": {...ActionGrid.model_dump()...},
      "obs_spec_version": "mango-obs-v1",
      "weights": {"file": "tinyformer-ppo.safetensors", "format": "safetensors", "sha256": "...",
                  "bytes": 123},
      "training": {"command": "mango train ...", "config": {...}},
      "metrics": {...}, "created_at": "2026-11-22T07:30:00Z", "extra": {}
    }

:func:`load_artifact` refuses, with an :class:`ArtifactError` that says what is wrong and how to fix it:
a weights file whose sha256 differs from the manifest's, an observation-spec version other than
``OBS_SPEC_VERSION``, an action grid that is not a sub-grid of the protocol's grid (or differs from an
expected one), weights that are not safetensors (a pickle or ``torch.save`` zip is detected by its first
bytes and never unpickled: ``torch.load`` is not called anywhere), weights outside the manifest's
directory, and tensors that do not match the architecture (:func:`client.policy.tinyformer.weight_shapes`,
the one definition of the layout). Only numpy, safetensors and pydantic are imported: no torch, no SB3, no
gymnasium. The training side exports through :func:`export_artifact` with its torch module's state dict
(``agents.export.export_policy``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from safetensors import SafetensorError
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from client.policy.tinyformer import NumpyTinyFormer, TinyFormerConfig, check_weights
from client.protocol import DEFAULT_GRID, OBS_SPEC_VERSION, ActionGrid

__all__ = [
    "ARTIFACT_FORMAT",
    "ArtifactError",
    "PolicyArtifact",
    "PolicyManifest",
    "export_artifact",
    "find_manifests",
    "load_artifact",
    "sha256_file",
    "weights_bytes",
]

#: Manifest format tag; bump when the manifest's meaning changes.
ARTIFACT_FORMAT = "mango-policy-v1"
#: Manifests larger than this are not read (a manifest is a few KiB).
MAX_MANIFEST_BYTES = 1 << 20
#: Default cap on the weights file (the default TinyFormer is ~0.3 MiB).
MAX_WEIGHTS_BYTES = 256 << 20

_NAME_RE = r"^[A-Za-z0-9_.:\-]+$"  # the same names a DecideRequest may ask for
_PICKLE_HINT = (
    "MANGO loads weights only from safetensors (a pickle can run arbitrary code when loaded); "
    "re-export the policy with client.policy.artifact.export_artifact"
)


class ArtifactError(Exception):
    """A policy artifact cannot be exported or loaded; the message names the file and the fix."""


class WeightsRef(BaseModel):
    """The manifest's pointer to its weights file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    file: str = Field(min_length=1, max_length=255)
    format: Literal["safetensors"] = "safetensors"
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)


class TrainingInfo(BaseModel):
    """How the weights were produced: the command that reproduces them and its configuration."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    command: str = ""
    config: dict[str, Any] = Field(default_factory=dict)


class PolicyManifest(BaseModel):
    """The JSON half of an artifact (see the module docstring for an example)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: str = ARTIFACT_FORMAT
    name: str = Field(min_length=1, max_length=64, pattern=_NAME_RE)
    version: str = Field(min_length=1, max_length=64)
    architecture: Literal["tinyformer"] = "tinyformer"
    config: dict[str, Any]
    action_grid: ActionGrid
    obs_spec_version: str
    weights: WeightsRef
    training: TrainingInfo = Field(default_factory=TrainingInfo)
    metrics: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime
    extra: dict[str, Any] = Field(default_factory=dict)


@dataclass(frozen=True)
class PolicyArtifact:
    """A loaded, verified artifact: the manifest, the weights (float32 arrays, :func:`weight_shapes`
    layout), the numpy model built from them, and where they came from."""

    manifest: PolicyManifest
    config: TinyFormerConfig
    weights: dict[str, np.ndarray]
    model: NumpyTinyFormer
    manifest_path: Path
    weights_path: Path

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def grid(self) -> ActionGrid:
        return self.manifest.action_grid


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same directory and ``os.replace`` (readers never see half a file)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates 0600 files; artifacts are read by a service that may run as another user
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _canonical_header(blob: bytes) -> bytes:
    """The same safetensors file with its JSON header written with sorted keys.

    safetensors serializes the metadata from a hash map whose order changes from call to call, so the same
    tensors would get a different sha256 each export; with a canonical header, an export is byte-for-byte
    reproducible (the tensor data and their offsets are untouched; the header is space-padded to 8 bytes as
    the format allows).
    """
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + blob[8 + n :]


def weights_bytes(weights: Mapping[str, np.ndarray], *, name: str = "", version: str = "") -> bytes:
    """The safetensors file of ``weights`` (float32, canonical header): what an artifact stores.

    The same weights always give the same bytes (and so the same sha256), whichever side wrote them.
    """
    tensors = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in weights.items()}
    metadata = {"format": "pt", "mango_artifact": name, "mango_version": version} if name else None
    return _canonical_header(st_save(tensors, metadata=metadata))


def export_artifact(
    weights: Mapping[str, np.ndarray],
    config: TinyFormerConfig,
    directory: str | os.PathLike[str],
    *,
    name: str,
    version: str,
    grid: ActionGrid = DEFAULT_GRID,
    training_command: str = "",
    training_config: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``<directory>/<name>.safetensors`` and ``<name>.json``; returns the manifest path.

    ``weights`` are the model's tensors by name (:func:`~client.policy.tinyformer.weight_shapes` of
    ``config``; the torch module's ``state_dict`` converted to numpy, see ``agents.export.export_policy``).

    The weights are written first and the manifest (which carries their sha256) last, each atomically, so a
    server reloading concurrently sees either the old pair, a pair whose hash check fails (and keeps its last
    good version), or the new pair. ``training_command`` should reproduce the weights (e.g.
    ``"mango train --seed 0 --steps 2e6"``); ``training_config`` and ``metrics`` must be JSON-serializable.
    """
    if not re.match(_NAME_RE, name) or len(name) > 64:
        raise ArtifactError(f"artifact name {name!r} must match {_NAME_RE} and be at most 64 characters")
    if tuple(grid.nvec) != tuple(config.nvec):
        raise ArtifactError(
            f"grid {grid.version} has nvec {list(grid.nvec)} but the model's heads are {list(config.nvec)}"
        )
    try:
        check_weights(config, weights)
    except ValueError as exc:
        raise ArtifactError(f"cannot export {name!r}: {exc}") from None
    for label, value in (("training_config", training_config), ("metrics", metrics), ("extra", extra)):
        try:
            json.dumps(value or {}, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ArtifactError(
                f"{label} of {name!r} is not JSON-serializable (finite numbers only): {exc}"
            ) from None
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    blob = weights_bytes(weights, name=name, version=version)
    weights_path = out / f"{name}.safetensors"
    manifest = PolicyManifest(
        name=name,
        version=version,
        config=config.to_dict(),
        action_grid=grid,
        obs_spec_version=OBS_SPEC_VERSION,
        weights=WeightsRef(file=weights_path.name, sha256=hashlib.sha256(blob).hexdigest(), bytes=len(blob)),
        training=TrainingInfo(command=training_command, config=dict(training_config or {})),
        metrics=dict(metrics or {}),
        created_at=datetime.now(UTC),
        extra=dict(extra or {}),
    )
    try:
        text = json.dumps(manifest.model_dump(mode="json"), indent=2, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ArtifactError(
            f"manifest of {name!r} is not JSON-serializable (training_config/metrics): {exc}"
        ) from None
    _atomic_write(weights_path, blob)
    manifest_path = out / f"{name}.json"
    _atomic_write(manifest_path, (text + "\n").encode())
    return manifest_path


def find_manifests(directory: str | os.PathLike[str]) -> list[Path]:
    """Candidate manifests in ``directory``: ``*.json`` and ``*/*.json`` (sorted; hidden files skipped)."""
    d = Path(directory)
    if not d.is_dir():
        return []
    found = [*d.glob("*.json"), *d.glob("*/*.json")]
    return sorted(p for p in found if p.is_file() and not any(part.startswith(".") for part in p.parts[-2:]))


def _sniff_pickle(data: bytes) -> str | None:
    """Say so if ``data`` starts like a pickle or a zip (what ``torch.save`` writes); never unpickles."""
    if data[:1] == b"\x80" and data[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "it is a Python pickle (e.g. a legacy torch.save checkpoint)"
    if data[:4] == b"PK\x03\x04":
        return "it is a zip archive (a torch.save checkpoint holds a pickle inside a zip)"
    return None


def _sniff_not_safetensors(data: bytes) -> str | None:
    """Why ``data`` is not a safetensors file (``None`` if its header looks right)."""
    pickled = _sniff_pickle(data)
    if pickled:
        return pickled
    if len(data) < 10:
        return f"it is {len(data)} bytes, shorter than a safetensors header"
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8 or data[8:9] != b"{":
        return "its first 8 bytes are not a safetensors header length followed by a JSON header"
    return None


def _resolve_manifest_path(path: Path) -> Path:
    if path.is_dir():
        manifests = find_manifests(path)
        if len(manifests) != 1:
            raise ArtifactError(
                f"{path} holds {len(manifests)} manifests ({[m.name for m in manifests]}); "
                "pass the <name>.json of the policy to load"
            )
        return manifests[0]
    if path.suffix == ".safetensors":
        return path.with_suffix(".json")
    if path.suffix != ".json":
        pickled = path.suffix in (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle", ".zip")
        raise ArtifactError(
            f"{path} is not a policy manifest (<name>.json) or safetensors file"
            + (f"; {_PICKLE_HINT}" if pickled else "")
        )
    return path


def load_artifact(
    path: str | os.PathLike[str],
    *,
    expected_grid: ActionGrid | None = None,
    max_weights_bytes: int = MAX_WEIGHTS_BYTES,
) -> PolicyArtifact:
    """Load and verify an artifact from its manifest (``<name>.json``), weights file, or directory.

    :param expected_grid: if given, the artifact's grid must equal it (e.g. the grid a client acts on);
        otherwise it must be a sub-grid of the protocol's ``DEFAULT_GRID`` (every setting it maps to must be
        a valid ``CompressionSetting``).
    :param max_weights_bytes: refuse larger weights files without reading them.
    :raises ArtifactError: for any reason the artifact cannot be served (see the module docstring).
    """
    manifest_path = _resolve_manifest_path(Path(path))
    where = str(manifest_path)
    try:
        size = manifest_path.stat().st_size
    except OSError as exc:
        raise ArtifactError(f"{where}: cannot read manifest ({exc.strerror or exc})") from None
    if size > MAX_MANIFEST_BYTES:
        raise ArtifactError(f"{where}: manifest is {size} bytes, over the {MAX_MANIFEST_BYTES}-byte limit")
    raw = manifest_path.read_bytes()
    why = _sniff_pickle(raw)
    if why:
        raise ArtifactError(f"{where}: the manifest is not JSON, {why}; {_PICKLE_HINT}")
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{where}: manifest is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ArtifactError(f"{where}: manifest must be a JSON object, got {type(data).__name__}")
    fmt = data.get("format")
    if fmt != ARTIFACT_FORMAT:
        raise ArtifactError(
            f"{where}: manifest format {fmt!r} is not {ARTIFACT_FORMAT!r}; re-export the policy"
        )
    spec = data.get("obs_spec_version")
    if spec != OBS_SPEC_VERSION:
        raise ArtifactError(
            f"{where}: policy was trained with observation spec {spec!r}, but this build encodes "
            f"{OBS_SPEC_VERSION!r}; retrain or re-export it for {OBS_SPEC_VERSION!r}"
        )
    weights = data.get("weights")
    if isinstance(weights, dict) and weights.get("format", "safetensors") != "safetensors":
        raise ArtifactError(f"{where}: weights format {weights.get('format')!r} is refused; {_PICKLE_HINT}")
    try:
        manifest = PolicyManifest.model_validate(data)
    except ValidationError as exc:
        msgs = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ArtifactError(f"{where}: invalid manifest: {msgs}") from None

    grid = manifest.action_grid
    if expected_grid is not None and grid != expected_grid:
        raise ArtifactError(
            f"{where}: action grid {grid.model_dump()} differs from the expected {expected_grid.model_dump()}"
        )
    off = [
        f"{k}={v}"
        for k, vals, ref in (("rank", grid.ranks, DEFAULT_GRID.ranks), ("bits", grid.bits, DEFAULT_GRID.bits))
        for v in vals
        if v not in ref
    ]
    if off:
        raise ArtifactError(f"{where}: action grid {grid.version} has values off the protocol grid: {off}")
    try:
        config = TinyFormerConfig.from_dict(manifest.config)
    except (TypeError, ValueError) as exc:
        raise ArtifactError(f"{where}: invalid architecture config: {exc}") from None
    if tuple(config.nvec) != tuple(grid.nvec):
        raise ArtifactError(f"{where}: config nvec {list(config.nvec)} != action grid nvec {list(grid.nvec)}")

    wname = manifest.weights.file
    if Path(wname).name != wname or wname in (".", ".."):
        raise ArtifactError(f"{where}: weights file {wname!r} must be a plain file name next to the manifest")
    if not wname.endswith(".safetensors"):
        raise ArtifactError(f"{where}: weights file {wname!r} is not a .safetensors file; {_PICKLE_HINT}")
    weights_path = manifest_path.parent / wname
    try:
        wsize = weights_path.stat().st_size
    except OSError as exc:
        raise ArtifactError(f"{where}: cannot read weights {weights_path} ({exc.strerror or exc})") from None
    if wsize > max_weights_bytes:
        raise ArtifactError(f"{weights_path}: {wsize} bytes, over the {max_weights_bytes}-byte limit")
    blob = weights_path.read_bytes()  # verify and parse these same bytes: no check-then-reopen race
    why = _sniff_not_safetensors(blob)
    if why:
        raise ArtifactError(f"{weights_path}: not a safetensors file: {why}; {_PICKLE_HINT}")
    digest = hashlib.sha256(blob).hexdigest()
    if digest != manifest.weights.sha256:
        raise ArtifactError(
            f"{weights_path}: sha256 {digest} does not match the manifest's {manifest.weights.sha256} "
            "(corrupted, tampered with, or replaced without re-exporting the manifest)"
        )
    try:
        tensors = st_load(blob)
    except KeyError as exc:  # safetensors.numpy has no type for it (BF16)
        raise ArtifactError(
            f"{weights_path}: holds tensors of dtype {exc} that the runtime cannot read; "
            "export float32 weights"
        ) from None
    except (SafetensorError, ValueError, TypeError) as exc:
        raise ArtifactError(f"{weights_path}: unreadable safetensors file ({exc})") from None

    arrays = {
        k: t.astype(np.float32, copy=False) if np.issubdtype(t.dtype, np.floating) else t
        for k, t in tensors.items()
    }
    try:
        model = NumpyTinyFormer(config, arrays)  # checks names, shapes, dtypes and finiteness
    except ValueError as exc:
        raise ArtifactError(f"{weights_path}: {exc}") from None
    return PolicyArtifact(
        manifest=manifest,
        config=config,
        weights=arrays,
        model=model,
        manifest_path=manifest_path,
        weights_path=weights_path,
    )
