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

PPO after a clone can still drift from it where the reward's gradient is weak: under loss-first the rewards
(divided by the objective's weight sum, 20) are small beside memory-first's, so the shared encoder follows
the presets with larger advantages and the clone's objective-dependent choice erodes (session 20: a clone
that played the best static setting of every preset on the GPU workload played r64/b4/g0 under loss-first too
after PPO). :class:`CloneAnchor` keeps a cross-entropy term on the oracle's labels during PPO.

Knobs (``mango train``): ``--bc-episodes`` (labelled episodes; 240 surrogate episodes each, ~0.2 ms an
episode on a CPU core), ``--bc-epochs`` (passes over the data), ``--bc-lr`` (the clone's learning rate),
``--bc-anchor`` (the anchor's weight during PPO; 0: off).
"""

from __future__ import annotations

import logging
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback

from agents.rollout import grid_actions, run_surrogate
from client.protocol import DEFAULT_GRID

__all__ = ["CloneAnchor", "clone", "oracle_dataset"]

log = logging.getLogger(__name__)


def oracle_dataset(
    workloads: list[str],
    hardware: Any,
    depth: tuple[float, float],
    episodes: int,
    seed: int,
    *,
    batch: int = 32,
    explore: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """``(obs [n, obs_size], actions [n, 3])``: every interval of ``episodes`` episodes with its oracle label.

    ``workloads`` and ``hardware`` as the training env draws them (:func:`agents.train.make_surrogate_env`);
    objectives are sampled per episode as in training. Episode ``j`` is seeded ``seed + j``.

    ``explore``: with 0 the inputs are the label's own rollout, so from the second interval on the
    observation's current setting *is* the label, and a clone can score by copying it ("stay where you
    are"): one early deviation then persists (session 20: on an H100 the clone-started policy moved from
    r64/b4/g0 to r32/b4/g0 once and stayed). With ``explore`` p > 0 the episode is played again with a
    random grid setting in place of the label at each interval with probability p, and those observations
    carry the label: the current setting no longer gives the label away.
    """
    if episodes < 1:
        raise ValueError(f"episodes={episodes}: give at least 1")
    if not 0.0 <= explore <= 1.0:
        raise ValueError(f"explore={explore}: give a probability in [0, 1]")
    rng = np.random.default_rng(seed)
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
        if explore > 0:  # the same episodes again, the label played with random deviations
            labels = acts[best]
            seen: list[np.ndarray] = []

            def deviate(
                obs: np.ndarray, labels: np.ndarray = labels, seen: list[np.ndarray] = seen
            ) -> np.ndarray:
                seen.append(obs.copy())
                a = labels.copy()
                off = rng.random(len(a)) < explore
                a[off] = acts[rng.integers(n_s, size=int(off.sum()))]
                return a

            played = run_surrogate(deviate, workloads, None, seeds[::n_s], None, hardware, depth)
            for t, obs in enumerate(seen):
                live = played.lengths > t
                xs.append(obs[live])
                ys.append(labels[live])
            continue
        rows = np.arange(n) * n_s + best
        for t, obs in enumerate(steps):
            live = res.lengths[rows] > t
            xs.append(obs[rows[live]])
            ys.append(acts[best[live]])
    return np.concatenate(xs).astype(np.float32), np.concatenate(ys).astype(np.int64)


def _labels(policy: Any, actions: np.ndarray) -> np.ndarray:
    """Grid actions ``[n, 3]`` in the policy's action space: flat indices for a joint head."""
    return DEFAULT_GRID.ravel(actions) if isinstance(policy.action_space, gym.spaces.Discrete) else actions


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
    y = torch.as_tensor(_labels(policy, actions), device=device)
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


class CloneAnchor(BaseCallback):
    """During PPO, ``steps`` minibatches of ``coef`` x the cross-entropy on the oracle's labels after every
    rollout's update, through the policy's own optimizer (so PPO's learning-rate schedule applies to both).

    :param obs: observations of :func:`oracle_dataset`.
    :param actions: their labels (grid indices ``[n, 3]``).
    :param coef: the term's weight. Its steps share PPO's Adam state, so ``coef`` sets the size of their
        gradients beside PPO's in Adam's second-moment estimate (not a linear weight): with ``coef`` 1 an
        anchor step moves the weights about as far as a PPO step where the two gradients are alike.
    :param steps: minibatches per rollout (PPO takes ``n_epochs x n_envs x n_steps / batch``, 16 by default).
    :param batch: minibatch size.
    """

    def __init__(
        self, obs: np.ndarray, actions: np.ndarray, coef: float, *, steps: int = 4, batch: int = 512
    ) -> None:
        super().__init__()
        if coef <= 0 or steps < 1 or batch < 1 or len(obs) != len(actions) or len(obs) == 0:
            raise ValueError(
                f"coef={coef}, steps={steps}, batch={batch}, {len(obs)} observations and {len(actions)} "
                "labels: give coef > 0, steps >= 1, batch >= 1 and equal, non-zero counts"
            )
        self._obs, self._actions = obs, actions
        self.coef, self.steps, self.batch = coef, steps, batch
        self._gen = torch.Generator().manual_seed(1)
        self.losses: list[float] = []

    def _on_rollout_start(self) -> None:
        policy = self.model.policy
        if self.model.num_timesteps == 0:
            return  # before the first rollout: nothing to anchor yet
        x = torch.as_tensor(self._obs, device=policy.device)
        y = torch.as_tensor(_labels(policy, self._actions), device=policy.device)
        policy.set_training_mode(True)
        total = 0.0
        for _ in range(self.steps):
            idx = torch.randint(len(x), (self.batch,), generator=self._gen).to(policy.device)
            loss = -self.coef * policy.get_distribution(x[idx]).log_prob(y[idx]).mean()
            policy.optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), self.model.max_grad_norm)
            policy.optimizer.step()
            total += float(loss.detach()) / self.coef
        policy.set_training_mode(False)  # as PPO's rollouts expect
        self.losses.append(total / self.steps)
        self.logger.record("train/clone_anchor_ce", self.losses[-1])

    def _on_step(self) -> bool:
        return True
