"""``apply_setting`` time per setting change on the CPU, tensor by tensor against batched.

The GPU part ``mango bench gpu --parts switch`` times the same changes (:data:`benchmarks.gpu.SWITCHES`) on
the same GPT-2-small-sized parameter set (:data:`benchmarks.gpu.MODELS`, 148 tensors) with the first step
after each change; this command runs where there is no GPU and times the conversion alone, once with
``batch_convert = False`` (every tensor converted alone) and once batched (same-shaped tensors together).
On a CPU the saving is the per-op overhead only (the arithmetic is the same); on a GPU each small op is a
launch, which is what batching removes.

Usage: ``python -m benchmarks.switch_cpu [--model gpt2] [--reps 1]`` (a few minutes on two cores).
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.gpu import MODELS, SWITCHES
from client.compression import MangoAdamW
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


def _apply_ms(params: list[torch.nn.Parameter], a: str, b: str, *, batched: bool) -> float:
    opt = MangoAdamW(params, lr=1e-4, setting=CompressionSetting.parse(a))
    opt.batch_convert = batched
    for _ in range(2):
        opt.step()
    t0 = time.perf_counter()
    opt.apply_setting(CompressionSetting.parse(b))
    return (time.perf_counter() - t0) * 1000


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.switch_cpu", description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="gpt2", choices=sorted(MODELS))
    ap.add_argument("--reps", type=int, default=1, help="timed changes per mode (the minimum is reported)")
    args = ap.parse_args(argv)
    params = _params(args.model)
    print(f"{len(params)} tensors, {sum(p.numel() for p in params) / 1e6:.1f}M parameters, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")  # fmt: skip
    print("| change | per-tensor apply_ms | batched apply_ms | speed-up |")
    print("|---|---|---|---|")
    for a, b in SWITCHES:
        each = min(_apply_ms(params, a, b, batched=False) for _ in range(args.reps))
        both = min(_apply_ms(params, a, b, batched=True) for _ in range(args.reps))
        print(f"| {a} -> {b} | {each:.0f} | {both:.0f} | {each / both:.2f}x |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
