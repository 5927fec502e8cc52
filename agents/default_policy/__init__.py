"""The shipped default policy: ``tinyformer-ppo.json`` (manifest) + ``tinyformer-ppo.safetensors`` (weights).

``mango serve`` loads it from here (``policy_service.config.DEFAULT_POLICY_DIR``) and answers the ``default``
policy with it. The manifest's ``training.command`` is the ``mango train`` command that produced it, and its
``metrics`` are the held-out evaluation at export time; see ``BENCHMARKS.md`` for the full evaluation
against the heuristics. This file only makes the directory a package, so the artifact ships in the wheel.
"""
