"""Triton kernels for block-wise quantize / dequantize / pack (CUDA, or ``TRITON_INTERPRET=1`` on CPU).

The torch path (:mod:`client.compression.quant`) calls :func:`quantize` and :func:`dequantize` for CUDA
tensors once :func:`available` says yes; the semantics (block layout, codes, ACIQ clip, bit packing) are the
spec in ``docs/architecture.md`` and are identical to :func:`~client.compression.quant.quantize_torch` up to
float rounding ties (deterministic) and in distribution (stochastic). Importing this package never needs
triton: the kernels module is imported on first use.

Example::

    data, scale = kernels.quantize(x, 4, "nf4", 64, stochastic=True, seed=1234)
    y = kernels.dequantize(data, scale, 4, "nf4", 64, x.numel(), torch.bfloat16)
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
from types import ModuleType

import torch

from client.compression.codes import NF4_LEVELS, QUANT_BITS, default_block, nf4_search_table
from client.compression.errors import MangoError

__all__ = ["KernelError", "available", "dequantize", "quantize"]

logger = logging.getLogger(__name__)

#: Modes and the widths each takes (mirrors ``client.compression.quant.QUANT_MODES``; a test checks it).
MODE_BITS: dict[str, tuple[int, ...]] = {"uniform": (2, 3, 4, 8), "nf4": (4,), "aciq": (2, 3, 4)}
#: Input dtypes the quantize kernel reads (computed in float32) and output dtypes dequantize writes.
FLOAT_DTYPES: tuple[torch.dtype, ...] = (torch.float32, torch.bfloat16, torch.float16)


class KernelError(MangoError):
    """The Triton path cannot run here (triton missing, or a CPU tensor without ``TRITON_INTERPRET=1``)."""


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


@functools.cache
def available() -> bool:
    """Whether the kernels can run here: triton imports, and CUDA is present or ``TRITON_INTERPRET=1``.

    Probed once per process (``available.cache_clear()`` re-probes). ``TRITON_INTERPRET`` must be set before
    triton is first imported for the interpreter to take over.
    """
    if importlib.util.find_spec("triton") is None:
        return False
    try:
        import triton  # noqa: F401
    except Exception as exc:  # a broken install must not take the torch path down with it
        logger.warning("triton is installed but failed to import (%s); using the torch path", exc)
        return False
    return torch.cuda.is_available() or _interpreting()


@functools.cache
def _module() -> ModuleType:
    if not available():
        raise KernelError(
            "the Triton kernels are unavailable here: they need triton plus a CUDA device, or "
            "TRITON_INTERPRET=1 (set before triton is imported) to run on CPU; use the torch path instead"
        )
    from client.compression.kernels import triton_quant

    return triton_quant


def _check_device(t: torch.Tensor, name: str) -> None:
    if not t.is_cuda and not _interpreting():
        raise KernelError(
            f"{name} is on {t.device}; the compiled kernels need a CUDA tensor (TRITON_INTERPRET=1 runs them "
            "on CPU)"
        )


def _check_bits_mode_block(bits: int, mode: str, block: int | None) -> int:
    if mode not in MODE_BITS:
        raise ValueError(f"mode={mode!r} is unknown; choose one of {list(MODE_BITS)}")
    if bits not in QUANT_BITS or bits not in MODE_BITS[mode]:
        raise ValueError(f"bits={bits} is not supported by mode={mode!r}; it takes bits in {MODE_BITS[mode]}")
    if block is None:
        return default_block(bits)
    if isinstance(block, bool) or not isinstance(block, int) or block <= 0 or block % 8:
        raise ValueError(f"block={block!r} must be a positive multiple of 8 (e.g. {default_block(bits)})")
    return block


def _pow2_ceil(n: int) -> int:
    return 1 << (n - 1).bit_length()


def _rows(tile: int, block_p2: int) -> int:
    """Blocks per program: the largest power of two with ``rows * block_p2 <= tile`` (at least 1)."""
    return 1 << max(tile // block_p2, 1).bit_length() - 1


_TABLES: dict[torch.device, torch.Tensor] = {}


def _nf4_table(device: torch.device) -> torch.Tensor:
    """The kernels' NF4 table, 192 float32 on ``device``.

    ``[0:16]`` levels; ``[16:31]`` midpoints, computed exactly as the torch path does; ``[33:48]`` gaps
    (``[32 + i]`` = level i - level i-1); from ``[64]`` the fused step's search tables
    (:func:`~client.compression.codes.nf4_search_table`); the rest is zero.
    """
    if device not in _TABLES:
        levels = torch.tensor(NF4_LEVELS, dtype=torch.float32)
        search = nf4_search_table()
        tab = torch.zeros(192, dtype=torch.float32)
        tab[:16] = levels
        tab[16:31] = (levels[:-1] + levels[1:]) / 2
        tab[32] = levels[0]
        tab[33:48] = levels[1:] - levels[:-1]  # gaps
        tab[64 : 64 + search.numel()] = search
        _TABLES[device] = tab.to(device)
    return _TABLES[device]


def _seed_tensor(seed: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``seed`` as the int64 one-element tensor on ``device`` that :func:`quantize`'s kernel reads."""
    if seed.numel() != 1 or seed.dtype.is_floating_point or seed.dtype.is_complex or seed.dtype == torch.bool:
        raise ValueError(
            f"a tensor seed must hold one integer, got dtype {seed.dtype} and shape {tuple(seed.shape)}; "
            "pass torch.randint(0, 2**31 - 1, (1,), device=x.device) or an int"
        )
    return seed.reshape(1).to(device=device, dtype=torch.int64)


def quantize(
    x: torch.Tensor,
    bits: int,
    mode: str = "uniform",
    block: int | None = None,
    stochastic: bool = True,
    seed: int | torch.Tensor | None = None,
    *,
    tile: int | None = None,
    num_warps: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Block-quantize ``x`` in one fused pass: per-block scale, codes, bit packing.

    :param x: float32 / bf16 / fp16 tensor of any shape (flattened; a non-contiguous one is copied first).
    :param bits: 2, 3, 4 or 8 (``"nf4"`` only 4, ``"aciq"`` 2-4).
    :param mode: ``"uniform"`` (scale = block absmax), ``"nf4"`` or ``"aciq"`` (scale = per-block clip).
    :param block: values per scale, a positive multiple of 8 (default 256 at 8 bits, 64 below).
    :param stochastic: unbiased stochastic rounding from Philox keyed by ``seed`` (the element index is the
        counter), or round-to-nearest.
    :param seed: Philox key; the same seed gives the same codes. ``None`` draws one from torch's default
        CPU generator (reproducible under ``torch.manual_seed``). Give each call its own seed: reusing one
        correlates the rounding errors across calls. A one-element integer tensor on ``x``'s device holding a
        key in ``[0, 2^31)`` is read by the kernel itself (the same codes as that int): a seed drawn from a
        CUDA generator then never travels to the host, so the call does not wait for the device.
    :param tile: values per program (default ``QUANT_TILE`` = 4096, 2048 at 3 bits); see
        :mod:`~client.compression.kernels.triton_quant`.
    :param num_warps: warps per program (default ``QUANT_WARPS`` = 4).
    :return: ``(data, scale)``: uint8 ``n_blocks * block * bits / 8`` packed codes and float32 ``n_blocks``
        scales, with ``n_blocks = max(ceil(numel / block), 1)``, on ``x``'s device. The kernel reads
        ``numel * itemsize`` bytes and writes ``data`` and ``scale`` once.
    :raises ValueError: bad ``bits`` / ``mode`` / ``block``.
    :raises TypeError: ``x`` is not float32 / bf16 / fp16.
    :raises KernelError: the kernels cannot run here (see :func:`available`).
    """
    block = _check_bits_mode_block(bits, mode, block)
    if not isinstance(x, torch.Tensor) or x.dtype not in FLOAT_DTYPES:
        got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
        raise TypeError(f"x must be a float32, bfloat16 or float16 tensor, got {got}; cast it with .float()")
    tq = _module()
    _check_device(x, "x")
    numel = x.numel()
    flat = x.reshape(-1) if numel else x.new_zeros(1)  # a real pointer even for an empty tensor
    n_blocks = max(-(-numel // block), 1)
    n_full = numel // block
    data = torch.empty(n_blocks * block * bits // 8, dtype=torch.uint8, device=x.device)
    scale = torch.empty(n_blocks, dtype=torch.float32, device=x.device)
    key: int | torch.Tensor
    if isinstance(seed, torch.Tensor):
        key = _seed_tensor(seed, x.device)
    else:
        if stochastic and seed is None:
            seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
        key = int(seed or 0) & 0x7FFFFFFF
    tab = _nf4_table(x.device)
    block_p2 = _pow2_ceil(block)
    rows = _rows(tile or (tq.QUANT_TILE_3BIT if bits == 3 else tq.QUANT_TILE), block_p2)
    common = dict(
        BITS=bits,
        MODE=tq.MODE_IDS[mode],
        BLOCK=block,
        BLOCK_P2=block_p2,
        STOCHASTIC=bool(stochastic),
        MAX_ITERS=tq.ACIQ_MAX_ITERS,
        RAND16=tq.RAND16,
        SEED_PTR=isinstance(key, torch.Tensor),
        num_warps=num_warps or tq.QUANT_WARPS,
        enable_fp_fusion=False,  # round each step as torch does, so codes match at ties too
    )
    args = (flat, data, scale, tab, numel)
    if n_full:
        grid = (-(-n_full // rows),)
        tq.quantize_kernel[grid](*args, n_full, 0, key, ROWS=rows, TAIL=False, **common)
    if n_blocks > n_full:  # the partial (or, for an empty x, all-padding) last block
        tq.quantize_kernel[(1,)](*args, 1, n_full, key, ROWS=1, TAIL=True, **common)
    return data, scale


def dequantize(
    data: torch.Tensor,
    scale: torch.Tensor,
    bits: int,
    mode: str,
    block: int | None,
    numel: int,
    out_dtype: torch.dtype = torch.float32,
    *,
    tile: int | None = None,
    num_warps: int | None = None,
) -> torch.Tensor:
    """Unpack and rescale the first ``numel`` values of a :func:`quantize` result.

    :param data: uint8 packed codes (``len(scale) * block * bits / 8`` bytes at least).
    :param scale: float32, one per block.
    :param out_dtype: float32, bfloat16 or float16.
    :param tile: values per program (default ``DEQUANT_TILE`` = 8192).
    :param num_warps: warps per program (default ``DEQUANT_WARPS`` = 4).
    :return: a new 1-D tensor of ``numel`` values in ``out_dtype`` on ``data``'s device. The kernel reads
        ``numel * bits / 8`` code bytes plus the scales and writes ``numel * itemsize(out_dtype)`` bytes.
    :raises ValueError: bad widths, or ``data`` / ``scale`` too short for ``numel``.
    :raises KernelError: the kernels cannot run here (see :func:`available`).
    """
    block = _check_bits_mode_block(bits, mode, block)
    if out_dtype not in FLOAT_DTYPES:
        raise TypeError(f"out_dtype must be one of {FLOAT_DTYPES}, got {out_dtype}")
    if data.dtype != torch.uint8 or scale.dtype != torch.float32:
        raise TypeError(f"data must be uint8 and scale float32, got {data.dtype} and {scale.dtype}")
    if scale.device != data.device:
        raise ValueError(f"data ({data.device}) and scale ({scale.device}) must be on one device")
    n_blocks = -(-numel // block)
    if scale.numel() < n_blocks or data.numel() < n_blocks * block * bits // 8:
        raise ValueError(
            f"numel={numel} at block={block}, bits={bits} needs {n_blocks} scales and "
            f"{n_blocks * block * bits // 8} code bytes; got {scale.numel()} and {data.numel()}"
        )
    tq = _module()
    _check_device(data, "data")
    out = torch.empty(numel, dtype=out_dtype, device=data.device)
    if numel == 0:
        return out
    tab = _nf4_table(data.device)
    block_p2 = _pow2_ceil(block)
    rows = _rows(tile or tq.DEQUANT_TILE, block_p2)
    n_full = numel // block
    common = dict(
        BITS=bits,
        MODE=tq.MODE_IDS[mode],
        BLOCK=block,
        BLOCK_P2=block_p2,
        num_warps=num_warps or tq.DEQUANT_WARPS,
    )
    args = (data.reshape(-1), scale.reshape(-1), tab, out, numel)
    if n_full:
        grid = (-(-n_full // rows),)
        tq.dequantize_kernel[grid](*args, n_full, 0, ROWS=rows, TAIL=False, **common)
    if n_blocks > n_full:
        tq.dequantize_kernel[(1,)](*args, 1, n_full, ROWS=1, TAIL=True, **common)
    return out
