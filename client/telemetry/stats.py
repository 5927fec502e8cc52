"""Per-interval statistics of the training loop, accumulated without a device sync per step.

:class:`IntervalStats` keeps the per-step loss (and sampled gradient norms) as device scalars and turns
them into floats once, at the end of the interval: one ``torch.stack`` and one host transfer per interval
instead of one ``.item()`` per step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = ["IntervalStats", "IntervalSummary", "global_grad_norm"]


@dataclass(frozen=True)
class IntervalSummary:
    """Floats of one interval.

    :param steps: steps recorded (calls to :meth:`IntervalStats.add_loss`).
    :param loss_mean: mean of the finite losses (``nan`` when none was finite).
    :param loss_std: population standard deviation of the finite losses (0 with fewer than two).
    :param nonfinite_losses: losses that were NaN or infinite (divergence signal).
    :param grad_norm_mean: mean of the finite sampled gradient norms (``nan`` when none was sampled).
    :param grad_norm_samples: how many gradient norms were sampled.
    """

    steps: int
    loss_mean: float
    loss_std: float
    nonfinite_losses: int
    grad_norm_mean: float
    grad_norm_samples: int


def _summarize(values: list[torch.Tensor | float]) -> tuple[list[float], int]:
    """Host floats of ``values`` (one sync for all tensors): the finite ones and a non-finite count."""
    tensors = [v for v in values if isinstance(v, torch.Tensor)]
    floats = [float(v) for v in values if not isinstance(v, torch.Tensor)]
    if tensors:
        floats += torch.stack([t.reshape(()).to(torch.float64) for t in tensors]).tolist()
    finite = [x for x in floats if math.isfinite(x)]
    return finite, len(floats) - len(finite)


class IntervalStats:
    """Accumulates losses and gradient norms over one control interval.

    ``add_*`` take a 0-d tensor (kept on its device, detached) or a float; :meth:`summary` converts them in
    one transfer and :meth:`reset` starts the next interval. Memory: one scalar per step.
    """

    def __init__(self) -> None:
        self._losses: list[torch.Tensor | float] = []
        self._grad_norms: list[torch.Tensor | float] = []

    def add_loss(self, loss: torch.Tensor | float) -> None:
        if isinstance(loss, torch.Tensor):
            if loss.numel() != 1:
                raise ValueError(f"loss must be a scalar, got a tensor of shape {tuple(loss.shape)}")
            self._losses.append(loss.detach())
        else:
            self._losses.append(float(loss))

    def add_grad_norm(self, norm: torch.Tensor | float) -> None:
        self._grad_norms.append(norm.detach() if isinstance(norm, torch.Tensor) else float(norm))

    @property
    def steps(self) -> int:
        return len(self._losses)

    def summary(self) -> IntervalSummary:
        """Floats of the interval so far (synchronizes the device once)."""
        losses, bad = _summarize(self._losses)
        norms, _ = _summarize(self._grad_norms)
        if losses:
            mean = math.fsum(losses) / len(losses)
            std = math.sqrt(math.fsum((x - mean) ** 2 for x in losses) / len(losses))
        else:
            mean, std = math.nan, 0.0
        g = math.fsum(norms) / len(norms) if norms else math.nan
        return IntervalSummary(len(self._losses), mean, std, bad, g, len(norms))

    def reset(self) -> None:
        self._losses.clear()
        self._grad_norms.clear()

    def state_dict(self) -> dict[str, list[float]]:
        """The interval so far as host floats (one sync), for a checkpoint taken mid-interval.

        :meth:`summary` of the restored object equals the original's exactly (it sums with ``math.fsum``,
        which does not depend on the order, and a float32 loss survives the trip through float64).
        """
        losses = [float(x) for x in _floats(self._losses)]
        norms = [float(x) for x in _floats(self._grad_norms)]
        return {"losses": losses, "grad_norms": norms}

    def load_state_dict(self, state: dict[str, list[float]]) -> None:
        """Replace the interval so far with :meth:`state_dict` output."""
        self._losses = [float(x) for x in state["losses"]]
        self._grad_norms = [float(x) for x in state["grad_norms"]]


def _floats(values: list[torch.Tensor | float]) -> list[float]:
    """Every value as a host float, in order (NaN/inf kept): one sync for all tensors."""
    tensors = [v for v in values if isinstance(v, torch.Tensor)]
    host = iter(torch.stack([t.reshape(()).to(torch.float64) for t in tensors]).tolist() if tensors else [])
    return [next(host) if isinstance(v, torch.Tensor) else float(v) for v in values]


@torch.no_grad()
def global_grad_norm(params: Sequence[torch.Tensor]) -> torch.Tensor | None:
    """L2 norm of all gradients of ``params`` as a 0-d tensor on their device (no sync), or ``None``."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return None
    by_device: dict[torch.device, list[torch.Tensor]] = {}
    for g in grads:
        by_device.setdefault(g.device, []).append(g)
    parts = []
    for gs in by_device.values():
        norms = torch._foreach_norm(gs)  # one fused kernel per device
        parts.append(torch.linalg.vector_norm(torch.stack([n.float() for n in norms])))
    first = parts[0]
    if len(parts) == 1:
        return first
    return torch.linalg.vector_norm(torch.stack([p.to(first.device) for p in parts]))
