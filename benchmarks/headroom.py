"""``mango bench headroom``: how much any schedule could beat the best static setting in the surrogate.

Issue 13's goal asks the learned policy to beat the best static setting in hindsight by >= 10 % (``J``, the
users' objective of :func:`envs.reward.episode_objective`, lower is better). This bench measures how much
room the surrogate leaves for that, per objective preset, with three oracles that a policy cannot beat on
average:

* **static-best**: one setting for every workload, chosen in hindsight (what ``mango eval`` compares with);
* **static per workload**: the best setting of each workload, in hindsight (the gain of knowing the job);
* **schedule per workload**: the best open-loop schedule of each workload (one setting per control
  interval, the same for every seed of the workload), found by coordinate descent from the workload's best
  static setting: each pass tries every grid setting at each interval in turn, the others held, and keeps
  the one with the best mean ``J`` over the seeds. A local optimum, so a lower bound on the best schedule;
  a policy reacting to each episode's noise could do better only by reading that noise from telemetry.
  Printed twice: with every interval free, and with the last interval held at the setting before it
  (the surrogate prices a setting's loss lightly in the last interval, so a free last interval shows how
  much of the room is that end effect).

Gains are relative like ``mango eval``'s: ``(J_static_best - J) / |J_static_best|``, the mean over the
workloads' episodes. Episodes are the evaluation's (``--seed``, ``--episodes``, ``--hardware``,
``--depth``); the coordinate descent plays ``passes x intervals x 240 x episodes`` surrogate episodes per
workload and preset (seconds each on a CPU).

Example::

    mango bench headroom --split val --episodes 16 --hardware cpu-dev-2core --depth 0 0.8
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tyro

from agents.evaluate import hardware_sampler
from agents.rollout import EpisodeBatch, grid_actions, run_surrogate, static_grid_returns
from client.protocol import DEFAULT_GRID
from envs.env import objective_presets
from envs.workloads import workloads_of

__all__ = ["HeadroomArgs", "main", "schedule_oracle"]


@dataclass
class HeadroomArgs:
    """The room the surrogate leaves above the best static setting, per objective preset."""

    split: str = "val"
    """workload split (``train``, ``val``, ``heldout``) whose CPU workloads are played"""
    workloads: tuple[str, ...] = ()
    """workload names instead of ``--split``'s"""
    presets: tuple[str, ...] = ()
    """objective presets (empty: every preset)"""
    seed: int = 100000
    episodes: int = 16
    hardware: str = "cpu-dev-2core"
    """hardware profile of envs/profiles/ (as ``mango eval --hardware``)"""
    depth: tuple[float, float] = (0.0, 0.8)
    passes: int = 2
    """coordinate-descent passes over the intervals (each pass only improves the schedule)"""


def _play(
    schedules: np.ndarray, workload: str, preset: str, seeds: Sequence[int], hardware: Any, depth: Any
) -> EpisodeBatch:
    """Open-loop ``schedules`` (``[n_schedules, K, 3]`` grid indices; past ``K`` the last setting holds) on
    every seed, schedule-major: schedule ``i``'s episodes are rows ``i * n_seeds ...``."""
    rows = np.repeat(schedules, len(seeds), axis=0)  # [n_sched * n_seeds, K, 3]
    k = [0]

    def act(_obs: np.ndarray) -> np.ndarray:
        t = min(k[0], rows.shape[1] - 1)
        k[0] += 1
        return rows[:, t]

    return run_surrogate(act, workload, preset, list(seeds) * len(schedules), None, hardware, depth)


def schedule_oracle(
    workload: str,
    preset: str,
    seeds: Sequence[int],
    start: np.ndarray,
    *,
    hardware: Any = "default",
    depth: tuple[float, float] = (0.0, 0.0),
    passes: int = 2,
    hold_last: bool = False,
    candidates: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The best open-loop schedule found from static action ``start`` and its ``J`` per seed.

    ``hold_last``: the last interval keeps the setting of the one before (no move of its own).
    ``candidates``: the grid actions ``[n, 3]`` tried at each interval (default: the whole grid).

    :returns: ``(schedule [K, 3], J [n_seeds])``; ``J``'s mean is never above ``start``'s.
    """
    acts = grid_actions() if candidates is None else np.asarray(candidates, dtype=np.int64).reshape(-1, 3)
    static = _play(
        np.asarray(start, dtype=np.int64).reshape(1, 1, 3), workload, preset, seeds, hardware, depth
    )
    k = int(static.lengths.max())  # the intervals of the longest episode
    sched = np.repeat(np.asarray(start, dtype=np.int64)[None], k, axis=0)
    best = static.objective
    for _ in range(passes):
        moved = False
        for t in range(k - 1 if hold_last and k > 1 else k):
            cands = np.repeat(sched[None], len(acts), axis=0)
            cands[:, t] = acts
            if hold_last and t == k - 2:
                cands[:, k - 1] = acts
            j = _play(cands, workload, preset, seeds, hardware, depth).objective.reshape(len(acts), -1)
            i = int(np.argmin(j.mean(axis=1)))
            if j[i].mean() < best.mean() - 1e-12:
                sched[t], best, moved = acts[i], j[i], True
                if hold_last and t == k - 2:
                    sched[k - 1] = acts[i]
        if not moved:
            break
    return sched, best


def _runs(sched: np.ndarray) -> str:
    """``r64/b4/g0 x3 > r0/b8/g0 x9``: a schedule as runs of one setting."""
    labels = [DEFAULT_GRID.setting(tuple(int(x) for x in a)).label() for a in sched]
    out: list[str] = []
    i = 0
    while i < len(labels):
        j = i
        while j < len(labels) and labels[j] == labels[i]:
            j += 1
        out.append(f"{labels[i]} x{j - i}")
        i = j
    return " > ".join(out)


def main(argv: list[str] | None = None) -> int:
    args = tyro.cli(HeadroomArgs, args=argv, prog="mango bench headroom", description=HeadroomArgs.__doc__)
    workloads = list(args.workloads) or list(workloads_of(args.split))
    presets = list(args.presets) or objective_presets()
    unknown = [p for p in presets if p not in objective_presets()]
    if unknown:
        raise SystemExit(f"mango bench headroom: unknown preset(s) {unknown}; known: {objective_presets()}")
    if args.episodes < 2 or args.passes < 1:
        raise SystemExit("mango bench headroom: --episodes >= 2 and --passes >= 1")
    seeds = [args.seed + i for i in range(args.episodes)]
    hardware = hardware_sampler(args.hardware)
    acts = grid_actions()
    print(
        f"workloads {workloads}; {args.episodes} episodes each (seed {args.seed}); hardware {args.hardware}; "
        f"depth {args.depth}; {args.passes} passes; J lower is better, gains relative to static-best's J"
    )
    print()
    print(
        "| preset | static-best | J | static per workload | schedule per workload | last interval held "
        "| schedules (last interval held) |"
    )
    print("|---|---|---|---|---|---|---|")
    for preset in presets:
        grid = np.stack(
            [
                static_grid_returns(
                    w, preset, seeds, actions=acts, hardware=hardware, depth=args.depth
                ).objective.reshape(len(acts), len(seeds))
                for w in workloads
            ]
        )  # [W, S, seeds]
        g = int(np.argmin(grid.mean(axis=(0, 2))))
        j_static = grid[:, g]  # [W, seeds]
        per_w = grid.mean(axis=2).argmin(axis=1)  # [W]
        j_per_w = grid[np.arange(len(workloads)), per_w]
        j_free, j_held, shown = [], [], []
        for wi, w in enumerate(workloads):
            kw: dict[str, Any] = {"hardware": hardware, "depth": args.depth, "passes": args.passes}
            j_free.append(schedule_oracle(w, preset, seeds, acts[per_w[wi]], **kw)[1])
            sched, j = schedule_oracle(w, preset, seeds, acts[per_w[wi]], hold_last=True, **kw)
            j_held.append(j)
            shown.append(f"{w}: {_runs(sched)}")
        base = float(j_static.mean())

        def gain(j: Any, base: float = base) -> str:
            return f"{100 * (base - float(np.mean(j))) / max(abs(base), 1e-12):+.1f}%"

        label = DEFAULT_GRID.setting(tuple(int(x) for x in acts[g])).label()
        print(
            f"| {preset} | {label} | {base:.4f} | {gain(j_per_w)} | {gain(np.stack(j_free))} | "
            f"{gain(np.stack(j_held))} | {'; '.join(shown)} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
