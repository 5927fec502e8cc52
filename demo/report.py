"""What a demo run reports: each run's objective score, the verdict, the summary table, the machine line."""

from __future__ import annotations

import math
import os
import platform

import torch

from client.protocol import Objective
from demo.runs import RunResult
from envs.reward import objective_cost

__all__ = [
    "format_seed_table",
    "format_seeds_verdict",
    "format_table",
    "format_verdict",
    "machine_line",
    "objective_scores",
]


def objective_scores(runs: list[RunResult], objective: Objective) -> dict[str, float]:
    """Each run's scalar objective ``J`` under ``objective`` (lower is better):
    :func:`envs.reward.objective_cost`, the function ``mango eval`` and ``mango train``'s checkpoint
    selection score episodes with, of the final
    validation loss relative to the AdamW run's (0.2 = 20 % worse) and the mean state bytes, energy and wall
    time as ratios to the AdamW run's. AdamW's own ``J`` is ``w_memory + w_energy + w_time``. With a memory
    budget, memory is a constraint: it leaves ``J`` and a run whose mean state breaks the budget gets ``inf``.
    A run that diverged (non-finite final loss) gets ``inf`` too: the worst, never ``nan``.
    """
    base = next((r for r in runs if r.name.startswith("adamw")), runs[0])
    w = objective.weights().astype(float)
    budget = objective.memory_budget_bytes
    out: dict[str, float] = {}
    for r in runs:
        if not math.isfinite(r.final_val_loss):
            out[r.name] = math.inf
            continue
        mean_state = r.mean_state_bytes_per_param() * r.n_params
        cost = objective_cost(
            w,
            (r.final_val_loss - base.final_val_loss) / base.final_val_loss,
            mean_state / max(base.mean_state_bytes_per_param() * base.n_params, 1.0),
            r.energy_j / base.energy_j if base.energy_j > 0 else 1.0,
            r.wall_s / base.wall_s if base.wall_s > 0 else 1.0,
            state_bytes=mean_state,
            budget_bytes=budget or 0,
        )
        out[r.name] = float(cost)
    return out


def format_verdict(runs: list[RunResult], scores: dict[str, float], objective_name: str) -> str:
    """One line: who won under the chosen objective, and by how much."""
    adaptive = runs[0]
    others = sorted((r for r in runs[1:]), key=lambda r: scores[r.name])
    best = others[0]
    a, b = scores[adaptive.name], scores[best.name]
    rel = (b - a) / abs(b) if b not in (0.0, math.inf) else 0.0
    head = f"verdict ({objective_name}):"
    if not math.isfinite(adaptive.final_val_loss):
        loss = adaptive.final_val_loss
        return f"{head} {best.name} wins, J {b:.3f}: the adaptive run diverged (final loss {loss})"
    if a < b:
        return f"{head} adaptive wins, J {a:.3f} vs {b:.3f} for {best.name} ({rel:+.1%})"
    return f"{head} {best.name} wins, J {b:.3f} vs adaptive {a:.3f} ({rel:+.1%} for adaptive)"


def format_seeds_verdict(per_seed: list[dict[str, float]], names: list[str], objective_name: str) -> str:
    """One line over several seeds (each seed's J relative to its own AdamW run): the run with the lowest
    mean J against the adaptive run (``names[0]``), the mean paired difference with its sample spread, and on
    how many seeds the adaptive run beat the best other run."""
    n = len(per_seed)
    mean = {k: sum(s[k] for s in per_seed) / n for k in names}
    best = min(names[1:], key=lambda k: mean[k])
    diffs = [s[best] - s[names[0]] for s in per_seed]  # > 0: the adaptive run is better on that seed
    d = sum(diffs) / n
    sd = math.sqrt(sum((x - d) ** 2 for x in diffs) / (n - 1)) if n > 1 else math.nan
    wins = sum(x > 0 for x in diffs)
    a, b = mean[names[0]], mean[best]
    head = f"verdict ({objective_name}, {n} seeds):"
    tally = f"adaptive better on {wins} of {n} seeds; paired J difference {d:+.3f} (sd {sd:.3f})"
    worst = sum(s[names[0]] == math.inf for s in per_seed)
    if worst:
        tally += f"; adaptive J inf (diverged or over the memory budget) on {worst} of {n} seeds"
    if a < b:
        return f"{head} adaptive wins on the mean, J {a:.3f} vs {b:.3f} for {best}; {tally}"
    return f"{head} {best} wins on the mean, J {b:.3f} vs adaptive {a:.3f}; {tally}"


def format_seed_table(seeds: list[int], per_seed: list[dict[str, float]], names: list[str]) -> str:
    """Each seed's J per run (relative to that seed's AdamW run) and the mean, as a Markdown table."""
    lines = ["| seed | " + " | ".join(names) + " |", "| --- |" + " ---: |" * len(names)]
    for seed, scores in zip(seeds, per_seed, strict=True):
        lines.append(f"| {seed} | " + " | ".join(f"{scores[k]:.3f}" for k in names) + " |")
    mean = [sum(s[k] for s in per_seed) / len(per_seed) for k in names]
    lines.append("| mean | " + " | ".join(f"{m:.3f}" for m in mean) + " |")
    return "\n".join(lines)


def format_table(runs: list[RunResult]) -> str:
    """The summary as a Markdown table (also printed)."""
    head = (
        "| run | setting | final val loss | state B/param (final / mean) | energy J (source) | wall s "
        "| decisions | fallbacks |"
    )
    lines = [head, "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in runs:
        dec = "-" if r.decisions is None else str(r.decisions)
        fb = "-" if r.fallbacks is None else str(r.fallbacks)
        lines.append(
            f"| {r.name} | {r.label} | {r.final_val_loss:.4f} | {r.state_bytes_per_param:.2f} / "
            f"{r.mean_state_bytes_per_param():.2f} | {r.energy_j:,.0f} ({r.energy_source}) | {r.wall_s:.1f} "
            f"| {dec} | {fb} |"
        )
    return "\n".join(lines)


def machine_line(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (torch {torch.__version__})"
    return (
        f"{platform.machine()} CPU, {os.cpu_count()} cores, {torch.get_num_threads()} torch thread(s), "
        f"torch {torch.__version__}"
    )
