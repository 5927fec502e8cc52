"""The policy runtime: what decides a compression setting, with numpy, safetensors and pydantic only.

One home for the policy side that the client, the policy service and the trainer all import (nothing here
imports torch, SB3, gymnasium, FastAPI, ``envs``, ``agents`` or ``policy_service``):

- :mod:`client.policy.interface` - :class:`Controller`, the one "history and objective -> setting" interface
  of heuristics, the learned policy and every baseline.
- :mod:`client.policy.tinyformer` - :class:`TinyFormerConfig`, the artifact's weight layout
  (:func:`weight_shapes`) and :class:`NumpyTinyFormer`, the greedy forward pass in numpy.
- :mod:`client.policy.artifact` - the artifact format (safetensors + JSON manifest): :func:`export_artifact`,
  :func:`load_artifact` (verified: sha256, spec version, grid, layout; pickles refused).
- :mod:`client.policy.learned` - :class:`LearnedPolicy` and :func:`load_default_policy` (the shipped
  artifact in ``client/policy/default_policy/``).
"""

from client.policy.artifact import (
    ARTIFACT_FORMAT,
    ArtifactError,
    PolicyArtifact,
    PolicyManifest,
    export_artifact,
    find_manifests,
    load_artifact,
)
from client.policy.interface import Controller, ProfileFeatures
from client.policy.learned import DEFAULT_POLICY_DIR, LearnedPolicy, load_default_policy, load_policy
from client.policy.tinyformer import NumpyTinyFormer, TinyFormerConfig, weight_shapes

__all__ = [
    "ARTIFACT_FORMAT",
    "DEFAULT_POLICY_DIR",
    "ArtifactError",
    "Controller",
    "LearnedPolicy",
    "NumpyTinyFormer",
    "PolicyArtifact",
    "PolicyManifest",
    "ProfileFeatures",
    "TinyFormerConfig",
    "export_artifact",
    "find_manifests",
    "load_artifact",
    "load_default_policy",
    "load_policy",
    "weight_shapes",
]
