"""MangoAdamW's rank-0 quantized matrices on the torch path, stepped together.

At rank 0 and 2-8 bits the tensor-by-tensor step (:meth:`MangoAdamW._matrix_step`) spends its time in the
block quantizer: per matrix and step it reads ``m``, ``e`` and a quantized ``sqrt(v)``, sends the error-fed
gradient through ``Q_b`` and writes the states back, some fifteen torch ops a call on a few thousand values.
:class:`Rank0Batch` lays the matrices of one parameter group end to end instead (each state in the
parameter's memory order, as stored) and makes each of those calls once for all of them
(:func:`~client.compression.quant.quantize_cat`, :func:`~client.compression.quant.dequantize_cat`,
:func:`~client.compression.quant.roundtrip_torch`); every matrix keeps its own blocks and its own stored
states.

**What is the same.** A block never straddles two matrices (each fills whole blocks), so with
round-to-nearest every code, scale, state and parameter is the tensor-by-tensor step's bit for bit (tested);
with stochastic rounding the draws come from one call per state instead of one per matrix and state: the
same distribution, another stream. The error feedback and the quantizer are single-rounding element-wise
ops, run on the concatenation; Adam's ops whose CPU kernels may fuse a multiply-add (``lerp``, ``addcmul``,
``addcdiv``, ``add`` with ``alpha``) run as ``torch._foreach_*`` ops on each matrix's own view (on a CPU the
single-tensor op, tensor by tensor), and the factored second moment's row / column statistics on each
matrix's canonical view, as the tensor-by-tensor step computes them. Step counts (bias corrections) are per
matrix. The statistics' sums run over the concatenation (float summation order apart, the same values).

**What joins a batch** (:func:`batch_key`): a contiguous fp32 parameter on a CPU with an fp32 contiguous
gradient, rank 0 (not a whole-basis FSDP2 tensor), a quantized width (2, 3, 4, 8 bits), a whole number of
blocks, a float ``lr`` and no ``torch.compile`` tracing, and stored states of the setting's form (quantized
``m``, ``e``, ``h`` and ``sqrt(v)`` at the step's bits, or the factored ``v``). Matrices with the same key
step together; the others (a state left in another form, a partial block, bf16) take the tensor-by-tensor
step.
"""

from __future__ import annotations

from typing import Any

import torch

from client.compression.quant import (
    QuantizedTensor,
    dequantize_cat,
    quantize_cat,
    roundtrip_torch,
    whole_blocks,
)
from client.compression.sizes import default_block
from client.compression.slots import _TINY, _canon

__all__ = ["Rank0Batch", "batch_key"]

_QUANT_BITS = (2, 3, 4, 8)


def _slot_form(slot: Any, bits: int, mode: str, shape: torch.Size) -> bool | None:
    """``True`` for a quantized state of this code and shape, ``False`` when absent, ``None`` otherwise."""
    if slot is None:
        return False
    if isinstance(slot, QuantizedTensor) and (slot.bits, slot.mode, slot.shape) == (bits, mode, shape):
        return slot.block == default_block(bits) or None
    return None


def batch_key(opt: Any, p: torch.Tensor, g: torch.Tensor, st: dict[str, Any], group: dict[str, Any]) -> Any:
    """The key of the batch a matrix steps in (module docstring), ``None`` for the tensor-by-tensor step.

    :param opt: the :class:`~client.compression.optimizer.MangoAdamW`.
    :param p: the (local) parameter; ``g`` its gradient; ``st`` its state; ``group`` its parameter group.
    """
    if torch.compiler.is_compiling() or isinstance(group["lr"], torch.Tensor) or p.device.type != "cpu":
        return None
    if st["kind"] != "matrix" or st["rank"] != 0 or st.get("full_basis"):
        return None
    knobs = opt._group_knobs(group)
    bits = knobs.bits
    if bits not in _QUANT_BITS or not whole_blocks(p.numel(), bits):
        return None
    if p.dtype != torch.float32 or g.dtype != torch.float32 or not (p.is_contiguous() and g.is_contiguous()):
        return None
    mode = opt._mode(bits)
    forms = [_slot_form(st.get(k), bits, mode, p.shape) for k in ("e", "m", "h")]
    factored = opt._factored(knobs)
    if factored:
        v_form = None if "v" in st else ("v_row" in st)
    else:
        v_form = None if "v_row" in st else _slot_form(st.get("v"), bits, "uniform", p.shape)
    if None in forms or v_form is None:
        return None
    return (id(group), p.device, bits, mode, knobs.gamma, factored, v_form, *forms)


class Rank0Batch:
    """Rank-0 matrices of one :func:`batch_key`, stepped as one (:meth:`step`; module docstring)."""

    def __init__(self, group: dict[str, Any]) -> None:
        self.group = group
        self.idx: list[int] = []  # the matrices' places in the step's items (their gradient norms)
        self.params: list[torch.Tensor] = []
        self.grads: list[torch.Tensor] = []
        self.states: list[dict[str, Any]] = []

    def add(self, j: int, p: torch.Tensor, g: torch.Tensor, st: dict[str, Any]) -> None:
        """One matrix: its item index ``j``, (local) parameter, gradient and state."""
        self.idx.append(j)
        self.params.append(p)
        self.grads.append(g)
        self.states.append(st)

    def _load(self, key: str, present: bool, total: int, device: torch.device) -> torch.Tensor:
        """A state of every matrix laid end to end (fp32), zeros where the step starts without it."""
        if present:
            return dequantize_cat([st[key] for st in self.states])
        return torch.zeros(total, dtype=torch.float32, device=device)

    def step(self, opt: Any, stats: Any) -> None:
        """One step of every matrix: :meth:`MangoAdamW._matrix_step` at rank 0, state for state."""
        group, sts, params = self.group, self.states, self.params
        beta1, beta2 = group["betas"]
        lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
        knobs = opt._group_knobs(group)
        bits, gamma = knobs.bits, knobs.gamma
        mode = opt._mode(bits)
        factored = opt._factored(knobs)
        shapes = [p.shape for p in params]
        numels = [p.numel() for p in params]
        device = params[0].device
        total = sum(numels)
        keys = [len(st) for st in sts]
        code = {"stochastic": opt._stochastic(bits), "generator": opt._rng()}

        G = torch.cat([g.reshape(-1) for g in self.grads]) if len(params) > 1 else self.grads[0].reshape(-1)
        E = dequantize_cat([st["e"] for st in sts]) if "e" in sts[0] else None
        M = self._load("m", "m" in sts[0], total, device)
        H = dequantize_cat([st["h"] for st in sts]) if gamma > 0 and "h" in sts[0] else None
        V = None if factored else self._load("v", "v" in sts[0], total, device).abs_().square_()

        C, e_new = self._feedback(G, E, H, gamma, opt.ef_beta, bits, mode, code, stats)
        e_store = quantize_cat(e_new, shapes, bits, mode=mode, **code) if opt.error_feedback else None
        h_store = quantize_cat(C, shapes, bits, mode=mode, **code) if gamma > 0 else None

        # Adam on c, each matrix on its own views (bias corrections per matrix, as its step count)
        steps = [float(st["step"] + 1) for st in sts]
        neg_step = [-(lr / (1 - beta1**t)) for t in steps]
        bc2_sqrt = [(1 - beta2**t) ** 0.5 for t in steps]
        flat_p = [p.view(-1) for p in params]
        ms, cs = M.split(numels), C.split(numels)
        if wd != 0:
            torch._foreach_mul_(params, 1 - lr * wd)
        torch._foreach_lerp_(ms, cs, 1 - beta1)
        if V is not None:
            vs = V.split(numels)
            torch._foreach_mul_(vs, beta2)
            torch._foreach_addcmul_(vs, cs, cs, value=1 - beta2)
            root = V.sqrt()  # sqrt(v): the denominator's and the stored code's
            denom = torch._foreach_div(root.split(numels), bc2_sqrt)
            torch._foreach_add_(denom, eps)
            torch._foreach_addcdiv_(flat_p, ms, denom, neg_step)
        else:
            sq = C.square().add_(_TINY)
            dens = []
            for st, p, sq_j, bc in zip(sts, params, sq.split(numels), bc2_sqrt, strict=True):
                sqrt_v = _factored_v(st, p, _canon(sq_j.view(p.shape), p), beta2)
                dens.append(sqrt_v.div_(bc).add_(eps))
            canon_p = [_canon(p, p) for p in params]
            canon_m = [_canon(m.view(p.shape), p) for m, p in zip(ms, params, strict=True)]
            torch._foreach_addcdiv_(canon_p, canon_m, dens, neg_step)

        # commit
        m_store = quantize_cat(M, shapes, bits, mode=mode, **code)
        v_store = None if V is None else quantize_cat(root, shapes, bits, mode="uniform", **code)
        for j, st in enumerate(sts):
            st["step"] += 1
            st["m"] = m_store[j]
            if v_store is not None:
                st["v"] = v_store[j]
            for key, val in (("e", e_store), ("h", h_store)):
                if val is None:
                    st.pop(key, None)
                else:
                    st[key] = val[j]
            if len(st) != keys[j]:  # a slot appeared or went: the tensor may now suit the fused plan
                opt._run.layout += 1

    @staticmethod
    def _feedback(
        G: torch.Tensor,
        E: torch.Tensor | None,
        H: torch.Tensor | None,
        gamma: float,
        beta: float,
        bits: int,
        mode: str,
        code: dict[str, Any],
        stats: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:func:`~client.compression.feedback.shift_compress` around ``Q_b`` on the concatenation, its
        arithmetic value for value, in place where a buffer is the batch's own (fewer large allocations):
        ``c = gamma h + Q(g + e - gamma h)``, ``e_new = beta e + (1 - gamma) (g - c)`` (``e``, ``h`` zeros
        when absent). Returns ``(c, e_new)`` and adds the rounding error's terms to ``stats``."""
        u = G + E if E is not None else G + 0.0  # shift_compress's g + zeros
        gh = None
        if gamma > 0.0 and H is not None:
            gh = H.mul_(gamma)
            u.sub_(gh)
        out = roundtrip_torch(u, bits, mode=mode, **code)
        stats.tot.append(torch.dot(u, u))
        err = u.sub_(out)  # u is not needed after: its buffer takes the rounding error
        stats.err.append(torch.dot(err, err))
        c = out if gh is None else gh.add_(out)
        d = G - c
        if gamma != 0.0:  # (1 - gamma) * d; times 1.0 is d itself
            d.mul_(1.0 - gamma)
        e_new = d.add_(0.0) if E is None else E.mul_(beta).add_(d)
        return c, e_new


def _factored_v(st: dict[str, Any], p: torch.Tensor, sq: torch.Tensor, beta2: float) -> torch.Tensor:
    """The factored second moment's step for one matrix, on its canonical ``(rows, n)`` view ``sq`` of
    ``c^2 + tiny``, as the tensor-by-tensor step computes it: returns ``sqrt(v)`` (``(rows, n)``, the
    history's rank-1 estimate plus this step's ``c^2``) and updates the row / column statistics in place
    (allocated at the first step)."""
    rows, n = sq.shape
    if "v_row" not in st:
        st["v_row"] = torch.zeros(rows, device=p.device)
        st["v_col"] = torch.zeros(n, device=p.device)
    v_row, v_col = st["v_row"], st["v_col"]
    hist = torch.outer(v_row, v_col).div_(v_row.mean().clamp_min(_TINY))  # (rows, n)
    sqrt_v = hist.mul_(beta2).add_(sq, alpha=1 - beta2).sqrt_()
    v_row.mul_(beta2).add_(sq.mean(dim=1), alpha=1 - beta2)
    v_col.mul_(beta2).add_(sq.mean(dim=0), alpha=1 - beta2)
    return sqrt_v
