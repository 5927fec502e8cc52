"""SB3 PPO policy <-> torch :class:`agents.tinyformer.TinyFormer` <-> policy artifact.

A PPO policy built with :func:`agents.extractor.policy_kwargs` (``"tinyformer"``) is, module for module,
a TinyFormer:

==========================================  ==========================================================
SB3 ``ActorCriticPolicy``                    ``TinyFormer``
==========================================  ==========================================================
``features_extractor.encoder``              ``encoder`` (the same :class:`TinyFormerEncoder` class)
``mlp_extractor``                           empty (``net_arch=dict(pi=[], vf=[])``): identity
``action_net`` Linear(d, n_logits)          ``action_net``: concatenated logits of (rank, bits, gamma),
                                            or one logit per grid point (``config.joint``)
``value_net`` Linear(d, 1)                  ``value_net``
==========================================  ==========================================================

SB3's ``MultiCategoricalDistribution`` splits ``action_net``'s output by ``nvec`` in the same order as
:meth:`TinyFormer.split_logits`, and its deterministic action is the per-component argmax (with a joint
head, ``CategoricalDistribution``'s argmax over the grid, unravelled rank-major), which is
:meth:`TinyFormer.act` with ``deterministic=True`` (``tests/agents/test_export.py`` checks equality on random
observations). :func:`load_into_policy` is the inverse map, for fine-tuning a shipped artifact.

:func:`export_policy` writes the artifact (:func:`client.policy.artifact.export_artifact`, the format's one
definition): safetensors weights and a JSON manifest with the action grid, the observation-spec version, the
architecture, the exact training command and configuration, and evaluation metrics.
:func:`tinyformer_from_artifact` is the way back, for fine-tuning (``mango train --init-from``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, cast

from stable_baselines3.common.policies import ActorCriticPolicy
from torch import nn

from agents.extractor import TinyFormerExtractor
from agents.tinyformer import TinyFormer
from client.policy.artifact import PolicyArtifact, export_artifact
from client.protocol import DEFAULT_GRID, ActionGrid

__all__ = ["export_policy", "load_into_policy", "policy_to_tinyformer", "tinyformer_from_artifact"]


def _check_policy(policy: ActorCriticPolicy) -> TinyFormerExtractor:
    fx = policy.features_extractor
    if not isinstance(fx, TinyFormerExtractor):
        raise ValueError(
            f"only a TinyFormer policy exports to an artifact; this policy's features extractor is "
            f"{type(fx).__name__} (train with --extractor tinyformer)"
        )
    if not policy.share_features_extractor:
        raise ValueError("export needs share_features_extractor=True (one encoder for actor and critic)")
    mlp = policy.mlp_extractor
    empty = all(len(list(getattr(mlp, n).parameters())) == 0 for n in ("policy_net", "value_net"))
    if not empty:
        raise ValueError(
            "export needs net_arch=dict(pi=[], vf=[]) (linear heads on the encoder's features); this policy "
            "has hidden layers between the encoder and the heads"
        )
    if not isinstance(policy.action_net, nn.Linear) or not isinstance(policy.value_net, nn.Linear):
        raise ValueError("export needs nn.Linear action_net and value_net (a (Multi)Discrete action space)")
    if policy.action_net.out_features != fx.config.n_logits:
        raise ValueError(
            f"the policy's action_net has {policy.action_net.out_features} logits but its TinyFormerConfig "
            f"(joint={fx.config.joint}) needs {fx.config.n_logits}: a joint head trains on JointActions' "
            "Discrete space, factorized heads on the grid's MultiDiscrete"
        )
    return fx


def policy_to_tinyformer(policy: ActorCriticPolicy) -> TinyFormer:
    """A TinyFormer (eval mode, CPU, fp32) with the policy's encoder and heads (copied)."""
    fx = _check_policy(policy)
    action_net, value_net = cast(nn.Linear, policy.action_net), cast(nn.Linear, policy.value_net)
    model = TinyFormer.from_parts(fx.encoder, action_net, value_net)
    return model.to("cpu").eval()


def load_into_policy(policy: ActorCriticPolicy, model: TinyFormer) -> None:
    """Copy a TinyFormer's weights into a PPO policy of the same architecture (to fine-tune an artifact)."""
    fx = _check_policy(policy)
    if fx.config != model.config:
        raise ValueError(
            f"architecture mismatch: the policy's TinyFormerConfig is {fx.config.to_dict()}, the model's "
            f"{model.config.to_dict()}; train with the artifact's d_model/n_layers/n_heads/ff_mult/window"
        )
    fx.encoder.load_state_dict(model.encoder.state_dict())
    policy.action_net.load_state_dict(model.action_net.state_dict())
    policy.value_net.load_state_dict(model.value_net.state_dict())


def export_policy(
    policy: ActorCriticPolicy | TinyFormer,
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
    """Export a PPO TinyFormer policy (or an already converted TinyFormer); returns the manifest path."""
    model = policy if isinstance(policy, TinyFormer) else policy_to_tinyformer(policy)
    return export_artifact(
        model.weights(),
        model.config,
        directory,
        name=name,
        version=version,
        grid=grid,
        training_command=training_command,
        training_config=training_config,
        metrics=metrics,
        extra=extra,
    )


def tinyformer_from_artifact(artifact: PolicyArtifact) -> TinyFormer:
    """The torch module of a loaded (verified) artifact: eval mode, CPU, fp32."""
    return TinyFormer.from_weights(artifact.config, artifact.weights)
