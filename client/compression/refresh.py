"""Basis refresh of the fused projected step: every due tensor of one shape at once, states rotated in place.

The torch path refreshes a projected tensor's basis inside its step (``MangoAdamW._matrix_step``): from the
error-fed gradient ``X = G + P E`` it takes ``P' = orth(X q)``, ``q = X^T P`` (``power_iters`` warm-started
subspace iterations), rotates the ``r x n`` states by ``W = P'^T P`` (``m <- W m``, ``e <- W e``,
``h <- W h``, ``v`` mixed by ``W * W``) and steps on. Tensor by tensor that is tens of small launches and a
QR each, every ``refresh_every`` steps: on a GPU it cost more than the steps it served.

:func:`refresh` does the same products batched over the tensors that share ``(m, n, r)``: the gradients
are stacked once, the two products are ``bmm``, the QR is batched (signs fixed as
:func:`~client.compression.lowrank.orthonormalize` fixes them). The rotated states are then stored at the
setting's width *into the existing slots*, so the fused plan's address tables stay valid and the fused
launches step on with the new basis in the same step. The one difference from the torch path: the rotated
states are rounded to their width once before the step reads them (the torch path steps on the fp32
rotation). A tensor whose error-fed gradient is not finite keeps its basis and states (its fused update is
skipped anyway, by the norm pre-pass).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch

from client.compression.quant import DenseState, QuantizedTensor

__all__ = ["due", "refresh"]


def due(opt: Any, st: dict[str, Any]) -> bool:
    """Whether a projected tensor's basis is refreshed at this step (the torch path's rule)."""
    return st["step"] + 1 - st["basis_step"] >= opt.refresh_every


def _orth(x: torch.Tensor) -> torch.Tensor:
    """Batched :func:`~client.compression.lowrank.orthonormalize`: reduced QR, signs so that diag(R) >= 0."""
    q, r = torch.linalg.qr(x, mode="reduced")
    d = torch.diagonal(r, dim1=-2, dim2=-1)
    return q * torch.where(d < 0, -1.0, 1.0).to(q.dtype)[..., None, :]


def _copy_into(old: Any, new: Any) -> None:
    """Write a freshly stored slot into the old one's memory (same kind and shape: the plan checked)."""
    if isinstance(old, QuantizedTensor):
        old.data.copy_(new.data)
        old.scale.copy_(new.scale)
    elif isinstance(old, DenseState):
        old.data.copy_(new.data)
    else:
        old.copy_(new)


@torch.no_grad()
def refresh(opt: Any, entries: list[tuple[torch.Tensor, torch.Tensor, dict[str, Any]]]) -> None:
    """Refresh the bases of ``entries`` (``(param, grad, state)`` of due projected tensors) in place."""
    from client.compression import optimizer as o

    groups: dict[tuple[Any, ...], list[tuple[torch.Tensor, torch.Tensor, dict[str, Any]]]] = defaultdict(list)
    for p, g, st in entries:
        groups[(st["shape"], st["rank"], p.device)].append((p, g, st))
    bits = opt.setting.bits
    for (_, r, _), grp in groups.items():
        G = torch.stack([o._canon(g.float(), p) for p, g, _ in grp])  # (k, m, n)
        P = torch.stack([st["P"] for _, _, st in grp])  # (k, m, r)
        E = None
        if opt.error_feedback and all("e" in st for _, _, st in grp):
            E = torch.stack([o._load(st["e"]) for _, _, st in grp])  # (k, r, n): stored as is
            X = torch.baddbmm(G, P, E)
        else:
            X = G
        ok = torch.isfinite(X.square().sum(dim=(1, 2)))  # (k,) on the device: no sync
        X = torch.where(ok[:, None, None], X, 0.0)
        q = X.transpose(1, 2) @ P  # warm start (k, n, r)
        P_new = P
        for _ in range(opt.power_iters):
            P_new = _orth(X @ q)
            q = X.transpose(1, 2) @ P_new
        P_new = torch.where(ok[:, None, None], P_new, P)
        eye = torch.eye(r, device=P.device, dtype=P.dtype)
        W = torch.where(ok[:, None, None], P_new.transpose(1, 2) @ P, eye)  # (k, r, r): old -> new
        for i, (p, _, st) in enumerate(grp):
            w = W[i]
            m = o._get(st, "m", p)
            assert m is not None
            v_full, v_row, v_col = opt._load_v(st, r, st["shape"][1], p)
            v_full, v_row = o._mix_v(v_full, v_row, w.square())
            fresh: dict[str, Any] = {"m": opt._put(w @ m, bits, p)}
            opt._store_v(fresh, v_full, v_row, v_col, bits, p)
            if E is not None:
                fresh["e"] = opt._put(w @ E[i], bits, p)
            h = o._get(st, "h", p)
            if h is not None:
                fresh["h"] = opt._put(w @ h, bits, p)
            for key, new in fresh.items():
                _copy_into(st[key], new)
            st["P"].copy_(P_new[i])
            st["basis_step"] = st["step"] + 1
