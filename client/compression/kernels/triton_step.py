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
    per-step row / column sum scratch (with ``PARTIALS``: every program's own slots of those sums, added up
    by :func:`partial_sums_kernel`). Unused entries are 0 and never dereferenced.
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
pair a 16-bit dither (:func:`_dither`). Word 0 rounds the compressed gradient, 1 the error buffer, 2 ``m``,
3 ``sqrt(v)``. NF4 codes come from a search of a small table (``_nf4_cell``, ``SEARCH=1``, the default;
``SEARCH=0``, ``fused.NF4_SEARCH = "compare"``: the standalone kernel's comparisons with every level,
``_nf4_dithered``, and its select tree of the midpoints), the same codes.
Variants for ``mango bench gpu --parts variants`` (``fused.DRAWS``, the kernel's ``RNG``): ``"hash"``
(``RNG=1``) draws the same four words from an integer hash instead (:func:`_hash_words4`); ``"philox8"``
(``RNG=2``) and ``"hash8"`` (3) give each value an 8-bit dither, a byte of a word, so one call serves four
values (counter = the quad's index) at a bias of at most ``2^-9`` of a quantization step. Philox-7 is
about a third of the 8-bit step's instructions; the words' statistics are tested, the speed is the GPU's
to show.

Per element (rank 0, ``gamma = 0``; the torch path's ``_matrix_step`` formula for formula)::

    u = g + e                      c = Q_b(u)              e' = ef_beta e + (g - c)
    m' = m + (1 - beta1)(c - m)    v' = beta2 v + (1 - beta2) c^2   (or Adafactor row x column)
    p' = p (1 - lr wd) - lr/bc1 * m' / (sqrt(v') / sqrt(bc2) + eps)

then ``e'``, ``m'`` and ``sqrt(v')`` are re-quantized block by block (absmax scale of the new block) and
written in place over the old codes. Bytes per value at 8 bits with error feedback: grad 4 + param 8 +
3 x (1 + 1) codes + scales, ~18 against fused AdamW's 28.
"""

from __future__ import annotations

import os

import triton
import triton.language as tl

from client.compression.codes import NF4_CELLS
from client.compression.kernels.triton_quant import _interleave, _nf4_dithered, _nf4_nearest_tree

__all__ = [
    "N_ADDR",
    "exact_step_kernel",
    "factor_kernel",
    "matrix_step_kernel",
    "norm_kernel",
    "partial_sums_kernel",
]

#: Columns of the address table.
N_ADDR: tl.constexpr = tl.constexpr(19)
#: Adafactor's eps1 (the torch path's ``_TINY``).
TINY: tl.constexpr = tl.constexpr(1e-30)
#: Philox rounds of the step's stochastic rounding: 7, the smallest count that Salmon et al. (SC'11, "Parallel
#: random numbers: as easy as 1, 2, 3") found to pass all of TestU01's BigCrush for Philox4x32; triton's
#: default 10 adds margin that 16-bit rounding draws do not need, at 3/10 more of the step's largest cost.
PHILOX_ROUNDS: tl.constexpr = tl.constexpr(7)
#: The hash draws (``RNG=1``): Wellons' "lowbias32" (two multiplies, three xor-shifts; the lowest-bias 32-bit
#: hash of his search) on ``(4 pair + j) ^ salt``, the salt hashed once a program from the key's two words.
#: A bijection of 32-bit words, so the words of one tensor and step never repeat (tensors < 2^30 pairs).
HASH_M1: tl.constexpr = tl.constexpr(0x7FEB352D)
HASH_M2: tl.constexpr = tl.constexpr(0x846CA68B)
#: Build the dithers with ``PRMT`` (inline PTX) where compiled; the interpreter runs no inline assembly.
PRMT: tl.constexpr = tl.constexpr(os.environ.get("TRITON_INTERPRET", "0") != "1")
#: The magic number of :func:`_quantize`'s stochastic codes, ``1.5 * 2^23``, and its bits: ``MAGIC + v``
#: for ``|v| <= 2^22`` lies in ``[2^23, 2^24)``, where float32 holds exactly the integers, so the add rounds
#: ``v`` to an integer, whose bits are ``MAGIC_BITS`` plus the integer (``2^23`` alone would leave ``v`` in
#: ``(-1/2, 0)`` a half below it, where the spacing is 1/2).
MAGIC: tl.constexpr = tl.constexpr(12582912.0)
MAGIC_BITS: tl.constexpr = tl.constexpr(0x4B400000)
#: The NF4 encoders' cells (:data:`~client.compression.codes.NF4_CELLS`: ``rne(scale y + shift)``, capped at
#: ``top``) and where their tables start in the kernels' NF4 table (``kernels._nf4_table``), in 64-bit words
#: (a float and the word after it): the ``(level, gap to the next)`` pairs, the cells of levels 1-15, the
#: cells of the midpoints (:func:`~client.compression.codes.nf4_search_table`).
NF4_CELL_SCALE: tl.constexpr = tl.constexpr(NF4_CELLS[0])
NF4_CELL_SHIFT: tl.constexpr = tl.constexpr(float(NF4_CELLS[1]))
NF4_CELL_TOP: tl.constexpr = tl.constexpr(NF4_CELLS[2])
NF4_PAIRS: tl.constexpr = tl.constexpr(32)
NF4_LEVEL_CELLS: tl.constexpr = tl.constexpr(48)
NF4_MID_CELLS: tl.constexpr = tl.constexpr(48 + NF4_CELLS[2] + 1)
#: Programs that add their ``(u - C(u))^2`` and ``u^2`` sums to the statistics: one in ``STATS_EVERY``
#: (a sampled estimate of the ratio; the others write zeros and skip two tile reductions).
STATS_EVERY: tl.constexpr = tl.constexpr(8)


@triton.jit
def _ptr(addr, col, DTYPE: tl.constexpr, ALIGN: tl.constexpr = False):
    """The pointer at column ``col`` of an address table; with ``ALIGN`` the host's promise that it is
    16-byte aligned (Triton then loads and stores ``BLOCK``-aligned runs 16 bytes at a time)."""
    q = tl.load(addr + col).to(tl.pointer_type(DTYPE))
    if ALIGN:
        q = tl.multiple_of(q, 16)
    return q


@triton.jit
def _keep(in_mask, x, FULL: tl.constexpr):
    """``x`` zeroed outside ``in_mask``; a program of whole blocks (``FULL``) has no padding to zero: rows
    outside the mask read zeros and are never stored, so ``x`` stays as it is (one select a value less)."""
    if FULL:
        return x
    else:
        return tl.where(in_mask, x, 0.0)


@triton.jit
def _fetch_codes(dptr, blk, row_ok, BITS: tl.constexpr, BLOCK: tl.constexpr, PAIRS: tl.constexpr = False):
    """The packed code bytes of blocks ``blk`` as loaded (:func:`_unpack` turns them into codes): uint8
    ``[ROWS, BLOCK * BITS / 8]`` at 2 and 8 bits, at 4 bits ``[ROWS, BLOCK]``, each value's byte (its
    neighbour's too: loaded where the value lies in the tile, so the codes need no exchange between threads),
    or with ``PAIRS`` ``[ROWS, BLOCK / 2]``, each byte once (contiguous, so the loads widen; the two codes
    split in registers), or at 3 bits the int32 24-bit words ``[ROWS, BLOCK / 8]``. Kept packed so a tile's
    loads can all be issued before its arithmetic (``EARLY``) at a byte a code in registers."""
    ROW_BYTES: tl.constexpr = BLOCK * BITS // 8
    if BITS == 4:  # a row past the program's end reads its first row's block (never masked: no predicate a
        # load); its scale reads 0, so its values decode to 0 whatever the codes
        if PAIRS:  # noqa: SIM108 (a Triton constexpr branch)
            c = tl.arange(0, ROW_BYTES)
        else:
            c = tl.arange(0, BLOCK) // 2
        b = tl.where(row_ok, blk, tl.min(blk, axis=0))
        return tl.load(dptr + b[:, None] * ROW_BYTES + c[None, :])
    elif BITS == 3:
        g = tl.arange(0, BLOCK // 8)
        p = dptr + blk[:, None] * ROW_BYTES + g[None, :] * 3
        w = tl.load(p, mask=row_ok[:, None], other=0).to(tl.int32)
        w = w | (tl.load(p + 1, mask=row_ok[:, None], other=0).to(tl.int32) << 8)
        return w | (tl.load(p + 2, mask=row_ok[:, None], other=0).to(tl.int32) << 16)
    else:
        b = tl.arange(0, ROW_BYTES)
        return tl.load(dptr + blk[:, None] * ROW_BYTES + b[None, :], mask=row_ok[:, None], other=0)


@triton.jit
def _unpack(raw, BITS: tl.constexpr, PAIRS: tl.constexpr = False):
    """int32 codes ``[ROWS, BLOCK]`` from :func:`_fetch_codes`'s bytes, in the packing of :mod:`triton_quant`
    (8 bits: a byte each; 4 / 2 bits: two / four a byte, low bits first; 3 bits: eight in a little-endian
    24-bit word)."""
    if BITS == 8:
        return raw.to(tl.int32)
    elif BITS == 3:
        w = raw
        return _interleave(
            w & 7, (w >> 3) & 7, (w >> 6) & 7, (w >> 9) & 7,
            (w >> 12) & 7, (w >> 15) & 7, (w >> 18) & 7, (w >> 21) & 7, 8,
        )  # fmt: skip
    elif BITS == 4 and PAIRS:  # value 2 k's code is the low half of byte k, value 2 k + 1's the high half
        w = raw.to(tl.int32)
        return _interleave(w & 15, w >> 4, w, w, w, w, w, w, 2)
    elif BITS == 4:  # value j's code is the low (j even) or high half of its byte
        shift = (tl.arange(0, raw.shape[1]) % 2) * 4
        return (raw.to(tl.int32) >> shift[None, :]) & 15
    else:
        w = raw.to(tl.int32)
        return _interleave(w & 3, (w >> 2) & 3, (w >> 4) & 3, w >> 6, w, w, w, w, 4)


@triton.jit
def _levels(raw, s, tab_ptr, BITS: tl.constexpr, MODE: tl.constexpr, PAIRS: tl.constexpr = False):
    """fp32 values of packed codes ``raw`` with block scales ``s``: ``level[code] * s`` (NF4) or
    ``code * 2s / L - s`` (uniform)."""
    top: tl.constexpr = (1 << BITS) - 1
    code = _unpack(raw, BITS, PAIRS)
    if MODE == 1:  # an FMA (+0), not a multiply: no later subtraction may contract with it (see _quantize)
        return tl.fma(tl.load(tab_ptr + code), s[:, None], 0.0)
    else:
        step = s * (2.0 / top)
        return tl.fma(code.to(tl.float32), step[:, None], -s[:, None])


@triton.jit
def _quantize(
    x, rnd, tab_ptr, BITS: tl.constexpr, MODE: tl.constexpr, STOCHASTIC: tl.constexpr, RNG: tl.constexpr = 0,
    SEARCH: tl.constexpr = 1,
):  # fmt: skip
    """Codes, scales and dequantized values of the ``[ROWS, BLOCK]`` tile ``x`` (padding already zero).

    The formulas of :func:`~client.compression.quant.quantize_torch` (absmax scale, uniform or NF4 codes;
    ``rnd`` the dithers of stochastic rounding from :func:`_dither`), with ``y = x * (1 / s)`` (the reciprocal
    correctly rounded once a block) where torch divides: within 1.5 ulp of ``x / s``, which moves a
    round-to-nearest code only when ``y`` lies that close to a rounding boundary (the standalone quantize
    kernel corrects it with two FMAs a value for exact agreement; the step, issue-bound, does not: 3 of ~170
    instructions a value per quantized slot). ``y`` may pass 1 by an ulp: every code is capped at the top
    one; it is kept >= -1.

    Uniform codes to nearest are ``min(floor(t + 1/2), top)`` as torch computes them, taken as a float (the
    dequantized value needs no int-to-float conversion) or as an int by truncation (``t + 1/2 > 0``: the
    same integer, without a float floor); whichever a caller does not use, the compiler drops. Stochastic
    uniform codes are ``floor(t + u)`` by the magic-number rounding ``z = (t + u - 1/2) + MAGIC``: ``z`` is an
    integer in float32, its low bits the code (no float-to-int conversion) and ``z - MAGIC`` its exact float.
    This rounds ``t + u - 1/2`` half to even where ``floor`` would round half up: a tie needs ``t`` exactly
    on the dither's grid, and then moves its round-up probability from the grid's upper edge to its lower
    one, by one dither step; the bias stays within half a dither step of the quantization step (the bounds
    of :func:`_dither`). With the 16-bit dithers ``t + u`` may reach ``top + 1`` for ``y`` an ulp past 1:
    capped; the 8-bit dithers stop ``2^-9`` short of 1, more than that ulp, so they need no cap.
    """
    top: tl.constexpr = (1 << BITS) - 1
    BLOCK: tl.constexpr = x.shape[1]
    s = tl.max(tl.abs(x), axis=1)
    safe = tl.where(s > 0, s, 1.0)
    inv = tl.math.div_rn(tl.full(s.shape, 1.0, tl.float32), safe)
    y = tl.maximum(x * inv[:, None], -1.0)
    if MODE == 1:
        if STOCHASTIC:
            u = tl.fma(rnd, 128.0, -128.0 + _dither_offset(RNG, BITS, BLOCK))
            if SEARCH == 1:
                code, level = _nf4_stochastic(y, u, tab_ptr)
            else:
                code = _nf4_dithered(y, u)
                level = tl.load(tab_ptr + code)
        else:
            if SEARCH == 1:  # noqa: SIM108 (a Triton constexpr branch)
                code = _nf4_nearest(y, tab_ptr)
            else:
                code = _nf4_nearest_tree(y)
            level = tl.load(tab_ptr + code)
        # an FMA (+0) rather than a multiply, like the uniform codes' FMA: the compiler may not contract it
        # into a later ``g - c``, which it could do only where no mask select stands between them (the
        # whole-block launch), and the two launches of a tensor would round differently
        deq = tl.fma(level, s[:, None], 0.0)
    else:
        half: tl.constexpr = 0.5 * top
        step = s * (2.0 / top)
        if STOCHASTIC:
            # t + u - 1/2 = 128 d + ((y + 1) top / 2 - 128 - 1/2 + offset) (_dither's u): t's FMA takes the
            # constants, a second FMA the dither, one add the magic number
            z = tl.fma(rnd, 128.0, tl.fma(y, half, half - 128.5 + _dither_offset(RNG, BITS, BLOCK))) + MAGIC
            if not (((RNG >= 2) and (BITS <= 8)) and (BLOCK >= 128)):
                z = tl.minimum(z, MAGIC + top)
            code = z.to(tl.int32, bitcast=True) - MAGIC_BITS
            cf = z - MAGIC
        else:
            t = tl.fma(y, half, half) + 0.5  # (y + 1) top / 2 in one instruction, as torch rounds it
            code = tl.minimum(t.to(tl.int32), top)  # t > 0: truncation is the floor
            cf = tl.minimum(tl.floor(t), top)
        deq = tl.fma(cf, step[:, None], -s[:, None])
    return code, s, deq


# The 8-bit dithers ("byte draws"): ``((RNG >= 2) and (BITS <= 8)) and (BLOCK >= 128)``, written out at
# each use because triton 3.6 does not fold a jit helper's constexpr result into a static ``if``. ``RNG`` 2
# or 3, at code widths (bf16 slots keep 16 bits) and blocks of 128 values and up: a thread holds the values
# ``32`` apart in a block row, so a word's four values (a quarter of a block apart) share its thread only
# where a quarter block is a multiple of 32; in the 64-value blocks (2-4 bits) they would not, and the
# 16-bit draws stay.


@triton.jit
def _dither_offset(RNG: tl.constexpr, BITS: tl.constexpr, BLOCK: tl.constexpr):
    """What :func:`_dither`'s ``128 d - 128`` lacks of the uniform: ``2^-17`` (the half of a 16-bit draw),
    or 0 (8-bit dithers carry their half)."""
    if ((RNG >= 2) and (BITS <= 8)) and (BLOCK >= 128):
        return tl.constexpr(0.0)
    else:
        return tl.constexpr(2.0**-17)


@triton.jit
def _nf4_stochastic(y, u, tab_ptr):
    """The stochastic NF4 code of ``y`` with dither ``u``, and its level: :func:`_nf4_dithered`'s count of
    the thresholds ``T_i = level[i-1] + u gap[i] <= y`` (``i`` 1-15, the same FMA a threshold), found by a
    search instead of 15 comparisons. Every gap is the exact difference of its levels (a test checks it), so
    ``T_i`` lies in ``[level[i-1], level[i]]`` (``0 <= u < 1``): the thresholds ``i <= lo`` pass and those
    ``i > lo + 1`` fail, ``lo`` the levels 1-15 at or below ``y``, and the count is ``lo + (y >= T_{lo+1})``.
    ``lo`` is the cell's count plus one comparison (:func:`_nf4_cell`), ``(level[lo], gap[lo+1])`` one
    8-byte gather (the top level's gap is NaN: nothing passes past it), and the code's level
    ``level[lo] + gap[lo+1]`` where the last threshold passed (exact)."""
    nxt, base = _nf4_cell(y, tab_ptr, NF4_LEVEL_CELLS)
    lo = base - _ge_mask(y, nxt)
    level, gap = _nf4_pair(tab_ptr.to(tl.pointer_type(tl.int64)) + NF4_PAIRS, lo)
    gap = gap.to(tl.float32, bitcast=True)
    up = _ge_mask(y, tl.fma(u, gap, level))
    return lo - up, tl.where(up != 0, level + gap, level)


@triton.jit
def _nf4_nearest(y, tab_ptr):
    """The nearest NF4 code of ``y``, :func:`_nf4_nearest_tree`'s count of the midpoints strictly below
    ``y``: the cell's count plus one comparison (:func:`_nf4_cell`)."""
    nxt, base = _nf4_cell(y, tab_ptr, NF4_MID_CELLS)
    return base - _gt_mask(y, nxt)


@triton.jit
def _ge_mask(a, b):
    """int32 ``-1`` where ``a >= b``, else 0 (NaN: 0): compiled, one ``FSET`` (``set.ge.s32.f32``), which an
    integer add takes as it is; a comparison and a select where the compiler picks them."""
    if PRMT:
        return tl.inline_asm_elementwise(
            "set.ge.s32.f32 $0, $1, $2;", "=r,f,f", [a, b], dtype=tl.int32, is_pure=True, pack=1
        )
    else:
        return tl.where(a >= b, -1, 0)


@triton.jit
def _gt_mask(a, b):
    """int32 ``-1`` where ``a > b``, else 0 (NaN: 0), as :func:`_ge_mask`."""
    if PRMT:
        return tl.inline_asm_elementwise(
            "set.gt.s32.f32 $0, $1, $2;", "=r,f,f", [a, b], dtype=tl.int32, is_pure=True, pack=1
        )
    else:
        return tl.where(a > b, -1, 0)


@triton.jit
def _nf4_cell(y, tab_ptr, AT: tl.constexpr):
    """``(next, base)`` of ``y``'s cell (:func:`~client.compression.codes.nf4_cells`) from the table at
    64-bit word ``AT``: the points below the cell and the point after them. The cell is ``rne(scale y +
    shift)``, one FMA whose magic number rounds (as :func:`_quantize`'s stochastic codes), capped at the top
    cell (``y`` an ulp past 1, or ``inf`` from a subnormal scale; ``y >= -1`` is cell 0 or more). The cell's
    float bits index the table from a base moved back by ``MAGIC_BITS`` words (no subtraction a value)."""
    z = tl.fma(y, NF4_CELL_SCALE, NF4_CELL_SHIFT + MAGIC)
    bits = tl.minimum(z.to(tl.int32, bitcast=True), MAGIC_BITS + NF4_CELL_TOP)
    return _nf4_pair(tab_ptr.to(tl.pointer_type(tl.int64)) + (AT - MAGIC_BITS), bits)


@triton.jit
def _nf4_pair(words, i):
    """Entry ``i`` of the table of 64-bit ``words`` (one 8-byte load): its first float32 word as a float, the
    second as int32 bits."""
    w = tl.load(words + i)
    return w.to(tl.int32).to(tl.float32, bitcast=True), (w >> 32).to(tl.int32)


@triton.jit
def _words4(
    key, blk, BLOCK: tl.constexpr, STOCHASTIC: tl.constexpr, RNG: tl.constexpr = 0, BITS: tl.constexpr = 8
):  # fmt: skip
    """The four random words of stochastic rounding, one a stream: ``[ROWS, BLOCK / 2]`` each, one Philox
    call per *pair* of values (counter: the pair's index in the tensor), or with 8-bit dithers
    (the byte draws) ``[ROWS, BLOCK / 4]``, one call per *quad*. :func:`_dither` turns a word into its
    values' dithers where they are used (the words in registers are a half or a quarter of the size of the
    dithers). ``RNG`` odd: :func:`_hash_words4` instead of Philox."""
    if STOCHASTIC:
        if ((RNG >= 2) and (BITS <= 8)) and (BLOCK >= 128):  # the quad's index
            idx = blk[:, None] * (BLOCK // 4) + tl.arange(0, BLOCK // 4)[None, :]
        else:  # the pair's
            idx = blk[:, None] * (BLOCK // 2) + tl.arange(0, BLOCK // 2)[None, :]
        if RNG % 2 == 1:
            return _hash_words4(key, idx)
        else:
            return tl.randint4x(key, idx, n_rounds=PHILOX_ROUNDS)
    else:
        return 0, 0, 0, 0


@triton.jit
def _lowbias32(x):
    """Wellons' lowbias32 of the uint32 tile ``x`` (wrapping multiplies)."""
    x = x ^ (x >> 16)
    x = x * tl.full([], HASH_M1, tl.uint32)
    x = x ^ (x >> 15)
    x = x * tl.full([], HASH_M2, tl.uint32)
    return x ^ (x >> 16)


@triton.jit
def _hash_words4(key, pair):
    """Four uint32 words per pair from a hash (:data:`HASH_M1`): word ``j`` of pair ``i`` is
    ``lowbias32((4 i + j) ^ salt)``, ``salt = lowbias32(lo ^ lowbias32(hi))`` of the 64-bit key's words."""
    lo = (key & 0xFFFFFFFF).to(tl.uint32)
    hi = ((key >> 32) & 0xFFFFFFFF).to(tl.uint32)
    salt = _lowbias32(lo ^ _lowbias32(hi))
    c = (pair * 4).to(tl.uint32) ^ salt
    return _lowbias32(c), _lowbias32(c ^ 1), _lowbias32(c ^ 2), _lowbias32(c ^ 3)


@triton.jit
def _dither(r, STOCHASTIC: tl.constexpr, RNG: tl.constexpr, BITS: tl.constexpr, BLOCK: tl.constexpr):
    """The ``[ROWS, BLOCK]`` dithers of stochastic rounding from the word tile ``r`` of :func:`_words4`, or
    0.5 (round to nearest).

    At code widths (``BITS <= 8``) a dither is a float32 ``d`` in ``[1, 1 + 2^-7)`` whose mantissa holds the
    random bits (one ``PRMT`` a value: the word's byte or half into a constant's bits), the uniform being
    ``u = 128 d - 128 + ``:func:`_dither_offset`: no int-to-float conversion, and :func:`_quantize` folds
    the scaling into the FMAs it runs anyway. The draws, and what they cost in accuracy:

    * 16 bits (``RNG`` 0, 1; ``d = 1 + h / 2^23``, the half ``h`` in the low mantissa): ``u = (h + 1/2) /
      2^16``, the rounding-up probability of a value at fraction ``f`` of a quantization step within
      ``2^-17`` of ``f``. Element ``i`` of a block takes the low half of word ``i``, ``i + BLOCK / 2`` the
      high one.
    * 8 bits (the byte draws, ``RNG`` 2, 3; ``d = 1 + (b + 1/2) / 2^15``, the byte ``b`` in mantissa bits
      8-15 over a one in bit 7): ``u = (b + 1/2) / 2^8``, one Philox call (or four hashes) per four values
      instead of two, the probability within ``2^-9`` of ``f``: a bias of at most ``2^-9`` of a step, far
      below the rounding noise itself (a variance of ``f (1 - f)`` steps squared). Element ``i + j BLOCK /
      4`` takes byte ``j`` of word ``i``.

    The values of a thread lie ``32`` apart in a block (the tile's layout), so these orders keep a word and
    the values it rounds in one thread (pairing elements ``2i`` and ``2i + 1`` costs shuffles between
    lanes). bf16 slots (``BITS = 16``) take ``u`` itself, ``(h + 1/2) / 2^16``, as ``_bf16`` adds it.
    """
    if STOCHASTIC:
        w = r.to(tl.uint32, bitcast=True)
        if BITS >= 16:  # u itself: (r + 0.5) / 2^16
            t = tl.join(w & 0xFFFF, w >> 16)
            u = tl.fma(t.to(tl.float32), 1.0 / 65536.0, 0.5 / 65536.0)
            return _halves(u)
        elif ((RNG >= 2) and (BITS <= 8)) and (BLOCK >= 128):
            # byte j to mantissa bits 8-15, then bit 7 (the half)
            lo = tl.join(_place(w, 0, 0x3F800080), _place(w, 1, 0x3F800080))
            hi = tl.join(_place(w, 2, 0x3F800080), _place(w, 3, 0x3F800080))
            q = tl.join(lo, hi)  # [ROWS, N, 2, 2]: q[:, i, a, b] is byte 2 b + a of word i
            d = tl.permute(q.to(tl.float32, bitcast=True), [0, 3, 2, 1])  # [ROWS, b, a, N]
            return tl.reshape(d, [d.shape[0], d.shape[3] * 4])
        else:  # half h to mantissa bits 0-15
            t = tl.join(_place(w, 4, 0x3F800000), _place(w, 5, 0x3F800000))
            return _halves(t.to(tl.float32, bitcast=True))
    else:
        return 0.5


@triton.jit
def _place(w, K: tl.constexpr, BITS_: tl.constexpr):
    """``BITS_ | (byte K of w) << 8`` (``K < 4``), or ``BITS_ | half K - 4 of w`` (``K`` 4, 5): one ``PRMT``
    (byte permute) compiled, the same bits in integer operations under the interpreter."""
    if PRMT:
        # selector nibbles, byte 0 first: 0-3 w's bytes, 4-7 BITS_'s. K < 4: BITS_'s 0, w's K, BITS_'s 2 and
        # 3; K = 4 (5): w's 0 and 1 (2 and 3), BITS_'s 2 and 3
        SEL: tl.constexpr = (0x7604 | (K << 4)) if K < 4 else (0x7610 if K == 4 else 0x7632)
        return tl.inline_asm_elementwise(
            f"prmt.b32 $0, $1, $2, {SEL};", "=r,r,r", [w, tl.full(w.shape, BITS_, tl.uint32)],
            dtype=tl.uint32, is_pure=True, pack=1,
        )  # fmt: skip
    elif K == 0:
        return ((w << 8) & 0xFF00) | BITS_
    elif K == 1:
        return (w & 0xFF00) | BITS_
    elif K == 2:
        return ((w >> 8) & 0xFF00) | BITS_
    elif K == 3:
        return ((w >> 16) & 0xFF00) | BITS_
    elif K == 4:
        return (w & 0xFFFF) | BITS_
    else:
        return (w >> 16) | BITS_


@triton.jit
def _halves(t):
    """``[ROWS, 2 N]`` from ``[ROWS, N, 2]``: ``t[:, i, k]`` to element ``i + k N``."""
    t = tl.permute(t, [0, 2, 1])
    return tl.reshape(t, [t.shape[0], t.shape[2] * 2])


@triton.jit
def _store_codes(code, s, dptr, sptr, blk, row_ok, BITS: tl.constexpr, BLOCK: tl.constexpr):
    ROW_BYTES: tl.constexpr = BLOCK * BITS // 8
    tl.store(sptr + blk, s, mask=row_ok)
    if BITS == 8:
        cols = tl.arange(0, BLOCK)
        tl.store(dptr + blk[:, None] * ROW_BYTES + cols[None, :], code.to(tl.uint8), mask=row_ok[:, None])
    else:
        PER: tl.constexpr = 8 if BITS == 3 else 8 // BITS
        G: tl.constexpr = BLOCK // PER
        g = tl.arange(0, G)
        shifts = tl.arange(0, PER) * BITS
        # disjoint bit fields: the sum is the bitwise OR of the shifted codes
        word = tl.sum(tl.reshape(code, [code.shape[0], G, PER]) << shifts[None, None, :], axis=2)
        if BITS == 3:
            k = tl.arange(0, 4)  # 3 bytes per 24-bit word; lane 3 is masked off
            byte = (word[:, :, None] >> (k * 8)[None, None, :]) & 0xFF
            off = blk[:, None, None] * ROW_BYTES + g[None, :, None] * 3 + k[None, None, :]
            m3 = row_ok[:, None, None] & (k < 3)[None, None, :]
            tl.store(dptr + off, byte.to(tl.uint8), mask=m3)
        else:
            tl.store(dptr + blk[:, None] * ROW_BYTES + g[None, :], word.to(tl.uint8), mask=row_ok[:, None])


@triton.jit
def _bf16(x, rnd, STOCHASTIC: tl.constexpr):
    """``x`` rounded to bf16 as the torch path rounds it: to nearest even, or stochastically by adding 16
    random low bits and truncating (``_bf16_stochastic``; ``rnd`` the uniform ``(r + 0.5) / 2^16``)."""
    xi = x.to(tl.int32, bitcast=True)
    if STOCHASTIC:  # noqa: SIM108 (a Triton constexpr branch)
        add = (rnd * 65536.0).to(tl.int32)
    else:  # to nearest, ties to even, in integer arithmetic (the interpreter's own cast truncates)
        add = ((xi >> 16) & 1) + 0x7FFF
    # the low 16 bits are zero: the cast below is exact
    return ((xi + add) & -65536).to(tl.float32, bitcast=True).to(tl.bfloat16)


@triton.jit
def _fetch_slot(
    A, col: tl.constexpr, blk, row_ok, off, in_mask, BITS: tl.constexpr, BLOCK: tl.constexpr,
    ALIGN: tl.constexpr = False, PAIRS: tl.constexpr = False,
):  # fmt: skip
    """The loads of the state slot at address columns ``col`` (codes / tensor) and ``col + 1`` (scales), as
    ``(raw, scales)`` for :func:`_decode_slot`: packed codes and their block scales at 2-8 bits, the values
    (fp32) and a dummy 0 at 16 (a bf16 tensor) and 32 (an fp32 tensor)."""
    if BITS == 32:
        return tl.load(_ptr(A, col, tl.float32, ALIGN) + off, mask=in_mask, other=0.0), 0.0
    elif BITS == 16:
        return tl.load(_ptr(A, col, tl.bfloat16, ALIGN) + off, mask=in_mask, other=0.0).to(tl.float32), 0.0
    else:
        s = tl.load(_ptr(A, col + 1, tl.float32, ALIGN) + blk, mask=row_ok, other=0.0)
        return _fetch_codes(_ptr(A, col, tl.uint8, ALIGN), blk, row_ok, BITS, BLOCK, PAIRS), s


@triton.jit
def _decode_slot(
    raw, s, in_mask, tab_ptr, BITS: tl.constexpr, MODE: tl.constexpr, FULL: tl.constexpr,
    PAIRS: tl.constexpr = False,
):  # fmt: skip
    """fp32 values of a slot from :func:`_fetch_slot`'s loads; zero outside ``in_mask``."""
    if BITS >= 16:
        return raw
    else:
        return _keep(in_mask, _levels(raw, s, tab_ptr, BITS, MODE, PAIRS), FULL)


@triton.jit
def _store_slot(
    x, rnd, A, col: tl.constexpr, blk, row_ok, off, in_mask, tab_ptr,
    BITS: tl.constexpr, MODE: tl.constexpr, BLOCK: tl.constexpr, STOCHASTIC: tl.constexpr, RNG: tl.constexpr,
    SEARCH: tl.constexpr = 1, ALIGN: tl.constexpr = False,
):  # fmt: skip
    """Store ``x`` (zero outside ``in_mask``) into the slot :func:`_load_slot` reads, in place."""
    if BITS == 32:
        tl.store(_ptr(A, col, tl.float32, ALIGN) + off, x, mask=in_mask)
    elif BITS == 16:
        tl.store(_ptr(A, col, tl.bfloat16, ALIGN) + off, _bf16(x, rnd, STOCHASTIC), mask=in_mask)
    else:
        code, s, _ = _quantize(x, rnd, tab_ptr, BITS, MODE, STOCHASTIC, RNG, SEARCH)
        codes, scales = _ptr(A, col, tl.uint8, ALIGN), _ptr(A, col + 1, tl.float32, ALIGN)
        _store_codes(code, s, codes, scales, blk, row_ok, BITS, BLOCK)


@triton.jit
def _roundtrip(
    u, rnd, tab_ptr, BITS: tl.constexpr, MODE: tl.constexpr, STOCHASTIC: tl.constexpr, RNG: tl.constexpr,
    SEARCH: tl.constexpr = 1,
):  # fmt: skip
    """``Q_b(u)``: what a ``BITS``-wide channel delivers (identity at 32 bits, a bf16 rounding at 16)."""
    if BITS == 32:
        return u
    elif BITS == 16:
        return _bf16(u, rnd, STOCHASTIC).to(tl.float32)
    else:
        _, _, c = _quantize(u, rnd, tab_ptr, BITS, MODE, STOCHASTIC, RNG, SEARCH)
        return c


@triton.jit
def _tile_ok(gsq, numel):
    """The pre-pass's test at tile scale (``SKIP_GRAIN = "tile"``): the tile's ``sum g^2`` is finite and
    ``sum g^2 x numel < 2^120`` (``fused.run``'s limit on a tensor's norm; ``<`` is False for NaN)."""
    return gsq * numel < 2.0**120


@triton.jit
def _finite(norm_ptr, meta_ptr, t, META: tl.constexpr, CHECK: tl.constexpr):
    """Whether tensor ``t``'s gradient norm is finite (``<`` is False for NaN and inf); always True without
    ``CHECK`` (no pre-pass ran: every tensor is stepped whatever its gradient holds)."""
    fin = t >= 0
    if CHECK:
        fin = tl.load(norm_ptr + tl.load(meta_ptr + t * META + META - 1)) < float("inf")
    return fin


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
    pid0,  # index of the launch's first program in the tables (whole-block programs first, then the rest)
    part_ptr,  # float32 [n_programs, 2] out: sum (u - c)^2, sum u^2 of the program's values times
    # STATS_EVERY (every STATS_EVERY-th program; the others keep the zeros the host allocated)
    sample_ptr,  # float32 [n_programs] out: the gradient at the first value of the program's tile (SRC 0)
    skip_ptr,  # int32 [1]: tensors skipped for non-finite gradients (accumulated)
    xsq_ptr,  # float32 [T] out (SRC 1): sum x^2 of the projected coefficients, added with atomics
    scal_ptr,  # float32 [3]: 1 - lr * weight_decay, lr / (1 - beta1^step), 1 / sqrt(1 - beta2^step)
    # (a device buffer written once a step: a CUDA graph of the step replays with each step's values)
    eps,
    beta1,
    beta2,
    ef_beta,
    gamma,  # the shift (read only when SHIFT)
    PDTYPE: tl.constexpr,  # parameter / gradient dtype
    BITS: tl.constexpr,  # 2, 3, 4, 8 (block codes), 16 (bf16 slots) or 32 (fp32 slots)
    MODE: tl.constexpr,  # 0 uniform, 1 NF4: code of m, e, h and the compressed gradient (sqrt(v): uniform)
    BLOCK: tl.constexpr,  # quantization block (at 16 / 32 bits only the tiling unit)
    ROWS: tl.constexpr,
    EF: tl.constexpr,  # error feedback buffer present
    SHIFT: tl.constexpr,  # gamma > 0: the reference h is present
    FACTORED: tl.constexpr,  # Adafactor row x column second moment instead of a full v slot
    STRIP: tl.constexpr,  # FACTORED: the program walks a column strip of several tiles in a loop
    STOCHASTIC: tl.constexpr,
    FRESH: tl.constexpr,  # a basis refresh: m, v, e, h are read in fp32 from the rotated copies at address
    # columns 15-18 (refresh.py), then stored at BITS into their slots as usual
    SRC: tl.constexpr,  # 0: rank 0 (read the gradient, update the parameter); 1: projected (read the
    # coefficients x = P^T G from the scratch at address column 14, write U = m / denom over them)
    STATS_EVERY: tl.constexpr,
    FULL: tl.constexpr,  # every block of every program is whole (no value past the tensor's end)
    EARLY: tl.constexpr = False,  # issue every load of a tile before its arithmetic (fused.EARLY_LOADS)
    RNG: tl.constexpr = 0,  # stochastic rounding's words: 0 Philox, 1 the hash; 2, 3 the same with 8-bit
    # dithers (fused.DRAWS)
    CHECK: tl.constexpr = True,  # read the pre-pass's norm to skip a non-finite tensor; False (SRC 0 only):
    # no pre-pass ran, every tensor is stepped and the program adds its sum g^2 into the norm slot instead
    PARTIALS: tl.constexpr = 0,  # FACTORED: 0 adds the sums of c^2 with atomics; > 0 (the rows a program
    # owns, fused.FACTOR_SUMS = "partials") stores them in the program's own slots (partial_sums_kernel)
    SEARCH: tl.constexpr = 1,  # NF4 codes: 1 by a search of cells (_nf4_cell), 0 by comparisons with each
    # level or midpoint (fused.NF4_SEARCH)
    TILE_SKIP: tl.constexpr = False,  # without CHECK, SRC 0, not STRIP (fused.SKIP_GRAIN = "tile"): a tile
    # whose gradient is non-finite (or ||g_tile||^2 numel >= 2^120) writes nothing and counts in skip
    ALIGN: tl.constexpr = False,  # every address of the launch's tables 16-byte aligned (fused.MATRIX_ALIGN)
    PAIRS: tl.constexpr = False,  # 4-bit codes: each byte loaded once and split (fused.FOUR_BIT_PAIRS)
):
    """The compressed AdamW step of one program's blocks of one tensor's ``rows x n`` values (module
    docstring): ``ROWS`` blocks, or with ``STRIP`` a column strip of any number of blocks (the host
    gives ``ROWS * fused.factor_iters(BITS)``) walked ``ROWS`` at a time, its column sums of ``c^2`` kept in
    registers and added with one atomic per column instead of one per tile (:func:`_tile`)."""
    pid = pid0 + tl.program_id(0)
    decay = tl.load(scal_ptr)
    step_size = tl.load(scal_ptr + 1)
    inv_bc2s = tl.load(scal_ptr + 2)
    t = tl.load(prog_ptr + pid * 3)
    b0 = tl.load(prog_ptr + pid * 3 + 1)
    nrows = tl.load(prog_ptr + pid * 3 + 2)
    numel = tl.load(meta_ptr + t * 5).to(tl.int32)  # tensors under 2^31 values (fused.py checks)
    ncols = tl.load(meta_ptr + t * 5 + 1).to(tl.int32)
    stride = tl.load(meta_ptr + t * 5 + 3).to(tl.int32)
    fin = _finite(norm_ptr, meta_ptr, t, 5, CHECK)
    A = addr_ptr + t * N_ADDR
    live = tl.where(fin, nrows, 0)  # a skipped tensor has no rows
    seed = tl.load(seed_ptr)
    key = seed + (t.to(tl.int64) + 1) * 4294967296
    stats = pid % STATS_EVERY == 0
    cols = tl.arange(0, BLOCK)
    if STRIP:  # a column strip: every tile row has the same columns, their c^2 sums add up in registers
        colsum = tl.zeros([BLOCK], dtype=tl.float32)
        d2 = 0.0
        u2 = 0.0
        gsq = 0.0
        for it in range(0, tl.cdiv(live, ROWS)):
            cs, d, u, x = _tile(
                it * ROWS + tl.arange(0, ROWS), b0, live, stride, numel, ncols, t, A, key, grad_ptr, tab_ptr,
                mean_ptr, stats, decay, step_size, inv_bc2s, eps, beta1, beta2, ef_beta, gamma,
                PDTYPE, BITS, MODE, BLOCK, EF, SHIFT, FACTORED, STOCHASTIC, FRESH, SRC, FULL, EARLY, RNG,
                CHECK, PARTIALS, SEARCH, TILE_SKIP, ALIGN, PAIRS,
            )  # fmt: skip
            colsum += cs
            d2 += d
            u2 += u
            gsq += x
    else:
        colsum, d2, u2, gsq = _tile(
            tl.arange(0, ROWS), b0, live, stride, numel, ncols, t, A, key, grad_ptr, tab_ptr,
            mean_ptr, stats, decay, step_size, inv_bc2s, eps, beta1, beta2, ef_beta, gamma,
            PDTYPE, BITS, MODE, BLOCK, EF, SHIFT, FACTORED, STOCHASTIC, FRESH, SRC, FULL, EARLY, RNG, CHECK,
            PARTIALS, SEARCH, TILE_SKIP, ALIGN, PAIRS,
        )  # fmt: skip
    if FACTORED:
        b = (b0 * BLOCK) % ncols + cols
        col_ok = cols < tl.where(live > 0, BLOCK, 0)
        if PARTIALS > 0:  # slot row k = (first row) / PARTIALS of [programs a strip, cols]: b0 BLOCK is
            # (first row) ncols + the strip's first column
            k_cols = (b0 * BLOCK - (b0 * BLOCK) % ncols) // PARTIALS
            tl.store(_ptr(A, 11, tl.float32) + k_cols + b, colsum, mask=col_ok)
        else:
            tl.atomic_add(_ptr(A, 11, tl.float32) + b, colsum, mask=col_ok, sem="relaxed")
    if TILE_SKIP:  # a tile that failed _tile's test wrote nothing: out of the kurtosis sample, and counted
        fin = fin & _tile_ok(gsq, numel)
    if SRC == 0:
        g_ptr = _ptr(grad_ptr, t, PDTYPE)
        tl.store(sample_ptr + pid, tl.load(g_ptr + b0 * BLOCK, mask=fin, other=0.0).to(tl.float32))
        if not CHECK:  # the squared norm the pre-pass would have given, for the statistics
            tl.atomic_add(norm_ptr + tl.load(meta_ptr + t * 5 + 4), gsq, sem="relaxed")
    else:
        tl.atomic_add(xsq_ptr + t, gsq, sem="relaxed")
    if stats:
        tl.store(part_ptr + pid * 2, d2 * STATS_EVERY)
        tl.store(part_ptr + pid * 2 + 1, u2 * STATS_EVERY)
    if TILE_SKIP:  # the tiles that wrote nothing
        tl.atomic_add(skip_ptr, tl.where(live > 0, tl.where(fin, 0, 1), 0), sem="relaxed")
    else:
        tl.atomic_add(skip_ptr, tl.where(fin, 0, 1) * tl.where(b0 == 0, 1, 0), sem="relaxed")


@triton.jit
def _tile(
    rows, b0, live, stride, numel, ncols, t, A, key, grad_ptr, tab_ptr, mean_ptr, stats,
    decay, step_size, inv_bc2s, eps, beta1, beta2, ef_beta, gamma,
    PDTYPE: tl.constexpr, BITS: tl.constexpr, MODE: tl.constexpr, BLOCK: tl.constexpr, EF: tl.constexpr,
    SHIFT: tl.constexpr, FACTORED: tl.constexpr, STOCHASTIC: tl.constexpr, FRESH: tl.constexpr,
    SRC: tl.constexpr, FULL: tl.constexpr, EARLY: tl.constexpr, RNG: tl.constexpr, CHECK: tl.constexpr,
    PARTIALS: tl.constexpr, SEARCH: tl.constexpr, TILE_SKIP: tl.constexpr = False,
    ALIGN: tl.constexpr = False, PAIRS: tl.constexpr = False,
):  # fmt: skip
    """One tile of :func:`matrix_step_kernel`: tile rows ``rows`` (those ``< live`` are real), i.e. blocks
    ``b0 + rows * stride``. Returns the tile's column sums of ``c^2`` (FACTORED; the row sums are added, or
    with ``PARTIALS`` stored in the strip's slot row, here),
    its ``sum (u - C(u))^2``, ``sum u^2`` and ``sum x^2`` (SRC 1) or ``sum g^2`` (SRC 0 without CHECK)."""
    cols = tl.arange(0, BLOCK)
    blk = b0 + rows * stride
    row_ok = rows < live
    off = blk[:, None] * BLOCK + cols[None, :]
    if FULL:
        in_mask = tl.broadcast_to(row_ok[:, None], [rows.shape[0], BLOCK])
    else:
        in_mask = row_ok[:, None] & (off < numel)

    gsq = 0.0
    if SRC == 0:
        g_ptr = _ptr(grad_ptr, t, PDTYPE, ALIGN)
        g = tl.load(g_ptr + off, mask=in_mask, other=0.0).to(tl.float32)
        if not CHECK:  # the norm the pre-pass would have summed (masked values load as 0)
            gsq = tl.sum(tl.sum(g * g, axis=1), axis=0)
            if TILE_SKIP:  # a non-finite (or too large) tile's rows count as not real: nothing is stored
                live = tl.where(_tile_ok(gsq, numel), live, 0)
                row_ok = rows < live
                if FULL:
                    in_mask = tl.broadcast_to(row_ok[:, None], [rows.shape[0], BLOCK])
                else:
                    in_mask = row_ok[:, None] & (off < numel)
    else:
        x_ptr = _ptr(A, 14, tl.float32, ALIGN)
        g = tl.load(x_ptr + off, mask=in_mask, other=0.0)
    if EARLY:  # every load of the tile before its arithmetic: their latencies overlap (see EARLY)
        if not FRESH:
            if EF:
                e_raw, e_s = _fetch_slot(A, 6, blk, row_ok, off, in_mask, BITS, BLOCK, ALIGN, PAIRS)
            if SHIFT:
                h_raw, h_s = _fetch_slot(A, 12, blk, row_ok, off, in_mask, BITS, BLOCK, ALIGN, PAIRS)
            m_raw, m_s = _fetch_slot(A, 2, blk, row_ok, off, in_mask, BITS, BLOCK, ALIGN, PAIRS)
            if not FACTORED:
                v_raw, v_s = _fetch_slot(A, 4, blk, row_ok, off, in_mask, BITS, BLOCK, ALIGN, PAIRS)
        if SRC == 0:
            p_ptr = _ptr(A, 1, PDTYPE, ALIGN) + off
            p_old = tl.load(p_ptr, mask=in_mask, other=0.0)
    if EF:
        if FRESH:
            e = tl.load(_ptr(A, 17, tl.float32, ALIGN) + off, mask=in_mask, other=0.0)
        else:
            if not EARLY:
                e_raw, e_s = _fetch_slot(A, 6, blk, row_ok, off, in_mask, BITS, BLOCK, ALIGN, PAIRS)
            e = _decode_slot(e_raw, e_s, in_mask, tab_ptr, BITS, MODE, FULL, PAIRS)
        u = g + e
    else:
        u = g
    if SHIFT:
        if FRESH:
            h = tl.load(_ptr(A, 18, tl.float32, ALIGN) + off, mask=in_mask, other=0.0)
        else:
            if not EARLY:
                h_raw, h_s = _fetch_slot(A, 12, blk, row_ok, off, in_mask, BITS, BLOCK, ALIGN, PAIRS)
            h = _decode_slot(h_raw, h_s, in_mask, tab_ptr, BITS, MODE, FULL, PAIRS)
        u = u - gamma * h
    w0, w1, w2, w3 = _words4(key, blk, BLOCK, STOCHASTIC, RNG, BITS)
    c = _keep(
        in_mask,
        _roundtrip(
            u, _dither(w0, STOCHASTIC, RNG, BITS, BLOCK), tab_ptr, BITS, MODE, STOCHASTIC, RNG, SEARCH
        ),
        FULL,
    )
    if SHIFT:
        c_u = c
        c = _keep(in_mask, gamma * h + c_u, FULL)

    if EF:
        if SHIFT:
            e_new = _keep(in_mask, ef_beta * e + (1.0 - gamma) * (g - c), FULL)
        else:
            e_new = _keep(in_mask, ef_beta * e + (g - c), FULL)
        ue = _dither(w1, STOCHASTIC, RNG, BITS, BLOCK)
        _store_slot(
            e_new, ue, A, 6, blk, row_ok, off, in_mask, tab_ptr,
            BITS, MODE, BLOCK, STOCHASTIC, RNG, SEARCH, ALIGN,
        )  # fmt: skip
    if SHIFT:
        # a fifth stream: the same counters under another key (high word + 2^30)
        r4, _, _, _ = _words4(key + 4611686018427387904, blk, BLOCK, STOCHASTIC, RNG, BITS)
        uh = _dither(r4, STOCHASTIC, RNG, BITS, BLOCK)
        _store_slot(
            c, uh, A, 12, blk, row_ok, off, in_mask, tab_ptr,
            BITS, MODE, BLOCK, STOCHASTIC, RNG, SEARCH, ALIGN,
        )  # fmt: skip
    if FRESH:
        m = tl.load(_ptr(A, 15, tl.float32, ALIGN) + off, mask=in_mask, other=0.0)
    else:
        if not EARLY:
            m_raw, m_s = _fetch_slot(A, 2, blk, row_ok, off, in_mask, BITS, BLOCK, ALIGN, PAIRS)
        m = _decode_slot(m_raw, m_s, in_mask, tab_ptr, BITS, MODE, FULL, PAIRS)
    m = _keep(in_mask, m + (1.0 - beta1) * (c - m), FULL)
    um = _dither(w2, STOCHASTIC, RNG, BITS, BLOCK)
    _store_slot(
        m, um, A, 2, blk, row_ok, off, in_mask, tab_ptr, BITS, MODE, BLOCK, STOCHASTIC, RNG, SEARCH, ALIGN
    )
    colsum = tl.zeros([BLOCK], dtype=tl.float32)
    if FACTORED:  # the history's rank-1 estimate plus this step's c^2; the c^2 sums for the fold
        sq = tl.where(in_mask, c * c + TINY, 0.0)
        # parameter row of each tile row, (blk BLOCK) // ncols: a factored tensor's tile rows are a strip's
        # blocks, one parameter row (ncols / BLOCK blocks, the stride) apart, so one division a tile
        a = (b0 * BLOCK) // ncols + rows
        b = (b0 * BLOCK) % ncols + cols  # a strip: every tile row has the same columns
        if PARTIALS > 0:  # each block's own slot of the [rows, strips] row sums: the block's index
            tl.store(_ptr(A, 10, tl.float32, ALIGN) + blk, tl.sum(sq, axis=1), mask=row_ok)
        else:
            tl.atomic_add(_ptr(A, 10, tl.float32, ALIGN) + a, tl.sum(sq, axis=1), mask=row_ok, sem="relaxed")
        colsum = tl.sum(sq, axis=0)
        vr = tl.load(_ptr(A, 8, tl.float32, ALIGN) + a, mask=row_ok, other=0.0)
        vc = tl.load(_ptr(A, 9, tl.float32, ALIGN) + b)
        hist = vr[:, None] * vc[None, :] * (1.0 / tl.load(mean_ptr + t))
        sqrt_v = tl.sqrt(hist * beta2 + (1.0 - beta2) * sq)
    elif BITS >= 16:  # v itself, in bf16 / fp32
        if FRESH:
            v = tl.load(_ptr(A, 16, tl.float32, ALIGN) + off, mask=in_mask, other=0.0)
        else:
            if not EARLY:
                v_raw, v_s = _fetch_slot(A, 4, blk, row_ok, off, in_mask, BITS, BLOCK, ALIGN, PAIRS)
            v = _decode_slot(v_raw, v_s, in_mask, tab_ptr, BITS, MODE, FULL, PAIRS)
        v = _keep(in_mask, v * beta2 + (1.0 - beta2) * (c * c), FULL)
        uv = _dither(w3, STOCHASTIC, RNG, BITS, BLOCK)
        _store_slot(
            v, uv, A, 4, blk, row_ok, off, in_mask, tab_ptr, BITS, MODE, BLOCK, STOCHASTIC, RNG, SEARCH, ALIGN
        )
        sqrt_v = tl.sqrt(v)  # of the fp32 value, as the torch path (the slot holds its rounding)
    else:  # sqrt(v) on the uniform code
        v_ptr = _ptr(A, 4, tl.uint8, ALIGN)
        vs_ptr = _ptr(A, 5, tl.float32, ALIGN)
        if FRESH:
            v = tl.load(_ptr(A, 16, tl.float32, ALIGN) + off, mask=in_mask, other=0.0)
        else:
            if not EARLY:
                v_raw, v_s = _fetch_slot(A, 4, blk, row_ok, off, in_mask, BITS, BLOCK, ALIGN, PAIRS)
            sv = tl.abs(_levels(v_raw, v_s, tab_ptr, BITS, 0, PAIRS))
            v = sv * sv
        v = v * beta2 + (1.0 - beta2) * (c * c)
        sqrt_v = _keep(in_mask, tl.sqrt(v), FULL)
        code, s, _ = _quantize(
            sqrt_v, _dither(w3, STOCHASTIC, RNG, BITS, BLOCK), tab_ptr, BITS, 0, STOCHASTIC, RNG
        )
        _store_codes(code, s, v_ptr, vs_ptr, blk, row_ok, BITS, BLOCK)
    denom = sqrt_v * inv_bc2s + eps
    if SRC == 0:
        if not EARLY:
            p_ptr = _ptr(A, 1, PDTYPE, ALIGN) + off
            p_old = tl.load(p_ptr, mask=in_mask, other=0.0)
        p = p_old.to(tl.float32) * decay
        p = p + (-step_size) * tl.math.fdiv(m, denom, ieee_rounding=False)
        tl.store(p_ptr, p.to(PDTYPE), mask=in_mask)
    else:
        tl.store(x_ptr + off, _keep(in_mask, m / denom, FULL), mask=in_mask)
        gsq = tl.sum(tl.sum(g * g, axis=1), axis=0)
    d2 = 0.0
    u2 = 0.0
    if stats:  # a sampled program (STATS_EVERY): the others skip two tile reductions
        d = tl.where(in_mask, u - c_u, 0.0) if SHIFT else tl.where(in_mask, u - c, 0.0)
        d2 = tl.sum(tl.sum(d * d, axis=1), axis=0)
        if TILE_SKIP:  # a skipped tile's u holds its NaN / inf: it counts as empty, as a skipped tensor's
            u = tl.where(in_mask, u, 0.0)
        u2 = tl.sum(tl.sum(u * u, axis=1), axis=0)
    return colsum, d2, u2, gsq


@triton.jit
def factor_kernel(
    addr_ptr,  # int64 [T, N_ADDR]
    meta_ptr,  # int64 [T, 5]
    norm_ptr,  # float32 [n_items]
    mean_ptr,  # float32 [T] out (FOLD False): mean of the canonical row statistic, clamped to TINY
    beta2,
    FOLD: tl.constexpr,
    CHUNK: tl.constexpr,
    CHECK: tl.constexpr = True,  # the step's CHECK: False folds every tensor's sums
):
    """The factored ``v``'s statistics around the step: one program per tensor.

    Before the step (``FOLD`` False): the mean of the canonical row statistic (the parameter's column one
    when the canonical matrix is the transpose), which the step divides the rank-1 estimate by. After it
    (``FOLD`` True): fold the step's row / column sums of ``c^2`` into the statistics and zero the sums,
    ``v_row <- beta2 v_row + (1 - beta2) rowsum / cols`` (and likewise the columns, divided by rows); a
    tensor skipped for a non-finite gradient keeps its statistics.
    """
    t = tl.program_id(0)
    A = addr_ptr + t * N_ADDR
    numel = tl.load(meta_ptr + t * 5)
    ncols = tl.load(meta_ptr + t * 5 + 1)
    transposed = tl.load(meta_ptr + t * 5 + 2)
    nrows = numel // ncols
    if FOLD:
        fin = _finite(norm_ptr, meta_ptr, t, 5, CHECK)
        _fold(_ptr(A, 8, tl.float32), _ptr(A, 10, tl.float32), nrows, ncols, beta2, fin, CHUNK)
        _fold(_ptr(A, 9, tl.float32), _ptr(A, 11, tl.float32), ncols, nrows, beta2, fin, CHUNK)
    else:
        if transposed != 0:
            mean = _sum(_ptr(A, 9, tl.float32), ncols, CHUNK) / ncols
        else:
            mean = _sum(_ptr(A, 8, tl.float32), nrows, CHUNK) / nrows
        tl.store(mean_ptr + t, tl.maximum(mean, TINY))


@triton.jit
def _sum(v_ptr, n, CHUNK: tl.constexpr):
    k = tl.arange(0, CHUNK)
    acc = tl.zeros([CHUNK], dtype=tl.float32)
    for i in range(0, n, CHUNK):
        acc += tl.load(v_ptr + i + k, mask=i + k < n, other=0.0)
    return tl.sum(acc, axis=0)


@triton.jit
def _fold(v_ptr, sum_ptr, n, across, beta2, fin, CHUNK: tl.constexpr):
    """``v <- beta2 v + (1 - beta2) sum / across`` over ``n`` entries (kept where ``fin`` is False), zero the
    sums for the next step."""
    k = tl.arange(0, CHUNK)
    for i in range(0, n, CHUNK):
        inside = i + k < n
        msk = i + k < tl.where(fin, n, 0)
        old = tl.load(v_ptr + i + k, mask=inside, other=0.0)
        new = old * beta2 + (1.0 - beta2) * (tl.load(sum_ptr + i + k, mask=msk, other=0.0) / across)
        tl.store(v_ptr + i + k, new, mask=msk)
        tl.store(sum_ptr + i + k, tl.zeros([CHUNK], dtype=tl.float32), mask=inside)


@triton.jit
def partial_sums_kernel(
    prog_ptr,  # int32 [n_programs, 3]: job, first entry, first slot row (FOLD False; 0 when FOLD)
    job_ptr,  # int64 [J, 8]: slots' address, slot rows P, entries N, their strides, statistic, across, tensor
    meta_ptr,  # int64 [T, 5]: the matrix launch's (the tensor's position in the norm vector)
    norm_ptr,  # float32 [n_items]
    beta2,
    FOLD: tl.constexpr,
    GROUP: tl.constexpr,
    COLS: tl.constexpr,
    RB: tl.constexpr = 16,  # slot rows a loop iteration loads
    CHECK: tl.constexpr = True,  # as factor_kernel's
):
    """The factored step's sums of ``c^2`` from the programs' own slots (``fused.FACTOR_SUMS =
    "partials"``), ``COLS`` entries of one job a program. A job is one tensor's row (or column) sums, stored
    by the step as ``P`` slot rows of ``N`` entries, entry ``n`` of slot row ``p`` at ``p ps + n ns``: the
    row sums a slot a block (``P`` column strips, ``ps = 1``, ``ns = P``), the column sums a slot row a
    program of a strip (``ps = N``, ``ns = 1``).

    ``FOLD`` False (only for jobs of more than ``GROUP`` slot rows): add up the slot rows of one group of
    ``GROUP``, in place into the group's first. ``FOLD`` True: add up the groups' first slot rows (or all
    ``P`` of a job of at most ``GROUP``) and fold the sums into the statistic as :func:`factor_kernel` does,
    ``v <- beta2 v + (1 - beta2) sum / across`` (kept for a tensor skipped for a non-finite gradient). Every
    slot is rewritten by the next step: nothing is zeroed.
    """
    pid = tl.program_id(0)
    J = job_ptr + tl.load(prog_ptr + pid * 3) * 8
    n0 = tl.load(prog_ptr + pid * 3 + 1)
    slots = tl.load(J).to(tl.pointer_type(tl.float32))
    # slot rows x entries < 2^31: at most a tensor's values (fused.py checks)
    P = tl.load(J + 1).to(tl.int32)
    N = tl.load(J + 2).to(tl.int32)
    ps = tl.load(J + 3).to(tl.int32)
    ns = tl.load(J + 4).to(tl.int32)
    k = n0 + tl.arange(0, COLS)
    if FOLD:
        grouped = P > GROUP
        step = tl.where(grouped, GROUP, 1) * ps
        s = _slot_sum(slots, 0, step, tl.where(grouped, tl.cdiv(P, GROUP), P), k, N, ns, RB, COLS)
        v_ptr = tl.load(J + 5).to(tl.pointer_type(tl.float32))
        across = tl.load(J + 6)
        fin = _finite(norm_ptr, meta_ptr, tl.load(J + 7), 5, CHECK)
        old = tl.load(v_ptr + k, mask=k < N, other=0.0)
        tl.store(v_ptr + k, old * beta2 + (1.0 - beta2) * (s / across), mask=k < tl.where(fin, N, 0))
    else:
        p0 = tl.load(prog_ptr + pid * 3 + 2)
        s = _slot_sum(slots, p0 * ps, ps, tl.minimum(P - p0, GROUP), k, N, ns, RB, COLS)
        # the group's first slot row, read above by this program only (each value after its own load)
        tl.store(slots + p0 * ps + k * ns, s, mask=k < N)


@triton.jit
def _slot_sum(slots, first, step, count, k, N, ns, RB: tl.constexpr, COLS: tl.constexpr):
    """``sum_i slots[first + i step + k ns]`` over ``i < count`` (entries ``k < N``), ``RB`` slot rows a
    load."""
    r = tl.arange(0, RB)
    acc = tl.zeros([RB, COLS], dtype=tl.float32)
    for i in range(0, count, RB):
        m = ((i + r) < count)[:, None] & (k < N)[None, :]
        acc += tl.load(slots + (first + (i + r) * step)[:, None] + (k * ns)[None, :], mask=m, other=0.0)
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
    scal_ptr,  # float32 [3]: as matrix_step_kernel's
    eps,
    beta1,
    beta2,
    PDTYPE: tl.constexpr,
    SDTYPE: tl.constexpr,
    TILE: tl.constexpr,
    CHECK: tl.constexpr = True,  # as matrix_step_kernel's: False adds the tile's sum g^2 into the norm slot
):
    """Plain AdamW (the torch path's ``_exact_step``, or its identity matrix step) on ``TILE`` values of one
    tensor: an exact tensor (moments in the parameter's dtype) or a matrix at rank 0 / 32 bits (fp32)."""
    pid = tl.program_id(0)
    decay = tl.load(scal_ptr)
    step_size = tl.load(scal_ptr + 1)
    inv_bc2s = tl.load(scal_ptr + 2)
    t = tl.load(prog_ptr + pid * 2)
    start = tl.load(prog_ptr + pid * 2 + 1).to(tl.int64)
    numel = tl.load(meta_ptr + t * 2)
    fin = _finite(norm_ptr, meta_ptr, t, 2, CHECK)
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
    if CHECK:
        tl.atomic_add(skip_ptr, tl.where(fin, 0, 1) * tl.where(start == 0, 1, 0), sem="relaxed")
    else:
        tl.atomic_add(norm_ptr + tl.load(meta_ptr + t * 2 + 1), tl.sum(g * g, axis=0), sem="relaxed")


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
