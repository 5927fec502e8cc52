"""``mango bench schedules``: open-loop schedules of settings, side by side on the same surrogate episodes.

What the surrogate says a fixed sequence of settings costs, before a GPU call measures it (``mango demo
--static-setting`` takes the same labels, :class:`client.controllers.Schedule`): e.g. whether an 8-bit
opening before r0/b4/g0 pays, or whether a job that held r0/b8/g0 for five intervals still gains by moving
to r0/b4/g0 (issue 13, session 25: the learned policy holds whatever it finds in force, where the surrogate
says moving pays). Each schedule plays the same episodes (``--episodes`` seeds from ``--seed``; one
workload, one hardware profile, one objective preset); a schedule's first setting is also the episode's
first interval, as in the demo's static runs. The table gives each schedule's mean ``J``
(:func:`envs.reward.episode_objective`, lower is better) with its 95 % interval over the episodes, and its
paired difference from the first schedule listed with that interval (the episodes are shared, so the
paired interval is the one to read).

Example::

    mango bench schedules r0/b8/g0 "r0/b8/g0:1>r0/b4/g0" "r0/b8/g0:5>r0/b4/g0" r0/b4/g0 \\
        --workload gpu-gpt85m-cosine --hardware h200-gpt85m --objective balanced --depth 0.31 0.31

Modelled: every figure is the surrogate's, fitted on recorded traces; the GPU measures the real ones.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import tyro

from agents.evaluate import hardware_sampler
from agents.rollout import EpisodeBatch, run_surrogate
from benchmarks.common import table_command
from client.controllers import Schedule
from client.protocol import DEFAULT_GRID

__all__ = ["SchedulesArgs", "main", "play_schedule", "report"]


@dataclass
class SchedulesArgs:
    """Open-loop schedules on the same surrogate episodes."""

    schedules: tyro.conf.Positional[tuple[str, ...]]
    """settings or schedules (``r0/b8/g0:1>r0/b4/g0``); the first is the one the others are paired with"""
    workload: str = "gpu-gpt85m-cosine"
    """the surrogate workload"""
    hardware: str = "h200-gpt85m"
    """the cost profile of every episode (envs/profiles/; its measured optimizer share)"""
    objective: str = "balanced"
    """objective preset"""
    episodes: int = 64
    """episodes (seeds) every schedule plays"""
    seed: int = 0
    """first seed"""
    depth: tuple[float, float] = (0.31, 0.31)
    """the reference's extra log-drop (envs.simulator; 0.31: the GPU demo's gpt-85m run)"""


def play_schedule(schedule: Schedule, args: SchedulesArgs) -> EpisodeBatch:
    """Every episode of ``args`` under ``schedule``: its first setting opens the episode, the decision after
    interval ``n`` is ``schedule.at(n + 1)``."""
    seeds = list(range(args.seed, args.seed + args.episodes))
    decided = [0]

    def act(obs: np.ndarray) -> np.ndarray:
        decided[0] += 1
        action = DEFAULT_GRID.action(schedule.at(decided[0] + 1))
        return np.tile(np.asarray(action, dtype=np.int64), (len(obs), 1))

    return run_surrogate(
        act,
        args.workload,
        args.objective,
        seeds,
        hardware=hardware_sampler(args.hardware),
        depth=args.depth,
        initial_setting=schedule.first,
    )


def _ci(x: np.ndarray) -> float:
    """Half-width of the normal 95 % interval of the mean of ``x``."""
    return 1.96 * float(np.std(x, ddof=1)) / math.sqrt(len(x)) if len(x) > 1 else math.nan


def report(args: SchedulesArgs) -> str:
    schedules = [Schedule.parse(s) for s in args.schedules]
    batches = [play_schedule(s, args) for s in schedules]
    base = batches[0].objective
    lines = [
        f"{args.episodes} surrogate episodes of {args.workload} on {args.hardware}, {args.objective}, depth "
        f"{args.depth[0]:g}-{args.depth[1]:g} (modelled); J lower is better, paired with "
        f"{schedules[0].label()}",
        "",
        "| schedule | J (95 % CI) | J - first (paired 95 % CI) | final loss term | mean memory | mean time |",
        "|---|---|---|---|---|---|",
    ]
    for s, b in zip(schedules, batches, strict=True):
        j, d = b.objective, b.objective - base
        lines.append(
            f"| {s.label()} | {j.mean():.4f} +/- {_ci(j):.4f} | {d.mean():+.4f} +/- {_ci(d):.4f} | "
            f"{b.final_loss.mean():+.4f} | {b.terms[:, 1].mean():.3f} | {b.terms[:, 3].mean():.3f} |"
        )
    return "\n".join(lines)


def _problem(args: SchedulesArgs) -> str:
    if not args.schedules:
        return "give at least one setting or schedule"
    if args.episodes < 2:
        return f"--episodes {args.episodes}: give at least 2"
    return ""


def main(argv: Sequence[str] | None = None) -> int:
    return table_command("mango bench schedules", SchedulesArgs, report, argv, __doc__, _problem)


if __name__ == "__main__":
    sys.exit(main())
