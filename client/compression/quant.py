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
    "dequantize_torch",
    "expected_nbytes",
    "pack_bits",
    "quantize",
    "quantize_many",
    "quantize_torch",
    "unpack_bits",
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
    b = flat[:need].to(torch.int32).view(-1, nbytes)  # (groups, bytes)
    if nbytes == 1:
        word = b[:, 0]
    else:
        byte_shifts = torch.arange(nbytes, device=b.device, dtype=torch.int32) * 8
        word = (b << byte_shifts).sum(dim=1, dtype=torch.int32)
    shifts = torch.arange(per, device=b.device, dtype=torch.int32) * bits
    codes = (word[:, None] >> shifts) & ((1 << bits) - 1)
    return codes.reshape(-1)[:n].to(torch.uint8)


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
    scale = xb.abs().amax(dim=1)  # NaN/inf propagate into the scale
    if check_finite:
        _check_finite_scale(scale)
    if mode == "aciq":
        scale = aciq_alpha(xb, bits)
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    y = torch.clamp(xb / safe[:, None], -1.0, 1.0)
    if mode == "nf4":
        levels = nf4_levels(x.device)
        if stochastic:
            lo = (torch.searchsorted(levels, y.contiguous(), right=True) - 1).clamp_(0, 14)
            lv = levels[lo]
            p = (y - lv) / (levels[lo + 1] - lv)
            codes = lo + (_rand_like(y, generator) < p).to(lo.dtype)
        else:
            mids = (levels[:-1] + levels[1:]) / 2
            codes = torch.bucketize(y, mids, right=False)  # count of mids < y
    else:
        top = float((1 << bits) - 1)
        t = (y + 1.0) / 2.0 * top
        u = _rand_like(t, generator) if stochastic else 0.5
        codes = torch.floor(t + u).clamp_(max=top)
    return QuantizedTensor(
        data=pack_bits(codes.to(torch.uint8), bits),
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
    if q.mode == "nf4":
        y = nf4_levels(q.data.device)[codes.long()]
    else:
        top = float((1 << q.bits) - 1)
        y = codes.float() / top * 2.0 - 1.0
    out = (y * q.scale[:, None]).reshape(-1)[: q.numel]
    return out.reshape(q.shape).to(out_dtype or q.dtype)


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


def _seed_from(generator: torch.Generator | None) -> int:
    device = generator.device if generator is not None else torch.device("cpu")
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=device).item())


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


# ------------------------------------------------------------------------------------- any state width
def default_state_mode(bits: int) -> str:
    """The quantizer mode :func:`compress_state` uses at ``bits`` when none is given: NF4 at 4 bits."""
    return "nf4" if bits == 4 else "uniform"


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
