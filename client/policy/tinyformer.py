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
    action_net(features) [B, sum(nvec)] logits for the three MultiDiscrete components (rank, bits, gamma),
                         or [B, prod(nvec)] for one joint categorical over the grid (config.joint)

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
    :param joint: the action head. ``False``: three categorical heads (``sum(nvec)`` logits, each
        component's argmax), which cannot express "this rank only with those bits": fitted to settings
        chosen as wholes, each head takes its own majority and together they may form a setting no label
        chose. ``True``: one categorical over every grid point (``prod(nvec)`` logits, rank-major as
        ``ActionGrid.all_settings``), so a setting is chosen as a whole; the SB3 action space is then
        ``Discrete(prod(nvec))`` (``agents.vec.JointActions``).
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
    joint: bool = False

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
    def n_logits(self) -> int:
        """Width of ``action_net``: ``prod(nvec)`` with a joint head, else ``sum(nvec)``."""
        return math.prod(self.nvec) if self.joint else sum(self.nvec)

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
        "action_net.weight": (config.n_logits, d),
        "action_net.bias": (config.n_logits,),
        "value_net.weight": (1, d),
        "value_net.bias": (1,),
    }
    return shapes


def _f32(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)


@dataclass(frozen=True)
class _NormLinear:
    """A LayerNorm and the linear layer that reads it (see :func:`_norm_linear`).

    ``w [d, out]``: ``(W diag(ln_w))^T``; ``b [out]``: ``W ln_b + b``. Folded in float64, held in float32.
    """

    w: np.ndarray
    b: np.ndarray


def _fold_norm_linear(ln_w: np.ndarray, ln_b: np.ndarray, w: np.ndarray, b: np.ndarray) -> _NormLinear:
    """``W LN(x) + b`` (LN with affine ``ln_w``, ``ln_b``; ``w [out, in]``, torch's layout) as a _NormLinear.

    ``LN(x) = ln_w * (x - mean) / sigma + ln_b``, so ``W LN(x) + b = (W diag(ln_w)) (x - mean) / sigma +
    (W ln_b + b)``: the scale and the shift move into the weights. The centering is not done here: the
    residual stream is kept centered (see :func:`_centered`).
    """
    w64 = w.astype(np.float64)
    bias = w64 @ ln_b.astype(np.float64) + b.astype(np.float64)
    return _NormLinear(_f32((w64 * ln_w.astype(np.float64)).T), _f32(bias))


def _centered(w: np.ndarray) -> np.ndarray:
    """``w [in, d]`` (float64) with each row's mean taken out: ``x @ _centered(w)`` is ``x @ w`` centered per
    token row (``w (I - 1/d)``), the same to float rounding whatever ``x``."""
    return w - w.mean(axis=1, keepdims=True)


def _norm_linear(nl: _NormLinear, x: np.ndarray, mean_col: np.ndarray) -> np.ndarray:
    """``W LN(x) + b`` for *centered* token rows ``x [..., S, d]`` (each row's mean 0) -> ``[..., S, out]``.

    Every reader of the residual stream is a LayerNorm, which ignores a row's mean, so the model keeps the
    stream centered (every product that writes it has centered rows, :func:`_centered`): the LayerNorm's
    centering (a ``[d, d]`` product per LayerNorm) falls away and the variance is ``mean(x^2)``.
    ``mean_col`` is a ``[d, 1]`` column of ``1/d``: a mean as a matrix product is several times cheaper
    than ``ndarray.mean`` on vectors this short. Every operand is contiguous: numpy's elementwise loops on
    strided views of a wider product cost up to twice as much. Returns a fresh array; ``x`` is not changed.
    """
    sigma = (x * x) @ mean_col  # [..., S, 1]: the variance
    sigma += _EPS_F32
    np.sqrt(sigma, out=sigma)
    z = x / sigma
    out = z @ nl.w
    out += nl.b
    return out


@dataclass(frozen=True)
class _Block:
    """One pre-LN block as ``x @ w`` products (``w [in, out]``), each LayerNorm folded into its reader.

    Two biases ride in the products as constant features (exact: see :class:`NumpyTinyFormer`): each
    head's values carry a feature of ones, so ``exp(scores) @ v`` also gives the softmax's denominator and,
    once divided, a feature of ones that ``w_proj``'s bias row reads; the MLP's hidden layer carries a
    feature of :data:`_CONST_HIDDEN`, whose GELU is exactly ``2 * _CONST_HIDDEN``, which ``w_out``'s bias
    row reads.
    """

    qkv: _NormLinear  # LN1 + [queries d | keys d | values + a ones feature per head h * (d_head + 1)]
    w_proj: np.ndarray  # [h * (d_head + 1), d]: the output projection, its bias in head 0's ones row
    fc: _NormLinear  # LN2 + the MLP's first layer [d, ff*d + 1] (the last feature constant)
    w_out: np.ndarray  # [ff*d + 1, d], GELU's factor 0.5 folded in, the bias in the last row
    bounded: bool  # every attention score provably within +-_EXP_SAFE: the softmax needs no max subtraction


#: Attention scores within +-_EXP_SAFE need no max subtraction before ``exp``: exp(80) * (S <= 9 keys) stays
#: far below float32's largest value and exp(-80) above its smallest normal one, so no sum overflows or
#: vanishes (the objective token is never masked) and the softmax is the same to float rounding.
_EXP_SAFE = 80.0


def _score_bound(w_qk: np.ndarray, b_qk: np.ndarray, d: int, n_heads: int) -> float:
    """An upper bound on ``|q . k|`` over every head and every input (float64, at load).

    ``w_qk [2d, d]``, ``b_qk [2d]``: the query (attention scale included) and key rows of the product that
    reads a LayerNorm's normalized input ``z``, its scale and shift folded in. ``|z| <= sqrt(d)`` (it has
    mean 0 and variance below 1), so ``|q_j| <= s(Wq_j) sqrt(d) + |bq_j|`` per head ``j`` (``s``: the
    largest singular value), likewise ``|k_j|``, and ``|q_j . k_j| <= |q_j| |k_j|``.
    """
    dh = d // n_heads
    bound = 0.0
    for j in range(n_heads):
        q, k = slice(j * dh, (j + 1) * dh), slice(d + j * dh, d + (j + 1) * dh)
        nq = np.linalg.norm(w_qk[q], 2) * math.sqrt(d) + np.linalg.norm(b_qk[q])
        nk = np.linalg.norm(w_qk[k], 2) * math.sqrt(d) + np.linalg.norm(b_qk[k])
        bound = max(bound, float(nq * nk))
    return bound


#: GELU(tanh) as ``x * (1 + tanh(x * (_GELU_C + _GELU_C3 * x^2)))`` with the 0.5 folded into the next product.
_GELU_C3 = _GELU_C * 0.044715
#: The MLP's constant hidden row: tanh(8 * (C + 64 * C3)) = tanh(24.7) is 1.0 exactly in float32 and float64,
#: so the row's doubled GELU is exactly 16 and a bias divided by 16 (a power of two: exact) rides on it.
_CONST_HIDDEN = 8.0

# The scalars of the per-call arithmetic as 0-d float32 arrays: numpy converts a Python float operand on
# every call (~0.2 us each, a tenth of the forward's elementwise time); the float32 value, so the result, is
# the same.
_EPS_F32 = np.array(LAYER_NORM_EPS, dtype=np.float32)
_GELU_C_F32 = np.array(_GELU_C, dtype=np.float32)
_GELU_C3_F32 = np.array(_GELU_C3, dtype=np.float32)
_ONE_F32 = np.array(1.0, dtype=np.float32)


class NumpyTinyFormer:
    """The TinyFormer's greedy policy in numpy (float32): observation -> logits -> argmax grid indices.

    :param config: the architecture (an artifact's manifest ``config``).
    :param weights: name -> array, exactly :func:`weight_shapes`' names and shapes (any float dtype; held
        as float32). Missing or unexpected names, wrong shapes and non-finite values raise ``ValueError``.

    The arithmetic is the torch module's, rearranged at load (in float64, once) so that a forward pass is
    few numpy calls on contiguous arrays: at these widths a call costs about a microsecond, so their number
    sets the latency more than the FLOPs do, and an elementwise call on a strided view costs up to twice
    one on a contiguous array. Tokens are rows (``x [B, S, d]``, products ``x @ W^T`` with ``W^T``
    stored), so elementwise work runs along rows of ``d`` or more values (with tokens as columns it ran
    along rows of ``S`` = 9) and the products have the shape BLAS is quicker at. Folded in:

    * the embedding: the observation is scattered (one indexed assignment) into a copy of a fixed input
      matrix whose last ``S`` columns are the identity, so one product gives both input embeddings, their
      biases and the positions;
    * each LayerNorm's scale and shift into the product that reads it (:func:`_fold_norm_linear`); its
      centering into the products that write the residual stream (the embedding, the attention's output
      projection, the MLP's output: :func:`_centered`), which is read only through LayerNorms and so is
      kept centered; the attention scale into the queries; the three input projections into one product;
    * the softmax's denominator: a feature of ones beside each head's values, so ``exp(scores) @ v``
      gives it with the weighted values, and the division leaves a feature of ones that carries the output
      projection's bias; the MLP's output bias likewise rides on a constant hidden feature
      (:data:`_CONST_HIDDEN`); GELU's 0.5 sits in the MLP's output weights;
    * the three action heads into one product padded with ``-inf`` biases, so one ``argmax`` picks all
      three (a joint head is one row: its argmax is the grid point);
    * the softmax's max subtraction, where the weights bound every score within ``+-_EXP_SAFE``
      (:func:`_score_bound`, computed at load; the shipped policy's bound is ~11): ``exp`` then neither
      overflows nor vanishes.

    Padding rows (mask feature not > 0.5, as the torch module tests) get a ``-inf`` additive mask; a window
    without padding skips the mask. The logits agree with the torch module's to float32 rounding. Immutable
    after construction and free of per-call state, so one instance serves concurrent callers.
    """

    def __init__(self, config: TinyFormerConfig, weights: Mapping[str, np.ndarray]) -> None:
        check_weights(config, weights)
        self.config = config
        d, t, o, s = config.d_model, config.token_dim, config.objective_dim, config.window + 1
        h = config.n_heads
        dh = d // h
        scale = 1.0 / math.sqrt(dh)

        def w(name: str) -> np.ndarray:
            return np.asarray(weights[name], dtype=np.float64)

        # Embedding: input columns [token features T | objective features O | one-hot row S]; row 0 is the
        # objective token, rows 1.. the telemetry tokens. The one-hot columns select each row's bias.
        col_bias = np.repeat(w("encoder.token_in.bias")[None], s, axis=0)  # [S, d]
        col_bias[0] = w("encoder.objective_in.bias")
        self._w_embed = _f32(
            _centered(
                np.concatenate(
                    [
                        w("encoder.token_in.weight"),
                        w("encoder.objective_in.weight"),
                        (col_bias + w("encoder.pos")).T,
                    ],
                    1,
                ).T
            )
        )  # [T + O + S, d], centered rows: the residual stream starts centered
        template = np.zeros((s, t + o + s), dtype=np.float32)
        template[np.arange(s), t + o + np.arange(s)] = 1.0
        self._template = template[None]  # [1, S, T + O + S]
        n = config.window * t
        j = np.arange(config.obs_size)
        rows = np.where(j < n, 1 + j // t, 0)
        cols = np.where(j < n, j % t, t + j - n)
        self._scatter = (
            rows * (t + o + s) + cols
        )  # flat index into the input matrix of each observation entry
        self._n_tok = n

        blocks = []
        for i in range(config.n_layers):
            p = f"encoder.blocks.{i}."
            qkv_w, qkv_b = w(p + "qkv.weight"), w(p + "qkv.bias")  # [3d, d], [3d]
            qkv_w[:d] *= scale
            qkv_b[:d] *= scale
            ln_w, ln_b = w(p + "ln1.weight"), w(p + "ln1.bias")
            qk_w, qk_b = qkv_w[: 2 * d] * ln_w, qkv_w[: 2 * d] @ ln_b + qkv_b[: 2 * d]  # as z's reader
            bounded = _score_bound(qk_w, qk_b, d, h) <= _EXP_SAFE
            # values with a ones row under each head: weight 0, bias 1
            v_w = np.zeros((h, dh + 1, d))
            v_b = np.zeros((h, dh + 1))
            v_w[:, :dh] = qkv_w[2 * d :].reshape(h, dh, d)
            v_b[:, :dh] = qkv_b[2 * d :].reshape(h, dh)
            v_b[:, dh] = 1.0
            qkv_w = np.concatenate([qkv_w[: 2 * d], v_w.reshape(-1, d)])
            qkv_b = np.concatenate([qkv_b[: 2 * d], v_b.reshape(-1)])
            proj = np.zeros((d, h, dh + 1))  # [out, head, value features + ones]
            proj[:, :, :dh] = w(p + "proj.weight").reshape(d, h, dh)
            proj[:, 0, dh] = w(p + "proj.bias")
            fc_w = np.concatenate([w(p + "fc.weight"), np.zeros((1, d))])
            fc_b = np.concatenate([w(p + "fc.bias"), [_CONST_HIDDEN]])
            w_out = np.concatenate([0.5 * w(p + "fc_out.weight"), w(p + "fc_out.bias")[:, None] / 16.0], 1)
            blocks.append(
                _Block(
                    qkv=_fold_norm_linear(w(p + "ln1.weight"), w(p + "ln1.bias"), qkv_w, qkv_b),
                    w_proj=_f32(_centered(proj.reshape(d, -1).T)),
                    fc=_fold_norm_linear(w(p + "ln2.weight"), w(p + "ln2.bias"), fc_w, fc_b),
                    w_out=_f32(_centered(w_out.T)),
                    bounded=bounded,
                )
            )
        self._blocks = tuple(blocks)
        # Factorized heads padded to [3, width]: padding rows have zero weights and a -inf bias. A joint
        # head is one row of prod(nvec) logits.
        nvec = config.nvec
        width = config.n_logits if config.joint else max(nvec)
        n_rows = 1 if config.joint else 3
        head_w = np.zeros((n_rows * width, d))
        head_b = np.full(n_rows * width, -np.inf)
        if config.joint:
            self._keep = np.arange(width)
        else:
            self._keep = np.concatenate([np.arange(n) + i * width for i, n in enumerate(nvec)])
        head_w[self._keep] = w("action_net.weight")
        head_b[self._keep] = w("action_net.bias")
        head = _fold_norm_linear(
            w("encoder.norm.weight"), w("encoder.norm.bias"), head_w, np.zeros(n_rows * width)
        )
        self._head = _NormLinear(head.w, _f32(head.b + head_b))
        self._head_shape = (n_rows, width)
        self._mean = np.full((d, 1), 1.0 / d, dtype=np.float32)

    def _block(self, blk: _Block, x: np.ndarray, mask: np.ndarray | None, first_only: bool) -> np.ndarray:
        """One block: ``x [B, S, d]`` -> ``[B, S, d]``, or ``[B, 1, d]`` (row 0 only) with ``first_only``.

        ``mask [B, 1, 1, S]`` is 0 for tokens attended to and -inf for padding (``None``: no padding).
        Updates ``x`` in place.
        """
        b, s, d = x.shape
        h = self.config.n_heads
        dh = d // h
        qkv = _norm_linear(blk.qkv, x, self._mean)  # [B, S, 2d + h (dh + 1)]
        q = qkv[..., :d].reshape(b, s, h, dh)  # scaled through the weights
        k = qkv[..., d : 2 * d].reshape(b, s, h, dh)
        v = qkv[..., 2 * d :].reshape(b, s, h, dh + 1)  # the values, then a feature of ones
        if first_only:
            x, q = x[:, :1], q[:, :1]  # the residual stream and the query of the objective token
        sq = q.shape[1]
        p = q.transpose(0, 2, 1, 3) @ k.transpose(0, 2, 3, 1)  # [B, h, Sq queries, S keys]
        if mask is not None:
            p += mask
        if not blk.bounded:
            p -= p.max(axis=-1, keepdims=True)
        np.exp(p, out=p)
        y = p @ v.transpose(0, 2, 1, 3)  # [B, h, Sq, dh + 1]: weighted values, the softmax's denominator
        y /= y[..., dh:]  # the last feature becomes 1: it carries the projection's bias
        x += y.transpose(0, 2, 1, 3).reshape(b, sq, -1) @ blk.w_proj
        hidden = _norm_linear(blk.fc, x, self._mean)  # [B, Sq, ff*d + 1], the last feature _CONST_HIDDEN
        g = hidden * hidden
        g *= _GELU_C3_F32
        g += _GELU_C_F32
        g *= hidden
        np.tanh(g, out=g)
        g += _ONE_F32
        g *= hidden  # 2 * GELU(hidden); the 0.5 is in w_out, the bias on the last feature (16)
        x += g @ blk.w_out
        return x

    def _head_logits(self, obs: np.ndarray) -> np.ndarray:
        """Observations ``[B, obs_size]`` -> padded logits ``[B, rows * width]`` (-inf in the padding)."""
        cfg = self.config
        x0 = np.asarray(obs, dtype=np.float32)
        if x0.ndim != 2 or x0.shape[1] != cfg.obs_size:
            raise ValueError(
                f"observation has shape {x0.shape}; this model reads [B, {cfg.obs_size}] "
                f"(window={cfg.window}); encode with ObservationSpec(window={cfg.window})"
            )
        b = x0.shape[0]
        if b == 1:  # the serving path: a copy and a 1-D scatter cost half of repeat and a 2-D one
            inputs = self._template.copy()  # [1, W+1, T+O+S]
            inputs.reshape(-1)[self._scatter] = x0.reshape(-1)
        else:
            inputs = self._template.repeat(b, axis=0)  # [B, W+1, T+O+S]
            inputs.reshape(b, -1)[:, self._scatter] = x0
        x = inputs @ self._w_embed  # [B, W+1, d]: embeddings + biases + positions
        flags = x0[:, : self._n_tok : cfg.token_dim]  # [B, W]: the mask feature of each telemetry token
        mask = None
        if not flags.min() > 0.5:  # some padding (or NaN, which the torch module treats as padding)
            mask = np.zeros((b, 1, 1, cfg.window + 1), dtype=np.float32)  # [B, 1, 1, W+1]
            np.copyto(mask[:, 0, 0, 1:], -np.inf, where=~(flags > 0.5))
        last = len(self._blocks) - 1
        for i, blk in enumerate(self._blocks):
            x = self._block(blk, x, mask, first_only=i == last)
        # the final LayerNorm folded into the padded heads: [B, 1, rows * width]
        return _norm_linear(self._head, x[:, :1], self._mean)[:, 0]

    def logits(self, obs: np.ndarray) -> np.ndarray:
        """Observations ``[B, obs_size]`` -> action logits ``[B, n_logits]`` (float32)."""
        return self._head_logits(obs)[:, self._keep]

    def act(self, obs: np.ndarray) -> np.ndarray:
        """Greedy grid indices: ``[obs_size]`` -> ``[3]`` or ``[B, obs_size]`` -> ``[B, 3]`` (int64).

        Each component's argmax, or with a joint head the grid point's argmax split into its components
        (the first index on a tie, as torch's argmax on CPU); map a row to a setting with
        ``ActionGrid.setting``.
        """
        x = np.asarray(obs, dtype=np.float32)
        single = x.ndim == 1
        padded = self._head_logits(x[None] if single else x)
        out = padded.reshape(-1, *self._head_shape).argmax(axis=-1)  # [B, 3], or [B, 1] flat indices
        if self.config.joint:
            out = np.stack(np.unravel_index(out[:, 0], self.config.nvec), axis=-1)
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
