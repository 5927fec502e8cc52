"""Exact optimizer-state bytes of :class:`client.compression.optimizer.MangoAdamW` for a setting, from shapes.

The surrogate's memory term is not modelled: it is this formula, which reproduces what
``MangoAdamW.state_bytes()`` counts from its tensors once the optimizer has taken at least one step under
the setting (``tests/envs/test_memory.py`` checks equality on the real models for every grid setting).

Per parameter (``min_compress_numel`` and ``error_feedback`` / ``factor_second_moment`` as passed to the
optimizer):

* *exact* tensors (1-D or fewer than ``min_compress_numel`` values): two fp32 moments, 8 bytes per value;
* *matrix* tensors, canonical view ``m x n`` (``(shape[0], -1)`` transposed so ``m <= n``), effective rank
  ``r = rank if 0 < rank < m else 0`` and moment rows ``k = r or m``:

  - identity setting (``r == 0`` and 32 bits): ``m`` and ``v`` fp32, ``8 m n`` (AdamW; ``v`` factored,
    ``4 (m + n)``, only when ``factor_second_moment=True`` forces it);
  - otherwise the sum of: error buffer ``e`` (at ``bits``, if error feedback: ``k x n`` when projecting
    with ``ef_scope="subspace"``, the default, else ``m x n``), basis ``P``
    (``4 m r``), shift reference ``h`` (``k x n`` at ``bits``, if ``gamma > 0``), first moment ``m``
    (``k x n`` at ``bits``) and second moment ``v``: factored (``4 (k + n)``, default at ``bits <= 4``),
    else ``k x n`` at ``bits`` (8 bits: ``sqrt(v)`` on the block code; 16: bf16; 32: fp32).

``bits`` wide storage of ``N`` values costs :func:`client.compression.quant.expected_nbytes`: ``N bits / 8``
code bytes plus a float32 scale per block (256 values at 8 bits, 64 below), padded to whole blocks.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from client.compression.quant import expected_nbytes
from client.protocol import CompressionSetting

__all__ = ["dense_state_bytes", "mango_state_bytes", "matrix_state_bytes", "param_shapes"]


def param_shapes(model: torch.nn.Module) -> list[tuple[int, ...]]:
    """Shapes of the trainable parameters as ``MangoAdamW(model.parameters())`` sees them (tied ones once)."""
    return [tuple(p.shape) for p in model.parameters() if p.requires_grad]


def dense_state_bytes(shapes: Iterable[Sequence[int]]) -> int:
    """fp32 AdamW state: 8 bytes per trainable value (``MangoAdamW.dense_state_bytes()``)."""
    total = 0
    for s in shapes:
        n = 1
        for d in s:
            n *= int(d)
        total += 8 * n
    return total


def matrix_state_bytes(
    m: int,
    n: int,
    setting: CompressionSetting,
    *,
    error_feedback: bool = True,
    factor_second_moment: bool | None = None,
    ef_scope: str = "subspace",
) -> int:
    """State bytes of one matrix-kind parameter with canonical shape ``m x n`` (``m <= n``)."""
    if m > n:
        m, n = n, m
    bits, rank = setting.bits, setting.rank
    r = rank if 0 < rank < m else 0
    factored = bits <= 4 if factor_second_moment is None else factor_second_moment
    if r == 0 and bits == 32:  # identity: fp32 m, and v fp32 unless factoring is forced
        return 4 * m * n + (4 * (m + n) if factored else 4 * m * n)
    k = r if r > 0 else m
    total = 0
    if error_feedback:  # e lives with the moments (k x n) in subspace scope when projecting
        total += expected_nbytes((k if r > 0 and ef_scope == "subspace" else m) * n, bits)
    if r > 0:
        total += 4 * m * r
    if setting.gamma > 0:
        total += expected_nbytes(k * n, bits)
    total += expected_nbytes(k * n, bits)
    total += 4 * (k + n) if factored else expected_nbytes(k * n, bits)
    return total


def mango_state_bytes(
    shapes: Iterable[Sequence[int]],
    setting: CompressionSetting,
    *,
    min_compress_numel: int = 4096,
    error_feedback: bool = True,
    factor_second_moment: bool | None = None,
    ef_scope: str = "subspace",
) -> int:
    """``MangoAdamW.state_bytes()`` after a step under ``setting``, for parameters of ``shapes``.

    :param shapes: parameter shapes (see :func:`param_shapes`).
    :param setting: the compression setting in force.
    :param min_compress_numel: the optimizer's threshold below which tensors keep exact fp32 state.
    :param error_feedback: the optimizer's ``error_feedback`` flag.
    :param factor_second_moment: the optimizer's flag (``None``: factored at ``bits <= 4``).
    :param ef_scope: the optimizer's ``ef_scope``: ``"subspace"`` (default; with a projection ``e`` is
        ``k x n`` coefficients) or ``"full"`` (``e`` is always ``m x n``).
    """
    total = 0
    for s in shapes:
        shape = tuple(int(d) for d in s)
        numel = 1
        for d in shape:
            numel *= d
        if len(shape) < 2 or numel < min_compress_numel:
            total += 8 * numel
            continue
        rows, cols = shape[0], numel // shape[0]
        total += matrix_state_bytes(
            min(rows, cols),
            max(rows, cols),
            setting,
            error_feedback=error_feedback,
            factor_second_moment=factor_second_moment,
            ef_scope=ef_scope,
        )
    return total
