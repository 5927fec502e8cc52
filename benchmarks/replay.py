"""Would another policy have played the recorded runs? A ``mango demo`` run's service decisions, replayed.

A demo run's adaptive seed is a deterministic function of its schedule: the same model, data order and seed
trained under the same sequence of settings gives the same run, up to the GPU's run-to-run noise. So where a
candidate policy, shown every window the service was shown, answers each one with the setting the service
answered, the recorded run *is* the run the candidate would have played, and its recorded objective ``J`` is
the candidate's. Where the candidate answers one window differently, the run from there on is unknown: the
table says at which window and what each would have played, and the recorded static runs of the same seed
are the nearest evidence.

This replays a GPU call's evidence for any number of candidate policies on any machine, without a GPU. It is
the selection step that would have caught session 24's coin flip (the shipped policy's first service decision
between r0/b4/g0 and r0/b8/g0 was a near tie, so seeds split between them).

Each run directory is what ``mango demo --out-dir DIR`` writes: ``summary.json`` (the objective preset, every
seed's runs and ``J``), and per seed (no suffix for the run's first seed, ``-<seed>`` for the others)
``telemetry.jsonl``, ``decisions.jsonl`` and, since session 24, ``profile.json`` (the cost profile the
hook sent; older runs use ``--profile`` as a stand-in). Windows are encoded as the service encodes them
(:func:`benchmarks.obs_shift.window_observations`), and a candidate answers with its greedy setting
(``LearnedPolicy.decide_obs``), as the service does. The policy that played is the control: its agreement
with itself measures how faithfully the replay rebuilds the service's input (a stand-in profile, the rebuilt
reference).

Usage::

    mango bench replay results/gpu-2026-12-05-s24/call30-h100/demo-bal-wide100m-hind \\
        --policy shipped=default s24L47=results/policy-s24L47

``--policy NAME=PATH`` names a candidate (``default``: the shipped one; a path: an artifact). A decision the
service's shield changed is marked: a candidate's raw answer is compared with what the shield let through.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tyro

from benchmarks.common import table_command
from benchmarks.obs_shift import read_telemetry, window_observations
from client.policy import LearnedPolicy, load_default_policy, load_policy
from client.profile import profile_log
from client.protocol import CompressionSetting, CostProfile, Objective, TelemetryRecord

__all__ = ["ReplayArgs", "SeedReplay", "SeedRun", "load_seed_runs", "main", "replay_seed"]


@dataclass
class ReplayArgs:
    """Every service decision of recorded demo runs, replayed for candidate policies."""

    runs: tyro.conf.Positional[tuple[str, ...]]
    """``mango demo --out-dir`` directories (``summary.json``, per seed ``telemetry``/``decisions`` files)"""
    policy: tuple[str, ...] = ("shipped=default",)
    """candidates as ``NAME=PATH`` (``default``: the shipped policy; a path: an artifact directory or file)"""
    profile: str = "envs/profiles/h200-gpt85m.json"
    """stand-in cost profile for a seed whose directory holds no ``profile{k}.json`` (runs before session
    24); the control's agreement says how much it matters"""


@dataclass(frozen=True)
class SeedRun:
    """One adaptive seed of a demo run: the service's windows and answers, and the seed's recorded ``J``."""

    run: str
    """the run directory's name"""
    seed: int
    preset: str
    objective: Objective
    records: list[TelemetryRecord]
    """the telemetry the service was shown, one record an interval (``telemetry.jsonl``)"""
    profile: CostProfile | None
    profile_is_stand_in: bool
    answers: dict[int, tuple[CompressionSetting, bool]]
    """request step -> (the setting the service returned, whether its shield changed the policy's answer)"""
    scores: dict[str, float]
    """run name -> ``J`` of this seed (the adaptive run, AdamW and each static setting)"""
    fallbacks: int = 0
    """decisions the hook's fallback controller made (the service was slow or gone): such a run is not the
    policy's alone, so no candidate replays it whole"""


@dataclass
class SeedReplay:
    """A candidate against one seed: how many service decisions it would have made alike."""

    agree: int = 0
    decisions: int = 0
    first_miss: tuple[int, str, str] | None = None
    """(window, the service's answer, the candidate's) of the first decision made differently"""
    shielded: int = 0
    """decisions the service's shield changed (a candidate's raw answer is compared with the shielded one)"""

    fallbacks: int = 0
    """decisions the hook's fallback made in the recorded run"""

    @property
    def replayed(self) -> bool:
        """Every decision alike and none by the fallback: the recorded run is the candidate's run."""
        return self.decisions > 0 and self.agree == self.decisions and self.fallbacks == 0


def _suffix(k: int, seed: int) -> str:
    """The demo's file suffix (``demo.app``): none for its first seed, ``-<seed>`` for the others."""
    return "" if k == 0 else f"-{seed}"


def _read_answers(path: Path) -> tuple[dict[int, tuple[CompressionSetting, bool]], int]:
    """The service's answers by request step, and how many decisions the hook's fallback made instead."""
    out: dict[int, tuple[CompressionSetting, bool]] = {}
    fallbacks = 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        d = json.loads(line)
        fallbacks += d.get("source") == "fallback"
        if d.get("source") != "service" or d.get("shadow"):
            continue
        setting = CompressionSetting.model_validate(d["setting"])
        out[int(d["request_step"])] = (setting, bool(d.get("shielded")))
    return out, fallbacks


def load_seed_runs(run_dir: str | Path, stand_in: CostProfile | None) -> list[SeedRun]:
    """Every adaptive seed of a demo run directory.

    :raises ValueError: the directory holds no ``summary.json``, or a seed's telemetry or decisions are
        missing (the message names the file).
    """
    d = Path(run_dir)
    summary_path = d / "summary.json"
    if not summary_path.is_file():
        raise ValueError(f"{d}: no summary.json (is it a `mango demo --out-dir` directory?)")
    summary = json.loads(summary_path.read_text())
    try:
        obj = summary["objective"]
        objective = Objective(
            w_loss=obj["w_loss"], w_memory=obj["w_memory"], w_energy=obj["w_energy"], w_time=obj["w_time"]
        )
        # a one-seed demo keeps no "seeds" list: its J at the top, its seed among the arguments
        seeds = summary.get("seeds") or [
            {"seed": summary["args"]["seed"], "objective_scores": summary["objective_scores"]}
        ]
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{summary_path}: not a mango demo summary ({type(exc).__name__}: {exc})") from None
    out = []
    for k, seed in enumerate(seeds):
        suffix = _suffix(k, int(seed["seed"]))
        tel, dec = d / f"telemetry{suffix}.jsonl", d / f"decisions{suffix}.jsonl"
        prof = profile_log(tel)
        for p in (tel, dec):
            if not p.is_file():
                raise ValueError(f"{p}: missing (seed {seed['seed']} of {d})")
        own = CostProfile.model_validate_json(prof.read_text()) if prof.is_file() else None
        answers, fallbacks = _read_answers(dec)
        out.append(
            SeedRun(
                run=d.name,
                seed=int(seed["seed"]),
                preset=str(obj.get("preset", "")),
                objective=objective,
                records=read_telemetry(tel),
                profile=own or stand_in,
                profile_is_stand_in=own is None,
                answers=answers,
                scores={str(n): float(v) for n, v in seed["objective_scores"].items()},
                fallbacks=fallbacks,
            )
        )
    return out


def replay_seed(policy: LearnedPolicy, run: SeedRun) -> SeedReplay:
    """The candidate's greedy answer to each window the service answered, beside the service's answer."""
    obs = window_observations(run.records, policy.spec, run.objective, run.profile)
    steps = [r.step for r in run.records]
    out = SeedReplay(fallbacks=run.fallbacks)
    for i, step in enumerate(steps):
        if step not in run.answers:
            continue
        answered, shielded = run.answers[step]
        mine = policy.decide_obs(obs[i])
        out.decisions += 1
        out.shielded += shielded
        if mine == answered:
            out.agree += 1
        elif out.first_miss is None:
            out.first_miss = (i + 1, answered.label(), mine.label())
    return out


def _schedule(run: SeedRun) -> str:
    """``r0/b8/g0 x1, r0/b4/g0 x29``: the settings the service answered, in order of first use."""
    seq = [run.answers[s][0].label() for s in sorted(run.answers)]
    return ", ".join(f"{label} x{n}" for label, n in Counter(seq).items())


def _parse_policies(specs: Sequence[str]) -> list[tuple[str, LearnedPolicy]]:
    out = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--policy {spec!r}: expected NAME=PATH (PATH 'default' for the shipped policy)")
        out.append((name, load_default_policy() if path == "default" else load_policy(path)))
    return out


def report(args: ReplayArgs) -> str:
    stand_in = CostProfile.model_validate_json(Path(args.profile).read_text()) if args.profile else None
    policies = _parse_policies(args.policy)
    seeds = [s for d in args.runs for s in load_seed_runs(d, stand_in)]
    names = [n for n, _ in policies]
    lines = [
        f"{len(seeds)} adaptive seeds of {len(args.runs)} run(s); a cell is the decisions made alike, then "
        "the recorded J where every one is (the run is the candidate's), else the first window answered "
        "differently (service's -> candidate's)",
        "",
        "| run | preset | seed | profile | played | J played | best static (J) | " + " | ".join(names) + " |",
        "|---|---|---|---|---|---|---|" + "---|" * len(names),
    ]
    totals = {n: [0, 0, 0, []] for n in names}  # agree, decisions, replayed seeds, replayed J
    for run in seeds:
        statics = {k: v for k, v in run.scores.items() if k.startswith("static")}
        best = min(statics, key=lambda k: statics[k]) if statics else ""
        best_cell = f"{best.removeprefix('static ')} ({statics[best]:.3f})" if best else "-"
        played_j = run.scores.get("adaptive (service)", float("nan"))
        cells = []
        for name, policy in policies:
            r = replay_seed(policy, run)
            t = totals[name]
            t[0] += r.agree
            t[1] += r.decisions
            shield = f" ({r.shielded} shielded)" if r.shielded else ""
            shield += f" ({r.fallbacks} by the fallback)" if r.fallbacks else ""
            if r.replayed:
                t[2] += 1
                t[3].append(played_j)
                cells.append(f"{r.agree}/{r.decisions}{shield}, J {played_j:.3f}")
            else:
                w, theirs, mine = r.first_miss or (0, "", "")
                cells.append(f"{r.agree}/{r.decisions}{shield}, w{w}: {theirs} -> {mine}")
        prof = "stand-in" if run.profile_is_stand_in else "own"
        lines.append(
            f"| {run.run} | {run.preset} | {run.seed} | {prof} | {_schedule(run)} | {played_j:.3f} | "
            f"{best_cell} | " + " | ".join(cells) + " |"
        )
    lines += [
        "",
        "| policy | decisions alike | seeds replayed whole | their mean recorded J |",
        "|---|---|---|---|",
    ]
    for name in names:
        agree, n, whole, js = totals[name]
        mean = f"{np.mean(js):.3f}" if js else "-"
        lines.append(f"| {name} | {agree}/{n} ({agree / max(n, 1):.0%}) | {whole}/{len(seeds)} | {mean} |")
    return "\n".join(lines)


def _problem(args: ReplayArgs) -> str:
    return "" if args.runs else "give at least one `mango demo --out-dir` directory"


def main(argv: Sequence[str] | None = None) -> int:
    return table_command("mango bench replay", ReplayArgs, report, argv, __doc__, _problem)


if __name__ == "__main__":
    sys.exit(main())
