"""Triton kernels of the projected (rank ``r > 0``) fused ``MangoAdamW`` step (host side:
:mod:`client.compression.fused`).

A projected step is three launches over every projected tensor of the model (plus the element-wise
:func:`~client.compression.kernels.triton_step.matrix_step_kernel` between them):

1. :func:`project_kernel` - ``X = P^T G`` (``r x n`` coefficients, fp32 scratch): a program owns ``BN``
   columns of one tensor, walks its ``m`` rows ``BK`` at a time and multiplies on the tensor cores
   (``tl.dot``, ``r`` padded to ``R >= 16``). The gradient is read once.
2. ``matrix_step_kernel(SRC=1)`` - error feedback, the gamma shift, the ``b``-bit channel and the moments on
   the ``r x n`` coefficients, block by block; writes ``U = m / (sqrt(v / bc2) + eps)`` over ``X``.
3. :func:`backproject_kernel` - ``p <- p (1 - lr wd) - s lr / bc1 * P U`` on ``BM x BN`` tiles of the
   canonical ``m x n`` view (the parameter is read and written once; ``P U`` never reaches memory).

Bytes per parameter value (fp32 parameters and gradients): 4 (gradient) + 8 (parameter), the ``r x n``
states and ``P`` being ``r / m`` of that: about 12 against fused AdamW's 28. The canonical view is the
parameter's ``(shape[0], -1)`` matrix, or its transpose when that has more rows than columns; ``meta`` gives
each tensor's ``m`` and ``n``; element ``(i, j)`` of the canonical view is at ``i n + j`` in the parameter, or
``j m + i`` when it is the transpose (``TRANS``, one launch per orientation), so both are read in place.

Tables: ``prog`` int32 ``[n_programs, 3]`` (tensor, first row, first column); ``addr`` int64 ``[T, 2]``
(``P``: fp32 ``m x r`` row-major, the ``X`` / ``U`` scratch: fp32 ``r x n``); ``meta`` int64 ``[T, 5]``
(``m``, ``n``, ``r``, position in the step's norm vector, parameter address); ``scale``
float32 ``[T]`` (``proj_scale``, by default ``sqrt(m / r)``).

``ALIGN`` (both kernels): the host's promise (``fused``'s ``_Proj.aligned`` and the gradients' addresses)
that the gradient, parameter and ``X`` / ``U`` addresses are 16-byte aligned and every ``m`` and ``n`` a
multiple of 4. Triton cannot see that through the address tables, and without it every gradient and
parameter access is a 4-byte one; with it they become 16-byte ones (``results/cpu-s42/proj_layouts.py``).

``DOT_PRECISION`` (``"tf32x3"``): fp32 products on the tensor cores with three tf32 passes, about fp32's
accuracy (``"tf32"``: one pass, ~1e-3 relative; ``"ieee"``: CUDA-core FMAs, several times slower at
rank 64).
"""

from __future__ import annotations

import triton
import triton.language as tl

__all__ = ["DOT_PRECISION", "backproject_kernel", "project_kernel"]

DOT_PRECISION: tl.constexpr = tl.constexpr("tf32x3")


@triton.jit
def _pp(ptr, DTYPE: tl.constexpr, ALIGN: tl.constexpr = False):
    """The pointer stored at ``ptr``; with ``ALIGN`` the promise that it is 16-byte aligned."""
    q = tl.load(ptr).to(tl.pointer_type(DTYPE))
    if ALIGN:
        q = tl.multiple_of(q, 16)
    return q


@triton.jit
def _tile(prog_ptr, meta_ptr, norm_ptr, pid, ANY: tl.constexpr = False, ALIGN: tl.constexpr = False):
    """A program's tensor ``t``, first row and column, the tensor's ``m``, ``n``, ``r``, and whether its
    gradient is finite (``ANY``: True whatever the norm slot holds). ``ALIGN``: the promise that ``m`` and
    ``n`` are multiples of 4 (the tiles' first row and column are multiples of 16 by construction)."""
    t = tl.load(prog_ptr + pid * 3)
    M = meta_ptr + t * 5
    if ANY:  # noqa: SIM108 (a Triton constexpr branch)
        fin = t >= 0
    else:
        fin = tl.load(norm_ptr + tl.load(M + 3)) < float("inf")
    i0 = tl.load(prog_ptr + pid * 3 + 1)
    j0 = tl.load(prog_ptr + pid * 3 + 2)
    m = tl.load(M)
    n = tl.load(M + 1)
    if ALIGN:
        i0 = tl.multiple_of(i0, 16)
        j0 = tl.multiple_of(j0, 16)
        m = tl.multiple_of(m, 4)
        n = tl.multiple_of(n, 4)
    return t, i0, j0, m, n, tl.load(M + 2), fin


@triton.jit
def _grad_tile(g_ptr, i0, cols, col_ok, m, n, BK: tl.constexpr, TRANS: tl.constexpr, CACHE: tl.constexpr):
    """Rows ``i0 .. i0 + BK`` of the canonical gradient view at columns ``cols``, fp32 (zeros outside)."""
    ki = i0 + tl.arange(0, BK)
    if TRANS:  # canonical (i, j) at j m + i; the unit stride spelled out so the compiler vectorizes
        goff = ki[:, None].to(tl.int64) + cols[None, :].to(tl.int64) * m
    else:  # at i n + j
        goff = ki[:, None].to(tl.int64) * n + cols[None, :].to(tl.int64)
    mask = (ki < m)[:, None] & col_ok[None, :]
    return tl.load(g_ptr + goff, mask=mask, other=0.0, cache_modifier=CACHE).to(tl.float32)


@triton.jit
def project_kernel(
    prog_ptr,  # int32 [n_programs, 3]: tensor, (unused), first column
    addr_ptr,  # int64 [T, 2]: P, X
    meta_ptr,  # int64 [T, 5]
    grad_ptr,  # int64 [T]: gradient addresses
    norm_ptr,  # float32 [n_items]: squared gradient norms (a NaN / inf one skips the tensor)
    sample_ptr,  # float32 [n_programs] out: the gradient at the program's first column of row 0
    PDTYPE: tl.constexpr,
    R: tl.constexpr,  # the rank padded to a power of two >= 16
    BK: tl.constexpr,
    BN: tl.constexpr,
    PRECISION: tl.constexpr,
    TRANS: tl.constexpr,  # the canonical view is the parameter's transpose
    NORMS: tl.constexpr = 0,  # add sum G^2 of the columns into the tensor's norm slot (no pre-pass ran)
    ALIGN: tl.constexpr = False,  # every gradient and X is 16-byte aligned, every m and n a multiple of 4
):
    """``X[:, j0:j0+BN] = P^T G[:, j0:j0+BN]`` for one tensor (module docstring). With ``NORMS`` every
    tensor is projected (its norm is not whole yet) and the program adds its columns' ``sum G^2`` into the
    tensor's slot of ``norm_ptr``; without (0), a tensor whose pre-pass norm is not finite is left alone.

    ``NORMS = 1`` squares the tile the product reads; ``2`` loads the tile a second time for the squares (a
    plain load that L2 mostly serves, issued a turn ahead). At ``R < 64`` (``mma.sync`` products) Triton 3.6
    and 3.9 lay a tile that two layouts read out in shared memory unswizzled, where the product alone gets a
    swizzled layout; the second load leaves the product's tile to the product alone."""
    pid = tl.program_id(0)
    t, _, j0, m, n, r, fin = _tile(prog_ptr, meta_ptr, norm_ptr, pid, NORMS, ALIGN)
    p_ptr = _pp(addr_ptr + t * 2, tl.float32)
    x_ptr = _pp(addr_ptr + t * 2 + 1, tl.float32, ALIGN)
    g_ptr = _pp(grad_ptr + t, PDTYPE, ALIGN)
    cols = j0 + tl.arange(0, BN)
    col_ok = cols < tl.where(fin, n, 0)
    kr = tl.arange(0, R)
    r_ok = kr < r
    acc = tl.zeros([R, BN], dtype=tl.float32)
    gsq = tl.zeros([BK, BN], dtype=tl.float32)
    if NORMS == 2:  # the second read runs a tile ahead of its squares, so its latency hides behind a turn
        g2 = _grad_tile(g_ptr, 0, cols, col_ok, m, n, BK, TRANS, ".cg")
    for i0 in range(0, m, BK):
        ki = i0 + tl.arange(0, BK)
        k_ok = ki < m
        pt = tl.load(p_ptr + ki[:, None] * r + kr[None, :], mask=k_ok[:, None] & r_ok[None, :], other=0.0)
        gt = _grad_tile(g_ptr, i0, cols, col_ok, m, n, BK, TRANS, "")
        acc = tl.dot(tl.trans(pt), gt, acc, input_precision=PRECISION)
        if NORMS == 2:  # a second read of the tile, kept apart from the product's by its cache hint
            g2_next = _grad_tile(g_ptr, i0 + BK, cols, col_ok, m, n, BK, TRANS, ".cg")
            gsq += g2 * g2
            g2 = g2_next
        elif NORMS:
            gsq += gt * gt
    tl.store(x_ptr + kr[:, None] * n + cols[None, :], acc, mask=r_ok[:, None] & col_ok[None, :])
    if NORMS:
        total = tl.sum(tl.sum(gsq, axis=1), axis=0)
        tl.atomic_add(norm_ptr + tl.load(meta_ptr + t * 5 + 3), total, sem="relaxed")
    first = j0 * m if TRANS else j0  # the gradient at canonical (0, j0)
    tl.store(sample_ptr + pid, tl.load(g_ptr + first, mask=fin, other=0.0).to(tl.float32))


@triton.jit
def backproject_kernel(
    prog_ptr,  # int32 [n_programs, 3]: tensor, first row, first column
    addr_ptr,  # int64 [T, 2]: P, U
    meta_ptr,  # int64 [T, 5]
    norm_ptr,  # float32 [n_items]
    scale_ptr,  # float32 [T]: proj_scale of each tensor
    scal_ptr,  # float32 [2+]: this step's 1 - lr * weight_decay, lr / (1 - beta1^step) (matrix_step_kernel's)
    PDTYPE: tl.constexpr,
    R: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    PRECISION: tl.constexpr,
    TRANS: tl.constexpr,  # the canonical view is the parameter's transpose: the tile is built as (P U)^T
    ALIGN: tl.constexpr = False,  # every parameter and U is 16-byte aligned, every m and n a multiple of 4
):
    """``p = p * decay - step_size * scale * (P U)`` on one ``BM x BN`` tile of the canonical view."""
    pid = tl.program_id(0)
    decay = tl.load(scal_ptr)
    step_size = tl.load(scal_ptr + 1)
    t, i0, j0, m, n, r, fin = _tile(prog_ptr, meta_ptr, norm_ptr, pid, False, ALIGN)
    w_ptr = _pp(meta_ptr + t * 5 + 4, PDTYPE, ALIGN)
    p_ptr = _pp(addr_ptr + t * 2, tl.float32)
    u_ptr = _pp(addr_ptr + t * 2 + 1, tl.float32, ALIGN)
    rows = i0 + tl.arange(0, BM)
    cols = j0 + tl.arange(0, BN)
    row_ok = rows < tl.where(fin, m, 0)
    col_ok = cols < n
    kr = tl.arange(0, R)
    r_ok = kr < r
    pt = tl.load(p_ptr + rows[:, None] * r + kr[None, :], mask=row_ok[:, None] & r_ok[None, :], other=0.0)
    ut = tl.load(u_ptr + kr[:, None] * n + cols[None, :], mask=r_ok[:, None] & col_ok[None, :], other=0.0)
    if TRANS:  # the parameter's rows are the canonical columns: [BN, BM] = U^T P^T, unit stride last
        upd = tl.dot(tl.trans(ut), tl.trans(pt), input_precision=PRECISION)
        mask = col_ok[:, None] & row_ok[None, :]
        off = cols[:, None].to(tl.int64) * m + rows[None, :].to(tl.int64)
    else:
        upd = tl.dot(pt, ut, input_precision=PRECISION)
        mask = row_ok[:, None] & col_ok[None, :]
        off = rows[:, None].to(tl.int64) * n + cols[None, :].to(tl.int64)
    w = tl.load(w_ptr + off, mask=mask, other=0.0).to(tl.float32) * decay
    w = w + (-step_size * tl.load(scale_ptr + t)) * upd
    tl.store(w_ptr + off, w.to(PDTYPE), mask=mask)
