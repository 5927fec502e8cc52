"""Count the host work of one steady fused step per setting: torch ops dispatched, Triton launches and Python
calls in client/ (the host cost a projected step pays on a GPU, where call 99's slower host made the
projected rows 1.3-1.9x slower at unchanged rank-0 rows). Counted, not timed: the fused path under
TRITON_INTERPRET=1 on the CPU, GPT-2-small's 148 tensors at width 64 (the same groups and launches).

Rank 64 is not below this width's dimensions and plays as rank 0 here. Outputs beside it: step_ops_before.txt
(tree fa7e367), step_ops_after.txt (the whole-vector huge-norm mark only where a pre-pass filled it), step_ops_lazy_samples.txt
(a skipped tensor's projection samples zeroed when the statistics are read).

Usage:  cd /work/main && PYTHONDONTWRITEBYTECODE=1 TRITON_INTERPRET=1 .venv/bin/python results/cpu-s43/step_ops.py
"""

from __future__ import annotations

import collections
import os
import sys

assert os.environ.get("TRITON_INTERPRET") == "1", "run with TRITON_INTERPRET=1"
import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from client.compression import MangoAdamW  # noqa: E402
from client.protocol import CompressionSetting  # noqa: E402
from envs.models import ByteGPT, GPTConfig  # noqa: E402

CLIENT = os.path.join(ROOT, "client") + os.sep
TRITON = f"{os.sep}triton{os.sep}"


class Ops(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        f = sys._getframe(1)
        while f is not None:
            if TRITON in f.f_code.co_filename:
                return func(*args, **(kwargs or {}))
            f = f.f_back
        self.ops[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def count_step(opt: MangoAdamW) -> tuple[collections.Counter, collections.Counter, collections.Counter]:
    """(torch ops, Triton launches, Python calls in client/) of one ``opt.step()``."""
    import triton.runtime.interpreter as ti

    launches: collections.Counter = collections.Counter()
    calls: collections.Counter = collections.Counter()
    orig = ti.InterpretedFunction.run

    def prof(frame, event, arg):  # type: ignore[no-untyped-def]
        if event == "call" and frame.f_code.co_filename.startswith(CLIENT):
            calls[f"{os.path.relpath(frame.f_code.co_filename, ROOT)}:{frame.f_code.co_name}"] += 1

    def run(self, *a, **k):  # type: ignore[no-untyped-def]
        launches[self.fn.__name__] += 1
        sys.setprofile(None)
        try:
            return orig(self, *a, **k)
        finally:
            sys.setprofile(prof)

    ti.InterpretedFunction.run = run
    mode = Ops()
    try:
        with mode:
            sys.setprofile(prof)
            opt.step()
    finally:
        sys.setprofile(None)
        ti.InterpretedFunction.run = orig
    return mode.ops, launches, calls


def main() -> None:
    cfg = GPTConfig(vocab_size=512, n_layer=12, n_head=4, n_embd=64, block_size=64)
    torch.manual_seed(0)
    model = ByteGPT(cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    print(f"{len(params)} tensors")
    print("| setting | torch ops | Triton launches | Python calls in client/ | top ops | top calls |")
    print("|---|---:|---:|---:|---|---|")
    for label in ["r0/b8/g0", "r0/b4/g1", "r4/b8/g0", "r32/b32/g1", "r64/b8/g0"]:
        setting = CompressionSetting.parse(label)
        opt = MangoAdamW(params, lr=1e-4, setting=setting, min_compress_numel=1024, fused=True, refresh_every=1000)
        for _ in range(3):
            opt.step()
        ops, launches, calls = count_step(opt)
        top_ops = ", ".join(f"{k} {v}" for k, v in ops.most_common(6))
        top_calls = ", ".join(f"{k.split(':')[-1]} {v}" for k, v in calls.most_common(6))
        kern = ", ".join(f"{k} {v}" for k, v in launches.items())
        print(f"| {label} | {sum(ops.values())} | {sum(launches.values())} ({kern}) | {sum(calls.values())} "
              f"| {top_ops} | {top_calls} |")

if __name__ == "__main__":
    main()
