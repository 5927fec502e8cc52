"""Does a real job's telemetry look like what the policy was trained on? Token features side by side.

A learned policy reads a window of telemetry tokens (``ObservationSpec.TOKEN_FEATURES``: loss relative to
the initial loss, gradient norm, kurtosis, spectral tail, compression error, memory / energy / time ratios,
...). On the surrogate it saw only the values the surrogate generates for its workloads; a real job whose
values lie outside them gets actions nobody trained (issue 13, session 10: the same artifact kept rank 0 on
the surrogate's held-out H200 workload and switched among ranks 8-16 and gamma 0.75-1 on the H200 demo).

This command encodes every interval of a ``mango demo`` run's ``telemetry.jsonl`` exactly as the service
does (the newest token of each window) and draws the same tokens from surrogate episodes of a stand-in
workload (random settings, fixed hardware profile), then prints per feature the demo's median and range,
the surrogate's 1st / 50th / 99th percentiles and the share of the demo's intervals outside the surrogate's
1-99 % range. Features that describe the setting itself (rank, bits, gamma) are skipped.

Usage::

    mango bench obs-shift demo_out/telemetry.jsonl --workload gpu-gpt85m-cosine --hardware h200-gpt85m
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import tyro

from client.protocol import Objective, ObservationSpec, TelemetryRecord
from envs.hardware import HardwareSampler

SKIP = ("mask", "rank_idx", "bits_idx", "gamma")


@dataclass
class ObsShiftArgs:
    """Token features of a demo run's telemetry beside the surrogate's for a stand-in workload."""

    telemetry: tyro.conf.Positional[tuple[str, ...]]
    """``telemetry.jsonl`` files written by ``mango demo`` (one adaptive run each)"""
    workload: str = "gpu-gpt85m-cosine"
    """surrogate workload that stands for the demo's job"""
    hardware: str = "h200-gpt85m"
    """hardware profile of the surrogate episodes (envs/profiles/)"""
    episodes: int = 64
    """surrogate episodes (random settings each interval)"""
    seed: int = 0
    """seed of the surrogate episodes and their random settings"""


def demo_tokens(paths: Sequence[str], spec: ObservationSpec) -> np.ndarray:
    """The newest token of every interval's window, ``[n, token_dim]``, as the service encodes it."""
    rows = []
    objective = Objective()
    for path in paths:
        with open(path) as f:
            recs = [TelemetryRecord.model_validate_json(line) for line in f if line.strip()]
        if not recs:
            raise ValueError(f"{path}: no telemetry records (is it a mango demo telemetry.jsonl?)")
        for i in range(len(recs)):
            tokens, _ = spec.split(spec.encode(recs[: i + 1], objective))
            rows.append(tokens[-1])
    return np.asarray(rows)


def surrogate_tokens(args: ObsShiftArgs, spec: ObservationSpec) -> np.ndarray:
    """The newest token after every step of ``args.episodes`` surrogate episodes under random settings."""
    from envs.env import CompressionEnv  # gymnasium: loaded only for the surrogate's half

    env = CompressionEnv(
        backend="surrogate",
        workload=args.workload,
        objective="balanced",
        window=spec.window,
        hardware=HardwareSampler(fixed=args.hardware),
    )
    env.action_space.seed(args.seed)
    rows = []
    for ep in range(args.episodes):
        obs, _ = env.reset(seed=args.seed + ep)
        done = False
        while not done:
            obs, _, term, trunc, _ = env.step(env.action_space.sample())
            rows.append(spec.split(obs)[0][-1])
            done = term or trunc
    env.close()
    return np.asarray(rows)


def report(args: ObsShiftArgs) -> str:
    spec = ObservationSpec()
    demo = demo_tokens(args.telemetry, spec)
    sim = surrogate_tokens(args, spec)
    lines = [
        f"demo intervals: {len(demo)} from {len(args.telemetry)} file(s); surrogate: {len(sim)} intervals of "
        f"{args.episodes} episodes of {args.workload} on {args.hardware} (random settings)",
        "",
        "| feature | demo median | demo min / max | surrogate p1 / p50 / p99 | demo outside p1-p99 |",
        "|---|---|---|---|---|",
    ]
    for j, name in enumerate(spec.TOKEN_FEATURES):
        if name in SKIP:
            continue
        d, s = demo[:, j], sim[:, j]
        lo, mid, hi = np.percentile(s, [1, 50, 99])
        out = float(np.mean((d < lo) | (d > hi)))
        lines.append(
            f"| {name} | {np.median(d):+.4g} | {d.min():+.4g} / {d.max():+.4g} | {lo:+.4g} / {mid:+.4g} / "
            f"{hi:+.4g} | {out:.0%} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = tyro.cli(ObsShiftArgs, args=argv, prog="mango bench obs-shift", description=__doc__.split("\n")[0])
    if not args.telemetry:
        print("mango bench obs-shift: give at least one telemetry.jsonl", file=sys.stderr)
        return 2
    print(report(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
