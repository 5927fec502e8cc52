"""A plain PyTorch training loop with MANGO. The lines a user adds are the three marked ``# MANGO``.

The model and data are the project's byte-level LM on the Python standard library (nothing is downloaded);
swap in your own. Who picks the compression setting each control interval:

* ``MANGO_SERVICE_URL`` set (and ``MANGO_API_KEY``): the policy service (``mango serve``); the local
  controller answers only when the service cannot (the decision log says ``"source": "fallback"``);
* otherwise the local heuristic controller (``--controller``), no service needed.

::

    python examples/plain_loop.py --steps 200
    MANGO_SERVICE_URL=http://127.0.0.1:8000 MANGO_API_KEY=... python examples/plain_loop.py

It prints one line per control interval and a final ``final:`` line; ``--decision-log`` writes one JSON
line per decision.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

import torch
import torch.nn.functional as F

from client.compression import MangoAdamW
from client.hook import AdaptiveCompression
from client.protocol import Objective
from envs.data import load_corpus
from envs.models import build_model


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=200, help="optimizer steps")
    p.add_argument("--interval", type=int, default=20, help="optimizer steps per control interval")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=64, help="bytes per window (<= 64 for lm-tiny)")
    p.add_argument("--controller", default="accordion", help="local controller: static | accordion | loraven")
    p.add_argument("--decision-log", default=None, help="JSON-lines decision log (appended to)")
    p.add_argument("--corpus-bytes", type=int, default=1_000_000, help="size of the stdlib byte corpus")
    # Half the cores, at most 4: the example's small matrices gain nothing from more threads, and on a
    # shared 2-core machine torch's default (every core) ran 3x slower than one thread (BENCHMARKS.md).
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    p.add_argument(
        "--threads",
        type=int,
        default=max(1, min(4, cores // 2)),
        help="torch CPU threads (0: torch's default)",
    )
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    corpus = load_corpus(args.corpus_bytes)
    model = build_model("lm-tiny", seed=0).to(device)
    gen = torch.Generator().manual_seed(0)

    opt = MangoAdamW(model.parameters(), lr=3e-3, weight_decay=0.01)  # MANGO: instead of torch.optim.AdamW
    hook = AdaptiveCompression(  # MANGO: telemetry + a decision every `interval_steps` steps
        opt,
        server_url=os.environ.get("MANGO_SERVICE_URL"),  # None: the local controller decides
        objective=Objective(w_loss=5.0, w_memory=0.5, w_energy=0.25, w_time=0.25),
        interval_steps=args.interval,
        planned_steps=args.steps,
        controller=args.controller,  # decides locally, or answers when the service cannot
        decision_log=args.decision_log,
    )
    with hook:
        for step in range(args.steps):
            x, y = corpus.get_batch("train", args.batch_size, args.seq_len, gen)
            logits = model(x.to(device))  # (B, T, 256): next-byte logits
            loss = F.cross_entropy(logits.flatten(0, 1), y.to(device).flatten())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            hook.step(loss)  # MANGO: the one line in the loop
            if (step + 1) % args.interval == 0 and hook.history:
                rec = hook.history[-1]
                print(
                    f"step {rec.step:>5}  loss {rec.loss:.3f}  {rec.setting.label():<10}  "
                    f"state {rec.state_bytes / opt.dense_state_bytes():.1%} of AdamW's  "
                    f"energy {rec.energy_j:.1f} J ({rec.energy_source})",
                    flush=True,
                )
    c = hook.counters
    final = hook.history[-1].loss if hook.history else math.nan
    print(
        f"final: loss={final:.4f} setting={opt.setting.label()} "
        f"state_bytes_per_param={opt.state_bytes() / (opt.dense_state_bytes() / 8):.3f} "
        f"decisions={c['decisions']} service={c['service_decisions']} local={c['local_decisions']} "
        f"fallbacks={c['fallbacks']} changes={c['setting_changes']}"
    )
    return 0 if math.isfinite(final) else 1


if __name__ == "__main__":
    sys.exit(main())
