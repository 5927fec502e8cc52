"""Session 10, calls 6-8 (H200): the probes after convert_diag.py, as run there (inline, this file's code).

1. ``order``: the chain converted per tensor and in batches in a fresh process, in both orders, and each
   twice: both paths are deterministic on the device and differ from each other by the same amount whichever
   runs first.
2. ``tensors``: the difference per tensor after the chain's 4th and 5th setting (what the test measures: a
   mean per tensor).
3. ``orth``: every ``orthonormalize_batched`` call of the chain up to r8/b4/g0, its basis against Householder
   QR of the same input (subspace difference) and the input's condition number: no fallback, no
   ill-conditioning.
4. ``sensitivity EPS`` (run on the CPU afterwards, TRITON_INTERPRET=1): the per-tensor chain against itself
   with every orthonormal basis multiplied by ``1 + EPS * N(0, 1)`` (rounding-sized noise, no batching): how
   far a last-bits difference in a conversion carries through the 4-bit chain, per tensor.
5. ``wrong``: what the test's statistic reads for a wrong batched conversion (the two states of each batched
   pair swapped, then converted): the size a real conversion error has, beside the rounding of 4.
Run: python results/gpu-h200-2026-12-04-s10/convert_probe.py {order,tensors,orth,sensitivity EPS,wrong}
"""

from __future__ import annotations

import sys

import torch

from client.compression import convert, lowrank, optimizer

SRC = "results/gpu-h200-2026-12-04-s10/convert_diag.py"
g: dict = {"__name__": "probe"}  # convert_diag.py's helpers, without its loop
with open(SRC) as f:
    exec(compile(f.read().split("for nudge in")[0], SRC, "exec"), g)
run, diff = g["run"], g["diff"]

what = sys.argv[1] if len(sys.argv) > 1 else "order"
if what == "order":
    print("tf32", torch.backends.cuda.matmul.allow_tf32, torch.get_float32_matmul_precision())
    a, c = run(False, 5), run(True, 5)
    print("fresh, per-tensor first then batched:", diff(a, c))
    c2, a2 = run(True, 5), run(False, 5)
    print(
        "again, batched first:",
        diff(a2, c2),
        "| per-tensor 1 vs 2:",
        diff(a, a2),
        "| batched 1 vs 2:",
        diff(c, c2),
    )
elif what == "tensors":
    for upto in (4, 5):
        a, c = run(False, upto), run(True, upto)
        d = [(x - y).abs() for x, y in zip(a, c, strict=True)]
        print(upto, [(tuple(e.shape), f"{float(e.mean()):.1e}", f"{float(e.max()):.1e}") for e in d])
elif what == "sensitivity":
    eps = float(sys.argv[2])
    orig_ob = lowrank.orthonormalize_batched
    noise_gen = torch.Generator().manual_seed(1)

    def noisy(x: torch.Tensor, rows: object = None) -> torch.Tensor:
        q = orig_ob(x, rows)  # type: ignore[arg-type]
        return q * (1 + eps * torch.randn(q.shape, generator=noise_gen).to(q.device))

    for upto in (4, 5):
        a = run(False, upto)
        for mod in (lowrank, optimizer, convert):
            mod.orthonormalize_batched = noisy  # type: ignore[assignment]
        c = run(False, upto)
        for mod in (lowrank, optimizer, convert):
            mod.orthonormalize_batched = orig_ob  # type: ignore[assignment]
        d = [(x - y).abs() for x, y in zip(a, c, strict=True)]
        print(upto, [(tuple(e.shape), f"{float(e.mean()):.1e}") for e in d])
elif what == "wrong":
    orig_cg = convert.convert_group

    def swapped(opt: object, ps: list, sts: list, s: object) -> None:
        orig_cg(opt, ps, sts[::-1], s)

    convert.convert_group = swapped  # type: ignore[assignment]
    a, c = run(False, 5), run(True, 5)
    d = [(x - y).abs() for x, y in zip(a, c, strict=True)]
    print("swapped pairs:", [(tuple(e.shape), f"{float(e.mean()):.1e}", f"{float(e.max()):.1e}") for e in d])
else:
    orig = lowrank.orthonormalize_batched

    def wrap(x: torch.Tensor, rows: object = None) -> torch.Tensor:
        q = orig(x, rows)  # type: ignore[arg-type]
        y = x.reshape(-1, *x.shape[-2:]).double()
        qq = q.reshape(y.shape).double()
        h = torch.linalg.qr(y).Q
        d = (qq @ qq.mT - h @ h.mT).flatten(1).norm(dim=1)
        s = torch.linalg.svdvals(y)
        print("orth", tuple(x.shape), "subspace diff", [f"{v:.1e}" for v in d.tolist()],
              "cond", [f"{v:.1e}" for v in (s[:, 0] / s[:, -1]).tolist()])  # fmt: skip
        return q

    for mod in (lowrank, optimizer, convert):  # the optimizer and the conversion import it by name
        mod.orthonormalize_batched = wrap  # type: ignore[assignment]
    print("== per-tensor")
    run(False, 4)
    print("== batched")
    run(True, 4)
