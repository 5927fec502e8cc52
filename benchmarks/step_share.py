"""Would the hook have replaced a recorded run's measured training step by the job's own? One row a run.

A cost profile's training step is timed in a tight loop; a job's step also holds its data loading and
logging. From the second interval the hook (``AdaptiveCompression._calibrate_profile``) estimates the
uncompressed step from each interval (``CostProfile.train_step_from_interval``: time per step less the
setting's extra optimizer cost) and replaces the profile's step by the least estimate so far once that
exceeds it by ``AdaptiveCompression.OBSERVED_STEP_SLACK``. This command applies the same rule to recorded
``mango demo`` runs (their ``telemetry[-N].jsonl`` beside the ``profile[-N].json`` the hook sent) and prints
the measured step, the least estimate, their ratio and whether the rule fires, so a change to the rule can be
checked against every run it would have touched.

Usage::

    mango bench step-share results/gpu-2026-12-05-s26/call38-h100/r/demo-bal-gpt85m-s24L47-7s
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import tyro

from benchmarks.common import table_command
from benchmarks.obs_shift import read_telemetry
from client.hook import AdaptiveCompression
from client.profile import profile_log
from client.protocol import CostProfile

__all__ = ["StepShareArgs", "least_estimate", "main", "report"]


@dataclass
class StepShareArgs:
    """The hook's observed-step rule on recorded demo runs."""

    runs: tyro.conf.Positional[tuple[str, ...]]
    """``mango demo --out-dir`` directories (every ``telemetry*.jsonl`` with its ``profile*.json``)"""


def least_estimate(telemetry: Path, profile: CostProfile) -> float | None:
    """The least uncompressed-step estimate over a run's intervals after the first, as the hook takes it
    (``None``: fewer than two intervals)."""
    recs = read_telemetry(telemetry)
    if len(recs) < 2:
        return None
    return min(
        profile.train_step_from_interval(b.setting, b.interval_s, b.step - a.step)
        for a, b in itertools.pairwise(recs)
    )


def report(args: StepShareArgs) -> str:
    slack = AdaptiveCompression.OBSERVED_STEP_SLACK
    rows = [
        f"The hook's observed-step rule (fires above {slack:g}x the profile's measured step)\n",
        "| run | telemetry | measured step ms | least observed ms | ratio | fires |",
        "|---|---|---|---|---|---|",
    ]
    found = 0
    for run in args.runs:
        for tel in sorted(Path(run).glob("telemetry*.jsonl")):
            prof_path = profile_log(tel)
            if not prof_path.exists():
                continue
            prof = CostProfile.model_validate_json(prof_path.read_text())
            least = least_estimate(tel, prof)
            if prof.train_step_s is None or least is None:
                continue
            found += 1
            ratio = least / prof.train_step_s
            rows.append(
                f"| {run} | {tel.name} | {prof.train_step_s * 1e3:.2f} | {least * 1e3:.2f} | {ratio:.3f} | "
                f"{'yes' if ratio > slack else 'no'} |"
            )
    if not found:
        raise ValueError("no run with a telemetry log, its profile (with a training step) and two intervals")
    return "\n".join(rows)


def _problem(args: StepShareArgs) -> str:
    return "" if args.runs else "give at least one `mango demo --out-dir`"


def main(argv: Sequence[str] | None = None) -> int:
    return table_command("mango bench step-share", StepShareArgs, report, argv, __doc__, _problem)


if __name__ == "__main__":
    sys.exit(main())
