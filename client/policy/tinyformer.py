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


@dataclass(frozen=True)
class _NormLinear:
    """A LayerNorm and the linear layer that reads it, as one product (see :func:`_norm_linear`).

    ``w [d + out, d]``: the centering matrix ``C = I - 1/d`` in the first ``d`` rows, then
    ``W diag(ln_w) C``; ``b [out, 1]``: ``W ln_b + b``. Folded in float64, held in float32.
    """

    w: np.ndarray
    b: np.ndarray
    d: int


def _fold_norm_linear(ln_w: np.ndarray, ln_b: np.ndarray, w: np.ndarray, b: np.ndarray) -> _NormLinear:
    """``W LN(x) + b`` (LN with affine ``ln_w``, ``ln_b``; ``w [out, in]``, torch's layout) as a _NormLinear.

    ``LN(x) = ln_w * C x / sigma(x) + ln_b``, so ``W LN(x) + b = (W diag(ln_w) C x) / sigma + (W ln_b + b)``:
    the centering, the scale and the shift all move into the weights; only ``sigma`` is left per call.
    """
    d = w.shape[1]
    w64 = w.astype(np.float64)
    center = np.eye(d) - 1.0 / d
    folded = np.concatenate([center, (w64 * ln_w.astype(np.float64)) @ center])
    bias = w64 @ ln_b.astype(np.float64) + b.astype(np.float64)
    return _NormLinear(np.ascontiguousarray(folded, dtype=np.float32), bias.astype(np.float32)[:, None], d)


def _norm_linear(nl: _NormLinear, x: np.ndarray, mean_row: np.ndarray) -> np.ndarray:
    """``W LN(x) + b`` for token columns ``x [..., d, S]``: one product gives ``x - mean`` and ``W' x``.

    ``mean_row`` is a ``[1, d]`` row of ``1/d``: a mean as a matrix product is several times cheaper than
    ``ndarray.mean`` on vectors this short. Seven numpy calls, where a LayerNorm then a linear layer take
    nine; the result ``[..., out, S]`` is a view of a fresh buffer that the caller may modify.
    """
    h = nl.w @ x  # [..., d + out, S]
    xc = h[..., : nl.d, :]  # x - mean(x), per token
    sigma = mean_row @ (xc * xc)  # [..., 1, S]: the variance
    sigma += LAYER_NORM_EPS
    np.sqrt(sigma, out=sigma)
    out = h[..., nl.d :, :]
    out /= sigma
    out += nl.b
    return out


@dataclass(frozen=True)
class _Block:
    """One pre-LN block as ``w @ x + b`` products (``w [out, in]``), each LayerNorm folded into its reader."""

    qkv: (
        _NormLinear  # LN1 + the fused query/key/value product [3d, d]; 1/sqrt(d_head) folded into the queries
    )
    w_proj: np.ndarray  # [d, d]
    b_proj: np.ndarray  # [d, 1]
    fc: _NormLinear  # LN2 + the MLP's first layer [ff*d, d]
    w_out: np.ndarray  # [d, ff*d], GELU's factor 0.5 folded in
    b_out: np.ndarray  # [d, 1]


#: GELU(tanh) as ``x * (1 + tanh(x * (_GELU_C + _GELU_C3 * x^2)))`` with the 0.5 folded into the next product.
_GELU_C3 = _GELU_C * 0.044715


def _f32(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)


class NumpyTinyFormer:
    """The TinyFormer's greedy policy in numpy (float32): observation -> logits -> argmax grid indices.

    :param config: the architecture (an artifact's manifest ``config``).
    :param weights: name -> array, exactly :func:`weight_shapes`' names and shapes (any float dtype; held
        as float32). Missing or unexpected names, wrong shapes and non-finite values raise ``ValueError``.

    The arithmetic is the torch module's, rearranged at load (in float64, once) so that a forward pass is
    few numpy calls: at these widths a call costs about a microsecond whatever its size, so their number
    sets the latency more than the FLOPs do. Tokens are columns (``x [B, d, S]``, products ``W @ x``), so
    the heads split and join by free reshapes, with no transposed copies. Folded in: each LayerNorm
    (centering, scale, shift) into the product that reads it (:func:`_fold_norm_linear`); the attention
    scale into the queries; the three input projections into one ``[3d, d]`` product; the two input
    embeddings, their biases and the positions into one product over a zero-padded input matrix; GELU's
    0.5 into the MLP's output layer; the three action heads into one product padded with ``-inf`` biases,
    so that one ``argmax`` picks all three. The logits agree with the torch module's to float32 rounding.
    Immutable after construction and free of per-call state, so one instance serves concurrent callers.
    """

    def __init__(self, config: TinyFormerConfig, weights: Mapping[str, np.ndarray]) -> None:
        check_weights(config, weights)
        self.config = config
        d, t, o, s = config.d_model, config.token_dim, config.objective_dim, config.window + 1
        scale = 1.0 / math.sqrt(d // config.n_heads)

        def w(name: str) -> np.ndarray:
            return np.asarray(weights[name], dtype=np.float64)

        # Embedding: column 0 of the input matrix holds the objective in rows T.., columns 1.. the tokens in
        # rows ..T; one product with the side-by-side weights, then biases + positions per column.
        self._w_embed = _f32(
            np.concatenate([w("encoder.token_in.weight"), w("encoder.objective_in.weight")], 1)
        )
        col_bias = np.repeat(w("encoder.token_in.bias")[None], s, axis=0)  # [S, d]
        col_bias[0] = w("encoder.objective_in.bias")
        self._b_embed = _f32((col_bias + w("encoder.pos")).T)  # [d, S]
        self._in_shape = (t + o, s)
        blocks = []
        for i in range(config.n_layers):
            p = f"encoder.blocks.{i}."
            qkv_w, qkv_b = w(p + "qkv.weight"), w(p + "qkv.bias")  # [3d, d], [3d]
            qkv_w[:d] *= scale
            qkv_b[:d] *= scale
            blocks.append(
                _Block(
                    qkv=_fold_norm_linear(w(p + "ln1.weight"), w(p + "ln1.bias"), qkv_w, qkv_b),
                    w_proj=_f32(w(p + "proj.weight")),
                    b_proj=_f32(w(p + "proj.bias")[:, None]),
                    fc=_fold_norm_linear(
                        w(p + "ln2.weight"), w(p + "ln2.bias"), w(p + "fc.weight"), w(p + "fc.bias")
                    ),
                    w_out=_f32(0.5 * w(p + "fc_out.weight")),
                    b_out=_f32(w(p + "fc_out.bias")[:, None]),
                )
            )
        self._blocks = tuple(blocks)
        # Action heads padded to [3, width]: padding rows have zero weights and a -inf bias.
        nvec = config.nvec
        width = max(nvec)
        head_w = np.zeros((3 * width, d))
        head_b = np.full(3 * width, -np.inf)
        self._keep = np.concatenate([np.arange(n) + i * width for i, n in enumerate(nvec)])
        head_w[self._keep] = w("action_net.weight")
        head_b[self._keep] = w("action_net.bias")
        head = _fold_norm_linear(
            w("encoder.norm.weight"), w("encoder.norm.bias"), head_w, np.zeros(3 * width)
        )
        self._head = _NormLinear(head.w, _f32(head.b + head_b[:, None]), d)
        self._head_shape = (3, width)
        self._mean = np.full((1, d), 1.0 / d, dtype=np.float32)
        self._ones = np.ones((1, s), dtype=np.float32)

    def _block(self, blk: _Block, x: np.ndarray, mask: np.ndarray, first_only: bool) -> np.ndarray:
        """One block: ``x [B, d, S]`` -> ``[B, d, S]``, or ``[B, d, 1]`` (column 0 only) with ``first_only``.

        ``mask [B, 1, S, 1]`` is 0 for tokens attended to and -inf for padding. Updates ``x`` in place.
        """
        b, d, s = x.shape
        h = self.config.n_heads
        qkv = _norm_linear(blk.qkv, x, self._mean).reshape(b, 3, h, d // h, s)
        q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]  # [B, h, dh, S] each (q scaled through the weights)
        if first_only:
            x, q = x[..., :1], q[..., :1]  # the residual stream and the query of the objective token
        p = k.swapaxes(-1, -2) @ q  # [B, h, S keys, Sq queries]
        p += mask
        p -= p.max(axis=-2, keepdims=True)
        np.exp(p, out=p)
        p /= self._ones @ p  # the sum over keys, as a product (cheaper than a reduction at this size)
        y = (v @ p).reshape(b, d, -1)  # [B, h, dh, Sq] -> [B, d, Sq]: the heads stacked, no copy
        x += blk.w_proj @ y
        x += blk.b_proj
        hidden = _norm_linear(blk.fc, x, self._mean)  # [B, ff*d, Sq]
        g = hidden * hidden
        g *= _GELU_C3
        g += _GELU_C
        g *= hidden
        np.tanh(g, out=g)
        g += 1.0
        g *= hidden  # 2 * GELU(hidden); the 0.5 is in w_out
        x += blk.w_out @ g
        x += blk.b_out
        return x

    def _head_logits(self, obs: np.ndarray) -> np.ndarray:
        """Observations ``[B, obs_size]`` -> padded logits ``[B, 3 * width]`` (-inf in the padding)."""
        cfg = self.config
        x0 = np.asarray(obs, dtype=np.float32)
        if x0.ndim != 2 or x0.shape[1] != cfg.obs_size:
            raise ValueError(
                f"observation has shape {x0.shape}; this model reads [B, {cfg.obs_size}] "
                f"(window={cfg.window}); encode with ObservationSpec(window={cfg.window})"
            )
        b, n, t = x0.shape[0], cfg.window * cfg.token_dim, cfg.token_dim
        inputs = np.zeros((b, *self._in_shape), dtype=np.float32)  # [B, T+O, W+1]
        inputs[:, t:, 0] = x0[:, n:]  # the objective token
        inputs[:, :t, 1:] = x0[:, :n].reshape(b, cfg.window, t).swapaxes(1, 2)  # the telemetry tokens
        x = self._w_embed @ inputs  # [B, d, W+1]
        x += self._b_embed
        mask = np.zeros((b, 1, cfg.window + 1, 1), dtype=np.float32)  # [B, 1, W+1, 1]
        np.copyto(mask[:, 0, 1:, 0], -np.inf, where=x0[:, :n:t] <= 0.5)  # padding rows (mask feature 0)
        last = len(self._blocks) - 1
        for i, blk in enumerate(self._blocks):
            x = self._block(blk, x, mask, first_only=i == last)
        # the final LayerNorm folded into the padded heads: [B, 3 * width, 1]
        return _norm_linear(self._head, x[..., :1], self._mean)[..., 0]

    def logits(self, obs: np.ndarray) -> np.ndarray:
        """Observations ``[B, obs_size]`` -> action logits ``[B, sum(nvec)]`` (float32)."""
        return self._head_logits(obs)[:, self._keep]

    def act(self, obs: np.ndarray) -> np.ndarray:
        """Greedy grid indices: ``[obs_size]`` -> ``[3]`` or ``[B, obs_size]`` -> ``[B, 3]`` (int64).

        Each component's argmax (the first index on a tie, as torch's argmax on CPU); map a row to a setting
        with ``ActionGrid.setting``.
        """
        x = np.asarray(obs, dtype=np.float32)
        single = x.ndim == 1
        padded = self._head_logits(x[None] if single else x)
        out = padded.reshape(-1, *self._head_shape).argmax(axis=-1)  # [B, 3]
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
