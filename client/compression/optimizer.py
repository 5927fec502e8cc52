"""``MangoAdamW``: AdamW whose optimizer state is compressed by a live-switchable ``(rank, bits, gamma)``.

The optimizer only wires the pure operators of :mod:`~client.compression.lowrank`,
:mod:`~client.compression.quant` and :mod:`~client.compression.feedback` together; see
``docs/architecture.md`` ("optimizer.py") for the design and :class:`MangoAdamW` for the tuning guide.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import math
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal, NamedTuple

import torch

from client.compression import convert as convert_mod
from client.compression import fused as fused_mod
from client.compression import rank0 as rank0_mod
from client.compression import refresh as refresh_mod
from client.compression import sharded_basis as basis_mod
from client.compression import step_graph
from client.compression.errors import MangoNonFiniteError
from client.compression.feedback import shift_compress
from client.compression.interface import CompressionStats
from client.compression.lowrank import init_q, orthonormalize_batched, power_iteration, top_left_singular
from client.compression.quant import (
    DenseState,
    QuantizedTensor,
    compress_state,
    default_state_mode,
    quantize,
    quantize_many,
)
from client.compression.sharded import is_dtensor as _is_dtensor
from client.compression.sharded import local as _local
from client.compression.sharded import per_rank, shard_entry, unshard
from client.compression.sizes import auto_factors_second_moment, param_state_bytes
from client.compression.slots import (
    _TINY,
    Slot,
    _canon,
    _canon_shape,
    _from_param_order,
    _get,
    _load,
    _load_sqrt_v,
    _mix_v,
    _refactor,
    _slot_bytes,
    _to_param_order,
    _uncanon,
    _zeros,
    saved_shape,
)
from client.protocol import CompressionSetting

__all__ = ["MangoAdamW", "auto_rounding_is_stochastic"]

log = logging.getLogger(__name__)

_STATE_VERSION = 2  # 2: full-matrix states in the parameter's memory order
#: A compressed tensor's gradient is used only while ``norm * sqrt(numel)`` is below this: sqrt of fp32's
#: largest value (2**64) with a factor 16 of room, so no sum of squares in a step overflows (``_finite``).
_MATRIX_GRAD_LIMIT = 2.0**60


def auto_rounding_is_stochastic(bits: int) -> bool:
    """The rounding of ``stochastic_rounding="auto"`` at a state width: nearest for the 3-, 4- and 8-bit
    codes (``False``), stochastic for 2 bits and bf16 (``True``; 32 bits rounds nothing). 4 bits rounded
    stochastically until session 31 and 3 bits until session 33: rounded to nearest they trained lower on
    the GPU and on the CPU, and a step without random draws takes less energy (BENCHMARKS.md, those
    sessions). At 2 bits nearest rounding trained higher on the CPU."""
    return bits not in (3, 4, 8)


def _addcdiv(dst: torch.Tensor, num: torch.Tensor, den: torch.Tensor, value: float | torch.Tensor) -> None:
    """``dst += value * num / den``; a tensor ``value`` (a compiled step's tensor ``lr``) as tensor ops."""
    if isinstance(value, torch.Tensor):
        dst.add_(num / den * value)
    else:
        dst.addcdiv_(num, den, value=value)


def _axpy(dst: torch.Tensor, x: torch.Tensor, alpha: float | torch.Tensor) -> None:
    """``dst += alpha * x``; a tensor ``alpha`` as tensor ops."""
    if isinstance(alpha, torch.Tensor):
        dst.add_(x * alpha)
    else:
        dst.add_(x, alpha=alpha)


def _bf16_stochastic(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Round fp32 -> bf16 stochastically (unbiased): add 16 random low bits, then truncate.

    Round-to-nearest bf16 (8 mantissa bits) would freeze an EMA whose per-step change is below 0.2 %
    (``v`` with ``beta2 = 0.999`` changes 0.1 % per step); stochastic rounding keeps it moving on average.
    """
    xi = x.float().contiguous().view(torch.int32)
    device = generator.device if generator is not None else xi.device
    noise = torch.randint(0, 1 << 16, xi.shape, generator=generator, device=device, dtype=torch.int32)
    return ((xi + noise.to(xi.device)) & -65536).view(torch.float32).to(torch.bfloat16)


class _Stats:
    """Device scalars of one step, turned into floats only by :meth:`MangoAdamW.compression_stats`."""

    def __init__(self) -> None:
        self.err: list[torch.Tensor] = []  # ||u - C(u)||^2 per compressed tensor
        self.tot: list[torch.Tensor] = []  # ||u||^2
        self.tail: list[torch.Tensor] = []  # ||G||^2 - ||P^T G||^2 (rank > 0) or 0
        self.energy: list[torch.Tensor] = []  # ||G||^2 of the matrix-state tensors
        self.samples: list[torch.Tensor] = []  # strided gradient entries for the kurtosis
        self.grad_sq: torch.Tensor | None = None
        self.deferred: list[Callable[[_Stats], None]] = []  # fused-path terms, computed when read
        self.done: dict[str, torch.Tensor] | None = None

    def finish(self, grad_sq: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """The step's statistics (computed on the first call, the same dict after)."""
        if self.done is not None:
            return self.done
        self.grad_sq = grad_sq
        for fn in self.deferred:
            fn(self)
        self.done = self._compute(self.grad_sq)
        return self.done

    def _compute(self, grad_sq: torch.Tensor | None) -> dict[str, torch.Tensor]:

        def ratio(num: list[torch.Tensor], den: list[torch.Tensor]) -> torch.Tensor:
            if not num:
                return torch.zeros(())
            d = torch.stack([x.sum() for x in den]).sum()
            n = torch.stack([x.sum() for x in num]).sum()
            return torch.where(d > 0, n / d.clamp_min(1e-38), torch.zeros_like(d))

        out = {
            "compression_error": ratio(self.err, self.tot),
            "spectral_tail": ratio(self.tail, self.energy).clamp(0.0, 1.0),
            "grad_norm": grad_sq.sqrt() if grad_sq is not None else torch.zeros(()),
        }
        if self.samples:
            x = torch.cat(self.samples).double()
            d = x - x.mean()
            m2 = d.square().mean()
            kurt = d.pow(4).mean() / m2.square().clamp_min(1e-300) - 3.0
            out["grad_kurtosis"] = torch.where(m2 > 0, kurt, torch.zeros_like(kurt))
        else:
            out["grad_kurtosis"] = torch.zeros(())
        return out


class _Items(NamedTuple):
    """Per-layout facts about the parameters a torch-path step updates (:meth:`MangoAdamW._items_info`)."""

    key: tuple[int, tuple[int, ...]]  # (layout, the parameters' ids)
    params: list[torch.Tensor]
    numels: list[int]  # of the local tensors
    limits: torch.Tensor  # (k,) fp32: a usable gradient's norm is below (_MATRIX_GRAD_LIMIT for matrices)
    sharded: bool  # a DTensor among them: local shards, whole-basis flags agreed over the ranks


class _DenseGroup:
    """Tensors of one parameter group whose step is plain AdamW on fp32 state (exact tensors, identity
    matrices: :meth:`MangoAdamW._dense_state`), stepped as ``torch.optim.AdamW``'s ``foreach``
    implementation steps them: one multi-tensor op per operation.

    On a CPU each ``torch._foreach_*`` op applies the single-tensor op to each tensor in turn, so every value
    is what :meth:`MangoAdamW._exact_step` (or the identity matrix step) computes, bit for bit (tested); what
    goes is the Python and dispatch overhead of ~8 ops per tensor, most of a small model's step. Step counts
    may differ between tensors (a skipped or newly trained tensor): the bias corrections are per tensor.
    """

    def __init__(self, group: dict[str, Any]) -> None:
        self.group = group
        self.params: list[torch.Tensor] = []
        self.grads: list[torch.Tensor] = []
        self.exp_avgs: list[torch.Tensor] = []
        self.exp_avg_sqs: list[torch.Tensor] = []
        self.steps: list[int] = []

    @staticmethod
    def of(parts: list[_DenseGroup], group: dict[str, Any]) -> _DenseGroup:
        """The part of ``parts`` for ``group``, appended if there is none yet (a few groups at most)."""
        for part in parts:
            if part.group is group:
                return part
        parts.append(_DenseGroup(group))
        return parts[-1]

    def add(self, p: torch.Tensor, g: torch.Tensor, mv: tuple[torch.Tensor, torch.Tensor], step: int) -> None:
        """One (local) parameter, its gradient, ``(m, v)`` and its step count after this step."""
        self.params.append(p)
        self.grads.append(g)
        self.exp_avgs.append(mv[0])
        self.exp_avg_sqs.append(mv[1])
        self.steps.append(step)

    def step(self) -> None:
        """The single-tensor step's operations in the same order, as multi-tensor ops (``lr`` a float)."""
        beta1, beta2 = self.group["betas"]
        lr, eps, wd = self.group["lr"], self.group["eps"], self.group["weight_decay"]
        if wd != 0:
            torch._foreach_mul_(self.params, 1 - lr * wd)
        torch._foreach_lerp_(self.exp_avgs, self.grads, 1 - beta1)
        torch._foreach_mul_(self.exp_avg_sqs, beta2)
        torch._foreach_addcmul_(self.exp_avg_sqs, self.grads, self.grads, value=1 - beta2)
        neg_step_size = [-(lr / (1 - beta1 ** float(t))) for t in self.steps]
        bias_correction2_sqrt = [(1 - beta2 ** float(t)) ** 0.5 for t in self.steps]
        denom = torch._foreach_sqrt(self.exp_avg_sqs)
        torch._foreach_div_(denom, bias_correction2_sqrt)
        torch._foreach_add_(denom, eps)
        torch._foreach_addcdiv_(self.params, self.exp_avgs, denom, neg_step_size)


def _grad_norms(grads: list[torch.Tensor]) -> torch.Tensor:
    """``(k,)`` fp32 norms of the gradients, each ``torch.linalg.vector_norm(g, dtype=float32)``, in one
    multi-tensor op."""
    return torch.stack(torch._foreach_norm(grads, 2, dtype=torch.float32))


def _strided(g: torch.Tensor, stride: int) -> torch.Tensor:
    """``g.reshape(-1)[::stride]`` (the statistics' sample of a gradient), one view op where ``g`` is
    contiguous: the step runs under ``no_grad``, so a view of the gradient carries no autograd history."""
    if g.is_contiguous():
        return g.as_strided((-(-g.numel() // stride),), (stride,))
    return g.reshape(-1)[::stride]


def _sum_sq(norms: torch.Tensor, idx: list[int]) -> torch.Tensor:
    """Sum of the squared ``norms[idx]`` (in ``idx`` order)."""
    sel = norms if len(idx) == norms.numel() else norms[idx]
    return sel.square().sum()


# The statistics' deferred terms (run when read), as partials of module functions: a closure would make the
# step's locals cells, which a compiled step cannot resume with after its graph break at the fused path.
def _fused_grad_sq(norm_sq: torch.Tensor, torch_sq: torch.Tensor | None) -> torch.Tensor:
    """The fused path's squared global gradient norm: its pre-pass's squared norms (non-finite ones, the
    skipped tensors, left out) and those of the tensors it left to the torch path."""
    sq = torch.where(torch.isfinite(norm_sq), norm_sq, 0.0).sum()
    return sq if torch_sq is None else sq + torch_sq.sum()


def _set_grad_sq(norms: torch.Tensor, idx: list[int], st: _Stats) -> None:
    st.grad_sq = _sum_sq(norms, idx)


def _add_energy(norms: torch.Tensor, idx: list[int], st: _Stats) -> None:
    st.energy.append(_sum_sq(norms, idx))  # ||G||^2 of identity matrices, from their gradient norms


class _Knobs(NamedTuple):
    """A setting's three knobs as plain values, what the torch-path step reads: torch 2.11's compiler breaks
    the graph at every attribute read of a pydantic model (``CompressionSetting``)."""

    rank: int
    bits: int
    gamma: float

    @classmethod
    def of(cls, s: CompressionSetting) -> _Knobs:
        return cls(s.rank, s.bits, s.gamma)


class _Progress:
    """What a step changes on the optimizer beyond its tensors, in one object of its own: torch 2.11's
    ``torch.compile`` traces the optimizer as a special variable that refuses attribute writes, so the step
    writes here instead of on ``self``.

    ``steps`` counts steps, ``skipped`` tensor updates skipped on the torch path, ``layout`` is bumped
    whenever a state slot is (re)allocated (the fused plan and ``items`` are rebuilt), ``last`` holds the
    last step's statistics until :meth:`MangoAdamW.compression_stats` reads them.
    """

    def __init__(self) -> None:
        self.steps = 0
        self.skipped = 0
        self.layout = 0
        self.last: tuple[_Stats, torch.Tensor | None] | None = None
        self.grad_sq: Callable[[], torch.Tensor] | None = None  # the last step's, MangoAdamW.last_grad_norm
        self.items: _Items | None = None  # MangoAdamW._items_info's cache


# ------------------------------------------------------------------------------------------ optimizer
class MangoAdamW(torch.optim.Optimizer):
    r"""AdamW with compressed optimizer state: rank-``r`` projection, ``b``-bit storage, error feedback.

    Per parameter the state is one of two kinds, fixed at the first step:

    * **exact** - 1-D tensors and tensors with fewer than ``min_compress_numel`` entries (biases, norms,
      small heads): plain fp32 AdamW state (8 bytes per value), whatever the setting.
    * **matrix** - everything else, viewed as ``(shape[0], -1)`` and transposed so that rows <= columns
      (``m x n``). Each step:

      1. *Basis* (``0 < rank < m``): ``P`` (``m x r``, orthonormal) from warm-started
         :func:`~client.compression.lowrank.power_iteration` of the error-fed gradient, refreshed every
         ``refresh_every`` steps. At a refresh the state is rotated onto the new basis: ``m <- R m``,
         ``e <- R e``, ``h <- R h`` with ``R = P_new^T P_old``, and ``v <- (R*R) v`` plus the mean of ``v``
         for the share of each new direction that the old basis did not cover.
      2. *Compressed gradient*: ``C = Q_b o project_r`` (``Q_b`` = quantize + dequantize at ``bits`` with
         stochastic rounding; identity at 32 bits) through
         :func:`~client.compression.feedback.shift_compress` with the error buffer ``e`` and, when
         ``gamma > 0``, the shift reference ``h``, both stored at ``bits``. With ``ef_scope="subspace"``
         (default) the feedback acts on the ``r x n`` coefficients ``P^T G``: ``e`` holds the rounding
         error and what the projection drops is dropped, as in GaLore. With ``ef_scope="full"`` the
         feedback wraps the whole ``C(u) = P Q_b(P^T u)``: ``e`` is ``m x n`` and also carries the
         dropped tail into later steps (and into the next basis).
      3. *Moments* of the compressed gradient (``r x n`` coefficients when projecting, else ``m x n``):
         ``m`` at ``bits`` (block-wise signed uniform code; NF4 on request at 4 bits); ``v`` factored into
         Adafactor row / column statistics (fp32, ``r + n`` values) when ``factor_second_moment=True``
         (the default at 2-3 bits until session 33),
         read as ``v = beta2 row col^T / mean(row) + (1 - beta2) c^2``: the history's rank-1 estimate
         (statistics before this step) plus this step's own ``c^2`` value by value, so a fused step makes
         one pass over ``c`` and folds the row / column means of ``c^2`` into the statistics after it;
         else ``sqrt(v)`` at 2-8 bits (uniform code, read back as ``|.|``: the code has no zero level,
         so no entry of ``sqrt(v)`` reads 0 and ``m / sqrt(v)`` stays bounded), bf16 at 16 and fp32 at 32.
      4. *Update*: ``p <- p (1 - lr wd) - s lr/bc1 * P [m / (sqrt(v / bc2) + eps)]`` (decoupled weight
         decay and bias corrections exactly as ``torch.optim.AdamW``; no ``P`` and ``s = 1`` at rank 0).
         ``s = proj_scale``, by default ``sqrt(m / r)``: ``P`` spreads the ``r x n`` normalized step over
         ``m`` rows, shrinking its RMS by ``sqrt(r / m)``; the scale gives it back AdamW's per-entry size,
         so one learning rate suits every rank (GaLore's ``alpha`` plays this role, hand-tuned).

    With ``setting = CompressionSetting.off()`` (rank 0, 32 bits, gamma 0) every step is
    ``torch.optim.AdamW``'s, operation for operation.

    **Memory** (:meth:`state_bytes`; AdamW holds 8 bytes per value). A ``128 x 512`` matrix at rank 8 /
    4 bits holds ``P`` (4 KiB fp32) and ``m``, ``e`` and ``sqrt(v)`` (``8 x 512`` at 4.5 bits each, 2.25 KiB
    each): 0.17 B per value, 1/48 of AdamW. At rank 0 the ``m x n`` states dominate: ~0.9, ~1.3, ~1.7 and
    ~3 B per value at 2, 3, 4 and 8 bits (``m``, ``e``, ``sqrt(v)``), ~1.1 B at 4 bits with the factored
    ``v``; ``gamma > 0`` adds one more state the size of ``m``; ``ef_scope="full"`` makes ``e`` ``m x n``.

    **Tuning guide.**

    * ``setting`` - the knob the controller turns (:meth:`apply_setting` between steps). Lower rank: less
      memory, more of the gradient outside the basis (the ``spectral_tail`` statistic). Fewer bits: ~4x
      more rounding error per bit removed (``compression_error``). ``gamma`` helps when consecutive
      gradients are alike (late training).
    * ``refresh_every`` (default 50) - steps between basis refreshes. Each costs two ``m x n x r`` products
      and one re-quantization of the rotated state. Shorter follows a drifting subspace but rotates (and
      blurs) the moments more often; sweep {10, 20, 50, 200} (GaLore uses 200 on long runs).
    * ``ef_beta`` (default 0.9) - decay of the error buffer: 1 is classic error feedback (nothing lost),
      lower forgets stale error (a rotated basis makes old error stale). Sweep {0.5, 0.9, 1}.
    * ``ef_scope`` (default ``"subspace"``) - see step 2. ``"full"`` loses nothing in the long run but
      costs an ``m x n`` buffer, and the accumulated tail tends to capture the next basis: on the byte-LM
      benchmark it trained worse (BENCHMARKS.md).
    * ``proj_scale`` (default ``None`` = ``sqrt(m / r)``, RMS-matched) - step multiplier of projected
      updates. 1 is GaLore without its ``alpha``: at AdamW's learning rate a rank-8 projection then
      barely moves the weights. Sweep {1, sqrt(m/r)/2, sqrt(m/r), 2 sqrt(m/r)}.
    * ``error_feedback`` - ``False`` drops ``e`` (plain biased compression, less memory).
    * ``power_iters`` (default 1) - subspace-iteration steps per refresh (the first basis gets one more).
    * ``factor_second_moment`` - ``None``: a full ``v`` at every width
      (:func:`~client.compression.sizes.auto_factors_second_moment`; factored at 4 bits until session 30 and
      at 2-3 bits until session 33: a full ``v`` trained lower and stepped faster on the GPU); ``True``
      forces the factors (less memory: ``4 (k + n)`` bytes), ``False`` the full ``v``.
    * ``quant_mode`` - quantizer mode of ``m``, ``e``, ``h`` and the gradient at 2-8 bits (``None``: the
      uniform code, :func:`~client.compression.quant.default_state_mode`; NF4 at 4 bits until session 30,
      when the uniform code trained as low on the GPU with a faster step; ``"nf4"`` at 4 bits only).
    * ``min_compress_numel`` (default 4096) - smaller tensors stay exact. Small models need a smaller value
      or nothing is compressed.

    * ``fused`` (default ``None``: on for CUDA tensors when triton is installed) - run the eligible tensors
      through :mod:`client.compression.fused`: every setting of the action grid (rank 0 and projected, 2-32
      bits, any ``gamma``) in a few multi-tensor Triton launches, the exact tensors and the identity
      setting (``CompressionSetting.off()``) in another, with no host sync; the basis refresh is batched
      per shape. Step times against fused AdamW are in BENCHMARKS.md ("Issue 12"). ``False`` forces the
      torch path; ``True`` also runs the kernels on CPU tensors under ``TRITON_INTERPRET=1`` (tests).
      ``strict=True`` always takes the torch path (it must raise before anything is updated).
    * **Fewest bytes within 1% of AdamW's loss**: rank 0, 4 bits, ``error_feedback=False,
      factor_second_moment=True`` keeps ``m`` (4-bit codes) and the factored ``v``: 0.58 B per value,
      within 1% of AdamW's validation loss in the GPT-2-sized convergence benchmark (BENCHMARKS.md).

    **State layout.** Full-matrix states (``m x n`` values: rank 0, or ``e`` with ``ef_scope="full"``) are
    stored in the parameter's shape and memory order, so element ``i`` of a stored state belongs to element
    ``i`` of the parameter (the fused kernels walk all three together); ``r x n`` states are stored as they
    are. ``state_dict`` version 2 (version 1 stored the canonical, possibly transposed, view).

    **FSDP2** (``fully_shard``, DTensor parameters): each rank steps its local shard, on the torch path. At
    rank 0 (and for exact tensors) the state is laid out for the shard, with no communication. A projected
    matrix keeps the basis of the *whole* matrix, computed and applied as one process would (up to float
    summation order), with ``P`` split by rows and the ``r x n`` states by columns over the ranks: a few
    batched collectives per step (:mod:`~client.compression.sharded_basis`; shapes that do not split
    evenly keep a basis per shard, whose ``r x n`` coefficients keep the full row width). At rank 0 and
    with the whole basis the per-rank state is the single process's divided by the world size (within a
    few percent). ``torch.distributed.checkpoint`` saves and loads the state through
    ``get_optimizer_state_dict`` / ``set_optimizer_state_dict`` (:mod:`~client.compression.sharded`).
    Statistics (``compression_stats``) are per rank; a non-finite gradient skips a whole-basis tensor on
    every rank (``docs/architecture.md``, "FSDP2").

    .. warning::
       On CPU the block quantizer runs on the torch path: at rank 0 and 2-8 bits the optimizer step costs
       several times AdamW's (it re-quantizes ``m x n`` states every step; a group's rank-0 matrices share
       each quantizer call, :mod:`~client.compression.rank0`). With a projection the states
       are ``r x n`` and the overhead is small. On CUDA the fused kernels cover the grid; what they leave
       to the torch path is listed in :mod:`client.compression.fused`.

    Example::

        opt = MangoAdamW(model.parameters(), lr=3e-3, setting=CompressionSetting(rank=8, bits=4))
        for x, y in batches:
            loss = model.loss(x, y); opt.zero_grad(); loss.backward(); opt.step()
        opt.apply_setting(CompressionSetting(rank=16, bits=8))   # between steps, state converted
        print(opt.state_bytes() / opt.dense_state_bytes(), opt.compression_stats())

    **Drop-in for torch.optim.AdamW.** The positional order is AdamW's (``params, lr, betas, eps,
    weight_decay, amsgrad``); everything MANGO adds is keyword-only. ``lr`` may be a one-element tensor
    (read once per group and step). ``maximize`` is supported (per group too); ``foreach`` is accepted and
    changes nothing (the multi-tensor path is ``fused``); ``amsgrad``, ``capturable`` and
    ``differentiable`` must stay ``False`` (the error says why and what to use instead). To hand it to the
    HF ``Trainer``: ``Trainer(..., optimizers=(MangoAdamW(model.parameters(), lr=...), None))``.

    **torch.compile.** ``torch.compile(opt.step)`` traces the torch path without graph breaks (tested at
    r0/b8; ``torch._dynamo.explain``): inside the compiled region a tensor ``lr`` stays a tensor (pass one, so
    a scheduler does not recompile the step), stochastic rounding draws from torch's default generator
    instead of the optimizer's (a ``torch.Generator`` cannot be traced; such a run is not reproducible from
    the optimizer's ``seed`` alone), and gradients are taken as finite (the non-finite skip needs a host
    sync: clip or use a ``GradScaler``; ``strict=True`` keeps the check and its graph break). The step
    count recompiles the step twice (empty state, first step), then stays dynamic.

    :param params: parameters, ``(name, parameter)`` pairs (``model.named_parameters()``: errors then name
        the parameter) or parameter groups. Groups may set ``lr``, ``betas``, ``eps``, ``weight_decay``,
        ``maximize``, ``foreach``, ``project=False`` to keep that group's matrices unprojected (rank 0 at
        the setting's bits, as GaLore leaves embeddings and output heads alone) and ``setting``: a
        :class:`~client.protocol.CompressionSetting` the group is *pinned* to (e.g.
        ``CompressionSetting.off()`` for embeddings, a higher rank for attention). A pinned group keeps its
        setting when the optimizer-wide one changes (:meth:`apply_setting` without ``group``, which is what
        the hook's policy calls); change it with ``apply_setting(s, group=i)``. Any other key is refused,
        naming it. Real floating-point tensors of at most 32 bits (float64 and complex parameters are
        refused with the reason).
    :param amsgrad: must be ``False`` (AMSGrad's running max of ``v`` has no compressed form).
    :param setting: the initial :class:`~client.protocol.CompressionSetting` (default rank 8, 4 bits).
    :param maximize: maximize the objective (the gradients are negated for the step, as torch.optim does).
    :param foreach: accepted for torch.optim compatibility; no effect.
    :param capturable: must be ``False`` (the step is not CUDA-graph safe).
    :param differentiable: must be ``False``.
    :param error_feedback: keep the error buffer ``e`` (``False``: plain biased compression, less memory).
    :param ef_scope: ``"subspace"`` or ``"full"`` (see step 2 and the tuning guide).
    :param stochastic_rounding: ``"auto"`` (default): to nearest at 8-bit codes, as bitsandbytes' and
        torchao's 8-bit optimizers round, and at 3-4 bits; stochastically at 2 bits, whose quantization steps
        are coarsest, and in bf16 (16 bits), whose rounding is coarser than ``v``'s per-step change
        (:func:`auto_rounding_is_stochastic`). At 8 bits on a GPU nearest rounding skips the step's random
        draws (less energy a step); the choice follows the setting, so a policy's change of width changes it
        too. ``True``: unbiased rounding of every stored state; ``False``: every state to nearest (the
        moments then stall once their per-step change is below half a quantization step).
    :param fused: the fused multi-tensor step (see the tuning guide): ``None`` auto (CUDA), ``True``,
        ``False``. It skips a tensor whose squared gradient norm is NaN/inf (also a finite gradient whose
        squared norm overflows float32) and still advances that tensor's step counter; the statistics'
        ``compression_error`` is estimated from one program in eight.
    :param strict: raise :class:`~client.compression.errors.MangoNonFiniteError` on a NaN/inf gradient
        instead of skipping that tensor's update (the skip leaves its state untouched and is counted).
    :param skip_nonfinite: ``True`` (default): a tensor whose gradient holds NaN/inf (or overflows, see
        ``fused``) keeps its parameter and states for the step, and ``skipped_steps`` counts it; the check
        costs one read of every gradient before the step (the fused path's pre-pass; the torch path's host
        sync). The fused path's rank-0 launches with a full ``v`` (8 bits and up, by default) check each
        tile of ``fused.matrix_tile(bits)`` values in the step itself instead: a failing tile keeps its
        values and block scales, the rest of the tensor steps, and the count is of tiles
        (``fused.SKIP_GRAIN``).
        ``False``: gradients are taken as finite, as ``torch.optim.AdamW`` takes them: nothing is checked or
        skipped, and what a NaN/inf does to the parameter and the states is not defined (the
        statistics leave such a tensor's norm out, as a skipped one's). Choose it where something upstream
        already guarantees finite gradients (a ``GradScaler``, which skips the whole step on inf, or
        clipping that checks); at rank 0 on a GPU it saves the pre-pass (BENCHMARKS.md, issue 12). On the
        fused path projected tensors keep the check (their statistics need the norm first). Cannot be
        combined with ``strict=True``.
    :param seed: seed of the optimizer's generator (random bases, stochastic rounding); part of the state.
    :param stats_sample: gradient entries sampled per step for ``grad_kurtosis``.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]] | Iterable[tuple[str, torch.Tensor]],
        lr: float | torch.Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        amsgrad: bool = False,
        *,
        setting: CompressionSetting | None = None,
        maximize: bool = False,
        foreach: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
        min_compress_numel: int = 4096,
        refresh_every: int = 50,
        power_iters: int = 1,
        error_feedback: bool = True,
        ef_scope: str = "subspace",
        ef_beta: float = 0.9,
        proj_scale: float | None = None,
        factor_second_moment: bool | None = None,
        quant_mode: str | None = None,
        stochastic_rounding: bool | Literal["auto"] = "auto",
        strict: bool = False,
        skip_nonfinite: bool = True,
        seed: int = 0,
        stats_sample: int = 4096,
        fused: bool | None = None,
    ) -> None:
        if isinstance(params, torch.Tensor):
            raise TypeError(
                "params must be an iterable of tensors or parameter-group dicts, got a single Tensor; "
                "pass model.parameters() or [tensor]"
            )
        if isinstance(amsgrad, CompressionSetting):
            raise TypeError(
                "the sixth positional argument is amsgrad, as in torch.optim.AdamW; setting is keyword-only: "
                "MangoAdamW(params, lr, betas, eps, weight_decay, setting=CompressionSetting(...))"
            )
        _check_lr("lr", lr)
        _check_number("eps", eps, lo=0.0)
        _check_number("weight_decay", weight_decay, lo=0.0)
        _check_betas(betas)
        _check_flags(
            {
                "amsgrad": amsgrad,
                "maximize": maximize,
                "capturable": capturable,
                "differentiable": differentiable,
            },
            where="",
        )
        if foreach is not None and not isinstance(foreach, bool):
            raise TypeError(f"foreach must be None, True or False, got {foreach!r}")
        if setting is None:
            setting = CompressionSetting(rank=8, bits=4, gamma=0.0)
        if not isinstance(setting, CompressionSetting):
            raise TypeError(
                f"setting must be a client.protocol.CompressionSetting, got {type(setting).__name__}; "
                "e.g. CompressionSetting(rank=8, bits=4, gamma=0.0)"
            )
        _check_int("min_compress_numel", min_compress_numel, lo=1)
        _check_int("refresh_every", refresh_every, lo=1)
        _check_int("power_iters", power_iters, lo=1)
        _check_int("seed", seed, lo=0)
        _check_int("stats_sample", stats_sample, lo=1)
        _check_number("ef_beta", ef_beta, lo=0.0, hi=1.0)
        if proj_scale is not None:
            _check_number("proj_scale", proj_scale, lo=0.0)
        if factor_second_moment not in (None, True, False):
            raise TypeError(f"factor_second_moment must be None, True or False, got {factor_second_moment!r}")
        if ef_scope not in ("subspace", "full"):
            raise ValueError(f"ef_scope={ef_scope!r}; choose 'subspace' or 'full'")
        if quant_mode not in (None, "uniform", "nf4", "aciq"):
            raise ValueError(f"quant_mode={quant_mode!r}; choose None, 'uniform', 'nf4' or 'aciq'")
        if fused is not None and not isinstance(fused, bool):
            raise TypeError(f"fused must be None, True or False, got {fused!r}")
        if not isinstance(skip_nonfinite, bool):
            raise TypeError(f"skip_nonfinite must be True or False, got {skip_nonfinite!r}")
        if strict and not skip_nonfinite:
            raise ValueError(
                "strict=True checks every gradient and skip_nonfinite=False checks none; choose one "
                "(strict raises on a NaN/inf gradient, skip_nonfinite=False lets it through as torch's AdamW)"
            )
        defaults = {
            "lr": lr,
            "betas": tuple(betas),
            "eps": eps,
            "weight_decay": weight_decay,
            "amsgrad": False,
            "maximize": bool(maximize),
            "foreach": foreach,
            "capturable": False,
            "differentiable": False,
        }
        super().__init__(params, defaults)  # validates each group through add_param_group
        self._setting = setting
        self.min_compress_numel = min_compress_numel
        self.refresh_every = refresh_every
        self.power_iters = power_iters
        self.error_feedback = bool(error_feedback)
        self.ef_scope = ef_scope
        self.ef_beta = float(ef_beta)
        self.proj_scale = None if proj_scale is None else float(proj_scale)
        self.factor_second_moment = factor_second_moment
        self.quant_mode = quant_mode
        # apply_setting converts same-shaped states together on a GPU (None: batched for CUDA tensors, where
        # each small op is a launch; on a CPU the batched path measured slower, benchmarks/switch_cpu.py);
        # True / False force it (False: tensor by tensor, the reference the batched path is tested against)
        self.batch_convert: bool | None = None
        # the fused refresh's device tail replayed from a CUDA graph on a GPU (captured at the plan's second
        # refresh; refresh.refresh_plan); False keeps the eager refresh (the reference the graph is tested on)
        self.graph_refresh = True
        # a steady fused step (no refresh) replayed from a CUDA graph of the plan on a GPU (captured at the
        # plan's second steady step; client.compression.step_graph); False keeps it eager (the reference)
        self.graph_step = True
        if not isinstance(stochastic_rounding, bool) and stochastic_rounding != "auto":
            raise TypeError(f"stochastic_rounding must be True, False or 'auto', got {stochastic_rounding!r}")
        self.stochastic_rounding: bool | Literal["auto"] = stochastic_rounding
        self.strict = bool(strict)
        self.skip_nonfinite = skip_nonfinite
        self.stats_sample = stats_sample
        first = next((p for g in self.param_groups for p in g["params"]), None)
        device = first.device if first is not None else torch.device("cpu")
        self._gen = torch.Generator(device=device)
        self._gen.manual_seed(seed)
        self._run = _Progress()
        self.fused = fused
        self._plan: fused_mod.Plan | None = None
        self._skip_dev: torch.Tensor | None = None  # device count of fused updates skipped (non-finite)
        log.info("MangoAdamW %s: %s", setting.label(), self._config())

    # ---------------------------------------------------------------------------------- public API
    @property
    def setting(self) -> CompressionSetting:
        """The compression setting in force (change it with :meth:`apply_setting`)."""
        return self._setting

    def dense_state_bytes(self) -> int:
        """What ``torch.optim.AdamW`` would hold: 8 bytes (two fp32 moments) per trainable value (this rank's
        shards under FSDP2, like :meth:`state_bytes`)."""
        return 8 * sum(_local(p).numel() for g in self.param_groups for p in g["params"] if p.requires_grad)

    def state_bytes(self) -> int:
        """Bytes of every state tensor held now: packed codes + scales, bf16/fp32 copies, bases, factored
        statistics, error buffers and references (0 before the first step; step counters excluded).
        Equals :meth:`expected_state_bytes` once every trainable parameter has stepped under the setting."""
        total = 0
        for st in self.state.values():
            for k, v in st.items():
                if k in _SLOT_KEYS or k in _TENSOR_KEYS:
                    total += _slot_bytes(v)
        return total

    def expected_state_bytes(self, setting: CompressionSetting | None = None) -> int:
        """The bytes :meth:`state_bytes` counts after a step with ``setting`` optimizer-wide (default: the one
        in force; pinned groups keep their own), from the parameters' (local shards') shapes and this
        optimizer's knobs: :func:`client.compression.sizes.param_state_bytes`, the byte model the surrogate
        and the service's shield use too."""
        total = 0
        for g in self.param_groups:
            s = g.get("setting") or setting or self._setting
            for p in g["params"]:
                if p.requires_grad:
                    lp = _local(p)
                    total += param_state_bytes(
                        lp.shape,
                        s,
                        min_compress_numel=self.min_compress_numel,
                        error_feedback=self.error_feedback,
                        factor_second_moment=self.factor_second_moment,
                        ef_scope=self.ef_scope,
                        project=bool(g.get("project", True)),
                        element_size=lp.element_size(),
                        full_shape=p.shape,
                        world_size=basis_mod.world_size(p),
                    ).total
        return total

    def compression_stats(self) -> CompressionStats:
        """Statistics of the last step (one device sync), for telemetry; see :class:`CompressionStats`.

        ``spectral_tail`` is 0 at rank 0; ``grad_kurtosis`` is measured on ``stats_sample`` strided
        gradient entries; ``skipped_steps`` counts every tensor update skipped so far.
        """
        keys = ("compression_error", "spectral_tail", "grad_kurtosis", "grad_norm")
        if self._run.last is not None:
            last = self._run.last[0].finish(self._run.last[1])
            vals = torch.stack([last[k].detach().double().cpu() for k in keys]).tolist()
        else:
            vals = [0.0] * len(keys)
        finite = {k: (float(v) if math.isfinite(v) else 0.0) for k, v in zip(keys, vals)}
        return CompressionStats(**finite, skipped_steps=self.skipped_updates())

    def last_grad_norm(self) -> torch.Tensor | None:
        """The global L2 norm of the gradients the last step read, a 0-d fp32 tensor on their device (no
        host sync), from the per-tensor norms the step computed anyway: no second pass over the gradients,
        and valid after ``zero_grad``. Tensors whose gradient was not finite (the step skipped them) are left
        out. ``None`` before the first step and after a sharded (FSDP2) step, whose norms are this rank's
        shards only. :class:`~client.hook.AdaptiveCompression` samples it every ``grad_norm_every`` steps."""
        fn = self._run.grad_sq
        return fn().sqrt() if fn is not None else None

    def skipped_updates(self) -> int:
        """Tensor updates skipped so far for non-finite gradients (reads the fused path's device count)."""
        return self._run.skipped + (int(self._skip_dev.item()) if self._skip_dev is not None else 0)

    @torch.no_grad()
    def apply_setting(self, setting: CompressionSetting | None, *, group: int | None = None) -> None:
        """Switch to ``setting`` between two steps, converting the state instead of resetting it.

        Without ``group`` this is the optimizer-wide setting (what the hook's policy turns): it applies to
        every parameter group without a pinned ``setting`` of its own; pinned groups are left alone. With
        ``group=i`` it pins group ``i`` to ``setting`` (``None`` unpins it: the group follows the
        optimizer-wide setting again); either way the group's state is converted.

        Kept, re-stored at the new width: ``m``, ``v`` (full <-> factored as the new width wants), the error
        buffer and, while ``gamma > 0``, the shift reference. On a rank change they are re-expressed in the
        new basis: a lower rank keeps the ``r'`` directions of the old basis that carry most of ``m``; a
        higher rank adds random directions and refreshes the basis at the next step; rank -> 0 expands them
        to the full matrix (``m = P m_r``); 0 -> rank takes ``P`` from ``m``'s dominant subspace
        (randomized SVD) and projects. Nothing is reset, so the bias corrections stay valid.

        On a GPU, tensors of one shape, rank and slot layout are converted together (:mod:`.convert`: a few
        batched ops per group instead of tens per tensor, each a launch); on a CPU tensor by tensor (batching
        measured slower there). ``batch_convert = True`` / ``False`` on the optimizer forces either (False is
        the reference the batched path is tested against).

        Cost: one load and one store of each state plus ``O(m n r)`` products for rank changes, i.e. the
        storage half of one optimizer step under the new setting (``python -m benchmarks.switch_cpu`` and
        ``mango bench gpu --parts switch`` measure it; BENCHMARKS.md has the figures).
        """
        if group is not None:
            n_groups = len(self.param_groups)
            if isinstance(group, bool) or not isinstance(group, int) or not 0 <= group < n_groups:
                raise ValueError(f"group={group!r} is not a parameter-group index in [0, {n_groups})")
            if setting is not None and not isinstance(setting, CompressionSetting):
                raise TypeError(
                    "setting must be a client.protocol.CompressionSetting or None, "
                    f"got {type(setting).__name__}"
                )
            target = self.param_groups[group]
            old = self._group_setting(target)
            target["setting"] = setting
            groups = [target]
        else:
            if not isinstance(setting, CompressionSetting):
                raise TypeError(
                    f"setting must be a client.protocol.CompressionSetting, got {type(setting).__name__}"
                )
            old, self._setting = self._setting, setting
            groups = [g for g in self.param_groups if g.get("setting") is None]
        new = self._group_setting(groups[0]) if groups else self._setting
        if new == old:
            return
        self._run.layout += 1
        plain = []
        for g in groups:
            for p in g["params"]:
                st = self.state.get(p)
                if st and st.get("full_basis"):
                    basis_mod.convert(self, p, st, new)  # gathers, converts the whole matrix, keeps its part
                else:
                    plain.append(p)
        self._convert_all(plain, new)
        where = "" if group is None else f" (param group {group})"
        log.info("MangoAdamW setting%s %s -> %s", where, old.label(), new.label() if new else "None")

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a parameter group (``torch.optim`` semantics), checked: known keys only (the error lists them),
        valid hyper-parameters, real floating-point parameters of at most 32 bits."""
        if isinstance(param_group, dict):
            unknown = sorted(set(param_group) - _GROUP_KEYS)
            if unknown:
                raise ValueError(_unknown_group_keys(unknown))
        index = len(self.param_groups)
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        try:
            _check_lr("lr", group["lr"])
            _check_number("eps", group["eps"], lo=0.0)
            _check_number("weight_decay", group["weight_decay"], lo=0.0)
            _check_betas(group["betas"])
            _check_flags({k: group[k] for k in _FLAG_KEYS}, where=f" (param group {index})")
            if not isinstance(group.get("project", True), bool):
                raise TypeError(f"project must be True or False, got {group['project']!r}")
            if "setting" in group:
                group["setting"] = _group_setting_value(group["setting"], index)
            names = group.get("param_names") or [None] * len(group["params"])
            for j, (p, name) in enumerate(zip(group["params"], names, strict=True)):
                _check_param(p, name if name is not None else f"param group {index}, parameter {j}")
        except (TypeError, ValueError):
            self.param_groups.pop()
            raise

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One AdamW step on every parameter with a gradient (see the class docstring).

        On a GPU with triton (``fused``, default on there) the eligible tensors run in a few multi-tensor
        Triton launches (:mod:`client.compression.fused`), with no host sync; the rest tensor by tensor.
        A tensor ``lr`` is read once per group and step (one host sync, as ``torch.optim`` with
        ``capturable=False``; inside ``torch.compile`` it stays a tensor: class docstring); ``maximize``
        negates the group's gradients in place for the step and restores them after.

        :raises MangoNonFiniteError: a gradient holds NaN/inf and ``strict=True`` (nothing was updated).
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        with _torch_optim_groups(self.param_groups):
            self._step()
        return loss

    def _step(self) -> None:
        """The step proper, on groups whose ``lr`` is a float and whose gradients point downhill."""
        items: list[tuple[int, torch.Tensor, dict[str, Any]]] = []
        index = 0
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    if p.grad.is_sparse:
                        raise TypeError("MangoAdamW does not support sparse gradients; use dense embeddings")
                    items.append((index, p, group))
                index += 1
        if not items:
            return
        sharded = any(_is_dtensor(p) for _, p, _ in items)
        # this rank's shard of each gradient under FSDP2 (no per-tensor check on an unsharded model)
        grads = [_local(p.grad) if sharded else p.grad for _, p, _ in items if p.grad is not None]
        # _fused_ok first: no call of the compiler-disabled _fused_step (a graph break) where it cannot apply
        if not sharded and self._fused_ok(items[0][1].device) and self._fused_step(items, grads):
            self._run.steps += 1
            return
        norms = _grad_norms(grads)  # (k,)
        finite = self._finite(items, grads, norms)
        stats = _Stats()
        self._torch_steps(items, finite, stats, norms)
        ok = [j for j, usable in enumerate(finite) if usable]
        if ok:  # the squared gradient norm, summed when the statistics are read: no work in the step itself
            stats.deferred.append(functools.partial(_set_grad_sq, norms, ok))
        self._run.last = (stats, None)
        self._run.grad_sq = None if sharded else functools.partial(_sum_sq, norms, ok)
        self._run.steps += 1

    def _finite(
        self,
        items: list[tuple[int, torch.Tensor, dict[str, Any]]],
        grads: list[torch.Tensor],
        norms: torch.Tensor,
    ) -> list[bool]:
        """Per item: is its gradient usable (the step's one host sync). Raises or counts the others.

        Usable means a finite fp32 norm, and for a compressed (matrix) tensor also
        ``norm * sqrt(numel) < _MATRIX_GRAD_LIMIT``. A finite but huge gradient (an entry of 1e20, whose
        square overflows fp32) cannot enter the second moment: torch's AdamW stores ``inf`` there and freezes
        the entry for good. In a compressed tensor even a smaller one overflows: a block quantizer gives
        every value of the block a magnitude up to the block's absmax, so a row's sum of squares can reach
        ``numel * absmax**2``; the bound keeps that, with room for error feedback and the shift, inside
        fp32. A tensor past it is skipped and counted like a NaN one (``strict=True`` raises before anything
        is updated), so parameters and states stay finite and no step stops half-way. No real gradient
        comes near it (a 1e8-entry matrix would need a norm above 2e14).
        """

        if not self.skip_nonfinite or (torch.compiler.is_compiling() and not self.strict):
            return [True] * len(items)  # no host sync (or a compiled step): gradients are taken as finite

        info = self._items_info(items)
        finite = (norms < info.limits.to(norms.device)).tolist()
        if info.sharded:
            finite = basis_mod.agree(self, items, finite)  # ranks sharing a whole-matrix basis skip alike
        bad = [(items[j][0], tuple(items[j][1].shape)) for j, ok in enumerate(finite) if not ok]
        if bad:
            if self.strict:
                raise MangoNonFiniteError(bad, self._run.steps)
            self._run.skipped += len(bad)
            log.warning(
                "skipping %d tensor update(s) with non-finite or overflowing gradients: %s", len(bad), bad[:4]
            )
        return [bool(ok) for ok in finite]

    def _items_info(self, items: list[tuple[int, torch.Tensor, dict[str, Any]]]) -> _Items:
        """What the torch path reads about ``items`` every step and what changes only with the layout: kept
        (on ``_run``) while the layout and the stepping parameters stay the same; inside ``torch.compile``
        computed afresh, no cache (and no closure: a compiled step resumes after its graph break at the fused
        path only where the frames it runs store no cell)."""
        params = [p for _, p, _ in items]
        compiling = torch.compiler.is_compiling()  # the compiler traces no id() of a tensor
        key = (self._run.layout, () if compiling else tuple(map(id, params)))
        cached = self._run.items
        if not compiling and cached is not None and cached.key == key:
            return cached

        numels = [_local(p).numel() for p in params]
        limits = [
            _MATRIX_GRAD_LIMIT / math.sqrt(max(n, 1)) if self._compressed(p) else math.inf
            for p, n in zip(params, numels)
        ]
        info = _Items(
            key=key,
            params=params,  # holds them: no id of the key is reused while it is cached
            numels=numels,
            limits=torch.tensor(limits, dtype=torch.float32, device=params[0].device if params else None),
            sharded=any(_is_dtensor(p) for p in params),
        )
        if not compiling:
            self._run.items = info
        return info

    def _compressed(self, p: torch.Tensor) -> bool:
        """Is ``p``'s state (or the kind :meth:`_init_state` will give it) a compressed matrix?"""
        default = "matrix" if p.ndim >= 2 and p.numel() >= self.min_compress_numel else "exact"
        return bool(self.state.get(p, {}).get("kind", default) == "matrix")  # .get: adds no entry

    def _torch_steps(
        self,
        items: list[tuple[int, torch.Tensor, dict[str, Any]]],
        finite: list[bool],
        stats: _Stats,
        norms: torch.Tensor,
    ) -> None:
        """The torch path for ``items`` whose ``finite`` flag is set (``norms``: their gradients' fp32 norms).

        Tensors with plain fp32 AdamW state (:meth:`_dense_state`) step together, group by group
        (:class:`_DenseGroup`), and so do quantized rank-0 matrices (:mod:`~client.compression.rank0`); the
        others tensor by tensor."""
        info = self._items_info(items)
        total_numel = sum(n for n, ok in zip(info.numels, finite) if ok)
        stride = max(1, math.ceil(total_numel / self.stats_sample))
        samples = []
        dense: list[_DenseGroup] = []  # one per parameter group
        identity = []  # items of the dense matrices: their energy (||G||^2) for the statistics
        whole_basis = []  # FSDP2 tensors projected on the whole matrix's basis: stepped together, after
        rank0: dict[Any, rank0_mod.Rank0Batch] = {}  # quantized rank-0 matrices, by batch key
        for j, ((_, p, group), ok) in enumerate(zip(items, finite)):
            if not ok:
                continue
            st = self.state[p]
            if not st:
                self._init_state(p, st, group)
            assert p.grad is not None
            # DTensor (FSDP2): the step works on this rank's shard of the parameter and its gradient
            lp, g = (_local(p), _local(p.grad)) if info.sharded else (p, p.grad)
            samples.append(_strided(g, stride))
            mv = self._dense_state(lp, g, st, group)
            if mv is not None:
                st["step"] += 1
                _DenseGroup.of(dense, group).add(lp, g, mv, st["step"])
                if st["kind"] == "matrix":
                    identity.append(j)
            elif st["kind"] == "exact":
                self._exact_step(lp, g, st, group)
            elif st.get("full_basis") and st["rank"] > 0:
                whole_basis.append((p, g, st, group))
            elif (key := rank0_mod.batch_key(self, lp, g, st, group)) is not None:
                rank0.setdefault(key, rank0_mod.Rank0Batch(group)).add(j, lp, g, st)
            else:
                keys = len(st)
                self._matrix_step(lp, g, st, group, stats)
                if len(st) != keys:  # a slot appeared or went: the tensor may now suit the fused plan
                    self._run.layout += 1
        for part in dense:
            part.step()
        for batch in rank0.values():
            batch.step(self, stats)
            stats.deferred.append(functools.partial(_add_energy, norms, batch.idx))  # ||G||^2, when read
        if identity:  # as the tensor-by-tensor step's G.square().sum(), from the norms: when read
            stats.deferred.append(functools.partial(_add_energy, norms, identity))
        if whole_basis:
            basis_mod.step(self, whole_basis, stats)
        if samples:  # a copy: the step keeps no reference to the gradients
            stats.samples.append(torch.cat(samples).float())

    @torch.compiler.disable
    def _fused_step(
        self, items: list[tuple[int, torch.Tensor, dict[str, Any]]], grads: list[torch.Tensor]
    ) -> bool:
        """Step through :mod:`client.compression.fused` when it applies; False leaves it to the torch path.

        Not traced by ``torch.compile`` (``torch.compiler.disable``): its host side plans launches from
        tensor addresses and its kernels are already fused, so a compiled ``opt.step`` runs it eagerly, one
        graph break, and compiles the rest (the torch-path tensors of a mixed plan run eagerly here too).
        """
        device = items[0][1].device
        if self.strict or not self._fused_ok(device):
            return False
        if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
            raise RuntimeError(
                "MangoAdamW.step cannot be recorded into a CUDA graph (capturable=False: its step counts "
                "and learning rate live on the host); it records its own steady step (opt.graph_step)"
            )
        # the parameters' addresses are part of the key: a moved or re-allocated parameter rebuilds the plan
        key = (self._run.layout, self._setting, tuple(p.data_ptr() for _, p, _ in items))
        plan = self._plan
        if plan is None or plan.key != key:
            if any(p.device != device for _, p, _ in items):
                return False
            plan = self._plan = fused_mod.build_plan(self, items, key)
        if not plan.groups or not fused_mod.grads_fit(plan, grads):
            return False
        # a basis refresh: batched per shape, into fp32 buffers of this step (its tail from a CUDA graph)
        due_launches = [g for g in plan.projected if any(refresh_mod.due(self, st) for st in g.states)]
        fresh = refresh_mod.refresh_plan(self, plan, due_launches, grads) if due_launches else {}
        refreshed = {i: addr for i, (_, addr) in fresh.items()}  # `fresh` keeps the buffers alive past run()
        stats = _Stats()
        torch_sq: torch.Tensor | None = None
        if plan.torch_items:
            sub = [items[j] for j in plan.torch_items]
            sub_grads = [grads[j] for j in plan.torch_items]
            sub_norms = _grad_norms(sub_grads)
            ok = self._finite(sub, sub_grads, sub_norms)
            self._torch_steps(sub, ok, stats, sub_norms)
            torch_sq = torch.where(torch.tensor(ok, device=device), sub_norms.square(), 0.0)
        if self._skip_dev is None or self._skip_dev.device != device:
            self._skip_dev = torch.zeros(1, dtype=torch.int32, device=device)
        # a steady step replays the plan's CUDA graph (step_graph); the norms are the plan's buffer, refilled
        # by every step (only the latest step's statistics are reachable: _run.last)
        out = step_graph.step(self, plan, self._skip_dev, refreshed)
        norm_sq = plan.norms
        assert norm_sq is not None
        stats.err += out["err"]
        stats.tot += out["tot"]
        stats.samples += out["samples"]
        matrix_idx = plan.matrix_idx
        proj = list(zip(out["proj_items"], out["proj_xsq"]))

        def deferred(st: _Stats) -> None:  # run by compression_stats: no work in the step itself
            fused_mod.zero_skipped_samples(norm_sq, out)  # before the kurtosis reads the samples
            sq = torch.where(torch.isfinite(norm_sq), norm_sq, 0.0)
            if matrix_idx:
                st.energy.append(sq[matrix_idx].sum())  # rank 0: no spectral tail
            for idx, xsq in proj:  # what the projection dropped: ||G||^2 - ||P^T G||^2
                tail = (sq[idx] - xsq).clamp_min(0.0).sum()
                st.tail.append(tail)
                st.err.append(tail)  # ||x - C(x)||^2 splits into the tail and the rounding error
                st.tot.append(tail)
            total = _fused_grad_sq(norm_sq, torch_sq)
            st.grad_sq = total if st.grad_sq is None else st.grad_sq + total

        stats.deferred.append(deferred)
        self._run.last = (stats, None)
        self._run.grad_sq = functools.partial(_fused_grad_sq, norm_sq, torch_sq)
        return True

    def _fused_ok(self, device: torch.device) -> bool:
        if self.fused is False:
            return False
        if self.fused is None and device.type != "cuda":
            return False
        return fused_mod.fused_available(device)

    # ---------------------------------------------------------------------------------- state kinds
    def _init_state(self, p: torch.Tensor, st: dict[str, Any], group: dict[str, Any]) -> None:
        """The kind follows the whole parameter's shape; a DTensor's state is laid out for its local shard."""
        self._run.layout += 1
        st["step"] = 0
        lp = _local(p)
        if p.ndim < 2 or p.numel() < self.min_compress_numel or lp.numel() == 0:
            st["kind"] = "exact"
            st["exp_avg"] = torch.zeros_like(lp, memory_format=torch.preserve_format)
            st["exp_avg_sq"] = torch.zeros_like(lp, memory_format=torch.preserve_format)
            return
        st["kind"] = "matrix"
        m, n = _canon_shape(lp)
        st["shape"] = (m, n)
        st["project"] = bool(group.get("project", True))
        st["rank"] = self._eff_rank(m, n, st["project"], self._group_knobs(group))
        st["basis_step"] = 0
        if basis_mod.eligible(p, self.ef_scope):  # FSDP2: the whole matrix's basis, its rank from the whole
            split = basis_mod.plan(p).split  # type: ignore[union-attr]
            st["full_basis"] = True
            st["rank"] = self._eff_rank(split.m, split.n, st["project"], self._group_knobs(group))

    @property
    def _setting(self) -> CompressionSetting:
        """The optimizer-wide setting; setting it also sets its plain knobs (``_wide``) for the step."""
        return self._wide_setting

    @_setting.setter
    def _setting(self, setting: CompressionSetting) -> None:
        self._wide_setting = setting
        self._wide = _Knobs.of(setting)

    def _group_setting(self, group: dict[str, Any]) -> CompressionSetting:
        """The setting a group's parameters are stepped with: its pinned one, else the optimizer-wide one."""
        pinned = group.get("setting")
        return pinned if pinned is not None else self._setting

    def _group_knobs(self, group: dict[str, Any]) -> _Knobs:
        """:meth:`_group_setting` as plain values (the step's reads; see :class:`_Knobs`)."""
        pinned = group.get("setting")
        return self._wide if pinned is None else _Knobs.of(pinned)

    def _eff_rank(
        self, m: int, n: int, project: bool = True, setting: CompressionSetting | _Knobs | None = None
    ) -> int:
        r = (setting or self._wide).rank if project else 0
        return r if 0 < r < min(m, n) else 0

    def _factored(self, setting: CompressionSetting | _Knobs | None = None) -> bool:
        if self.factor_second_moment is None:
            return auto_factors_second_moment((setting or self._wide).bits)
        return self.factor_second_moment

    def _identity(self, st: dict[str, Any], setting: CompressionSetting | _Knobs | None = None) -> bool:
        return st["rank"] == 0 and (setting or self._wide).bits == 32

    def _dense_state(
        self, p: torch.Tensor, g: torch.Tensor, st: dict[str, Any], group: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(m, v)`` of a tensor whose step is plain AdamW on fp32 state (:class:`_DenseGroup`), else None.

        Exact tensors, and matrices at the identity setting (rank 0, 32 bits, ``v`` not factored) whose
        ``m`` and ``v`` are fp32 tensors in the parameter's shape (zeros allocated here at the first step),
        with no leftover error buffer or shift reference to flush, an fp32 gradient and a contiguous fp32
        parameter (what the tensor-by-tensor step updates with one ``addcdiv_``). Not with a tensor ``lr``
        (a compiled step's): the tensor-by-tensor step's tensor arithmetic stays the reference there.
        """
        if isinstance(group["lr"], torch.Tensor):
            return None
        if st["kind"] == "exact":
            return st["exp_avg"], st["exp_avg_sq"]
        knobs = self._group_knobs(group)
        if not self._identity(st, knobs) or self._factored(knobs) or st.get("full_basis"):
            return None
        if p.dtype != torch.float32 or g.dtype != torch.float32 or not p.is_contiguous():
            return None
        if "e" in st or "h" in st or "v_row" in st:
            return None
        m, v = st.get("m"), st.get("v")
        if m is None and v is None:  # the first step: AdamW's zero state
            m = st["m"] = torch.zeros(p.shape, dtype=torch.float32, device=p.device)
            v = st["v"] = torch.zeros(p.shape, dtype=torch.float32, device=p.device)
            self._run.layout += 1  # slots appeared: the tensor may now suit the fused plan
        for x in (m, v):
            if not isinstance(x, torch.Tensor) or x.dtype != torch.float32 or x.shape != p.shape:
                return None
        return m, v  # type: ignore[return-value]

    def _exact_step(
        self, p: torch.Tensor, g: torch.Tensor, st: dict[str, Any], group: dict[str, Any]
    ) -> None:
        # torch.optim.AdamW's single-tensor path, operation for operation.
        beta1, beta2 = group["betas"]
        lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
        exp_avg, exp_avg_sq = st["exp_avg"], st["exp_avg_sq"]
        st["step"] += 1
        step = float(st["step"])
        if wd != 0:
            p.mul_(1 - lr * wd)
        exp_avg.lerp_(g, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        bias_correction1 = 1 - beta1**step
        bias_correction2 = 1 - beta2**step
        step_size = lr / bias_correction1
        bias_correction2_sqrt = bias_correction2**0.5
        denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
        _addcdiv(p, exp_avg, denom, -step_size)

    def _matrix_step(
        self,
        p: torch.Tensor,
        grad: torch.Tensor,
        st: dict[str, Any],
        group: dict[str, Any],
        stats: _Stats,
    ) -> None:
        beta1, beta2 = group["betas"]
        lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
        s = self._group_knobs(group)
        bits, gamma, r = s.bits, s.gamma, st["rank"]
        m_rows, n_cols = st["shape"]
        rows = r if r > 0 else m_rows  # rows of the moments: r coefficients or the full matrix
        G = _canon(grad if grad.dtype == torch.float32 else grad.float(), p)  # (m, n), a view when possible
        step = float(st["step"] + 1)
        # Everything is read first and written back at the end (32-bit slots come back as the stored
        # tensors themselves and are updated in place, as torch.optim.AdamW does).
        E = _get(st, "e", p)  # (rows, n) in subspace scope, else (m, n)
        m_slot = _get(st, "m", p)
        exp_avg = m_slot if m_slot is not None else _zeros(rows, n_cols, p)  # (rows, n)
        v_full, v_row, v_col = self._load_v(st, rows, n_cols, p, s)
        H = _get(st, "h", p) if gamma > 0 else None  # (rows, n) reference, compressor domain
        P = st.get("P")  # (m, r) or None
        energy = G.square().sum()
        stats.energy.append(energy)

        if self._identity(st, s):
            # Nothing to compress: plain AdamW on the matrix. A leftover error buffer (from a compressed
            # setting, converted to the full matrix) is flushed into this one gradient, as error feedback
            # with beta = 1 would.
            c = G if E is None else G + E
            stats.tail.append(energy.new_zeros(()))
            e_store = h_store = None
        else:
            sub_ef = r > 0 and self.ef_scope == "subspace"  # e lives with the moments, r x n
            if r > 0:
                due = P is None or st.get("refresh_pending", False)
                if due or st["step"] + 1 - st["basis_step"] >= self.refresh_every:
                    X = G  # the error-fed gradient
                    if E is not None:
                        X = G + (P @ E if sub_ef and P is not None else E)
                    P_new = self._new_basis(X, P, r)
                    if P is not None:
                        W = P_new.T @ P  # (r, r): old coefficients -> new
                        exp_avg = W @ exp_avg
                        v_full, v_row = _mix_v(v_full, v_row, W.square())
                        H = W @ H if H is not None else None
                        E = W @ E if sub_ef and E is not None else E
                    P = P_new
            basis = P if r > 0 else None

            def quantizer(u: torch.Tensor) -> torch.Tensor:
                out = self._roundtrip(u, bits, p)
                stats.err.append((u - out).square().sum())
                stats.tot.append(u.square().sum())
                return out

            if basis is None or sub_ef:
                # C = Q_b after the projection: feedback and shift act on the (rows, n) coefficients; what
                # the projection drops (the spectral tail) is dropped, as in GaLore.
                x = basis.T @ G if basis is not None else G  # (rows, n)
                tail = energy - x.square().sum() if basis is not None else energy.new_zeros(())
                c, e_new, _ = shift_compress(x, E, H, gamma, self.ef_beta, quantizer)  # (rows, n)
                stats.err.append(tail)  # ||x - C(x)||^2 splits into the tail and the rounding error
                stats.tot.append(tail)
            else:
                # ef_scope="full": C(u) = P Q_b(P^T u) on the whole matrix; e (m, n) keeps the tail too.
                captured: dict[str, torch.Tensor] = {}
                Pb: torch.Tensor = basis

                def compress(u: torch.Tensor) -> torch.Tensor:
                    a = Pb.T @ u  # (r, n)
                    aq = self._roundtrip(a, bits, p)
                    captured["a"] = aq
                    out = Pb @ aq  # (m, n)
                    stats.err.append((u - out).square().sum())
                    stats.tot.append(u.square().sum())
                    return out

                h_full = None if H is None else basis @ H
                _, e_new, _ = shift_compress(G, E, h_full, gamma, self.ef_beta, compress)
                c = captured["a"] if H is None else gamma * H + captured["a"]  # (r, n)
                tail = energy - (basis.T @ G).square().sum()
            stats.tail.append(tail)
            e_store = self._put(e_new, bits, p) if self.error_feedback else None
            h_store = self._put(c, bits, p) if gamma > 0 else None

        # Adam on c: for 32-bit slots these are torch.optim.AdamW's operations, in place.
        if wd != 0:
            p.mul_(1 - lr * wd)
        exp_avg.lerp_(c, 1 - beta1)
        bias_correction1 = 1 - beta1**step
        bias_correction2 = 1 - beta2**step
        step_size = lr / bias_correction1
        bias_correction2_sqrt = bias_correction2**0.5
        if v_full is not None:
            v_full.mul_(beta2).addcmul_(c, c, value=1 - beta2)
            sqrt_v = v_full.sqrt()
        else:
            assert v_row is not None and v_col is not None
            # the history's rank-1 estimate (the statistics before this step) plus this step's own c^2,
            # value by value: one pass over c (the fused kernel folds the row / column sums afterwards)
            sq = c.square().add_(_TINY)
            hist = torch.outer(v_row, v_col).div_(v_row.mean().clamp_min(_TINY))  # (rows, n)
            sqrt_v = hist.mul_(beta2).add_(sq, alpha=1 - beta2).sqrt_()
            v_row.mul_(beta2).add_(sq.mean(dim=1), alpha=1 - beta2)  # (rows,)
            v_col.mul_(beta2).add_(sq.mean(dim=0), alpha=1 - beta2)  # (n,)
        denom = (sqrt_v / bias_correction2_sqrt).add_(eps)
        basis = P if (r > 0 and not self._identity(st, s)) else None
        pc = _canon(p, p) if p.is_contiguous() else None  # in-place view of the parameter
        if basis is None and pc is not None:
            _addcdiv(pc, exp_avg, denom, -step_size)
        else:
            upd = exp_avg / denom  # (rows, n)
            full = basis @ upd if basis is not None else upd  # (m, n)
            if basis is not None:
                step_size *= self.proj_scale if self.proj_scale is not None else math.sqrt(m_rows / r)
            if pc is not None:
                _axpy(pc, full, -step_size)
            else:
                _axpy(p, _uncanon(full, p).to(p.dtype), -step_size)

        # commit
        st["step"] += 1
        st["m"] = self._put(exp_avg, bits, p)
        self._store_v(st, v_full, v_row, v_col, bits, p)
        for key, val in (("e", e_store), ("h", h_store)):
            if val is None:
                st.pop(key, None)
            else:
                st[key] = val
        if basis is not None and P is not st.get("P"):
            st["P"] = P
            st["basis_step"] = st["step"]
            st.pop("refresh_pending", None)

    # --------------------------------------------------------------------------------- storage
    def _stochastic(self, bits: int) -> bool:
        """Whether states stored at ``bits`` round stochastically (:attr:`stochastic_rounding`; ``"auto"``:
        :func:`auto_rounding_is_stochastic`)."""
        if self.stochastic_rounding == "auto":
            return auto_rounding_is_stochastic(bits)
        return bool(self.stochastic_rounding)

    def _mode(self, bits: int) -> str:
        """The quantizer mode of states stored at ``bits``: :attr:`quant_mode`, else
        :func:`~client.compression.quant.default_state_mode` (the one place the torch path, the fused plan
        and the checkpoint check ask)."""
        return self.quant_mode or default_state_mode(bits)

    def _store(self, x: torch.Tensor, bits: int) -> Slot:
        if bits == 32:
            return x.contiguous()
        gen = self._rng()
        if bits == 16:
            data = _bf16_stochastic(x, gen) if self._stochastic(16) else x.to(torch.bfloat16)
            return DenseState(data, torch.float32, 16)
        # the optimizer's states are finite by construction (a non-finite gradient skips the step first):
        # no per-tensor check, whose host sync a setting change would pay once per converted state
        return compress_state(
            x, bits, mode=self._mode(bits), stochastic=self._stochastic(bits), generator=gen,
            check_finite=False,
        )  # fmt: skip

    def _rng(self) -> torch.Generator | None:
        """The optimizer's generator; ``None`` (torch's default one) inside ``torch.compile``, which cannot
        trace a Generator object: a compiled step's rounding draws come from the default generator."""
        return None if torch.compiler.is_compiling() else self._gen

    def _put(self, x: torch.Tensor, bits: int, p: torch.Tensor) -> Slot:
        """:meth:`_store` a state of ``p``; a full-matrix one (``m x n`` values) in ``p``'s memory order."""
        return self._store(_to_param_order(x, p), bits)

    def _put_many(self, xs: list[torch.Tensor], bits: int, ps: list[torch.Tensor]) -> list[Slot]:
        """:meth:`_put` of one state of each of several same-shaped parameters: at 2-8 bits in one
        :func:`~client.compression.quant.quantize_many` call (each state keeps its own blocks; with
        stochastic rounding the draws come from one call instead of one per state), else one by one."""
        ordered = [_to_param_order(x, p) for x, p in zip(xs, ps, strict=True)]
        if bits == 32 or len(ordered) == 1:
            return [self._store(x, bits) for x in ordered]
        if bits == 16:
            return self._bf16_many(ordered)
        return list(
            quantize_many(
                ordered, bits, mode=self._mode(bits),
                stochastic=self._stochastic(bits), generator=self._rng(), check_finite=False,
            )
        )  # fmt: skip

    def _bf16_many(self, xs: list[torch.Tensor]) -> list[Slot]:
        """:meth:`_store` at 16 bits of same-shaped states, stacked: one rounding (and, stochastic, one draw)
        for all of them instead of four launches each; the slots are views of the one bf16 buffer."""
        stacked = torch.stack(xs)
        gen = self._rng()
        data = _bf16_stochastic(stacked, gen) if self._stochastic(16) else stacked.to(torch.bfloat16)
        return [DenseState(d, torch.float32, 16) for d in data.unbind(0)]

    def _roundtrip(self, x: torch.Tensor, bits: int, p: torch.Tensor) -> torch.Tensor:
        """``Q_b(x)``: what a ``bits``-wide channel delivers (identity at 32 bits), blocks as :meth:`_put`."""
        if bits == 32:
            return x
        return _from_param_order(_load(self._put(x, bits, p)), p)

    def _load_v(
        self,
        st: dict[str, Any],
        rows: int,
        n: int,
        p: torch.Tensor,
        setting: CompressionSetting | _Knobs | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """``(v_full, v_row, v_col)`` in fp32 (full xor factored, as the setting wants), zeros at first."""
        if "v_row" in st:
            v_row, v_col = st["v_row"], st["v_col"]
            v_full = None
        elif "v" in st:
            v_full = _from_param_order(_load_sqrt_v(st["v"]), p)
            v_row = v_col = None
        else:
            if self._factored(setting):
                return None, torch.zeros(rows, device=p.device), torch.zeros(n, device=p.device)
            return _zeros(rows, n, p), None, None
        return _refactor(v_full, v_row, v_col, self._factored(setting))

    def _store_v(
        self,
        st: dict[str, Any],
        v_full: torch.Tensor | None,
        v_row: torch.Tensor | None,
        v_col: torch.Tensor | None,
        bits: int,
        p: torch.Tensor,
    ) -> None:
        """Store one tensor's second moment (``v_full`` or the factors ``v_row``, ``v_col``)."""
        for key in ("v", "v_row", "v_col"):
            st.pop(key, None)
        if v_full is None:
            st["v_row"], st["v_col"] = v_row, v_col  # fp32: r + n (or m + n) values
        elif bits == 32:
            st["v"] = _to_param_order(v_full, p).contiguous()
        elif bits == 16:
            st["v"] = self._put(v_full, 16, p)
        else:
            st["v"] = quantize(_to_param_order(v_full.sqrt(), p), bits, **self._v_code(bits))

    def _v_code(self, bits: int) -> dict[str, Any]:
        """How both stores code a quantized second moment: ``sqrt(v)`` on the uniform code (no zero level, so
        ``|dequantized| > 0`` in every block), rounded as the optimizer rounds at ``bits``; the step has
        checked finiteness already."""
        return {
            "mode": "uniform", "stochastic": self._stochastic(bits), "generator": self._rng(),
            "check_finite": False,
        }  # fmt: skip

    def _store_v_group(
        self,
        sts: list[dict[str, Any]],
        v_full: torch.Tensor | None,
        v_row: torch.Tensor | None,
        v_col: torch.Tensor | None,
        bits: int,
        ps: list[torch.Tensor],
    ) -> None:
        """:meth:`_store_v` of same-shaped parameters (stacked: ``v_full [k, ...]`` or ``v_row``, ``v_col``):
        a bf16 ``v`` or a quantized ``sqrt(v)`` in one call for the group (:meth:`_put_many`,
        :func:`~client.compression.quant.quantize_many`), the factors and fp32 tensor by tensor."""
        if v_full is None or bits == 32:
            for j, (st, p) in enumerate(zip(sts, ps, strict=True)):
                parts = [None if x is None else x[j] for x in (v_full, v_row, v_col)]
                self._store_v(st, parts[0], parts[1], parts[2], bits, p)
            return
        if bits == 16:
            slots = self._put_many(list(v_full), 16, ps)
        else:
            roots = [_to_param_order(v, p) for v, p in zip(v_full.sqrt(), ps, strict=True)]  # one sqrt
            slots = list(quantize_many(roots, bits, **self._v_code(bits)))
        for st, q in zip(sts, slots, strict=True):
            for key in ("v_row", "v_col"):
                st.pop(key, None)
            st["v"] = q

    def _new_basis(self, X: torch.Tensor, P_old: torch.Tensor | None, r: int) -> torch.Tensor:
        if P_old is None or P_old.shape[1] != r:
            q0 = init_q(X.shape[1], r, self._gen, device=X.device)
            P, _ = power_iteration(X, q0, iters=self.power_iters + 1)
        else:
            P, _ = power_iteration(X, X.T @ P_old, iters=self.power_iters)  # warm start from P_old
        return P.contiguous()  # row-major: the fused kernels read it in place

    def _top_subspace(self, a: torch.Tensor, r: int) -> torch.Tensor:
        """Orthonormal ``(m, r)`` basis of ``a``'s dominant left subspace: randomized SVD (Halko et al.):
        subspace iteration with ``r + 8`` columns, then the top ``r`` of the small projected matrix."""
        k = min(r + 8, min(a.shape))
        q0 = init_q(a.shape[1], k, self._gen, device=a.device, orthonormal=False)
        pk, _ = power_iteration(a, q0, iters=2)  # (m, k)
        return pk @ top_left_singular(pk.T @ a, r)

    def _convert_all(self, params: list[torch.Tensor], s: CompressionSetting) -> None:
        """Convert every matrix state of ``params`` to ``s``: batched per shape / rank / layout group
        (:mod:`~client.compression.convert`), tensor by tensor for the odd ones (``batch_convert=False``:
        all tensor by tensor, the reference the batched path is tested against)."""
        groups: dict[tuple[Any, ...], list[tuple[torch.Tensor, dict[str, Any]]]] = {}
        singles: list[tuple[torch.Tensor, dict[str, Any]]] = []
        for param in params:
            st = self.state.get(param)
            if not st or st.get("kind") != "matrix":
                continue
            p = _local(param)
            batched = p.is_cuda if self.batch_convert is None else self.batch_convert
            key = convert_mod.batch_key(p, st) if batched else None
            if key is None:
                singles.append((p, st))
            else:
                groups.setdefault(key, []).append((p, st))
        for members in groups.values():
            ps, sts = [p for p, _ in members], [st for _, st in members]
            if len(members) > 1 and convert_mod.batchable(sts):
                convert_mod.convert_group(self, ps, sts, s)
            else:
                singles.extend(members)
        for p, st in singles:
            self._convert(p, st, s)

    def _convert(self, p: torch.Tensor, st: dict[str, Any], s: CompressionSetting) -> None:
        """Re-express one matrix state under setting ``s`` (see :meth:`apply_setting`)."""
        m_rows, n_cols = st["shape"]
        r_old, r_new = st["rank"], self._eff_rank(m_rows, n_cols, st.get("project", True), s)
        if "m" not in st:  # initialized, never stepped: nothing to convert
            st["rank"] = r_new
            return
        exp_avg = _get(st, "m", p)  # (r_old or m, n)
        assert exp_avg is not None
        v_full, v_row, v_col = self._load_v(st, exp_avg.shape[0], n_cols, p, s)
        E = _get(st, "e", p)
        H = _get(st, "h", p)
        P = st.get("P")
        if r_new != r_old:
            P_new: torch.Tensor | None
            if r_old > 0 and 0 < r_new < r_old:
                assert P is not None
                # keep the r_new directions of the old basis that carry most of the first moment
                A = top_left_singular(exp_avg, r_new)  # (r_old, r_new)
                P_new = P @ A  # (m, r_new), orthonormal
                W = A.T  # (r_new, r_old)
            elif r_old > 0 and r_new > r_old:
                assert P is not None
                extra = torch.randn(m_rows, r_new - r_old, generator=self._gen, device=self._gen.device)
                # keeps span(P) first (the factor is triangular)
                P_new = orthonormalize_batched(torch.cat([P, extra.to(P.device)], dim=1))
                W = P_new.T @ P  # (r_new, r_old)
                st["refresh_pending"] = True  # the random directions are replaced at the next step
            elif r_old > 0:  # rank r -> the full matrix
                assert P is not None
                P_new = None
                W = P  # (m, r_old)
            else:  # full matrix -> rank r_new: the first moment's dominant subspace
                P_new = self._top_subspace(exp_avg, r_new)
                W = P_new.T  # (r_new, m)
                st["basis_step"] = st["step"]
            exp_avg = W @ exp_avg
            H = W @ H if H is not None else None
            if E is not None and self.ef_scope == "subspace":
                E = W @ E  # the buffer lives with the moments (full matrix at rank 0)
            v_full, v_row = _mix_v(v_full, v_row, W.square())
            P = P_new
            st["rank"] = r_new
            st.pop("P", None)
            if P is not None:
                st["P"] = P.contiguous()
            if r_new == 0:
                st.pop("refresh_pending", None)
        v_full, v_row, v_col = _refactor(v_full, v_row, v_col, self._factored(s))
        self._store_group(
            [p], [st], s, exp_avg[None], _one(v_full), _one(v_row), _one(v_col), _one(E), _one(H)
        )

    def _store_group(
        self,
        ps: list[torch.Tensor],
        sts: list[dict[str, Any]],
        s: CompressionSetting,
        exp_avg: torch.Tensor,
        v_full: torch.Tensor | None,
        v_row: torch.Tensor | None,
        v_col: torch.Tensor | None,
        E: torch.Tensor | None,
        H: torch.Tensor | None,
    ) -> None:
        """Store the converted fp32 states of parameters of one shape and rank (stacked canonical views,
        ``[k, ...]``) under setting ``s``: each state kind in one call at 2-8 bits (:meth:`_put_many`), in the
        order m, v, e, h."""
        bits = s.bits
        identity = self._identity(sts[0], s)  # one rank for the group: the same answer for every tensor
        for st, m in zip(sts, self._put_many(list(exp_avg), bits, ps), strict=True):
            st["m"] = m
        self._store_v_group(sts, v_full, v_row, v_col, bits, ps)
        for st in sts:
            st.pop("e", None)
            st.pop("h", None)
        # A buffer the new setting needs and the old one had not (an error buffer after 32 bits, the shift's
        # reference after gamma = 0) starts as zeros, which is what a first step without it reads: stored now,
        # the next step finds every slot in place and takes the fused launches instead of the torch path.
        if not identity and self.error_feedback and E is None:
            full = sts[0]["rank"] > 0 and self.ef_scope != "subspace"  # e on the whole (m, n) matrix
            E = exp_avg.new_zeros(len(sts), *sts[0]["shape"]) if full else torch.zeros_like(exp_avg)
        if not identity and s.gamma > 0 and H is None:
            H = torch.zeros_like(exp_avg)
        if E is not None and self.error_feedback:
            # kept at full precision when the new setting compresses nothing: flushed at the next step
            for st, e in zip(sts, self._put_many(list(E), 32 if identity else bits, ps), strict=True):
                st["e"] = e
        if H is not None and s.gamma > 0 and not identity:
            for st, h in zip(sts, self._put_many(list(H), bits, ps), strict=True):
                st["h"] = h

    # ----------------------------------------------------------------------------- (de)serialization
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume bit-for-bit: per-parameter state (copies; quantized states as plain
        dicts of tensors, loadable with ``torch.load(weights_only=True)``), the groups, the setting, the
        knobs, the generator state and the counters.

        With DTensor parameters (FSDP2) the state's tensors are DTensors and the optimizer-wide ``mango``
        section rides in ``param_groups[0]`` (``get_optimizer_state_dict`` keeps only ``state`` and
        ``param_groups``), so ``torch.distributed.checkpoint`` saves every rank's shard: see
        :mod:`~client.compression.sharded`."""
        sd = super().state_dict()
        params = [p for g in self.param_groups for p in g["params"]]
        index = {id(p): i for i, p in enumerate(params)}
        state: dict[int, dict[str, Any]] = {}
        for p, st in self.state.items():
            state[index[id(p)]] = {k: _pack(v) for k, v in st.items()}
            if _is_dtensor(p):  # FSDP2: DTensors, so that DCP saves every rank's shard (sharded.py)
                state[index[id(p)]] = shard_entry(state[index[id(p)]], p, f"parameter {index[id(p)]}")
        sd["state"] = state
        for g in sd["param_groups"]:  # plain dicts: loadable with torch.load(weights_only=True)
            if isinstance(g.get("setting"), CompressionSetting):
                g["setting"] = g["setting"].model_dump()
        meta: dict[str, Any] = {
            "version": _STATE_VERSION,
            "setting": self._setting.model_dump(),
            "generator": self._gen.get_state(),
            "skipped": self.skipped_updates(),
            "steps": self._run.steps,
            "config": self._config(),
            "param_shapes": [list(q.shape) for g in self.param_groups for q in g["params"]],
        }
        mesh = next((p.device_mesh for p in params if _is_dtensor(p)), None)  # type: ignore[attr-defined]
        if mesh is None:
            sd["mango"] = meta
            return sd
        # FSDP2: get_optimizer_state_dict keeps only "state" and "param_groups", so the optimizer-wide
        # section rides in the first group; the generator and skip count differ per rank
        meta["generator"] = per_rank(meta["generator"], mesh)
        meta["skipped"] = per_rank(torch.tensor([meta["skipped"]], dtype=torch.int64), mesh)
        sd["param_groups"][0]["mango"] = meta
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output (tensors move to each parameter's device, dtypes are kept).

        The saved knobs (``refresh_every``, ``ef_beta``, ...) replace the constructor's, with a warning when
        they differ: a resumed run must compute what the original would have.

        Under FSDP2 it also takes what ``set_optimizer_state_dict`` hands over after a
        ``torch.distributed.checkpoint`` load (state keyed by parameter names, DTensor leaves,
        :mod:`~client.compression.sharded`), on the same world size and sharding as the save.

        :raises ValueError: before anything changes, naming the first mismatch, when ``state_dict`` is not a
            MangoAdamW state dict, misses an entry, or belongs to another model (group or parameter counts,
            a parameter's shape, a state tensor's shape).
        """
        state_dict = _plain_state_dict(state_dict)
        meta, saved = _check_state_dict(state_dict)
        params = [p for g in self.param_groups for p in g["params"]]
        _check_against_params(state_dict, meta, saved, self.param_groups, params)
        try:  # everything that can fail runs before the first change
            setting = CompressionSetting(**meta["setting"])
            saved_gen = meta["generator"]
            gen_state = _generator_state_for(
                self._gen, saved_gen.cpu() if isinstance(saved_gen, torch.Tensor) else saved_gen
            )
            unpacked = {
                params[int(i)]: {k: _unpack(v, params[int(i)].device) for k, v in entry.items()}
                for i, entry in saved.items()
            }
            skipped, steps = int(meta["skipped"]), int(meta["steps"])
            pinned = [
                _group_setting_value(g.get("setting"), i) for i, g in enumerate(state_dict["param_groups"])
            ]
        except (TypeError, ValueError, KeyError, RuntimeError) as exc:
            raise ValueError(f"state_dict holds an invalid value: {type(exc).__name__}: {exc}") from None
        cfg = meta["config"]
        super().load_state_dict({"state": {}, "param_groups": state_dict["param_groups"]})
        for g, pin in zip(self.param_groups, pinned):
            if "setting" in g:
                g["setting"] = pin
        for p, st in unpacked.items():
            self.state[p] = st
        self._setting = setting
        self._gen.set_state(gen_state)
        self._run.skipped = skipped
        self._skip_dev = None
        self._run.layout += 1
        self._run.steps = steps
        if cfg != self._config():
            log.warning("load_state_dict: knobs %s replace %s", cfg, self._config())
        for k, v in cfg.items():
            setattr(self, k, v)
        self._run.last = self._run.grad_sq = None
        self._match_layout()

    @torch.no_grad()
    def _match_layout(self) -> None:
        """Convert the loaded matrix states laid out otherwise than the knobs now ask, with a warning that
        names how many: a second moment factored where the rule stores it whole or back, or codes of another
        quantizer mode than ``quant_mode`` gives. A checkpoint written under older defaults (until session 30
        ``None`` meant NF4 codes and a factored ``v`` at 4 bits) then resumes with its states re-expressed as
        :meth:`apply_setting` converts them, nothing reset."""
        stale = 0
        for g in self.param_groups:
            s = self._group_setting(g)
            mode = self._mode(s.bits)
            plain = []
            for p in g["params"]:
                st = self.state.get(p)
                if not st or st.get("kind") != "matrix":
                    continue
                codes = [st[k] for k in ("m", "e", "h") if isinstance(st.get(k), QuantizedTensor)]
                if ("v_row" in st) == self._factored(s) and all(q.mode == mode for q in codes):
                    continue
                stale += 1
                if st.get("full_basis"):
                    basis_mod.convert(self, p, st, s)
                else:
                    plain.append(p)
            self._convert_all(plain, s)
        if stale:
            self._run.layout += 1
            warnings.warn(
                f"load_state_dict: {stale} tensor(s) held states laid out otherwise than "
                f"factor_second_moment={self.factor_second_moment!r} and quant_mode={self.quant_mode!r} ask "
                f"at {self._setting.label()} (the checkpoint predates the current defaults); converted, "
                "nothing reset",
                stacklevel=3,
            )

    def _config(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in _CONFIG_KEYS}


_CONFIG_KEYS = (
    "min_compress_numel",
    "refresh_every",
    "power_iters",
    "error_feedback",
    "ef_scope",
    "ef_beta",
    "proj_scale",
    "factor_second_moment",
    "quant_mode",
    "stochastic_rounding",
)
#: State entries that hold bytes (slots may be quantized; tensors are fp32).
_SLOT_KEYS = frozenset({"m", "v", "e", "h"})
_TENSOR_KEYS = frozenset({"exp_avg", "exp_avg_sq", "P", "v_row", "v_col"})


# ------------------------------------------------------------------------------------------- helpers
def _generator_state_for(gen: torch.Generator, state: Any) -> torch.Tensor:
    """The saved generator ``state`` checked against ``gen``'s device kind (CPU and CUDA states differ).

    A state saved on another device kind (a CPU checkpoint resumed on a GPU, or back) cannot be set: the
    generator is then re-seeded from the saved bytes, with a warning (stochastic rounding and random bases
    continue from a new, deterministic stream; the rest of the state is exact).

    :raises RuntimeError: when ``state`` is not a generator state of any device kind.
    """
    if not isinstance(state, torch.Tensor) or state.dtype != torch.uint8:
        raise TypeError(f"generator state must be a uint8 tensor, got {type(state).__name__}")
    probe = torch.Generator(device=gen.device)
    try:
        probe.set_state(state)
        return state
    except RuntimeError:
        cpu_size = torch.Generator().get_state().numel()
        cuda_size = 16  # Philox seed and offset, 8 bytes each
        on_cpu = gen.device.type == "cpu"
        if state.numel() != (cuda_size if on_cpu else cpu_size):
            raise
    seed = int.from_bytes(hashlib.sha256(state.numpy().tobytes()).digest()[:8], "little") >> 1
    warnings.warn(
        f"the optimizer's generator state was saved on another device kind; re-seeding the {gen.device.type} "
        "generator from it (stochastic rounding continues on a new deterministic stream)",
        stacklevel=3,
    )
    probe.manual_seed(seed)
    return probe.get_state()


def _plain_state_dict(sd: Any) -> Any:
    """``sd`` as :meth:`MangoAdamW.state_dict` writes it for plain tensors: the ``mango`` section at the top
    (under FSDP2 it rides in the first group), state keyed by parameter index (DCP's
    ``set_optimizer_state_dict`` hands fully-qualified names, in the groups' order) and each rank's tensors
    taken out of their DTensors. A shallow copy; anything else is left for the checks to name."""
    if not isinstance(sd, dict) or not isinstance(sd.get("param_groups"), list):
        return sd
    sd = dict(sd)
    groups = [dict(g) if isinstance(g, dict) else g for g in sd["param_groups"]]
    if "mango" not in sd and groups and isinstance(groups[0], dict) and "mango" in groups[0]:
        sd["mango"] = groups[0].pop("mango")
    sd["param_groups"] = groups
    if "mango" in sd:
        sd["mango"] = unshard(sd["mango"])
    if isinstance(sd.get("state"), dict):
        order: dict[Any, int] = {}
        for g in groups:
            for k in g.get("params", ()) if isinstance(g, dict) else ():
                order.setdefault(k, len(order))
        sd["state"] = {order.get(k, k): unshard(v) for k, v in sd["state"].items()}
    return sd


def _check_state_dict(sd: Any) -> tuple[dict[str, Any], dict[Any, Any]]:
    """The ``mango`` section and ``state`` of a MangoAdamW state dict; ``ValueError`` names what is absent."""
    if not isinstance(sd, dict) or "mango" not in sd:
        raise ValueError(
            "state_dict is not a MangoAdamW state dict (no 'mango' section); "
            "it must come from MangoAdamW.state_dict()"
        )
    meta = sd["mango"]
    if not isinstance(meta, dict) or meta.get("version") != _STATE_VERSION:
        version = meta.get("version") if isinstance(meta, dict) else None
        raise ValueError(
            f"state_dict version {version} is not {_STATE_VERSION}: version 2 stores "
            "full-matrix states in the parameter's memory order; resume a version-1 checkpoint with "
            "the release that wrote it"
        )
    missing = [k for k in ("state", "param_groups") if k not in sd]
    missing += [f"mango.{k}" for k in ("setting", "generator", "skipped", "steps", "config") if k not in meta]
    if missing:
        raise ValueError(f"state_dict is missing {missing}; it must come from MangoAdamW.state_dict()")
    if not isinstance(sd["state"], dict) or not isinstance(sd["param_groups"], list):
        raise ValueError("state_dict['state'] must be a dict and state_dict['param_groups'] a list")
    unknown = sorted(set(meta["config"]) - set(_CONFIG_KEYS)) if isinstance(meta["config"], dict) else None
    if unknown is None or unknown:
        raise ValueError(
            f"state_dict mango.config holds unknown knobs {unknown}; expected {list(_CONFIG_KEYS)}"
        )
    return meta, sd["state"]


def _check_against_params(
    sd: dict[str, Any],
    meta: dict[str, Any],
    saved: dict[Any, Any],
    groups: list[dict[str, Any]],
    params: list[torch.Tensor],
) -> None:
    """``ValueError`` naming the first way ``sd`` does not fit these parameter groups (another model)."""
    counts = [len(g["params"]) for g in groups]
    saved_counts = [len(g.get("params", ())) if isinstance(g, dict) else -1 for g in sd["param_groups"]]
    if saved_counts != counts:
        raise ValueError(
            f"state_dict is for another model: parameters per group {saved_counts}, "
            f"this optimizer has {counts}"
        )
    shapes = meta.get("param_shapes")  # absent in checkpoints written before it was added
    if shapes is not None:
        for i, (old_shape, p) in enumerate(zip(shapes, params)):
            if tuple(old_shape) != tuple(p.shape):
                raise ValueError(
                    f"state_dict is for another model: parameter {i} had shape {tuple(old_shape)}, "
                    f"this optimizer's has {tuple(p.shape)}"
                )
    for key, entry in saved.items():
        try:
            i = int(key)
        except (TypeError, ValueError):
            raise ValueError(f"state_dict state key {key!r} is not a parameter index") from None
        if not 0 <= i < len(params) or not isinstance(entry, dict):
            raise ValueError(f"state_dict has state for parameter {i}; this optimizer has {len(params)}")
        p = _local(params[i])  # a DTensor's state is its local shard's
        where = f"state_dict state of parameter {i} (shape {tuple(p.shape)})"
        kind = entry.get("kind")
        if kind == "exact":
            for k in ("exp_avg", "exp_avg_sq"):
                if saved_shape(entry.get(k)) != tuple(p.shape):
                    raise ValueError(f"{where}: {k} has shape {saved_shape(entry.get(k))}; another model's?")
            continue
        if kind != "matrix":
            raise ValueError(f"{where}: kind {kind!r} is neither 'exact' nor 'matrix'")
        if entry.get("full_basis"):  # FSDP2, the whole matrix's basis: this rank's share of its state
            basis_mod.check_entry(params[i], entry, where)
            if entry.get("rank"):
                continue
        if p.ndim < 2 or tuple(entry.get("shape", ())) != _canon_shape(p):
            raise ValueError(f"{where}: saved as a {entry.get('shape')} matrix; another model's?")
        m, n = _canon_shape(p)
        r = entry.get("rank")
        if not isinstance(r, int) or not 0 <= r <= m:
            raise ValueError(f"{where}: rank {r!r} is not in [0, {m}]")
        slot: set[tuple[int, ...]] = {tuple(p.shape)} | ({(r, n)} if r > 0 else set())
        expected: dict[str, set[tuple[int, ...]]] = {"P": {(m, r)}, "v_row": {(r or m,)}, "v_col": {(n,)}}
        for k, v in entry.items():
            if k in _SLOT_KEYS or k in expected:
                ok = expected.get(k, slot)
                if saved_shape(v) not in ok:
                    raise ValueError(f"{where}: {k} has shape {saved_shape(v)}, expected one of {sorted(ok)}")


def _one(x: torch.Tensor | None) -> torch.Tensor | None:
    """``x`` as a stack of one (``[1, ...]``, a view), for the group routines; ``None`` stays ``None``."""
    return None if x is None else x[None]


def _pack(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return v.detach().clone()
    if isinstance(v, QuantizedTensor):
        return {
            "__mango__": "quantized",
            "data": v.data.clone(),
            "scale": v.scale.clone(),
            "shape": list(v.shape),
            "dtype": str(v.dtype).removeprefix("torch."),
            "bits": v.bits,
            "mode": v.mode,
            "block": v.block,
            "numel": v.numel,
        }
    if isinstance(v, DenseState):
        return {
            "__mango__": "dense",
            "data": v.data.clone(),
            "dtype": str(v.dtype).removeprefix("torch."),
            "bits": v.bits,
        }
    return v


def _unpack(v: Any, device: torch.device) -> Any:
    if isinstance(v, torch.Tensor):
        return v.to(device)
    if isinstance(v, dict) and v.get("__mango__") == "quantized":
        return QuantizedTensor(
            v["data"].to(device),
            v["scale"].to(device),
            torch.Size(v["shape"]),
            getattr(torch, v["dtype"]),
            int(v["bits"]),
            str(v["mode"]),
            int(v["block"]),
            int(v["numel"]),
        )
    if isinstance(v, dict) and v.get("__mango__") == "dense":
        return DenseState(v["data"].to(device), getattr(torch, v["dtype"]), int(v["bits"]))
    if isinstance(v, tuple):
        return tuple(v)
    return v


#: Keys a parameter group may carry: torch.optim.AdamW's, MANGO's ``project``, torch's ``param_names``
#: (named parameters) and ``initial_lr`` (set by LR schedulers; in groups copied from another optimizer).
_FLAG_KEYS = ("amsgrad", "maximize", "capturable", "differentiable")
_GROUP_KEYS = frozenset(
    {
        "params",
        "lr",
        "betas",
        "eps",
        "weight_decay",
        "foreach",
        "project",
        "setting",
        "param_names",
        "initial_lr",
        *_FLAG_KEYS,
    }
)
_REFUSED_FLAGS = {
    "amsgrad": "AMSGrad keeps max(v) over time, a second full-size second moment that the compressed "
    "states cannot represent; use torch.optim.AdamW(amsgrad=True) for these parameters",
    "capturable": "the step is not CUDA-graph safe (the torch path syncs the host once per step for its "
    "non-finite check; the fused path rebuilds address tables when slots move); leave capturable=False",
    "differentiable": "the step quantizes its state under no_grad and cannot be differentiated through; "
    "leave differentiable=False",
}


def _unknown_group_keys(unknown: list[str]) -> str:
    msg = f"unknown parameter-group key(s) {unknown}; allowed: {sorted(_GROUP_KEYS)}."
    if {"rank", "bits", "gamma"} & set(unknown):
        msg += (
            " A group's own compression setting is one key: "
            "{'params': ..., 'setting': CompressionSetting(rank=..., bits=..., gamma=...)}."
        )
    if "fused" in unknown:
        msg += " fused is optimizer-wide: MangoAdamW(..., fused=...)."
    return (
        msg
        + " Keys other tools read (e.g. timm's lr_scale) can be added to opt.param_groups after construction."
    )


def _group_setting_value(value: Any, index: int) -> CompressionSetting | None:
    """A group's ``setting``: a CompressionSetting, its ``model_dump()`` dict (from a state dict) or None."""
    if value is None or isinstance(value, CompressionSetting):
        return value
    if isinstance(value, dict):
        try:
            return CompressionSetting.model_validate(value)
        except ValueError as exc:
            raise ValueError(
                f"param group {index}: setting {value!r} is not a valid CompressionSetting: {exc}"
            ) from None
    raise TypeError(
        f"param group {index}: setting must be a client.protocol.CompressionSetting (or None to follow the "
        f"optimizer-wide setting), got {type(value).__name__}"
    )


def _check_lr(name: str, value: Any) -> None:
    """A learning rate: a finite number >= 0 or a one-element floating tensor holding one."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or not value.is_floating_point():
            raise TypeError(f"{name} must be a number or a one-element floating tensor, got {value!r}")
        _check_number(name, float(value), lo=0.0)
        return
    _check_number(name, value, lo=0.0)


def _check_flags(flags: dict[str, Any], *, where: str) -> None:
    for key, value in flags.items():
        if not isinstance(value, bool):
            raise TypeError(f"{key} must be True or False{where}, got {value!r}")
        if value and key in _REFUSED_FLAGS:
            raise ValueError(f"{key}=True is not supported by MangoAdamW{where}: {_REFUSED_FLAGS[key]}")


def _check_param(p: torch.Tensor, where: str) -> None:
    """Refuse, naming the parameter, what the compressed step cannot update correctly."""
    what = f"{where} (shape {tuple(p.shape)}, dtype {p.dtype})"
    if p.is_complex():
        raise ValueError(
            f"{what} is complex: MangoAdamW updates real tensors; optimize torch.view_as_real(p) as a real "
            "parameter, or give this one to torch.optim.AdamW"
        )
    if not p.is_floating_point():
        raise ValueError(
            f"params must be floating-point tensors; {what} is not "
            "(leave integer buffers out of the optimizer)"
        )
    if p.dtype == torch.float64:
        raise ValueError(
            f"{what} is float64: MangoAdamW keeps its state in fp32 or narrower, so the update would lose "
            "float64 precision; train in float32 (model.float()) or give this parameter to torch.optim.AdamW"
        )
    if _is_dtensor(p) and any(pl.is_partial() for pl in p.placements):  # type: ignore[attr-defined]
        raise ValueError(
            f"{what} is a DTensor with a Partial placement ({p.placements}): a parameter must be sharded "  # type: ignore[attr-defined]
            "or replicated (FSDP2 fully_shard shards it on dim 0)"
        )


@contextlib.contextmanager
def _torch_optim_groups(groups: list[dict[str, Any]]) -> Iterator[None]:
    """For one step: a tensor ``lr`` read as a float, the gradients of ``maximize`` groups negated (exact,
    restored after, also when the step raises)."""
    tensor_lrs: list[tuple[dict[str, Any], torch.Tensor]] = []
    negated: list[torch.Tensor] = []
    try:
        for group in groups:
            lr = group["lr"]
            if isinstance(lr, torch.Tensor) and not torch.compiler.is_compiling():  # compiled: stays a tensor
                tensor_lrs.append((group, lr))
                group["lr"] = float(lr)
            if group.get("maximize", False):
                for p in group["params"]:
                    if p.grad is not None:
                        negated.append(p.grad.neg_())
        yield
    finally:
        for grad in negated:
            grad.neg_()
        for group, lr in tensor_lrs:
            group["lr"] = lr


def _check_number(name: str, value: Any, *, lo: float, hi: float | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TypeError(f"{name} must be a finite number, got {value!r}")
    if value < lo or (hi is not None and value > hi):
        rng = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise ValueError(f"{name}={value!r} is out of range; it must be {rng}")


def _check_int(name: str, value: Any, *, lo: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < lo:
        raise ValueError(f"{name}={value} must be >= {lo}")


def _check_betas(betas: Any) -> None:
    if not isinstance(betas, tuple | list) or len(betas) != 2:
        raise TypeError(f"betas must be a pair (beta1, beta2), got {betas!r}")
    for i, b in enumerate(betas):
        _check_number(f"betas[{i}]", b, lo=0.0)
        if b >= 1.0:
            raise ValueError(f"betas[{i}]={b} must be < 1 (e.g. betas=(0.9, 0.999))")
