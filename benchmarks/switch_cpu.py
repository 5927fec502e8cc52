"""``apply_setting`` time per setting change on the CPU, tensor by tensor against batched.

The GPU part ``mango bench gpu --parts switch`` times the same changes (:data:`benchmarks.gpu.SWITCHES`) on
the same GPT-2-small-sized parameter set (:data:`benchmarks.gpu.MODELS`, 148 tensors) with the first step
after each change; this command runs where there is no GPU and times the conversion alone, once with
``batch_convert = False`` (every tensor converted alone) and once batched (same-shaped tensors together).
On a CPU the saving is the per-op overhead only (the arithmetic is the same); on a GPU each small op is a
launch, which is what batching removes. The "ops" columns count the torch operators ``apply_setting``
dispatches (views excluded: they launch nothing), and how many of them come from re-quantizing the converted
states (``quant.py``): the same count on any device for the torch path, so it says on a CPU how many
launches a change costs a GPU before a GPU is at hand (the CUDA path quantizes with one Triton launch a
state instead of the torch path's ~15 ops).

A second table times the fused plan that the first step after each change builds (``fused.build_plan``: its
program and address tables are made on the host, then copied to the device), part of that step's host time.

Usage: ``python -m benchmarks.switch_cpu [--model gpt2] [--reps 1] [--plans-only]`` (a few minutes on two
cores; the plan table alone, seconds).
"""

from __future__ import annotations

import collections
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Any, Literal

import torch
import tyro
from torch.utils._python_dispatch import TorchDispatchMode

from benchmarks.gpu import MODELS, SWITCHES
from client.compression import MangoAdamW, fused
from client.protocol import CompressionSetting
from envs.models import ByteGPT, GPTConfig


def _params(model: str) -> list[torch.nn.Parameter]:
    """GPT-2's vocabulary and context, tied embeddings, seeded random gradients (std 1e-3), on the CPU."""
    torch.manual_seed(0)
    net = ByteGPT(GPTConfig(vocab_size=50304, block_size=1024, **MODELS[model]))
    params = [p for p in net.parameters() if p.requires_grad]
    gen = torch.Generator().manual_seed(0)
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen) * 1e-3
    return params


#: Operators that return a view (no kernel, no copy): not counted.
_VIEWS = frozenset(
    [
        "view",
        "_unsafe_view",
        "reshape",
        "select",
        "slice",
        "unsqueeze",
        "squeeze",
        "expand",
        "t",
        "transpose",
        "permute",
        "detach",
        "alias",
        "as_strided",
        "unbind",
        "split",
        "split_with_sizes",
        "chunk",
        "unfold",
        "diagonal",
    ]
)


class _OpCount(TorchDispatchMode):
    """Counts the non-view torch operators dispatched inside the block, and those called from quant.py."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0
        self.quant = 0
        self.by_op: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = func.overloadpacket.__name__
        if name not in _VIEWS:
            self.total += 1
            self.by_op[name] += 1
            if any(f.filename.endswith("compression/quant.py") for f in traceback.extract_stack(limit=12)):
                self.quant += 1
        return func(*args, **(kwargs or {}))


def _apply(params: list[torch.nn.Parameter], a: str, b: str, *, batched: bool) -> tuple[float, _OpCount]:
    """``apply_setting(b)`` after two steps at ``a``: its wall time in ms (uncounted) and its op count."""
    times = []
    count = _OpCount()
    for counted in (False, True):
        opt = MangoAdamW(params, lr=1e-4, setting=CompressionSetting.parse(a))
        opt.batch_convert = batched
        for _ in range(2):
            opt.step()
        t0 = time.perf_counter()
        if counted:
            with count:
                opt.apply_setting(CompressionSetting.parse(b))
        else:
            opt.apply_setting(CompressionSetting.parse(b))
            times.append((time.perf_counter() - t0) * 1000)
        del opt
    return times[0], count


def _plan_ms(params: list[torch.nn.Parameter], setting: str, reps: int) -> tuple[float, int]:
    """The fused plan the first step after a change into ``setting`` builds (host work on any device: its
    tables are made on the CPU, then copied): the fastest of ``reps`` builds in ms, and its torch op count."""
    opt = MangoAdamW(params, lr=1e-4, setting=CompressionSetting.parse(setting), fused=False)
    opt.step()  # the states of the setting, laid out as the fused step reads them
    items = [(i, p, opt.param_groups[0]) for i, p in enumerate(params)]
    times = []
    for rep in range(reps + 1):  # the first build warms the allocator
        t0 = time.perf_counter()
        fused.build_plan(opt, items, ("plan", rep))
        times.append((time.perf_counter() - t0) * 1000)
    count = _OpCount()
    with count:
        fused.build_plan(opt, items, ("counted",))
    return min(times[1:]), count.total


@dataclass
class SwitchCpuArgs:
    """``apply_setting`` time and op count per setting change on the CPU, tensor by tensor against batched."""

    model: Literal["gpt2", "1b"] = "gpt2"
    """parameter set of :data:`benchmarks.gpu.MODELS`"""
    reps: int = 1
    """timed changes per mode (the minimum is reported; the plan table takes at least 3)"""
    plans_only: bool = False
    """only the second table (the first step's plan), which takes seconds"""


def main(argv: list[str] | None = None) -> int:
    args = tyro.cli(
        SwitchCpuArgs,
        args=sys.argv[1:] if argv is None else argv,
        prog="python -m benchmarks.switch_cpu",
        description=SwitchCpuArgs.__doc__,
    )
    if args.reps < 1:
        raise ValueError(f"--reps {args.reps} must be >= 1")
    params = _params(args.model)
    print(f"{len(params)} tensors, {sum(p.numel() for p in params) / 1e6:.1f}M parameters, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")  # fmt: skip
    if not args.plans_only:
        _apply_table(params, args.reps)
    print("\n| the first step's plan: setting | build_plan ms | build_plan ops |")
    print("|---|---|---|")
    for b in dict.fromkeys(b for _, b in SWITCHES):
        ms, ops = _plan_ms(params, b, max(args.reps, 3))
        print(f"| {b} | {ms:.1f} | {ops} |", flush=True)
    return 0


def _apply_table(params: list[torch.nn.Parameter], reps: int) -> None:
    """The first table: ``apply_setting`` per change, tensor by tensor and batched."""
    print(
        "| change | per-tensor apply_ms | batched apply_ms | speed-up | per-tensor ops (quant) "
        "| batched ops (quant) |"
    )
    print("|---|---|---|---|---|---|")
    for a, b in SWITCHES:
        each = [_apply(params, a, b, batched=False) for _ in range(reps)]
        both = [_apply(params, a, b, batched=True) for _ in range(reps)]
        t_each, t_both = min(t for t, _ in each), min(t for t, _ in both)
        c_each, c_both = each[0][1], both[0][1]
        print(
            f"| {a} -> {b} | {t_each:.0f} | {t_both:.0f} | {t_each / t_both:.2f}x | "
            f"{c_each.total} ({c_each.quant}) | {c_both.total} ({c_both.quant}) |",
            flush=True,
        )


if __name__ == "__main__":
    raise SystemExit(main())
