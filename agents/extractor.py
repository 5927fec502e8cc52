"""SB3 features extractors: the TinyFormer encoder, and an MLP of similar size for comparison.

Both read the flat observation of :class:`client.protocol.ObservationSpec` (``[B, window * 16 + 6]``).

* :class:`TinyFormerExtractor` wraps :class:`agents.tinyformer.TinyFormerEncoder` unchanged, so a trained
  policy exports to a pure-torch :class:`agents.tinyformer.TinyFormer` without re-mapping weights (see
  :mod:`agents.export`). Use it with ``net_arch=dict(pi=[], vf=[])``: the policy and value heads are then
  single ``nn.Linear`` layers on the encoder's features, exactly the TinyFormer's ``action_net`` /
  ``value_net``.
* :class:`MLPExtractor` is the control: two ``tanh`` layers over the flat vector, width chosen by
  :func:`mlp_width_for` to match a TinyFormer's parameter count. It sees the same inputs but no structure
  (no shared per-interval embedding, no attention, no padding mask).

:func:`policy_kwargs` builds the ``policy_kwargs`` of ``stable_baselines3.PPO`` for either.

Orthogonal initialization: SB3's ``ortho_init`` re-initializes every ``nn.Linear`` of the features
extractor with gain ``sqrt(2)``; that suits the MLP but not a pre-LN transformer (its residual projections
should start small). :func:`reinit_extractor` restores the TinyFormer's own initialization after the policy
is built (``agents.train`` calls it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import gymnasium as gym
import torch
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from agents.tinyformer import TinyFormerConfig, TinyFormerEncoder
from client.protocol import DEFAULT_GRID

__all__ = [
    "EXTRACTORS",
    "MLPExtractor",
    "TinyFormerExtractor",
    "count_parameters",
    "mlp_width_for",
    "policy_kwargs",
    "prefer_setting",
    "reinit_extractor",
]

ExtractorName = Literal["tinyformer", "mlp"]


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def _config(config: TinyFormerConfig | dict[str, Any] | None) -> TinyFormerConfig:
    if config is None:
        return TinyFormerConfig()
    if isinstance(config, TinyFormerConfig):
        return config
    return TinyFormerConfig.from_dict(dict(config))


def _check_space(observation_space: gym.Space, size: int, who: str) -> None:
    shape = getattr(observation_space, "shape", None)
    if shape != (size,):
        raise ValueError(
            f"{who} reads flat observations of {size} features (ObservationSpec.size), got an observation "
            f"space of shape {shape}; build the env with the same window as the extractor's config"
        )


class TinyFormerExtractor(BaseFeaturesExtractor):
    """:class:`TinyFormerEncoder` as an SB3 features extractor (``features_dim = d_model``).

    :param observation_space: a ``Box`` of shape ``(ObservationSpec(window).size,)``.
    :param config: a :class:`TinyFormerConfig` or its ``to_dict()`` (JSON-friendly, so SB3 can save it).
        Width 32 with 2 layers is ~19 k parameters (~75 KB in fp32); width 64 quadruples the parameters and
        the decision time (``mango bench policy``) for no measurable gain on the surrogate.
    """

    def __init__(
        self, observation_space: gym.Space, config: TinyFormerConfig | dict[str, Any] | None = None
    ) -> None:
        cfg = _config(config)
        _check_space(observation_space, cfg.obs_size, type(self).__name__)
        super().__init__(observation_space, features_dim=cfg.d_model)
        self.config = cfg
        self.encoder = TinyFormerEncoder(cfg)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.encoder(observations)  # [B, obs_size] -> [B, d_model]


def mlp_width_for(n_params: int, obs_size: int, n_layers: int = 2) -> int:
    """Width ``h`` of an ``n_layers``-layer MLP over ``obs_size`` inputs with about ``n_params`` parameters.

    Parameters of the MLP: ``obs_size*h + h + (n_layers - 1) * (h*h + h)``; solved for ``h`` (rounded).
    """
    if n_layers < 1:
        raise ValueError(f"n_layers={n_layers} must be >= 1")
    a, b, c = n_layers - 1, obs_size + 1 + (n_layers - 1), -float(n_params)
    h = -c / b if a == 0 else (-b + math.sqrt(b * b - 4 * a * c)) / (2 * a)
    return max(1, round(h))


class MLPExtractor(BaseFeaturesExtractor):
    """``n_layers`` x (``Linear`` + ``tanh``) over the flat observation (``features_dim = width``).

    :param observation_space: a flat ``Box``.
    :param width: hidden width; ``0`` picks the width whose parameter count matches ``match_config``'s
        TinyFormer encoder (see :func:`mlp_width_for`).
    :param n_layers: hidden layers (>= 1).
    :param match_config: the TinyFormer to match when ``width == 0`` (default :class:`TinyFormerConfig`).
    """

    def __init__(
        self,
        observation_space: gym.Space,
        width: int = 0,
        n_layers: int = 2,
        match_config: TinyFormerConfig | dict[str, Any] | None = None,
    ) -> None:
        shape = getattr(observation_space, "shape", None)
        if shape is None or len(shape) != 1:
            raise ValueError(
                f"MLPExtractor reads flat observations; got an observation space of shape {shape}"
            )
        obs_size = int(shape[0])
        if width <= 0:
            target = count_parameters(TinyFormerEncoder(_config(match_config)))
            width = mlp_width_for(target, obs_size, n_layers)
        super().__init__(observation_space, features_dim=width)
        layers: list[nn.Module] = []
        d_in = obs_size
        for _ in range(n_layers):
            layers += [nn.Linear(d_in, width), nn.Tanh()]
            d_in = width
        self.net = nn.Sequential(*layers)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.net(observations)  # [B, obs_size] -> [B, width]


EXTRACTORS: dict[str, type[BaseFeaturesExtractor]] = {"tinyformer": TinyFormerExtractor, "mlp": MLPExtractor}


def policy_kwargs(
    extractor: ExtractorName, config: TinyFormerConfig, mlp_width: int = 0, mlp_layers: int = 2
) -> dict[str, Any]:
    """``policy_kwargs`` for ``PPO("MlpPolicy", ...)``: the extractor, and linear heads on its features.

    ``net_arch=dict(pi=[], vf=[])`` leaves SB3's ``mlp_extractor`` empty, so ``action_net`` (one ``Linear``
    producing the concatenated logits of the three ``MultiDiscrete`` components) and ``value_net`` read the
    extractor's features directly; the features extractor is shared by actor and critic.
    """
    if extractor == "tinyformer":
        fx: dict[str, Any] = {"config": config.to_dict()}
    elif extractor == "mlp":
        fx = {"width": mlp_width, "n_layers": mlp_layers, "match_config": config.to_dict()}
    else:
        raise ValueError(f"extractor={extractor!r}; choose one of {sorted(EXTRACTORS)}")
    return {
        "features_extractor_class": EXTRACTORS[extractor],
        "features_extractor_kwargs": fx,
        "net_arch": {"pi": [], "vf": []},
        "share_features_extractor": True,
    }


def prefer_setting(policy: ActorCriticPolicy, action: list[int], logit: float | Sequence[float]) -> None:
    """Make the untrained action heads prefer one grid setting: add ``logit`` to its rank, bits and gamma
    logits in the action head's bias (``action``: the grid indices, ``DEFAULT_GRID.action(setting)``;
    ``logit``: one value (or a one-value sequence) for every head, or one per head in the action's order,
    e.g. ``(3, 1, 3)`` for a firm rank and gamma prior and a weak bits prior).

    PPO then starts from that fixed setting (the argmax everywhere, sampled with probability ~0.5 at
    ``logit`` 3 on the 8 x 6 x 5 grid) and moves off it only where the return pays for it: a prior for a
    known strong default (issue 13's floor r0/b8/g0), not a constraint. A joint head (``Discrete`` action
    space) gets the sum of the logits on the setting's own grid point.
    """
    nvec = list(DEFAULT_GRID.nvec)
    if len(action) != len(nvec) or not all(0 <= a < n for a, n in zip(action, nvec, strict=True)):
        raise ValueError(f"action {action} is not a grid index of nvec {nvec}")
    logits = [float(x) for x in ((logit,) if isinstance(logit, int | float) else logit)]
    if len(logits) == 1:
        logits *= len(nvec)
    if len(logits) != len(nvec):
        raise ValueError(f"prior logits {logits}: give one value or one per head ({len(nvec)})")
    bias = policy.action_net.bias  # type: ignore[union-attr]
    with torch.no_grad():
        if isinstance(policy.action_space, gym.spaces.Discrete):  # a joint head: the point's own logit
            bias[int(DEFAULT_GRID.ravel(action))] += sum(logits)
            return
        offsets = [sum(nvec[:i]) for i in range(len(nvec))]
        for off, a, lg in zip(offsets, action, logits, strict=True):
            bias[off + a] += lg


def reinit_extractor(policy: ActorCriticPolicy) -> None:
    """Give a TinyFormer extractor back its own initialization after SB3's orthogonal init (no-op for MLP)."""
    fx = policy.features_extractor
    if isinstance(fx, TinyFormerExtractor):
        fx.encoder._init_weights()
