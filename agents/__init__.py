"""agents: learning the compression controller (see docs/architecture.md and DESIGN section 7).

Serving needs none of it: the policy runtime (artifact format, numpy forward pass, ``LearnedPolicy``, the
shipped default policy) lives in :mod:`client.policy`, which this package imports.

* :mod:`agents.tinyformer` - ``TinyFormer``: the policy network in torch (encoder + linear action/value
  heads), in the weight layout of :mod:`client.policy.tinyformer`.
* :mod:`agents.extractor` - SB3 features extractors: ``TinyFormerExtractor``, same-size ``MLPExtractor``.
* :mod:`agents.train` - ``mango train``: PPO over the vectorized surrogate, held-out evaluation, export.
* :mod:`agents.export` - SB3 policy <-> TinyFormer <-> artifact (export, and back for fine-tuning).
* :mod:`agents.evaluate` - ``mango eval``: the policy against static settings and the heuristics.
* :mod:`agents.rollout` - batched surrogate episodes (evaluation, static-grid sweeps).
* :mod:`agents.vec` - reward scaling wrappers.
* :mod:`agents.callbacks` - SB3 callbacks of `mango train` (held-out evaluation, wall-clock limit).

Nothing is imported here, so ``import agents.tinyformer`` does not load SB3.
"""

__all__: list[str] = []
