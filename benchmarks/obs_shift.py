"""Does a real job's telemetry look like what the policy was trained on? Token features side by side.

A learned policy reads a window of telemetry tokens (``ObservationSpec.TOKEN_FEATURES``: loss relative to
the window's oldest loss, gradient norm, kurtosis, spectral tail, compression error, memory / energy / time
ratios, ...). On the surrogate it saw only the values the surrogate generates for its workloads; a real job
whose values lie outside them gets actions nobody trained (issue 13, session 10: the same artifact kept rank
0 on the surrogate's held-out H200 workload and switched among ranks 8-16 and gamma 0.75-1 on the H200
demo).

This command encodes every interval of a ``mango demo`` run's ``telemetry.jsonl`` exactly as the service
does (the newest token of each window) and draws the same tokens from surrogate episodes of a stand-in
workload (random settings, fixed hardware profile), then prints per feature the demo's median and range,
the surrogate's 1st / 50th / 99th percentiles and the share of the demo's intervals outside the surrogate's
1-99 % range. Features that describe the setting itself (rank, bits, gamma) are skipped.

Usage::

    mango bench obs-shift demo_out/telemetry.jsonl --workload gpu-gpt85m-cosine --hardware h200-gpt85m

``--policy P --own-median`` adds a table that sets each token feature (the current setting's own included)
to its median on the policy's own surrogate episodes: the feature whose change moves most decisions is the
one that makes the real run's decisions differ (session 20: the current rank, for a clone that had learned
to stay where it was).
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tyro

from benchmarks.common import table_command
from client.compression.sizes import DENSE_BYTES_PER_PARAM
from client.policy import LearnedPolicy, load_default_policy, load_policy
from client.protocol import (
    CompressionSetting,
    CostProfile,
    Objective,
    ObservationSpec,
    Reference,
    TelemetryRecord,
)
from envs.hardware import HardwareSampler
from envs.objectives import preset

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
    policy: str = ""
    """also ask this learned policy ('default': the shipped one; a path: an artifact) for its greedy setting
    on every demo window, raw and with one feature at a time clipped into the surrogate's 1-99 % range in
    every row: the share of decisions that change says which out-of-range input moves it ('': skip)"""
    objective: str = "balanced"
    """objective preset of the policy's windows (the demo's)"""
    own_median: bool = False
    """with --policy: also set each token feature (the setting's own included) to its median on the policy's
    own surrogate episodes (greedy, --workload, --hardware, --objective, 32 episodes from --seed, after their
    first interval) and count the decisions that change: which input makes the demo's decisions differ from
    the surrogate's"""
    depth: tuple[float, float] = (0.31, 0.31)
    """reference depth of those episodes (envs.simulator; 0.31: the demo's gpt-85m run)"""
    probs: str = ""
    """with --policy: also print, per demo window, the policy's probability of each of these comma-separated
    settings (``r0/b4/g0,r0/b8/g0``) and its greedy choice: how close a decision was (session 24: the
    first service decision between r0/b4/g0 and r0/b8/g0 is a near coin flip on the GPU jobs)"""
    profile: str = ""
    """the job's cost profile JSON (``mango profile --out``, or the cached one under
    ``$MANGO_CACHE_DIR/profiles``): the windows carry it as the service's did, and its parameter count
    gives the reference's AdamW state ('': none, which no training episode has)"""


def demo_observations(
    paths: Sequence[str], spec: ObservationSpec, objective: Objective, profile: CostProfile | None = None
) -> np.ndarray:
    """Every interval's observation, ``[n, spec.size]``, as the service encodes the window it is sent.

    The hook sends a :class:`Reference` beside each window (the first record's loss, energy and time, and
    AdamW's state bytes); the telemetry file does not hold it, so it is rebuilt the same way, with AdamW's
    state from the profile's parameter count. Without a profile the first record's state stands for it,
    which is right only for a run whose first interval was uncompressed (``memory_rel`` is inflated
    otherwise, e.g. a memory-first run that opened at rank 64).
    """
    rows = [window_observations(read_telemetry(path), spec, objective, profile) for path in paths]
    return np.concatenate(rows)


def read_telemetry(path: str | os.PathLike[str]) -> list[TelemetryRecord]:
    """The records of a demo run's ``telemetry.jsonl``; ``ValueError`` names a file that holds none."""
    with open(path) as f:
        recs = [TelemetryRecord.model_validate_json(line) for line in f if line.strip()]
    if not recs:
        raise ValueError(f"{path}: no telemetry records (is it a mango demo telemetry.jsonl?)")
    return recs


def window_observations(
    recs: Sequence[TelemetryRecord], spec: ObservationSpec, objective: Objective, profile: CostProfile | None
) -> np.ndarray:
    """:func:`demo_observations` of one run's records: window ``i`` is ``recs[: i + 1]``."""
    ref = Reference.from_history(recs)
    if profile is not None:
        dense = int(DENSE_BYTES_PER_PARAM * profile.n_params)
        ref = ref.model_copy(update={"dense_state_bytes": dense})
    return np.asarray(
        [spec.encode(recs[: i + 1], objective, reference=ref, profile=profile) for i in range(len(recs))]
    )


def _counts(settings: Sequence[CompressionSetting]) -> str:
    """``r64/b8/g0 x20, r64/b4/g0 x10``: each setting and how often, most frequent first."""
    return ", ".join(f"{label} x{n}" for label, n in Counter(s.label() for s in settings).most_common())


def decision_shift(
    args: ObsShiftArgs, spec: ObservationSpec, obs: np.ndarray, sim: np.ndarray, sim_job: np.ndarray
) -> list[str]:
    """Table rows: per token feature, the share of the policy's greedy decisions on the demo windows that
    change when that feature is clipped into the surrogate's 1-99 % range (real rows only); then with the
    job features (objective and profile) of a surrogate episode in place of the demo's."""
    policy = load_default_policy() if args.policy == "default" else load_policy(args.policy)
    base = [policy.decide_obs(o) for o in obs]
    tokens, job = spec.split(obs)
    real = tokens[..., spec.TOKEN_FEATURES.index("mask")] > 0
    out = [
        "",
        f"Policy {policy.info()['name']} ({args.policy}): greedy decisions on {len(obs)} demo windows, "
        f"{len(set(base))} distinct settings ({_counts(base)}); share that change with one feature clipped:",
        "",
        "| feature clipped to the surrogate's p1-p99 | decisions changed |",
        "|---|---|",
    ]

    def changed(t: np.ndarray, job: np.ndarray = job) -> float:
        flat = np.concatenate([t.reshape(len(obs), -1), job], axis=1)
        return float(np.mean([policy.decide_obs(o) != b for o, b in zip(flat, base, strict=True)]))

    clip_all = tokens.copy()
    for j, name in enumerate(spec.TOKEN_FEATURES):
        if name in SKIP:
            continue
        lo, hi = np.percentile(sim[:, j], [1, 99])
        t = tokens.copy()
        t[..., j] = clip_all[..., j] = np.where(real, np.clip(t[..., j], lo, hi), t[..., j])
        out.append(f"| {name} | {changed(t):.0%} |")
    out.append(f"| all of them | {changed(clip_all):.0%} |")
    swapped = np.broadcast_to(sim_job, job.shape)
    row = "job features (objective, profile) of a surrogate episode"
    out.append(f"| {row} | {changed(tokens, swapped):.0%} |")
    if args.own_median:
        own = own_tokens(args, policy)
        out += [
            "",
            f"Each token feature set to its median on {policy.info()['name']}'s own surrogate episodes "
            f"({args.workload}, {args.hardware}, {args.objective}, depth {args.depth[0]:g}-{args.depth[1]:g})"
            ":",
            "",
            "| feature | demo median | own-episode median | decisions changed |",
            "|---|---|---|---|",
        ]
        for j, name in enumerate(spec.TOKEN_FEATURES):
            if name == "mask":
                continue
            med = float(np.median(own[:, j]))
            t = tokens.copy()
            t[..., j] = np.where(real, med, t[..., j])
            demo_med = float(np.median(tokens[:, -1, j]))
            out.append(f"| {name} | {demo_med:+.4g} | {med:+.4g} | {changed(t):.0%} |")
    return out


def setting_probabilities(
    policy: LearnedPolicy, obs: np.ndarray, settings: Sequence[CompressionSetting]
) -> np.ndarray:
    """``[n_windows, len(settings)]``: the policy's probability of choosing each setting on each window (a
    joint head: the softmax over the grid; per-component heads: the product of the three softmaxes).

    :raises ValueError: a setting outside the policy's action grid (``ActionGrid.check`` names the component).
    """
    grid, cfg = policy.grid, policy.model.config
    idx = [grid.action(s) for s in settings]
    logits = policy.model.logits(obs).astype(np.float64)

    def softmax(x: np.ndarray) -> np.ndarray:
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)

    if cfg.joint:
        return softmax(logits)[:, grid.ravel(idx)]
    parts = np.split(logits, np.cumsum(cfg.nvec)[:-1], axis=1)
    probs = [softmax(x) for x in parts]
    return np.stack([probs[0][:, a] * probs[1][:, b] * probs[2][:, c] for a, b, c in idx], axis=1)


def probability_rows(args: ObsShiftArgs, obs: np.ndarray) -> list[str]:
    """The ``--probs`` table: per window, each listed setting's probability and the greedy choice."""
    policy = load_default_policy() if args.policy == "default" else load_policy(args.policy)
    settings = [CompressionSetting.parse(x.strip()) for x in args.probs.split(",") if x.strip()]
    p = setting_probabilities(policy, obs, settings)
    out = [
        "",
        f"Policy {policy.info()['name']} ({args.policy}): probability of each setting per demo window",
        "",
        "| window | " + " | ".join(f"p({s.label()})" for s in settings) + " | greedy |",
        "|---|" + "---|" * (len(settings) + 1),
    ]
    for i, row in enumerate(p):
        greedy = policy.decide_obs(obs[i]).label()
        out.append(f"| {i + 1} | " + " | ".join(f"{x:.3f}" for x in row) + f" | {greedy} |")
    return out


def own_tokens(args: ObsShiftArgs, policy: LearnedPolicy) -> np.ndarray:
    """The newest token of every window the policy sees on its own greedy surrogate episodes, after each
    episode's first interval (whose window holds no telemetry yet): ``[n, token_dim]``."""
    from agents.rollout import run_surrogate  # the surrogate and gymnasium: loaded for this table only

    spec = ObservationSpec()
    seen: list[np.ndarray] = []

    def act(obs: np.ndarray) -> np.ndarray:
        seen.append(obs.copy())
        return policy.model.act(obs).reshape(len(obs), 3)

    seeds = list(range(args.seed, args.seed + 32))
    hardware = HardwareSampler(fixed=args.hardware)
    run_surrogate(act, args.workload, args.objective, seeds, None, hardware, args.depth)
    return spec.split(np.concatenate(seen[1:]))[0][:, -1]


def surrogate_tokens(args: ObsShiftArgs, spec: ObservationSpec) -> tuple[np.ndarray, np.ndarray]:
    """The newest token after every step of ``args.episodes`` surrogate episodes under random settings, and
    the first episode's job features (``args.objective`` and its hardware draw's profile)."""
    from envs.env import CompressionEnv  # gymnasium: loaded only for the surrogate's half

    env = CompressionEnv(
        backend="surrogate",
        workload=args.workload,
        objective=args.objective,
        window=spec.window,
        hardware=HardwareSampler(fixed=args.hardware),
    )
    env.action_space.seed(args.seed)
    rows = []
    job = np.zeros(0)
    for ep in range(args.episodes):
        obs, _ = env.reset(seed=args.seed + ep)
        if ep == 0:
            job = spec.split(obs)[1]
        done = False
        while not done:
            obs, _, term, trunc, _ = env.step(env.action_space.sample())
            rows.append(spec.split(obs)[0][-1])
            done = term or trunc
    env.close()
    return np.asarray(rows), job


def report(args: ObsShiftArgs) -> str:
    spec = ObservationSpec()
    profile = CostProfile.model_validate_json(Path(args.profile).read_text()) if args.profile else None
    obs = demo_observations(args.telemetry, spec, preset(args.objective), profile)
    demo = spec.split(obs)[0][:, -1]
    sim, sim_job = surrogate_tokens(args, spec)
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
    if args.policy:
        lines += decision_shift(args, spec, obs, sim, sim_job)
        if args.probs:
            lines += probability_rows(args, obs)
    return "\n".join(lines)


def _problem(args: ObsShiftArgs) -> str:
    if not args.telemetry:
        return "give at least one telemetry.jsonl"
    if args.probs and not args.policy:
        return "--probs needs --policy (whose probabilities?)"
    return ""


def main(argv: Sequence[str] | None = None) -> int:
    return table_command("mango bench obs-shift", ObsShiftArgs, report, argv, __doc__, _problem)


if __name__ == "__main__":
    sys.exit(main())
