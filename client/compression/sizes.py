"""The byte model of :class:`~client.compression.optimizer.MangoAdamW`'s state: one function, used everywhere.

:func:`param_state_bytes` gives the bytes of each state of one parameter (first moment ``m``, second moment
``v``, error buffer ``e``, shift reference ``h``, basis ``P``) under a setting, from the parameter's shape
alone; :func:`state_bytes` sums it over a model's shapes. It is what ``MangoAdamW.state_bytes()`` counts from
its tensors once the optimizer has taken a step under the setting (``tests/client/test_sizes.py`` checks
equality), and the one model behind ``MangoAdamW.expected_state_bytes``, the surrogate's memory column
(:mod:`envs.fit`), the policy service's memory shield (:mod:`policy_service.shield`) and the memory ratios of
the first interval's candidates (:data:`client.controllers.FIRST_CANDIDATES`), the last two through
:func:`bytes_per_param` (a typical square matrix).

Per parameter (the knobs are the optimizer's, with its defaults):

* *exact* tensors (fewer than 2 dimensions or fewer than ``min_compress_numel`` values): AdamW's two moments
  in the parameter's dtype, ``2 * element_size`` bytes per value;
* *matrix* tensors, canonical view ``m x n`` (``(shape[0], -1)`` transposed so ``m <= n``), effective rank
  ``r = rank if 0 < rank < m else 0`` (0 as well in a ``project=False`` group) and moment rows ``k = r or m``:

  - identity setting (``r == 0`` and 32 bits): ``m`` and ``v`` fp32, ``8 m n`` (``v`` factored,
    ``4 (m + n)``, only when ``factor_second_moment=True`` forces it);
  - otherwise: error buffer ``e`` (at ``bits``, with error feedback: ``k x n`` when projecting with
    ``ef_scope="subspace"``, else ``m x n``), basis ``P`` (``4 m r``), shift reference ``h`` (``k x n`` at
    ``bits``, if ``gamma > 0``), first moment ``m`` (``k x n`` at ``bits``) and second moment ``v``:
    ``k x n`` at ``bits`` (2-8 bits: ``sqrt(v)`` on the uniform block code; 16: bf16; 32: fp32), or
    factored (``4 (k + n)``) where ``factor_second_moment=True`` asks for it
    (:func:`auto_factors_second_moment`).

``bits`` wide storage of ``N`` values costs :func:`expected_nbytes`: ``N bits / 8`` code bytes plus one
float32 scale per block of :func:`default_block` values (256 at 8 bits, 64 below), padded to whole blocks.

Imports no torch: the service and the surrogate use it without loading the compression kernels.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from client.protocol import CompressionSetting

__all__ = [
    "DENSE_BYTES_PER_PARAM",
    "FACTOR_MAX_BITS",
    "QUANT_BITS",
    "FullBasisSplit",
    "ParamStateBytes",
    "auto_factors_second_moment",
    "bytes_per_param",
    "check_block",
    "default_block",
    "dense_state_bytes",
    "expected_nbytes",
    "full_basis_split",
    "param_state_bytes",
    "state_bytes",
]

#: Bytes per parameter of plain fp32 AdamW state (m and v): what :func:`dense_state_bytes` counts.
DENSE_BYTES_PER_PARAM = 8.0
#: Bit widths the block-wise quantizer handles (16 = bf16 cast and 32 = off are handled above it).
QUANT_BITS: tuple[int, ...] = (2, 3, 4, 8)


def default_block(bits: int) -> int:
    """Default block size: 256 values at 8 bits (bitsandbytes' blockwise default), 64 at 2/3/4 bits.

    Smaller blocks at low bits keep one outlier from flattening a whole block; each block costs one float32
    scale (0.5 bit per value at block 64).
    """
    if bits not in QUANT_BITS:
        raise ValueError(f"bits={bits} is not a block-quantized width; choose one of {QUANT_BITS}")
    return 256 if bits == 8 else 64


def check_block(block: int | None, bits: int) -> int:
    """``block``, or the default for ``bits`` when ``None``.

    :raises ValueError: ``block`` is not a positive multiple of 8, or ``bits`` has no block default.
    """
    if block is None:
        return default_block(bits)
    if not isinstance(block, int) or isinstance(block, bool) or block <= 0 or block % 8:
        raise ValueError(f"block={block!r} must be a positive multiple of 8 (e.g. {default_block(bits)})")
    return block


def expected_nbytes(numel: int, bits: int, block: int | None = None) -> int:
    """Bytes ``numel`` float32 values take stored at ``bits``: fp32 (32), bf16 (16), else packed codes plus
    one float32 scale per block (what :func:`client.compression.quant.compress_state` holds)."""
    if bits == 32:
        return 4 * numel
    if bits == 16:
        return 2 * numel
    block = check_block(block, bits)
    blocks = max(math.ceil(numel / block), 1)
    return blocks * block * bits // 8 + 4 * blocks


@dataclass(frozen=True)
class ParamStateBytes:
    """Bytes of each state one parameter holds (0 where the setting keeps no such state).

    An exact tensor's two AdamW moments are ``m`` and ``v``.
    """

    m: int = 0
    v: int = 0
    error: int = 0
    shift: int = 0
    basis: int = 0

    @property
    def total(self) -> int:
        return self.m + self.v + self.error + self.shift + self.basis


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


@dataclass(frozen=True)
class FullBasisSplit:
    """How one rank holds a projected matrix's state under FSDP2 with a basis of the whole matrix.

    ``m x n`` is the whole parameter's canonical view. FSDP2 shards the parameter's dim 0, which is the
    canonical rows (``axis=0``, a wide matrix: ``shape[0] <= numel / shape[0]``) or its columns (``axis=1``,
    a tall one, whose canonical view is transposed). Each rank keeps ``rows`` rows of the basis ``P``
    (``m / world``; with ``axis=0`` the rows of its parameter shard) and ``cols`` columns of every ``r x n``
    state (``n / world``; with ``axis=1`` the columns of its parameter shard).
    """

    axis: int
    m: int
    n: int
    rows: int
    cols: int


def full_basis_split(full_shape: Sequence[int], world: int) -> FullBasisSplit | None:
    """The :class:`FullBasisSplit` of a parameter of ``full_shape`` sharded on dim 0 over ``world`` ranks,
    or ``None`` where the state cannot be split evenly (then each rank projects its own shard with a basis
    of its own): dim 0, ``m`` and ``n`` must all divide by ``world`` (``world > 1``, two or more dims)."""
    dims = tuple(int(d) for d in full_shape)
    if world < 2 or len(dims) < 2 or dims[0] == 0:
        return None
    rows, cols = dims[0], _numel(dims) // dims[0]
    axis = 0 if rows <= cols else 1
    m, n = min(rows, cols), max(rows, cols)
    if dims[0] % world or m % world or n % world:
        return None
    return FullBasisSplit(axis=axis, m=m, n=n, rows=m // world, cols=n // world)


#: The widest state at which ``factor_second_moment=None`` factors ``v`` (:func:`auto_factors_second_moment`);
#: 0: at none. Trace headers record it (``factor_max_bits``), so traces of an older rule keep their bytes.
FACTOR_MAX_BITS = 0


def auto_factors_second_moment(bits: int) -> bool:
    """Whether ``MangoAdamW(factor_second_moment=None)`` keeps ``v`` as Adafactor row / column statistics
    (``4 (k + n)`` bytes) at ``bits`` instead of a ``sqrt(v)`` stored like ``m``: at no width since session
    33 (:data:`FACTOR_MAX_BITS`). The factored ``v``'s column sums span the whole tensor, so its fused step
    needs same-address atomics and a gradient pre-pass, where with a full ``v`` each tile steps alone. 4 bits
    dropped the factors in session 30, 2-3 bits in session 33: a faster step, less energy and a lower loss
    on the GPU for about ``bits / 8`` more bytes a value (BENCHMARKS.md, those sessions). ``True`` still asks
    for the factors at any width."""
    return bits <= FACTOR_MAX_BITS


def param_state_bytes(
    shape: Sequence[int],
    setting: CompressionSetting,
    *,
    min_compress_numel: int = 4096,
    error_feedback: bool = True,
    factor_second_moment: bool | None = None,
    ef_scope: str = "subspace",
    project: bool = True,
    element_size: int = 4,
    full_shape: Sequence[int] | None = None,
    world_size: int = 1,
) -> ParamStateBytes:
    """The state bytes one parameter of ``shape`` holds after a step under ``setting`` (module docstring).

    :param shape: the tensor the optimizer keeps state for (under FSDP2, the local shard).
    :param setting: the compression setting in force.
    :param min_compress_numel: the optimizer's threshold below which tensors keep exact AdamW state.
    :param error_feedback: the optimizer's ``error_feedback`` flag.
    :param factor_second_moment: the optimizer's flag (``None``: :func:`auto_factors_second_moment`).
    :param ef_scope: the optimizer's ``ef_scope``: ``"subspace"`` (with a projection ``e`` is ``k x n``
        coefficients) or ``"full"`` (``e`` is always ``m x n``).
    :param project: the parameter group's ``project`` flag (``False``: rank 0 at the setting's bits).
    :param element_size: bytes per value of the parameter's dtype (exact tensors keep their moments in it).
    :param full_shape: under FSDP2, the whole parameter's shape: it decides exact or matrix (an empty shard
        is exact), while ``shape``, the local shard, sets the layout. ``None``: ``shape`` is the whole tensor.
    :param world_size: under FSDP2, the ranks ``full_shape`` is sharded over (dim 0). A projected matrix
        whose :func:`full_basis_split` exists (with ``ef_scope="subspace"``) then holds its share of the whole
        matrix's state: ``rows x r`` of ``P`` and ``r x cols`` of each ``r x n`` state, the factored
        ``v``'s row statistic (``r`` values) on every rank.
    """
    dims = tuple(int(d) for d in shape)
    numel = _numel(dims)
    whole = dims if full_shape is None else tuple(int(d) for d in full_shape)
    if len(whole) < 2 or _numel(whole) < min_compress_numel or numel == 0:
        return ParamStateBytes(m=element_size * numel, v=element_size * numel)
    rows, cols = dims[0], numel // dims[0]
    m, n = min(rows, cols), max(rows, cols)
    bits = setting.bits
    r = setting.rank if project and 0 < setting.rank < m else 0
    factored = auto_factors_second_moment(bits) if factor_second_moment is None else factor_second_moment
    split = full_basis_split(whole, world_size) if full_shape is not None and ef_scope == "subspace" else None
    r_whole = setting.rank if split is not None and project and 0 < setting.rank < split.m else 0
    if split is not None and r_whole > 0:  # the whole matrix's basis, its state split over the ranks
        k = split.cols * r_whole
        return ParamStateBytes(
            m=expected_nbytes(k, bits),
            v=4 * (r_whole + split.cols) if factored else expected_nbytes(k, bits),
            error=expected_nbytes(k, bits) if error_feedback else 0,
            shift=expected_nbytes(k, bits) if setting.gamma > 0 else 0,
            basis=4 * split.rows * r_whole,
        )
    if r == 0 and bits == 32:  # identity: fp32 m, and v fp32 unless factoring is forced
        return ParamStateBytes(m=4 * m * n, v=4 * (m + n) if factored else 4 * m * n)
    k = r if r > 0 else m
    e_rows = k if r > 0 and ef_scope == "subspace" else m
    return ParamStateBytes(
        m=expected_nbytes(k * n, bits),
        v=4 * (k + n) if factored else expected_nbytes(k * n, bits),
        error=expected_nbytes(e_rows * n, bits) if error_feedback else 0,
        shift=expected_nbytes(k * n, bits) if setting.gamma > 0 else 0,
        basis=4 * m * r,
    )


def state_bytes(
    shapes: Iterable[Sequence[int]],
    setting: CompressionSetting,
    *,
    min_compress_numel: int = 4096,
    error_feedback: bool = True,
    factor_second_moment: bool | None = None,
    ef_scope: str = "subspace",
) -> int:
    """``MangoAdamW.state_bytes()`` after a step under ``setting`` for fp32 parameters of ``shapes`` (one
    group, projected): the sum of :func:`param_state_bytes`, whose knobs these are."""
    return sum(
        param_state_bytes(
            s,
            setting,
            min_compress_numel=min_compress_numel,
            error_feedback=error_feedback,
            factor_second_moment=factor_second_moment,
            ef_scope=ef_scope,
        ).total
        for s in shapes
    )


def dense_state_bytes(shapes: Iterable[Sequence[int]]) -> int:
    """fp32 AdamW state of ``shapes``: 8 bytes per value (``MangoAdamW.dense_state_bytes()``)."""
    return sum(8 * _numel(s) for s in shapes)


@functools.lru_cache(maxsize=4096)
def bytes_per_param(
    setting: CompressionSetting, matrix_side: int = 1024, *, with_shift: bool = True
) -> float:
    """Optimizer + compression state bytes per parameter of a compressible ``matrix_side`` square matrix.

    :func:`param_state_bytes` with ``MangoAdamW``'s default knobs: moments ``m`` at ``bits`` in the rank-r
    subspace, ``v`` stored like ``m`` (:func:`auto_factors_second_moment`), the error-feedback buffer with the
    moments, the gamma-shift reference ``h`` when ``gamma > 0`` and the fp32 basis. The uncompressed setting
    gives exactly :data:`DENSE_BYTES_PER_PARAM` (8); divide by it for the ratio to AdamW's state.
    ``with_shift=False`` leaves ``h`` out: what the setting keeps of the state, its fidelity. ``matrix_side``
    sets what a rank-r projection saves (``r / matrix_side``); the bits alone barely depend on it.
    """
    side = max(int(matrix_side), 1)
    held = param_state_bytes((side, side), setting, min_compress_numel=1)
    return (held.total - (0 if with_shift else held.shift)) / (side * side)
