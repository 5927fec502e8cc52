"""``mango bench heads``: what a policy's action heads say on surrogate episodes, beside static settings.

For one workload, hardware profile, objective preset and depth: the policy's greedy settings per interval
(first episode), each head's probabilities at one interval (``--interval``, first episode; a joint head's
marginals), and the mean
``J`` (the users' objective, lower is better) and per-interval return (higher is better) of the policy and of
each ``--settings`` label played statically on the same episodes. It shows whether a policy's choice is the
surrogate's (the reward ranks it first) or the heads' (a better setting exists and the heads give it ~0).

Example::

    mango bench heads --policy-dir results/policy-s18c33 --settings r64/b4/g0 r64/b8/g0 r32/b8/g0
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tyro

from agents.evaluate import hardware_sampler
from agents.rollout import run_surrogate, static_grid_returns
from client.policy.artifact import load_artifact
from client.policy.learned import DEFAULT_POLICY_DIR
from client.protocol import DEFAULT_GRID, CompressionSetting

__all__ = ["HeadsArgs", "main"]


@dataclass
class HeadsArgs:
    """A policy's heads on surrogate episodes, beside static settings."""

    policy_dir: str = str(DEFAULT_POLICY_DIR)
    """a policy artifact directory (``results/policy-NAME``) or manifest path (default: the shipped policy)"""
    workload: str = "gpu-gpt85m-cosine"
    hardware: str = "h200-gpt85m"
    preset: str = "memory-first"
    depth: tuple[float, float] = (0.31, 0.31)
    episodes: int = 32
    seed: int = 100000
    interval: int = 3
    """0-based interval whose head probabilities are printed"""
    settings: tuple[str, ...] = ("r64/b4/g0", "r64/b8/g0", "r32/b8/g0", "r0/b8/g0")


def _probs(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max())
    return e / e.sum()


def main(argv: list[str] | None = None) -> int:
    args = tyro.cli(HeadsArgs, args=argv, prog="mango bench heads", description=HeadsArgs.__doc__)
    model = load_artifact(args.policy_dir).model
    seeds = [args.seed + i for i in range(args.episodes)]
    hardware = hardware_sampler(args.hardware)
    seen: list[np.ndarray] = []

    def act(obs: np.ndarray) -> np.ndarray:
        seen.append(obs[:1].copy())
        return model.act(obs).reshape(len(obs), 3)

    run = run_surrogate(act, args.workload, args.preset, seeds, None, hardware, args.depth)
    t = min(args.interval, len(seen) - 1)
    logits = np.asarray(model.logits(seen[t])).reshape(-1)
    r, b, _ = DEFAULT_GRID.nvec
    if model.config.joint:  # each component's marginal of the joint distribution
        joint = _probs(logits).reshape(DEFAULT_GRID.nvec)
        marginals = (joint.sum(axis=(1, 2)), joint.sum(axis=(0, 2)), joint.sum(axis=(0, 1)))
    else:
        marginals = (_probs(logits[:r]), _probs(logits[r : r + b]), _probs(logits[r + b :]))
    heads = {
        "rank": (DEFAULT_GRID.ranks, marginals[0]),
        "bits": (DEFAULT_GRID.bits, marginals[1]),
        "gamma": (DEFAULT_GRID.gammas, marginals[2]),
    }
    played = [DEFAULT_GRID.setting(tuple(int(x) for x in a)).label() for a in run.actions[0] if a[0] >= 0]
    print(f"{args.policy_dir} on {args.workload} ({args.hardware}, {args.preset}, depth {args.depth}), "
          f"{args.episodes} episodes from seed {args.seed}")  # fmt: skip
    print(f"greedy settings of the first episode: {' '.join(played)}")
    for name, (values, p) in heads.items():
        print(f"{name} head at interval {t}: " + ", ".join(f"{v}: {q:.3f}" for v, q in zip(values, p)))
    print()
    print("| run | mean J | mean return |")
    print("|---|---|---|")
    print(f"| policy | {run.objective.mean():.3f} | {run.returns.mean():.2f} |")
    acts = np.array([DEFAULT_GRID.action(CompressionSetting.parse(s)) for s in args.settings])
    grid = static_grid_returns(
        args.workload, args.preset, seeds, actions=acts, hardware=hardware, depth=args.depth
    )
    n = len(seeds)
    for i, label in enumerate(args.settings):
        rows = slice(i * n, (i + 1) * n)
        print(f"| static {label} | {grid.objective[rows].mean():.3f} | {grid.returns[rows].mean():.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
