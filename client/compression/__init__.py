"""Compression core: pure operators on tensors, Triton kernels, MangoAdamW (see docs/architecture.md).

- :class:`MangoAdamW` - AdamW with compressed state (rank-r projection, b-bit storage, error feedback, the
  gamma shift), switchable between steps with :meth:`MangoAdamW.apply_setting`.
- Quantization (:mod:`.quant`): :func:`quantize` / :func:`dequantize` -> :class:`QuantizedTensor`;
  :func:`compress_state` / :func:`decompress_state` for any width 2..32.
- Low rank (:mod:`.lowrank`): :func:`power_iteration`, :func:`exact_lowrank`, :func:`tail_energy`.
- Feedback (:mod:`.feedback`): :func:`ef_compress`, :func:`shift_compress`.
- Errors (:mod:`.errors`): :class:`MangoError` and its subclass :class:`MangoNonFiniteError`.
- The hook boundary (:mod:`.interface`): :class:`CompressionStats` (``MangoAdamW.compression_stats()``) and
  :class:`CompressedOptimizer`, what :class:`client.hook.AdaptiveCompression` drives.
"""

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
