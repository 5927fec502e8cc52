"""Session 41: where a projected step below R = 64 goes when the projection adds the gradient norms (call 92:
r4/b8/g0 0.69x -> 1.41x fused AdamW at 350 W). Device time per kernel over 10 steps (torch profiler), with
the norm sum at every rank and with the pre-pass, at r4/b8/g0 and r32/b4/g0. Usage (GPU):
python results/gpu-h200-next/s41/norm_profile.py"""

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.gpu import model_with_gradients
from client.compression import MangoAdamW, fused
from client.protocol import CompressionSetting

params = model_with_gradients("gpt2")
for label in ("r4/b8/g0", "r32/b4/g0", "r32/b32/g1"):
    for min_rank in (1 << 30, 0):
        fused.PROJ_NORMS_MIN_RANK = min_rank
        opt = MangoAdamW(params, lr=3e-4, weight_decay=0.1, setting=CompressionSetting.parse(label))
        for _ in range(60):  # past the first refresh
            opt.step()
        torch.cuda.synchronize()
        ev = [torch.cuda.Event(enable_timing=True) for _ in range(2)]
        ev[0].record()
        for _ in range(20):
            opt.step()
        ev[1].record()
        torch.cuda.synchronize()
        wall = ev[0].elapsed_time(ev[1]) / 20
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(10):
                opt.step()
            torch.cuda.synchronize()
        top = sorted(
            ((e.key, e.device_time_total / 10 / 1000) for e in prof.key_averages()), key=lambda kv: -kv[1]
        )
        name = "norm sum in the projection" if min_rank == 0 else "norm pre-pass"
        busy = sum(ms for _, ms in top)
        print(
            f"{label} {name}: step {wall:.3f} ms, kernels {busy:.3f} ms: "
            + "; ".join(f"{k[:32]} {ms:.3f} ms" for k, ms in top[:8]),
            flush=True,
        )
        del opt
