"""Basis refresh of the fused projected step: every due tensor of one shape at once, states rotated in place.

The torch path refreshes a projected tensor's basis inside its step (``MangoAdamW._matrix_step``): from the
error-fed gradient ``X = G + P E`` it takes ``P' = orth(X q)``, ``q = X^T P`` (``power_iters`` warm-started
subspace iterations), rotates the ``r x n`` states by ``W = P'^T P`` (``m <- W m``, ``e <- W e``,
``h <- W h``, ``v`` mixed by ``W * W``) and steps on. Tensor by tensor that is tens of small launches and a
QR each, every ``refresh_every`` steps: on a GPU it cost more than the steps it served.

:func:`refresh` does the same products batched over the tensors that share ``(m, n, r)``: the gradients
are stacked once, the two products are ``bmm``, the QR is batched (signs fixed as
:func:`~client.compression.lowrank.orthonormalize` fixes them). It writes the rotated states in fp32 into
the launch's refresh buffers (one ``r x n`` copy each of ``m``, ``v``, ``e``, ``h``; a factored ``v``'s
row statistic is rotated in place), and the matrix kernel of that step reads them there instead of the
slots (``FRESH``) and stores its results into the slots as every step does: the torch path's arithmetic,
with no extra rounding, and the plan's address tables stay valid. Every tensor of the launch goes through
the buffers at such a step; those that are not due keep their basis (``W = I``). A tensor whose error-fed
gradient is not finite keeps its basis (its update is skipped anyway, by the norm pre-pass) and its
``basis_step`` moves on: the torch path would retry the refresh at the next step.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch

from client.compression.slots import _canon, _get, _load, _mix_v

__all__ = ["due", "refresh"]


def due(opt: Any, st: dict[str, Any]) -> bool:
    """Whether a projected tensor's basis is refreshed at this step (the torch path's rule)."""
    return st["step"] + 1 - st["basis_step"] >= opt.refresh_every


def _orth(x: torch.Tensor) -> torch.Tensor:
    """Batched :func:`~client.compression.lowrank.orthonormalize`: reduced QR, signs so that diag(R) >= 0."""
    q, r = torch.linalg.qr(x, mode="reduced")
    d = torch.diagonal(r, dim1=-2, dim2=-1)
    return q * torch.where(d < 0, -1.0, 1.0).to(q.dtype)[..., None, :]


@torch.no_grad()
def refresh(opt: Any, params: list[torch.Tensor], grads: list[torch.Tensor], states: list[dict[str, Any]],
            fresh: list[list[torch.Tensor]]) -> None:  # fmt: skip
    """Refresh the due bases among one projected launch's tensors; write every tensor's fp32 states.

    :param params: / ``grads`` / ``states``: the launch's tensors (all of them: the kernel then reads every
        tensor's state from ``fresh``; a tensor that is not due keeps its basis, ``W = I``).
    :param fresh: per tensor, the fp32 ``(m, v, e, h)`` views (``r x n``) the kernel reads at this step.
    """
    groups: dict[tuple[Any, ...], list[int]] = defaultdict(list)
    for i, st in enumerate(states):
        groups[(st["shape"], st["rank"])].append(i)
    for (_, r), idx in groups.items():
        ps = [params[i] for i in idx]
        sts = [states[i] for i in idx]
        G = torch.stack([_canon(grads[i].float(), p) for i, p in zip(idx, ps)])  # (k, m, n)
        P = torch.stack([st["P"] for st in sts])  # (k, m, r)
        E = None
        if "e" in sts[0]:
            E = torch.stack([_load(st["e"]) for st in sts])  # (k, r, n): r x n slots are stored as is
            X = torch.baddbmm(G, P, E)
        else:
            X = G
        is_due = torch.tensor([due(opt, st) for st in sts], device=P.device)
        ok = torch.isfinite(X.square().sum(dim=(1, 2))) & is_due  # (k,): no host sync
        X = torch.where(ok[:, None, None], X, 0.0)
        q = X.transpose(1, 2) @ P  # warm start (k, n, r)
        P_new = P
        for _ in range(opt.power_iters):
            P_new = _orth(X @ q)
            q = X.transpose(1, 2) @ P_new
        P_new = torch.where(ok[:, None, None], P_new, P)
        eye = torch.eye(r, device=P.device, dtype=P.dtype)
        W = torch.where(ok[:, None, None], P_new.transpose(1, 2) @ P, eye)  # (k, r, r): old -> new
        for j, (i, p, st) in enumerate(zip(idx, ps, sts)):
            w = W[j]
            f_m, f_v, f_e, f_h = fresh[i]
            m = _get(st, "m", p)
            assert m is not None
            torch.mm(w, m, out=f_m)
            v_full, v_row, _ = opt._load_v(st, r, st["shape"][1], p)
            v_full, v_row = _mix_v(v_full, v_row, w.square())
            if v_full is not None:
                f_v.copy_(v_full)
            else:
                assert v_row is not None
                st["v_row"].copy_(v_row)  # fp32 in place: the fold kernel reads it at this step
            if E is not None:
                torch.mm(w, E[j], out=f_e)
            h = _get(st, "h", p)
            if h is not None:
                torch.mm(w, h, out=f_h)
            st["P"].copy_(P_new[j])
            if due(opt, st):
                st["basis_step"] = st["step"] + 1
