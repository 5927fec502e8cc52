"""MANGO in a DistributedDataParallel job: the loop of ``plain_loop.py`` on several processes.

Every rank builds its own MangoAdamW and AdaptiveCompression (the lines marked ``# MANGO``); rank 0 decides
each interval's setting (by default the shipped learned policy, in-process; the service when
``MANGO_SERVICE_URL`` is set) and the hook broadcasts it, so every replica steps the same update. Launch it
with torchrun (gloo on CPUs, NCCL on GPUs)::

    torchrun --standalone --nproc-per-node 2 examples/ddp_train.py --steps 200

Each rank prints a ``final:`` line with a checksum of its parameters: the same on every rank.
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
from dataclasses import dataclass
from typing import NoReturn

import torch
import torch.distributed as dist
import torch.nn.functional as F
import tyro
from torch.nn.parallel import DistributedDataParallel as DDP

from client.compression import MangoAdamW
from client.hook import AdaptiveCompression
from client.protocol import Objective
from envs.data import load_corpus
from envs.models import build_model


@dataclass
class DDPExampleArgs:
    """MangoAdamW + AdaptiveCompression under DDP (run with torchrun)."""

    steps: int = 200
    """optimizer steps"""
    interval: int = 20
    """optimizer steps per control interval"""
    batch_size: int = 16
    """windows per batch and rank"""
    seq_len: int = 64
    """bytes per window (<= 64 for lm-tiny)"""
    controller: str = "learned"
    """rank 0's local controller: learned (the shipped policy) or a heuristic (accordion, loraven, ...)"""
    corpus_bytes: int = 1_000_000
    """size of the stdlib byte corpus"""
    threads: int = 1
    """torch CPU threads per rank"""


def main(argv: list[str] | None = None) -> int:
    args = tyro.cli(DDPExampleArgs, args=argv, description=DDPExampleArgs.__doc__)
    torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo")
    rank = dist.get_rank()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    try:
        corpus = load_corpus(args.corpus_bytes)
        model = build_model("lm-tiny", seed=0).to(device)  # the same start on every rank
        ddp = DDP(model, device_ids=[device.index] if cuda else None)
        gen = torch.Generator().manual_seed(rank)  # each rank its own batches

        opt = MangoAdamW(model.parameters(), lr=3e-3, weight_decay=0.01)  # MANGO: instead of AdamW
        hook = AdaptiveCompression(  # MANGO: every rank builds one; rank 0 decides
            opt,
            server_url=os.environ.get("MANGO_SERVICE_URL"),
            objective=Objective(w_loss=5.0, w_memory=0.5, w_energy=0.25, w_time=0.25),
            interval_steps=args.interval,
            planned_steps=args.steps,
            controller=args.controller,
        )
        with hook:
            for _ in range(args.steps):
                x, y = corpus.get_batch("train", args.batch_size, args.seq_len, gen)
                logits = ddp(x.to(device))
                loss = F.cross_entropy(logits.flatten(0, 1), y.to(device).flatten())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                hook.step(loss)  # MANGO: the one line in the loop
        flat = torch.cat([p.detach().reshape(-1).float().cpu() for p in model.parameters()])
        digest = hashlib.sha256(flat.numpy().tobytes()).hexdigest()[:16]
        final = hook.history[-1].loss if hook.history else math.nan
        c = hook.counters
        print(
            f"final: rank={rank} loss={final:.4f} setting={opt.setting.label()} params={digest} "
            f"decisions={c['decisions']} changes={c['setting_changes']}",
            flush=True,
        )
        return 0 if math.isfinite(final) else 1
    except BaseException:
        dist.destroy_process_group()
        raise


def end_rank(code: int) -> NoReturn:
    """End this rank without interpreter teardown, its results printed.

    Freeing a gloo process group joins its worker threads while the freeing thread holds the GIL; a worker
    that is still releasing a finished collective's tensor waits for the GIL, and the rank never exits (seen
    under load on a 2-core machine: both ranks printed ``final:``, one hung in ``~Reducer ->
    ~ProcessGroupGloo -> std::thread::join``; a barrier first did not prevent it). So the process group is
    left to the operating system: nothing of the job is lost, everything is printed and flushed."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    end_rank(main())
