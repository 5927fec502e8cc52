"""Runtime faults of the compression core: one family, :class:`MangoError`.

A caller's mistake (a wrong type, an out-of-range knob) is a ``TypeError`` / ``ValueError`` that names the
argument; these classes are for faults that arise while training runs.
"""

from __future__ import annotations

__all__ = ["MangoError", "MangoNonFiniteError"]


class MangoError(RuntimeError):
    """Base class of every runtime fault raised by :mod:`client.compression`."""


class MangoNonFiniteError(MangoError, FloatingPointError):
    """A gradient held NaN or inf and the optimizer runs with ``strict=True``.

    Raised before any parameter or state is touched, so the step can be retried (e.g. with a smaller loss
    scale) or the run stopped cleanly.

    :ivar params: ``(index, shape)`` of every offending parameter (index in the order of ``param_groups``).
    :ivar step: the optimizer's step count when it happened (completed steps).
    """

    def __init__(self, params: list[tuple[int, tuple[int, ...]]], step: int) -> None:
        self.params = params
        self.step = step
        shown = ", ".join(f"#{i} {list(s)}" for i, s in params[:8])
        more = f" and {len(params) - 8} more" if len(params) > 8 else ""
        super().__init__(
            f"non-finite gradient in {len(params)} parameter(s) at step {step}: {shown}{more}; "
            "lower the learning rate / loss scale, or construct the optimizer with strict=False to skip "
            "such tensors"
        )
