"""MANGO inside the trainers people use: one module per framework, each importing its framework lazily.

=====================================  =====================================================================
module                                 what it gives
=====================================  =====================================================================
:mod:`client.integrations.lightning`   ``MangoCallback``: a Lightning ``Callback`` that builds the hook on
                                       the module's MangoAdamW, feeds it the loss per optimizer step and
                                       saves it in Lightning's checkpoints (``trainer.fit(ckpt_path=...)``)
:mod:`client.integrations.hf`          ``MangoTrainerCallback``: an HF Transformers ``TrainerCallback`` that
                                       receives the loss (a forward hook on the model) and saves the hook
                                       beside the optimizer in each ``checkpoint-<step>`` folder
:mod:`client.integrations.accelerate`  ``attach``: the hook on an ``accelerator.prepare``-d MangoAdamW,
                                       registered for ``accelerator.save_state`` / ``load_state``
=====================================  =====================================================================

Install the frameworks with ``pip install -e ".[integrations]"``; the package itself imports none of them,
so ``import client.integrations`` always works. Every integration resumes bit-exactly through the framework's
own checkpointing (parameters, optimizer and hook; tested in ``tests/client/test_integrations.py``).
"""

from __future__ import annotations

__all__: list[str] = []
