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
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
import tyro

from benchmarks.gpu import gpt2_with_gradients
from client.compression import MangoAdamW, fused
from client.compression.refresh import due
from client.protocol import CompressionSetting


@dataclass
class StepProbeArgs:
    """A few MangoAdamW steps on the GPT-2-small-sized model, for profilers (CUDA only)."""

    setting: str = "r0/b8/g0"
    """a CompressionSetting label, e.g. r0/b4/g0"""
    steps: int = 20
    """optimizer steps to run"""
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
    if not torch.cuda.is_available():
        print("step_probe needs a CUDA device")
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
