"""MangoAdamW's projected step on FSDP2 parameters with a low-rank basis of the *whole* matrix.

Under ``fully_shard`` each rank holds a row block (dim 0) of every parameter. A basis per local shard (what
:mod:`~client.compression.sharded` started with, still the fallback) projects each block on its own ``r``
directions: the run trains differently from one process (up to ``world * r`` directions per matrix) and
every rank keeps ``r x n`` coefficients of full width. This module steps a projected matrix as one process
would step the whole matrix, with the state split over the ranks (:class:`~client.compression.sizes.
FullBasisSplit`):

* **The canonical view is the single process's** (``(shape[0], -1)``, transposed so ``m <= n``), so the
  result is the single-process optimizer's up to float summation order. The basis ``P`` (``m x r``) spans
  the canonical rows and the coefficients ``P^T G`` (``r x n``) run along the columns. FSDP2's row shards
  are then either the canonical rows (``axis=0``, a wide matrix: the projection contracts over the sharded
  dimension) or its columns (``axis=1``, a tall matrix, whose view is transposed).
* **Who holds what.** ``P`` is split by rows (``axis=0``: the rows of the rank's parameter shard), every
  ``r x n`` state (``m``, ``e``, ``h``, a full ``v``) by columns: each rank owns ``n / world`` columns
  (``axis=0``: a contiguous block of its choice; ``axis=1``: its parameter shard's). The factored ``v``'s
  column statistic is split alike and its row statistic (``r`` values) is kept on every rank. Per-rank
  bytes are the single process's divided by the world size (plus those ``r`` values, held by every rank),
  and a column block holds the single process's quantization blocks when ``n / world`` divides by the
  block size.
* **Collectives per step**, each one call for all such tensors of the step (concatenated):
  ``axis=1`` all-gathers ``P`` (``m x r``) first. ``axis=0`` all-reduces (sums) ``P_k^T G_k`` into
  ``P^T G`` (``r x n``); ``axis=1`` computes its columns ``P^T G_k`` alone. The factored ``v`` all-reduces
  the ``r`` row sums of ``c^2``. Each rank updates its columns (error feedback, quantization, moments),
  then ``axis=0`` all-gathers the ``r x n`` normalized update ``U`` (each rank needs ``P_k U`` for its
  rows); ``axis=1`` applies ``P U_k`` to its own columns. A step therefore costs, per ``axis=0`` tensor,
  one all-reduce and one all-gather of ``r x n`` values: the price of the whole-matrix basis (a per-shard
  basis needs none).
* **Basis refresh** (every ``refresh_every`` steps, tensor by tensor: its collectives are not batched,
  a refresh being rare): the single process's warm-started power iteration on the error-fed gradient
  ``X = G + P E``, with its products summed over the ranks (``axis=0``: ``X^T P``
  all-reduced, ``X q`` all-gathered by rows; ``axis=1``: ``X q`` all-reduced, ``X^T P`` local) and the QR
  of the ``m x r`` product done on every rank (the same input, so the same basis; each keeps its rows).
  The rotation ``W = P_new^T P_old`` (``r x r``) is all-reduced for ``axis=0``. The random start of a
  first basis is drawn from the optimizer's generator on every rank, as one process draws it, and
  broadcast from the mesh's first rank, so the ranks agree even where their generators have drifted.
* **Setting changes** gather the whole state, run the single process's conversion on it, and keep the
  rank's part (:func:`convert`): rare, and exactly the single process's logic.
* **Checkpoints**: the per-rank pieces (``P``'s rows, the column blocks) have the same shape on every rank,
  so :func:`~client.compression.sharded.shard_entry` stacks them over the ranks; a resume needs the same
  world size and sharding (the state is marked ``full_basis``; a load onto another split is refused).

Used when the parameter is a DTensor on a 1-D mesh with placement ``Shard(0)``, ``ef_scope="subspace"``,
and dim 0, ``m`` and ``n`` divide by the world size (:func:`plan`); otherwise each shard keeps its own
basis. Statistics stay per rank (``||G_k||^2 - ||x_k||^2`` sums over the ranks to the whole tail).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from client.compression.feedback import shift_compress
from client.compression.lowrank import init_q, orthonormalize_batched
from client.compression.sharded import is_dtensor
from client.compression.sizes import FullBasisSplit, full_basis_split
from client.compression.slots import (
    _TINY,
    _from_param_order,
    _get,
    _load,
    _load_sqrt_v,
    _mix_v,
    _refactor,
    _to_param_order,
    saved_shape,
)

__all__ = ["Plan", "agree", "check_entry", "convert", "eligible", "plan", "step", "world_size"]

_SLOTS = ("m", "e", "h")  # the r x n states held by columns (v apart: it may be factored)


@dataclass(frozen=True)
class Plan:
    """Where one rank's share of a projected matrix lies: the split, the mesh's group, this rank's index."""

    split: FullBasisSplit
    group: Any  # torch.distributed ProcessGroup of the parameter's 1-D mesh
    world: int
    index: int  # this rank's position on the mesh

    @property
    def row_slice(self) -> slice:
        """This rank's rows of ``P`` (canonical rows)."""
        return slice(self.index * self.split.rows, (self.index + 1) * self.split.rows)

    @property
    def col_slice(self) -> slice:
        """This rank's columns of the ``r x n`` states (canonical columns)."""
        return slice(self.index * self.split.cols, (self.index + 1) * self.split.cols)


def eligible(p: torch.Tensor, ef_scope: str) -> bool:
    """Whether ``p`` gets the whole matrix's basis (module docstring): a DTensor on a 1-D mesh, placed
    ``Shard(0)``, with an even :func:`~client.compression.sizes.full_basis_split`, and
    ``ef_scope="subspace"``."""
    return ef_scope == "subspace" and plan(p) is not None


def plan(p: torch.Tensor) -> Plan | None:
    """The :class:`Plan` of DTensor parameter ``p``, ``None`` where the state cannot be split evenly."""
    if not is_dtensor(p):
        return None
    from torch.distributed.tensor import Shard

    mesh = p.device_mesh  # type: ignore[attr-defined]
    placements = tuple(p.placements)  # type: ignore[attr-defined]
    if mesh.ndim != 1 or placements != (Shard(0),):
        return None
    split = full_basis_split(p.shape, mesh.size())
    if split is None:
        return None
    return Plan(split=split, group=mesh.get_group(), world=mesh.size(), index=mesh.get_local_rank())


def world_size(p: torch.Tensor) -> int:
    """The ranks a whole-matrix state of ``p`` would be split over (1: none, ``p`` has no :func:`plan`)."""
    pl = plan(p)
    return pl.world if pl is not None else 1


def _whole(opt: Any, p: torch.Tensor, st: dict[str, Any], group: dict[str, Any]) -> bool:
    """Whether ``p`` steps (or, without state yet, will step) on the whole matrix's basis: the same answer
    on every rank (it depends on shapes, the setting and the state's marks, which the ranks share)."""
    if st:
        return bool(st.get("full_basis")) and st.get("kind") == "matrix" and st["rank"] > 0
    if p.ndim < 2 or p.numel() < opt.min_compress_numel or not eligible(p, opt.ef_scope):
        return False
    split = plan(p).split  # type: ignore[union-attr]
    return bool(opt._eff_rank(split.m, split.n, group.get("project", True), opt._group_setting(group)) > 0)


def agree(opt: Any, items: list[tuple[int, torch.Tensor, dict[str, Any]]], finite: list[bool]) -> list[bool]:
    """``finite`` with the whole-basis tensors' flags agreed over their ranks (skipped everywhere when a
    shard anywhere is not finite): their step is collective, so a rank may not skip alone. One all-reduce
    of a few flags, only when there are such tensors."""
    idx = [j for j, (_, p, group) in enumerate(items) if _whole(opt, p, opt.state.get(p, {}), group)]
    if not idx:
        return finite
    pl = plan(items[idx[0]][1])
    assert pl is not None
    bad = torch.tensor([0.0 if finite[j] else 1.0 for j in idx], device=items[idx[0]][1].device)
    dist.all_reduce(bad, op=dist.ReduceOp.MAX, group=pl.group)
    out = list(finite)
    for j, b in zip(idx, bad.tolist()):
        out[j] = b == 0.0
    return out


# ------------------------------------------------------------------------------------------ collectives
def _all_reduce(tensors: list[torch.Tensor], group: Any) -> list[torch.Tensor]:
    """Sums of ``tensors`` over the ranks, in one collective (concatenated, then split)."""
    if not tensors:
        return []
    flat = torch.cat([t.reshape(-1).float() for t in tensors])
    dist.all_reduce(flat, group=group)
    return [x.view(t.shape) for x, t in zip(flat.split([t.numel() for t in tensors]), tensors)]


def _all_gather(tensors: list[torch.Tensor], dims: list[int], group: Any, world: int) -> list[torch.Tensor]:
    """Each tensor's pieces from every rank (same shapes), concatenated along its ``dims`` entry in rank
    order; one collective."""
    if not tensors:
        return []
    flat = torch.cat([t.reshape(-1).float() for t in tensors])
    out = [torch.empty_like(flat) for _ in range(world)]
    dist.all_gather(out, flat, group=group)
    sizes = [t.numel() for t in tensors]
    pieces = [o.split(sizes) for o in out]
    return [
        torch.cat([pieces[k][i].view(t.shape) for k in range(world)], dim=d)
        for i, (t, d) in enumerate(zip(tensors, dims))
    ]


def _broadcast(t: torch.Tensor, group: Any) -> torch.Tensor:
    dist.broadcast(t, src=dist.get_global_rank(group, 0), group=group)
    return t


# ------------------------------------------------------------------------------------------ the views
def _canon_local(t: torch.Tensor, pl: Plan) -> torch.Tensor:
    """This rank's block of the whole matrix's canonical view: ``(rows, n)`` for ``axis=0``, ``(m, cols)``
    for ``axis=1`` (a view of ``t``, the local shard, when contiguous)."""
    mat = t.reshape(t.shape[0], -1)
    return mat if pl.split.axis == 0 else mat.T


def _power(
    opt: Any, X: torch.Tensor, P_old: torch.Tensor | None, r: int, pl: Plan
) -> tuple[torch.Tensor, torch.Tensor]:
    """The single process's ``_new_basis`` on the whole ``X`` (this rank's block): warm-started subspace
    iteration, products summed over the ranks. Returns ``(P_rows, P_full)``: this rank's rows and all."""
    X = X.float()
    n = pl.split.n
    cols = pl.col_slice if pl.split.axis == 1 else slice(None)
    if P_old is None or P_old.shape[1] != r:
        q = _broadcast(init_q(n, r, opt._gen, device=X.device).contiguous(), pl.group)[cols]  # (n or cols, r)
        iters = opt.power_iters + 1
    else:  # P_old: this rank's rows (axis 0) or the whole basis (axis 1)
        q = X.T @ P_old
        if pl.split.axis == 0:
            q = _all_reduce([q], pl.group)[0]
        iters = opt.power_iters
    P = q  # overwritten below (iters >= 1)
    for i in range(iters):
        y = X @ q  # axis 0: (rows, r), this rank's rows; axis 1: (m, r), a partial sum
        if pl.split.axis == 0:
            y = _all_gather([y], [0], pl.group, pl.world)[0]
        else:
            y = _all_reduce([y], pl.group)[0]
        P = orthonormalize_batched(y)  # the same (m, r) input on every rank: the same basis
        if i + 1 < iters:
            q = X.T @ (P[pl.row_slice] if pl.split.axis == 0 else P)
            if pl.split.axis == 0:
                q = _all_reduce([q], pl.group)[0]
    return P[pl.row_slice].contiguous(), P


# ------------------------------------------------------------------------------------------------ step
@dataclass
class _Item:
    """One tensor's working values through the phases of :func:`step`."""

    lp: torch.Tensor  # the local shard (updated in place)
    G: torch.Tensor  # (rows, n) or (m, cols): this rank's block of the canonical gradient
    st: dict[str, Any]
    group: dict[str, Any]
    pl: Plan
    setting: Any
    E: torch.Tensor | None = None  # (r, cols)
    H: torch.Tensor | None = None
    exp_avg: torch.Tensor | None = None
    v_full: torch.Tensor | None = None
    v_row: torch.Tensor | None = None  # (r,) on every rank
    v_col: torch.Tensor | None = None  # (cols,)
    P: torch.Tensor | None = None  # this rank's rows (axis 0) / whole (axis 1, after the gather)
    P_rows: torch.Tensor | None = None  # the rows this rank stores
    x: torch.Tensor | None = None  # (r, cols): this rank's columns of P^T G
    c: torch.Tensor | None = None
    sq_row: torch.Tensor | None = None
    sqrt_v: torch.Tensor | None = None  # (r, cols): the factored v's square root read this step
    upd: torch.Tensor | None = None
    stores: dict[str, Any] = field(default_factory=dict)


def step(
    opt: Any, work: list[tuple[torch.Tensor, torch.Tensor, dict[str, Any], dict[str, Any]]], stats: Any
) -> None:
    """Step the projected whole-basis tensors ``work`` (``(param, local grad, state, group)``), grouped by
    process group, every collective batched over the group's tensors (module docstring)."""
    by_group: dict[int, list[_Item]] = defaultdict(list)
    for p, g, st, group in work:
        pl = plan(p)
        assert pl is not None and opt.ef_scope == "subspace", (
            "full_basis state on a parameter it does not fit"
        )
        lp = p.to_local()  # type: ignore[attr-defined]
        G = _canon_local(g if g.dtype == torch.float32 else g.float(), pl)
        it = _Item(lp=lp, G=G, st=st, group=group, pl=pl, setting=opt._group_setting(group))
        by_group[id(pl.group)].append(it)
    for items in by_group.values():
        _step_group(opt, items, stats)


def _step_group(opt: Any, items: list[_Item], stats: Any) -> None:
    pl0 = items[0].pl
    group, world = pl0.group, pl0.world
    for it in items:  # read every state first (as the single process's step does)
        st, r, cols = it.st, it.st["rank"], it.pl.split.cols
        it.E = _load(st["e"]) if "e" in st else None
        it.exp_avg = _load(st["m"]) if "m" in st else torch.zeros(r, cols, device=it.G.device)
        it.v_full, it.v_row, it.v_col = opt._load_v(st, r, cols, it.lp, it.setting)
        it.H = _load(st["h"]) if it.setting.gamma > 0 and "h" in st else None
        it.P = it.P_rows = st.get("P")
        stats.energy.append(it.G.square().sum())

    # phase 0: the whole P of axis-1 tensors, the whole E of axis-0 tensors whose basis is refreshed now
    due = [_due(opt, it.st) for it in items]
    gather = [it for it in items if it.pl.split.axis == 1 and it.P is not None]
    gather_e = [it for it, d in zip(items, due) if d and it.pl.split.axis == 0 and it.E is not None]
    pieces = [it.P for it in gather if it.P is not None] + [it.E for it in gather_e if it.E is not None]
    full = _all_gather(
        pieces,
        [0] * len(gather) + [1] * len(gather_e),
        group,
        world,
    )
    for it, P in zip(gather, full[: len(gather)]):
        it.P = P
    full_e = {id(it): E for it, E in zip(gather_e, full[len(gather) :])}

    # phase 1: basis refresh (error-fed gradient, distributed power iteration, states rotated)
    for it, d in zip(items, due):
        if d:
            _refresh(opt, it, full_e.get(id(it)))

    # phase 2: the coefficients P^T G (axis 0: summed over the ranks; axis 1: this rank's columns alone)
    rows_items = [it for it in items if it.pl.split.axis == 0]
    sums = _all_reduce([it.P.T @ it.G for it in rows_items], group)  # type: ignore[union-attr]
    for it, x in zip(rows_items, sums):
        it.x = x[:, it.pl.col_slice]
    for it in items:
        if it.pl.split.axis == 1:
            it.x = it.P.T @ it.G  # type: ignore[union-attr]

    # phase 3: feedback, quantization and the moments on this rank's columns
    for it in items:
        _compress(opt, it, stats)
    factored = [it for it in items if it.v_full is None]
    row_sums = _all_reduce([it.sq_row for it in factored], group)  # type: ignore[misc]
    for it, s in zip(factored, row_sums):
        it.v_row.mul_(it.group["betas"][1]).add_(s / it.pl.split.n, alpha=1 - it.group["betas"][1])  # type: ignore[union-attr]

    # phase 4: the normalized update U, gathered where a rank's rows need every column
    for it in items:
        _normalize(it)
    ups = _all_gather([it.upd for it in rows_items], [1] * len(rows_items), group, world)  # type: ignore[misc]
    for it, U in zip(rows_items, ups):
        it.upd = U
    for it in items:
        _apply(opt, it)


def _due(opt: Any, st: dict[str, Any]) -> bool:
    return bool(
        "P" not in st
        or st.get("refresh_pending", False)
        or st["step"] + 1 - st["basis_step"] >= opt.refresh_every
    )


def _refresh(opt: Any, it: _Item, E_full: torch.Tensor | None) -> None:
    """The single process's refresh (``_matrix_step``), distributed: ``X = G + P E``, a new basis, the
    ``r x n`` states rotated by ``W = P_new^T P_old``."""
    r, pl = it.st["rank"], it.pl
    X = it.G
    if it.E is not None and it.P is not None:
        X = X + (it.P @ E_full if pl.split.axis == 0 else it.P @ it.E)  # type: ignore[operator]
    P_rows, P_full = _power(opt, X, it.P if it.P is not None else None, r, pl)
    P_new = P_rows if pl.split.axis == 0 else P_full
    if it.P is not None and it.P.shape[1] == r:
        W = P_new.T @ it.P  # (r, r): old coefficients -> new
        if pl.split.axis == 0:
            W = _all_reduce([W], pl.group)[0]
        it.exp_avg = W @ it.exp_avg  # type: ignore[operator]
        it.v_full, it.v_row = _mix_v(it.v_full, it.v_row, W.square())
        it.H = W @ it.H if it.H is not None else None
        it.E = W @ it.E if it.E is not None else None
    it.P, it.P_rows = P_new, P_rows
    it.stores["P"] = P_rows


def _compress(opt: Any, it: _Item, stats: Any) -> None:
    """``c`` = the compressed coefficients of this rank's columns; error feedback and the moments."""
    s, lp = it.setting, it.lp
    bits, gamma = s.bits, s.gamma
    beta1, beta2 = it.group["betas"]
    x = it.x
    assert x is not None and it.exp_avg is not None

    def quantizer(u: torch.Tensor) -> torch.Tensor:
        out = opt._roundtrip(u, bits, lp)
        stats.err.append((u - out).square().sum())
        stats.tot.append(u.square().sum())
        return out

    tail = it.G.square().sum() - x.square().sum()  # per rank; the ranks' terms sum to the whole tail
    c, e_new, _ = shift_compress(x, it.E, it.H, gamma, opt.ef_beta, quantizer)
    stats.err.append(tail)
    stats.tot.append(tail)
    stats.tail.append(tail)
    it.stores["e"] = opt._store(e_new, bits) if opt.error_feedback else None
    it.stores["h"] = opt._store(c, bits) if gamma > 0 else None
    wd, lr = it.group["weight_decay"], it.group["lr"]
    if wd != 0:
        lp.mul_(1 - lr * wd)
    it.exp_avg.lerp_(c, 1 - beta1)
    if it.v_full is not None:
        it.v_full.mul_(beta2).addcmul_(c, c, value=1 - beta2)
    else:
        assert it.v_row is not None and it.v_col is not None
        sq = c.square().add_(_TINY)
        # the history's rank-1 estimate (statistics before this step) plus this step's c^2, as the
        # single process reads it (MangoAdamW._matrix_step), before the statistics fold this step in
        hist = torch.outer(it.v_row, it.v_col).div_(it.v_row.mean().clamp_min(_TINY))
        it.sqrt_v = hist.mul_(beta2).add_(sq, alpha=1 - beta2).sqrt_()
        it.sq_row = sq.sum(dim=1)  # (r,): summed over the ranks' columns next
        it.v_col.mul_(beta2).add_(sq.mean(dim=0), alpha=1 - beta2)  # (cols,): every row is here
    it.c = c


def _normalize(it: _Item) -> None:
    beta2 = it.group["betas"][1]
    step = float(it.st["step"] + 1)
    bias_correction2_sqrt = (1 - beta2**step) ** 0.5
    if it.v_full is not None:
        sqrt_v = it.v_full.sqrt()
    else:
        assert it.sqrt_v is not None
        sqrt_v = it.sqrt_v
    denom = (sqrt_v / bias_correction2_sqrt).add_(it.group["eps"])
    it.upd = it.exp_avg / denom  # type: ignore[operator]


def _apply(opt: Any, it: _Item) -> None:
    """``p <- p - s lr/bc1 * P U`` on this rank's block, then the states are stored."""
    beta1 = it.group["betas"][0]
    st, r, pl, bits = it.st, it.st["rank"], it.pl, it.setting.bits
    step = float(st["step"] + 1)
    scale = opt.proj_scale if opt.proj_scale is not None else math.sqrt(pl.split.m / r)
    step_size = it.group["lr"] / (1 - beta1**step) * scale
    full = it.P @ it.upd  # type: ignore[operator]  # axis 0: (rows, n); axis 1: (m, cols)
    if it.lp.is_contiguous():
        _canon_local(it.lp, pl).add_(full, alpha=-step_size)  # in place, through a view of the shard
    else:
        block = (full.T if pl.split.axis == 1 else full).reshape(it.lp.shape)
        it.lp.add_(block.to(it.lp.dtype), alpha=-step_size)
    st["step"] += 1
    st["m"] = opt._store(it.exp_avg, bits)
    opt._store_v(st, it.v_full, it.v_row, it.v_col, bits, it.lp)
    for key in ("e", "h"):
        val = it.stores.get(key)
        if val is None:
            st.pop(key, None)
        else:
            st[key] = val
    if "P" in it.stores:
        st["P"] = it.stores["P"]
        st["basis_step"] = st["step"]
        st.pop("refresh_pending", None)


# ------------------------------------------------------------------------------------- setting changes
def convert(opt: Any, p: torch.Tensor, st: dict[str, Any], setting: Any) -> None:
    """Re-express a ``full_basis`` state under ``setting`` as one process would (``MangoAdamW._convert`` on
    the whole matrix), then keep this rank's part: the columns at rank > 0, the parameter shard's rows
    (the local layout, as every rank-0 state is held) at rank 0. A change from rank 0 to rank 0 (bits,
    gamma) is the shard's own, with no communication.

    Every rank gathers the whole fp32 state (a transient ``m x n`` at rank 0), converts it and stores its
    part at the new width (the conversion's own rounding, then this rank's blocks: a second rounding of
    values already on the grid where the blocks coincide). Before a rank change, which may draw random
    directions, every rank takes the generator state of the mesh's first rank, so they draw alike.
    """
    pl = plan(p)
    assert pl is not None
    lp = p.to_local()  # type: ignore[attr-defined]
    whole = torch.empty(p.shape, dtype=torch.float32, device=lp.device)  # the single process's parameter
    r_new = opt._eff_rank(pl.split.m, pl.split.n, st.get("project", True), setting)
    if "m" not in st:  # initialized, never stepped: nothing to convert
        st["rank"] = r_new
        return
    if st["rank"] == 0 and r_new == 0:  # rank 0 stays in the shard's layout: converted there, as before
        opt._convert(lp, st, setting)
        return
    tmp = {
        k: v
        for k, v in st.items()
        if k in ("kind", "project", "rank", "step", "basis_step", "refresh_pending")
    }
    tmp["shape"] = (pl.split.m, pl.split.n)
    if st["rank"] > 0:
        keys = [k for k in _SLOTS if k in st]
        vals = [_load(st[k]) for k in keys]
        dims = [1] * len(keys)
        if "v_row" in st:
            vals.append(st["v_col"])
            dims.append(0)
        else:
            vals.append(_load_sqrt_v(st["v"]))
            dims.append(1)
        vals.append(st["P"])
        dims.append(0)
        got = _all_gather(vals, dims, pl.group, pl.world)
        tmp.update(zip(keys, got))
        if "v_row" in st:
            tmp["v_row"], tmp["v_col"] = st["v_row"].clone(), got[len(keys)]
        else:
            tmp["v"] = got[len(keys)]
        tmp["P"] = got[-1]
    else:  # the local layout: every state in the parameter shard's order, gathered by rows
        keys = [k for k in _SLOTS if k in st]
        vals = [_to_param_order(_get(st, k, lp), lp) for k in keys]  # type: ignore[arg-type]
        if "v_row" in st:
            v_loc = torch.outer(st["v_row"], st["v_col"]) / st["v_row"].mean().clamp_min(_TINY)
        else:
            v_loc = _from_param_order(_load_sqrt_v(st["v"]), lp)
        vals.append(_to_param_order(v_loc, lp))
        got = _all_gather([v.contiguous() for v in vals], [0] * len(vals), pl.group, pl.world)
        tmp.update(zip(keys, got))  # fp32 in the whole parameter's order, as the single process stores them
        tmp["v"] = got[-1]
    if (
        r_new != st["rank"]
    ):  # the conversion may draw (new directions, a randomized SVD): same draws everywhere
        gen_state = _broadcast(opt._gen.get_state().to(lp.device), pl.group)
        opt._gen.set_state(gen_state.cpu())
    opt._convert(whole, tmp, setting)
    for k in (*_SLOTS, "v", "v_row", "v_col", "P", "refresh_pending"):
        st.pop(k, None)
    st["rank"], st["basis_step"] = tmp["rank"], tmp["basis_step"]
    if tmp.get("refresh_pending"):
        st["refresh_pending"] = True
    bits = setting.bits
    if r_new > 0:
        st["P"] = tmp["P"][pl.row_slice].contiguous()
        cols = pl.col_slice
        for k in _SLOTS:
            if k in tmp:
                st[k] = opt._store(_get(tmp, k, whole)[:, cols].contiguous(), bits)  # type: ignore[index]
        v_full, v_row, v_col = opt._load_v(tmp, r_new, pl.split.n, whole, setting)
        if v_full is not None:
            v_full = v_full[:, cols].contiguous()
        if v_col is not None:
            v_col = v_col[cols].contiguous()
        opt._store_v(st, v_full, v_row, v_col, bits, lp)
        return
    # rank 0: the parameter shard's rows of each whole state, stored as a local rank-0 state is
    rows = slice(pl.index * lp.shape[0], (pl.index + 1) * lp.shape[0])
    identity = bits == 32

    def mine(x: torch.Tensor) -> torch.Tensor:  # canonical whole -> this shard's canonical block
        return _from_param_order(_to_param_order(x, whole)[rows].contiguous(), lp)

    for k in _SLOTS:
        if k in tmp:
            st[k] = opt._put(mine(_get(tmp, k, whole)), 32 if (k == "e" and identity) else bits, lp)  # type: ignore[arg-type]
    v_full, v_row, v_col = opt._load_v(tmp, pl.split.m, pl.split.n, whole, setting)
    v_whole = _refactor(v_full, v_row, v_col, False)[0]
    assert v_whole is not None
    opt._store_v(st, *_refactor(mine(v_whole), None, None, opt._factored(setting)), bits, lp)


# ------------------------------------------------------------------------------------------- checkpoints
def check_entry(p: torch.Tensor, entry: dict[str, Any], where: str) -> None:
    """``ValueError`` when a saved ``full_basis`` entry does not fit parameter ``p`` on this mesh."""
    pl = plan(p)
    if pl is None:
        raise ValueError(
            f"{where}: saved with a whole-matrix basis split over the ranks (FSDP2), but this parameter is "
            "not sharded that way here; resume on the same world size and sharding"
        )
    r = entry.get("rank")
    if not isinstance(r, int) or not 0 <= r < pl.split.m:
        raise ValueError(f"{where}: rank {r!r} is not in [0, {pl.split.m})")
    if r == 0:
        return
    cols = pl.split.cols
    expected = {"P": (pl.split.rows, r), "v_row": (r,), "v_col": (cols,)}
    for k, v in entry.items():
        want = expected.get(k, (r, cols) if k in (*_SLOTS, "v") else None)
        if want is None:
            continue
        shape = saved_shape(v)
        if shape != want:
            raise ValueError(f"{where}: {k} has shape {shape}, expected {want} (this rank's share)")
