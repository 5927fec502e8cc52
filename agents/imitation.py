"""Behaviour cloning of the surrogate's per-episode oracle: a start for PPO that has seen every setting.

Why: PPO's action heads (rank, bits, gamma: 19 logits) go near-deterministic within a few hundred thousand
steps, and a setting whose probability has reached ~0 is never sampled again, so no later gradient can find
it. Policies trained from a prior keep the prior (``--prior-setting r64/b4/g0`` plays r64/b4/g0 on every
job), and fine-tunes keep their start (BENCHMARKS, issue 13, session 19: on the GPU workloads the shipped
policy plays r32/b8/g0 under memory-first, where r64/b4/g0 scores 35 % better in the same surrogate).

What: for episodes drawn exactly as training draws them (workloads, hardware profiles, objectives, depth),
every static setting of the grid is played on the same episode (same seed: the surrogate's episodes are
determined by it); the best one by the users' objective ``J`` is the episode's label, and the observations
of that setting's own rollout are the inputs. :func:`clone` then fits the policy's action heads to the
labels by cross-entropy. The label is a static setting in hindsight of that episode (the
"static per workload" oracle of ``mango bench headroom``, per episode), so the cloned policy reads the job
from its telemetry, objective and profile; PPO then refines it.

Knobs (``mango train``): ``--bc-episodes`` (labelled episodes; 240 surrogate episodes each, ~0.2 ms an
episode on a CPU core), ``--bc-epochs`` (passes over the data).
"""

from __future__ import annotations

import logging
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from agents.rollout import grid_actions, run_surrogate
from client.protocol import DEFAULT_GRID

__all__ = ["clone", "oracle_dataset"]

log = logging.getLogger(__name__)


def oracle_dataset(
    workloads: list[str],
    hardware: Any,
    depth: tuple[float, float],
    episodes: int,
    seed: int,
    *,
    batch: int = 32,
) -> tuple[np.ndarray, np.ndarray]:
    """``(obs [n, obs_size], actions [n, 3])``: every interval of ``episodes`` episodes with its oracle label.

    ``workloads`` and ``hardware`` as the training env draws them (:func:`agents.train.make_surrogate_env`);
    objectives are sampled per episode as in training. Episode ``j`` is seeded ``seed + j``.
    """
    if episodes < 1:
        raise ValueError(f"episodes={episodes}: give at least 1")
    acts = grid_actions()
    n_s = len(acts)
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    for start in range(0, episodes, batch):
        n = min(batch, episodes - start)
        seeds = [int(s) for s in np.repeat(np.arange(seed + start, seed + start + n), n_s)]
        fixed = np.tile(acts, (n, 1))
        steps: list[np.ndarray] = []

        def act(obs: np.ndarray, fixed: np.ndarray = fixed, steps: list[np.ndarray] = steps) -> np.ndarray:
            steps.append(obs.copy())
            return fixed

        res = run_surrogate(act, workloads, None, seeds, None, hardware, depth)
        best = res.objective.reshape(n, n_s).argmin(axis=1)  # [n]
        rows = np.arange(n) * n_s + best
        for t, obs in enumerate(steps):
            live = res.lengths[rows] > t
            xs.append(obs[rows[live]])
            ys.append(acts[best[live]])
    return np.concatenate(xs).astype(np.float32), np.concatenate(ys).astype(np.int64)


def clone(
    policy: Any, obs: np.ndarray, actions: np.ndarray, *, epochs: int = 5, lr: float = 1e-3, batch: int = 512
) -> list[float]:
    """Fit an SB3 ``ActorCriticPolicy``'s action distribution to ``actions`` (grid indices ``[n, 3]``) by
    cross-entropy; per-epoch mean losses. A joint head (``Discrete`` action space) fits the labels' flat grid
    indices, so it learns settings as wholes; factorized heads fit each component on its own. The value head
    is left as it is (PPO's first rollouts fit it)."""
    if len(obs) != len(actions) or len(obs) == 0:
        raise ValueError(f"{len(obs)} observations and {len(actions)} actions: give equal, non-zero counts")
    device = policy.device
    x = torch.as_tensor(obs, device=device)
    if isinstance(policy.action_space, gym.spaces.Discrete):
        actions = DEFAULT_GRID.ravel(actions)
    y = torch.as_tensor(actions, device=device)
    opt = torch.optim.Adam(policy.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(0)
    losses = []
    policy.train()
    for epoch in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        total, count = 0.0, 0
        for i in range(0, len(x), batch):
            idx = perm[i : i + batch].to(device)
            dist = policy.get_distribution(x[idx])
            loss = -dist.log_prob(y[idx]).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        losses.append(total / count)
        log.info("behaviour cloning epoch %d: cross-entropy %.4f", epoch + 1, losses[-1])
    return losses
