"""``mango eval``: the learned policy against every baseline on held-out workloads, same episodes for all.

Controllers (each plays the same episodes: the same workloads, reset seeds and objective weights):

* ``ppo`` - the learned policy, loaded from an artifact and queried exactly as the policy service and the
  embedded client policy do (``client.policy.LearnedPolicy``: ``ObservationSpec.encode`` of the window ->
  the numpy TinyFormer's argmax -> ``ActionGrid.setting``), once per interval;
* more learned policies with ``--compare label=path`` (an artifact, or an SB3 ``.zip`` such as the MLP
  extractor's checkpoint, queried through the same ``ObservationSpec.encode``);
* ``static-best`` - the best single static setting **chosen in hindsight per objective preset**: on the
  surrogate every one of the grid's 240 settings is played on the same episodes and the best mean return
  is kept (an oracle no real controller has); on the training backend, the surrogate's choice for the same
  workloads and seeds (the grid is too expensive to sweep there);
* ``static`` (the strong default ``r0/b8/g0``: the floor of issue 13), ``accordion``, ``loraven``,
  ``energy_aware``
  (``client.controllers`` defaults, except the energy-aware power budget: 0.9 x the job's uncompressed
  mean power, since the default 400 W never binds on a CPU job), ``random`` (uniform over the grid, seeded
  per episode). Stateful heuristics get one instance per episode, as the client's fallback keeps them.
* ``schedule:A:k>B`` - open-loop schedules given with ``--schedules`` (:class:`client.controllers.Schedule`
  spelling): setting ``A`` for the first ``k`` control intervals, then ``B``. What they are for: whether a
  change of setting over a run beats every single setting on real jobs, e.g. the schedules ``mango bench
  headroom`` finds in the surrogate (a test of the surrogate's dynamics, not a controller a user gets).

Every entrant is a :class:`client.policy.Controller` built per episode (:class:`Entrant`), called with the
episode's window, objective, reference and hardware profile, the way the hook and the service call it.

Each preset's table is followed by the best setting among the entrants that held one setting throughout
(``static``, ``static-best``, one-setting ``--schedules``), chosen in hindsight on these episodes, and each
learned policy's paired difference to it (:func:`held_static_best`): on the training backend, where
static-best is the surrogate's pick, the comparison in hindsight that the real episodes support; and, over
several workloads, the best of those settings per workload in hindsight, with the policies' paired
differences to it (the real-job counterpart of the oracle below, biased upward by picking maxima of noisy
means).

On the surrogate the table also shows ``oracle:static-per-workload``, not a controller: the best static
setting per workload chosen in hindsight, i.e. what identifying the workload is worth without changing
settings over time. It is left out of the goal check and the rankings.

**The floor** (issue 13): on every workload and preset, is a learned policy worse than the fixed
``r0/b8/g0`` (the ``static`` entrant, added whenever a learned policy plays) beyond the 95 % confidence
interval? The paired difference (policy - r0/b8/g0 on the same episodes) is computed per workload; a cell
fails when its whole 95 % CI lies below 0. Printed as a workload x preset table per learned policy, counted
in the goal lines and in ``results.json`` (``floor``).

**The score** (``--score``): ``final`` (default) scores an episode as users and the demo's verdict judge a
run, by the objective ``J`` of :func:`envs.reward.episode_objective` (``w_loss`` x the *final* loss excess
over the uncompressed run's at the same step + the weighted mean memory, energy and time ratios; the
demo's :func:`demo.report.objective_scores` calls the same :func:`envs.reward.objective_cost`), reported as
``-J`` so higher is better; ``interval`` scores it by the episode return with the per-interval loss credit
(the sum over intervals of ``w_loss * l_t`` + the other terms: the score of earlier sessions, under which
compressing late in a run looked nearly free). The static-best choice, the floor check and the selection
score use the chosen score.

Reported per objective preset: the mean episode score with a 95 % confidence interval (t distribution over
episodes), the paired difference to the best static setting, the mean final loss term ``l_T`` and the mean
of each raw reward term per interval (loss excess over the uncompressed run's at the same step, memory,
energy and time ratios to the uncompressed run). Plots: ``pareto.png`` (loss vs memory and loss vs
energy, every static setting and every controller, colored by the third cost) and ``timeline.png`` (the
settings each controller chose over one episode). With ``--bench`` (default) the tables are appended to
``BENCHMARKS.md`` with the command, the machine and the date.

``--backend training`` runs the same controllers on real training jobs (seconds per interval: use two
workloads, one or two presets and a few episodes), and also evaluates the same configuration on the
surrogate to say whether the surrogate's ranking of the controllers holds.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import tyro

from agents.rollout import EVAL_REWARD, SCORES, Score
from agents.stats import FloorCell, floor_cell, mean_ci
from client.controllers import HEURISTICS, RandomController, Schedule, StaticController
from client.policy import DEFAULT_POLICY_DIR, Controller, ProfileFeatures, load_policy
from client.protocol import (
    DEFAULT_GRID,
    CompressionSetting,
    Objective,
    ObservationSpec,
    Reference,
    TelemetryRecord,
)
from envs.benchmarks_md import BENCHMARKS_MD, append_section, format_section
from envs.hardware import HardwareSampler
from envs.objectives import OBJECTIVE_PRESETS
from envs.reward import TERM_NAMES, episode_objective
from envs.simulator import check_depth
from envs.workloads import workloads_of

__all__ = [
    "EvalArgs",
    "EvalReport",
    "FloorCell",
    "evaluate",
    "floor_check",
    "held_static_best",
    "main",
    "static_best_episodes",
]

log = logging.getLogger(__name__)

HEURISTIC_NAMES = ("static", "accordion", "loraven", "energy_aware", "random")
#: Not a controller: the best static setting per workload, chosen in hindsight (the headroom a controller
#: that identifies the workload could reach without changing settings over time).
ORACLE = "oracle:static-per-workload"


#: How a report names each split of :class:`EvalArgs`.
_SPLIT_NAMES = {
    "heldout": "held-out",
    "val": "validation",
    "train": "training split: a diagnosis of the world the policy learned in, not a test",
}


@dataclass
class EvalArgs:
    """Evaluate the learned policy against static settings and the heuristics on held-out workloads."""

    policy: str = ""
    """learned policy artifact (manifest, weights or directory); '' = the shipped
    client/policy/default_policy; 'none' to skip"""
    compare: tuple[str, ...] = ()
    """more learned policies as label=path (an artifact, or an SB3 .zip checkpoint such as the MLP's)"""
    backend: Literal["surrogate", "training"] = "surrogate"
    """surrogate (fast, all held-out workloads) or training (real jobs: pick 2 workloads, few episodes)"""
    workloads: tuple[str, ...] = ()
    """held-out workloads to evaluate on (default: all of envs.HELDOUT_WORKLOADS)"""
    split: Literal["heldout", "val", "train"] = "heldout"
    """workload split: heldout (the test split) or val (the validation split mango train selects checkpoints
    on: with --seed 100000 --episodes 32 and train's --profiles as --hardware, the report's selection score is
    the one train logs); train: a diagnosis of how a policy plays the world it learned in (the report says
    so), never a measure of the policy on unseen jobs"""
    presets: tuple[str, ...] = ()
    """objective presets (default: all of envs.OBJECTIVE_PRESETS)"""
    episodes: int = 30
    """episodes per workload per preset (reset seeds seed .. seed + episodes - 1, the same for everyone; on
    the training backend each episode is its own job, job seed = reset seed, each new one costing a cached
    uncompressed reference run)"""
    seed: int = 0
    """first reset seed"""
    heuristics: tuple[str, ...] = HEURISTIC_NAMES
    """baseline controllers to include besides static-best"""
    schedules: tuple[str, ...] = ()
    """open-loop schedules to play besides them, each ``A:k>B`` (setting A for the first k control
    intervals, then B; ``client.controllers.Schedule``), reported as ``schedule:<label>``"""
    out: str = "runs/eval"
    """output directory for results.json and the PNG plots"""
    bench: bool = True
    """append the tables to BENCHMARKS.md (with the command, the machine and the date)"""
    bench_file: str = ""
    """file the tables are appended to (default: BENCHMARKS.md at the repository root)"""
    timeline_preset: str = "balanced"
    """objective preset of the timeline plot's episode (first workload, first seed)"""
    interval_steps: int | None = None
    """training backend: optimizer steps per control interval (default: the workload's)"""
    intervals: int | None = None
    """training backend: control intervals per episode (default: the workload's)"""
    threads: int = 1
    """torch threads (training backend jobs and policy inference)"""
    score: Score = "final"
    """final: score an episode by the users' objective on its final loss (-J, as the demo's verdict);
    interval: by the per-interval return (the score of earlier sessions, for comparison)"""
    hardware: str = "cpu-dev-2core"
    """surrogate backend: the hardware profile of envs/profiles/ every episode runs on ('all': a draw per
    episode from every profile and blends, as in training; a comma list: draws and blends of those, as
    mango train --profiles)"""
    depth: tuple[float, float] = (0.0, 0.0)
    """surrogate backend: (lo, hi) of each episode's extra log-drop of the reference loss (a job that trains
    further than the recorded traces; envs.simulator.SurrogateEngine). (0, 0): the recorded curves; e.g.
    0.31 0.31 puts gpt-85m at the H200 demo's depth"""
    no_profile: bool = False
    """surrogate backend: every episode's job sends no cost profile (its costs still follow --hardware), as
    a job run with profile=None or through a DDP comm hook (envs.hardware.HardwareSampler.hide_profile)"""


@dataclass
class ControllerResult:
    """Episodes of one controller under one preset (workload-major, then seeds)."""

    returns: np.ndarray  # [n] the episodes' scores (EvalArgs.score), higher is better
    terms: np.ndarray  # [n, 4] mean per interval
    label: str = ""  # the static-best setting, for display
    final_loss: np.ndarray | None = None  # [n] the last interval's loss term l_T
    schedules: list[list[str]] = field(default_factory=list)  # [n] each episode's setting labels

    @property
    def timeline(self) -> list[str]:
        """The setting labels of the first episode (empty when none was played)."""
        return self.schedules[0] if self.schedules else []


@dataclass
class EvalReport:
    """Everything :func:`evaluate` measured (``results[preset][controller]``) and where it wrote files."""

    backend: str
    workloads: list[str]
    presets: list[str]
    seeds: list[int]
    results: dict[str, dict[str, ControllerResult]]
    static_grid_terms: np.ndarray | None  # [n_settings, 4] mean terms of every static (surrogate only)
    markdown: str
    files: list[Path]
    surrogate_check: EvalReport | None = None
    wall_s: float = 0.0


# ---------------------------------------------------------------------------------------------- entrants
@dataclass(frozen=True)
class Entrant:
    """A controller in the evaluation loop: ``make(env, seed, preset)`` builds its controller for one
    episode (called with the env after its reset, the episode's seed and objective preset)."""

    name: str
    make: Callable[[Any, int, str], Controller]


def _heuristic(name: str) -> Entrant:
    """A ``client.controllers`` heuristic, a fresh instance per episode."""

    def make(env: Any, seed: int, preset: str) -> Controller:
        if name == "energy_aware":
            ref = env.reference
            return HEURISTICS[name](budget_w=0.9 * ref.interval_energy_j / ref.interval_s)
        return HEURISTICS[name]()

    return Entrant(name, make)


def _random() -> Entrant:
    """Uniformly random grid settings, seeded per episode."""
    return Entrant("random", lambda env, seed, preset: RandomController(np.random.default_rng([seed, 7919])))


class _OpenLoop(Controller):
    """A :class:`Schedule` counted by this evaluation's decisions: decision ``n`` (the first is made before
    the first control interval) plays ``schedule.at(n)``. One instance per episode."""

    def __init__(self, schedule: Schedule) -> None:
        self.schedule = schedule
        self.decisions = 0

    def decide(
        self,
        history: Sequence[TelemetryRecord],
        objective: Objective,
        *,
        reference: Reference | None = None,
        profile: ProfileFeatures | None = None,
    ) -> CompressionSetting:
        self.decisions += 1
        return self.schedule.at(self.decisions)


def _schedule(spec: str) -> Entrant:
    """An open-loop schedule (``--schedules``), named ``schedule:<canonical label>``.

    :raises ValueError: the spec does not parse (the message names the part).
    """
    schedule = Schedule.parse(spec)
    return Entrant(f"schedule:{schedule.label()}", lambda env, seed, preset: _OpenLoop(schedule))


def _static_best_entrant(settings: dict[str, CompressionSetting]) -> Entrant:
    """A fixed setting per preset (``static-best``)."""
    return Entrant("static-best", lambda env, seed, preset: StaticController(settings[preset]))


class SB3Controller(Controller):
    """An SB3 PPO checkpoint (e.g. the MLP extractor's), fed ``ObservationSpec.encode`` like the service."""

    def __init__(self, name: str, path: str | Path) -> None:
        from stable_baselines3 import PPO  # the training stack, only for --compare with a .zip

        self.name = name
        self.model = PPO.load(str(path), device="cpu")
        shape = self.model.observation_space.shape
        if not shape or len(shape) != 1:
            raise ValueError(f"{path}: expected a flat observation space, got shape {shape}")
        size = int(shape[0])
        window = (size - len(ObservationSpec.OBJECTIVE_FEATURES)) // len(ObservationSpec.TOKEN_FEATURES)
        self.spec = ObservationSpec(window=window)

    def decide(
        self,
        history: Sequence[TelemetryRecord],
        objective: Objective,
        *,
        reference: Reference | None = None,
        profile: ProfileFeatures | None = None,
    ) -> CompressionSetting:
        obs = self.spec.encode(history, objective, reference, profile)
        action = np.asarray(self.model.predict(obs, deterministic=True)[0])
        if action.ndim == 0:  # a joint head's flat grid index
            action = DEFAULT_GRID.unravel(action)
        return DEFAULT_GRID.setting(action)


def _learned(label: str, path: str | Path) -> Entrant:
    """A policy artifact (one stateless :class:`~client.policy.LearnedPolicy` for every episode), or an
    SB3 ``.zip`` checkpoint."""
    policy: Controller = SB3Controller(label, path) if str(path).endswith(".zip") else load_policy(path)
    return Entrant(label, lambda env, seed, preset: policy)


# ----------------------------------------------------------------------------------------------- running
def _make_env(args: EvalArgs, backend: str, workload: str, preset: str) -> Any:
    from envs.env import CompressionEnv

    kw: dict[str, Any] = {}
    if backend == "training":
        from envs.training import TrainingConfig

        kw = {
            "training": TrainingConfig(threads=args.threads),
            "interval_steps": args.interval_steps,
            "intervals": args.intervals,
        }
    else:
        kw = {"hardware": hardware_sampler(args.hardware, args.no_profile), "depth": args.depth}
    return CompressionEnv(backend=backend, workload=workload, objective=preset, reward=EVAL_REWARD, **kw)


def hardware_sampler(name: str, no_profile: bool = False) -> HardwareSampler:
    """The surrogate's hardware draws for an evaluation: one profile (its measured optimizer share where it
    has one), ``"all"``: the training distribution, or a comma list: training's draws over those profiles
    (``mango train --profiles``). ``no_profile``: every job sends none (the costs still follow the draw)."""
    hide = 1.0 if no_profile else 0.0
    if name == "all":
        return HardwareSampler(hide_profile=hide)
    if "," in name:
        return HardwareSampler(
            profiles=tuple(p.strip() for p in name.split(",") if p.strip()), hide_profile=hide
        )
    return HardwareSampler(fixed=name, resample_share=False, hide_profile=hide)


#: One played episode: its score, mean terms [4], setting labels and final loss term l_T.
Episode = tuple[float, np.ndarray, list[str], float]


def _play(env: Any, entrant: Entrant, seed: int, preset: str, score: Score = "final") -> Episode:
    """One episode: ``(score, mean terms [4], setting labels, final loss term l_T)``.

    On the training backend the episode's job seed is ``seed`` itself (a distinct real job per episode);
    drawn from the backend's small pool (``job_seeds``, default 4) six episodes held about three distinct
    jobs, repeated exactly, and the confidence intervals counted each copy as new evidence."""
    env.reset(seed=seed, options={"job_seed": seed} if env.backend_name == "training" else None)
    controller = entrant.make(env, seed, preset)
    profile = getattr(env, "profile", None)  # a CostProfile, or the surrogate's drawn profile features
    total, terms, labels = 0.0, np.zeros(4), []
    n, state = 0, 0.0
    while True:
        setting = controller.decide(env.history, env.objective, reference=env.reference, profile=profile)
        _, reward, terminated, truncated, info = env.step(DEFAULT_GRID.action(setting))
        total += reward
        terms += [info[k] for k in TERM_NAMES]
        state += float(info["state_bytes"])
        labels.append(setting.label())
        n += 1
        if terminated or truncated:
            break
    if score == "interval":
        return total, terms / n, labels, float(info["loss_term"])
    obj = env.objective
    j = episode_objective(
        obj.weights().astype(float),
        info["loss_term"],
        terms / n,
        diverged=bool(info["diverged"]),
        config=EVAL_REWARD,
        mean_state_bytes=state / n,
        budget_bytes=obj.memory_budget_bytes or 0,
    )
    return -float(j), terms / n, labels, float(info["loss_term"])


def _run_closed_loop(
    args: EvalArgs,
    backend: str,
    entrants: Sequence[Entrant],
    workloads: Sequence[str],
    presets: Sequence[str],
    seeds: Sequence[int],
) -> dict[str, dict[str, ControllerResult]]:
    results: dict[str, dict[str, ControllerResult]] = {p: {} for p in presets}
    for p in presets:
        for w in workloads:
            env = _make_env(args, backend, w, p)
            played: dict[str, list[Episode]] = {e.name: [] for e in entrants}
            spent = dict.fromkeys(played, 0.0)
            for s in seeds:  # seed by seed, the entrants in turn: a drift of the machine's speed over the
                # run falls on every entrant alike instead of on whichever ran last
                for entrant in entrants:
                    t0 = time.perf_counter()
                    played[entrant.name].append(_play(env, entrant, s, p, args.score))
                    spent[entrant.name] += time.perf_counter() - t0
            for entrant in entrants:
                eps = played[entrant.name]
                res = results[p].setdefault(
                    entrant.name,
                    ControllerResult(returns=np.zeros(0), terms=np.zeros((0, 4)), final_loss=np.zeros(0)),
                )
                res.returns = np.concatenate([res.returns, [e[0] for e in eps]])
                res.final_loss = np.concatenate([res.final_loss, [e[3] for e in eps]])  # type: ignore[list-item]
                res.terms = np.concatenate([res.terms, np.stack([e[1] for e in eps])])
                res.schedules.extend(e[2] for e in eps)
                log.info(
                    "%s %s %s %s: %d episodes, mean return %.4f (%.1f s)",
                    backend,
                    p,
                    w,
                    entrant.name,
                    len(eps),
                    float(np.mean([e[0] for e in eps])),
                    spent[entrant.name],
                )
            env.close()
    return results


def _static_best(
    workloads: Sequence[str],
    presets: Sequence[str],
    seeds: Sequence[int],
    hardware: Any = None,
    score: Score = "final",
    depth: tuple[float, float] = (0.0, 0.0),
) -> tuple[dict[str, Any], np.ndarray]:
    from agents.rollout import best_static

    best = {p: best_static(p, workloads, seeds, hardware=hardware, score=score, depth=depth) for p in presets}
    return best, best[presets[0]].mean_terms


# ----------------------------------------------------------------------------------------------- stats
def _rel(a: float, b: float) -> float:
    return (a - b) / max(abs(b), 1e-12)


# ----------------------------------------------------------------------------------------------- report
def _preset_table(
    preset: str, res: dict[str, ControllerResult], learned: Sequence[str] = (), n_workloads: int = 1
) -> tuple[str, list[dict[str, Any]]]:
    base = res.get("static-best")
    rows = []
    for name, r in sorted(res.items(), key=lambda kv: -float(kv[1].returns.mean())):
        m, h = mean_ci(r.returns)
        row: dict[str, Any] = {"controller": name, "mean": m, "ci": h, "n": int(r.returns.size)}
        if base is not None and base.returns.size == r.returns.size:
            dm, dh = mean_ci(r.returns - base.returns)
            row["delta"], row["delta_ci"] = dm, dh
            row["rel"] = _rel(m, float(base.returns.mean()))
        row["terms"] = [float(v) for v in r.terms.mean(axis=0)]
        row["final_loss"] = float(np.mean(r.final_loss)) if r.final_loss is not None else float("nan")
        rows.append(row)
    label = f" (best static: `{base.label}`)" if base is not None and base.label else ""
    if ORACLE in res:
        label += f" (per workload: `{res[ORACLE].label}`)"
    lines = [
        f"**{preset}** {OBJECTIVE_PRESETS.get(preset, '')}{label}",
        "",
        "| controller | score (95% CI) | vs best static: paired diff (95% CI) | rel. "
        "| final loss l_T | loss | memory | energy | time |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        d = (
            f"{row['delta']:+.4f} ± {row['delta_ci']:.4f}"
            if "delta" in row and row["controller"] != "static-best"
            else "-"
        )
        rel = f"{100 * row['rel']:+.1f}%" if "rel" in row and row["controller"] != "static-best" else "-"
        t = row["terms"]
        lines.append(
            f"| {row['controller']} | {row['mean']:.4f} ± {row['ci']:.4f} | {d} | {rel} | "
            f"{row['final_loss']:+.4f} | {t[0]:.4f} | {t[1]:.3f} | {t[2]:.3f} | {t[3]:.3f} |"
        )
    same = static_best_episodes(res)
    if same:
        lines += ["", *same]
    held = held_static_best(res, learned, n_workloads)
    if held:
        lines += ["", *held]
    return "\n".join(lines), rows


def _held_setting(r: ControllerResult) -> str | None:
    """The one setting ``r`` played in every interval of every episode, or None."""
    labels = {label for sched in r.schedules for label in sched}
    return labels.pop() if len(labels) == 1 and all(r.schedules) else None


def held_static_best(
    res: dict[str, ControllerResult], learned: Sequence[str], n_workloads: int = 1
) -> list[str]:
    """Lines on the best static setting *played here*, in hindsight: among the entrants that held one
    setting throughout (``static``, ``static-best``, one-setting ``--schedules``), the one with the best
    mean score, and each learned policy's paired difference to it. On the training backend static-best is
    the surrogate's pick, which real jobs may not confirm; this is the comparison real jobs support (over
    the settings played, not the whole grid). Empty with fewer than two such entrants.

    With ``n_workloads > 1`` (episodes workload-major, as :func:`evaluate` plays them) also the best of
    those settings *per workload* in hindsight: the real-job counterpart of the surrogate's
    ``oracle:static-per-workload``, what a controller that identified the workload and then held one
    setting could score. Optimistic: each workload's pick is the largest of several noisy means."""
    held = {n: lab for n, r in res.items() if n not in learned and n != ORACLE and (lab := _held_setting(r))}
    if len(held) < 2:
        return []
    best = max(held, key=lambda n: float(res[n].returns.mean()))
    out = [
        f"- best static setting played here, in hindsight: `{held[best]}` ({best}, score "
        f"{float(res[best].returns.mean()):.4f}; over {len(held)} one-setting entrants: "
        f"{', '.join(sorted(set(held.values())))})"
    ]
    out += _paired_lines(res, learned, res[best].returns, "it")
    n = res[best].returns.size
    if n_workloads > 1 and n % n_workloads == 0 and all(res[h].returns.size == n for h in held):
        blocks = {h: res[h].returns.reshape(n_workloads, -1) for h in held}  # as floor_check splits them
        picks = [max(held, key=lambda h, w=w: float(blocks[h][w].mean())) for w in range(n_workloads)]
        per = np.concatenate([blocks[h][w] for w, h in enumerate(picks)])
        gain = _rel(float(per.mean()), float(res[best].returns.mean()))
        out.append(
            f"- best of them per workload, in hindsight (a controller that knew the workload and held one "
            f"setting; optimistic, the largest of noisy means): {', '.join(f'`{held[h]}`' for h in picks)}, "
            f"score {float(per.mean()):.4f} ({100 * gain:+.1f}% over the best single one)"
        )
        out += _paired_lines(res, learned, per, "the per-workload picks")
    return out


def _paired_lines(
    res: dict[str, ControllerResult], learned: Sequence[str], base: np.ndarray, what: str
) -> list[str]:
    """Each learned policy's paired difference to the episode scores ``base`` (same episodes)."""
    out = []
    for name in learned:
        if name in res and res[name].returns.size == base.size:
            dm, dh = mean_ci(res[name].returns - base)
            rel = _rel(float(res[name].returns.mean()), float(base.mean()))
            out.append(f"- {name} vs {what}: paired diff {dm:+.4f} ± {dh:.4f} ({100 * rel:+.1f}%)")
    return out


def static_best_episodes(res: dict[str, ControllerResult]) -> list[str]:
    """One line per controller that played the best static setting in every interval of some episodes:
    how many. Those episodes trained exactly as static-best's, so there their score difference is the
    measurement noise of identical training (the time and energy terms; on a CPU toy job, per-interval
    process time of a few milliseconds), not a choice the controller made."""
    base = res.get("static-best")
    if base is None or not base.label:
        return []
    out = []
    for name, r in res.items():
        if name in ("static-best", ORACLE) or not r.schedules:
            continue
        n = sum(1 for sched in r.schedules if sched and all(label == base.label for label in sched))
        if n:
            out.append(
                f"- {name} played the best static setting (`{base.label}`) in every interval of {n} of "
                f"{len(r.schedules)} episodes: there it trained as static-best did, and its score difference "
                "is the measurement noise of identical training (time, energy)"
            )
    return out


def _goal_lines(results: dict[str, dict[str, ControllerResult]], learned: Sequence[str]) -> list[str]:
    """Per learned policy and preset: better than every baseline by >= 10 % with non-overlapping CIs?"""
    out = []
    for name in learned:
        for p, res in results.items():
            if name not in res:
                continue
            m, h = mean_ci(res[name].returns)
            verdicts = []
            for other, r in res.items():
                if other in (name, ORACLE) or other in learned:
                    continue
                mo, ho = mean_ci(r.returns)
                rel = _rel(m, mo)
                sep = (m - h) > (mo + ho)
                mark = "yes" if rel >= 0.10 and sep else ("better" if m > mo else "no")
                verdicts.append(f"{other} {100 * rel:+.0f}% ({mark})")
            out.append(f"- {name} / {p}: " + ", ".join(verdicts))
    return out


FLOOR = "static"  # the r0/b8/g0 entrant of the floor check


def floor_check(
    results: dict[str, dict[str, ControllerResult]], workloads: Sequence[str], name: str
) -> dict[str, dict[str, FloorCell]]:
    """``cells[preset][workload]`` of the floor check for the learned policy ``name`` (module docstring).

    The returns of every entrant are workload-major (``len(workloads)`` equal blocks of seeds)."""
    cells: dict[str, dict[str, FloorCell]] = {}
    for p, res in results.items():
        if name not in res or FLOOR not in res:
            continue
        pol = res[name].returns.reshape(len(workloads), -1)
        base = res[FLOOR].returns.reshape(len(workloads), -1)
        cells[p] = {}
        for w, a, b in zip(workloads, pol, base, strict=True):
            cells[p][w] = floor_cell(a, b)
    return cells


def selection_scores(
    results: dict[str, dict[str, ControllerResult]], learned: Sequence[str]
) -> dict[str, float]:
    """Per learned policy: the mean over presets of ``(R_policy - R_static-best) / sum(weights)``, the score
    ``mango train`` selects checkpoints by (:mod:`agents.callbacks`)."""
    out = {}
    for name in learned:
        adv = [
            (float(res[name].returns.mean()) - float(res["static-best"].returns.mean()))
            / sum(OBJECTIVE_PRESETS[p])
            for p, res in results.items()
            if name in res and "static-best" in res
        ]
        if adv:
            out[name] = float(np.mean(adv))
    return out


def _floor_lines(cells: dict[str, dict[str, FloorCell]], name: str, workloads: Sequence[str]) -> list[str]:
    presets = list(cells)
    n_fail = sum(c.fails for row in cells.values() for c in row.values())
    n = sum(len(row) for row in cells.values())
    lines = [
        f"Floor check, {name} vs r0/b8/g0 per workload (paired return difference ± 95% CI, relative; "
        f"**FAIL**: worse beyond the CI): **{n_fail} of {n} cells fail**",
        "",
        "| workload | " + " | ".join(presets) + " |",
        "|---|" + "---|" * len(presets),
    ]
    for w in workloads:
        row = []
        for p in presets:
            c = cells[p][w]
            row.append(f"{c.diff:+.3f} ± {c.ci:.3f} ({100 * c.rel:+.1f}%)" + (" **FAIL**" if c.fails else ""))
        lines.append(f"| {w} | " + " | ".join(row) + " |")
    return lines


def _ranking(res: dict[str, ControllerResult]) -> list[str]:
    ranked = sorted(res.items(), key=lambda kv: -float(kv[1].returns.mean()))
    return [n for n, _ in ranked if n != ORACLE]


def _kendall_tau(a: Sequence[str], b: Sequence[str]) -> float:
    common = [x for x in a if x in b]
    ra = {x: i for i, x in enumerate(x for x in a if x in common)}
    rb = {x: i for i, x in enumerate(x for x in b if x in common)}
    n, s = len(common), 0
    for i in range(n):
        for j in range(i + 1, n):
            x, y = common[i], common[j]
            s += int(np.sign(ra[x] - ra[y]) * np.sign(rb[x] - rb[y]))
    return s / max(n * (n - 1) / 2, 1)


def _section(report: EvalReport, args: EvalArgs, command: str, learned: Sequence[str]) -> dict[str, Any]:
    """The report as :func:`envs.benchmarks_md.format_section`'s arguments (title, command, body, ...)."""
    from agents.rollout import surrogate_id

    load = os.getloadavg()
    machine = (
        f"{platform.machine()}, {os.cpu_count()} CPUs, load average {load[0]:.1f}/{load[1]:.1f}, "
        f"torch threads {args.threads}, Python {platform.python_version()}"
    )
    eps = len(report.seeds) * len(report.workloads)
    details = [
        f"surrogate: {surrogate_id()}"
        + (
            f"; hardware: {args.hardware}{' (jobs send no profile)' if args.no_profile else ''}; "
            f"reference depth {args.depth[0]:g}-{args.depth[1]:g}"
            if report.backend == "surrogate"
            else "; hardware: this machine"
        ),
        f"workloads ({_SPLIT_NAMES[args.split]}): "
        f"{', '.join(report.workloads)}; "
        f"seeds {report.seeds[0]}..{report.seeds[-1]}; {eps} episodes per controller per preset; "
        f"wall time {report.wall_s:.0f} s",
        (
            "score = -J, the users' objective on the final loss (envs.reward.episode_objective: w_loss x "
            "the final loss term l_T + weighted mean memory, energy, time ratios; the demo's verdict); "
            if args.score == "final"
            else "score = the episode return with the per-interval loss credit (sum over the control "
            "intervals of the scalarized penalized reward); "
        )
        + "higher is better; l_T: final loss over the uncompressed run's at the same step, relative to it; "
        "terms are per-interval means (loss: excess over the uncompressed run's loss at the same "
        "step, relative to it; memory, energy, time: ratios to the uncompressed run). static-best is "
        "chosen in hindsight per preset "
        + (
            f"over the whole 240-setting grid on these episodes; `{ORACLE}` (not a controller) picks the "
            "best static setting per workload in hindsight: the headroom of identifying the workload."
            if report.backend == "surrogate"
            else "on the surrogate for the same workloads and seeds."
        ),
    ]
    parts: list[str] = []
    for p in report.presets:
        table, _ = _preset_table(p, report.results[p], learned, len(report.workloads))
        parts += [table, ""]
    if learned:
        parts += ["Goal (>= 10 % better than each baseline with non-overlapping 95 % CIs):", ""]
        parts += [*_goal_lines(report.results, learned), ""]
        scores = selection_scores(report.results, learned)
        if scores:
            parts += [
                "Selection score (mean over presets of the score advantage over static-best per unit of the "
                "objective's weight sum: `mango train`'s validation metric): "
                + ", ".join(f"{n} {v:+.4f}" for n, v in scores.items()),
                "",
            ]
        for name in learned:
            cells = floor_check(report.results, report.workloads, name)
            if cells:
                parts += [*_floor_lines(cells, name, report.workloads), ""]
    chk = report.surrogate_check
    if chk is not None:
        parts += [
            "Does the surrogate's ranking hold on real training? (same workloads, presets, seeds)",
            "",
            "| preset | training backend ranking | surrogate ranking | Kendall tau | same winner |",
            "|---|---|---|---|---|",
        ]
        for p in report.presets:
            a, b = _ranking(report.results[p]), _ranking(chk.results[p])
            parts.append(
                f"| {p} | {' > '.join(a)} | {' > '.join(b)} | {_kendall_tau(a, b):+.2f} | "
                f"{'yes' if a[0] == b[0] else 'no'} |"
            )
        parts.append("")
    return {
        "title": f"Policy evaluation: {report.backend} backend",
        "command": command,
        "body": "\n".join(parts),
        "machine": machine,
        "details": details,
        "when": dt.datetime.now(dt.UTC),
    }


# ----------------------------------------------------------------------------------------------- plots
def _plots(report: EvalReport, out: Path, timeline_preset: str, learned: Sequence[str]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    names = sorted({n for res in report.results.values() for n in res if n != ORACLE})
    markers = dict(zip(names, "o^sDvP*Xh<>p", strict=False))
    fig, axes = plt.subplots(1, 2, figsize=(12, 5), constrained_layout=True)
    # every point: mean terms over all evaluation episodes; objective-independent controllers look the same
    # under every preset, learned ones are drawn once per preset
    pts: list[tuple[str, str, np.ndarray]] = []
    for p, res in report.results.items():
        for n, r in res.items():
            if n != ORACLE:
                pts.append((n, p, r.terms.mean(axis=0)))
    allv = [t for _, _, t in pts] + (
        [*report.static_grid_terms] if report.static_grid_terms is not None else []
    )
    e_all = np.array([t[2] for t in allv])
    norm = matplotlib.colors.Normalize(vmin=float(e_all.min()), vmax=float(e_all.max()))
    for ax, (j, xlabel) in zip(axes, ((1, "memory (state bytes / dense)"), (2, "energy (/ uncompressed)"))):
        color_idx, clabel = (2, "energy") if j == 1 else (1, "memory")
        if report.static_grid_terms is not None:
            g = report.static_grid_terms
            ax.scatter(g[:, j], g[:, 0], c="lightgrey", s=10, label="static grid (240)", zorder=1)
            order = np.argsort(g[:, j])
            front, best = [], np.inf
            for i in order:  # Pareto front: lower loss and lower cost
                if g[i, 0] < best:
                    best = g[i, 0]
                    front.append(i)
            ax.plot(g[front, j], g[front, 0], "-", color="grey", lw=1, zorder=1, label="static Pareto front")
        cn = matplotlib.colors.Normalize(
            vmin=float(min(t[color_idx] for t in allv)), vmax=float(max(t[color_idx] for t in allv))
        )
        sc = None
        for n, p, t in pts:
            sc = ax.scatter(
                t[j],
                t[0],
                c=[t[color_idx]],
                cmap="viridis",
                norm=cn if j == 2 else norm,
                marker=markers.get(n, "o"),
                s=70,
                edgecolors="k",
                zorder=3,
            )
            if n in learned or n == "static-best":  # objective-dependent: one point per preset
                ax.annotate(
                    f"{n}:{p.split('-')[0]}",
                    (t[j], t[0]),
                    fontsize=6,
                    xytext=(3, 3),
                    textcoords="offset points",
                )
        for n in names:
            ax.scatter([], [], marker=markers.get(n, "o"), c="w", edgecolors="k", label=n)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("loss excess (/ initial loss)")
        ax.set_title(f"loss vs {xlabel.split()[0]} (color: {clabel})")
        if sc is not None:
            fig.colorbar(sc, ax=ax, label=clabel)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(f"Held-out {report.backend}: mean terms per controller and preset")
    path = out / "pareto.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    files.append(path)

    preset = timeline_preset if timeline_preset in report.results else report.presets[0]
    res = report.results[preset]
    fig, axes = plt.subplots(3, 1, figsize=(10, 7), sharex=True, constrained_layout=True)
    for k, (ax, knob) in enumerate(zip(axes, ("rank", "bits", "gamma"))):
        values = (DEFAULT_GRID.ranks, DEFAULT_GRID.bits, DEFAULT_GRID.gammas)[k]
        for i, (n, r) in enumerate(sorted(res.items())):
            if not r.timeline:
                continue
            idx = [DEFAULT_GRID.action(_parse_label(s))[k] for s in r.timeline]
            ax.step(
                np.arange(1, len(idx) + 1),
                np.array(idx) + 0.06 * (i - len(res) / 2),
                where="mid",
                label=n,
                marker=markers.get(n, "o"),
                ms=4,
            )
        ticks = [("full" if knob == "rank" and v == 0 else str(v)) for v in values]
        ax.set_yticks(range(len(values)), ticks)
        ax.set_ylabel(knob)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, ncol=4, loc="upper left")
    axes[-1].set_xlabel("control interval")
    fig.suptitle(f"Settings chosen over one episode: {report.workloads[0]}, seed {report.seeds[0]}, {preset}")
    path = out / "timeline.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    files.append(path)
    return files


def _parse_label(label: str) -> CompressionSetting:
    return CompressionSetting.parse(label)


# ----------------------------------------------------------------------------------------------- main path
def _entrants(args: EvalArgs, static_best: dict[str, CompressionSetting]) -> tuple[list[Entrant], list[str]]:
    entrants: list[Entrant] = []
    learned: list[str] = []
    if args.policy.lower() != "none":
        entrants.append(_learned("ppo", args.policy or DEFAULT_POLICY_DIR))
        learned.append("ppo")
    for spec in args.compare:
        label, sep, path = spec.partition("=")
        if not sep or not label or not path:
            raise ValueError(f"--compare {spec!r}: write label=path (an artifact or an SB3 .zip)")
        entrants.append(_learned(label, path))
        learned.append(label)
    heuristics = list(args.heuristics)
    if learned and FLOOR not in heuristics:  # the floor check needs r0/b8/g0 on the same episodes
        heuristics.append(FLOOR)
    for h in heuristics:
        entrants.append(_random() if h == "random" else _heuristic(h))
    for spec in args.schedules:
        entrants.append(_schedule(spec))
    if static_best:
        entrants.append(_static_best_entrant(static_best))
    return entrants, learned


def evaluate(args: EvalArgs, command: str = "") -> EvalReport:
    """Run the evaluation described by ``args`` (see the module docstring) and write its outputs."""
    import torch

    t0 = time.perf_counter()
    torch.set_num_threads(args.threads)
    workloads = list(args.workloads or workloads_of(args.split))
    presets = list(args.presets or OBJECTIVE_PRESETS)
    for h in args.heuristics:
        if h != "random" and h not in HEURISTICS:
            raise ValueError(f"unknown heuristic {h!r}; choose from {[*HEURISTICS, 'random']}")
    for p in presets:
        if p not in OBJECTIVE_PRESETS:
            raise ValueError(f"unknown preset {p!r}; choose from {sorted(OBJECTIVE_PRESETS)}")
    allowed = workloads_of(args.split, gpu=True)  # the GPU test workloads need a GPU (training backend)
    for w in workloads:
        if w not in allowed:
            raise ValueError(
                f"{w!r} is not a {_SPLIT_NAMES[args.split]} workload; choose from {list(allowed)}"
            )
    if args.episodes < 1:
        raise ValueError("episodes must be >= 1")
    names = [_schedule(spec).name for spec in args.schedules]  # a spec that does not parse fails here
    if len(set(names)) < len(names):
        raise ValueError(f"--schedules {list(args.schedules)}: a schedule is given twice")
    check_depth(args.depth)
    if args.backend == "training" and tuple(args.depth) != (0.0, 0.0):
        raise ValueError(
            f"--depth {args.depth[0]:g} {args.depth[1]:g} deepens the surrogate's reference; the training "
            "backend trains real jobs (drop --depth, or use --backend surrogate)"
        )
    if args.backend == "training" and args.no_profile:
        raise ValueError(
            "--no-profile hides the surrogate's drawn profile; the training backend's jobs send this "
            "machine's measured one (drop --no-profile, or use --backend surrogate)"
        )
    seeds = list(range(args.seed, args.seed + args.episodes))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log.info("mango eval: %s", json.dumps(asdict(args), sort_keys=True))

    if args.score not in SCORES:
        raise ValueError(f"score {args.score!r}; choose one of {SCORES}")
    best, grid_terms = _static_best(
        workloads, presets, seeds, hardware_sampler(args.hardware, args.no_profile), args.score, args.depth
    )
    static_settings = {p: DEFAULT_GRID.setting(b.action) for p, b in best.items()}
    entrants, learned = _entrants(args, static_settings if args.backend == "training" else {})
    results = _run_closed_loop(args, args.backend, entrants, workloads, presets, seeds)
    if args.backend == "surrogate":
        for p, b in best.items():  # the vectorized grid played exactly these episodes
            n_intervals = max([len(r.timeline) for r in results[p].values()], default=12)
            results[p]["static-best"] = ControllerResult(
                returns=b.returns,
                terms=b.terms,
                schedules=[[b.label] * n_intervals] * len(b.returns),  # the grid point, every episode
                label=b.label,
                final_loss=b.final_loss,
            )
            results[p][ORACLE] = ControllerResult(
                returns=b.per_workload_returns,
                terms=b.per_workload_terms,
                label=", ".join(b.per_workload_labels),
                final_loss=b.per_workload_final_loss,
            )
    else:
        for p, b in best.items():
            results[p]["static-best"].label = b.label
    report = EvalReport(
        backend=args.backend,
        workloads=workloads,
        presets=presets,
        seeds=seeds,
        results=results,
        static_grid_terms=grid_terms if args.backend == "surrogate" else None,
        markdown="",
        files=[],
    )
    if args.backend == "training":
        check_args = EvalArgs(
            **{**asdict(args), "backend": "surrogate", "bench": False, "out": str(out / "surrogate")}
        )
        report.surrogate_check = evaluate(check_args)
    report.wall_s = time.perf_counter() - t0
    section = _section(report, args, command, learned)
    report.markdown = format_section(**section)
    report.files = _plots(report, out, args.timeline_preset, learned)
    summary = {
        "command": command,
        "args": asdict(args),
        "backend": args.backend,
        "score": args.score,
        "workloads": workloads,
        "seeds": seeds,
        "results": {
            p: {
                n: {
                    "returns": r.returns.tolist(),
                    "final_loss": [] if r.final_loss is None else r.final_loss.tolist(),
                    "terms": r.terms.mean(axis=0).tolist(),
                    "label": r.label,
                    "timeline": r.timeline,
                }
                for n, r in res.items()
            }
            for p, res in results.items()
        },
    }
    summary["selection_score"] = selection_scores(results, learned)
    summary["floor"] = {
        name: {
            "failed_cells": sum(c.fails for row in cells.values() for c in row.values()),
            "cells": {
                p: {w: {**asdict(c), "fails": c.fails} for w, c in row.items()} for p, row in cells.items()
            },
        }
        for name in learned
        if (cells := floor_check(results, workloads, name))
    }
    (out / "results.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out / "report.md").write_text(report.markdown + "\n")
    report.files.append(out / "results.json")
    if args.bench:
        path = append_section(**section, path=args.bench_file or BENCHMARKS_MD)
        log.info("appended the tables to %s", path)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """``mango eval [options]`` (``--help`` lists them)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = tyro.cli(EvalArgs, args=argv, prog="mango eval", description=(EvalArgs.__doc__ or "").strip())
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    report = evaluate(args, command=shlex.join(["mango", "eval", *argv]))
    print(report.markdown)
    for f in report.files:
        print(f"wrote {f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
