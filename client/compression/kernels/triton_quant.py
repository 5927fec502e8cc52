"""Triton kernels: fused block-wise quantize (scale + code + pack) and dequantize (unpack + scale).

Same semantics as the torch path (:func:`client.compression.quant.quantize_torch`, spec in
``docs/architecture.md``, "The compression core"): with ``stochastic=False`` the two produce the same codes
and scales (``x / s`` is rounded exactly as torch rounds it; ACIQ clips may differ by a float32 ulp, the sum
runs in another order); with ``stochastic=True`` they agree in distribution (Philox here, ``torch.Generator``
there). Quantize launches with ``enable_fp_fusion=False`` so no multiply-add is fused behind torch's back.

Work split
----------
A program owns ``ROWS`` consecutive blocks (a ``[ROWS, BLOCK_P2]`` register tile, ``BLOCK_P2`` the block size
rounded up to a power of two): it reads them once, writes their packed codes and scales once, and needs
nothing from any other program (no atomics, no second pass). Full blocks go through one launch whose masks
depend on the block index only, so loads and stores stay 16-byte vectors for any ``numel``; the last, partial
block (when ``numel % block != 0``) gets its own one-program launch that masks per element and reads the
padding as zeros (no host-side padded copy).

Bytes moved per value (the floor that bandwidth sets):

===============  =======================================  =====================================
kernel           reads                                    writes
===============  =======================================  =====================================
quantize         ``itemsize(x)`` (4 fp32, 2 bf16)          ``bits / 8`` + ``4 / block`` (scale)
dequantize       ``bits / 8`` + ``4 / block``              ``itemsize(out)``
===============  =======================================  =====================================

Knobs (module constants; ``tile`` / ``num_warps`` can also be given per call)
-------------------------------------------------------------------------
``QUANT_TILE`` (4096; ``QUANT_TILE_3BIT`` 2048) / ``DEQUANT_TILE`` (8192)
    Values per program (``ROWS = tile // BLOCK_P2`` blocks, at least 1): 32-64 values per thread at 4 warps,
    enough independent 16-byte loads in flight to cover DRAM latency without spilling. Larger tiles mean
    fewer, fatter programs; smaller ones help tensors under ~16M values fill the GPU. The defaults won a
    sweep of 2048-16384 x 4/8 warps on an H200 (128M values); quantize at 8192 lost 5-20%.
``QUANT_WARPS`` / ``DEQUANT_WARPS`` (4)
    Threads per program / 32. 8 only helped 16K-value dequantize tiles.
``RAND16`` (True)
    Stochastic rounding takes 8 16-bit uniforms per Philox call instead of 4 32-bit ones: Philox dominates
    the stochastic kernels' instruction count, and this took 4-bit fp32 quantize from 59% to 74% of copy
    bandwidth (bias below 2^-17 of a step).
``ACIQ_MAX_ITERS`` (16)
    Cap on the ACIQ solve's rounds of two Newton steps (2-3 rounds run in practice). Each step costs about
    10 instructions per value (compare, select, two row sums), so ``mode="aciq"`` is compute-bound.

Measured on one H200 (triton 3.6, torch 2.11, 256M values; fraction of a 4.2 TB/s device copy, bytes read +
written; ``results/kernels-2026-11-22-h200.json``), fp32 / bf16 input:

* dequantize: 90-93% at every width and mode (fp32 and bf16 output).
* quantize, round to nearest: uniform 96-103% / 70-98%; NF4 57% / 33%; ACIQ 30-34% / 22-27%.
* quantize, stochastic: uniform 67-93% / 41-56%; NF4 30% / 20%; ACIQ 25-29% / 18-22%.

Below ~60% a kernel is instruction-bound (issue rate), not memory-bound: Philox for stochastic rounding,
15 threshold tests per value for stochastic NF4, the Newton steps for ACIQ; bf16 input halves the bytes per
value, so the same instructions show as a lower fraction. bitsandbytes on the same tensors: blockwise 8-bit
quantize 20% / 12%, NF4 quantize 11% / 6%; its dequantize 74-87% / 47-57%.
"""

from __future__ import annotations

import itertools
import struct

import triton
import triton.language as tl

from client.compression import codes


def _f32(x: float) -> float:
    """``x`` rounded to float32 (returned as the Python float of that value)."""
    return float(struct.unpack("f", struct.pack("f", x))[0])


_LEV = [_f32(x) for x in codes.NF4_LEVELS]
#: The NF4 levels, their midpoints and gaps (``NF4_GAPS[i]`` = level i - level i-1, ``[0]`` unused, ``[16]``
#: infinite: nothing rounds up from the top level) as
#: float32 values computed as the torch path computes them, for the kernels as compile-time constants.
NF4_LEVELS: tl.constexpr = tl.constexpr(tuple(_LEV))
NF4_MIDS: tl.constexpr = tl.constexpr(tuple(_f32(_f32(a + b) / 2) for a, b in itertools.pairwise(_LEV)))
NF4_GAPS: tl.constexpr = tl.constexpr(
    (0.0, *tuple(_f32(b - a) for a, b in itertools.pairwise(_LEV)), float("inf"))
)

__all__ = [
    "ACIQ_MAX_ITERS",
    "DEQUANT_TILE",
    "DEQUANT_WARPS",
    "MODE_ACIQ",
    "MODE_IDS",
    "MODE_NF4",
    "MODE_UNIFORM",
    "QUANT_TILE",
    "QUANT_TILE_3BIT",
    "QUANT_WARPS",
    "RAND16",
    "dequantize_kernel",
    "quantize_kernel",
]

MODE_UNIFORM = 0
MODE_NF4 = 1
MODE_ACIQ = 2
#: ``mode`` string -> the ``MODE`` constexpr of the kernels.
MODE_IDS: dict[str, int] = {"uniform": MODE_UNIFORM, "nf4": MODE_NF4, "aciq": MODE_ACIQ}

#: Default values per quantize program (see the module docstring).
QUANT_TILE = 4096
#: ... at 3 bits, whose 3-byte groups are stored with a stride (2048: 92% of copy bandwidth, 4096: 88%).
QUANT_TILE_3BIT = 2048
#: Default warps per quantize program.
QUANT_WARPS = 4
#: Default values per dequantize program.
DEQUANT_TILE = 8192
#: Default warps per dequantize program.
DEQUANT_WARPS = 4
#: Stochastic rounding draws 16-bit uniforms, 8 per Philox call (True: half the Philox work, bias below
#: 2^-17 of a step), or 32-bit ones, 4 per call (False). Measured on an H200, 128M fp32 values, 4-bit:
#: 74% of copy bandwidth against 59%.
RAND16 = True
#: Upper bound on ACIQ rounds (two Newton steps each) per tile; the solve normally stops after 2-4.
ACIQ_MAX_ITERS = 16


@triton.jit
def _max_nan(a, b):
    # NaN-propagating max: a NaN anywhere in a block must reach its scale so the caller's finite check fires.
    return tl.maximum(a, b, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def _aciq_alpha(
    ax, absmax, ROWS: tl.constexpr, BITS: tl.constexpr, BLOCK: tl.constexpr, MAX_ITERS: tl.constexpr
):
    """Per-row root of ``alpha = c * mean((|x| - alpha)_+)``, ``c = 3 (2^b - 1)^2``, mean over ``BLOCK``.

    With ``k`` values above ``a`` summing to ``S``, ``f(a) = a - c (S - k a) / BLOCK`` is the minimum of the
    lines ``L_k``, so one Newton step from any ``a`` lands on ``c S / (BLOCK + c k)``, the root of ``L_k`` and
    a lower bound of the root; from there the iterates rise monotonically and stop exactly on it (the torch
    path's sort-based :func:`~client.compression.quant.aciq_alpha` takes the max of the same candidates).
    The start ``gamma_b * absmax`` (0.5, 0.8, 0.9 at 2, 3, 4 bits: near the typical root, so the first step
    usually picks the right ``k``) halves the steps against a start at 0: a 32-block tile of Gaussian blocks
    needs 3-5 instead of 6-8. The loop runs two steps per check of "did any row of the tile move" (a
    tile-wide reduction), at most ``2 * MAX_ITERS``. The result is ``c S / (BLOCK + c k)`` of the converged
    ``S`` and ``k``, rounded as torch rounds it.
    """
    top: tl.constexpr = (1 << BITS) - 1
    c: tl.constexpr = 3.0 * top * top
    gamma: tl.constexpr = 0.5 if BITS == 2 else (0.8 if BITS == 3 else 0.9)
    alpha = absmax * gamma
    s_over = tl.zeros([ROWS], dtype=tl.float32)
    k_over = tl.zeros([ROWS], dtype=tl.float32)
    n_changed = 1
    it = 0
    while (n_changed > 0) & (it < MAX_ITERS):
        prev = alpha
        for _ in tl.static_range(2):
            over = ax > alpha[:, None]
            s_over = tl.sum(tl.where(over, ax, 0.0), axis=1)
            k_over = tl.sum(over.to(tl.float32), axis=1)
            alpha = c * s_over / (BLOCK + c * k_over)
        n_changed = tl.sum((alpha != prev).to(tl.int32), axis=0)
        it += 1
    return tl.math.div_rn(c * s_over, BLOCK + c * k_over)


@triton.jit
def _uniforms(
    seed, base, rows, ROWS: tl.constexpr, BLOCK: tl.constexpr, BLOCK_P2: tl.constexpr, RAND16: tl.constexpr
):
    """U[0, 1) float32 per tile element, Philox keyed by ``seed`` (counter: global element index / 4 or 8).

    One Philox call yields four 32-bit words: with ``RAND16`` each is split into two 16-bit uniforms
    (``(r + 0.5) / 2^16``: half the Philox work; rounding bias below ``2^-17`` of a step), else each word is
    one 32-bit uniform. The order inside a group does not matter (the draws are i.i.d.).
    """
    PER: tl.constexpr = 8 if RAND16 else 4
    GN: tl.constexpr = BLOCK_P2 // PER
    grp = (base // PER).to(tl.uint32) + (rows[:, None] * (BLOCK // PER) + tl.arange(0, GN)[None, :]).to(
        tl.uint32
    )
    r0, r1, r2, r3 = tl.randint4x(seed, grp)
    if RAND16:
        sc: tl.constexpr = 1.0 / 65536.0
        a = tl.join(tl.join(r0, r1), tl.join(r2, r3)).to(tl.uint32, bitcast=True)  # [ROWS, GN, 2, 2]
        w = tl.join(a & 0xFFFF, a >> 16)  # [ROWS, GN, 2, 2, 2]
        u = (w.to(tl.float32) + 0.5) * sc
    else:
        u = tl.join(
            tl.join(tl.random.uint_to_uniform_float(r0), tl.random.uint_to_uniform_float(r1)),
            tl.join(tl.random.uint_to_uniform_float(r2), tl.random.uint_to_uniform_float(r3)),
        )
    return tl.reshape(u, [ROWS, BLOCK_P2])


@triton.jit
def _nf4_nearest_tree(y):
    """Nearest NF4 code = number of midpoints strictly below ``y``, by a 4-step binary search of selects
    (the midpoints are compile-time constants: immediates, no registers)."""
    b3 = y > NF4_MIDS[7]
    b2 = y > tl.where(b3, NF4_MIDS[11], NF4_MIDS[3])
    b1 = y > tl.where(b3, tl.where(b2, NF4_MIDS[13], NF4_MIDS[9]), tl.where(b2, NF4_MIDS[5], NF4_MIDS[1]))
    t0 = tl.where(
        b3,
        tl.where(b2, tl.where(b1, NF4_MIDS[14], NF4_MIDS[12]), tl.where(b1, NF4_MIDS[10], NF4_MIDS[8])),
        tl.where(b2, tl.where(b1, NF4_MIDS[6], NF4_MIDS[4]), tl.where(b1, NF4_MIDS[2], NF4_MIDS[0])),
    )
    b0 = y > t0
    return b3.to(tl.int32) * 8 + b2.to(tl.int32) * 4 + b1.to(tl.int32) * 2 + b0.to(tl.int32)


@triton.jit
def _nf4_dithered(y, u):
    """Unbiased NF4 code by dithered thresholds: with ``T_i = level[i-1] + u (level[i] - level[i-1])`` all
    ``i <= lo`` pass and ``i = lo + 1`` passes with probability ``(y - level[lo]) / gap``, so the count is the
    stochastic code. No gathers, no division: one FMA, one compare and one add per level; the levels and
    gaps are compile-time constants (immediates, not a table in registers). Measured on an H200 against it
    (BENCHMARKS.md, session 5): a select tree plus two table gathers per value, 3x slower (LSU-bound); a
    search for the level below plus one dithered threshold (the same codes, ~140 instead of ~220 registers a
    thread in the step kernel at 4 bits, ~5 % more instructions), 6 % slower at r0/b4, 18 % with gamma."""
    acc = tl.zeros(y.shape, dtype=tl.float32)
    for i in tl.static_range(1, 16):
        acc += tl.where(y >= tl.fma(u, NF4_GAPS[i], NF4_LEVELS[i - 1]), 1.0, 0.0)
    return acc.to(tl.int32)


@triton.jit(do_not_specialize=["seed"])
def quantize_kernel(
    x_ptr,  # input values, fp32 / bf16 / fp16, flat
    data_ptr,  # uint8 out: n_blocks * BLOCK * BITS / 8 packed codes
    scale_ptr,  # float32 out: one per block
    tab_ptr,  # float32 NF4 table (see nf4_table), read only when MODE == NF4
    numel,  # values in x
    n_rows,  # blocks this launch covers
    row0,  # index of its first block
    seed,  # Philox key for stochastic rounding, or with SEED_PTR a pointer to it (int64 [1], in [0, 2^31))
    BITS: tl.constexpr,
    MODE: tl.constexpr,
    BLOCK: tl.constexpr,
    BLOCK_P2: tl.constexpr,
    ROWS: tl.constexpr,
    STOCHASTIC: tl.constexpr,
    TAIL: tl.constexpr,
    MAX_ITERS: tl.constexpr,
    RAND16: tl.constexpr,
    SEED_PTR: tl.constexpr = False,
):
    """Quantize ``ROWS`` blocks: read ``ROWS * BLOCK`` values, write their codes and ``ROWS`` scales."""
    ROW_BYTES: tl.constexpr = BLOCK * BITS // 8
    top: tl.constexpr = (1 << BITS) - 1
    pid = tl.program_id(0)
    first = row0 + pid * ROWS  # first block of this program
    rows = tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK_P2)
    row_ok = pid * ROWS + rows < n_rows
    local = rows[:, None] * BLOCK + cols[None, :]  # offsets inside the tile (int32; int64 base below)
    base = first.to(tl.int64) * BLOCK
    row_mask = row_ok[:, None]  # codes are written for the whole block, padding included
    if BLOCK_P2 != BLOCK:
        row_mask = row_mask & (cols < BLOCK)[None, :]
    in_mask = row_mask
    if TAIL:
        in_mask = in_mask & (local < numel - base)  # the zero padding of the last block is read as zeros
    x = tl.load(x_ptr + base + local, mask=in_mask, other=0.0).to(tl.float32)  # [ROWS, BLOCK_P2]

    ax = tl.abs(x)
    absmax = tl.reduce(ax, 1, _max_nan)  # [ROWS]
    if MODE == 2:
        alpha = _aciq_alpha(ax, absmax, ROWS, BITS, BLOCK, MAX_ITERS)
        s = tl.where(absmax < float("inf"), alpha, absmax)  # keep NaN / inf visible in the scale
    else:
        s = absmax
    tl.store(scale_ptr + first + rows, s, mask=row_ok)

    # y = x / s rounded exactly as torch divides: x * (1/s) with 1/s correctly rounded (per block), then one
    # Markstein correction (two FMAs a value instead of a full division). An all-zero block takes s = 1.
    safe = tl.where(s > 0, s, 1.0)
    inv = tl.math.div_rn(tl.full([ROWS], 1.0, tl.float32), safe)
    q0 = x * inv[:, None]
    y = tl.fma(tl.fma(-q0, safe[:, None], x), inv[:, None], q0)
    if MODE == 2 or STOCHASTIC:
        # ACIQ clips; stochastic codes need y >= -1 exactly. With s = absmax, x / s is already in [-1, 1] and
        # the deterministic codes saturate anyway, so they skip the two instructions.
        y = tl.minimum(tl.maximum(y, -1.0), 1.0)
    if STOCHASTIC:
        if SEED_PTR:  # noqa: SIM108 (a Triton constexpr branch)
            key = tl.load(seed)
        else:
            key = seed
        u = _uniforms(key, base, rows, ROWS, BLOCK, BLOCK_P2, RAND16)
    if MODE == 1:
        if STOCHASTIC:  # noqa: SIM108 (a Triton constexpr branch)
            code = _nf4_dithered(y, u)
        else:
            code = _nf4_nearest_tree(y)
    else:
        t = (y + 1.0) * (0.5 * top)  # == (y + 1) / 2 * top bit for bit: halving is exact
        if STOCHASTIC:  # noqa: SIM108 (u exists only in this static branch)
            code = tl.minimum(tl.floor(t + u), top).to(tl.int32)
        else:
            code = tl.floor(t + 0.5).to(tl.int32)

    dbase = first.to(tl.int64) * ROW_BYTES
    if BITS == 8:
        tl.store(data_ptr + dbase + local, code.to(tl.uint8), mask=row_mask)
    else:
        PER: tl.constexpr = 8 if BITS == 3 else 8 // BITS  # codes per group
        G: tl.constexpr = BLOCK_P2 // PER  # groups per (padded) row
        g = tl.arange(0, G)
        shifts = tl.arange(0, PER) * BITS
        # Disjoint bit fields, so the sum is the bitwise OR of the shifted codes.
        word = tl.sum(tl.reshape(code, [ROWS, G, PER]) << shifts[None, None, :], axis=2)  # [ROWS, G]
        if BITS == 3:
            k = tl.arange(0, 4)  # 3 bytes per 24-bit word; lane 3 is masked off
            byte = (word[:, :, None] >> (k * 8)[None, None, :]) & 0xFF
            off = rows[:, None, None] * ROW_BYTES + g[None, :, None] * 3 + k[None, None, :]
            m3 = row_ok[:, None, None] & (g < BLOCK // 8)[None, :, None] & (k < 3)[None, None, :]
            tl.store(data_ptr + dbase + off, byte.to(tl.uint8), mask=m3)
        else:
            off = rows[:, None] * ROW_BYTES + g[None, :]
            m2 = row_ok[:, None]
            if BLOCK_P2 != BLOCK:
                m2 = m2 & (g < BLOCK // PER)[None, :]
            tl.store(data_ptr + dbase + off, word.to(tl.uint8), mask=m2)


@triton.jit
def _interleave(c0, c1, c2, c3, c4, c5, c6, c7, PER: tl.constexpr):
    """Stack ``PER`` (2, 4 or 8) tensors ``[R, G]`` into ``[R, G * PER]``: element ``PER g + j`` is ``c_j``.

    ``tl.join`` adds a minor axis held inside each thread, so the reshape moves no data.
    """
    if PER == 2:
        t = tl.join(c0, c1)
    elif PER == 4:
        t = tl.join(tl.join(c0, c2), tl.join(c1, c3))  # [R, G, i, k] -> index 2 i + k
    else:
        t = tl.join(tl.join(tl.join(c0, c4), tl.join(c2, c6)), tl.join(tl.join(c1, c5), tl.join(c3, c7)))
    return tl.reshape(t, [t.shape[0], t.shape[1] * PER])


@triton.jit
def dequantize_kernel(
    data_ptr,  # uint8 packed codes
    scale_ptr,  # float32, one per block
    tab_ptr,  # float32 NF4 table (levels first), read only when MODE == NF4
    out_ptr,  # output values (its dtype is the output dtype), numel long
    numel,
    n_rows,
    row0,
    BITS: tl.constexpr,
    MODE: tl.constexpr,
    BLOCK: tl.constexpr,
    BLOCK_P2: tl.constexpr,
    ROWS: tl.constexpr,
    TAIL: tl.constexpr,
):
    """Dequantize ``ROWS`` blocks: read their packed codes and scales, write ``ROWS * BLOCK`` values."""
    ROW_BYTES: tl.constexpr = BLOCK * BITS // 8
    top: tl.constexpr = (1 << BITS) - 1
    pid = tl.program_id(0)
    first = row0 + pid * ROWS
    rows = tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK_P2)
    row_ok = pid * ROWS + rows < n_rows
    local = rows[:, None] * BLOCK + cols[None, :]
    base = first.to(tl.int64) * BLOCK
    mask = row_ok[:, None]
    if BLOCK_P2 != BLOCK:
        mask = mask & (cols < BLOCK)[None, :]
    s = tl.load(scale_ptr + first + rows, mask=row_ok, other=0.0)

    dptr = data_ptr + first.to(tl.int64) * ROW_BYTES
    if BITS == 8:
        code = tl.load(dptr + local, mask=mask, other=0).to(tl.int32)
    else:
        # Read each packed group once (a row's bytes are contiguous), split it into its codes in registers.
        # (Gathering the byte(s) of each value instead was slower and erratic across tile sizes on an H200.)
        PER: tl.constexpr = 8 if BITS == 3 else 8 // BITS
        G: tl.constexpr = BLOCK_P2 // PER
        g = tl.arange(0, G)
        gmask = row_ok[:, None]
        if BLOCK_P2 != BLOCK:
            gmask = gmask & (g < BLOCK // PER)[None, :]
        if BITS == 3:
            p = dptr + rows[:, None] * ROW_BYTES + g[None, :] * 3
            w = tl.load(p, mask=gmask, other=0).to(tl.int32)
            w = w | (tl.load(p + 1, mask=gmask, other=0).to(tl.int32) << 8)
            w = w | (tl.load(p + 2, mask=gmask, other=0).to(tl.int32) << 16)
        else:
            w = tl.load(dptr + rows[:, None] * ROW_BYTES + g[None, :], mask=gmask, other=0).to(tl.int32)
        if PER == 2:
            code = _interleave(w & top, w >> 4, w, w, w, w, w, w, PER)
        elif PER == 4:
            code = _interleave(w & 3, (w >> 2) & 3, (w >> 4) & 3, w >> 6, w, w, w, w, PER)
        else:
            code = _interleave(
                w & 7, (w >> 3) & 7, (w >> 6) & 7, (w >> 9) & 7,
                (w >> 12) & 7, (w >> 15) & 7, (w >> 18) & 7, (w >> 21) & 7, PER,
            )  # fmt: skip

    if MODE == 1:
        val = tl.load(tab_ptr + code) * s[:, None]  # 16-entry table: L1 hits
    else:
        step = s * (2.0 / top)  # (code / L * 2 - 1) * s as one FMA per value
        val = tl.fma(code.to(tl.float32), step[:, None], -s[:, None])
    if TAIL:
        mask = mask & (local < numel - base)
    tl.store(out_ptr + base + local, val.to(out_ptr.dtype.element_ty), mask=mask)
