"""State conversion of a setting change, batched over the tensors that share a shape and a stored layout.

:meth:`~client.compression.optimizer.MangoAdamW.apply_setting` re-expresses every matrix state under the
new setting (dequantize, change of basis, re-quantize). Tensor by tensor that is tens of small ops and a
QR / SVD each: on a GPU each is a launch, and a change cost tens of steps' time. :func:`convert_group` does
the same arithmetic for a group of tensors of one parameter shape, one rank and one slot layout at once:
the slots are decoded together (:func:`~client.compression.refresh._stack_values`), the changes of basis
are ``bmm``, the QR / SVD are batched, and each state kind is re-quantized in one call
(:func:`~client.compression.quant.quantize_many`; per state, the quantize calls were most of the ops a
batched change dispatched: ``python -m benchmarks.switch_cpu`` counts them). Results equal the per-tensor
path's bit for bit with ``stochastic_rounding=False`` (the same products, per batch entry; the same blocks).

Draw order: the random starts a rank change needs (new directions, the randomized SVD's start) are drawn
from the optimizer's generator in one draw per group (:func:`_draw`), before the group's states are stored;
groups go in the order of their first tensor, the tensors converted alone after them. The per-tensor path
draws tensor by tensor in parameter order, interleaved with each tensor's stochastic-rounding draws (the
group draws them once per state kind: m, v, e, h). So the random directions are the per-tensor path's only
on the CPU, where that order is the same (``stochastic_rounding=False`` and each group's tensors
consecutive in parameter order, as in the tests) and each start's size is a multiple of 16; a model whose
layers interleave shapes (GPT-2: attention and MLP matrices per layer), and any GPU, gets other random
directions and rounding draws: the same distribution, deterministic for a given seed.
"""

from __future__ import annotations

from typing import Any

import torch

from client.compression.lowrank import orthonormalize_batched, top_left_singular
from client.compression.refresh import _stack_values, _uniform
from client.compression.slots import _TINY, _mix_v
from client.protocol import CompressionSetting

__all__ = ["batch_key", "batchable", "convert_group"]


def batch_key(p: torch.Tensor, st: dict[str, Any]) -> tuple[Any, ...] | None:
    """What must match for two tensors' states to convert together (``None``: convert alone).

    Parameter shape (the canonical view and the full-matrix slots' order follow from it), rank, and which
    slots are held; the slots' code layouts are compared per group by :func:`batchable`.
    """
    if "m" not in st:
        return None
    keys = tuple(k for k in ("m", "v", "v_row", "e", "h") if k in st)
    return (tuple(p.shape), st["shape"], st["rank"], keys)


def batchable(sts: list[dict[str, Any]]) -> bool:
    """Whether every slot kind of a group shares one storage layout (so it decodes in one call)."""
    keys = [k for k in ("m", "v", "e", "h") if k in sts[0]]
    return all(_uniform([st[k] for st in sts]) for k in keys)


def _canon_batch(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """``(k, *p.shape)`` full-matrix values -> their ``(k, m, n)`` canonical views; ``r x n`` slots as is."""
    if x[0].numel() != p.numel():
        return x
    mat = x.reshape(x.shape[0], p.shape[0], -1)
    return mat if mat.shape[1] <= mat.shape[2] else mat.transpose(1, 2)


def _values(sts: list[dict[str, Any]], key: str, p: torch.Tensor) -> torch.Tensor | None:
    """fp32 values of slot ``key`` of every tensor, ``(k, rows, n)`` canonical (None when absent)."""
    if key not in sts[0]:
        return None
    return _canon_batch(_stack_values([st[key] for st in sts], sqrt_v=key == "v"), p)


def _refactor(
    v_full: torch.Tensor | None, v_row: torch.Tensor | None, v_col: torch.Tensor | None, factored: bool
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Batched :func:`~client.compression.slots._refactor` (a leading batch dimension)."""
    if factored and v_full is not None:
        # per entry: a batched mean over a (possibly transposed) view reduces in another order
        rows = torch.stack([v.mean(dim=1) for v in v_full])
        return None, rows, torch.stack([v.mean(dim=0) for v in v_full])
    if not factored and v_full is None:
        assert v_row is not None and v_col is not None
        den = v_row.mean(dim=-1).clamp_min(_TINY)
        return v_row[:, :, None] * v_col[:, None, :] / den[:, None, None], None, None
    return v_full, v_row, v_col


def _mix(
    v_full: torch.Tensor | None, v_row: torch.Tensor | None, w2: torch.Tensor
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """:func:`~client.compression.slots._mix_v` of a group: batched for a full ``v``; per entry for the
    factored row statistic (a batched matrix-vector product rounds otherwise than ``mv``)."""
    if v_full is not None:
        return _mix_v(v_full, None, w2)
    assert v_row is not None
    return None, torch.stack([_mix_v(None, row, w)[1] for row, w in zip(v_row, w2, strict=True)])  # type: ignore[misc]


def _draw(opt: Any, k: int, rows: int, cols: int) -> torch.Tensor:
    """``k`` Gaussian ``(rows, cols)`` starts from the optimizer's generator in one draw (one launch on a GPU,
    not one per tensor). On the CPU the values are those of ``k`` draws in a row when ``rows * cols`` is a
    multiple of 16 (torch fills normals 16 at a time); otherwise, and on a GPU, other draws of the same
    distribution, deterministic for a seed."""
    return torch.randn(k, rows, cols, generator=opt._gen, device=opt._gen.device)


def _top_subspace(opt: Any, a: torch.Tensor, r: int) -> torch.Tensor:
    """Batched :meth:`MangoAdamW._top_subspace`: randomized SVD of each ``(m, n)`` entry of ``a``."""
    k = min(r + 8, min(a.shape[1:]))
    q = _draw(opt, a.shape[0], a.shape[2], k).to(a.device)
    at = a.transpose(1, 2)
    pk = q
    for _ in range(2):  # power_iteration(a, q0, iters=2)
        pk = orthonormalize_batched(a @ q)
        q = at @ pk
    return pk @ top_left_singular(pk.transpose(1, 2) @ a, r)


@torch.no_grad()
def convert_group(opt: Any, ps: list[torch.Tensor], sts: list[dict[str, Any]], s: CompressionSetting) -> None:
    """Re-express the states of ``ps`` (one :func:`batch_key`, :func:`batchable`) under setting ``s``."""
    p0, st0 = ps[0], sts[0]
    m_rows, n_cols = st0["shape"]
    r_old = st0["rank"]
    r_new = opt._eff_rank(m_rows, n_cols, st0.get("project", True), s)
    exp_avg = _values(sts, "m", p0)  # (k, rows, n)
    assert exp_avg is not None
    if "v_row" in st0:
        v_full = None
        v_row = torch.stack([st["v_row"] for st in sts])
        v_col = torch.stack([st["v_col"] for st in sts])
    else:
        v_full, v_row, v_col = _values(sts, "v", p0), None, None
    v_full, v_row, v_col = _refactor(v_full, v_row, v_col, opt._factored(s))
    E, H = _values(sts, "e", p0), _values(sts, "h", p0)
    P = torch.stack([st["P"] for st in sts]) if r_old > 0 else None  # (k, m, r_old)
    P_new: torch.Tensor | None = P
    if r_new != r_old:
        if r_old > 0 and 0 < r_new < r_old:
            assert P is not None
            A = top_left_singular(exp_avg, r_new)  # (k, r_old, r_new)
            # per entry: a batched (m, r) @ (r, r') product rounds otherwise than mm on CPU
            P_new, W = torch.stack([pj @ aj for pj, aj in zip(P, A, strict=True)]), A.transpose(1, 2)
        elif r_old > 0 and r_new > r_old:
            assert P is not None
            extra = _draw(opt, len(ps), m_rows, r_new - r_old).to(P.device)
            P_new = orthonormalize_batched(torch.cat([P, extra], dim=2))
            W = P_new.transpose(1, 2) @ P
        elif r_old > 0:
            assert P is not None
            P_new, W = None, P
        else:
            P_new = _top_subspace(opt, exp_avg, r_new)
            W = P_new.transpose(1, 2)
        exp_avg = W @ exp_avg
        H = W @ H if H is not None else None
        if E is not None and opt.ef_scope == "subspace":
            E = W @ E
        v_full, v_row = _mix(v_full, v_row, W.square())
    for j, st in enumerate(sts):
        if r_new != r_old:
            st["rank"] = r_new
            st.pop("P", None)
            if P_new is not None:
                st["P"] = P_new[j].contiguous()
            if r_old == 0:
                st["basis_step"] = st["step"]
            if r_new > r_old > 0:
                st["refresh_pending"] = True
            if r_new == 0:
                st.pop("refresh_pending", None)
    opt._store_group(ps, sts, s, exp_avg, v_full, v_row, v_col, E, H)
