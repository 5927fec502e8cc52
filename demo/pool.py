"""``mango verdict``: one verdict over the seeds of several demo runs (their ``summary.json`` files).

A demo of a large model fits two seeds in one device call; the next call runs two more with ``--seed 2``.
Each seed's ``J`` is relative to its own AdamW run, so seeds of different demos pool as they are, provided
the demos ran the same job under the same objective. Where their static runs differ, the verdict is over the
runs every demo has (the adaptive run, AdamW and at least one static setting), and the output names the runs
it left out. This
prints the pooled per-seed table and the demo's verdict over all seeds (:func:`demo.report.
format_seeds_verdict`, settled like the demo's for runs that trained alike), so a pooled figure comes from
a command rather than from arithmetic by hand.

Example::

    mango verdict results/call27/demo-bal/summary.json results/call29/demo-bal/summary.json
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tyro

from demo.report import format_loss_vs_adamw, format_seed_table, format_seeds_verdict, settle_alike
from demo.runs import Point, RunResult

__all__ = ["JOB_FIELDS", "PoolArgs", "Pooled", "main", "pool_summaries"]

#: The demo arguments that make the job: summaries pool only when these agree (the seed may differ).
JOB_FIELDS = ("model", "steps", "batch_size", "seq_len", "lr", "interval_steps", "device")


@dataclass
class PoolArgs:
    """One verdict over the seeds of several ``mango demo`` runs."""

    summaries: tyro.conf.Positional[tuple[Path, ...]]
    """``summary.json`` files (or the demo output folders holding them), two or more seeds in all"""


def _run(d: dict[str, Any]) -> RunResult:
    names = {f.name for f in dataclasses.fields(RunResult)}
    kw = {k: v for k, v in d.items() if k in names and k != "points"}
    return RunResult(**kw, points=[Point(**p) for p in d.get("points", [])])


def _seeds(path: Path, doc: dict[str, Any]) -> list[tuple[int, list[RunResult], dict[str, float]]]:
    """``(seed, runs, J per run)`` of each seed of one summary (a one-seed demo has no ``seeds`` list)."""
    try:
        if "seeds" in doc:
            return [
                (int(s["seed"]), [_run(r) for r in s["runs"]], s["objective_scores"]) for s in doc["seeds"]
            ]
        return [(int(doc["args"]["seed"]), [_run(r) for r in doc["runs"]], doc["objective_scores"])]
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: not a mango demo summary.json ({type(exc).__name__}: {exc})") from None


@dataclass(frozen=True)
class Pooled:
    """What :func:`pool_summaries` found: the per-seed ``J`` table, the verdict, the runs left out
    (``"run (in FILE)"``) because some summary lacked them, and the runs' final losses against AdamW's
    (:func:`~demo.report.format_loss_vs_adamw`)."""

    table: str
    verdict: str
    left_out: tuple[str, ...] = ()
    loss_line: str = ""


def pool_summaries(paths: list[Path]) -> Pooled:
    """The pooled per-seed ``J`` table and the verdict over every seed of ``paths``, over the runs that every
    summary has (in the first summary's order).

    ``ValueError`` names the file when a summary is unreadable, when two summaries differ in objective or in
    the job (:data:`JOB_FIELDS`), when they share no static run beside the adaptive run and AdamW (the first
    two runs of every demo), or when a seed appears twice (the same seed in two demos would count one job
    twice)."""
    rows: list[tuple[int, list[RunResult], dict[str, float]]] = []
    objective = names = None
    first: Path | None = None
    job: dict[str, Any] = {}
    ran: list[tuple[Path, list[str]]] = []
    for p in paths:
        path = p / "summary.json" if p.is_dir() else p
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: cannot read a summary ({exc})") from None
        obj = (doc.get("objective") or {}).get("preset")
        seeds = _seeds(path, doc)
        these = [r.name for r in seeds[0][1]]
        the_job = {k: (doc.get("args") or {}).get(k) for k in JOB_FIELDS}
        if first is None:
            objective, names, first, job = obj, these, path, the_job
        elif obj != objective:
            raise ValueError(f"{path}: objective {obj!r}, but {first} ran {objective!r}")
        elif the_job != job:
            raise ValueError(f"{path}: job {the_job}, but {first} ran {job}: pool demos of the same job")
        elif these[:2] != names[:2] or not set(these[2:]) & set(names[2:]):
            raise ValueError(
                f"{path}: runs {these}, but {first} ran {names}: pool demos that share the adaptive run, "
                "AdamW and a static run"
            )
        ran.append((path, these))
        for seed, runs, scores in seeds:
            if any(seed == s for s, _, _ in rows):
                raise ValueError(f"{path}: seed {seed} is already in an earlier summary")
            rows.append((seed, runs, scores))
    if len(rows) < 2 or names is None:
        raise ValueError(f"{len(rows)} seed(s) in all: a pooled verdict needs at least two")
    common = [n for n in names if all(n in these for _, these in ran)]
    if len(common) < 3:
        raise ValueError(f"the summaries share only the runs {common}: a pooled verdict needs a static run")
    left_out = tuple(f"{n} (in {path})" for path, these in ran for n in these if n not in common)
    rows.sort(key=lambda r: r[0])
    per_seed = [{n: scores[n] for n in common} for _, _, scores in rows]
    runs = [[r for r in rs if r.name in common] for _, rs, _ in rows]
    table = format_seed_table([s for s, _, _ in rows], per_seed, common)
    verdict = format_seeds_verdict(per_seed, common, str(objective))
    verdict = settle_alike(verdict, runs, per_seed, str(objective))
    return Pooled(table, verdict, left_out, format_loss_vs_adamw(runs))


def main(argv: list[str] | None = None) -> int:
    args = tyro.cli(PoolArgs, args=argv, prog="mango verdict", description=(__doc__ or "").splitlines()[0])
    try:
        pooled = pool_summaries(list(args.summaries))
    except ValueError as exc:
        print(f"mango verdict: {exc}", file=sys.stderr)
        return 2
    print("J per seed (each relative to its own AdamW run; lower is better):\n")
    print(pooled.table)
    print()
    if pooled.left_out:
        print("left out (not run by every demo): " + "; ".join(pooled.left_out) + "\n")
    print(pooled.verdict)
    if pooled.loss_line:
        print(pooled.loss_line)
    return 0
