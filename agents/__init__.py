"""agents: learning the compression controller (see docs/architecture.md and DESIGN section 7).

Serving needs only the first two modules (pure torch, no SB3, no gymnasium); the rest is the training stack.

* :mod:`agents.tinyformer` - ``TinyFormer``: the policy network (encoder + linear action/value heads).
* :mod:`agents.artifact` - policy artifacts: safetensors weights + JSON manifest, verified on load.
* :mod:`agents.extractor` - SB3 features extractors: ``TinyFormerExtractor``, same-size ``MLPExtractor``.
* :mod:`agents.train` - ``mango train``: PPO over the vectorized surrogate, held-out evaluation, export.
* :mod:`agents.export` - SB3 policy <-> TinyFormer mapping and artifact export.
* :mod:`agents.evaluate` - ``mango eval``: the policy against static settings and the heuristics.
* :mod:`agents.rollout` - batched surrogate episodes (evaluation, static-grid sweeps).
* :mod:`agents.vec` - reward scaling wrappers.
* :mod:`agents.callbacks` - SB3 callbacks of `mango train` (held-out evaluation, wall-clock limit).
* ``agents/default_policy/`` - the shipped default policy the service serves out of the box.

Nothing is imported here, so ``import agents.tinyformer`` stays light for the service.
"""

__all__: list[str] = []
