"""Triton kernels of the fused multi-tensor ``MangoAdamW`` step (host side: :mod:`client.compression.fused`).

One launch updates every eligible tensor of the model: a program owns ``ROWS`` quantization blocks of one
tensor and finds its tensor, its blocks and every pointer it needs in small device tables, so a 124M-parameter
model with ~150 tensors is one kernel instead of thousands of small torch ops.

Tables (built by the host, one row per tensor ``t``)
----------------------------------------------------
``prog`` int32 ``[n_programs, 3]``
    ``t``, the first block of the program, and how many of its ``ROWS`` tile rows are real.
``grad`` int64 ``[T]``
    Gradient addresses, uploaded apart because they may change from step to step.
``addr`` int64 ``[T, N_ADDR]``
    Addresses (``data_ptr()``): (unused), parameter, ``m`` codes / scales, ``sqrt(v)`` codes / scales,
    ``e`` codes / scales, the factored ``v`` statistics along the parameter's rows / columns, and their
    per-step row / column sum scratch. Unused entries are 0 and never dereferenced.
``meta`` int64 ``[T, 5]``
    ``numel``, the parameter's columns (``numel / shape[0]``), whether the canonical matrix is the transpose,
    the block stride between tile rows (1: consecutive blocks; ``cols / BLOCK``: a column strip, used by the
    factored second moment so a tile's column sums reduce before the atomics), and the tensor's position in
    the step's gradient-norm vector.
``norm`` float32 ``[n_items]``
    The step's squared gradient L2 norms, from :func:`norm_kernel` (one pre-pass launch over the
    gradients): where one is NaN/inf its tensor's programs write nothing but a zero partial (the update is
    skipped, as the torch path skips it) and its first program counts it in ``skip``.

The hyper-parameters (``1 - lr wd``, ``lr / bc1``, ``1 / sqrt(bc2)``, ``eps``, betas, ``ef_beta``) are scalar
arguments computed by the host in double precision, as the torch path computes them: one launch per
parameter group and step count (like torch's fused AdamW), so a learning-rate schedule costs no upload.

Randomness: stochastic rounding draws one Philox call (four 32-bit words) per pair of values, keyed by the
step's seed (a device scalar drawn from the optimizer's generator, so no host sync) in the low word and
``t + 1`` in the high word, counter = the pair's index in the tensor; each word gives both values of the
pair a 16-bit uniform. Word 0 rounds the compressed gradient, 1 the error buffer, 2 ``m``, 3 ``sqrt(v)``;
the factored path's two passes draw word 0 alike, so they agree on ``c``. Stochastic NF4 uses the standalone
kernel's dithered thresholds (``_nf4_dithered``).

Per element (rank 0, ``gamma = 0``; the torch path's ``_matrix_step`` formula for formula)::

    u = g + e                      c = Q_b(u)              e' = ef_beta e + (g - c)
    m' = m + (1 - beta1)(c - m)    v' = beta2 v + (1 - beta2) c^2   (or Adafactor row x column)
    p' = p (1 - lr wd) - lr/bc1 * m' / (sqrt(v') / sqrt(bc2) + eps)

then ``e'``, ``m'`` and ``sqrt(v')`` are re-quantized block by block (absmax scale of the new block) and
written in place over the old codes. Bytes per value at 8 bits with error feedback: grad 4 + param 8 +
3 x (1 + 1) codes + scales, ~18 against fused AdamW's 28.
"""

from __future__ import annotations

import triton
import triton.language as tl

from client.compression.kernels.triton_quant import _interleave, _nf4_dithered, _nf4_nearest_tree

__all__ = ["N_ADDR", "exact_step_kernel", "factor_kernel", "matrix_step_kernel", "norm_kernel"]

#: Columns of the address table.
N_ADDR: tl.constexpr = tl.constexpr(12)
#: Adafactor's eps1 (the torch path's ``_TINY``).
TINY: tl.constexpr = tl.constexpr(1e-30)
#: Philox rounds of the step's stochastic rounding: 7, the smallest count that Salmon et al. (SC'11, "Parallel
#: random numbers: as easy as 1, 2, 3") found to pass all of TestU01's BigCrush for Philox4x32; triton's
#: default 10 adds margin that 16-bit rounding draws do not need, at 3/10 more of the step's largest cost.
PHILOX_ROUNDS: tl.constexpr = tl.constexpr(7)
#: Programs that add their ``(u - C(u))^2`` and ``u^2`` sums to the statistics: one in ``STATS_EVERY``
#: (a sampled estimate of the ratio; the others write zeros and skip two tile reductions).
STATS_EVERY: tl.constexpr = tl.constexpr(8)


@triton.jit
def _ptr(addr, col, DTYPE: tl.constexpr):
    return tl.load(addr + col).to(tl.pointer_type(DTYPE))


@triton.jit
def _load_codes(dptr, blk, row_ok, BITS: tl.constexpr, BLOCK: tl.constexpr):
    """int32 codes ``[ROWS, BLOCK]`` of blocks ``blk`` (8 bits: a byte each; 4 bits: low nibble first)."""
    ROW_BYTES: tl.constexpr = BLOCK * BITS // 8
    if BITS == 8:
        cols = tl.arange(0, BLOCK)
        code = tl.load(dptr + blk[:, None] * ROW_BYTES + cols[None, :], mask=row_ok[:, None], other=0)
        return code.to(tl.int32)
    else:
        G: tl.constexpr = BLOCK // 2
        g = tl.arange(0, G)
        w = tl.load(dptr + blk[:, None] * ROW_BYTES + g[None, :], mask=row_ok[:, None], other=0).to(tl.int32)
        return _interleave(w & 15, w >> 4, w, w, w, w, w, w, 2)


@triton.jit
def _dequant(dptr, sptr, blk, row_ok, tab_ptr, BITS: tl.constexpr, MODE: tl.constexpr, BLOCK: tl.constexpr):
    """fp32 values of blocks ``blk``: ``level[code] * s`` (NF4) or ``code * 2s / L - s`` (uniform)."""
    top: tl.constexpr = (1 << BITS) - 1
    s = tl.load(sptr + blk, mask=row_ok, other=0.0)
    code = _load_codes(dptr, blk, row_ok, BITS, BLOCK)
    if MODE == 1:
        return tl.load(tab_ptr + code) * s[:, None]
    else:
        step = s * (2.0 / top)
        return tl.fma(code.to(tl.float32), step[:, None], -s[:, None])


@triton.jit
def _quantize(x, rnd, tab_ptr, BITS: tl.constexpr, MODE: tl.constexpr, STOCHASTIC: tl.constexpr):
    """Codes, scales and dequantized values of the ``[ROWS, BLOCK]`` tile ``x`` (padding already zero).

    The formulas of :func:`~client.compression.quant.quantize_torch` (absmax scale, ``y = x / s`` rounded as
    torch divides, uniform or NF4 codes; ``rnd`` the uniforms of stochastic rounding).
    """
    top: tl.constexpr = (1 << BITS) - 1
    s = tl.max(tl.abs(x), axis=1)
    safe = tl.where(s > 0, s, 1.0)
    inv = tl.math.div_rn(tl.full(s.shape, 1.0, tl.float32), safe)
    q0 = x * inv[:, None]
    y = tl.fma(tl.fma(-q0, safe[:, None], x), inv[:, None], q0)
    y = tl.minimum(tl.maximum(y, -1.0), 1.0)
    if MODE == 1:
        if STOCHASTIC:  # noqa: SIM108 (a Triton constexpr branch)
            code = _nf4_dithered(y, rnd, tab_ptr)
        else:
            code = _nf4_nearest_tree(y, tab_ptr + 16)
        deq = tl.load(tab_ptr + code) * s[:, None]
    else:
        half: tl.constexpr = 0.5 * top
        t = tl.fma(y, half, half)  # (y + 1) top / 2 in one instruction
        if STOCHASTIC:
            code = tl.minimum(tl.floor(t + rnd), top).to(tl.int32)
        else:
            code = tl.floor(t + 0.5).to(tl.int32)
        step = s * (2.0 / top)
        deq = tl.fma(code.to(tl.float32), step[:, None], -s[:, None])
    return code, s, deq


@triton.jit
def _uniforms4(key, blk, BLOCK: tl.constexpr, STOCHASTIC: tl.constexpr):
    """Four ``[ROWS, BLOCK]`` uniform tiles for stochastic rounding: one Philox call per *pair* of values,
    each 32-bit word split into two 16-bit uniforms ``(r + 0.5) / 2^16`` (bias below ``2^-17`` of a step)."""
    if STOCHASTIC:
        HALF: tl.constexpr = BLOCK // 2
        pair = blk[:, None] * HALF + tl.arange(0, HALF)[None, :]
        r0, r1, r2, r3 = tl.randint4x(key, pair, n_rounds=PHILOX_ROUNDS)
        sc: tl.constexpr = 1.0 / 65536.0
        u0 = _split16(r0, sc)
        u1 = _split16(r1, sc)
        u2 = _split16(r2, sc)
        u3 = _split16(r3, sc)
        return u0, u1, u2, u3
    else:
        return 0.5, 0.5, 0.5, 0.5


@triton.jit
def _split16(r, sc: tl.constexpr):
    w = r.to(tl.uint32, bitcast=True)
    t = tl.join(w & 0xFFFF, w >> 16)  # [ROWS, HALF, 2]: element 2i gets the low half, 2i + 1 the high one
    u = tl.fma(t.to(tl.float32), sc, 0.5 * sc)  # (r + 0.5) / 2^16
    return tl.reshape(u, [u.shape[0], u.shape[1] * 2])


@triton.jit
def _store_codes(code, s, dptr, sptr, blk, row_ok, BITS: tl.constexpr, BLOCK: tl.constexpr):
    ROW_BYTES: tl.constexpr = BLOCK * BITS // 8
    tl.store(sptr + blk, s, mask=row_ok)
    if BITS == 8:
        cols = tl.arange(0, BLOCK)
        tl.store(dptr + blk[:, None] * ROW_BYTES + cols[None, :], code.to(tl.uint8), mask=row_ok[:, None])
    else:
        G: tl.constexpr = BLOCK // 2
        g = tl.arange(0, G)
        shifts = tl.arange(0, 2) * 4
        word = tl.sum(tl.reshape(code, [code.shape[0], G, 2]) << shifts[None, None, :], axis=2)
        tl.store(dptr + blk[:, None] * ROW_BYTES + g[None, :], word.to(tl.uint8), mask=row_ok[:, None])


@triton.jit
def _finite(norm_ptr, meta_ptr, t, META: tl.constexpr):
    """Whether tensor ``t``'s gradient norm is finite (``<`` is False for NaN and inf)."""
    return tl.load(norm_ptr + tl.load(meta_ptr + t * META + META - 1)) < float("inf")


@triton.jit
def matrix_step_kernel(
    prog_ptr,  # int32 [n_programs, 3]
    addr_ptr,  # int64 [T, N_ADDR]
    meta_ptr,  # int64 [T, 5]
    grad_ptr,  # int64 [T]: gradient addresses (uploaded apart: they may change every step)
    norm_ptr,  # float32 [n_items]: the step's squared gradient L2 norms (norm_kernel)
    seed_ptr,  # int64 [1]
    tab_ptr,  # float32 NF4 table (kernels._nf4_table)
    mean_ptr,  # float32 [T]: mean of the canonical row statistic (factored v), from factor_kernel
    part_ptr,  # float32 [n_programs, 2] out: sum (u - c)^2, sum u^2 of the program's values (every
    # STATS_EVERY-th program; the others keep the zeros the host allocated)
    sample_ptr,  # float32 [n_programs] out: the gradient at the first value of the program's tile
    skip_ptr,  # int32 [1]: tensors skipped for non-finite gradients (accumulated)
    decay,  # 1 - lr * weight_decay
    step_size,  # lr / (1 - beta1^step)
    inv_bc2s,  # 1 / sqrt(1 - beta2^step)
    eps,
    beta1,
    beta2,
    ef_beta,
    PDTYPE: tl.constexpr,  # parameter / gradient dtype
    BITS: tl.constexpr,  # 4 or 8: width of m, e, sqrt(v) and of the gradient compressor
    MODE: tl.constexpr,  # 0 uniform, 1 NF4: code of m, e and the compressed gradient (sqrt(v): uniform)
    BLOCK: tl.constexpr,
    ROWS: tl.constexpr,
    EF: tl.constexpr,  # error feedback buffer present
    FACTORED: tl.constexpr,  # Adafactor row x column second moment instead of quantized sqrt(v)
    STOCHASTIC: tl.constexpr,
    PASS: tl.constexpr,  # 1: factored statistics only (row / column sums of c^2 + TINY); 2: the update
):
    """The rank-0 compressed AdamW step of ``ROWS`` blocks of one tensor (module docstring)."""
    pid = tl.program_id(0)
    t = tl.load(prog_ptr + pid * 3)
    b0 = tl.load(prog_ptr + pid * 3 + 1)
    nrows = tl.load(prog_ptr + pid * 3 + 2)
    numel = tl.load(meta_ptr + t * 5).to(tl.int32)  # tensors under 2^31 values (fused.py checks)
    ncols = tl.load(meta_ptr + t * 5 + 1).to(tl.int32)
    stride = tl.load(meta_ptr + t * 5 + 3).to(tl.int32)
    fin = _finite(norm_ptr, meta_ptr, t, 5)
    A = addr_ptr + t * N_ADDR
    rows = tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK)
    blk = b0 + rows * stride
    row_ok = rows < tl.where(fin, nrows, 0)  # a skipped tensor has no rows
    off = blk[:, None] * BLOCK + cols[None, :]
    in_mask = row_ok[:, None] & (off < numel)

    g_ptr = _ptr(grad_ptr, t, PDTYPE)
    g = tl.load(g_ptr + off, mask=in_mask, other=0.0).to(tl.float32)
    if EF:
        e = _dequant(_ptr(A, 6, tl.uint8), _ptr(A, 7, tl.float32), blk, row_ok, tab_ptr, BITS, MODE, BLOCK)
        e = tl.where(in_mask, e, 0.0)
        u = g + e
    else:
        u = g
    seed = tl.load(seed_ptr)
    key = seed + (t.to(tl.int64) + 1) * 4294967296
    u0, u1, u2, u3 = _uniforms4(key, blk, BLOCK, STOCHASTIC)
    _, _, c = _quantize(u, u0, tab_ptr, BITS, MODE, STOCHASTIC)
    c = tl.where(in_mask, c, 0.0)

    if PASS == 1:
        sq = tl.where(in_mask, c * c + TINY, 0.0)
        a = (blk * BLOCK) // ncols  # parameter row of each tile row
        b = (b0 * BLOCK) % ncols + cols  # a strip: every tile row has the same columns
        tl.atomic_add(_ptr(A, 10, tl.float32) + a, tl.sum(sq, axis=1), mask=row_ok, sem="relaxed")
        col_ok = cols < tl.where(fin, BLOCK, 0)
        tl.atomic_add(_ptr(A, 11, tl.float32) + b, tl.sum(sq, axis=0), mask=col_ok, sem="relaxed")
    else:
        if EF:
            e_new = tl.where(in_mask, ef_beta * e + (g - c), 0.0)
            code, s, _ = _quantize(e_new, u1, tab_ptr, BITS, MODE, STOCHASTIC)
            _store_codes(code, s, _ptr(A, 6, tl.uint8), _ptr(A, 7, tl.float32), blk, row_ok, BITS, BLOCK)
        m_ptr = _ptr(A, 2, tl.uint8)
        ms_ptr = _ptr(A, 3, tl.float32)
        m = tl.where(in_mask, _dequant(m_ptr, ms_ptr, blk, row_ok, tab_ptr, BITS, MODE, BLOCK), 0.0)
        m = tl.where(in_mask, m + (1.0 - beta1) * (c - m), 0.0)
        code, s, _ = _quantize(m, u2, tab_ptr, BITS, MODE, STOCHASTIC)
        _store_codes(code, s, m_ptr, ms_ptr, blk, row_ok, BITS, BLOCK)
        if FACTORED:
            a = (blk * BLOCK) // ncols
            b = (b0 * BLOCK) % ncols + cols
            vr = tl.load(_ptr(A, 8, tl.float32) + a, mask=row_ok, other=0.0)
            vc = tl.load(_ptr(A, 9, tl.float32) + b)
            inv_mean = 1.0 / tl.load(mean_ptr + t)
            sqrt_v = tl.sqrt(vr[:, None] * vc[None, :] * inv_mean)
        else:
            v_ptr = _ptr(A, 4, tl.uint8)
            vs_ptr = _ptr(A, 5, tl.float32)
            sv = tl.abs(_dequant(v_ptr, vs_ptr, blk, row_ok, tab_ptr, BITS, 0, BLOCK))
            v = sv * sv * beta2 + (1.0 - beta2) * (c * c)
            sqrt_v = tl.where(in_mask, tl.sqrt(v), 0.0)
            code, s, _ = _quantize(sqrt_v, u3, tab_ptr, BITS, 0, STOCHASTIC)
            _store_codes(code, s, v_ptr, vs_ptr, blk, row_ok, BITS, BLOCK)
        denom = sqrt_v * inv_bc2s + eps
        p_ptr = _ptr(A, 1, PDTYPE) + off
        p = tl.load(p_ptr, mask=in_mask, other=0.0).to(tl.float32) * decay
        p = p + (-step_size) * tl.math.fdiv(m, denom, ieee_rounding=False)
        tl.store(p_ptr, p.to(PDTYPE), mask=in_mask)
        if pid % STATS_EVERY == 0:
            d = tl.where(in_mask, u - c, 0.0)
            tl.store(part_ptr + pid * 2, tl.sum(tl.sum(d * d, axis=1), axis=0))
            tl.store(part_ptr + pid * 2 + 1, tl.sum(tl.sum(u * u, axis=1), axis=0))
        tl.store(sample_ptr + pid, tl.load(g_ptr + b0 * BLOCK, mask=fin, other=0.0).to(tl.float32))
        tl.atomic_add(skip_ptr, tl.where(fin, 0, 1) * tl.where(b0 == 0, 1, 0), sem="relaxed")


@triton.jit
def factor_kernel(
    addr_ptr,  # int64 [T, N_ADDR]
    meta_ptr,  # int64 [T, 5]
    norm_ptr,  # float32 [n_items]
    mean_ptr,  # float32 [T] out: mean of the canonical row statistic, clamped to TINY
    beta2,
    CHUNK: tl.constexpr,
):
    """Between the two passes: fold the row / column sums of ``c^2`` into the factored ``v`` and zero them.

    ``v_row <- beta2 v_row + (1 - beta2) rowsum / cols`` (and likewise the columns, divided by rows); the
    canonical row statistic is the parameter's column one when the canonical matrix is the transpose.
    One program per tensor.
    """
    t = tl.program_id(0)
    A = addr_ptr + t * N_ADDR
    numel = tl.load(meta_ptr + t * 5)
    ncols = tl.load(meta_ptr + t * 5 + 1)
    transposed = tl.load(meta_ptr + t * 5 + 2)
    nrows = numel // ncols
    fin = _finite(norm_ptr, meta_ptr, t, 5)
    # the parameter's row statistic averages over its columns, the column statistic over its rows
    sum_r = _fold(_ptr(A, 8, tl.float32), _ptr(A, 10, tl.float32), nrows, ncols, beta2, fin, CHUNK)
    sum_c = _fold(_ptr(A, 9, tl.float32), _ptr(A, 11, tl.float32), ncols, nrows, beta2, fin, CHUNK)
    mean = tl.where(transposed != 0, sum_c / ncols, sum_r / nrows)
    tl.store(mean_ptr + t, tl.maximum(mean, TINY))


@triton.jit
def _fold(v_ptr, sum_ptr, n, across, beta2, fin, CHUNK: tl.constexpr):
    """``v <- beta2 v + (1 - beta2) sum / across`` over ``n`` entries (kept where ``fin`` is False), zero the
    sums for the next step; return the sum of the new ``v``."""
    k = tl.arange(0, CHUNK)
    acc = tl.zeros([CHUNK], dtype=tl.float32)
    for i in range(0, n, CHUNK):
        inside = i + k < n
        msk = i + k < tl.where(fin, n, 0)
        old = tl.load(v_ptr + i + k, mask=inside, other=0.0)
        new = old * beta2 + (1.0 - beta2) * (tl.load(sum_ptr + i + k, mask=msk, other=0.0) / across)
        new = tl.where(msk, new, old)
        tl.store(v_ptr + i + k, new, mask=msk)
        tl.store(sum_ptr + i + k, tl.zeros([CHUNK], dtype=tl.float32), mask=inside)
        acc += new
    return tl.sum(acc, axis=0)


@triton.jit
def exact_step_kernel(
    prog_ptr,  # int32 [n_programs, 2]: tensor, first value
    addr_ptr,  # int64 [T, 4]: (unused), param (PDTYPE), exp_avg, exp_avg_sq (SDTYPE)
    meta_ptr,  # int64 [T, 2]: numel, position in the norm vector
    grad_ptr,  # int64 [T]
    norm_ptr,  # float32 [n_items]
    sample_ptr,  # float32 [n_programs] out
    skip_ptr,  # int32 [1]
    decay,
    step_size,
    inv_bc2s,
    eps,
    beta1,
    beta2,
    PDTYPE: tl.constexpr,
    SDTYPE: tl.constexpr,
    TILE: tl.constexpr,
):
    """Plain AdamW (the torch path's ``_exact_step``, or its identity matrix step) on ``TILE`` values of one
    tensor: an exact tensor (moments in the parameter's dtype) or a matrix at rank 0 / 32 bits (fp32)."""
    pid = tl.program_id(0)
    t = tl.load(prog_ptr + pid * 2)
    start = tl.load(prog_ptr + pid * 2 + 1).to(tl.int64)
    numel = tl.load(meta_ptr + t * 2)
    fin = _finite(norm_ptr, meta_ptr, t, 2)
    A = addr_ptr + t * 4
    off = start + tl.arange(0, TILE)
    mask = off < tl.where(fin, numel, 0)
    g = tl.load(_ptr(grad_ptr, t, PDTYPE) + off, mask=mask, other=0.0).to(tl.float32)
    p_ptr = _ptr(A, 1, PDTYPE) + off
    m_ptr = _ptr(A, 2, SDTYPE) + off
    v_ptr = _ptr(A, 3, SDTYPE) + off
    m = tl.load(m_ptr, mask=mask, other=0.0).to(tl.float32)
    v = tl.load(v_ptr, mask=mask, other=0.0).to(tl.float32)
    m = m + (1.0 - beta1) * (g - m)
    v = v * beta2 + (1.0 - beta2) * (g * g)
    p = tl.load(p_ptr, mask=mask, other=0.0).to(tl.float32) * decay
    p = p + (-step_size) * tl.math.fdiv(m, tl.sqrt(v) * inv_bc2s + eps, ieee_rounding=False)
    tl.store(m_ptr, m.to(SDTYPE), mask=mask)
    tl.store(v_ptr, v.to(SDTYPE), mask=mask)
    tl.store(p_ptr, p.to(PDTYPE), mask=mask)
    tl.store(sample_ptr + pid, tl.sum(tl.where(tl.arange(0, TILE) == 0, g, 0.0), axis=0))
    tl.atomic_add(skip_ptr, tl.where(fin, 0, 1) * tl.where(start == 0, 1, 0), sem="relaxed")


@triton.jit
def norm_kernel(
    prog_ptr,  # int32 [n_programs, 2]: tensor, first value
    meta_ptr,  # int64 [T, META]: numel first, position in the norm vector last
    grad_ptr,  # int64 [T]
    out_ptr,  # float32 [n_items] out (zeroed by the host): squared L2 norm per gradient, NaN / inf propagate
    META: tl.constexpr,
    PDTYPE: tl.constexpr,
    TILE: tl.constexpr,
):
    """Pre-pass: ``sum g^2`` of ``TILE`` values, added into its tensor's slot (one atomic a program).

    The step kernels read the slot before touching the tensor: NaN or inf there (a non-finite value, or a
    squared norm beyond float32) skips the whole tensor, as the torch path does."""
    pid = tl.program_id(0)
    t = tl.load(prog_ptr + pid * 2)
    start = tl.load(prog_ptr + pid * 2 + 1)
    numel = tl.load(meta_ptr + t * META).to(tl.int32)
    item = tl.load(meta_ptr + t * META + META - 1)
    off = start + tl.arange(0, TILE)
    g = tl.load(_ptr(grad_ptr, t, PDTYPE) + off, mask=off < numel, other=0.0).to(tl.float32)
    tl.atomic_add(out_ptr + item, tl.sum(g * g, axis=0), sem="relaxed")
