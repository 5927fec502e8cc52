"""Run a few MangoAdamW steps on the GPT-2-small-sized model, for profilers (Nsight Compute, nsys).

``python -m benchmarks.step_probe --setting r0/b8/g0 --steps 20`` builds the ``step`` part's model (124M
parameters, random gradients) and calls ``step()`` ``--steps`` times, then prints the mean step time; under
``ncu --kernel-name matrix_step_kernel --launch-skip 10 --launch-count 1 ...`` it gives one warm launch of the
fused kernel to analyse. CUDA only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import tyro


@dataclass
class StepProbeArgs:
    """A few MangoAdamW steps on the GPT-2-small-sized model, for profilers (CUDA only)."""

    setting: str = "r0/b8/g0"
    """a CompressionSetting label, e.g. r0/b4/g0"""
    steps: int = 20
    """optimizer steps to run"""
    no_ef: bool = False
    """error_feedback=False"""


def main(argv: list[str] | None = None) -> int:
    args = tyro.cli(
        StepProbeArgs, args=argv, prog="python -m benchmarks.step_probe", description=StepProbeArgs.__doc__
    )
    if not torch.cuda.is_available():
        print("step_probe needs a CUDA device")
        return 0
    from benchmarks.gpu import gpt2_with_gradients
    from client.compression import MangoAdamW
    from client.protocol import CompressionSetting

    params = gpt2_with_gradients()
    opt = MangoAdamW(
        params, lr=3e-4, weight_decay=0.1, setting=CompressionSetting.parse(args.setting),
        error_feedback=not args.no_ef,
    )  # fmt: skip
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        opt.step()
    torch.cuda.synchronize()
    print(f"{args.setting}: {(time.perf_counter() - t0) / args.steps * 1000:.3f} ms per step (incl. first)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
