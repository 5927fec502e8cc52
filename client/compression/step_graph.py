"""The steady fused step replayed from a CUDA graph: the host's share of a step down to one launch.

A fused step (:mod:`~client.compression.fused`) is a handful of Triton launches and torch ops: 7 launches
and ~15 ops at a projected setting, each with the Python binder's and the driver's host time, about a
millisecond of host work against 0.8-1.4 ms of device work for a 124M-parameter model. On a slower host the
device then waits for the host (BENCHMARKS.md, issue 12, session 43). Recorded once as a CUDA graph, the
same launches cost one ``cudaGraphLaunch``.

What makes a step replayable: :func:`~client.compression.fused.launch` reads everything that changes from
step to step from device buffers of the plan (the step scalars and the rounding key, which
:func:`~client.compression.fused.prepare` writes before each step; the gradient addresses, refilled in place
when they move; the norms, zeroed by the step itself), so its launches, their arguments and its torch ops
are the same at every step. What still changes the launches is in :func:`graph_key` (a gradient that is no
longer 16-byte aligned, another ``eps`` or ``betas``, another rounding choice, a module knob of
:mod:`~client.compression.fused`): a step under another key runs eagerly and the graph is recorded again.

When it replays: on a GPU, under ``opt.graph_step`` (default True) and ``fused.STEP_GRAPH``, at a step
without a basis refresh (a refresh step reads the rotated states from that step's buffers: eager, its own
tail from :class:`~client.compression.refresh.RefreshGraph`). The first steady step of a key runs eagerly
(it compiles the kernels); the second is recorded (not run) and replayed; a failed capture warns once and
leaves the plan eager. After :data:`MAX_CAPTURES` captures a plan stays eager (a key that keeps changing
would record every step). A caller's own capture of the step is refused with a message: ``MangoAdamW`` is
not capturable (its step counts and learning rate are host values).

Equal to the eager step value by value: the same launches read the same buffers, and the rounding key is
drawn from the optimizer's generator every step either way (a ``-m gpu`` test compares both, refreshes and
moved gradients included).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch

from client.compression import fused
from client.compression.graphs import record

__all__ = ["LAUNCH_KNOBS", "MAX_CAPTURES", "StepGraph", "graph_key", "step"]

#: Captures a plan may make (a first, and re-captures after its key changed) before it stays eager.
MAX_CAPTURES = 4

#: The module knobs of :mod:`~client.compression.fused` that :func:`~client.compression.fused.launch` reads:
#: a recorded step keeps the values it was recorded with, so they are part of its key (a test checks that
#: every knob the function names is listed).
LAUNCH_KNOBS = (
    "BACK_BM", "BACK_BN", "DRAWS", "EXACT_TILE", "EXACT_WARPS", "FACTOR_CHUNK", "FOUR_BIT_PAIRS",
    "MATRIX_ALIGN", "NF4_SEARCH", "NORM_TILE", "NUM_WARPS", "PROJ_ALIGN", "PROJ_BK", "PROJ_BN",
    "PROJ_NORMS_MIN_RANK", "PROJ_NORMS_RELOAD_BELOW", "PROJ_STAGES", "PROJ_WARPS", "QUANTIZED_DOT_PRECISION",
    "WHOLE_BLOCKS", "MAX_REGS", "MAX_REGS_BY_BITS", "EARLY_LOADS", "MATRIX_TILE_BY_BITS", "SKIP_GRAIN",
    "DRAWS_CODES", "NF4_SEARCH_CODES",
)  # fmt: skip


@dataclass
class StepGraph:
    """A recorded steady step of one plan: replayed while :func:`graph_key` gives :attr:`key`."""

    key: tuple[Any, ...]
    graph: torch.cuda.CUDAGraph
    out: dict[str, list[torch.Tensor]]  # the recorded step's outputs: views of the plan's static buffers


def _knob(name: str) -> Any:
    value = getattr(fused, name)
    return tuple(sorted(value.items())) if isinstance(value, dict) else value


def graph_key(opt: Any, plan: fused.Plan, skip: torch.Tensor) -> tuple[Any, ...]:
    """What the launches of a step of ``plan`` depend on besides the plan's buffers: the gradients'
    alignment (the ``ALIGN`` specializations), each launch's ``eps`` and ``betas`` (kernel arguments), the
    error feedback's decay, the rounding, the statistics' sample size, the skip counter, the module knobs."""
    return (
        tuple(g.grad_aligned for g in plan.groups),
        tuple(fused.constants(g) for g in plan.groups),
        float(opt.ef_beta),
        bool(opt._stochastic(plan.bits)),
        int(opt.stats_sample),
        bool(opt.skip_nonfinite),
        skip.data_ptr(),
        tuple(_knob(k) for k in LAUNCH_KNOBS),
    )


def _graphable(opt: Any, plan: fused.Plan, refreshed: dict[int, torch.Tensor]) -> bool:
    return (
        fused.STEP_GRAPH
        and bool(getattr(opt, "graph_step", True))
        and plan.step_graph is not False
        and not refreshed
        and plan.norms is not None
        and plan.norms.is_cuda
    )


def step(
    opt: Any, plan: fused.Plan, skip: torch.Tensor, refreshed: dict[int, torch.Tensor] | None = None
) -> dict[str, list[torch.Tensor]]:
    """One fused step of ``plan`` (after :func:`~client.compression.fused.grads_fit`): prepared on the host,
    then replayed from the plan's graph, recorded and replayed, or launched eagerly (module docstring).
    Returns :func:`~client.compression.fused.launch`'s outputs."""
    refreshed = refreshed or {}
    fused.prepare(opt, plan)
    if not _graphable(opt, plan, refreshed):
        return fused.launch(opt, plan, skip, refreshed)
    key = graph_key(opt, plan, skip)
    cached = plan.step_graph
    if isinstance(cached, StepGraph):
        if cached.key == key:
            cached.graph.replay()
            return cached.out
        plan.step_graph, plan.steady = None, 0  # the launches changed: eager again, then a new recording
    if plan.captures >= MAX_CAPTURES:  # the key keeps changing: eager from now on
        plan.step_graph = False
        return fused.launch(opt, plan, skip, refreshed)
    if plan.steady < 1:  # the key's first steady step compiles its kernels
        plan.steady += 1
        return fused.launch(opt, plan, skip, refreshed)
    recorded = _capture(opt, plan, skip, key)
    plan.captures += 1
    if recorded is None:
        plan.step_graph = False
        return fused.launch(opt, plan, skip, refreshed)
    plan.step_graph = recorded
    recorded.graph.replay()  # the recording ran nothing: this step's work
    return recorded.out


def _capture(opt: Any, plan: fused.Plan, skip: torch.Tensor, key: tuple[Any, ...]) -> StepGraph | None:
    """Record (not run) :func:`~client.compression.fused.launch` (:func:`~client.compression.graphs.record`);
    None (and a warning) if the capture fails."""
    try:
        graph, out = record(lambda: fused.launch(opt, plan, skip))
    except Exception as exc:  # something in the step that cannot be recorded: stay eager
        warnings.warn(
            f"MangoAdamW: the step's CUDA graph capture failed ({exc}); stepping eagerly",
            RuntimeWarning,
            stacklevel=4,
        )
        return None
    return StepGraph(key=key, graph=graph, out=out)
