"""Session 9: where the H200 demo's NaN comes from (issue 13's demo, seeds 1-2: r64/b8/g0.5 after r0/b8).

The demo's recipe (gpt-85m, batch 16 x 64, lr 3e-3 with 40 warm-up steps, the demo's batches of the seed), one
setting for ``switch_at`` steps, then ``apply_setting`` to the second; after every step the first parameter
that is not finite and the optimizer state of that parameter are printed. Run: python nan_probe.py DEVICE.
"""

import sys
import time

import torch

from client.compression import MangoAdamW
from client.protocol import CompressionSetting as S
from demo.args import DemoArgs
from demo.runs import lr_at
from envs.data import load_corpus
from envs.models import build_model

dev = torch.device(sys.argv[1] if len(sys.argv) > 1 else "cuda")
# (seed, first, second, switch_at, MangoAdamW keywords); call D ran a longer list (cut by a bad keyword)
SCEN = [
    (1, "r0/b8/g0", "r64/b8/g0.5", 20, {}),
    (2, "r0/b8/g0", "r64/b8/g0.5", 20, {}),
    (0, "r0/b8/g0.5", "r64/b8/g0.5", 60, {}),
]
args = DemoArgs(model="gpt-85m", steps=600, batch_size=16, seq_len=64, lr=3e-3, warmup_steps=40)
corpus = load_corpus(args.corpus_bytes)


def describe(opt: MangoAdamW, p: torch.Tensor) -> str:
    out = []
    for k, v in opt.state[p].items():
        ts = [("", v)] if isinstance(v, torch.Tensor) else list(getattr(v, "__dict__", {}).items())
        for name, t in ts:
            if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel():
                out.append(
                    f"{k}{'.' + name if name else ''}{tuple(t.shape)} finite={bool(torch.isfinite(t).all())} "
                    f"absmax={t.abs().max().item():.3g}"
                )
    return "; ".join(out)


for seed, first, second, switch_at, kw in SCEN:
    t0 = time.time()
    model = build_model("gpt-85m", seed).to(dev)
    params = [p for p in model.parameters() if p.requires_grad]
    names = {id(p): n for n, p in model.named_parameters()}
    opt = MangoAdamW(
        params, lr=args.lr, weight_decay=args.weight_decay, setting=S.parse(first), seed=seed, **kw
    )
    gen = torch.Generator().manual_seed(seed + 1)
    print(f"== seed {seed} {first} -> {second} at {switch_at} {kw}", flush=True)
    losses = []
    for step in range(switch_at + 25):
        if step == switch_at and second != first:
            opt.apply_setting(S.parse(second))
        for g in opt.param_groups:
            g["lr"] = lr_at(args, step)
        x, y = corpus.get_batch("train", 16, 64, gen)
        loss = model.loss(x.to(dev), y.to(dev))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        before = [p.detach().clone() for p in params] if step >= switch_at else None
        opt.step()
        losses.append(round(loss.item(), 3))
        bad = [p for p in params if not torch.isfinite(p).all()]
        if bad:
            p = bad[0]
            i = next(j for j, q in enumerate(params) if q is p)
            d = (p.detach() - before[i]) if before is not None else None
            print(
                f"  step {step}: {len(bad)} non-finite params, first {names[id(p)]} {tuple(p.shape)}; "
                f"grad finite={bool(torch.isfinite(p.grad).all())} absmax={p.grad.abs().max().item():.3g}; "
                f"before absmax={before[i].abs().max().item() if before else float('nan'):.3g}",
                flush=True,
            )
            print("  state:", describe(opt, p), flush=True)
            break
        if step >= switch_at:
            upd = max(((p.detach() - b).abs().max().item(), names[id(p)]) for p, b in zip(params, before))
            print(f"  step {step} loss {losses[-1]} largest update {upd[0]:.3g} ({upd[1]})", flush=True)
    print(f"  losses {losses[:switch_at]} ... {time.time() - t0:.1f} s", flush=True)
    del opt, model
