"""How :class:`~client.compression.optimizer.MangoAdamW` lays out and reads its per-parameter state.

Shared by the optimizer and the fused path's basis refresh (:mod:`~client.compression.refresh`): the
canonical matrix view of a parameter (``(shape[0], -1)``, transposed so that rows <= columns), the order
full-matrix states are stored in (the parameter's), fp32 reads of a slot, and the second moment's changes
of basis and of form (full <-> Adafactor factors).
"""

from __future__ import annotations

from typing import Any

import torch

from client.compression.quant import DenseState, QuantizedTensor, decompress_state

__all__ = ["Slot", "saved_shape"]

#: A stored state tensor: a plain fp32 tensor (32 bits, updated in place), a bf16 copy or a quantized one.
Slot = torch.Tensor | QuantizedTensor | DenseState

_TINY = 1e-30  # Adafactor's eps1: keeps the factored statistics of an all-zero row strictly positive


def _slot_bytes(s: Slot) -> int:
    if isinstance(s, torch.Tensor):
        return s.numel() * s.element_size()
    return int(s.nbytes)


def _load(s: Slot) -> torch.Tensor:
    """fp32 value of a slot. A 32-bit slot is returned *as is* (callers update it in place)."""
    if isinstance(s, torch.Tensor):
        return s
    return decompress_state(s, torch.float32)


def _canon_shape(p: torch.Tensor) -> tuple[int, int]:
    """``(m, n)`` of the canonical matrix view: ``(shape[0], -1)``, transposed so that ``m <= n``."""
    rows, cols = p.shape[0], p.numel() // p.shape[0]
    return (rows, cols) if rows <= cols else (cols, rows)


def _canon(t: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """View of ``t`` (shaped like ``p``) as the canonical ``(m, n)`` matrix; a view for contiguous ``t``."""
    rows = p.shape[0]
    mat = t.reshape(rows, -1)
    return mat if mat.shape[0] <= mat.shape[1] else mat.T


def _uncanon(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    rows = p.shape[0]
    mat = x if x.shape[0] == rows else x.T
    return mat.reshape(p.shape)


def _to_param_order(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """A full-matrix state (``m x n`` values, canonical view) as ``p``'s shape and memory order; others as is.

    Full-matrix slots are stored in the parameter's order, so element ``i`` of a stored state belongs to
    element ``i`` of ``p`` (what the fused step kernels need) and the quantization blocks run along the
    parameter's rows. For a state that is a canonical view of such a tensor this is a view, no copy.
    """
    if x.numel() != p.numel() or x.dim() != 2:
        return x
    return _uncanon(x, p)


def _from_param_order(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_to_param_order`: a state in ``p``'s order as the canonical ``(m, n)`` view."""
    if x.numel() != p.numel() or x.shape != p.shape:
        return x
    return _canon(x, p)


def _get(st: dict[str, Any], key: str, p: torch.Tensor) -> torch.Tensor | None:
    """fp32 value of slot ``key`` as the canonical ``(rows, n)`` matrix (None when absent)."""
    if key not in st:
        return None
    return _from_param_order(_load(st[key]), p)


def _zeros(rows: int, n: int, p: torch.Tensor) -> torch.Tensor:
    """fp32 zeros for a ``(rows, n)`` state; a full-matrix one as a canonical view of ``p``-ordered zeros."""
    if rows * n == p.numel():
        return _canon(torch.zeros(p.shape, dtype=torch.float32, device=p.device), p)
    return torch.zeros(rows, n, dtype=torch.float32, device=p.device)


def _load_sqrt_v(s: Slot) -> torch.Tensor:
    """``v`` from its slot: fp32 / bf16 store ``v``; quantized slots store ``sqrt(v)`` (read as ``|.|``)."""
    if isinstance(s, QuantizedTensor):
        return decompress_state(s, torch.float32).abs_().square_()
    return _load(s)


def _mix_v(
    v_full: torch.Tensor | None, v_row: torch.Tensor | None, w: torch.Tensor
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Second moment under a change of row basis with non-negative weights ``w`` (new rows x old rows).

    ``v_new = w @ v + (1 - rowsum(w)) * mean(v)``: exact for a permutation; a new direction the old rows
    covered only partly gets the mean second moment for the uncovered share (a neutral prior instead of 0,
    which would make its first updates explode). Factored ``v``: the row statistics transform, the column
    statistics are unchanged. Batched alike: a leading dimension on ``w`` and ``v`` (the fused refresh
    mixes a shape group at once).
    """
    fill = (1.0 - w.sum(dim=-1)).clamp_min(0.0)  # (..., new)
    if v_full is not None:
        return w @ v_full + fill[..., None] * v_full.mean(dim=-2, keepdim=True), None
    assert v_row is not None
    return None, (w @ v_row[..., None]).squeeze(-1) + fill * v_row.mean(dim=-1, keepdim=True)


def _refactor(
    v_full: torch.Tensor | None, v_row: torch.Tensor | None, v_col: torch.Tensor | None, factored: bool
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Convert between full ``v`` and Adafactor row / column statistics as ``factored`` asks."""
    if factored and v_full is not None:
        return None, v_full.mean(dim=1), v_full.mean(dim=0)
    if not factored and v_full is None:
        assert v_row is not None and v_col is not None
        return torch.outer(v_row, v_col) / v_row.mean().clamp_min(_TINY), None, None
    return v_full, v_row, v_col


def saved_shape(v: Any) -> tuple[int, ...] | None:
    """The logical shape of a saved state entry (a tensor, or a packed slot as ``MangoAdamW.state_dict``
    writes it: ``{"__mango__": "quantized" | "dense", ...}``), ``None`` if it has none."""
    if isinstance(v, torch.Tensor):
        return tuple(v.shape)
    if isinstance(v, dict) and v.get("__mango__") == "quantized":
        return tuple(int(d) for d in v.get("shape", ()))
    if isinstance(v, dict) and v.get("__mango__") == "dense" and isinstance(v.get("data"), torch.Tensor):
        return tuple(v["data"].shape)
    return None
