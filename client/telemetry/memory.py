"""Memory accounting: optimizer state bytes (counted from tensors) and peak memory per interval.

Peak memory has two sources, and the label says which one a figure came from:

* ``"cuda_max_allocated"`` - ``torch.cuda.max_memory_allocated(device)`` since the last
  ``reset_peak_memory_stats`` (the tracker resets it at every interval start): tensors only, exact;
* ``"process_rss_peak"`` - on CPU, the process's peak resident set size (``VmHWM``). On Linux the tracker
  resets it at every interval start by writing ``5`` to ``/proc/self/clear_refs``; where that is refused,
  the label becomes ``"process_rss_peak_since_start"`` (a running maximum, not per interval).
"""

from __future__ import annotations

import logging
import resource
import sys
from dataclasses import dataclass
from typing import Any, Literal

import torch

__all__ = ["MemoryReading", "MemorySource", "MemoryTracker", "optimizer_state_bytes"]

logger = logging.getLogger(__name__)

MemorySource = Literal["cuda_max_allocated", "process_rss_peak", "process_rss_peak_since_start"]


@dataclass(frozen=True)
class MemoryReading:
    """Peak memory of one interval, bytes, and where the figure came from."""

    peak_bytes: int
    source: MemorySource


def optimizer_state_bytes(optimizer: Any) -> int:
    """Bytes of optimizer state: ``optimizer.state_bytes()`` when it has one (MangoAdamW), else the sum of
    ``nbytes`` of every tensor in ``optimizer.state`` (any ``torch.optim`` optimizer)."""
    fn = getattr(optimizer, "state_bytes", None)
    if callable(fn):
        return int(fn())
    total = 0
    for st in getattr(optimizer, "state", {}).values():
        for v in st.values():
            if isinstance(v, torch.Tensor):
                total += v.numel() * v.element_size()
    return total


def _read_vmhwm_bytes() -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


class MemoryTracker:
    """Per-interval peak memory of the device the model trains on.

    :param device: the training device; CUDA devices use the allocator's peak, anything else the process's
        peak RSS (see the module docstring for the labels).

    Call :meth:`reset` at the start of an interval and :meth:`read` at its end; both are cheap (no CUDA
    synchronization, one small ``/proc`` read on CPU).
    """

    def __init__(self, device: torch.device | str | None = None) -> None:
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.is_cuda = self.device.type == "cuda" and torch.cuda.is_available()
        self._rss_resettable = sys.platform.startswith("linux")

    @property
    def source(self) -> MemorySource:
        """The label that :meth:`read` will attach."""
        if self.is_cuda:
            return "cuda_max_allocated"
        return "process_rss_peak" if self._rss_resettable else "process_rss_peak_since_start"

    def reset(self) -> None:
        """Start a new peak window."""
        if self.is_cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        if self._rss_resettable:
            try:
                with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
                    f.write("5")
            except OSError as exc:
                logger.info("cannot reset peak RSS (%s): peak memory is since process start", exc)
                self._rss_resettable = False

    def read(self) -> MemoryReading:
        """Peak bytes since the last :meth:`reset`."""
        if self.is_cuda:
            return MemoryReading(int(torch.cuda.max_memory_allocated(self.device)), self.source)
        peak = _read_vmhwm_bytes()
        if peak is None:  # not Linux: ru_maxrss is KiB on Linux, bytes on macOS
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            peak = int(rss if sys.platform == "darwin" else rss * 1024)
            self._rss_resettable = False
        return MemoryReading(peak, self.source)
