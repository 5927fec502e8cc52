"""Session 10: why test_fused_runs_continue_after_batched_changes failed on the H200 (call 1).

The test compares a fused run through a chain of setting changes converted tensor by tensor with the same
run converted in batches. On CUDA it allows a mean difference of 2e-4 (float atomics of the factored v add in
any order); call 1 measured 3.1e-4. This prints, per nudge size, the mean / max difference of
(per-tensor vs per-tensor: the run-to-run noise on this device) and (batched vs per-tensor).
Run: python results/gpu-h200-2026-12-04-s10/convert_diag.py
"""

from __future__ import annotations

import sys

import torch

sys.path.insert(0, ".")
from client.compression import MangoAdamW, lowrank
from client.protocol import CompressionSetting as S
from tests.client.test_convert import SHAPES, _steps

CHAIN = ["r0/b8/g0", "r4/b8/g0", "r0/b4/g1", "r8/b4/g0", "r0/b8/g0"]


def run(batched: bool, upto: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    params = [torch.nn.Parameter((torch.randn(s, generator=gen) * 0.1).to(dev)) for s in SHAPES]
    opt = MangoAdamW(params, lr=1e-2, setting=S.parse(CHAIN[0]), min_compress_numel=1024,
                     stochastic_rounding=False, fused=True)  # fmt: skip
    opt.batch_convert = batched
    _steps(opt, params, range(2))
    for i, s in enumerate(CHAIN[1:upto]):
        opt.apply_setting(S.parse(s))
        _steps(opt, params, range(2 + 2 * i, 4 + 2 * i))
    return [p.detach().clone() for p in params]


def diff(x: list[torch.Tensor], y: list[torch.Tensor]) -> str:
    d = torch.cat([(a - b).abs().flatten() for a, b in zip(x, y, strict=True)])
    frac = float((d > 1e-6).float().mean())
    return f"mean {float(d.mean()):.2e} max {float(d.max()):.2e} frac>1e-6 {frac:.3f}"


for nudge in (1e-6, 1e-7):
    lowrank.ORTH_NUDGE = nudge
    for upto in (2, 3, 4, 5):
        a, b, c = run(False, upto), run(False, upto), run(True, upto)
        print(
            f"nudge {nudge:g} chain {' -> '.join(CHAIN[:upto])}: per-tensor twice: {diff(a, b)} | "
            f"batched vs per-tensor: {diff(a, c)}"
        )
