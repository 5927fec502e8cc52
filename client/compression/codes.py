"""Code books and block-size defaults shared by the torch and Triton quantization paths (the block sizes are
:mod:`client.compression.sizes`', re-exported here)."""

from __future__ import annotations

from fractions import Fraction

import torch

# re-exported: the block sizes live with the byte model
from client.compression.sizes import QUANT_BITS, default_block

__all__ = [
    "NF4_CELLS",
    "NF4_LEVELS",
    "QUANT_BITS",
    "default_block",
    "nf4_cells",
    "nf4_levels",
    "nf4_search_table",
]

#: The 16 NormalFloat-4 levels of QLoRA (Dettmers et al., 2023): quantiles of N(0, 1) rescaled to [-1, 1],
#: with an exact zero. Optimal-ish for normally distributed values after absmax scaling.
NF4_LEVELS: tuple[float, ...] = (
    -1.0,
    -0.6961928009986877,
    -0.5250730514526367,
    -0.39491748809814453,
    -0.28444138169288635,
    -0.18477343022823334,
    -0.09105003625154495,
    0.0,
    0.07958029955625534,
    0.16093020141124725,
    0.24611230194568634,
    0.33791524171829224,
    0.44070982933044434,
    0.5626170039176941,
    0.7229568362236023,
    1.0,
)


def nf4_levels(device: torch.device | str = "cpu") -> torch.Tensor:
    """NF4 levels as a float32 tensor on ``device``."""
    return torch.tensor(NF4_LEVELS, dtype=torch.float32, device=device)


#: The cells of the fused step's NF4 encoders (``triton_step._nf4_cell``): ``y`` in ``[-1, 1]`` falls in cell
#: ``rne(scale * y + shift)`` (``0 ... top``; one FMA whose magic-number add rounds to the integer, half to
#: even), capped at ``top`` (``y`` past 1, or ``inf`` from a subnormal scale). The scale makes the cells
#: narrower than the closest two levels and the closest two midpoints, so a cell holds at most one of the
#: points either encoder counts, and a count of the points below ``y`` is the cell's count plus one
#: comparison (:func:`nf4_cells`). ``(scale, shift, top)``; the shift is an integer (exact beside the magic
#: number) and puts -1 in cell 0.
NF4_CELLS: tuple[float, int, int] = (11.5, 11, 22)


def _rne(q: Fraction) -> int:
    """``q`` rounded to the nearest integer, half to even (as a float's rounding does)."""
    f = q.numerator // q.denominator
    r = q - f
    return f + 1 if r > Fraction(1, 2) or (r == Fraction(1, 2) and f % 2) else f


def nf4_cells(points: list[float]) -> list[tuple[float, int]]:
    """Per cell of :data:`NF4_CELLS`, ``(next, base)``: ``base`` the points below the cell (in cells to its
    left), ``next`` the point after them (``inf`` past the last). With at most one point a cell, the points
    ``<= y`` (or ``< y``) of a ``y`` in the cell number ``base + (y >= next)`` (``y > next``): points of
    earlier cells lie below ``y``, points of later cells above it, ``next`` is the cell's own or a later one.
    Exact arithmetic (fractions), as the kernel's single rounding of ``scale * y + shift`` computes cells;
    ``ValueError`` if two points share a cell."""
    scale, shift, top = NF4_CELLS
    cell = [min(_rne(Fraction(p) * Fraction(scale) + shift), top) for p in points]
    if len(set(cell)) < len(cell) or cell != sorted(cell) or min(cell) < 0:
        raise ValueError(f"NF4 cells {NF4_CELLS} put two points in one cell: {cell}")
    out = []
    for j in range(top + 1):
        base = sum(c < j for c in cell)
        out.append((points[base] if base < len(points) else float("inf"), base))
    return out


def nf4_search_table() -> torch.Tensor:
    """The NF4 search tables of the fused step, float32 words (counts stored as int32 bits), to follow the
    kernels' 64-word table (``kernels._nf4_table``): ``[0:32]`` the pairs ``(level k, level k+1 - level k)``,
    ``k < 16`` (the top level's gap NaN: no threshold past it passes); then :func:`nf4_cells` of levels
    1-15 (stochastic rounding) and of the 15 midpoints (round to nearest), ``(next, base)`` a cell. Levels,
    gaps and midpoints are float32 values computed as the torch path computes them."""
    lv = torch.tensor(NF4_LEVELS, dtype=torch.float32)
    gaps = torch.cat([lv[1:] - lv[:-1], torch.tensor([float("nan")])])
    mids = ((lv[:-1] + lv[1:]) / 2).tolist()
    words = torch.stack([lv, gaps], dim=1).reshape(-1)
    for points in (lv[1:].tolist(), mids):
        cells = nf4_cells(points)
        nxt = torch.tensor([c[0] for c in cells], dtype=torch.float32)
        base = torch.tensor([c[1] for c in cells], dtype=torch.int32).view(torch.float32)
        words = torch.cat([words, torch.stack([nxt, base], dim=1).reshape(-1)])
    return words
