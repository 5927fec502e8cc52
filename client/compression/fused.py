"""The fused multi-tensor step of :class:`~client.compression.optimizer.MangoAdamW` (host side).

The per-tensor torch path runs tens of small kernels per tensor, so on a GPU a 124M-parameter model's step is
bound by launches, not by bytes (BENCHMARKS.md, the ``torch-path`` rows of ``mango bench gpu``). This module
plans the step once and then runs every eligible tensor in one Triton launch
(:mod:`~client.compression.kernels.triton_step`), plus one for the small exact tensors (biases, norms):

* **matrix tensors at rank 0**, 2, 3, 4, 8 or 16 bits, any ``gamma``: the matrix kernel reads the gradient
  and writes the parameter in one pass; full ``v`` (quantized ``sqrt(v)``, bf16 or fp32), or the factored
  (Adafactor) second moment, whose mean row statistic a small kernel reads before the pass and whose row
  and column sums of ``c^2`` (added with atomics in the pass, or stored program by program and added up
  after it: :data:`FACTOR_SUMS`) it folds in after it;
* **projected matrix tensors** (rank ``r > 0``), every width and ``gamma``: three launches
  (:mod:`~client.compression.kernels.triton_proj`): ``X = P^T G`` on the tensor cores, the same matrix kernel
  on the ``r x n`` coefficients (writing ``U = m / denom`` over ``X``), and the back-projection ``P U``
  fused with the parameter update, each specialized by orientation (the canonical view may be the
  parameter's transpose). A basis refresh (every ``refresh_every`` steps) is batched per shape on the host
  (:mod:`~client.compression.refresh`) and the kernel of that step reads the rotated states in fp32;
* **exact tensors**: plain AdamW on their moments (the parameter's dtype);
* **matrix tensors at rank 0 / 32 bits** (the identity setting, "no compression"): plain AdamW on their fp32
  full moments, in the exact kernel's launch (their gradients count as matrix energy in the statistics).

What stays on the torch path, tensor by tensor, in the same step: ``ef_scope="full"``, ``quant_mode="aciq"``,
a factored second moment at 16 / 32 bits or over columns that are not a multiple of the block, a first step
that creates the state (or the shift reference ``h``, or flushes a leftover error buffer), and
``strict=True``. (A pending refresh after a rank increase is a due refresh of the batched refresh.)

No host sync: a pre-pass kernel adds up each gradient's squared norm (for the non-finite check and the
statistics) on the device, the step kernels skip a tensor whose norm is NaN/inf (counting it on the device),
and the stochastic-rounding seed is a device scalar from the optimizer's generator. The rank-0 launches with a
full ``v`` need no pre-pass: each program checks its own tile and adds its ``sum g^2`` to the norm
(:data:`SKIP_GRAIN`). (``torch._foreach_norm``
did the pre-pass first: its host time per tensor was a third of GPT-2 small's step, BENCHMARKS.md.)
The planned tables (tensor -> pointers, program -> blocks) are cached and rebuilt only when the state layout
changes (:attr:`Plan.key`); one launch per parameter group and step count, like torch's fused AdamW. What
changes from step to step lives in device buffers of the plan: the step scalars (``1 - lr wd``, ``lr / bc1``,
``1 / sqrt(bc2)``, written by :func:`prepare`), the rounding key, the norms, and the gradient addresses
(refilled in place when they move). So the launches (:func:`launch`) are the same every step, and
:mod:`~client.compression.step_graph` replays a steady step from a CUDA graph: one launch of host work.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from client.compression import kernels
from client.compression.codes import default_block
from client.compression.quant import DenseState, QuantizedTensor
from client.compression.transfer import upload, upload_into

__all__ = [
    "FUSED_BITS",
    "MATRIX_TILE",
    "Plan",
    "build_plan",
    "fused_available",
    "grads_fit",
    "launch",
    "matrix_loads",
    "prepare",
    "run",
    "tile_programs",
    "tiles_test_themselves",
]

#: Replay a steady step from a CUDA graph of the plan (:mod:`~client.compression.step_graph`; a job turns it
#: off with ``opt.graph_step = False``): the bench knob of ``mango bench gpu --parts variants``' A/B.
STEP_GRAPH = True

#: Widths the fused matrix kernel handles (rank 0 at 32 bits is the identity: the exact launch).
FUSED_BITS = (2, 3, 4, 8, 16, 32)
#: Tiling unit of the matrix kernel where no quantization block sets one (16 and 32 bits).
DENSE_BLOCK = 256
#: Column tile and row step of the projection ``P^T G``, rows / columns of the back-projection's ``P U``
#: tiles. 32-row steps and 64 x 128 back-projection tiles won the H200 variants (BENCHMARKS.md, session 5)
#: over 64 / 64 x 64 at ranks 4-64; 128 x 128 tiles and 128-column projections lost.
PROJ_BN = 64
PROJ_BK = 32
BACK_BM = 64
BACK_BN = 128
#: Warps per projection / back-projection program.
PROJ_WARPS = 4
#: Software-pipeline stages of the projection's row loop (``num_stages``; None: Triton's default).
PROJ_STAGES: int | None = None
#: From this padded rank up (the launch's ``R``: 16, 32 or 64) the projection adds each projected tensor's
#: squared gradient norm as it reads the gradient, so the step reads it once; below it the norm pre-pass reads
#: the gradient first. The projection cannot skip a non-finite tensor then (its norm is not whole yet); the
#: matrix step and the back-projection still do, and its samples are zeroed after. 0: at every rank (session
#: 42, with the second load below R = 64: r4/b8/g0 0.65x -> 0.58x fused AdamW on an H100; session 41's squared
#: tile had doubled the step there). 2^30: never. ``mango bench gpu --parts variants`` has the rows.
PROJ_NORMS_MIN_RANK = 0
#: Below this padded rank a projection that adds the norms loads each gradient tile a second time for the
#: squares (``project_kernel``'s ``NORMS = 2``); from it up it squares the tile the product reads (``1``).
#: Statically (Triton 3.6 for sm_90, ``results/cpu-s42/proj_layouts.py``) the squared tile at ``R < 64``
#: turns the product's shared tile from a swizzled layout into an unswizzled one; a second load leaves it be.
PROJ_NORMS_RELOAD_BELOW = 64
#: Tell the projection kernels (``ALIGN``) when every gradient, parameter and coefficient address of a launch
#: is 16-byte aligned and every ``m`` and ``n`` a multiple of 4 (checked on the host: the plan's addresses
#: once, the gradients' whenever they move), so Triton turns their 4-byte accesses into 16-byte ones; a
#: launch that fails the check runs as before. False: never (the A/B of ``mango bench gpu``'s variants).
#: On an H100 (session 42) it shortened both kernels below R = 64 and lengthened both at R = 64, where it
#: saved energy instead (BENCHMARKS.md); one setting for all ranks keeps every energy goal.
PROJ_ALIGN = True
#: The same promise to the matrix kernel (``matrix_step_kernel``'s ``ALIGN``): every address of a launch's
#: table (parameters, state codes, scales, coefficients) and, at rank 0, this step's gradients 16-byte
#: aligned. Statically it turns the kernel's 4-byte accesses into 16-byte ones and removes 5-32 % of its
#: instructions a value (``results/cpu-s42/matrix_align.py``). False: never.
MATRIX_ALIGN = True
#: 4-bit codes: the matrix kernel loads each code byte once, contiguously, and splits its two codes in
#: registers (``matrix_step_kernel``'s ``PAIRS``), instead of loading each value's byte (every byte twice,
#: one byte a load). Statically 12-14 % fewer instructions a value at 4 bits (``results/cpu-s42/
#: matrix_align.py`` with ``PAIRS``); on an H100 it took r0/b4/g1 under fused AdamW's energy (BENCHMARKS.md,
#: session 43). False: the per-value loads (the A/B of ``mango bench gpu``'s variants).
FOUR_BIT_PAIRS = True
#: Values per matrix-kernel program (``ROWS = MATRIX_TILE / block``) and warps per program. One 8-bit block
#: per one-warp program won the H200 sweep (``mango bench gpu --parts tune``; BENCHMARKS.md): the block
#: reductions stay inside a warp (no shared memory, no barrier) and a thread holds 8 values; 4096 values
#: over 4 warps ran four times slower.
MATRIX_TILE = 256
#: Values per matrix-kernel program at a code width where it is not :data:`MATRIX_TILE`, with the register
#: cap that tile runs at (0: none; :data:`MAX_REGS` still overrides it), e.g. ``{8: (512, 0)}``: two 8-bit
#: blocks a one-warp program, uncapped. A larger tile keeps more loads in flight a warp at fewer warps an SM;
#: at the caps of 256 it spills. Widths not named run at :data:`MATRIX_TILE`. 8 bits take 512 uncapped:
#: faster at 8 bits in two H100 calls, slower at 2-4 bits (``mango bench gpu --parts variants``, the
#: ``MATRIX_TILE`` and ``MATRIX_TILE_BY_BITS`` rows; BENCHMARKS.md, sessions 39-40); not yet timed on an
#: H200. The tile changes no value.
MATRIX_TILE_BY_BITS: dict[int, tuple[int, int]] = {8: (512, 0)}
#: Values per exact-kernel program.
EXACT_TILE = 1024
#: Values per program of the gradient-norm pre-pass (one float atomic each: large tiles keep the
#: same-address atomics of a big tensor few).
NORM_TILE = 8192
#: Register cap per thread of the matrix kernel by width (``maxnreg``). The compiler takes 96 at 8 bits,
#: which caps the one-warp programs at 20 per SM; 72 won the H200 sweep at 8 bits with the loads where
#: used (``mango bench gpu --parts tune``; with the early loads, :data:`EARLY_LOADS` sets the cap); at 4 bits
#: no cap was best; at 2 and 3 bits 72 won over the compiler's 96 (BENCHMARKS.md, sessions 4-5), with the
#: factored ``v`` of then; the full ``v`` (their default since session 33) runs at the same cap, untuned
#: (``mango bench gpu --parts variants --optimizers r0/b3,r0/b2`` has the rows).
MAX_REGS_BY_BITS: dict[int, int] = {8: 72, 3: 72, 2: 72}
#: Override of :data:`MAX_REGS_BY_BITS` for every width: None keeps it, 0 means no cap, > 0 a cap.
MAX_REGS: int | None = None
#: Warps per matrix / exact program.
NUM_WARPS = 1
EXACT_WARPS = 4
#: Precision of the projected launches' products (``P^T G`` and ``P U``) when the channel holds 2-8 bit
#: codes or bf16: one tf32 pass (10-bit mantissa; errors near 2^-11 of the summed terms, below the
#: channel's own rounding: 2^-8 of a block's largest value and up for the codes, 2^-9 relative for bf16),
#: against three passes for fp32 accuracy (:data:`~client.compression.kernels.triton_proj.DOT_PRECISION`,
#: kept at 32 bits, where the channel rounds nothing). Rank 64 spends most of its step in these products.
QUANTIZED_DOT_PRECISION = "tf32"
#: Launch the programs of whole blocks apart, without per-value masks (False: one masked launch; for
#: ``mango bench gpu --parts variants``).
WHOLE_BLOCKS = True
#: Settings whose matrix kernel issues every load of a tile (gradient, the packed codes and scales of ``e``,
#: ``h``, ``m``, ``sqrt(v)``, the parameter) before its arithmetic, by (width, ``gamma > 0``), with the
#: register cap it then runs at (0: none; :data:`MAX_REGS` still overrides it). Elsewhere each load stays
#: where its value is first used. The compiler does not move a load above an earlier store (it cannot tell the
#: slots apart), so in use order a tile waits for memory once per slot; issued together the waits overlap,
#: for more live registers (the codes stay packed, a byte each at 8 bits, until decoded). It won the H200
#: variants at 8 bits, at these caps only, and lost at 2, 3, 4 and 16 bits (``mango bench gpu --parts
#: variants``; BENCHMARKS.md, "Issue 12, session 12"), 4 bits then with the factored ``v``; with the full
#: ``v`` (4 bits' default since session 30) it won at 4 bits and cap 128 on an H100, with and without the
#: shift, against caps 96 and none (BENCHMARKS.md, session 30). The arithmetic is the same; a GPU compiler
#: may contract it into FMAs differently, so results may differ in the last bit there. A width with its own
#: tile (:data:`MATRIX_TILE_BY_BITS`, 8 bits) keeps the order but runs at that tile's cap.
EARLY_LOADS: dict[tuple[int, bool], int] = {(8, False): 96, (8, True): 128, (4, False): 128, (4, True): 128}
#: Where stochastic rounding's random words come from, and how wide a dither is (``triton_step._dither``):
#: ``"philox"`` (Philox4x32-7, a 16-bit dither a value: the shipped step), ``"hash"`` (an integer hash a word,
#: ``triton_step._hash_words4``), and ``"philox8"`` / ``"hash8"``: 8-bit dithers at code widths (2-8 bits;
#: bf16 slots keep 16), a byte a value, so one Philox call (or four hashes) per four values instead of two,
#: at a rounding bias of at most ``2^-9`` of a quantization step (against ``2^-17``). Variants for ``mango
#: bench gpu --parts variants`` until the GPU has timed them.
DRAWS = "philox"
#: :data:`DRAWS` by the kernel's ``RNG`` constexpr (odd: the hash; 2 and up: 8-bit dithers).
DRAWS_CODES: dict[str, int] = {"philox": 0, "hash": 1, "philox8": 2, "hash8": 3}
#: How the matrix kernel finds NF4 codes (``triton_step._nf4_cell``): ``"cells"`` (the value's cell of a
#: uniform grid, where at most one level lies, and an 8-byte gather from a small table give the level below
#: the value; stochastic rounding's threshold above it comes from a second gather; round to nearest needs
#: only the cell's gather) or ``"compare"`` (a comparison with each of the 15 levels, or a select tree over
#: the midpoints). The same codes either way (tested, compiled too); the cells trade most of the
#: comparisons' instructions for two gathers from an L1-resident table (static counts: BENCHMARKS.md).
#: ``"cells"`` is the default since session 27, when two H100 runs timed it faster with stochastic rounding
#: and no slower to nearest (``mango bench gpu --parts variants``; BENCHMARKS.md); ``"compare"`` (the
#: default until then) stays as the variant it is timed against.
NF4_SEARCH = "cells"
#: How much of a tensor a non-finite gradient skips (``MangoAdamW(skip_nonfinite=True)``) in the rank-0
#: matrix launches with a full ``v``: ``"tile"`` (the default since session 28: no pre-pass; each program
#: tests the ``sum g^2`` of its own tile of ``MATRIX_TILE`` values, and a tile with a NaN / inf, or
#: ``sum g^2 x numel >= 2^120``, writes nothing while the rest of the tensor steps; ``skipped_updates`` then
#: counts tiles) or ``"tensor"`` (the torch path's rule: a norm pre-pass reads every gradient first, and a
#: tensor with any NaN / inf, or ``||g||^2 numel >= 2^120``, is not stepped). The same results wherever every
#: gradient is finite; either way no non-finite value reaches the parameters or the states. "tile" saves the
#: pre-pass's read of every gradient: on the H200 it took r0/b8/g0 from about AdamW's step time to under it
#: (``mango bench gpu --parts variants``; BENCHMARKS.md, session 28). Factored-``v`` and projected launches
#: keep the pre-pass (their row / column sums and ``||G||^2`` span the whole tensor). ``"tensor"`` stays as
#: the variant it is timed against.
SKIP_GRAIN = "tile"
#: :data:`NF4_SEARCH` by the kernel's ``SEARCH`` constexpr.
NF4_SEARCH_CODES: dict[str, int] = {"compare": 0, "cells": 1}
#: Tiles of ``MATRIX_TILE`` values per program with a factored second moment, by width: a program walks a
#: column strip of ``iters x MATRIX_TILE / block`` rows and adds its column sums of ``c^2`` once, so the
#: same-address float atomics fall by this factor; 1 is one tile a program with no loop (an atomic per tile).
#: With one tile the atomics were most of rank 0's step at 2-3 bits on the H200; at 4 bits the loop's
#: registers cost more than the atomics save, so 4 bits keeps one tile (BENCHMARKS.md, "Issue 12, session 7").
FACTOR_ITERS_BY_BITS: dict[int, int] = {2: 8, 3: 8}
#: Override of :data:`FACTOR_ITERS_BY_BITS` for every width (None keeps it).
FACTOR_ITERS: int | None = None
#: Where a factored program puts its row and column sums of ``c^2``: ``"atomics"`` (the shipped step: float
#: atomics into one row and one column vector a tensor, hit at the same addresses by every program of a row
#: or a column strip, then the fold kernel) or ``"partials"`` (no atomics: each program stores its sums in
#: its own slots of a scratch allocated with the plan, and two small launches after the step add them up,
#: :data:`PARTIALS_GROUP` slots at a time and then over the groups, and fold them in; the same sums in another
#: order, a fixed one, where the atomics' order varies from run to run on a GPU). The scratch holds a float
#: per block (the row sums, one per column strip) and a float per column per program (the column sums):
#: ``4 / block + 4 / (ROWS x iters)`` bytes a value of a factored tensor, ``ROWS = MATRIX_TILE / block`` and
#: ``iters`` the tiles a program walks (:func:`factor_iters`, which divides the column slots). A variant for
#: ``mango bench gpu --parts variants``: on an H100 it was faster at 4 bits for a scratch about as large as
#: that setting's state, so the atomics stay the default (BENCHMARKS.md, issue 12, session 23).
FACTOR_SUMS = "atomics"
#: Slots of one sum that a first-level program of ``FACTOR_SUMS = "partials"`` adds up (in place, into the
#: group's first slot); sums of at most this many slots skip that launch and fold directly.
PARTIALS_GROUP = 64
#: Entries (rows or columns of a tensor) per program of the partial-sum launches.
PARTIALS_COLS = 256


def matrix_loads(bits: int, shift: bool, early: bool | None = None) -> tuple[bool, int]:
    """Whether the matrix kernel at ``bits`` (``shift``: ``gamma > 0``) issues its loads early, and its
    register cap (0: none): :data:`EARLY_LOADS`'s choice and cap, else :data:`MAX_REGS_BY_BITS`'s cap;
    :data:`MAX_REGS` overrides the cap. ``early`` forces the order (the cap then follows it)."""
    cap = EARLY_LOADS.get((bits, shift))
    if early is None:
        early = cap is not None
    regs = cap if early and cap is not None else MAX_REGS_BY_BITS.get(bits, 0)
    if bits in MATRIX_TILE_BY_BITS:  # a width's own tile runs at its own cap
        regs = MATRIX_TILE_BY_BITS[bits][1]
    return early, MAX_REGS if MAX_REGS is not None else regs


def matrix_tile(bits: int) -> int:
    """Values per matrix-kernel program at ``bits``: :data:`MATRIX_TILE_BY_BITS`'s tile, else
    :data:`MATRIX_TILE`."""
    return MATRIX_TILE_BY_BITS[bits][0] if bits in MATRIX_TILE_BY_BITS else MATRIX_TILE


def _draws_code(draws: str) -> int:
    """:data:`DRAWS` as the kernel's ``RNG`` constexpr; ``ValueError`` names the choices."""
    if draws not in DRAWS_CODES:
        raise ValueError(f"fused.DRAWS={draws!r}; choose one of {', '.join(map(repr, DRAWS_CODES))}")
    return DRAWS_CODES[draws]


def _nf4_search_code(search: str) -> int:
    """:data:`NF4_SEARCH` as the kernel's ``SEARCH`` constexpr; ``ValueError`` names the choices."""
    if search not in NF4_SEARCH_CODES:
        raise ValueError(
            f"fused.NF4_SEARCH={search!r}; choose one of {', '.join(map(repr, NF4_SEARCH_CODES))}"
        )
    return NF4_SEARCH_CODES[search]


def _tile_grain(grain: str) -> bool:
    """:data:`SKIP_GRAIN` as a flag (True: per tile); ``ValueError`` names the choices."""
    if grain not in ("tensor", "tile"):
        raise ValueError(f"fused.SKIP_GRAIN={grain!r}; choose 'tensor' or 'tile'")
    return grain == "tile"


def _factor_sums_partials(sums: str) -> bool:
    """:data:`FACTOR_SUMS` as a flag (True: the partial slots); ``ValueError`` names the choices."""
    if sums not in ("atomics", "partials"):
        raise ValueError(f"fused.FACTOR_SUMS={sums!r}; choose 'atomics' or 'partials'")
    return sums == "partials"


def rows_per_program(block: int, tiles: int, bits: int) -> int:
    """Tile rows (blocks) a matrix program owns at ``bits``: a tile of :func:`matrix_tile` values, ``tiles``
    of them for a factored program that walks a strip (:func:`factor_iters`)."""
    return max(matrix_tile(bits) // block, 1) * tiles


def factor_iters(bits: int) -> int:
    """Tiles a factored program walks at ``bits`` (:data:`FACTOR_ITERS_BY_BITS`, :data:`FACTOR_ITERS`)."""
    return FACTOR_ITERS if FACTOR_ITERS is not None else FACTOR_ITERS_BY_BITS.get(bits, 1)


#: Rows / columns per loop iteration of the factored fold kernel.
FACTOR_CHUNK = 1024
_DTYPES = (torch.float32, torch.bfloat16)


def fused_available(device: torch.device) -> bool:
    """Whether the fused kernels can run on ``device`` (CUDA + triton, or CPU with ``TRITON_INTERPRET=1``)."""
    if not kernels.available():
        return False
    return device.type == "cuda" or (device.type == "cpu" and kernels._interpreting())


@dataclass
class _Group:
    """Tensors of one launch (kind, dtype, parameter group, step count) and their device tables."""

    matrix: bool
    params: list[torch.Tensor]
    index: list[int]  # positions in the step's item list
    states: list[dict[str, Any]]
    hyper: dict[str, Any]  # the parameter group (lr, betas, eps, weight_decay)
    prog: torch.Tensor
    addr: torch.Tensor
    meta: torch.Tensor
    n_prog: int
    pdtype: torch.dtype
    sample: torch.Tensor
    sdtype: torch.dtype | None = None  # moments' dtype of an exact launch
    part: torch.Tensor | None = None
    mean: torch.Tensor | None = None
    scratch: torch.Tensor | None = None
    grad_addr: list[int] = field(default_factory=list)
    grad_dev: torch.Tensor | None = None
    grad_aligned: bool = False  # every gradient address of ``grad_addr`` is 16-byte aligned
    aligned: bool = False  # every address of the host's ``addr`` table is 16-byte aligned
    norm_prog: torch.Tensor | None = None  # int32 [n, 2] tiles of the norm pre-pass
    norm_meta: torch.Tensor | None = None  # int64 [T, 2] (gradient numel, item) where meta's differ
    n_full: int = 0  # programs of whole blocks, first in ``prog`` (the rest: partial last blocks)
    proj: _Proj | None = None  # the projection tables of a projected launch
    xdims: list[tuple[int, int]] | None = None  # (r, n) of each projected tensor's coefficients
    sums: _Sums | None = None  # the partial-sum launches of a factored launch (FACTOR_SUMS = "partials")


@dataclass
class _Sums:
    """Tables of the partial-sum launches (:func:`~.kernels.triton_step.partial_sums_kernel`): a job is one
    tensor's row or column sums, stored as ``slot rows x entries`` floats (a slot row per column strip for
    the row sums, laid out a slot a block, per program of a strip for the column sums)."""

    jobs: torch.Tensor  # int64 [J, 8]: slots, slot rows, entries, their strides, statistic, across, tensor
    groups: torch.Tensor  # int32 [n, 3]: (job, first entry, first slot row) of the first-level programs
    folds: torch.Tensor  # int32 [n, 3]: (job, first entry, 0) of the folding programs
    group: int  # PARTIALS_GROUP the tables were built for
    cols: int  # PARTIALS_COLS the tables were built for


@dataclass
class _Proj:
    """Tables of the projection and back-projection launches (:mod:`.kernels.triton_proj`)."""

    rank_p2: int
    addr: torch.Tensor  # int64 [T, 2]: P, X / U scratch
    meta: torch.Tensor  # int64 [T, 5]
    scale: torch.Tensor  # float32 [T]
    prog_a: list[tuple[bool, torch.Tensor, torch.Tensor]]  # (transposed, int32 [n, 3], float32 [n] samples)
    samples: torch.Tensor  # float32: every ``prog_a`` launch's samples (theirs are views of it), in order
    sample_items: torch.Tensor  # int64, as ``samples``: each projection program's position in the norm vector
    prog_c: list[tuple[bool, torch.Tensor]]  # (transposed, int32 [n, 3]): one launch per orientation
    x: torch.Tensor  # float32 scratch: every tensor's r x n coefficients
    items: torch.Tensor  # int64 [T]: positions in the norm vector (for the spectral tail)
    aligned: bool  # every parameter and coefficient address 16-byte aligned, every m and n a multiple of 4
    numels: torch.Tensor  # float32 [T]: each tensor's numel (the huge-norm mark after the projection)
    xsq: torch.Tensor  # float32 [T] out: each tensor's ||P^T G||^2 of the step (zeroed by the step)


@dataclass
class Plan:
    """What one step does on the fused path; valid while :attr:`key` matches."""

    key: tuple[Any, ...]
    groups: list[_Group]
    matrix_idx: list[int]  # positions of the fused matrix-kind tensors, either kernel (gradient energy)
    torch_items: list[int]  # positions that stay on the torch path
    bits: int
    mode: int
    ef: bool
    factored: bool
    block: int
    gamma: float = 0.0
    #: tiles a factored program walks (:func:`factor_iters`; 1 with no loop): the program tables are laid out
    #: for it, so the launches read it from here rather than from the module knobs
    strip_tiles: int = 1
    #: blocks a matrix program's tile holds (:func:`matrix_tile` over ``block``), read by the launches for
    #: the same reason: the tables were laid out with it
    tile_rows: int = 1
    #: rows a factored program owns when its sums of ``c^2`` go to its own slots (:data:`FACTOR_SUMS`
    #: ``"partials"``; the kernel's ``PARTIALS``), 0 with the atomics
    partials: int = 0
    #: float32 ``[n_items]``: the gradient's numel for a fused matrix tensor, else 0 (see :func:`run`)
    numels: torch.Tensor | None = None
    #: the refresh's CUDA graph (:class:`~client.compression.refresh.RefreshGraph`) once captured; False
    #: after a failed capture (the plan then refreshes eagerly)
    refresh_graph: Any = None
    refreshes: int = 0  # refresh steps under this plan (the graph is captured at the second)
    #: float32 ``[n_items]``: the step's squared gradient norms, zeroed and refilled by every step (the
    #: latest step's statistics read them); a buffer of the plan, so that a CUDA graph of the step holds it
    norms: torch.Tensor | None = None
    #: float32 ``[groups, 4]``: each launch's ``1 - lr wd``, ``lr / bc1``, ``1 / sqrt(bc2)`` of the step
    #: (:func:`prepare` writes them, the kernels read them: a replayed graph gets each step's values)
    scalars: torch.Tensor | None = None
    seed: torch.Tensor | None = None  # int64 [1]: the step's stochastic-rounding key (:func:`prepare`)
    #: the steady step's CUDA graph (:class:`~client.compression.step_graph.StepGraph`) once captured; False
    #: when it will not be (a failed capture, or too many re-captures)
    step_graph: Any = None
    steady: int = 0  # eager steady steps since the plan's graph key last changed (captured at the second)
    captures: int = 0  # step graphs captured under this plan

    @property
    def matrix(self) -> list[_Group]:
        return [g for g in self.groups if g.matrix]

    @property
    def exact(self) -> list[_Group]:
        return [g for g in self.groups if not g.matrix]

    @property
    def projected(self) -> list[_Group]:
        return [g for g in self.groups if g.proj is not None]


def _slot_ok(q: Any, bits: int, mode: str, block: int, shape: tuple[int, ...], device: torch.device) -> bool:
    """Whether a state slot is what the matrix kernel reads at ``bits`` (codes, bf16 or fp32, in place)."""
    if bits == 32:
        return (
            isinstance(q, torch.Tensor)
            and q.dtype == torch.float32
            and tuple(q.shape) == shape
            and q.is_contiguous()
            and q.device == device
        )
    if bits == 16:
        return (
            isinstance(q, DenseState)
            and q.bits == 16
            and q.data.dtype == torch.bfloat16
            and tuple(q.data.shape) == shape
            and q.data.is_contiguous()
            and q.data.device == device
        )
    return (
        isinstance(q, QuantizedTensor)
        and q.bits == bits
        and q.mode == mode
        and q.block == block
        and tuple(q.shape) == shape
        and q.data.device == device
    )


def _fp32_vec(x: Any, n: int, device: torch.device) -> bool:
    return (
        isinstance(x, torch.Tensor)
        and x.dtype == torch.float32
        and x.shape == (n,)
        and x.is_contiguous()
        and x.device == device
    )


def _eligible_matrix(p: torch.Tensor, st: dict[str, Any], opt: Any, factored: bool) -> bool:
    """A matrix tensor the matrix kernel can step: rank 0 below 32 bits, or projected at any width (basis in
    place, subspace error feedback, a reference ``h`` exactly when ``gamma > 0``)."""
    s = opt.setting
    r = st.get("rank", -1)
    if r < 0 or "m" not in st or s.bits not in FUSED_BITS or (s.gamma > 0) != ("h" in st):
        return False
    if r == 0 and s.bits == 32:
        return False  # the identity setting: the exact launch
    if p.dtype not in _DTYPES or not p.is_contiguous() or p.numel() >= 2**31 - 2**16:  # int32 offsets
        return False
    bits = s.bits
    block = default_block(bits) if bits <= 8 else DENSE_BLOCK
    mode = opt._mode(bits)
    if bits <= 8 and (mode not in ("uniform", "nf4") or (mode == "nf4" and bits != 4)):
        return False
    m_rows, n_cols = st["shape"]
    if r > 0:
        P = st.get("P")
        if (
            opt.ef_scope != "subspace"
            or not isinstance(P, torch.Tensor)
            or P.dtype != torch.float32
            or tuple(P.shape) != (m_rows, r)
            or not P.is_contiguous()
            or P.device != p.device
        ):
            return False
        shape: tuple[int, ...] = (r, n_cols)
        rows, cols = r, n_cols
    else:
        shape = tuple(p.shape)
        rows = p.shape[0]
        cols = p.numel() // rows
    dev = p.device
    if not _slot_ok(st["m"], bits, mode, block, shape, dev):
        return False
    if opt.error_feedback != ("e" in st) or (
        "e" in st and not _slot_ok(st["e"], bits, mode, block, shape, dev)
    ):
        return False
    if "h" in st and not _slot_ok(st["h"], bits, mode, block, shape, dev):
        return False
    if factored:
        if bits > 8 or cols % block != 0 or "v_row" not in st:
            return False
        if r > 0:
            return _fp32_vec(st["v_row"], r, dev) and _fp32_vec(st["v_col"], n_cols, dev)
        return True
    return "v" in st and _slot_ok(st["v"], bits, "uniform", block, shape, dev)


def _moments(st: dict[str, Any]) -> tuple[Any, Any]:
    """The AdamW moments an exact launch updates: an exact tensor's, or an identity matrix's ``m`` / ``v``."""
    return (
        (st.get("exp_avg"), st.get("exp_avg_sq")) if st.get("kind") == "exact" else (st.get("m"), st.get("v"))
    )


def _eligible_exact(p: torch.Tensor, st: dict[str, Any], opt: Any) -> bool:
    """An exact tensor, or a matrix at the identity setting (rank 0, 32 bits: full fp32 ``m`` and ``v`` in
    the parameter's memory order, no error buffer left to flush, no factored ``v``)."""
    kind = st.get("kind")
    if kind == "matrix":
        s = opt.setting
        if st.get("rank", -1) != 0 or s.bits != 32 or "e" in st or "h" in st or "v_row" in st:
            return False
    elif kind != "exact":
        return False
    m, v = _moments(st)
    return (
        p.dtype in _DTYPES
        and p.is_contiguous()
        and all(
            isinstance(x, torch.Tensor)
            and x.shape == p.shape
            and x.is_contiguous()
            and x.dtype in _DTYPES
            and x.dtype == m.dtype
            and x.device == p.device
            for x in (m, v)
        )
    )


_HOST = torch.device("cpu")


def _i64(values: list[int], device: torch.device) -> torch.Tensor:
    return upload(torch.tensor(values, dtype=torch.int64), device)


Item = tuple[int, torch.Tensor, dict[str, Any]]  # (position in the step's items, param, state)


def _slot_ptrs(q: Any) -> list[int]:
    """(codes or values, scales) addresses of a slot (0 where there is none)."""
    if q is None:
        return [0, 0]
    if isinstance(q, QuantizedTensor):
        return [q.data.data_ptr(), q.scale.data_ptr()]
    if isinstance(q, DenseState):
        return [q.data.data_ptr(), 0]
    return [q.data_ptr(), 0]


def _strip_programs(
    rows: list[int], strides: list[int], per: int, device: torch.device = _HOST
) -> tuple[torch.Tensor, ...]:
    """``(tensor, first, count)`` of every program, all tensors at once (int64, on ``device``): tensor ``t``
    has ``strides[t]`` column strips of ``rows[t]`` block rows, a program owns ``per`` consecutive rows of
    one strip, ``first = row * stride + strip`` and ``count`` its rows; strip-major, as the kernel's tables
    were built tensor by tensor (a stride of 1 is a flat run of ``rows`` blocks).

    Built where the launches read them: a rank-0 table has a program every few blocks of every parameter,
    hundreds of thousands of rows for a GPT-2-sized model, which the host would build and copy in each plan
    rebuild (every setting change); on a GPU it is a dozen element-wise launches and no host pass. Only the
    per-tensor counts (``len(rows)`` values) cross over, in one copy.
    """
    n_a = [-(-r // per) for r in rows]  # programs a strip
    counts = [a * s for a, s in zip(n_a, strides, strict=True)]
    total = sum(counts)
    n_prog, starts, each, na_t, stride_t = upload(
        torch.tensor(
            [counts, [c - n for c, n in zip(itertools.accumulate(counts), counts)], rows, n_a, strides],
            dtype=torch.int64,
        ),
        device,
    )

    def spread(x: torch.Tensor) -> torch.Tensor:  # each tensor's value, once for each of its programs
        return torch.repeat_interleave(x, n_prog, output_size=total)

    t = spread(torch.arange(len(rows), dtype=torch.int64, device=device))
    k = torch.arange(total, dtype=torch.int64, device=device) - spread(starts)
    each = spread(each)
    if all(s == 1 for s in strides):  # no strips: a flat run of blocks
        a0 = k * per
        return t, a0, (each - a0).clamp_(max=per)
    na_t = spread(na_t)
    strip = torch.div(k, na_t, rounding_mode="floor")
    a0 = (k - strip * na_t) * per
    first = a0 * spread(stride_t) + strip
    return t, first, (each - a0).clamp_(max=per)


def _matrix_programs(
    rows: list[int], strides: list[int], numels: list[int], block: int, per: int, device: torch.device = _HOST
) -> tuple[torch.Tensor, int]:
    """The matrix launch's int32 program table (:func:`_strip_programs`, on ``device``) with the programs
    of whole blocks first (a launch without per-value masks), and how many those are.

    The count comes from the shapes, not the table (no device sync): a flat run of ``rows`` blocks has one
    partial program, its last, where ``rows * block`` passes the tensor's end; a column strip's programs
    (stride > 1) end inside the tensor (their rows are whole rows of ``stride * block <= ncols`` values)."""
    t, first, count = _strip_programs(rows, strides, per, device)
    ends = _i64(numels, device)
    full = (first + count) * block <= ends[t]  # no value past the end
    order = torch.argsort((~full).to(torch.int8), stable=True)  # whole blocks first, each part in order
    partial = sum(s == 1 and r * block > n for r, s, n in zip(rows, strides, numels, strict=True))
    return torch.stack([t, first, count], dim=1)[order].to(torch.int32), t.shape[0] - partial


def _matrix_group(
    items: list[Item],
    hyper: dict[str, Any],
    factored: bool,
    block: int,
    proj: bool,
    opt: Any,
    tiles: int,
    bits: int,
    partials: bool = False,
) -> _Group:
    """Tables of one matrix launch: rank-0 tensors (the kernel reads the gradient and writes the parameter)
    or projected ones (it works on the ``r x n`` coefficients; :class:`_Proj` adds the two products);
    ``tiles``: tiles a factored program walks (:attr:`Plan.strip_tiles`); ``partials``: a factored program
    stores its sums of ``c^2`` in its own slots (:data:`FACTOR_SUMS`)."""
    device = items[0][1].device
    rows_per_prog = rows_per_program(block, tiles, bits)
    dims = []  # (rows, cols, transposed) of the values the matrix kernel walks
    for _, p, st in items:
        if proj:
            dims.append((st["rank"], st["shape"][1], 0))
        else:
            nrows = p.shape[0]
            ncols = p.numel() // nrows
            dims.append((nrows, ncols, int(nrows > ncols)))
    partials = partials and factored
    # slot rows of each tensor's (row sums, column sums): one per column strip / per program of a strip with
    # the partial slots, one sum (a vector for the atomics) without
    slots = [(c // block, -(-r // rows_per_prog)) if partials else (1, 1) for r, c, _ in dims]
    scratch_len = sum(sr * r + sc * c for (r, c, _), (sr, sc) in zip(dims, slots)) if factored else 0
    scratch = torch.zeros(max(scratch_len, 1), dtype=torch.float32, device=device)
    jobs: list[int] = []  # partial-sum jobs (_Sums)
    x_len = sum(r * c for r, c, _ in dims) if proj else 0
    x_all = torch.zeros(max(x_len, 1), dtype=torch.float32, device=device)
    addr: list[int] = []
    meta: list[int] = []
    strip_rows: list[int] = []  # block rows of each tensor's column strip (all its blocks when unfactored)
    strides: list[int] = []
    numels: list[int] = []
    pos = xpos = 0
    x_views: list[torch.Tensor] = []
    for (item, p, st), (nrows, ncols, transposed) in zip(items, dims, strict=True):
        numel = nrows * ncols
        row = [0, p.data_ptr(), *_slot_ptrs(st["m"])]
        row += [0, 0] if factored else _slot_ptrs(st["v"])
        row += _slot_ptrs(st.get("e"))
        if factored:
            # the canonical (m <= n) statistics, seen along the rows / columns the kernel walks
            v_nat_row, v_nat_col = (st["v_col"], st["v_row"]) if transposed else (st["v_row"], st["v_col"])
            sr, sc = slots[len(strides)]
            rs = scratch[pos : pos + sr * nrows]
            cs = scratch[pos + sr * nrows : pos + sr * nrows + sc * ncols]
            pos += sr * nrows + sc * ncols
            row += [v_nat_row.data_ptr(), v_nat_col.data_ptr(), rs.data_ptr(), cs.data_ptr()]
            if partials:  # the row sums a slot a block ([rows, strips]), the column sums [programs, cols]
                t = len(strides)
                jobs += [rs.data_ptr(), sr, nrows, 1, sr, v_nat_row.data_ptr(), ncols, t]
                jobs += [cs.data_ptr(), sc, ncols, ncols, 1, v_nat_col.data_ptr(), nrows, t]
            stride = ncols // block  # a program owns a column strip of rows_per_prog rows
            strip_rows.append(nrows)
        else:
            row += [0, 0, 0, 0]
            stride = 1
            strip_rows.append(max(-(-numel // block), 1))
        strides.append(stride)
        numels.append(numel)
        row += _slot_ptrs(st.get("h"))
        if proj:
            xv = x_all[xpos : xpos + numel]
            x_views.append(xv)
            xpos += numel
            row += [xv.data_ptr(), 0, 0, 0, 0]  # 15-18: a refresh step's fp32 states (fresh_buffers)
        else:
            row += [0, 0, 0, 0, 0]
        addr += row
        meta += [numel, ncols, transposed, stride, item]
    prog, n_full = _matrix_programs(strip_rows, strides, numels, block, rows_per_prog, device)
    mean = torch.ones(len(items), dtype=torch.float32, device=device)
    extra: dict[str, Any] = {}
    if partials:
        extra["sums"] = _sum_tables(jobs, device)
    if proj:
        extra["proj"] = _proj_tables(items, x_views, x_all, opt)
        extra["xdims"] = [(r, c) for r, c, _ in dims]
        extra["norm_meta"] = _i64([v for item, p, _ in items for v in (p.numel(), item)], device)
    return _new_group(
        True, items, hyper, prog, addr, meta, mean=mean, scratch=scratch, n_full=n_full, **extra
    )


def _sum_tables(jobs: list[int], device: torch.device) -> _Sums:
    """The partial-sum launches' tables for ``jobs`` (flat rows of eight, :class:`_Sums`): every job's entries
    in chunks of :data:`PARTIALS_COLS`; a job of more than :data:`PARTIALS_GROUP` slot rows also gets a
    first-level program per chunk and group of slot rows."""
    job = torch.tensor(jobs, dtype=torch.int64).view(-1, 8)
    group, cols = PARTIALS_GROUP, PARTIALS_COLS
    chunks = torch.div(job[:, 2] + cols - 1, cols, rounding_mode="floor")
    n_groups = torch.div(job[:, 1] + group - 1, group, rounding_mode="floor") * (job[:, 1] > group)

    def table(per_job: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        """(job, first entry, first slot row) of ``per_job`` programs a job, chunk-major over ``groups``."""
        j = torch.repeat_interleave(torch.arange(job.shape[0]), per_job)
        k = torch.arange(j.numel()) - torch.repeat_interleave(torch.cumsum(per_job, 0) - per_job, per_job)
        g = groups.clamp(min=1)[j]
        return torch.stack([j, torch.div(k, g, rounding_mode="floor") * cols, k % g * group], dim=1)

    return _Sums(
        jobs=upload(job, device),
        groups=upload(table(chunks * n_groups, n_groups).to(torch.int32), device),
        folds=upload(table(chunks, torch.ones_like(chunks)).to(torch.int32), device),
        group=group,
        cols=cols,
    )


def tile_programs(ts: list[int], rows: list[int], cols: list[int], bm: int, bn: int) -> torch.Tensor:
    """int32 ``[n, 3]`` host table ``(t, i, j)`` of the ``bm x bn`` tiles of tensors ``ts`` (``rows[k] x
    cols[k]`` each), tensor after tensor, each tensor's tiles row-major (``i``, ``j`` their first row and
    column): the projected launches' programs, built for all tensors at once (a few ops, not a dozen a
    tensor: the plan is rebuilt at every setting change, on the host)."""
    n_rows = [-(-r // bm) for r in rows]
    n_cols = [-(-c // bn) for c in cols]
    counts = [a * b for a, b in zip(n_rows, n_cols, strict=True)]
    total = sum(counts)
    t, start, per_row, count = torch.tensor(
        [ts, [c - n for c, n in zip(itertools.accumulate(counts), counts)], n_cols, counts], dtype=torch.int64
    )

    def spread(x: torch.Tensor) -> torch.Tensor:  # each tensor's value, once for each of its tiles
        return torch.repeat_interleave(x, count, output_size=total)

    k = torch.arange(total, dtype=torch.int64) - spread(start)
    per_row = spread(per_row)
    i = torch.div(k, per_row, rounding_mode="floor")
    return torch.stack([spread(t), i * bm, (k - i * per_row) * bn], dim=1).to(torch.int32)


def _proj_tables(items: list[Item], x_views: list[torch.Tensor], x_all: torch.Tensor, opt: Any) -> _Proj:
    device = items[0][1].device
    addr: list[int] = []
    meta: list[int] = []
    scale: list[float] = []
    shapes: dict[bool, list[tuple[int, int, int]]] = {False: [], True: []}  # (t, m, n) by orientation
    r_max = 1
    for t, ((item, p, st), xv) in enumerate(zip(items, x_views)):
        m, n = st["shape"]
        r = st["rank"]
        r_max = max(r_max, r)
        trans = p.shape[0] > p.numel() // p.shape[0]  # the canonical view is the parameter's transpose
        addr += [st["P"].data_ptr(), xv.data_ptr()]
        meta += [m, n, r, item, p.data_ptr()]
        scale.append(opt.proj_scale if opt.proj_scale is not None else math.sqrt(m / r))
        shapes[trans].append((t, m, n))
    launches_a: list[tuple[bool, torch.Tensor]] = []
    prog_c: list[tuple[bool, torch.Tensor]] = []
    for trans, tmn in shapes.items():
        if tmn:
            ts, ms, ns = (list(x) for x in zip(*tmn, strict=True))
            a = tile_programs(ts, [1] * len(ts), ns, 1, PROJ_BN)  # (t, 0, j): a column block
            launches_a.append((trans, upload(a, device)))
            prog_c.append((trans, upload(tile_programs(ts, ms, ns, BACK_BM, BACK_BN), device)))
    item_pos = _i64([item for item, _, _ in items], device)
    counts = [a.shape[0] for _, a in launches_a]
    samples = torch.zeros(sum(counts), dtype=torch.float32, device=device)  # one buffer: one zeroing a step
    prog_a = [(trans, a, part) for (trans, a), part in zip(launches_a, samples.split(counts), strict=True)]
    return _Proj(
        rank_p2=max(16, 1 << (r_max - 1).bit_length()),
        addr=_i64(addr, device),
        meta=_i64(meta, device),
        scale=upload(torch.tensor(scale, dtype=torch.float32), device),
        prog_a=prog_a,
        samples=samples,
        sample_items=item_pos[torch.cat([a[:, 0] for _, a in launches_a]).long()],
        prog_c=prog_c,
        x=x_all,
        items=item_pos,
        numels=upload(torch.tensor([float(p.numel()) for _, p, _ in items], dtype=torch.float32), device),
        xsq=torch.zeros(len(items), dtype=torch.float32, device=device),
        aligned=all(a % 16 == 0 for a in addr[1::2] + meta[4::5])
        and all(d % 4 == 0 for i, d in enumerate(meta) if i % 5 in (0, 1)),
    )


def fresh_buffers(grp: _Group) -> tuple[list[list[torch.Tensor]], torch.Tensor]:
    """The fp32 ``(m, v, e, h)`` buffers of a refresh step (``r x n`` views per tensor, written by
    :func:`~client.compression.refresh.refresh`) and the launch's address table pointing at them.

    Allocated per refresh (every ``refresh_every`` steps) and released after it, so they hold memory only
    during that step; the kernel reads them in the launch's stream order.
    """
    assert grp.xdims is not None
    device = grp.params[0].device
    total = sum(r * c for r, c in grp.xdims)
    buf = torch.empty(4, max(total, 1), dtype=torch.float32, device=device)
    views: list[list[torch.Tensor]] = []
    ptrs: list[int] = []
    pos = 0
    for r, c in grp.xdims:
        fv = [buf[k, pos : pos + r * c].view(r, c) for k in range(4)]
        pos += r * c
        views.append(fv)
        ptrs += [f.data_ptr() for f in fv]
    addr = grp.addr.view(len(grp.xdims), -1).clone()
    addr[:, 15:19] = _i64(ptrs, device).view(-1, 4)
    return views, addr.view(-1)


def _exact_group(items: list[Item], hyper: dict[str, Any], sdtype: torch.dtype) -> _Group:
    addr: list[int] = []
    meta: list[int] = []
    for item, p, st in items:
        m, v = _moments(st)
        addr += [0, p.data_ptr(), m.data_ptr(), v.data_ptr()]
        meta += [p.numel(), item]
    prog = _tiles([p for _, p, _ in items], EXACT_TILE)
    return _new_group(False, items, hyper, prog, addr, meta, sdtype=sdtype)


def _tiles(params: list[torch.Tensor], tile: int) -> torch.Tensor:
    """int32 ``[n, 2]`` program table on the parameters' device: (tensor, first value) for ``tile``-value
    slices of each parameter."""
    n_tiles = [max(-(-p.numel() // tile), 1) for p in params]
    t, first, _ = _strip_programs(n_tiles, [1] * len(params), 1, params[0].device)
    return torch.stack([t, first * tile], dim=1).to(torch.int32)


def _new_group(
    matrix: bool,
    items: list[Item],
    hyper: dict[str, Any],
    prog: torch.Tensor,
    addr: list[int],
    meta: list[int],
    **extra: Any,
) -> _Group:
    """A launch group with its tables on the parameters' device (matrix groups get statistics partials)."""
    params = [p for _, p, _ in items]
    device = params[0].device
    n_prog = prog.shape[0]
    return _Group(
        matrix=matrix,
        params=params,
        index=[i for i, _, _ in items],
        states=[st for _, _, st in items],
        hyper=hyper,
        prog=upload(prog, device),
        addr=_i64(addr, device),
        meta=_i64(meta, device),
        n_prog=n_prog,
        pdtype=params[0].dtype,
        sample=torch.zeros(n_prog, dtype=torch.float32, device=device),
        part=torch.zeros(n_prog, 2, dtype=torch.float32, device=device) if matrix else None,
        norm_prog=_tiles(params, NORM_TILE),
        aligned=all(a % 16 == 0 for a in addr),
        **extra,
    )


def build_plan(opt: Any, items: list[tuple[int, torch.Tensor, dict[str, Any]]], key: tuple[Any, ...]) -> Plan:
    """Split the step's ``(index, param, group)`` items into fused launches and the torch remainder.

    A launch holds the tensors of one kernel (exact / rank-0 matrix / projected matrix), dtypes, parameter
    group and step count.
    """
    s = opt.setting
    factored = opt._factored()
    tiles = factor_iters(s.bits) if factored else 1
    partials = factored and _factor_sums_partials(FACTOR_SUMS)
    block = default_block(s.bits) if s.bits <= 8 else DENSE_BLOCK
    mode = opt._mode(s.bits)
    buckets: dict[tuple[str, torch.dtype, torch.dtype, int, int], list[Item]] = {}
    hypers: dict[int, dict[str, Any]] = {}
    rest: list[int] = []
    matrix_idx: list[int] = []
    for pos, (_, p, group) in enumerate(items):
        st = opt.state.get(p, {})
        if st.get("kind") == "matrix" and group.get("setting") not in (None, s):
            rest.append(pos)  # a group pinned to another setting than the launches': the torch path
            continue
        if st.get("kind") == "matrix" and _eligible_matrix(p, st, opt, factored):
            kind, sdtype = ("proj" if st["rank"] > 0 else "matrix"), p.dtype
        elif _eligible_exact(p, st, opt):
            kind, sdtype = "exact", _moments(st)[0].dtype
        else:
            rest.append(pos)
            continue
        if st["kind"] == "matrix":
            matrix_idx.append(pos)
        hypers[id(group)] = group
        buckets.setdefault((kind, p.dtype, sdtype, id(group), st["step"]), []).append((pos, p, st))
    groups = [
        _exact_group(v, hypers[gid], sdtype)
        if kind == "exact"
        else _matrix_group(v, hypers[gid], factored, block, kind == "proj", opt, tiles, s.bits, partials)
        for (kind, _, sdtype, gid, _), v in buckets.items()
    ]
    matrix_set = set(matrix_idx)
    device = items[0][1].device
    return Plan(
        key=key,
        groups=groups,
        matrix_idx=matrix_idx,
        torch_items=rest,
        bits=s.bits,
        mode=1 if mode == "nf4" and s.bits == 4 else 0,
        ef=bool(opt.error_feedback),
        factored=factored,
        block=block,
        gamma=float(s.gamma),
        strip_tiles=tiles,
        tile_rows=rows_per_program(block, 1, s.bits),
        partials=rows_per_program(block, tiles, s.bits) if partials else 0,
        numels=upload(
            torch.tensor(
                [float(p.numel()) if pos in matrix_set else 0.0 for pos, (_, p, _) in enumerate(items)],
                dtype=torch.float32,
            ),
            device,
        ),
        norms=torch.zeros(len(items), dtype=torch.float32, device=device),
        scalars=torch.zeros(len(groups), 4, dtype=torch.float32, device=device),
        seed=torch.zeros(1, dtype=torch.int64, device=device),
    )


def _grad_table(g: _Group, grads: list[torch.Tensor]) -> torch.Tensor | None:
    """Device table of this step's gradient addresses (refilled only when they moved); None when a
    gradient does not suit the kernels (another dtype or shape than its parameter, or not contiguous)."""
    ptrs = [grads[i].data_ptr() for i in g.index]
    if ptrs != g.grad_addr or g.grad_dev is None:
        for i, p in zip(g.index, g.params):
            gr = grads[i]
            if gr.dtype != p.dtype or gr.shape != p.shape or not gr.is_contiguous():
                return None
        t = torch.tensor(ptrs, dtype=torch.int64)
        if g.grad_dev is None:
            g.grad_dev = upload(t, g.params[0].device)
        else:  # refilled in place: a captured step graph holds this table's address
            upload_into(g.grad_dev, t)
        g.grad_addr = ptrs
        g.grad_aligned = all(a % 16 == 0 for a in ptrs)
    return g.grad_dev


def grads_fit(plan: Plan, grads: list[torch.Tensor]) -> bool:
    """Whether this step's gradients suit the plan's kernels (uploads their addresses when they moved)."""
    return all(_grad_table(g, grads) is not None for g in plan.groups)


def _scalars(grp: _Group) -> tuple[float, float, float]:
    """This step's ``1 - lr wd``, ``lr / bc1`` and ``1 / sqrt(bc2)`` of ``grp`` (the bias corrections in
    double precision); advances ``step``."""
    h = grp.hyper
    beta1, beta2 = h["betas"]
    step = grp.states[0]["step"] + 1
    for st in grp.states:
        st["step"] = step
    lr, wd = float(h["lr"]), float(h["weight_decay"])
    bc1 = 1 - beta1**step
    bc2 = 1 - beta2**step
    return (1 - lr * wd, lr / bc1, 1 / bc2**0.5)


def constants(grp: _Group) -> tuple[float, float, float]:
    """``grp``'s ``eps``, ``beta1``, ``beta2``: kernel arguments (a step graph keys on them, see
    :func:`~client.compression.step_graph.graph_key`)."""
    h = grp.hyper
    return float(h["eps"]), float(h["betas"][0]), float(h["betas"][1])


def prepare(opt: Any, plan: Plan) -> None:
    """The host's part of a step, before its launches: each launch's step scalars (:func:`_scalars`, which
    advance the step counts) into :attr:`Plan.scalars` (one copy through pinned memory, no wait), and the
    stochastic-rounding key into :attr:`Plan.seed` (one draw from the optimizer's generator, on the device
    when the generator is a device one: no host sync)."""
    assert plan.scalars is not None and plan.seed is not None
    rows = [(*_scalars(grp), 0.0) for grp in plan.groups]
    upload_into(plan.scalars, torch.tensor(rows, dtype=torch.float32))
    if plan.matrix:  # one key a step, as many draws as before the buffer (the generator's stream is the same)
        gen = opt._gen
        if gen.device == plan.seed.device:
            plan.seed.random_(0, 2**31 - 1, generator=gen)
        else:
            upload_into(plan.seed, torch.randint(0, 2**31 - 1, (1,), generator=gen, device=gen.device))


def _checked(opt: Any, grp: _Group, plan: Plan) -> bool:
    """Whether ``grp``'s tensors get the norm pre-pass and its non-finite skip: always for a projected group
    (its statistics need ``||G||^2`` before the projection), never for a rank-0 matrix group with a full
    ``v`` under ``SKIP_GRAIN = "tile"`` (its tiles test themselves), else as ``opt.skip_nonfinite`` says."""
    if grp.proj is not None:
        return True
    if grp.matrix and tiles_test_themselves(plan.factored, plan.strip_tiles > 1):
        return False
    return bool(opt.skip_nonfinite)


def tiles_test_themselves(factored: bool, strip: bool) -> bool:
    """Whether a rank-0 matrix launch tests each tile for non-finite gradients itself instead of the norm
    pre-pass: under ``SKIP_GRAIN = "tile"``, with a full ``v`` and one tile a program (a factored ``v``'s
    sums and a strip span more than a tile). ``benchmarks.sass`` compiles its cases by the same rule."""
    return not factored and not strip and _tile_grain(SKIP_GRAIN)


def _norms_by_projection(grp: _Group) -> bool:
    """Whether ``grp``'s projection adds its tensors' squared gradient norms (:data:`PROJ_NORMS_MIN_RANK`)."""
    return grp.proj is not None and grp.proj.rank_p2 >= PROJ_NORMS_MIN_RANK


def _proj_align(grp: _Group) -> bool:
    """``ALIGN`` of ``grp``'s projection launches (:data:`PROJ_ALIGN`): its plan's addresses and dimensions
    and this step's gradient addresses pass the check, and every tile starts at a multiple of 16."""
    assert grp.proj is not None
    tiles = (PROJ_BN, BACK_BM, BACK_BN)
    return PROJ_ALIGN and grp.proj.aligned and grp.grad_aligned and all(t % 16 == 0 for t in tiles)


def _matrix_align(grp: _Group, projected: bool, fresh: bool) -> bool:
    """``ALIGN`` of ``grp``'s matrix launch (:data:`MATRIX_ALIGN`): every address of its table is 16-byte
    aligned, and so are this step's gradients at rank 0 (a projected launch reads the coefficients instead).
    A refresh step's launch reads other buffers (``fresh_buffers``'s views) and goes without."""
    return MATRIX_ALIGN and grp.aligned and (projected or grp.grad_aligned) and not fresh


def _proj_norms_code(grp: _Group) -> int:
    """``project_kernel``'s ``NORMS`` for ``grp``: 0 (the pre-pass adds them), 1 (the product's tile squared)
    or 2 (a second load, below :data:`PROJ_NORMS_RELOAD_BELOW`)."""
    if not _norms_by_projection(grp):
        return 0
    assert grp.proj is not None
    return 2 if grp.proj.rank_p2 < PROJ_NORMS_RELOAD_BELOW else 1


def _mark_huge(norms: torch.Tensor, plan: Plan, proj: _Proj | None = None) -> None:
    """A compressed tensor whose gradient is huge (``||g||^2 numel >= 2^120``) is skipped like a non-finite
    one: the torch path's limit (``MangoAdamW._finite``), so no sum of squares of the step overflows.
    ``proj``: only the positions of this projected group (once its projection added their norms; a tensor
    that another launch has already stepped keeps the norm it was stepped with)."""
    if not plan.matrix_idx or plan.numels is None:
        return
    if proj is None:
        norms.masked_fill_(norms * plan.numels >= 2.0**120, float("inf"))
        return
    sel = norms[proj.items]
    norms[proj.items] = sel.masked_fill(sel * proj.numels >= 2.0**120, float("inf"))


def zero_skipped_samples(norms: torch.Tensor, out: dict[str, list[torch.Tensor]]) -> None:
    """Zero the samples of the tensors whose norm in ``norms`` is not finite (skipped this step), in the
    sample buffers :func:`run` listed (those its projections filled before the norms were whole). Run when
    the step's statistics are read: once an interval instead of four torch ops a projected step."""
    for buf, items in zip(out["sample_buf"], out["sample_items"], strict=True):
        buf.masked_fill_(~(norms[items] < float("inf")), 0.0)


def _marks_before_launches(plan: Plan, checked: dict[int, bool]) -> bool:
    """Whether the whole norm vector is marked for huge norms before the launches: only where a checked
    matrix group has its norms from the pre-pass (a projected group marks its own after its projection, and
    the other tensors' ``numels`` are 0, so a projected plan's step skips these three ops)."""
    return any(checked[id(g)] and g.matrix and not _norms_by_projection(g) for g in plan.groups)


def run(
    opt: Any, plan: Plan, skip: torch.Tensor, refreshed: dict[int, torch.Tensor] | None = None
) -> dict[str, list[torch.Tensor]]:
    """One fused step of ``plan`` (after :func:`grads_fit`): :func:`prepare`, then :func:`launch`."""
    prepare(opt, plan)
    return launch(opt, plan, skip, refreshed)


def launch(
    opt: Any, plan: Plan, skip: torch.Tensor, refreshed: dict[int, torch.Tensor] | None = None
) -> dict[str, list[torch.Tensor]]:
    """The device work of a step of ``plan`` (after :func:`prepare`): no host sync and no host value that
    changes from step to step, so that :mod:`~client.compression.step_graph` can record it once and replay it.

    It zeroes :attr:`Plan.norms`; the pre-pass (or the projection, from :data:`PROJ_NORMS_MIN_RANK` up) adds
    each fused tensor's squared gradient norm into its slot (a NaN / inf one skips the tensor).

    :param skip: int32 ``[1]`` device counter of skipped tensor updates.
    :param refreshed: for the projected groups whose bases :func:`~client.compression.refresh.refresh`
        renewed this step, by ``id``: the address table of :func:`fresh_buffers` (their kernel reads the
        rotated fp32 states there).
    :return: lists of device tensors for ``err`` / ``tot`` (per-program ``sum (u - C(u))^2`` and
        ``sum u^2``, estimates of the whole tensor's), ``samples`` (strided gradient entries), and for the
        projected launches ``proj_items`` / ``proj_xsq`` (their positions in ``norms`` and ``||P^T G||^2``),
        ``sample_buf`` / ``sample_items`` (the sample buffers whose projection added the norms, and each
        sample's position in ``norms``: a skipped tensor's samples are zeroed by :func:`zero_skipped_samples`
        when the statistics are read),
        read lazily by ``compression_stats``.
    """
    import triton.language as tl  # triton is optional: loaded where a fused step runs

    from client.compression.kernels import triton_proj as tp
    from client.compression.kernels import triton_step as ts

    norms, seed = plan.norms, plan.seed
    assert norms is not None and plan.scalars is not None
    norms.zero_()
    device = norms.device
    refreshed = refreshed or {}
    tab = kernels._nf4_table(device)
    tl_dtype = {torch.float32: tl.float32, torch.bfloat16: tl.bfloat16}
    out: dict[str, list[torch.Tensor]] = {
        "err": [],
        "tot": [],
        "samples": [],
        "proj_items": [],
        "proj_xsq": [],
        "sample_buf": [],
        "sample_items": [],
    }
    prec = QUANTIZED_DOT_PRECISION if plan.bits <= 16 else tp.DOT_PRECISION
    per_group = max(opt.stats_sample // max(len(plan.groups), 1), 1)
    checked = {id(grp): _checked(opt, grp, plan) for grp in plan.groups}
    for grp in plan.groups:  # every tensor's squared norm first: the steps read it to skip non-finite ones
        assert grp.norm_prog is not None
        if not checked[id(grp)] or _norms_by_projection(grp):
            continue  # its step kernel or its projection adds the norm itself
        nmeta, width = (grp.norm_meta, 2) if grp.norm_meta is not None else (grp.meta, 5 if grp.matrix else 2)
        ts.norm_kernel[(grp.norm_prog.shape[0],)](
            grp.norm_prog, nmeta, grp.grad_dev, norms, META=width,
            PDTYPE=tl_dtype[grp.pdtype], TILE=NORM_TILE, num_warps=8,
        )  # fmt: skip
    if _marks_before_launches(plan, checked):
        _mark_huge(norms, plan)
    for grp, scal in zip(plan.groups, plan.scalars, strict=True):  # scal: the launch's step scalars
        assert grp.grad_dev is not None
        eps, beta1, beta2 = constants(grp)
        ptype = tl_dtype[grp.pdtype]
        if grp.matrix:
            assert grp.part is not None and grp.mean is not None
            pj = grp.proj
            if pj is not None:
                stages = {} if PROJ_STAGES is None else {"num_stages": PROJ_STAGES}
                norms_code, proj_align = _proj_norms_code(grp), _proj_align(grp)  # both kernels, both views
                for trans, prog, sample in pj.prog_a:
                    tp.project_kernel[(prog.shape[0],)](
                        prog, pj.addr, pj.meta, grp.grad_dev, norms, sample,
                        PDTYPE=ptype, R=pj.rank_p2, BK=PROJ_BK, BN=PROJ_BN, PRECISION=prec,
                        TRANS=trans, NORMS=norms_code, ALIGN=proj_align, num_warps=PROJ_WARPS, **stages,
                    )  # fmt: skip
                if norms_code:  # the norms are whole now: mark the huge (the steps below skip them)
                    _mark_huge(norms, plan, pj)
                    # a skipped tensor's samples are zeroed when the statistics are read, not in the step
                    out["sample_buf"].append(pj.samples)
                    out["sample_items"].append(pj.sample_items)
                xsq = pj.xsq.zero_()
            else:
                xsq = grp.mean  # unused by a rank-0 launch
            early, regs = matrix_loads(plan.bits, plan.gamma > 0)
            consts: dict[str, Any] = dict(
                PDTYPE=ptype,
                BITS=plan.bits,
                MODE=plan.mode,
                BLOCK=plan.block,
                ROWS=plan.tile_rows,
                EF=plan.ef,
                SHIFT=plan.gamma > 0,
                FACTORED=plan.factored,
                STRIP=plan.strip_tiles > 1,
                PARTIALS=plan.partials,
                STOCHASTIC=opt._stochastic(plan.bits),
                SRC=1 if pj is not None else 0,
                FRESH=id(grp) in refreshed,
                STATS_EVERY=1 if pj is not None else ts.STATS_EVERY.value,
                EARLY=early,
                RNG=_draws_code(DRAWS),
                SEARCH=_nf4_search_code(NF4_SEARCH),
                CHECK=checked[id(grp)],
                TILE_SKIP=bool(opt.skip_nonfinite) and not checked[id(grp)],
                ALIGN=_matrix_align(grp, pj is not None, id(grp) in refreshed),
                PAIRS=FOUR_BIT_PAIRS,
                num_warps=NUM_WARPS,
            )
            if regs and device.type == "cuda":
                consts["maxnreg"] = regs
            addr = refreshed.get(id(grp), grp.addr)
            # whole-block programs first (no per-value masks), then the partial last blocks
            parts = ((0, grp.n_full, True), (grp.n_full, grp.n_prog - grp.n_full, False))
            if plan.factored:  # the mean of the factored v's row statistic, before the step
                ts.factor_kernel[(len(grp.index),)](
                    grp.addr, grp.meta, norms, grp.mean, beta2, FOLD=False, CHUNK=FACTOR_CHUNK, num_warps=4
                )
            for pid0, n, full in parts:
                if n:
                    ts.matrix_step_kernel[(n,)](
                        grp.prog, addr, grp.meta, grp.grad_dev, norms, seed, tab, grp.mean, pid0,
                        grp.part, grp.sample, skip, xsq, scal, eps, beta1, beta2,
                        float(opt.ef_beta), plan.gamma, FULL=full and WHOLE_BLOCKS, **consts,
                    )  # fmt: skip
            if grp.sums is not None:  # add up the programs' partial sums, then fold them in
                sums = grp.sums
                for prog, fold in ((sums.groups, False), (sums.folds, True)):
                    if prog.shape[0]:
                        ts.partial_sums_kernel[(prog.shape[0],)](
                            prog, sums.jobs, grp.meta, norms, beta2, FOLD=fold, GROUP=sums.group,
                            COLS=sums.cols, CHECK=checked[id(grp)], num_warps=4,
                        )  # fmt: skip
            elif plan.factored:  # fold this step's row / column sums of c^2 into the factored v
                ts.factor_kernel[(len(grp.index),)](
                    grp.addr, grp.meta, norms, grp.mean, beta2, FOLD=True, CHUNK=FACTOR_CHUNK,
                    CHECK=checked[id(grp)], num_warps=4,
                )  # fmt: skip
            out["err"].append(grp.part[:, 0])
            out["tot"].append(grp.part[:, 1])
            if pj is not None:
                for trans, prog in pj.prog_c:
                    tp.backproject_kernel[(prog.shape[0],)](
                        prog, pj.addr, pj.meta, norms, pj.scale, scal,
                        PDTYPE=ptype, R=pj.rank_p2, BM=BACK_BM, BN=BACK_BN, PRECISION=prec,
                        TRANS=trans, ALIGN=proj_align, num_warps=PROJ_WARPS,
                    )  # fmt: skip
                out["proj_items"].append(pj.items)
                out["proj_xsq"].append(xsq)
                for _, _, sample in pj.prog_a:
                    k = max(1, math.ceil(sample.shape[0] * len(pj.prog_a) / per_group))
                    out["samples"].append(sample[::k])
                continue
        else:
            assert grp.sdtype is not None
            ts.exact_step_kernel[(grp.n_prog,)](
                grp.prog, grp.addr, grp.meta, grp.grad_dev, norms, grp.sample, skip, scal, eps, beta1, beta2,
                PDTYPE=ptype, SDTYPE=tl_dtype[grp.sdtype], TILE=EXACT_TILE, CHECK=checked[id(grp)],
                num_warps=EXACT_WARPS,
            )  # fmt: skip
        out["samples"].append(grp.sample[:: max(1, math.ceil(grp.n_prog / per_group))])
    return out
