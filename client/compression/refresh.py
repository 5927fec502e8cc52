"""Basis refresh of the fused projected step: every due tensor of one shape at once, states rotated in place.

The torch path refreshes a projected tensor's basis inside its step (``MangoAdamW._matrix_step``): from the
error-fed gradient ``X = G + P E`` it takes ``P' = orth(X q)``, ``q = X^T P`` (``power_iters`` warm-started
subspace iterations), rotates the ``r x n`` states by ``W = P'^T P`` (``m <- W m``, ``e <- W e``,
``h <- W h``, ``v`` mixed by ``W * W``) and steps on. Tensor by tensor that is tens of small launches and a
QR each, every ``refresh_every`` steps: on a GPU it cost more than the steps it served.

:func:`refresh` does the same products batched over the tensors that share ``(m, n, r)``: the gradients are
stacked once (in chunks of :data:`REFRESH_STACK_BYTES`), the two products are ``bmm``, the orthogonalization
is :func:`~client.compression.lowrank.orthonormalize_batched` (CholeskyQR2, as the torch path's refresh: a
stack's Householder QR runs matrix by matrix in the GPU solver). It writes the rotated states in fp32 into the
launch's refresh buffers (one ``r x n`` copy each of ``m``, ``v``, ``e``, ``h``; a factored ``v``'s row
statistic is rotated in place), and the matrix kernel of that step reads them there instead of the slots
(``FRESH``) and stores its results into the slots as every step does: the torch path's arithmetic, with no
extra rounding, and the plan's address tables stay valid. Every tensor of the launch goes through the buffers
at such a step; those that are not due keep their basis (``W = I``). A tensor whose error-fed gradient is not
finite keeps its basis (its update is skipped anyway, by the norm pre-pass) and its ``basis_step`` moves on (a
pending refresh after a rank increase is dropped with it): the torch path would retry the refresh at the next
step.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, cast

import torch

from client.compression.fused import fresh_buffers
from client.compression.graphs import record
from client.compression.lowrank import orthonormalize_batched
from client.compression.quant import DenseState, QuantizedTensor, dequantize
from client.compression.slots import Slot, _canon, _get, _load, _mix_v
from client.compression.transfer import upload

__all__ = ["RefreshGraph", "due", "refresh", "refresh_plan"]


def due(opt: Any, st: dict[str, Any]) -> bool:
    """Whether a projected tensor's basis is refreshed at this step (the torch path's rule): its interval is
    over, or a rank increase left random directions in it (``refresh_pending``)."""
    return bool(st.get("refresh_pending", False)) or st["step"] + 1 - st["basis_step"] >= opt.refresh_every


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


@dataclass
class _Inputs:
    """One ``(shape, rank)`` subgroup's inputs to the device tail of a refresh (what :func:`_products`
    computes eagerly from the gradients; static buffers of the CUDA graph when one is replayed)."""

    idx: list[int]  # positions in the launch
    rank: int
    batched: bool
    P: torch.Tensor  # (k, m, r) the old bases
    Y: torch.Tensor  # (k, m, r) X q: the last subspace-iteration product, before its orthogonalization
    ok: torch.Tensor  # (k,) bool: due and finite, so the basis changes
    E: torch.Tensor | None  # (k, r, n) the error buffers, fp32


#: Bytes of the fp32 gradient stack one batched refresh product reads at most: a ``(shape, rank)`` subgroup
#: whose gradients are larger is refreshed in chunks of whole tensors. The stack is the refresh's transient
#: memory (about twice it, with the error-fed copy): unchunked, a 1B-parameter model's largest shape group
#: stacked gigabytes at once, and a projected setting's peak memory rose to AdamW's. 256 MiB keeps each
#: product large enough to fill a GPU.
REFRESH_STACK_BYTES = 1 << 28


def _subgroups(states: list[dict[str, Any]]) -> list[tuple[int, list[int]]]:
    """``(rank, positions)`` of the tensors refreshed together: one ``(shape, rank)`` at a time, in chunks
    of at most :data:`REFRESH_STACK_BYTES` of fp32 gradient (at least one tensor each)."""
    groups: dict[tuple[Any, ...], list[int]] = defaultdict(list)
    for i, st in enumerate(states):
        groups[(st["shape"], st["rank"])].append(i)
    out = []
    for (shape, r), idx in groups.items():
        per = max(1, REFRESH_STACK_BYTES // (4 * shape[0] * shape[1]))
        out += [(r, idx[j : j + per]) for j in range(0, len(idx), per)]
    return out


def _products(
    opt: Any, params: list[torch.Tensor], grads: list[torch.Tensor], states: list[dict[str, Any]]
) -> list[_Inputs]:
    """The products of a refresh that read the gradients (``X = G + P E``, ``q = X^T P``, the subspace
    iterations but the last orthogonalization), per ``(shape, rank)`` subgroup of one launch."""
    out = []
    for r, idx in _subgroups(states):
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
            X = G.baddbmm_(P, E)  # in place: one stack of the chunk's gradients at a time
        else:
            X = G
        ok = torch.linalg.vector_norm(X, dim=(1, 2)).isfinite()  # (k,): no host sync, no temporary stack
        flags = [due(opt, st) for st in sts]
        if not all(flags):  # pinned and non-blocking: a plain copy to the GPU waits for the queued steps
            mask = torch.tensor(flags)
            ok &= upload(mask, P.device)
        X = X.masked_fill_(~ok[:, None, None], 0.0)
        q = X.transpose(1, 2) @ P  # warm start (k, n, r)
        for _ in range(opt.power_iters - 1):
            q = X.transpose(1, 2) @ orthonormalize_batched(X @ q)
        out.append(_Inputs(idx=idx, rank=r, batched=batched, P=P, Y=X @ q, ok=ok, E=E))
    return out


def _tail(
    opt: Any,
    params: list[torch.Tensor],
    states: list[dict[str, Any]],
    x: _Inputs,
    fresh: list[list[torch.Tensor]],
) -> None:
    """The rest of a subgroup's refresh, on the device only (capturable in a CUDA graph when ``batched``):
    the new bases, the rotation ``W`` of the states into ``fresh``, the bases written back."""
    ok = x.ok[:, None, None]
    P_new = torch.where(ok, orthonormalize_batched(x.Y), x.P)
    eye = torch.eye(x.rank, device=x.P.device, dtype=x.P.dtype)
    W = torch.where(ok, P_new.transpose(1, 2) @ x.P, eye)  # (k, r, r): old -> new
    sts = [states[i] for i in x.idx]
    group_fresh = [fresh[i] for i in x.idx]
    if x.batched:
        _rotate_batched(sts, W, x.E, group_fresh)
    else:
        _rotate_each(opt, [params[i] for i in x.idx], sts, W, x.E, group_fresh)
    torch._foreach_copy_([st["P"] for st in sts], list(P_new.unbind(0)))


def _advance(opt: Any, states: list[dict[str, Any]]) -> None:
    for st in states:
        if due(opt, st):
            st["basis_step"] = st["step"] + 1
            st.pop("refresh_pending", None)


@torch.no_grad()
def refresh(opt: Any, params: list[torch.Tensor], grads: list[torch.Tensor], states: list[dict[str, Any]],
            fresh: list[list[torch.Tensor]]) -> None:  # fmt: skip
    """Refresh the due bases among one projected launch's tensors; write every tensor's fp32 states.

    :param params: / ``grads`` / ``states``: the launch's tensors (all of them: the kernel then reads every
        tensor's state from ``fresh``; a tensor that is not due keeps its basis, ``W = I``).
    :param fresh: per tensor, the fp32 ``(m, v, e, h)`` views (``r x n``) the kernel reads at this step.
    """
    for x in _products(opt, params, grads, states):
        _tail(opt, params, states, x, fresh)
    _advance(opt, states)


@dataclass
class RefreshGraph:
    """The device tail of a refresh step (every due projected launch of one fused plan) as a CUDA graph.

    Captured at the plan's second refresh step (after running it eagerly: a plan that a setting change
    replaces within two refresh intervals never pays a capture), replayed at the later ones: the tail is
    most of a refresh's launches (the orthogonalization, the rotations, the copies), and replayed it costs
    one launch. Its inputs are static buffers that :func:`refresh_plan` fills from the eager products; the
    refresh buffers of :func:`~client.compression.fused.fresh_buffers` stay allocated for the plan's life
    (the eager refresh allocates them at each refresh step: the peak memory is the same).
    """

    key: tuple[int, ...]  # ids of the launches it refreshes
    graph: torch.cuda.CUDAGraph
    inputs: dict[int, list[_Inputs]]  # per launch id: the static inputs of its subgroups
    fresh: dict[int, tuple[list[list[torch.Tensor]], torch.Tensor]]  # per launch id: views, address table


def _static_copy(dst: list[_Inputs], src: list[_Inputs]) -> bool:
    """Copy this step's products into the graph's static inputs; False if their layout differs."""
    if [(a.idx, a.rank, a.batched, a.E is None) for a in dst] != [
        (b.idx, b.rank, b.batched, b.E is None) for b in src
    ]:
        return False
    for a, b in zip(dst, src, strict=True):
        for t_dst, t_src in ((a.P, b.P), (a.Y, b.Y), (a.ok, b.ok), (a.E, b.E)):
            if t_dst is not None and t_src is not None:
                t_dst.copy_(t_src)
    return True


@torch.no_grad()
def refresh_plan(
    opt: Any, plan: Any, launches: list[Any], grads: list[torch.Tensor]
) -> dict[int, tuple[list[list[torch.Tensor]], torch.Tensor]]:
    """Refresh the due projected launches of a fused step; return each launch's refresh buffers and their
    address table (by launch id). The caller holds the buffers until the step's kernels are launched: the
    table holds their raw addresses.

    :param plan: the step's :class:`~client.compression.fused.Plan` (it holds the CUDA graph, if any).
    :param launches: the projected launches (``_Group``) with a tensor due for a refresh.
    :param grads: the step's gradients, by item position.

    On a GPU, when every tensor of those launches is due and every subgroup rotates batched (the usual case:
    one setting, every basis refreshed at the same step), the tail runs from a CUDA graph
    (``opt.graph_refresh``, on by default; off, or a failed capture, keeps the eager refresh).
    """
    products = {id(g): _products(opt, g.params, [grads[j] for j in g.index], g.states) for g in launches}
    key = tuple(id(g) for g in launches)
    graphable = (
        bool(getattr(opt, "graph_refresh", True))
        and launches[0].params[0].is_cuda
        and plan.refresh_graph is not False
        and all(due(opt, st) for g in launches for st in g.states)
        and all(x.batched for xs in products.values() for x in xs)
    )
    cached = plan.refresh_graph if graphable else None
    if (
        isinstance(cached, RefreshGraph)
        and cached.key == key
        and all(_static_copy(cached.inputs[id(g)], products[id(g)]) for g in launches)
    ):
        cached.graph.replay()
        for g in launches:
            _advance(opt, g.states)
        return cached.fresh
    fresh = {id(g): fresh_buffers(g) for g in launches}
    for g in launches:
        for x in products[id(g)]:
            _tail(opt, g.params, g.states, x, fresh[id(g)][0])
        _advance(opt, g.states)
    plan.refreshes += 1
    if graphable and plan.refresh_graph is None and plan.refreshes >= 2:  # a plan that lasts: capture
        plan.refresh_graph = _capture(opt, launches, products, fresh, key)
    return fresh


def _capture(
    opt: Any,
    launches: list[Any],
    products: dict[int, list[_Inputs]],
    fresh: dict[int, tuple[list[list[torch.Tensor]], torch.Tensor]],
    key: tuple[int, ...],
) -> RefreshGraph | bool:
    """Record (not run) the tail of every launch with the products as its static inputs; False (and a
    warning) if the capture fails, so that the plan keeps the eager refresh."""

    def tails() -> None:
        for g in launches:
            for x in products[id(g)]:
                _tail(opt, g.params, g.states, x, fresh[id(g)][0])

    try:
        graph, _ = record(tails)
    except Exception as exc:  # a library call that cannot be captured: stay eager
        warnings.warn(f"MangoAdamW: the refresh's CUDA graph capture failed ({exc}); refreshing eagerly",
                      RuntimeWarning, stacklevel=3)  # fmt: skip
        return False
    return RefreshGraph(key=key, graph=graph, inputs=products, fresh=fresh)
