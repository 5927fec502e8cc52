"""Basis refresh of the fused projected step: every due tensor of one shape at once, states rotated in place.

The torch path refreshes a projected tensor's basis inside its step (``MangoAdamW._matrix_step``): from the
error-fed gradient ``X = G + P E`` it takes ``P' = orth(X q)``, ``q = X^T P`` (``power_iters`` warm-started
subspace iterations), rotates the ``r x n`` states by ``W = P'^T P`` (``m <- W m``, ``e <- W e``,
``h <- W h``, ``v`` mixed by ``W * W``) and steps on. Tensor by tensor that is tens of small launches and a
QR each, every ``refresh_every`` steps: on a GPU it cost more than the steps it served.

:func:`refresh` does the same products batched over the tensors that share ``(m, n, r)``: the gradients
are stacked once, the two products are ``bmm``, the orthogonalization is
:func:`~client.compression.lowrank.orthonormalize_batched` (CholeskyQR2, as the torch path's refresh: a
stack's Householder QR runs matrix by matrix in the GPU solver). It writes the rotated states in fp32 into
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
from typing import Any, cast

import torch

from client.compression.lowrank import orthonormalize_batched
from client.compression.quant import DenseState, QuantizedTensor, dequantize
from client.compression.slots import Slot, _canon, _get, _load, _mix_v

__all__ = ["due", "refresh"]


def due(opt: Any, st: dict[str, Any]) -> bool:
    """Whether a projected tensor's basis is refreshed at this step (the torch path's rule)."""
    return st["step"] + 1 - st["basis_step"] >= opt.refresh_every


def _stack_values(slots: list[Slot], sqrt_v: bool = False) -> torch.Tensor:
    """fp32 values of same-shaped ``r x n`` slots as one ``(k, r, n)`` tensor, in a few launches.

    Quantized slots of one layout (bits, mode, block, size) are dequantized together: their codes and
    scales are concatenated, block-aligned, and decoded by one call (each block decodes alone, so the values
    are those of per-slot decoding). ``sqrt_v``: the slots hold a second moment (quantized ones store
    ``sqrt(v)``, read back as ``|.|^2``, as :func:`~client.compression.slots._load_sqrt_v` reads them).
    """
    s0 = slots[0]
    if isinstance(s0, torch.Tensor):
        return torch.stack(cast(list[torch.Tensor], slots))
    if isinstance(s0, DenseState):
        return torch.stack([cast(DenseState, s).data for s in slots]).float()
    qs = cast(list[QuantizedTensor], slots)
    k, padded = len(qs), s0.scale.numel() * s0.block
    joined = QuantizedTensor(
        data=torch.cat([q.data for q in qs]),
        scale=torch.cat([q.scale for q in qs]),
        shape=torch.Size([k * padded]),
        dtype=torch.float32,
        bits=s0.bits,
        mode=s0.mode,
        block=s0.block,
        numel=k * padded,
    )
    out = dequantize(joined, torch.float32).view(k, padded)[:, : s0.numel].reshape(k, *s0.shape)
    return out.abs_().square_() if sqrt_v else out


def _layout(s: Slot) -> tuple[Any, ...]:
    """What must match for slots to decode together: kind, shape and, when quantized, the code layout."""
    if isinstance(s, QuantizedTensor):
        return (QuantizedTensor, tuple(s.shape), s.bits, s.mode, s.block, s.scale.numel())
    if isinstance(s, DenseState):
        return (DenseState, tuple(s.shape), s.data.dtype)
    return (torch.Tensor, tuple(s.shape), s.dtype)


def _uniform(slots: list[Slot]) -> bool:
    """Whether ``slots`` share one storage layout, so :func:`_stack_values` can decode them together."""
    first = _layout(slots[0])
    return all(_layout(s) == first for s in slots[1:])


def _batchable(opt: Any, sts: list[dict[str, Any]]) -> bool:
    """Whether one shape group's states can be rotated batched: every tensor holds the same slots in one
    layout, and its second moment is already in the setting's form (full or factored)."""
    keys = [k for k in ("m", "v", "e", "h") if k in sts[0]]
    if "m" not in keys or any([k for k in ("m", "v", "e", "h") if k in st] != keys for st in sts):
        return False
    factored = opt._factored()
    if any(("v_row" in st) != factored or ("v" in st) == factored for st in sts):
        return False
    return all(_uniform([st[k] for st in sts]) for k in keys)


def _rotate_batched(
    sts: list[dict[str, Any]], W: torch.Tensor, E: torch.Tensor | None, fresh: list[list[torch.Tensor]]
) -> None:
    """Rotate one shape group's states by ``W`` (``(k, r, r)``) into the fresh buffers, batched."""
    f_m, f_v, f_e, f_h = (list(f) for f in zip(*fresh, strict=True))
    torch._foreach_copy_(f_m, list(torch.bmm(W, _stack_values([st["m"] for st in sts])).unbind(0)))
    w2 = W.square()
    if "v_row" in sts[0]:
        _, rows = _mix_v(None, torch.stack([st["v_row"] for st in sts]), w2)  # (k, r)
        assert rows is not None
        torch._foreach_copy_([st["v_row"] for st in sts], list(rows.unbind(0)))
    else:
        mixed, _ = _mix_v(_stack_values([st["v"] for st in sts], sqrt_v=True), None, w2)
        assert mixed is not None
        torch._foreach_copy_(f_v, list(mixed.unbind(0)))
    if E is not None:
        torch._foreach_copy_(f_e, list(torch.bmm(W, E).unbind(0)))
    if "h" in sts[0]:
        torch._foreach_copy_(f_h, list(torch.bmm(W, _stack_values([st["h"] for st in sts])).unbind(0)))


def _rotate_each(
    opt: Any,
    ps: list[torch.Tensor],
    sts: list[dict[str, Any]],
    W: torch.Tensor,
    E: torch.Tensor | None,
    fresh: list[list[torch.Tensor]],
) -> None:
    """:func:`_rotate_batched` tensor by tensor (mixed layouts, e.g. just after a setting change)."""
    for j, (p, st) in enumerate(zip(ps, sts, strict=True)):
        w = W[j]
        f_m, f_v, f_e, f_h = fresh[j]
        m = _get(st, "m", p)
        assert m is not None
        torch.mm(w, m, out=f_m)
        v_full, v_row, _ = opt._load_v(st, w.shape[0], st["shape"][1], p)
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
        batched = _batchable(opt, sts)
        G = torch.stack([_canon(grads[i].float(), p) for i, p in zip(idx, ps)])  # (k, m, n)
        P = torch.stack([st["P"] for st in sts])  # (k, m, r)
        E = None
        if "e" in sts[0]:
            # r x n slots are stored as is
            E = (
                _stack_values([st["e"] for st in sts])
                if batched
                else torch.stack([_load(st["e"]) for st in sts])
            )
            X = torch.baddbmm(G, P, E)
        else:
            X = G
        ok = torch.isfinite(X.square().sum(dim=(1, 2)))  # (k,): no host sync
        flags = [due(opt, st) for st in sts]
        if not all(flags):  # pinned and non-blocking: a plain copy to the GPU waits for the queued steps
            mask = torch.tensor(flags)
            ok &= mask.pin_memory().to(P.device, non_blocking=True) if P.is_cuda else mask
        X = torch.where(ok[:, None, None], X, 0.0)
        q = X.transpose(1, 2) @ P  # warm start (k, n, r)
        P_new = P
        for _ in range(opt.power_iters):
            P_new = orthonormalize_batched(X @ q)
            q = X.transpose(1, 2) @ P_new
        P_new = torch.where(ok[:, None, None], P_new, P)
        eye = torch.eye(r, device=P.device, dtype=P.dtype)
        W = torch.where(ok[:, None, None], P_new.transpose(1, 2) @ P, eye)  # (k, r, r): old -> new
        group_fresh = [fresh[i] for i in idx]
        if batched:
            _rotate_batched(sts, W, E, group_fresh)
        else:
            _rotate_each(opt, ps, sts, W, E, group_fresh)
        torch._foreach_copy_([st["P"] for st in sts], list(P_new.unbind(0)))
        for st in sts:
            if due(opt, st):
                st["basis_step"] = st["step"] + 1
