"""The optimizer/hook boundary, typed: what :class:`client.hook.AdaptiveCompression` drives and reads.

- :class:`CompressionStats` - the statistics of the optimizer's last step, produced by
  ``MangoAdamW.compression_stats()``; checked and normalized once, here, so consumers read plain fields.
- :class:`SettingTarget` - what a decision is applied to: ``setting`` and ``apply_setting`` (the optimizer,
  or the DDP hook's :class:`~client.compression.comm_hook.MangoHookState`).
- :class:`CompressedOptimizer` - what the hook drives: a :class:`SettingTarget` that also reports its state
  bytes and statistics (``MangoAdamW``). Checked structurally (``isinstance`` tests the members exist), so
  wrappers and stand-ins that provide the members qualify.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable

from client.protocol import CompressionSetting

__all__ = ["CompressedOptimizer", "CompressionStats", "SettingTarget"]


def _clamp(value: float, lo: float, hi: float) -> float:
    v = float(value)
    if math.isnan(v):
        return 0.0
    return min(max(v, lo), hi)


@dataclass(frozen=True)
class CompressionStats:
    """Statistics of the optimizer's last step (telemetry for the policy).

    Values are normalized at construction: NaN becomes 0 and each value is clamped to its range, so a
    consumer never re-checks them.

    :param compression_error: ``sum ||u - C(u)||^2 / sum ||u||^2`` over the compressed tensors (``u`` the
        compressor's input); 0 when nothing is compressed; >= 0.
    :param spectral_tail: share of the matrix tensors' gradient energy outside the rank-r bases, in [0, 1]
        (0 at rank 0).
    :param grad_kurtosis: excess kurtosis of sampled gradient entries (may be negative).
    :param grad_norm: global L2 norm of the finite gradients, >= 0.
    :param skipped_steps: cumulative tensor updates skipped for non-finite gradients, >= 0 (the fused rank-0
        step with a full ``v`` counts the tiles it skipped: ``fused.SKIP_GRAIN``).
    """

    compression_error: float = 0.0
    spectral_tail: float = 0.0
    grad_kurtosis: float = 0.0
    grad_norm: float = 0.0
    skipped_steps: int = 0

    #: The bound of the unbounded fields (the contract wants finite floats).
    LIMIT = 1e30

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "compression_error", _clamp(self.compression_error, 0.0, self.LIMIT))
        set_(self, "spectral_tail", _clamp(self.spectral_tail, 0.0, 1.0))
        set_(self, "grad_kurtosis", _clamp(self.grad_kurtosis, -self.LIMIT, self.LIMIT))
        set_(self, "grad_norm", _clamp(self.grad_norm, 0.0, self.LIMIT))
        set_(self, "skipped_steps", max(int(self.skipped_steps), 0))

    def as_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict."""
        return asdict(self)


@runtime_checkable
class SettingTarget(Protocol):
    """Something a decision is applied to."""

    @property
    def setting(self) -> CompressionSetting:
        """The setting in force."""
        ...

    def apply_setting(self, setting: CompressionSetting) -> None:
        """Switch to ``setting`` between two steps (converting the state, not resetting it)."""
        ...


@runtime_checkable
class CompressedOptimizer(SettingTarget, Protocol):
    """What :class:`client.hook.AdaptiveCompression` drives (``MangoAdamW``)."""

    param_groups: list[dict[str, Any]]

    def state_bytes(self) -> int:
        """Bytes of every state tensor now (optimizer + compression)."""
        ...

    def dense_state_bytes(self) -> int:
        """What plain fp32 AdamW would hold for the same parameters."""
        ...

    def compression_stats(self) -> CompressionStats:
        """The last step's statistics."""
        ...

    def last_grad_norm(self) -> Any:
        """The last step's global gradient norm as a 0-d device tensor (no sync), or ``None`` where the
        step did not compute it (the hook then takes one pass over the gradients itself)."""
        ...
