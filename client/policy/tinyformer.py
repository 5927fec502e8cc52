"""TinyFormer inference in numpy: the configuration, the weights' layout, and the greedy forward pass.

This is the one definition of what a TinyFormer artifact holds. The training-side torch module
(``agents.tinyformer.TinyFormer``, what SB3 trains) has exactly the parameter names and shapes of
:func:`weight_shapes`; this module runs the same arithmetic without torch, so the policy service and a
training job's embedded policy need neither torch's inference stack nor SB3 nor gymnasium.

Input is the flat observation of :class:`client.protocol.ObservationSpec` (``[B, size]``); it is split into
``window`` telemetry tokens and one objective token, encoded, and summarized by the objective token::

    obs [B, W*T + O] --split--> tokens [B, W, T], objective [B, O]
    token_in(tokens) [B, W, d], objective_in(objective) [B, 1, d]  -> seq [B, W+1, d] (+ learned positions)
    n_layers x pre-LN block (multi-head self-attention, padding rows masked out; GELU(tanh) MLP)
    features = LayerNorm(seq[:, 0])   [B, d]
    action_net(features) [B, sum(nvec)] logits for the three MultiDiscrete components (rank, bits, gamma)

The last block computes its queries, attention output and MLP for the objective token only (the other rows
are never read), as the torch module does. Padding rows (mask feature 0) are excluded from attention, so a
short history padded with zeros gives the same features as its unpadded tokens.

Knobs (:class:`TinyFormerConfig`): ``d_model`` (width; 64 is plenty for 16 features x 8 steps, 32 halves
the cost), ``n_layers`` (2: one layer to mix time, one to read it out), ``n_heads`` (``d_model`` must divide
by it), ``ff_mult`` (MLP hidden width = ``ff_mult * d_model``), ``dropout`` (training only; 0 for PPO).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from client.protocol import DEFAULT_GRID, MAX_HISTORY, ObservationSpec

__all__ = ["LAYER_NORM_EPS", "NumpyTinyFormer", "TinyFormerConfig", "check_weights", "weight_shapes"]

#: ``nn.LayerNorm``'s default epsilon, used by every LayerNorm of the model.
LAYER_NORM_EPS = 1e-5
_GELU_C = math.sqrt(2.0 / math.pi)


@dataclass(frozen=True)
class TinyFormerConfig:
    """Architecture of a TinyFormer; stored whole in a policy artifact's manifest.

    :param window: telemetry tokens per observation; must equal the ``ObservationSpec(window=...)`` used to
        encode (1..``MAX_HISTORY``). Longer windows see slower trends, cost linearly more.
    :param token_dim: features per telemetry token (``len(ObservationSpec.TOKEN_FEATURES)``).
    :param objective_dim: objective features (``len(ObservationSpec.OBJECTIVE_FEATURES)``).
    :param d_model: model width. 64 by default; must be divisible by ``n_heads``.
    :param n_heads: attention heads.
    :param n_layers: transformer blocks.
    :param ff_mult: MLP hidden width multiplier.
    :param dropout: dropout in attention and MLP (training only; keep 0 for PPO).
    :param nvec: sizes of the three action components, ``ActionGrid.nvec``.
    """

    window: int = MAX_HISTORY
    token_dim: int = len(ObservationSpec.TOKEN_FEATURES)
    objective_dim: int = len(ObservationSpec.OBJECTIVE_FEATURES)
    d_model: int = 64
    n_heads: int = 4
    n_layers: int = 2
    ff_mult: int = 2
    dropout: float = 0.0
    nvec: tuple[int, int, int] = DEFAULT_GRID.nvec

    def __post_init__(self) -> None:
        if not 1 <= self.window <= MAX_HISTORY:
            raise ValueError(
                f"window={self.window} must be in [1, {MAX_HISTORY}] (the protocol's MAX_HISTORY)"
            )
        if self.d_model <= 0 or self.n_heads <= 0 or self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} must be a positive multiple of n_heads={self.n_heads}")
        if self.n_layers < 0 or self.ff_mult <= 0 or self.token_dim <= 0 or self.objective_dim <= 0:
            raise ValueError("n_layers >= 0, ff_mult > 0, token_dim > 0 and objective_dim > 0 are required")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout} must lie in [0, 1)")
        nvec = tuple(int(n) for n in self.nvec)
        if len(nvec) != 3 or any(n < 1 for n in nvec):
            raise ValueError(f"nvec={self.nvec} must be three positive sizes (ActionGrid.nvec)")
        object.__setattr__(self, "nvec", nvec)

    @property
    def obs_size(self) -> int:
        """Length of the flat observation vector this model reads."""
        return self.window * self.token_dim + self.objective_dim

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``nvec`` as a list)."""
        d = asdict(self)
        d["nvec"] = list(self.nvec)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TinyFormerConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError`` naming them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown TinyFormerConfig keys {unknown}; known: {sorted(known)}")
        kw = dict(data)
        if "nvec" in kw:
            kw["nvec"] = tuple(kw["nvec"])
        return cls(**kw)


def weight_shapes(config: TinyFormerConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor of a TinyFormer artifact: name -> shape (the torch module's ``state_dict`` keys).

    Linear layers store ``weight [out, in]`` and ``bias [out]`` (torch's layout); ``value_net`` is the
    critic head, stored so a policy can be fine-tuned, and never read at inference.
    """
    d, f = config.d_model, config.ff_mult * config.d_model
    shapes: dict[str, tuple[int, ...]] = {
        "encoder.token_in.weight": (d, config.token_dim),
        "encoder.token_in.bias": (d,),
        "encoder.objective_in.weight": (d, config.objective_dim),
        "encoder.objective_in.bias": (d,),
        "encoder.pos": (config.window + 1, d),
    }
    for i in range(config.n_layers):
        p = f"encoder.blocks.{i}."
        shapes |= {
            p + "ln1.weight": (d,),
            p + "ln1.bias": (d,),
            p + "qkv.weight": (3 * d, d),
            p + "qkv.bias": (3 * d,),
            p + "proj.weight": (d, d),
            p + "proj.bias": (d,),
            p + "ln2.weight": (d,),
            p + "ln2.bias": (d,),
            p + "fc.weight": (f, d),
            p + "fc.bias": (f,),
            p + "fc_out.weight": (d, f),
            p + "fc_out.bias": (d,),
        }
    shapes |= {
        "encoder.norm.weight": (d,),
        "encoder.norm.bias": (d,),
        "action_net.weight": (sum(config.nvec), d),
        "action_net.bias": (sum(config.nvec),),
        "value_net.weight": (1, d),
        "value_net.bias": (1,),
    }
    return shapes


def _normalize(x: np.ndarray, mean_op: np.ndarray) -> np.ndarray:
    """LayerNorm without its affine part (folded into the next linear layer): ``(x - mu) / sqrt(var + eps)``.

    ``mean_op`` is a ``[d, 1]`` column of ``1/d``: a mean as a matrix product is several times cheaper than
    ``ndarray.mean`` on rows this short.
    """
    xc = x - x @ mean_op
    return xc / np.sqrt((xc * xc) @ mean_op + LAYER_NORM_EPS)  # type: ignore[no-any-return]


def _gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(_GELU_C * (x + 0.044715 * x * x * x)))  # type: ignore[no-any-return]


@dataclass(frozen=True)
class _Block:
    """One pre-LN block as ``x @ w + b`` products (``w [in, out]``), each LayerNorm's affine folded in."""

    w_q: np.ndarray  # [d, d], LN1 folded, the attention scale 1/sqrt(d_head) folded
    b_q: np.ndarray
    w_kv: np.ndarray  # [d, 2d], LN1 folded
    b_kv: np.ndarray
    w_proj: np.ndarray  # [d, d]
    b_proj: np.ndarray
    w_fc: np.ndarray  # [d, ff*d], LN2 folded
    b_fc: np.ndarray
    w_out: np.ndarray  # [ff*d, d]
    b_out: np.ndarray


def _fold(ln_w: np.ndarray, ln_b: np.ndarray, w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(xhat * ln_w + ln_b) @ w.T + b`` as ``xhat @ W + B``: folded in float64, returned in float32."""
    wt = w.astype(np.float64).T  # [in, out]
    folded_w = ln_w.astype(np.float64)[:, None] * wt
    folded_b = ln_b.astype(np.float64) @ wt + b.astype(np.float64)
    return np.ascontiguousarray(folded_w, dtype=np.float32), folded_b.astype(np.float32)


class NumpyTinyFormer:
    """The TinyFormer's greedy policy in numpy (float32): observation -> logits -> argmax grid indices.

    :param config: the architecture (an artifact's manifest ``config``).
    :param weights: name -> array, exactly :func:`weight_shapes`' names and shapes (any float dtype; held
        as float32). Missing or unexpected names, wrong shapes and non-finite values raise ``ValueError``.

    The arithmetic is the torch module's with each LayerNorm's scale and shift folded into the linear layer
    that reads it and the attention scale folded into the queries (folded in float64 once, at load), so
    the logits agree with the torch module's to float32 rounding. Immutable after construction and free of
    per-call state, so one instance serves concurrent callers.
    """

    def __init__(self, config: TinyFormerConfig, weights: Mapping[str, np.ndarray]) -> None:
        check_weights(config, weights)
        self.config = config
        d = config.d_model
        scale = 1.0 / math.sqrt(d // config.n_heads)

        def w(name: str) -> np.ndarray:
            return np.asarray(weights[name], dtype=np.float64)

        def lin(name: str) -> tuple[np.ndarray, np.ndarray]:  # a plain linear layer as ``x @ w + b``
            return np.ascontiguousarray(w(name + ".weight").T, dtype=np.float32), w(name + ".bias").astype(
                np.float32
            )

        self._token_in = lin("encoder.token_in")
        self._objective_in = lin("encoder.objective_in")
        self._pos = w("encoder.pos").astype(np.float32)  # [W+1, d]
        blocks = []
        for i in range(config.n_layers):
            p = f"encoder.blocks.{i}."
            ln1 = (w(p + "ln1.weight"), w(p + "ln1.bias"))
            qkv_w, qkv_b = w(p + "qkv.weight"), w(p + "qkv.bias")  # [3d, d], [3d]
            w_q, b_q = _fold(*ln1, qkv_w[:d] * scale, qkv_b[:d] * scale)
            w_kv, b_kv = _fold(*ln1, qkv_w[d:], qkv_b[d:])
            w_fc, b_fc = _fold(w(p + "ln2.weight"), w(p + "ln2.bias"), w(p + "fc.weight"), w(p + "fc.bias"))
            w_proj, b_proj = lin(p + "proj")
            w_out, b_out = lin(p + "fc_out")
            blocks.append(_Block(w_q, b_q, w_kv, b_kv, w_proj, b_proj, w_fc, b_fc, w_out, b_out))
        self._blocks = tuple(blocks)
        self._action = _fold(
            w("encoder.norm.weight"), w("encoder.norm.bias"), w("action_net.weight"), w("action_net.bias")
        )
        self._mean = np.full((d, 1), 1.0 / d, dtype=np.float32)
        self._splits = np.cumsum(config.nvec)[:-1]

    def _block(self, blk: _Block, x: np.ndarray, mask: np.ndarray, first_only: bool) -> np.ndarray:
        """One block: ``x [B, S, d]`` -> ``[B, S, d]``, or ``[B, 1, d]`` (row 0 only) with ``first_only``.

        ``mask [B, 1, 1, S]`` is 0 for tokens attended to and -inf for padding rows.
        """
        b, s, d = x.shape
        h = self.config.n_heads
        xn = _normalize(x, self._mean)
        if first_only:
            x, xq = x[:, :1], xn[:, :1]  # [B, 1, d]: the residual stream of the objective token
        else:
            xq = xn
        sq = x.shape[1]
        q = (xq @ blk.w_q + blk.b_q).reshape(b, sq, h, d // h).transpose(0, 2, 1, 3)  # [B, h, Sq, dh]
        kv = (xn @ blk.w_kv + blk.b_kv).reshape(b, s, 2, h, d // h)  # [B, S, 2, h, dh]
        k = kv[:, :, 0].transpose(0, 2, 3, 1)  # [B, h, dh, S]
        v = kv[:, :, 1].transpose(0, 2, 1, 3)  # [B, h, S, dh]
        scores = q @ k + mask  # [B, h, Sq, S] (scaled through w_q)
        p = np.exp(scores - scores.max(axis=-1, keepdims=True))
        p /= p.sum(axis=-1, keepdims=True)
        y = (p @ v).transpose(0, 2, 1, 3).reshape(b, sq, d)  # [B, Sq, d]
        x = x + (y @ blk.w_proj + blk.b_proj)
        hidden = _gelu_tanh(_normalize(x, self._mean) @ blk.w_fc + blk.b_fc)
        return x + (hidden @ blk.w_out + blk.b_out)  # type: ignore[no-any-return]

    def logits(self, obs: np.ndarray) -> np.ndarray:
        """Observations ``[B, obs_size]`` -> action logits ``[B, sum(nvec)]`` (float32)."""
        cfg = self.config
        x0 = np.asarray(obs, dtype=np.float32)
        if x0.ndim != 2 or x0.shape[1] != cfg.obs_size:
            raise ValueError(
                f"observation has shape {x0.shape}; this model reads [B, {cfg.obs_size}] "
                f"(window={cfg.window}); encode with ObservationSpec(window={cfg.window})"
            )
        b = x0.shape[0]
        n = cfg.window * cfg.token_dim
        tokens = x0[:, :n].reshape(b, cfg.window, cfg.token_dim)  # [B, W, T]
        x = np.empty((b, cfg.window + 1, cfg.d_model), dtype=np.float32)  # [B, W+1, d]
        x[:, 0] = x0[:, n:] @ self._objective_in[0] + self._objective_in[1]  # the objective token
        x[:, 1:] = tokens @ self._token_in[0] + self._token_in[1]
        x += self._pos
        mask = np.zeros((b, 1, 1, cfg.window + 1), dtype=np.float32)  # [B, 1, 1, W+1]
        mask[:, 0, 0, 1:][tokens[..., 0] <= 0.5] = -np.inf  # padding rows (the "mask" feature is 0)
        last = len(self._blocks) - 1
        for i, blk in enumerate(self._blocks):
            x = self._block(blk, x, mask, first_only=i == last)
        features = _normalize(x[:, 0], self._mean)  # [B, d], the final LayerNorm folded into action_net
        return features @ self._action[0] + self._action[1]  # type: ignore[no-any-return]

    def act(self, obs: np.ndarray) -> np.ndarray:
        """Greedy grid indices: ``[obs_size]`` -> ``[3]`` or ``[B, obs_size]`` -> ``[B, 3]`` (int64).

        Each component's argmax (the first index on a tie, as torch's argmax on CPU); map a row to a setting
        with ``ActionGrid.setting``.
        """
        x = np.asarray(obs, dtype=np.float32)
        single = x.ndim == 1
        logits = self.logits(x[None] if single else x)
        out = np.stack([p.argmax(axis=-1) for p in np.split(logits, self._splits, axis=-1)], axis=-1).astype(
            np.int64
        )  # [B, 3]
        return out[0] if single else out


def check_weights(config: TinyFormerConfig, weights: Mapping[str, Any]) -> None:
    """Refuse weights that are not exactly :func:`weight_shapes` (names, shapes, float dtype, finite).

    :raises ValueError: naming the first problem (missing / unexpected names, a shape, a dtype, NaN).
    """
    expected = weight_shapes(config)
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"tensors do not match the tinyformer config: missing {missing[:8]}, unexpected {unexpected[:8]}"
        )
    for key, t in weights.items():
        arr = np.asarray(t)
        if not np.issubdtype(arr.dtype, np.floating):
            raise ValueError(f"tensor {key!r} has dtype {arr.dtype}; expected floating point")
        if tuple(arr.shape) != expected[key]:
            raise ValueError(
                f"tensor {key!r} has shape {tuple(arr.shape)}, the config expects {expected[key]}"
            )
        if not bool(np.isfinite(arr).all()):
            raise ValueError(f"tensor {key!r} holds NaN or inf values")
