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

import math
import os
import sys
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
import tyro

from client.compression import MangoAdamW
from client.hook import AdaptiveCompression
from client.protocol import Objective
from envs.data import load_corpus
from envs.models import build_model


def _default_threads() -> int:
    """Half the cores, at most 4: the example's small matrices gain nothing from more threads, and on a
    shared 2-core machine torch's default (every core) ran 3x slower than one thread (BENCHMARKS.md)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(4, cores // 2))


@dataclass
class ExampleArgs:
    """MangoAdamW + AdaptiveCompression in a plain PyTorch loop (a local controller, or the service)."""

    steps: int = 200
    """optimizer steps"""
    interval: int = 20
    """optimizer steps per control interval"""
    batch_size: int = 16
    """windows per batch"""
    seq_len: int = 64
    """bytes per window (<= 64 for lm-tiny)"""
    controller: str = "accordion"
    """local controller: static | accordion | loraven"""
    decision_log: str | None = None
    """JSON-lines decision log (appended to)"""
    corpus_bytes: int = 1_000_000
    """size of the stdlib byte corpus"""
    threads: int = field(default_factory=_default_threads)
    """torch CPU threads (0: torch's default; default: half the cores, at most 4)"""


def main(argv: list[str] | None = None) -> int:
    args = tyro.cli(ExampleArgs, args=argv, description=ExampleArgs.__doc__)
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
