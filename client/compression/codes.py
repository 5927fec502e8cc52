"""Code books and block-size defaults shared by the torch and Triton quantization paths (the block sizes are
:mod:`client.compression.sizes`', re-exported here)."""

from __future__ import annotations

import torch

# re-exported: the block sizes live with the byte model
from client.compression.sizes import QUANT_BITS, default_block

__all__ = ["NF4_LEVELS", "QUANT_BITS", "default_block", "nf4_levels"]

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
