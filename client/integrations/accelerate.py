"""HF Accelerate: the hook on a prepared MangoAdamW, saved and restored by ``accelerator.save_state``.

::

    opt = MangoAdamW(model.parameters(), lr=3e-4)
    model, opt, loader = accelerator.prepare(model, opt, loader)
    hook = attach(accelerator, opt, interval_steps=50)     # before accelerator.load_state(...)
    for batch in loader:
        with accelerator.accumulate(model):
            loss = model(**batch).loss
            accelerator.backward(loss)
            opt.step(); opt.zero_grad()
        if accelerator.sync_gradients:                     # one hook step per optimizer step
            hook.step(loss.detach())

``accelerate`` wraps the optimizer in an ``AcceleratedOptimizer``; :class:`~client.hook.AdaptiveCompression`
unwraps it. ``attach`` registers the hook with ``accelerator.register_for_checkpointing``, so
``accelerator.save_state(dir)`` writes it beside the optimizer and ``accelerator.load_state(dir)`` restores
it after the optimizer (the order a bit-exact resume needs).
"""

from __future__ import annotations

from typing import Any

from client.hook import AdaptiveCompression

__all__ = ["attach"]


def attach(accelerator: Any, optimizer: Any, **hook_kwargs: Any) -> AdaptiveCompression:
    """Build an :class:`~client.hook.AdaptiveCompression` on ``optimizer`` (an ``AcceleratedOptimizer`` around
    a MangoAdamW, or the MangoAdamW itself) and register it for the accelerator's checkpoints.

    :param accelerator: the ``accelerate.Accelerator`` that prepared the optimizer.
    :param hook_kwargs: :class:`AdaptiveCompression` arguments (``interval_steps``, ``server_url``, ...).
        Give the ``server_url`` to the main process only (``accelerator.is_main_process``) when training on
        several processes.
    """
    hook = AdaptiveCompression(optimizer, **hook_kwargs)
    accelerator.register_for_checkpointing(hook)
    return hook
