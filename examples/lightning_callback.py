"""PyTorch Lightning: a callback that attaches MANGO's AdaptiveCompression to a LightningModule's optimizer.

Optional extra: ``pip install -e ".[integrations]"`` (PyTorch Lightning; either the ``lightning`` or the
``pytorch-lightning`` package works). The module returns a :class:`~client.compression.MangoAdamW` from
``configure_optimizers``; :class:`MangoCallback` does the rest::

    trainer = pl.Trainer(max_steps=1000, callbacks=[MangoCallback(interval_steps=20)])
    trainer.fit(module, loader)

The callback builds the hook when training starts, calls ``hook.step(loss)`` once per optimizer step (not
per batch, so gradient accumulation is handled), logs ``mango/*`` metrics at each interval boundary, and
closes the hook when training ends or fails. ``server_url`` defaults to ``MANGO_SERVICE_URL`` (and the key
to ``MANGO_API_KEY``); without one the local controller decides.

Run the example (the byte-level LM on the stdlib corpus)::

    python examples/lightning_callback.py --steps 100
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

try:  # the unified package first, then the standalone one
    import lightning.pytorch as pl
except ImportError:
    try:
        import pytorch_lightning as pl  # type: ignore[no-redef]
    except ImportError as exc:
        raise ImportError(
            "examples/lightning_callback.py needs PyTorch Lightning: pip install -e '.[integrations]'"
        ) from exc

from client.compression import MangoAdamW
from client.hook import AdaptiveCompression
from client.protocol import Objective
from envs.data import load_corpus
from envs.models import build_model

__all__ = ["MangoCallback"]


class MangoCallback(pl.Callback):
    """Attach :class:`~client.hook.AdaptiveCompression` to the trainer's (single) MangoAdamW.

    :param server_url: policy service root; default ``MANGO_SERVICE_URL``; ``None``/empty: local controller.
    :param objective: the job's trade-off (default: loss only).
    :param interval_steps: optimizer steps per control interval.
    :param controller: local controller name or instance (decides without a service, falls back with one).
    :param hook_kwargs: any other :class:`AdaptiveCompression` argument (``api_key``, ``decision_log``,
        ``job_id``, ``policy``, ``client_options``, ...).
    """

    def __init__(
        self,
        server_url: str | None = None,
        objective: Objective | None = None,
        interval_steps: int = 50,
        controller: Any = "accordion",
        **hook_kwargs: Any,
    ) -> None:
        super().__init__()
        self.server_url = (
            server_url if server_url is not None else os.environ.get("MANGO_SERVICE_URL") or None
        )
        self.objective = objective
        self.interval_steps = interval_steps
        self.controller = controller
        self.hook_kwargs = hook_kwargs
        self.hook: AdaptiveCompression | None = None
        self._last_global_step = -1

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        opts = trainer.optimizers
        if len(opts) != 1 or not isinstance(opts[0], MangoAdamW):
            raise TypeError(
                "MangoCallback needs configure_optimizers() to return one client.compression.MangoAdamW, "
                f"got {[type(o).__name__ for o in opts]}"
            )
        planned = trainer.estimated_stepping_batches
        self.hook = AdaptiveCompression(
            opts[0],
            server_url=self.server_url,
            objective=self.objective,
            interval_steps=self.interval_steps,
            planned_steps=int(planned) if math.isfinite(planned) and planned > 0 else None,
            controller=self.controller,
            **self.hook_kwargs,
        )
        self._last_global_step = trainer.global_step

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if self.hook is None or trainer.global_step == self._last_global_step:
            return  # no optimizer step on this batch (gradient accumulation)
        self._last_global_step = trainer.global_step
        loss = outputs["loss"] if isinstance(outputs, Mapping) else outputs
        if loss is None:
            return
        self.hook.step(loss.detach() if isinstance(loss, torch.Tensor) else float(loss))
        history = self.hook.history
        if history and history[-1].step == self.hook.steps:  # an interval just closed
            rec = history[-1]
            pl_module.log_dict(
                {
                    "mango/rank": float(rec.setting.rank),
                    "mango/bits": float(rec.setting.bits),
                    "mango/gamma": rec.setting.gamma,
                    "mango/state_bytes": float(rec.state_bytes),
                    "mango/energy_j": rec.energy_j,
                },
                on_step=True,
                on_epoch=False,
            )

    def _close(self) -> None:
        if self.hook is not None:
            self.hook.close()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close()

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._close()


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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--interval", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--corpus-bytes", type=int, default=1_000_000)
    p.add_argument("--decision-log", default=None, help="JSON-lines decision log (appended to)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = p.parse_args(argv)
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
