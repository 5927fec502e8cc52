"""Run a few MangoAdamW steps on the GPT-2-small-sized model, for profilers (Nsight Compute, nsys).

``python -m benchmarks.step_probe --setting r0/b8/g0 --steps 20`` builds the ``step`` part's model (124M
parameters, random gradients) and calls ``step()`` ``--steps`` times, then prints the mean step time; under
``ncu --kernel-name matrix_step_kernel --launch-skip 10 --launch-count 1 ...`` it gives one warm launch of the
fused kernel to analyse. ``--refresh`` instead times a basis-refresh step against a plain one (device time
by CUDA events, host time by the wall clock; ``refresh_every`` steps apart) and prints the torch profiler's
table of one refresh step (top device ops), to see what a refresh costs and where. ``--switch r4/b8/g0``
runs ``--setting`` warm, then profiles ``apply_setting`` to the other setting and the first step after it
(host and device tables, with a warm-up change there and back first so no kernel compiles in the window):
where a setting change's time goes. CUDA only.

``--cpu`` instead times the CPU torch path where the CPU demo plays it: the demo model's parameters
(``--model``, default lm-tiny) with seeded random gradients, one torch thread (the demo's ``--threads``
default), and a table of the median optimizer step of :func:`client.profile.reference_adamw` (the AdamW every
ratio is against), torch's default AdamW and MangoAdamW at each of ``--settings``, with its ratio to the
reference. The optimizers run interleaved, ``--steps`` steps each per repeat, ``--reps`` repeats in a rotated
order, so a shared machine's drift hits them alike: ``python -m benchmarks.step_probe --cpu``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import tyro

from benchmarks.gpu import gpt2_with_gradients
from client.compression import MangoAdamW, fused
from client.compression.refresh import due
from client.profile import reference_adamw
from client.protocol import CompressionSetting
from envs.models import build_model


@dataclass
class StepProbeArgs:
    """A few MangoAdamW steps on the GPT-2-small-sized model, for profilers (CUDA only)."""

    setting: str = "r0/b8/g0"
    """a CompressionSetting label, e.g. r0/b4/g0"""
    steps: int = 20
    """optimizer steps to run (with --cpu: per optimizer and repeat)"""
    no_ef: bool = False
    """error_feedback=False"""
    refresh: bool = False
    """time refresh steps against plain ones and profile one refresh step (projected settings)"""
    refresh_every: int = 50
    """MangoAdamW's refresh_every (with --refresh)"""
    switch: str = ""
    """profile apply_setting to this setting label and the first step after it"""
    kernels: bool = False
    """after the timed steps, the device time of each kernel per step over 20 warm steps (torch profiler)"""
    late_loads: bool = False
    """fused.EARLY_LOADS = {}: every load of a matrix-kernel tile where its value is first used"""
    cpu: bool = False
    """time the CPU torch path on the demo model against AdamW instead (the table; no CUDA needed)"""
    model: str = "lm-tiny"
    """with --cpu: the envs.models preset whose parameters step (the CPU demo's model)"""
    settings: str = "r0/b32/g0,r0/b8/g0,r0/b4/g0"
    """with --cpu: the MangoAdamW settings timed, comma-separated"""
    reps: int = 9
    """with --cpu: interleaved repeats (the table reports medians over them)"""
    threads: int = 1
    """with --cpu: torch CPU threads (the demo's default on a CPU)"""


def _switch_probe(opt: Any, to: str) -> None:
    """Host time of ``apply_setting`` and of the first step after it, then their profiler tables."""
    start, target = opt.setting, CompressionSetting.parse(to)
    for s in (target, start):  # compile and load every kernel of both settings outside the window
        opt.apply_setting(s)
        for _ in range(60):
            opt.step()
    torch.cuda.synchronize()
    acts = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=acts) as prof:
        t0 = time.perf_counter()
        with torch.profiler.record_function("apply_setting"):
            opt.apply_setting(target)
        t1 = time.perf_counter()
        with torch.profiler.record_function("first_step"):
            opt.step()
        t2 = time.perf_counter()
        torch.cuda.synchronize()
        t3 = time.perf_counter()
    print(
        f"{start.label()} -> {target.label()}: apply {1000 * (t1 - t0):.1f} ms host, first step "
        f"{1000 * (t2 - t1):.1f} ms host, then {1000 * (t3 - t2):.1f} ms until the device is done"
    )
    print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=40))
    print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=15))


def _refresh_probe(opt: Any, every: int) -> None:
    """Device and host time of refresh steps vs plain steps, then the profiler's table of one refresh."""
    for _ in range(3 * every):  # compile, and past the first refreshes (the second captures the graph)
        opt.step()
    torch.cuda.synchronize()
    projected = [st for st in opt.state.values() if "P" in st]
    if not projected:
        print("no projected tensor: --refresh needs a setting with rank > 0")
        return

    def refresh_next() -> bool:
        return due(opt, projected[0])

    rows: dict[str, list[tuple[float, float]]] = {"refresh": [], "plain": []}
    for _ in range(2 * every):
        kind = "refresh" if refresh_next() else "plain"
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        t0 = time.perf_counter()
        a.record()
        opt.step()
        b.record()
        host = (time.perf_counter() - t0) * 1000
        b.synchronize()
        rows[kind].append((a.elapsed_time(b), host))
    for kind, xs in rows.items():
        dev = sorted(x[0] for x in xs)[len(xs) // 2]
        host = sorted(x[1] for x in xs)[len(xs) // 2]
        print(f"{kind} step: device {dev:.3f} ms, host {host:.3f} ms (median of {len(xs)})")
    while not refresh_next():
        opt.step()
    torch.cuda.synchronize()
    acts = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=acts) as prof:
        opt.step()
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=25))
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


def main(argv: list[str] | None = None) -> int:
    args = tyro.cli(
        StepProbeArgs, args=argv, prog="python -m benchmarks.step_probe", description=StepProbeArgs.__doc__
    )
    if args.cpu:
        _cpu_table(args)
        return 0
    if not torch.cuda.is_available():
        print("step_probe needs a CUDA device (or --cpu)")
        return 0
    if args.late_loads:
        fused.EARLY_LOADS = {}
    params = gpt2_with_gradients()
    opt = MangoAdamW(
        params, lr=3e-4, weight_decay=0.1, setting=CompressionSetting.parse(args.setting),
        error_feedback=not args.no_ef, refresh_every=args.refresh_every,
    )  # fmt: skip
    if args.refresh:
        _refresh_probe(opt, args.refresh_every)
        return 0
    if args.switch:
        _switch_probe(opt, args.switch)
        return 0
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        opt.step()
    torch.cuda.synchronize()
    print(f"{args.setting}: {(time.perf_counter() - t0) / args.steps * 1000:.3f} ms per step (incl. first)")
    if args.kernels:
        _kernel_table(opt, 20)
    return 0


def _cpu_optimizers(args: StepProbeArgs) -> dict[str, Callable[[], torch.optim.Optimizer]]:
    """Each timed optimizer's factory: its own copy of the demo model's parameters, seeded gradients."""

    def params() -> list[torch.Tensor]:
        ps = [p for p in build_model(args.model, 0).parameters() if p.requires_grad]
        gen = torch.Generator().manual_seed(1)
        for p in ps:
            p.grad = torch.randn(p.shape, generator=gen) * 1e-3
        return ps

    makers: dict[str, Callable[[], torch.optim.Optimizer]] = {
        "reference_adamw": lambda: reference_adamw(params(), lr=3e-3, weight_decay=0.01),
        "torch AdamW (default)": lambda: torch.optim.AdamW(params(), lr=3e-3, weight_decay=0.01),
    }
    for label in args.settings.split(","):
        s = CompressionSetting.parse(label.strip())
        makers[f"MangoAdamW {s.label()}"] = lambda s=s: MangoAdamW(
            params(), lr=3e-3, weight_decay=0.01, setting=s, seed=0
        )
    return makers


def _cpu_table(args: StepProbeArgs) -> None:
    """Median CPU step time of each optimizer of :func:`_cpu_optimizers`, interleaved, as a table."""
    torch.set_num_threads(args.threads)
    opts = {name: make() for name, make in _cpu_optimizers(args).items()}
    for opt in opts.values():  # past the first steps (states allocated)
        for _ in range(3):
            opt.step()
    times: dict[str, list[float]] = {name: [] for name in opts}
    names = list(opts)
    for rep in range(args.reps):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            t0 = time.perf_counter()
            for _ in range(args.steps):
                opts[name].step()
            times[name].append((time.perf_counter() - t0) / args.steps * 1000)
    ref = statistics.median(times["reference_adamw"])
    print(f"{args.model}, {torch.get_num_threads()} thread(s), median of {args.reps} x {args.steps} steps\n")
    print("| optimizer | step ms (median) | min - max | x reference_adamw |\n|---|---|---|---|")
    for name, xs in times.items():
        med = statistics.median(xs)
        print(f"| {name} | {med:.3f} | {min(xs):.3f} - {max(xs):.3f} | {med / ref:.2f} |")


def _kernel_table(opt: Any, steps: int) -> None:
    """Device time per step of every kernel the step launches (mean over ``steps`` warm steps)."""
    acts = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=acts) as prof:
        for _ in range(steps):
            opt.step()
        torch.cuda.synchronize()
    rows = [(e.key, e.self_device_time_total / steps / 1000, e.count / steps) for e in prof.key_averages()]
    rows = sorted((r for r in rows if r[1] > 0), key=lambda r: -r[1])
    print("| kernel | device ms per step | launches per step |\n|---|---|---|")
    for key, ms, n in rows[:15]:
        print(f"| {key[:70]} | {ms:.4f} | {n:g} |")


if __name__ == "__main__":
    raise SystemExit(main())
