"""PyTorch Lightning: a callback that attaches MANGO's AdaptiveCompression to a LightningModule's optimizer.

Install with ``pip install -e ".[integrations]"`` (either the ``lightning`` or the ``pytorch-lightning``
package; with both installed the callback subclasses ``lightning.pytorch.Callback``). The module returns a
:class:`~client.compression.MangoAdamW` from ``configure_optimizers``; :class:`MangoCallback` does the rest::

    trainer = pl.Trainer(max_steps=1000, callbacks=[MangoCallback(interval_steps=20)])
    trainer.fit(module, loader)                       # resume: trainer.fit(module, loader, ckpt_path=...)

The callback builds the hook when training starts, calls ``hook.step(loss)`` once per optimizer step (not
per batch, so gradient accumulation is handled), logs ``mango/*`` metrics at each interval boundary, and
closes the hook when training ends or fails. Its ``state_dict`` is the hook's, so every Lightning checkpoint
carries the hook and ``ckpt_path=`` resumes it (after the optimizer, as a bit-exact resume needs).
``server_url`` defaults to ``MANGO_SERVICE_URL`` (and the key to ``MANGO_API_KEY``); without one the local
controller decides.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from client.compression import MangoAdamW
from client.hook import AdaptiveCompression, unwrap_optimizer
from client.protocol import Objective

if TYPE_CHECKING:
    import pytorch_lightning as pl
else:
    try:  # the unified package first, then the standalone one
        import lightning.pytorch as pl
    except ImportError:
        try:
            import pytorch_lightning as pl
        except ImportError as exc:
            raise ImportError(
                "client.integrations.lightning needs PyTorch Lightning: pip install -e '.[integrations]'"
            ) from exc

__all__ = ["MangoCallback"]


class MangoCallback(pl.Callback):
    """Attach :class:`~client.hook.AdaptiveCompression` to the trainer's (single) MangoAdamW.

    :param server_url: policy service root; default ``MANGO_SERVICE_URL``; ``None``/empty: local controller.
    :param objective: the job's trade-off (default: loss only).
    :param interval_steps: optimizer steps per control interval.
    :param controller: local controller name or instance (decides without a service, falls back with one).
    :param planned_steps: total optimizer steps of the job (the ``progress`` feature); default the trainer's
        ``estimated_stepping_batches``. Pass it when a job runs in several ``fit`` calls with different
        ``max_steps``/``max_epochs``, so that progress means the same thing before and after a resume.
    :param hook_kwargs: any other :class:`AdaptiveCompression` argument (``api_key``, ``decision_log``,
        ``job_id``, ``policy``, ``client_options``, ...).
    """

    def __init__(
        self,
        server_url: str | None = None,
        objective: Objective | None = None,
        interval_steps: int = 50,
        controller: Any = "accordion",
        planned_steps: int | None = None,
        **hook_kwargs: Any,
    ) -> None:
        super().__init__()
        self.server_url = (
            server_url if server_url is not None else os.environ.get("MANGO_SERVICE_URL") or None
        )
        self.objective = objective
        self.interval_steps = interval_steps
        self.controller = controller
        self.planned_steps = planned_steps
        self.hook_kwargs = hook_kwargs
        self.hook: AdaptiveCompression | None = None
        self._pending: dict[str, Any] | None = (
            None  # a checkpoint's hook state, loaded before the hook exists
        )
        self._last_global_step = -1

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        opts = [unwrap_optimizer(o) for o in trainer.optimizers]
        if len(opts) != 1 or not isinstance(opts[0], MangoAdamW):
            raise TypeError(
                "MangoCallback needs configure_optimizers() to return one client.compression.MangoAdamW, "
                f"got {[type(o).__name__ for o in opts]}"
            )
        planned = self.planned_steps
        if planned is None:
            estimate = trainer.estimated_stepping_batches
            planned = int(estimate) if math.isfinite(estimate) and estimate > 0 else None
        self.hook = AdaptiveCompression(
            opts[0],
            server_url=self.server_url,
            objective=self.objective,
            interval_steps=self.interval_steps,
            planned_steps=planned,
            controller=self.controller,
            **self.hook_kwargs,
        )
        if self._pending is not None:  # Lightning restored the optimizer already: the hook follows it
            self.hook.load_state_dict(self._pending)
            self._pending = None
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

    # Lightning saves a callback's state_dict in every checkpoint and hands it back on ckpt_path= resumes.
    def state_dict(self) -> dict[str, Any]:
        if self.hook is not None:
            return {"hook": self.hook.state_dict()}
        return {"hook": self._pending}  # saved before training started: what was loaded, if anything

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Lightning calls this before on_train_start: the state waits for the hook built there, after the
        # optimizer's state is restored
        self._pending = state_dict.get("hook")

    def _close(self) -> None:
        if self.hook is not None:
            self.hook.close()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close()

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._close()
