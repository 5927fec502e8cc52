"""PyTorch Lightning example: the byte-level LM trained with MangoAdamW and MANGO's Lightning callback.

The callback lives in the package (:class:`client.integrations.lightning.MangoCallback`; optional extra
``pip install -e ".[integrations]"``). The module returns a :class:`~client.compression.MangoAdamW` from
``configure_optimizers``; the callback does the rest::

    trainer = pl.Trainer(max_steps=1000, callbacks=[MangoCallback(interval_steps=20)])
    trainer.fit(module, loader)              # resume: trainer.fit(module, loader, ckpt_path=...)

Run it (the byte-level LM on the stdlib corpus)::

    python examples/lightning_callback.py --steps 100
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
import tyro

from client.compression import MangoAdamW
from client.integrations.lightning import MangoCallback, pl
from client.protocol import Objective
from envs.data import load_corpus
from envs.models import build_model

__all__ = ["MangoCallback"]  # re-exported: older scripts imported it from here


# ------------------------------------------------------------------------------------------------ example


class ByteLM(pl.LightningModule):
    """The byte-level LM as a LightningModule whose optimizer is MangoAdamW."""

    def __init__(self, lr: float = 3e-3) -> None:
        super().__init__()
        self.model = build_model("lm-tiny", seed=0)
        self.lr = lr

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self.model(x).flatten(0, 1), y.flatten())  # next-byte prediction

    def configure_optimizers(self) -> MangoAdamW:
        return MangoAdamW(self.parameters(), lr=self.lr, weight_decay=0.01)


class CorpusBatches(torch.utils.data.IterableDataset):
    """Endless random windows of the stdlib byte corpus (batched already: use ``batch_size=None``)."""

    def __init__(self, batch_size: int, seq_len: int, corpus_bytes: int) -> None:
        self.corpus = load_corpus(corpus_bytes)
        self.batch_size, self.seq_len = batch_size, seq_len

    def __iter__(self) -> Any:
        gen = torch.Generator().manual_seed(0)
        while True:
            yield self.corpus.get_batch("train", self.batch_size, self.seq_len, gen)


def _default_threads() -> int:
    """Half the cores, at most 4: the example's small matrices gain nothing from more threads, and on a
    shared 2-core machine torch's default (every core) ran 3x slower than one thread (BENCHMARKS.md)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(4, cores // 2))


@dataclass
class ExampleArgs:
    """MangoAdamW + AdaptiveCompression in a Lightning Trainer, through the packaged callback."""

    steps: int = 100
    """optimizer steps"""
    interval: int = 20
    """optimizer steps per control interval"""
    batch_size: int = 16
    """windows per batch"""
    seq_len: int = 64
    """bytes per window"""
    corpus_bytes: int = 1_000_000
    """size of the stdlib byte corpus"""
    decision_log: str | None = None
    """JSON-lines decision log (appended to)"""
    threads: int = field(default_factory=_default_threads)
    """torch CPU threads (0: torch's default; default: half the cores, at most 4)"""


def main(argv: list[str] | None = None) -> int:
    args = tyro.cli(ExampleArgs, args=argv, description=ExampleArgs.__doc__)
    if args.threads:
        torch.set_num_threads(args.threads)

    module = ByteLM()
    loader = torch.utils.data.DataLoader(
        CorpusBatches(args.batch_size, args.seq_len, args.corpus_bytes), batch_size=None
    )
    callback = MangoCallback(
        objective=Objective(w_loss=5.0, w_memory=0.5, w_energy=0.25, w_time=0.25),
        interval_steps=args.interval,
        decision_log=args.decision_log,
    )
    trainer = pl.Trainer(
        max_steps=args.steps,
        accelerator="auto",
        devices=1,
        callbacks=[callback],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tempfile.gettempdir(),
    )
    trainer.fit(module, loader)
    hook = callback.hook
    assert hook is not None
    c = hook.counters
    final = hook.history[-1].loss if hook.history else math.nan
    opt = hook.optimizer
    print(
        f"final: loss={final:.4f} setting={opt.setting.label()} steps={hook.steps} "
        f"state_bytes_per_param={opt.state_bytes() / (opt.dense_state_bytes() / 8):.3f} "
        f"decisions={c['decisions']} service={c['service_decisions']} local={c['local_decisions']} "
        f"fallbacks={c['fallbacks']} changes={c['setting_changes']}"
    )
    return 0 if math.isfinite(final) else 1


if __name__ == "__main__":
    sys.exit(main())
