"""The shipped default policy: ``tinyformer-ppo.json`` (manifest) + ``tinyformer-ppo.safetensors`` (weights).

The policy service answers the ``default`` policy with it (``policy_service.config.DEFAULT_POLICY_DIR``) and
:class:`client.hook.AdaptiveCompression` runs it in-process when no server is given
(:func:`client.policy.load_default_policy`). The manifest's ``training.command`` is the ``mango train``
command that produced it (it wrote to ``agents/default_policy``, this folder's former place), and its
``metrics`` are the held-out evaluation at export time; see ``BENCHMARKS.md`` for the full evaluation against
the heuristics. The folder is a package so that the artifact ships in the wheel as package data.
"""

from pathlib import Path

__all__ = ["DIRECTORY"]

#: This folder: where the shipped artifact lies, in a checkout and in an installed package alike.
DIRECTORY = Path(__file__).resolve().parent
