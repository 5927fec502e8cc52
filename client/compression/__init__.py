"""Compression core: pure operators on tensors, Triton kernels, MangoAdamW (see docs/architecture.md).

- :class:`MangoAdamW` - AdamW with compressed state (rank-r projection, b-bit storage, error feedback, the
  gamma shift), switchable between steps with :meth:`MangoAdamW.apply_setting`.
- Quantization (:mod:`.quant`): :func:`quantize` / :func:`dequantize` -> :class:`QuantizedTensor`;
  :func:`compress_state` / :func:`decompress_state` for any width 2..32.
- Low rank (:mod:`.lowrank`): :func:`power_iteration`, :func:`exact_lowrank`, :func:`tail_energy`.
- Feedback (:mod:`.feedback`): :func:`ef_compress`, :func:`shift_compress`.
- Errors (:mod:`.errors`): :class:`MangoError` and its subclass :class:`MangoNonFiniteError`.
- State bytes (:mod:`.sizes`): the byte model of a setting's state, from shapes; needs no torch.
- The hook boundary (:mod:`.interface`): :class:`CompressionStats` (``MangoAdamW.compression_stats()``) and
  :class:`CompressedOptimizer`, what :class:`client.hook.AdaptiveCompression` drives.

The names are imported on first use, so that ``client.compression.sizes`` (the policy service's shield, the
surrogate) loads without torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from client.compression.errors import MangoError, MangoNonFiniteError
    from client.compression.feedback import ef_compress, shift_compress
    from client.compression.interface import CompressedOptimizer, CompressionStats
    from client.compression.lowrank import exact_lowrank, power_iteration, tail_energy
    from client.compression.optimizer import MangoAdamW
    from client.compression.quant import (
        DenseState,
        QuantizedTensor,
        compress_state,
        decompress_state,
        dequantize,
        quantize,
    )

__all__ = [
    "CompressedOptimizer",
    "CompressionStats",
    "DenseState",
    "MangoAdamW",
    "MangoError",
    "MangoNonFiniteError",
    "QuantizedTensor",
    "compress_state",
    "decompress_state",
    "dequantize",
    "ef_compress",
    "exact_lowrank",
    "power_iteration",
    "quantize",
    "shift_compress",
    "tail_energy",
]

_WHERE = {
    "MangoError": "errors",
    "MangoNonFiniteError": "errors",
    "ef_compress": "feedback",
    "shift_compress": "feedback",
    "exact_lowrank": "lowrank",
    "power_iteration": "lowrank",
    "tail_energy": "lowrank",
    "MangoAdamW": "optimizer",
    "CompressedOptimizer": "interface",
    "CompressionStats": "interface",
    "DenseState": "quant",
    "QuantizedTensor": "quant",
    "compress_state": "quant",
    "decompress_state": "quant",
    "dequantize": "quant",
    "quantize": "quant",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"client.compression.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'client.compression' has no attribute {name!r}")
