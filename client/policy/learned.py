"""The learned policy: a verified TinyFormer artifact deciding through the numpy forward pass.

``LearnedPolicy.decide(history, objective, reference=..., profile=...)`` is
``ObservationSpec(window, grid).encode(...)`` -> :class:`~client.policy.tinyformer.NumpyTinyFormer` argmax ->
``ActionGrid.setting``: exactly what the policy service answers, what ``mango eval`` measures and what a
training job runs in-process without a service (:class:`client.hook.AdaptiveCompression` with no
``server_url``). No torch, SB3 or gymnasium is imported.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from client.policy.artifact import PolicyArtifact, load_artifact
from client.policy.default_policy import DIRECTORY as DEFAULT_POLICY_DIR
from client.policy.interface import Controller, ProfileFeatures
from client.protocol import (
    ActionGrid,
    CompressionSetting,
    Objective,
    ObservationSpec,
    Reference,
    TelemetryRecord,
)

__all__ = ["DEFAULT_POLICY_DIR", "LearnedPolicy", "load_default_policy", "load_policy"]


class LearnedPolicy(Controller):
    """A loaded artifact ready to decide; immutable and stateless (one instance serves concurrent callers).

    :param artifact: from :func:`~client.policy.artifact.load_artifact` (verified).
    :param shipped: the artifact is the package's own default (the service lets an operator's artifact of
        the same name override it).
    """

    kind = "learned"

    def __init__(self, artifact: PolicyArtifact, *, shipped: bool = False) -> None:
        self.artifact = artifact
        self.name: str = artifact.name
        self.version: str = artifact.version
        self.grid: ActionGrid = artifact.grid
        self.shipped = shipped
        self.model = artifact.model
        self.spec = ObservationSpec(window=artifact.config.window, grid=artifact.grid)
        self.reason = f"learned policy {self.name} ({self.version})"
        # Every grid point built once (settings are frozen, so answers may share them), indexed rank-major
        # like ActionGrid.all_settings: a decision looks its setting up instead of validating a new one.
        self._settings = tuple(self.grid.all_settings())
        _, self._nb, self._ng = self.grid.nvec

    def decide(
        self,
        history: Sequence[TelemetryRecord],
        objective: Objective,
        *,
        reference: Reference | None = None,
        profile: ProfileFeatures | None = None,
    ) -> CompressionSetting:
        return self.decide_obs(self.spec.encode(history, objective, reference, profile))

    def decide_obs(self, obs: np.ndarray) -> CompressionSetting:
        """The greedy setting for one encoded observation (``ObservationSpec.encode``'s output)."""
        ri, bi, gi = self.model.act(obs).tolist()
        return self._settings[(ri * self._nb + bi) * self._ng + gi]

    def info(self) -> dict[str, Any]:
        """What ``GET /v1/policies`` shows about this policy."""
        m = self.artifact.manifest
        return {
            "name": self.name,
            "kind": self.kind,
            "version": self.version,
            "shipped": self.shipped,
            "obs_spec_version": m.obs_spec_version,
            "grid_version": m.action_grid.version,
            "window": self.spec.window,
            "runtime": "numpy",
            "created_at": m.created_at.isoformat(),
            "training_command": m.training.command,
            "metrics": m.metrics,
            "source": str(self.artifact.manifest_path),
        }


def load_policy(path: str | os.PathLike[str], *, shipped: bool = False) -> LearnedPolicy:
    """Load, verify and wrap an artifact (its manifest, weights file or directory).

    :raises client.policy.artifact.ArtifactError: why it cannot be served.
    """
    return LearnedPolicy(load_artifact(path), shipped=shipped)


@lru_cache(maxsize=1)
def load_default_policy() -> LearnedPolicy:
    """The shipped default policy (:data:`DEFAULT_POLICY_DIR`), loaded once per process and shared.

    :raises client.policy.artifact.ArtifactError: the shipped files are missing or do not verify (a broken
        installation: reinstall the package).
    """
    return load_policy(DEFAULT_POLICY_DIR, shipped=True)
