"""Session 42: where the alignment promise (fused.PROJ_ALIGN) helps and where it costs: device time per kernel
over 10 steps (torch profiler) with and without it, at four settings (call 95:
rank 64 read 0.92x fused AdamW with it, 0.84x without, ranks below 64 the other way round). Usage (GPU):
python results/gpu-h200-next/s42/align_profile.py"""

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.gpu import model_with_gradients
from client.compression import MangoAdamW, fused
from client.protocol import CompressionSetting

params = model_with_gradients("gpt2")
for label in ("r4/b8/g0", "r32/b32/g1", "r64/b8/g0", "r64/b16/g1"):
    for align in (True, False):
        fused.PROJ_ALIGN = align
        opt = MangoAdamW(params, lr=3e-4, weight_decay=0.1, setting=CompressionSetting.parse(label))
        for _ in range(60):  # past the first refresh
            opt.step()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(10):
                opt.step()
            torch.cuda.synchronize()
        top = sorted(
            ((e.key, e.device_time_total / 10 / 1000) for e in prof.key_averages()), key=lambda kv: -kv[1]
        )
        print(
            f"{label} PROJ_ALIGN={align}: " + "; ".join(f"{k[:24]} {ms:.3f} ms" for k, ms in top[:4]),
            flush=True,
        )
        del opt
