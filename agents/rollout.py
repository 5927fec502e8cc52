"""Batched evaluation episodes on the vectorized surrogate (numpy-fast; used by training and ``mango eval``).

:func:`run_surrogate` plays one episode per seed of a single workload under a fixed objective, with every
episode's actions from one batched function ``act(obs [n, size]) -> actions [n, 3]``, and returns per-episode
returns and reward terms. Sub-env ``i`` seeded with ``seeds[i]`` plays exactly the episode that
``CompressionEnv(backend="surrogate", workload=w, objective=o).reset(seed=seeds[i])`` plays (the env's
contract), so these numbers and the single-env evaluation of closed-loop controllers are on the same
episodes.

:func:`static_grid_returns` evaluates every setting of the action grid as an open-loop controller in one
batch (``n_settings * n_seeds`` episodes side by side).

Each episode is scored two ways (:meth:`EpisodeBatch.scores`): ``"final"`` (default everywhere) by the
users' objective ``J`` of :func:`envs.reward.episode_objective` (final loss term ``l_T``, mean memory /
energy / time: the scalar the demo's verdict uses), negated so higher is better; ``"interval"`` by the
return with the per-interval loss credit (the sum of ``w_loss * l_t`` over the intervals, the score of
earlier sessions), kept for comparison.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from client.protocol import DEFAULT_GRID, CompressionSetting, Objective
from envs.fit import default_model
from envs.reward import TERM_NAMES, RewardConfig, episode_objective
from envs.surrogate import SurrogateVecEnv
from envs.surrogate_model import SurrogateModel

__all__ = [
    "SCORES",
    "EpisodeBatch",
    "Score",
    "StaticBaseline",
    "best_static",
    "grid_actions",
    "run_surrogate",
    "sb3_actor",
    "static_grid_returns",
    "surrogate_id",
]

Actor = Callable[[np.ndarray], np.ndarray]

#: How an episode is scored (module docstring); "final" is the default of eval and selection.
Score = Literal["final", "interval"]
SCORES: tuple[str, ...] = ("final", "interval")

#: The reward the evaluation episodes are played with: the per-interval credit, so ``returns`` is the
#: per-interval sum whatever reward a policy was trained with (the final score is computed from the terms).
EVAL_REWARD = RewardConfig(loss_credit="interval")


@dataclass
class EpisodeBatch:
    """Results of ``n`` episodes (one per seed).

    :ivar returns: ``[n]`` sum of the (penalized, scalarized) rewards over the episode's control intervals.
    :ivar terms: ``[n, 4]`` mean per interval of the raw terms ``(loss, memory, energy, time)``.
    :ivar actions: ``[n, K, 3]`` grid indices chosen at each interval (``-1`` after an early end).
    :ivar lengths: ``[n]`` control intervals played.
    :ivar diverged: ``[n]`` whether the episode ended by divergence.
    :ivar over_budget: ``[n]`` intervals over the memory budget.
    :ivar final_loss: ``[n]`` the last interval's loss term ``l_T`` (final loss relative to the uncompressed
        run's at the same step).
    :ivar objective: ``[n]`` the users' objective ``J`` of each episode (lower is better;
        :func:`envs.reward.episode_objective`).
    """

    returns: np.ndarray
    terms: np.ndarray
    actions: np.ndarray
    lengths: np.ndarray
    diverged: np.ndarray
    over_budget: np.ndarray
    final_loss: np.ndarray
    objective: np.ndarray

    def scores(self, kind: Score = "final") -> np.ndarray:
        """``[n]`` per-episode scores, higher is better: ``-objective`` (``"final"``) or ``returns``
        (``"interval"``)."""
        if kind not in SCORES:
            raise ValueError(f"score {kind!r}; choose one of {SCORES}")
        return -self.objective if kind == "final" else self.returns


def run_surrogate(
    act: Actor,
    workload: str | Sequence[str],
    objective: Objective | str | None,
    seeds: Sequence[int],
    model: SurrogateModel | None = None,
    hardware: Any = "default",
    depth: tuple[float, float] = (0.0, 0.0),
    initial_setting: CompressionSetting | None = None,
) -> EpisodeBatch:
    """One episode per seed of ``workload`` under ``objective``, actions from ``act`` (module docstring).

    ``workload`` may be a list (each episode draws one, by its seed) and ``objective`` ``None`` (each episode
    samples one as training does): a seed still fixes its episode, so every setting can be replayed on it.

    ``hardware``: the surrogate's hardware draws (:class:`envs.hardware.HardwareSampler`; default: the
    training distribution). ``depth``: the reference's extra log-drop draws
    (:class:`envs.simulator.SurrogateEngine`; default: the recorded curves). ``initial_setting``: the
    first interval's setting (default: the first decision's, as a job's hook makes it)."""
    n = len(seeds)
    env = SurrogateVecEnv(
        num_envs=n,
        workload=workload,
        objective=objective,
        model=model,
        hardware=hardware,
        reward=EVAL_REWARD,
        depth=depth,
        initial_setting=initial_setting,
    )
    obs, _ = env.reset(seed=[int(s) for s in seeds])
    eng = env.engine
    weights, budget = eng.weights.copy(), eng.budget.copy()
    ref_state = eng.s_ref_state[eng.w].astype(np.float64)
    final_loss = np.zeros(n)
    kmax = int(eng.kmax)
    returns = np.zeros(n)
    term_sums = np.zeros((n, 4))
    actions = np.full((n, kmax, 3), -1, dtype=np.int64)
    lengths = np.zeros(n, dtype=np.int64)
    diverged = np.zeros(n, dtype=bool)
    over = np.zeros(n, dtype=np.int64)
    done = np.zeros(n, dtype=bool)
    for t in range(kmax):
        a = np.asarray(act(obs), dtype=np.int64).reshape(n, 3)
        obs, reward, terminated, truncated, info = env.step(a)
        live = ~done
        actions[live, t] = a[live]
        returns[live] += reward[live]
        final_loss[live] = info["loss_term"][live]
        for j, name in enumerate(TERM_NAMES):
            term_sums[live, j] += info[name][live]
        lengths[live] += 1
        diverged[live] |= info["diverged"][live]
        over[live] += info["over_budget"][live]
        done |= terminated | truncated
        if done.all():
            break
    env.close()
    terms = term_sums / np.maximum(lengths, 1)[:, None]
    return EpisodeBatch(
        returns=returns,
        terms=terms,
        actions=actions,
        lengths=lengths,
        diverged=diverged,
        over_budget=over,
        final_loss=final_loss,
        objective=episode_objective(
            weights,
            final_loss,
            terms,
            diverged=diverged,
            config=EVAL_REWARD,
            mean_state_bytes=terms[:, 1] * ref_state,
            budget_bytes=budget,
        ),
    )


def grid_actions() -> np.ndarray:
    """Every action of :data:`DEFAULT_GRID` as int ``[n_settings, 3]``, in ``all_settings()`` order."""
    return np.array([DEFAULT_GRID.action(s) for s in DEFAULT_GRID.all_settings()], dtype=np.int64)


def static_grid_returns(
    workload: str,
    objective: Objective | str,
    seeds: Sequence[int],
    model: SurrogateModel | None = None,
    actions: np.ndarray | None = None,
    hardware: Any = "default",
    depth: tuple[float, float] = (0.0, 0.0),
) -> EpisodeBatch:
    """Every static setting (rows of ``actions``, default the whole grid) on every seed, in one batch.

    The result's arrays are ``[n_settings * n_seeds, ...]``, setting-major (setting ``i``'s episodes are rows
    ``i * n_seeds ... (i + 1) * n_seeds - 1``).
    """
    acts = grid_actions() if actions is None else np.asarray(actions, dtype=np.int64).reshape(-1, 3)
    n_seeds = len(seeds)
    fixed = np.repeat(acts, n_seeds, axis=0)  # [S * n_seeds, 3]
    all_seeds = [int(s) for s in seeds] * len(acts)

    def act(_obs: np.ndarray) -> np.ndarray:
        return fixed

    return run_surrogate(act, workload, objective, all_seeds, model, hardware, depth)


@dataclass
class StaticBaseline:
    """The best single static setting of one objective preset, chosen in hindsight over all workloads.

    "Returns" here are the episodes' scores of the kind ``best_static`` was asked for
    (:meth:`EpisodeBatch.scores`: ``-J`` of the final loss by default, or the per-interval return).

    :ivar preset: objective preset name.
    :ivar action: grid indices of the best setting.
    :ivar label: its ``CompressionSetting.label()``.
    :ivar returns: ``[n_workloads * n_seeds]`` episode returns of the best setting (workload-major).
    :ivar mean_returns: ``[n_settings]`` mean return of every grid setting (the whole ranking).
    :ivar terms: ``[n_workloads * n_seeds, 4]`` mean reward terms of the best setting's episodes.
    :ivar mean_terms: ``[n_settings, 4]`` mean reward terms of every grid setting (for Pareto plots).
    :ivar per_workload_returns: ``[n_workloads * n_seeds]`` returns of the best static setting chosen per
        workload (an oracle that knows the workload: the headroom a workload-adaptive controller has).
    :ivar per_workload_terms: their mean reward terms.
    :ivar per_workload_labels: the per-workload choices.
    """

    preset: str
    action: tuple[int, int, int]
    label: str
    returns: np.ndarray
    mean_returns: np.ndarray
    terms: np.ndarray
    mean_terms: np.ndarray
    per_workload_returns: np.ndarray
    per_workload_terms: np.ndarray
    per_workload_labels: list[str]
    final_loss: np.ndarray | None = None  # [n_workloads * n_seeds] l_T of the best setting's episodes
    per_workload_final_loss: np.ndarray | None = None


def best_static(
    preset: str,
    workloads: Sequence[str],
    seeds: Sequence[int],
    model: SurrogateModel | None = None,
    hardware: Any = "default",
    score: Score = "final",
    depth: tuple[float, float] = (0.0, 0.0),
) -> StaticBaseline:
    """Evaluate the whole grid on every workload and seed under ``preset``; keep the best mean score
    (``score``: :meth:`EpisodeBatch.scores`)."""
    acts = grid_actions()
    per_workload = [static_grid_returns(w, preset, seeds, model, acts, hardware, depth) for w in workloads]
    n_s, n_seeds = len(acts), len(seeds)
    returns = np.stack([b.scores(score).reshape(n_s, n_seeds) for b in per_workload], axis=1)  # [S, W, seeds]
    terms = np.stack([b.terms.reshape(n_s, n_seeds, 4) for b in per_workload], axis=1)  # [S, W, seeds, 4]
    final = np.stack([b.final_loss.reshape(n_s, n_seeds) for b in per_workload], axis=1)  # [S, W, seeds]
    mean = returns.reshape(n_s, -1).mean(axis=1)
    i = int(np.argmax(mean))
    a = tuple(int(x) for x in acts[i])
    wi = returns.mean(axis=2).argmax(axis=0)  # [W]: best setting per workload
    cols = np.arange(len(workloads))
    return StaticBaseline(
        preset=preset,
        action=a,  # type: ignore[arg-type]
        label=DEFAULT_GRID.setting(a).label(),
        returns=returns[i].reshape(-1),
        mean_returns=mean,
        terms=terms[i].reshape(-1, 4),
        mean_terms=terms.reshape(n_s, -1, 4).mean(axis=1),
        per_workload_returns=returns[wi, cols].reshape(-1),
        per_workload_terms=terms[wi, cols].reshape(-1, 4),
        per_workload_labels=[DEFAULT_GRID.setting(acts[j]).label() for j in wi],
        final_loss=final[i].reshape(-1),
        per_workload_final_loss=final[wi, cols].reshape(-1),
    )


def sb3_actor(model: Any) -> Actor:
    """``obs [n, size] -> actions [n, 3]``: an SB3 policy's deterministic actions (batched, no grad; a joint
    head's flat indices unravelled)."""

    def act(obs: np.ndarray) -> np.ndarray:
        a = np.asarray(model.predict(obs, deterministic=True)[0])
        return DEFAULT_GRID.unravel(a) if a.ndim == 1 else a  # [n] flat indices of a joint head

    return act


def surrogate_id(model: SurrogateModel | None = None) -> str:
    """Which fitted surrogate: its version and the digest of the traces it was fitted on (provenance)."""
    m = model or default_model()
    return f"{m.version}, traces {m.info.get('traces_digest', '?')}"
