"""Block-wise quantization of optimizer states and gradients (torch path; ``kernels/`` is the Triton twin).

The layout and formulas are the spec in ``docs/architecture.md`` ("The compression core"); the Triton path
implements the same semantics, so the two agree bit-for-bit with ``stochastic=False`` (and in distribution
with ``stochastic=True``).

Knobs
-----
``bits`` (2, 3, 4, 8)
    Bits per stored value. The rounding error of the uniform code shrinks about 4x per extra bit (step
    ``delta = 2 s / (2^b - 1)``, MSE ``<= delta^2 / 12`` deterministic, ``<= delta^2 / 4`` stochastic).
``mode``
    ``"uniform"``: signed absmax code, ``2^b`` evenly spaced levels in ``[-s, s]`` (all widths).
    ``"nf4"``: the 16 NormalFloat levels of QLoRA (4 bits only); lower MSE on bell-shaped data.
    ``"aciq"``: uniform code on ``[-alpha, alpha]`` with the per-block ACIQ clip ``alpha <= absmax``
    (2, 3, 4 bits); lower MSE on heavy-tailed data, where absmax wastes levels on a few outliers. Biased
    (clips), so pair it with error feedback.
``block``
    Values sharing one float32 scale (multiple of 8; default 256 at 8 bits, 64 below). Smaller blocks cost
    ``32 / block`` extra bits per value and isolate outliers better.
``stochastic``
    Stochastic rounding is unbiased (``E[dequantize(quantize(x))] = x`` inside the clip range) at up to 3x
    the deterministic MSE: use it where errors accumulate (moments, error feedback), round-to-nearest for
    one-off storage.

Memory: ``n b / 8`` bytes of codes plus ``4 n / block`` bytes of scales (:attr:`QuantizedTensor.nbytes`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal

import torch

from client.compression.codes import QUANT_BITS, nf4_levels
from client.compression.sizes import check_block as _check_block
from client.compression.sizes import expected_nbytes  # the byte model's, re-exported

__all__ = [
    "QUANT_MODES",
    "STATE_BITS",
    "DenseState",
    "QuantMode",
    "QuantizedTensor",
    "StateTensor",
    "aciq_alpha",
    "compress_state",
    "decompress_state",
    "default_state_mode",
    "dequantize",
    "dequantize_cat",
    "dequantize_torch",
    "expected_nbytes",
    "pack_bits",
    "quantize",
    "quantize_cat",
    "quantize_many",
    "quantize_torch",
    "roundtrip_torch",
    "unpack_bits",
    "whole_blocks",
]

QuantMode = Literal["uniform", "nf4", "aciq"]
#: Quantizer modes and the bit widths each accepts.
QUANT_MODES: dict[str, tuple[int, ...]] = {"uniform": (2, 3, 4, 8), "nf4": (4,), "aciq": (2, 3, 4)}
#: Every width :func:`compress_state` accepts (16 = bf16 copy, 32 = identity copy).
STATE_BITS: tuple[int, ...] = (2, 3, 4, 8, 16, 32)


@dataclass
class QuantizedTensor:
    """A block-quantized tensor: packed codes plus one float32 scale per block.

    :ivar data: uint8, packed codes of the zero-padded flat input (see :func:`pack_bits`).
    :ivar scale: float32, one per block: the block absmax (``"uniform"``, ``"nf4"``) or ACIQ clip.
    :ivar shape: original shape.
    :ivar dtype: original dtype (what :meth:`dequantize` returns by default).
    :ivar bits: code width, 2, 3, 4 or 8.
    :ivar mode: ``"uniform"``, ``"nf4"`` or ``"aciq"``.
    :ivar block: values per scale.
    :ivar numel: number of original values (the rest of the last block is padding).
    """

    data: torch.Tensor
    scale: torch.Tensor
    shape: torch.Size
    dtype: torch.dtype
    bits: int
    mode: str
    block: int
    numel: int

    @property
    def nbytes(self) -> int:
        """Bytes held: packed codes (1 per uint8) plus 4 per float32 scale."""
        return self.data.numel() * 1 + self.scale.numel() * 4

    @property
    def device(self) -> torch.device:
        return self.data.device

    def dequantize(self, out_dtype: torch.dtype | None = None) -> torch.Tensor:
        """Reconstruct the tensor (in ``out_dtype``, default the original dtype)."""
        return dequantize(self, out_dtype=out_dtype)

    def to(self, device: torch.device | str) -> QuantizedTensor:
        """A copy with ``data`` and ``scale`` on ``device``."""
        return QuantizedTensor(
            self.data.to(device),
            self.scale.to(device),
            self.shape,
            self.dtype,
            self.bits,
            self.mode,
            self.block,
            self.numel,
        )


@dataclass
class DenseState:
    """A state kept unquantized: a bf16 copy (``bits=16``) or an identity copy (``bits=32``)."""

    data: torch.Tensor
    dtype: torch.dtype
    bits: int

    @property
    def nbytes(self) -> int:
        return self.data.numel() * self.data.element_size()

    @property
    def shape(self) -> torch.Size:
        return self.data.shape

    @property
    def device(self) -> torch.device:
        return self.data.device

    def dequantize(self, out_dtype: torch.dtype | None = None) -> torch.Tensor:
        return self.data.to(out_dtype or self.dtype)

    def to(self, device: torch.device | str) -> DenseState:
        return DenseState(self.data.to(device), self.dtype, self.bits)


#: What :func:`compress_state` returns; both kinds have ``.nbytes``, ``.dequantize()``, ``.to()``.
StateTensor = QuantizedTensor | DenseState


# --------------------------------------------------------------------------------------------- validation
def _check_bits_mode(bits: int, mode: str) -> None:
    if mode not in QUANT_MODES:
        raise ValueError(f"mode={mode!r} is unknown; choose one of {list(QUANT_MODES)}")
    if bits not in QUANT_BITS:
        hint = " (16 and 32 are handled by compress_state)" if bits in (16, 32) else ""
        raise ValueError(f"bits={bits} is not a quantized width{hint}; choose one of {QUANT_BITS}")
    if bits not in QUANT_MODES[mode]:
        raise ValueError(
            f"bits={bits} is not supported by mode={mode!r}; it takes bits in {QUANT_MODES[mode]}"
            + (" (use mode='uniform' at other widths)" if mode != "uniform" else "")
        )


def _check_float(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got dtype {x.dtype}; cast it with .float()")


def _check_finite_scale(scale: torch.Tensor) -> None:
    # A NaN/inf anywhere in a block makes its absmax non-finite: one check on n/block values. Not inside
    # torch.compile (a host sync; the compiled optimizer step takes its gradients as finite).
    if torch.compiler.is_compiling():
        return
    if scale.numel() and not bool(torch.isfinite(scale).all()):
        raise ValueError(
            "x contains non-finite values (NaN or inf); skip or sanitize the tensor before quantize"
        )


# ---------------------------------------------------------------------------------------------- packing
def _group(bits: int) -> tuple[int, int]:
    """(codes per group, bytes per group) of the packing layout."""
    return {8: (1, 1), 4: (2, 1), 2: (4, 1), 3: (8, 3)}[bits]


def pack_bits(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack integer codes in ``[0, 2^bits)`` into bytes (flattened; a short last group is zero-padded).

    Layout (shared with the Triton kernels): 8 bits one code per byte; 4 bits two per byte, element ``2i``
    in the low nibble; 2 bits four per byte, element ``4i+j`` at bit ``2j``; 3 bits eight codes in three
    bytes, element ``8i+j`` at bit ``3j`` of the little-endian 24-bit word. Higher code bits are masked off.

    :return: uint8 tensor of ``ceil(n / g) * bytes_per_group`` bytes (``n * bits / 8`` when ``n`` is a
        multiple of 8).
    """
    if bits not in QUANT_BITS:
        raise ValueError(f"bits={bits} cannot be packed; choose one of {QUANT_BITS}")
    flat = codes.reshape(-1)
    if bits == 8:
        return flat.to(torch.uint8)
    per, nbytes = _group(bits)
    if nbytes == 1 and flat.dtype == torch.uint8:  # 2 and 4 bits from uint8 codes: byte ops, same bytes
        return _pack_bytes(flat, bits, per)
    n = flat.numel()
    pad = (-n) % per
    c = flat.to(torch.int32) & ((1 << bits) - 1)
    if pad:
        c = torch.nn.functional.pad(c, (0, pad))
    c = c.view(-1, per)  # (groups, per)
    shifts = torch.arange(per, device=c.device, dtype=torch.int32) * bits
    word = (c << shifts).sum(dim=1, dtype=torch.int32)  # disjoint bit fields: sum == OR
    if nbytes == 1:
        return word.to(torch.uint8)
    byte_shifts = torch.arange(nbytes, device=c.device, dtype=torch.int32) * 8
    return ((word[:, None] >> byte_shifts) & 0xFF).to(torch.uint8).reshape(-1)


def unpack_bits(packed: torch.Tensor, bits: int, n: int) -> torch.Tensor:
    """Inverse of :func:`pack_bits`: the first ``n`` codes as uint8."""
    if bits not in QUANT_BITS:
        raise ValueError(f"bits={bits} cannot be unpacked; choose one of {QUANT_BITS}")
    per, nbytes = _group(bits)
    need = -(-n // per) * nbytes
    flat = packed.reshape(-1)
    if flat.numel() < need:
        raise ValueError(f"packed has {flat.numel()} bytes but n={n} codes at {bits} bits need {need}")
    if bits == 8:
        return flat[:n].to(torch.uint8)
    if nbytes == 1 and flat.dtype == torch.uint8:
        fields = [(flat[:need] >> (j * bits)) & ((1 << bits) - 1) for j in range(per)]
        return torch.stack(fields, dim=1).reshape(-1)[:n]
    b = flat[:need].to(torch.int32).view(-1, nbytes)  # (groups, bytes)
    if nbytes == 1:
        word = b[:, 0]
    else:
        byte_shifts = torch.arange(nbytes, device=b.device, dtype=torch.int32) * 8
        word = (b << byte_shifts).sum(dim=1, dtype=torch.int32)
    shifts = torch.arange(per, device=b.device, dtype=torch.int32) * bits
    codes = (word[:, None] >> shifts) & ((1 << bits) - 1)
    return codes.reshape(-1)[:n].to(torch.uint8)


def _pack_bytes(flat: torch.Tensor, bits: int, per: int) -> torch.Tensor:
    """:func:`pack_bits` of uint8 codes at 2 or 4 bits (``per`` codes a byte) with uint8 shifts and ORs."""
    c = flat & ((1 << bits) - 1)
    pad = (-c.numel()) % per
    if pad:
        c = torch.nn.functional.pad(c, (0, pad))
    c = c.view(-1, per)
    out = c[:, 0].clone()
    for j in range(1, per):
        out |= c[:, j] << (j * bits)
    return out


# ------------------------------------------------------------------------------------------------- ACIQ
def aciq_alpha(x_blocks: torch.Tensor, bits: int) -> torch.Tensor:
    """Per-block ACIQ clip: the ``alpha`` in ``[0, absmax]`` minimizing the empirical clipped-uniform MSE.

    Minimizes ``mean((|x| - alpha)_+^2) + delta^2 / 12`` with ``delta = 2 alpha / (2^b - 1)`` (Banner et al.,
    2019), i.e. solves ``alpha = c * mean((|x| - alpha)_+)`` with ``c = 3 (2^b - 1)^2``. The mean runs over
    the whole block row (zero padding included).

    Solved exactly, without iteration: with ``v_1 >= v_2 >= ...`` the sorted ``|x|`` of a block (size B) and
    ``S_k`` the sum of the top k, ``B * mean((|x| - a)_+) = max_k (S_k - k a)``, so the left side minus the
    right is ``min_k`` of increasing lines and its root is ``alpha = max_{k=0..B} c S_k / (B + c k)``.
    Cost: one sort per block row, ``O(n log B)``. An all-zero block gives 0.

    :param x_blocks: (num_blocks, B) values, any float dtype (computed in float32).
    :param bits: 2, 3 or 4 (at 8 bits the clip buys nothing; use ``"uniform"``).
    :return: float32 (num_blocks,) clip values.
    """
    if bits not in QUANT_MODES["aciq"]:
        raise ValueError(f"bits={bits} is not supported by ACIQ; choose one of {QUANT_MODES['aciq']}")
    if x_blocks.ndim != 2:
        raise ValueError(f"x_blocks must be 2-D (num_blocks, block), got shape {tuple(x_blocks.shape)}")
    a = x_blocks.float().abs().sort(dim=1, descending=True).values  # (nb, B), v_1 >= ... >= v_B
    size = a.shape[1]
    c = 3.0 * float((1 << bits) - 1) ** 2
    top_sum = torch.cumsum(a, dim=1)  # S_k, k = 1..B
    k = torch.arange(1, size + 1, device=a.device, dtype=torch.float32)
    cand = (c * top_sum) / (size + c * k)  # root of the k-th line
    return cand.amax(dim=1).clamp_min(0.0)  # k = 0 contributes 0


# ------------------------------------------------------------------------------------------ torch path
def _rand_like(t: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    if generator is None or generator.device == t.device:
        return torch.rand(t.shape, generator=generator, device=t.device, dtype=torch.float32)
    return torch.rand(t.shape, generator=generator, device=generator.device, dtype=torch.float32).to(t.device)


def _to_blocks(x: torch.Tensor, block: int) -> torch.Tensor:
    flat = x.detach().reshape(-1).float()
    pad = (-flat.numel()) % block
    if pad or flat.numel() == 0:
        flat = torch.nn.functional.pad(flat, (0, pad if flat.numel() else block))
    return flat.view(-1, block)  # (num_blocks, block)


#: Cells of the torch path's NF4 encoders: ``y`` in ``[-1, 1]`` falls in cell ``int((y + 1) * CELLS / 2)``
#: (``0 ... CELLS``; the product by a power of two is exact, so the cell is a monotone function of the float
#: ``y + 1``). Narrower than the closest two levels and the closest two midpoints, so a cell holds at most
#: one of the points an encoder counts, and a count of the points below ``y`` is a table look-up and one
#: comparison (:func:`_nf4_count`) instead of a binary search (``searchsorted``), with the same result.
_NF4_CELLS = 256


def _nf4_cell(y: torch.Tensor) -> torch.Tensor:
    """The cell of each ``y`` (int64, clamped to the table: a NaN lands in cell 0)."""
    return ((y + 1.0) * (_NF4_CELLS / 2)).to(torch.int64).clamp_(0, _NF4_CELLS)


def _nf4_code_book_cpu() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    levels = nf4_levels("cpu")
    return levels, levels[1:] - levels[:-1], (levels[:-1] + levels[1:]) / 2


#: ``(levels, gaps, mids)`` float32 on the CPU: the 16 levels, ``levels[k + 1] - levels[k]`` and the 15
#: midpoints, each computed in float32 as the encoders' formulas compute them. Module constants (no cache
#: lookup), so a compiled step traces the encoders without a graph break.
_NF4_CODE_BOOK = _nf4_code_book_cpu()


def _nf4_table_cpu(inclusive: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``(base, next)`` per cell for the points :func:`_nf4_count` counts (levels 1-15 when ``inclusive``,
    else the midpoints): ``base`` the points in earlier cells, ``next`` the first point not among them
    (``inf`` past the last). For ``y`` in the cell, the points ``< y`` number ``base + (y > next)`` and those
    ``<= y`` ``base + (y >= next)``: a point of an earlier cell lies below ``y`` and one of a later cell above
    it (the cell is monotone in ``y``), and ``next`` is the cell's only point or a later cell's. The cells are
    :func:`_nf4_cell`'s own, so the table is exact for the encoder's arithmetic."""
    levels, _, mids = _NF4_CODE_BOOK
    pts = levels[1:] if inclusive else mids
    cells = _nf4_cell(pts)
    if bool((cells[1:] <= cells[:-1]).any()):
        raise ValueError(f"_NF4_CELLS={_NF4_CELLS} puts two NF4 points in one cell")
    base = torch.searchsorted(cells, torch.arange(_NF4_CELLS + 1))  # points in cells < j
    nxt = torch.cat([pts, torch.full((1,), math.inf)]).index_select(0, base)
    return base.to(torch.uint8), nxt


#: :func:`_nf4_table_cpu` of both encoders (``inclusive`` True: stochastic, False: round to nearest).
_NF4_TABLES = {True: _nf4_table_cpu(True), False: _nf4_table_cpu(False)}


def _on(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    return t if t.device == device else t.to(device)


def _nf4_code_book(device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:data:`_NF4_CODE_BOOK` on ``device``."""
    return tuple(_on(t, device) for t in _NF4_CODE_BOOK)  # type: ignore[return-value]


def _nf4_count(y: torch.Tensor, *, inclusive: bool) -> torch.Tensor:
    """Per ``y`` (finite, in ``[-1, 1]``), uint8: the NF4 levels 1-15 ``<= y`` (``inclusive``: the level
    below, ``searchsorted(levels, y, right=True) - 1``) or the midpoints ``< y`` (the nearest level,
    ``bucketize(y, mids)``). In uint8 throughout: a bool added to an int64 tensor is a slow mixed-type op."""
    base, nxt = (_on(t, y.device) for t in _NF4_TABLES[inclusive])
    cell = _nf4_cell(y).reshape(-1)
    flat, bound = y.reshape(-1), nxt.index_select(0, cell)
    above = flat >= bound if inclusive else flat > bound
    return base.index_select(0, cell).add_(above.view(torch.uint8)).view(y.shape)


def _codes_torch(
    xb: torch.Tensor,
    scale: torch.Tensor,
    bits: int,
    mode: str,
    stochastic: bool,
    generator: torch.Generator | None,
    as_float: bool = False,
) -> torch.Tensor:
    """uint8 codes ``(num_blocks, block)`` of the fp32 blocks ``xb`` at their ``scale`` (formulas:
    :func:`quantize_torch`); ``as_float``: the uniform codes as the float32 integers they are computed as
    (what :func:`_values_torch` reads without a conversion)."""
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    # y = x / s unclamped: a y past [-1, 1] (a clip's, or a non-finite block's) gets the code its clamp
    # would get, as the codes are clamped instead (uniform: the rounding is monotone in y; NF4: the end cells)
    y = xb / safe[:, None]
    if mode == "nf4":
        levels, gaps, _ = _nf4_code_book(y.device)
        if stochastic:
            lo = _nf4_count(y, inclusive=True).clamp_(max=14)  # level[lo] <= y < level[lo + 1]
            at = lo.reshape(-1).long()
            lv = levels.index_select(0, at).view(y.shape)
            p = (y - lv).div_(gaps.index_select(0, at).view(y.shape))
            return lo.add_((_rand_like(y, generator) < p).view(torch.uint8))
        return _nf4_count(y, inclusive=False)  # the midpoints below y: ties go to the lower level
    top = float((1 << bits) - 1)
    t = y.add_(1.0).mul_(top / 2)  # == (y + 1) / 2 * top: the halving is exact, one rounding either way
    t.add_(_rand_like(t, generator) if stochastic else 0.5)
    t = t.floor_().clamp_(0.0, top)
    return t if as_float else t.to(torch.uint8)


def _values_torch(codes: torch.Tensor, scale: torch.Tensor, bits: int, mode: str) -> torch.Tensor:
    """fp32 ``(num_blocks, block)`` values of uint8 codes at their block ``scale`` (formulas:
    :func:`dequantize_torch`); float32 uniform codes are read in place."""
    if mode == "nf4":
        y = _nf4_code_book(codes.device)[0].index_select(0, codes.reshape(-1).long()).view(codes.shape)
    else:
        top = float((1 << bits) - 1)
        y = codes.float().div_(top / 2).sub_(1.0)  # == code / L * 2 - 1: doubling commutes with rounding
    return y.mul_(scale[:, None])


def _block_scale(xb: torch.Tensor, bits: int, mode: str, check_finite: bool) -> torch.Tensor:
    scale = xb.abs().amax(dim=1)  # NaN/inf propagate into the scale
    if check_finite:
        _check_finite_scale(scale)
    return aciq_alpha(xb, bits) if mode == "aciq" else scale


def quantize_torch(
    x: torch.Tensor,
    bits: int,
    *,
    mode: str = "uniform",
    block: int | None = None,
    stochastic: bool = True,
    generator: torch.Generator | None = None,
    check_finite: bool = True,
) -> QuantizedTensor:
    """The pure-torch quantizer (any device); :func:`quantize` without the Triton dispatch.

    Exact formulas (float32), per block with scale ``s`` (0 where the block is all zero):

    * uniform / aciq: ``y = clamp(x / s, -1, 1)``, ``t = (y + 1) / 2 * L`` with ``L = 2^b - 1``,
      code ``= min(floor(t + u), L)`` with ``u ~ U[0, 1)`` (stochastic) or ``u = 0.5`` (deterministic).
    * nf4: ``y`` as above; deterministic code ``=`` the number of level midpoints strictly below ``y``
      (ties go to the lower level); stochastic: ``lo`` with ``level[lo] <= y < level[lo + 1]`` (``lo <= 14``),
      ``p = (y - level[lo]) / (level[lo + 1] - level[lo])``, code ``= lo + (u < p)``.
    """
    _check_float(x)
    _check_bits_mode(bits, mode)
    block = _check_block(block, bits)
    xb = _to_blocks(x, block)  # (nb, block) float32
    scale = _block_scale(xb, bits, mode, check_finite)
    codes = _codes_torch(xb, scale, bits, mode, stochastic, generator)
    return QuantizedTensor(
        data=pack_bits(codes, bits),
        scale=scale.contiguous(),
        shape=x.shape,
        dtype=x.dtype,
        bits=bits,
        mode=mode,
        block=block,
        numel=x.numel(),
    )


def dequantize_torch(q: QuantizedTensor, out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """The pure-torch dequantizer: ``(code / L * 2 - 1) * s`` (uniform/aciq) or ``level[code] * s`` (nf4)."""
    n_padded = q.scale.numel() * q.block
    codes = unpack_bits(q.data, q.bits, n_padded).view(-1, q.block)
    out = _values_torch(codes, q.scale, q.bits, q.mode).reshape(-1)[: q.numel]
    return out.reshape(q.shape).to(out_dtype or q.dtype)


def roundtrip_torch(
    x: torch.Tensor,
    bits: int,
    *,
    mode: str = "uniform",
    block: int | None = None,
    stochastic: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``dequantize_torch(quantize_torch(x, ...), torch.float32)`` without packing the codes: what a
    ``bits``-wide channel delivers, value for value (finite ``x``; no check)."""
    _check_float(x)
    _check_bits_mode(bits, mode)
    block = _check_block(block, bits)
    xb = _to_blocks(x, block)
    scale = _block_scale(xb, bits, mode, False)
    codes = _codes_torch(xb, scale, bits, mode, stochastic, generator, as_float=True)
    out = _values_torch(codes, scale, bits, mode)
    return out.reshape(-1)[: x.numel()].reshape(x.shape)


# ------------------------------------------------------------------------------------------- dispatch
#: Dtypes the Triton kernels read and write directly (others go through float32).
_KERNEL_DTYPES: tuple[torch.dtype, ...] = (torch.float32, torch.bfloat16, torch.float16)


def _kernels() -> ModuleType | None:
    """The Triton kernels module when it is importable and usable here, else None."""
    try:
        from client.compression import kernels
    except ImportError:
        return None
    probe = getattr(kernels, "available", None)
    return kernels if probe is not None and probe() else None


def _seed_from(generator: torch.Generator | None) -> int | torch.Tensor:
    """A Philox key for the Triton quantizer drawn from ``generator``: an int from a CPU generator (or
    torch's default one), a one-element device tensor from a CUDA generator, which the kernel reads itself,
    so a stochastic quantize does not wait for the device to hand its key to the host."""
    device = generator.device if generator is not None else torch.device("cpu")
    key = torch.randint(0, 2**31 - 1, (1,), generator=generator, device=device)
    return key if key.is_cuda else int(key.item())


def quantize(
    x: torch.Tensor,
    bits: int,
    *,
    mode: str = "uniform",
    block: int | None = None,
    stochastic: bool = True,
    generator: torch.Generator | None = None,
    check_finite: bool = True,
) -> QuantizedTensor:
    """Block-quantize ``x`` (any shape, float dtype, CPU or CUDA) to ``bits`` per value.

    :param bits: 2, 3, 4 or 8 (see the module docstring for 16 / 32: :func:`compress_state`).
    :param mode: ``"uniform"`` | ``"nf4"`` (4 bits) | ``"aciq"`` (2-4 bits).
    :param block: values per float32 scale, a positive multiple of 8 (default :func:`default_block`).
    :param stochastic: unbiased stochastic rounding (True) or round-to-nearest (False).
    :param generator: randomness for stochastic rounding (on CUDA the Triton path draws one seed from it).
    :raises TypeError: ``x`` is not a floating-point tensor.
    :param check_finite: reject NaN/inf in ``x`` (a host sync on CUDA: one look at the block scales).
        ``False`` is for callers whose input is finite by construction, such as the optimizer's own states
        (a non-finite gradient skips the step before any state is touched): a setting change converts ~150
        states, and one sync each was a tenth of its host time on an H200 (BENCHMARKS.md, issue 12 session 7).
    :raises ValueError: bad ``bits`` / ``mode`` / ``block``, or ``x`` holds NaN/inf (the caller decides).

    CUDA tensors go through the Triton kernels when they are available; everything else through
    :func:`quantize_torch`.
    """
    _check_float(x)
    _check_bits_mode(bits, mode)
    block = _check_block(block, bits)
    if x.is_cuda:
        kernels = _kernels()
        if kernels is not None:
            seed = _seed_from(generator) if stochastic else 0
            xk = x if x.dtype in _KERNEL_DTYPES else x.float()  # the kernels read fp32 / bf16 / fp16
            data, scale = kernels.quantize(xk, bits, mode, block, stochastic, seed)
            if check_finite:
                _check_finite_scale(scale)
            return QuantizedTensor(data, scale, x.shape, x.dtype, bits, mode, block, x.numel())
    return quantize_torch(
        x, bits, mode=mode, block=block, stochastic=stochastic, generator=generator, check_finite=check_finite
    )


def quantize_many(
    xs: Sequence[torch.Tensor],
    bits: int,
    *,
    mode: str = "uniform",
    block: int | None = None,
    stochastic: bool = True,
    generator: torch.Generator | None = None,
    check_finite: bool = True,
) -> list[QuantizedTensor]:
    """:func:`quantize` of several tensors of one shape, dtype and device in one call where it can.

    The tensors are stacked, each zero-padded to whole blocks as :func:`quantize` pads a tensor, quantized
    together and cut at the tensor boundaries: every block is a block of one tensor, so each part equals
    ``quantize(x)`` bit for bit with ``stochastic=False``, and with stochastic rounding it is the same
    distribution (the uniforms come from one draw for the stack instead of one per tensor). The parts'
    ``data`` and ``scale`` are views of the stack's (one allocation; a state dict copies them). One tensor,
    or tensors that differ in shape, dtype or device, are quantized one by one. One call instead of
    ``len(xs)`` is what a setting change saves: the torch path's ops of a call, or on CUDA a random seed
    drawn to the host and a launch. Arguments as :func:`quantize`.
    """
    xs = list(xs)
    if not xs:
        return []
    _check_bits_mode(bits, mode)
    blk = _check_block(block, bits)
    x0 = xs[0]
    same = all(x.shape == x0.shape and x.dtype == x0.dtype and x.device == x0.device for x in xs)
    kw: dict[str, Any] = dict(
        mode=mode, block=blk, stochastic=stochastic, generator=generator, check_finite=check_finite
    )
    if len(xs) == 1 or not same or x0.numel() == 0:
        return [quantize(x, bits, **kw) for x in xs]
    n = x0.numel()
    nb = -(-n // blk)  # blocks of one tensor, its last one zero-padded as quantize pads it
    nbytes = nb * blk * bits // 8
    stack = torch.stack([x.detach().reshape(-1) for x in xs])
    if nb * blk != n:
        stack = torch.nn.functional.pad(stack, (0, nb * blk - n))
    q = quantize(stack, bits, **kw)
    return [
        QuantizedTensor(
            q.data[j * nbytes : (j + 1) * nbytes],
            q.scale[j * nb : (j + 1) * nb],
            x0.shape,
            x0.dtype,
            bits,
            mode,
            blk,
            n,
        )
        for j in range(len(xs))
    ]


def dequantize(q: QuantizedTensor, out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Reconstruct a :class:`QuantizedTensor` in its shape and ``out_dtype`` (default its original dtype)."""
    dtype = out_dtype or q.dtype
    if q.data.is_cuda:
        kernels = _kernels()
        if kernels is not None:
            kdtype = dtype if dtype in _KERNEL_DTYPES else torch.float32
            out = kernels.dequantize(q.data, q.scale, q.bits, q.mode, q.block, q.numel, kdtype)
            return out.reshape(-1)[: q.numel].reshape(q.shape).to(dtype)
    return dequantize_torch(q, dtype)


def whole_blocks(numel: int, bits: int, block: int | None = None) -> bool:
    """Does a tensor of ``numel`` values fill whole blocks at ``bits`` (no padding)? Such tensors can be
    concatenated and quantized together by :func:`quantize_cat`, with every block a block of one tensor."""
    return numel > 0 and numel % _check_block(block, bits) == 0


def quantize_cat(
    flat: torch.Tensor,
    shapes: Sequence[torch.Size],
    bits: int,
    *,
    mode: str = "uniform",
    block: int | None = None,
    stochastic: bool = True,
    generator: torch.Generator | None = None,
) -> list[QuantizedTensor]:
    """:func:`quantize` of several tensors of any shapes laid end to end in the 1-D float32 ``flat``, in one
    call, cut at the tensor boundaries into one :class:`QuantizedTensor` per shape of ``shapes``.

    Each tensor must fill whole blocks (:func:`whole_blocks`): then every block is a block of one tensor and
    each part equals ``quantize(part)`` bit for bit with ``stochastic=False``, in distribution with stochastic
    rounding (one draw for all). The parts' ``data`` and ``scale`` are views of one allocation, as
    :func:`quantize_many`'s. Taken as finite (no check: the optimizer's states). :func:`dequantize_cat` is
    the inverse."""
    blk = _check_block(block, bits)
    numels = [math.prod(s) for s in shapes]
    if not all(whole_blocks(n, bits, blk) for n in numels) or sum(numels) != flat.numel():
        raise ValueError(f"quantize_cat needs tensors of whole {blk}-value blocks filling flat, got {numels}")
    q = quantize(
        flat, bits, mode=mode, block=blk, stochastic=stochastic, generator=generator, check_finite=False
    )
    out, at = [], 0
    for shape, n in zip(shapes, numels, strict=True):
        out.append(
            QuantizedTensor(
                q.data[at * bits // 8 : (at + n) * bits // 8],
                q.scale[at // blk : (at + n) // blk],
                torch.Size(shape),
                flat.dtype,
                bits,
                mode,
                blk,
                n,
            )
        )
        at += n
    return out


def dequantize_cat(qs: Sequence[QuantizedTensor]) -> torch.Tensor:
    """The float32 values of whole-block :class:`QuantizedTensor` parts of one code (``bits``, ``mode``,
    ``block``) laid end to end in one 1-D tensor: one dequantization for all, each value as
    :func:`dequantize` gives it."""
    q0 = qs[0]
    if any((q.bits, q.mode, q.block) != (q0.bits, q0.mode, q0.block) for q in qs):
        raise ValueError("dequantize_cat needs parts of one code (bits, mode, block)")
    if not all(whole_blocks(q.numel, q.bits, q.block) for q in qs):
        raise ValueError(f"dequantize_cat needs parts of whole {q0.block}-value blocks")
    data = torch.cat([q.data for q in qs]) if len(qs) > 1 else q0.data
    scale = torch.cat([q.scale for q in qs]) if len(qs) > 1 else q0.scale
    n = scale.numel() * q0.block
    whole = QuantizedTensor(data, scale, torch.Size((n,)), torch.float32, q0.bits, q0.mode, q0.block, n)
    return dequantize(whole, torch.float32)


# ------------------------------------------------------------------------------------- any state width
def default_state_mode(bits: int) -> str:
    """The quantizer mode :func:`compress_state` (and ``MangoAdamW(quant_mode=None)``, on either path) uses at
    ``bits`` when none is given: the uniform block code at every width. NF4 was the default at 4 bits until
    session 30, when on the GPU the uniform code trained as low and stepped about a fifth faster
    (BENCHMARKS.md, session 30); ``"nf4"`` stays a choice."""
    return "uniform"


def compress_state(
    x: torch.Tensor,
    bits: int,
    *,
    mode: str | None = None,
    block: int | None = None,
    stochastic: bool = True,
    generator: torch.Generator | None = None,
    check_finite: bool = True,
) -> StateTensor:
    """Store ``x`` at any state width, so callers treat 2..32 bits alike (``.nbytes``, ``.dequantize()``).

    :param bits: 2, 3, 4, 8 (block-quantized, see :func:`quantize`), 16 (bf16 copy), 32 (identity copy in
        ``x``'s dtype). Every width rejects NaN/inf with ``ValueError``.
    :param mode: quantizer mode at 2-8 bits; default ``"nf4"`` at 4 bits and ``"uniform"`` otherwise
        (ignored at 16 / 32 bits).
    :param check_finite: reject NaN/inf (see :func:`quantize`; ``False`` skips the check and its host sync).
    """
    if bits not in STATE_BITS:
        raise ValueError(f"bits={bits} is not a state width; choose one of {STATE_BITS}")
    _check_float(x)
    if bits in (16, 32):
        if check_finite and not bool(torch.isfinite(x).all()):
            raise ValueError("x contains non-finite values (NaN or inf); skip or sanitize the tensor first")
        if bits == 32:
            return DenseState(x.detach().clone(), x.dtype, 32)
        return DenseState(x.detach().to(torch.bfloat16, copy=True), x.dtype, 16)
    return quantize(
        x, bits, mode=mode or default_state_mode(bits), block=block, stochastic=stochastic,
        generator=generator, check_finite=check_finite,
    )  # fmt: skip


def decompress_state(state: StateTensor, out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Inverse of :func:`compress_state` (a new tensor in ``out_dtype``, default the original dtype)."""
    if isinstance(state, DenseState):
        return state.data.to(out_dtype or state.dtype, copy=True)
    return dequantize(state, out_dtype)
