"""TinyFormer in torch: the module SB3 trains (a small transformer over a telemetry window + objective).

The architecture's configuration and weight layout are defined once, in the policy runtime
(:mod:`client.policy.tinyformer`: :class:`TinyFormerConfig`, ``weight_shapes``); this module's
``state_dict`` has exactly those names and shapes, and serving runs the runtime's numpy forward pass
(``NumpyTinyFormer``, tested equal to this module's). Input is the flat observation of
:class:`client.protocol.ObservationSpec` (``[B, size]``); it is split into ``window`` telemetry tokens and one
objective token, encoded, and summarized by the objective token.

Layout (shapes for the default config: window 8, 16 token features, 6 objective features, width 64)::

    obs [B, 134] --split--> tokens [B, 8, 16], objective [B, 6]
    token_in(tokens) [B, 8, 64], objective_in(objective) [B, 1, 64]  -> seq [B, 9, 64] (+ learned positions)
    n_layers x pre-LN block (multi-head self-attention, padding rows masked out; GELU MLP)
    features = LayerNorm(seq[:, 0])   [B, 64]        <- TinyFormerEncoder (the SB3 features extractor body)
    action_net(features) [B, sum(nvec)] logits for the three MultiDiscrete components (rank, bits, gamma),
                         or [B, prod(nvec)] for one joint categorical over the grid (config.joint)
    value_net(features)  [B, 1]

The heads are plain ``nn.Linear`` layers named like SB3's ``ActorCriticPolicy.action_net`` / ``value_net``.
Train with SB3 PPO using a features extractor that wraps :class:`TinyFormerEncoder` and an empty MLP extractor
(``net_arch=dict(pi=[], vf=[])``); then :meth:`TinyFormer.from_parts` takes the trained encoder and the two
heads as they are, with no re-mapping of weights.

Knobs: see :class:`client.policy.tinyformer.TinyFormerConfig`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from client.policy.tinyformer import TinyFormerConfig
from client.protocol import ObservationSpec

__all__ = ["TinyFormer", "TinyFormerConfig", "TinyFormerEncoder"]


class _Block(nn.Module):
    """Pre-LN transformer block (nanoGPT layout): x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, cfg: TinyFormerConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.n_heads = cfg.n_heads
        self.dropout = cfg.dropout
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.fc = nn.Linear(d, cfg.ff_mult * d)
        self.fc_out = nn.Linear(cfg.ff_mult * d, d)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor, first_only: bool = False) -> torch.Tensor:
        """``x [B, S, d]`` -> ``[B, S, d]``, or ``[B, 1, d]`` (row 0 only) with ``first_only``.

        ``first_only`` computes queries, attention output and MLP for the first token alone while keys and
        values still come from every token: the exact same row 0, for ~1/3 of the block's arithmetic. The
        encoder uses it in its last block, whose other rows nothing reads.
        """
        b, s, d = x.shape
        h = self.n_heads
        xn = self.ln1(x)
        w_q, w_kv = self.qkv.weight.split([d, 2 * d], dim=0)
        b_q, b_kv = self.qkv.bias.split([d, 2 * d], dim=0)
        if first_only:
            x = x[:, :1]  # [B, 1, d]: the residual stream of the objective token
            xq = xn[:, :1]
        else:
            xq = xn
        sq = xq.shape[1]
        q = F.linear(xq, w_q, b_q).view(b, sq, h, d // h).transpose(1, 2)  # [B, h, Sq, d/h]
        k, v = F.linear(xn, w_kv, b_kv).split(d, dim=-1)  # 2 x [B, S, d]
        k = k.view(b, s, h, d // h).transpose(1, 2)  # [B, h, S, d/h]
        v = v.view(b, s, h, d // h).transpose(1, 2)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p)  # [B, h, Sq, d/h]
        y = y.transpose(1, 2).reshape(b, sq, d)  # [B, Sq, d]
        x = x + self.drop(self.proj(y))
        return x + self.drop(self.fc_out(F.gelu(self.fc(self.ln2(x)), approximate="tanh")))


class TinyFormerEncoder(nn.Module):
    """Observation ``[B, obs_size]`` -> features ``[B, d_model]``: the body that an SB3 extractor wraps.

    Padding rows of short histories (mask feature 0) are excluded from attention, so a window padded with
    zeros gives the same features as the unpadded tokens would. The objective token is never masked and its
    output is the summary.
    """

    def __init__(self, config: TinyFormerConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or TinyFormerConfig()
        self.spec = ObservationSpec(window=cfg.window)
        if (self.spec.token_dim, self.spec.objective_dim) != (cfg.token_dim, cfg.objective_dim):
            raise ValueError(
                f"config token_dim/objective_dim ({cfg.token_dim}, {cfg.objective_dim}) differ from "
                f"ObservationSpec ({self.spec.token_dim}, {self.spec.objective_dim}); re-train for this spec"
            )
        d = cfg.d_model
        self.token_in = nn.Linear(cfg.token_dim, d)
        self.objective_in = nn.Linear(cfg.objective_dim, d)
        self.pos = nn.Parameter(torch.zeros(cfg.window + 1, d))  # row 0: objective token
        self.blocks = nn.ModuleList(_Block(cfg) for _ in range(cfg.n_layers))
        self.norm = nn.LayerNorm(d)
        self.features_dim = d
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.pos, std=0.02)
        # Scale the residual projections by depth (GPT-2) so the stack starts close to the identity.
        for blk in self.blocks:
            assert isinstance(blk, _Block)
            for lin in (blk.proj, blk.fc_out):
                nn.init.normal_(lin.weight, std=0.02 / math.sqrt(2 * max(len(self.blocks), 1)))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        tokens, objective = self.spec.split(obs)  # [B, W, T], [B, O]
        x = torch.cat(
            [self.objective_in(objective).unsqueeze(1), self.token_in(tokens)], dim=1
        )  # [B, W+1, d]
        x = x + self.pos
        # Branch-free masking (so torch.jit.trace sees one graph): the objective token is always kept.
        valid = tokens[..., 0] > 0.5  # [B, W]: the "mask" feature
        keep = torch.cat([torch.ones_like(valid[:, :1]), valid], dim=1)  # [B, W+1]
        attn_mask = keep[:, None, None, :]  # [B, 1, 1, W+1]: broadcast over heads and queries
        last = len(self.blocks) - 1
        for i, blk in enumerate(self.blocks):
            x = blk(x, attn_mask, first_only=i == last)  # the last block computes row 0 only
        return self.norm(x[:, 0])  # [B, d]


class TinyFormer(nn.Module):
    """Actor-critic TinyFormer: :class:`TinyFormerEncoder` + linear policy and value heads.

    >>> model = TinyFormer().eval()
    >>> obs = torch.zeros(2, model.config.obs_size)
    >>> model.act(obs).shape
    torch.Size([2, 3])
    """

    def __init__(self, config: TinyFormerConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or TinyFormerConfig()
        self.encoder = TinyFormerEncoder(cfg)
        self.action_net = nn.Linear(cfg.d_model, cfg.n_logits)
        self.value_net = nn.Linear(cfg.d_model, 1)
        # SB3's ActorCriticPolicy initializes these with orthogonal gains 0.01 and 1.
        nn.init.orthogonal_(self.action_net.weight, gain=0.01)
        nn.init.zeros_(self.action_net.bias)
        nn.init.orthogonal_(self.value_net.weight, gain=1.0)
        nn.init.zeros_(self.value_net.bias)

    @classmethod
    def from_parts(
        cls,
        encoder: TinyFormerEncoder,
        action_net: nn.Linear,
        value_net: nn.Linear | None = None,
    ) -> TinyFormer:
        """Assemble a model from a trained encoder and SB3-style heads (copies; shapes are checked).

        With SB3: ``TinyFormer.from_parts(policy.features_extractor.encoder, policy.action_net,
        policy.value_net)`` for a PPO policy built with ``net_arch=dict(pi=[], vf=[])``.
        """
        model = cls(encoder.config)
        model.encoder.load_state_dict(encoder.state_dict())
        model.action_net.load_state_dict(action_net.state_dict())
        if value_net is not None:
            model.value_net.load_state_dict(value_net.state_dict())
        return model

    @classmethod
    def from_weights(cls, config: TinyFormerConfig, weights: Mapping[str, np.ndarray]) -> TinyFormer:
        """A model (eval mode, CPU, fp32) holding an artifact's weights (``PolicyArtifact.weights``)."""
        model = cls(config)
        model.load_state_dict(
            {k: torch.tensor(np.asarray(v), dtype=torch.float32) for k, v in weights.items()}
        )
        return model.eval()

    def weights(self) -> dict[str, np.ndarray]:
        """The state dict as float32 numpy arrays: the artifact's tensors (``weight_shapes`` layout)."""
        return {k: v.detach().to("cpu", torch.float32).numpy().copy() for k, v in self.state_dict().items()}

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        """Observation ``[B, obs_size]`` -> features ``[B, d_model]``."""
        return self.encoder(obs)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Observation ``[B, obs_size]`` -> (logits ``[B, n_logits]``, value ``[B]``)."""
        f = self.encoder(obs)
        return self.action_net(f), self.value_net(f).squeeze(-1)

    def split_logits(self, logits: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Logits ``[B, n_logits]`` -> one ``[B, n_i]`` tensor per action component (a joint head: one
        ``[B, prod(nvec)]`` tensor)."""
        if self.config.joint:
            return (logits,)
        return logits.split(list(self.config.nvec), dim=-1)

    def act(
        self,
        obs: torch.Tensor | np.ndarray,
        deterministic: bool = True,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Pick actions: ``[obs_size]`` -> ``[3]`` or ``[B, obs_size]`` -> ``[B, 3]`` (int64 grid indices).

        ``deterministic=True`` takes each component's argmax, or the joint head's (serving); ``False``
        samples from the categorical distributions (as PPO does during rollouts), drawing from ``generator``
        if given.
        Runs under ``torch.inference_mode``; map a row to a setting with ``ActionGrid.setting``.
        """
        x = torch.as_tensor(obs, dtype=torch.float32)
        single = x.dim() == 1
        if single:
            x = x.unsqueeze(0)  # [1, obs_size]
        self._check_obs(x)
        with torch.inference_mode():
            logits = self.action_net(self.encoder(x))  # [B, n_logits]
            parts = self.split_logits(logits)
            if deterministic:
                picks = [p.argmax(dim=-1) for p in parts]
            else:
                picks = [torch.multinomial(p.softmax(-1), 1, generator=generator).squeeze(-1) for p in parts]
            if self.config.joint:  # the flat grid index -> (rank, bits, gamma), rank-major
                _, nb, ng = self.config.nvec
                flat = picks[0]
                picks = [flat // (nb * ng), flat // ng % nb, flat % ng]
            out = torch.stack(picks, dim=-1)  # [B, 3]
        return out[0] if single else out

    def _check_obs(self, x: torch.Tensor) -> None:
        if x.shape[-1] != self.config.obs_size:
            raise ValueError(
                f"observation has {x.shape[-1]} features; this model reads {self.config.obs_size} "
                f"(window={self.config.window}); encode with ObservationSpec(window={self.config.window})"
            )
