"""HF Transformers: a ``TrainerCallback`` that drives MANGO's AdaptiveCompression inside ``Trainer``.

Hand :class:`~client.compression.MangoAdamW` to the ``Trainer`` through ``optimizers=`` (``None`` lets the
Trainer build its usual linear-warmup schedule on it) and add the callback::

    opt = MangoAdamW(model.parameters(), lr=5e-4, weight_decay=0.01)
    trainer = Trainer(model=model, args=args, train_dataset=ds, optimizers=(opt, None),
                      callbacks=[MangoTrainerCallback(interval_steps=50)])
    trainer.train()                                   # resume: trainer.train(resume_from_checkpoint=True)

**The loss.** A ``TrainerCallback`` is never handed the loss, so the callback puts a forward hook on the
model and reads ``outputs.loss`` (what every HF model returns when the batch has ``labels``) of each
training forward pass. The losses of the micro-batches of one optimizer step (gradient accumulation) are
averaged, or summed when the Trainer normalizes them by the step's token count (``num_items_in_batch``),
on the device, and passed to ``hook.step`` right after ``optimizer.step()`` (``on_optimizer_step``, while
the gradients are still there for the hook's gradient-norm samples). A model whose loss is computed outside
it (a ``compute_loss`` override, ``compute_loss_func``) reports it with :meth:`record_loss`.

**Checkpoints.** At every Trainer save the hook's state goes to ``mango_hook.pt`` in the
``checkpoint-<step>`` folder, beside ``optimizer.pt``; when training resumes at step ``s > 0`` the callback
reads ``<output_dir>/checkpoint-<s>/mango_hook.pt`` (or the folder given as ``resume_from``), so parameters,
optimizer and hook continue bit-exactly.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from client.compression import MangoAdamW
from client.hook import AdaptiveCompression, unwrap_optimizer

if TYPE_CHECKING:
    from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
else:
    try:
        from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
    except ImportError as exc:
        raise ImportError(
            "client.integrations.hf needs HF Transformers: pip install -e '.[integrations]'"
        ) from exc

__all__ = ["HOOK_FILE", "MangoTrainerCallback"]

logger = logging.getLogger(__name__)

#: File name of the hook's state inside a Trainer checkpoint folder.
HOOK_FILE = "mango_hook.pt"


class MangoTrainerCallback(TrainerCallback):
    """Build an :class:`~client.hook.AdaptiveCompression` on the Trainer's MangoAdamW and feed it the loss.

    :param interval_steps: optimizer steps per control interval.
    :param planned_steps: total optimizer steps (the ``progress`` feature); default the Trainer's
        ``max_steps``.
    :param resume_from: checkpoint folder to read the hook from on a resume; default
        ``<output_dir>/checkpoint-<global step>``.
    :param hook_kwargs: any other :class:`AdaptiveCompression` argument (``server_url``, ``api_key``,
        ``objective``, ``controller``, ``decision_log``, ``job_id``, ...).
    """

    def __init__(
        self,
        interval_steps: int = 50,
        planned_steps: int | None = None,
        resume_from: str | os.PathLike[str] | None = None,
        **hook_kwargs: Any,
    ) -> None:
        self.interval_steps = interval_steps
        self.planned_steps = planned_steps
        self.resume_from = resume_from
        self.hook_kwargs = hook_kwargs
        self.hook: AdaptiveCompression | None = None
        self._losses: list[torch.Tensor] = []  # this optimizer step's micro-batch losses
        self._handle: torch.utils.hooks.RemovableHandle | None = None
        self._warned = False
        self._summed = False  # the micro-batch losses add up to the step's (see _on_forward)

    def record_loss(self, loss: torch.Tensor | float) -> None:
        """Report one micro-batch's loss (for losses computed outside the model's forward)."""
        self._losses.append(loss.detach() if isinstance(loss, torch.Tensor) else torch.tensor(float(loss)))

    def _on_forward(self, module: torch.nn.Module, args: Any, kwargs: dict[str, Any], output: Any) -> None:
        if not module.training or not torch.is_grad_enabled():
            return  # evaluation and generation passes
        loss = output.get("loss") if isinstance(output, Mapping) else getattr(output, "loss", None)
        if isinstance(loss, torch.Tensor) and loss.numel() == 1:
            self._losses.append(loss.detach())
            # The Trainer hands num_items_in_batch (the tokens of the whole optimizer step) to models that
            # take it: each micro-batch's loss is then its token sum over the step's tokens, and the step's
            # loss is their sum, not their mean.
            self._summed = kwargs.get("num_items_in_batch") is not None

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        opt = unwrap_optimizer(kwargs.get("optimizer"))
        if not isinstance(opt, MangoAdamW):
            raise TypeError(
                "MangoTrainerCallback needs the Trainer to run a client.compression.MangoAdamW: "
                "Trainer(..., optimizers=(MangoAdamW(model.parameters(), lr=...), None)); "
                f"got {type(opt).__name__}"
            )
        self.hook = AdaptiveCompression(
            opt,
            interval_steps=self.interval_steps,
            planned_steps=self.planned_steps or (state.max_steps if state.max_steps > 0 else None),
            **self.hook_kwargs,
        )
        if state.global_step > 0:  # resumed: the Trainer restored the optimizer, the hook follows it
            folder = Path(self.resume_from or Path(str(args.output_dir)) / f"checkpoint-{state.global_step}")
            path = folder / HOOK_FILE
            if path.is_file():
                self.hook.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            else:
                logger.warning(
                    "resumed at step %d without %s: the hook starts afresh", state.global_step, path
                )
        model = kwargs.get("model")
        if model is not None:
            self._handle = model.register_forward_hook(self._on_forward, with_kwargs=True)
        self._losses.clear()

    def on_optimizer_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.hook is None:
            return
        if not self._losses:
            if not self._warned:
                logger.warning(
                    "MangoTrainerCallback saw no loss for this optimizer step: the model output has no "
                    "'loss' (batches without labels?); report it with callback.record_loss(loss)"
                )
                self._warned = True
            return
        losses = self._losses
        self._losses = []
        stacked = torch.stack([x.float() for x in losses])
        loss = stacked.sum() if self._summed else stacked.mean()
        self.hook.step(loss)

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.hook is None or not state.is_world_process_zero:
            return
        folder = Path(str(args.output_dir)) / f"checkpoint-{state.global_step}"
        if folder.is_dir():
            torch.save(self.hook.state_dict(), folder / HOOK_FILE)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        if self.hook is not None:
            self.hook.close()
