"""``mango bench env``: environment throughput and training-backend overhead.

Three measurements:

1. **Surrogate, vectorized** - :class:`envs.SurrogateVecEnv` steps per second (summed over the set) for
   several ``num_envs``, random actions drawn beforehand; also through the SB3 adapter.
2. **Surrogate, single env** - ``gym.make("mango/CompressionControl-v0", backend="surrogate")`` steps per
   second through the full Gymnasium API (wrappers, pydantic records, ``ObservationSpec.encode``).
3. **Training backend overhead** - for a real episode with random settings: wall time of ``env.step`` minus
   the wall time of the raw training steps it contains (batch + forward + backward + optimizer step), as a
   fraction of the latter (goal < 5 %). ``apply_setting`` (the optimizer's state conversion on a change) is
   shown apart: it is the optimizer's work, not the environment's.

Prints a table, writes ``results/env_throughput-<date>.json`` and appends a dated section (command, machine,
date) to ``BENCHMARKS.md``.

Example::

    python -m benchmarks.env_throughput                  # all three, default sizes
    python -m benchmarks.env_throughput --quick --no-append
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tyro

from benchmarks.common import append_section

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class BenchConfig:
    """Knobs of the benchmark.

    :ivar num_envs: vectorized set sizes to measure.
    :ivar seconds: measuring time per configuration (after a short warm-up).
    :ivar training_workloads: workloads of the overhead measurement (one episode each).
    :ivar threads: torch threads for the training backend (1: one core, like ``mango record``).
    :ivar append: append the section to ``BENCHMARKS.md``.
    """

    num_envs: list[int] = field(default_factory=lambda: [16, 64, 256, 1024])
    seconds: float = 3.0
    training_workloads: list[str] = field(default_factory=lambda: ["digits-mlp-cosine", "lm-tiny-cosine"])
    threads: int = 1
    append: bool = True


def _rate(step: Any, actions: np.ndarray, per_call: int, seconds: float) -> float:
    for k in range(min(20, len(actions))):
        step(actions[k])
    n, k = 0, 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step(actions[k % len(actions)])
        k += 1
        n += per_call
    return n / (time.perf_counter() - t0)


def bench_vectorized(cfg: BenchConfig) -> list[dict[str, Any]]:
    from envs import SurrogateVecEnv
    from envs.sb3 import SB3VecEnvAdapter

    rows = []
    rng = np.random.default_rng(0)
    for n in cfg.num_envs:
        venv = SurrogateVecEnv(num_envs=n, split="train")
        venv.reset(seed=0)
        acts = np.stack([rng.integers(0, k, (64, n)) for k in venv.single_action_space.nvec], axis=2)
        rate = _rate(venv.step, acts, n, cfg.seconds)
        rows.append({"what": "SurrogateVecEnv", "num_envs": n, "steps_per_s": rate})
    for n in cfg.num_envs[:2]:
        adapter = SB3VecEnvAdapter(SurrogateVecEnv(num_envs=n, split="train"), seed=0)
        adapter.reset()
        acts = np.stack([rng.integers(0, k, (64, n)) for k in adapter.action_space.nvec], axis=2)
        rows.append(
            {
                "what": "SB3VecEnvAdapter",
                "num_envs": n,
                "steps_per_s": _rate(adapter.step, acts, n, cfg.seconds),
            }
        )
    return rows


def bench_single(cfg: BenchConfig) -> dict[str, Any]:
    import gymnasium as gym

    import envs.env  # noqa: F401  (registers the id)

    env = gym.make("mango/CompressionControl-v0", backend="surrogate")
    env.reset(seed=0)
    env.action_space.seed(0)
    acts = [env.action_space.sample() for _ in range(256)]

    def step(a: Any) -> None:
        _, _, term, trunc, _ = env.step(a)
        if term or trunc:
            env.reset()

    return {"what": "gym.make single env", "num_envs": 1, "steps_per_s": _rate(step, acts, 1, cfg.seconds)}


def bench_training(cfg: BenchConfig) -> list[dict[str, Any]]:
    from envs.env import CompressionEnv
    from envs.training import TrainingConfig

    rows = []
    for name in cfg.training_workloads:
        tcfg = TrainingConfig(threads=cfg.threads)
        env = CompressionEnv(backend="training", workload=name, objective="balanced", training=tcfg)
        t0 = time.perf_counter()
        env.reset(seed=0, options={"job_seed": 0})  # computes (or loads) the reference run
        reset_s = time.perf_counter() - t0
        env.action_space.seed(0)
        step_s = train_s = apply_s = 0.0
        steps = 0
        done = False
        while not done:
            a = env.action_space.sample()
            ts = time.perf_counter()
            _, _, term, trunc, _ = env.step(a)
            step_s += time.perf_counter() - ts
            timing = env.backend.last_timing  # type: ignore[attr-defined]
            train_s += timing["train_s"]
            apply_s += timing["apply_s"]
            steps += 1
            done = term or trunc
        env.close()
        overhead = step_s - train_s - apply_s
        rows.append(
            {
                "workload": name,
                "intervals": steps,
                "reset_s": reset_s,
                "env_step_s": step_s,
                "raw_train_s": train_s,
                "apply_setting_s": apply_s,
                "overhead_s": overhead,
                "overhead_frac": overhead / train_s if train_s > 0 else float("nan"),
                "episode_s": reset_s + step_s,
            }
        )
    return rows


def _machine() -> str:
    import torch

    cpu = " ".join(x for x in (platform.machine(), platform.processor()) if x)
    return (
        f"{cpu}, {os.cpu_count()} CPUs (shared), torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), Python {platform.python_version()}"
    )


def format_tables(res: dict[str, Any]) -> str:
    lines = ["| env | num_envs | steps/s |", "|---|---|---|"]
    for r in [*res["vectorized"], res["single"]]:
        lines.append(f"| {r['what']} | {r['num_envs']} | {r['steps_per_s']:,.0f} |")
    lines += [
        "",
        "| training workload | intervals | raw train s | env.step s | apply_setting s | env overhead s | "
        "overhead / raw | episode s (incl. reset) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in res["training"]:
        lines.append(
            f"| {r['workload']} | {r['intervals']} | {r['raw_train_s']:.2f} | {r['env_step_s']:.2f} | "
            f"{r['apply_setting_s']:.3f} | {r['overhead_s']:.3f} | {r['overhead_frac']:.2%} | "
            f"{r['episode_s']:.1f} |"
        )
    return "\n".join(lines)


@dataclass
class EnvBenchArgs:
    """Surrogate environment steps per second, and the training backend's overhead per interval."""

    num_envs: str = "16,64,256,1024"
    """comma-separated vectorized set sizes"""
    seconds: float = 3.0
    """measuring time per configuration (after a short warm-up)"""
    training_workloads: str = "digits-mlp-cosine,lm-tiny-cosine"
    """comma-separated workloads of the overhead measurement, one episode each ('' to skip)"""
    threads: int = 1
    """torch threads for the training backend"""
    quick: bool = False
    """1 s per measurement, digits only"""
    append: bool = True
    """append a dated section to BENCHMARKS.md (--no-append: do not)"""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    a = tyro.cli(EnvBenchArgs, args=argv, prog="mango bench env", description=EnvBenchArgs.__doc__)
    cfg = BenchConfig(
        num_envs=[int(x) for x in a.num_envs.split(",") if x],
        seconds=1.0 if a.quick else a.seconds,
        training_workloads=["digits-mlp-cosine"]
        if a.quick
        else [w for w in a.training_workloads.split(",") if w],
        threads=a.threads,
        append=a.append,
    )
    started = dt.datetime.now(dt.UTC)
    res: dict[str, Any] = {"config": asdict(cfg), "date": started.isoformat(timespec="seconds")}
    res["vectorized"] = bench_vectorized(cfg)
    res["single"] = bench_single(cfg)
    res["training"] = bench_training(cfg) if cfg.training_workloads else []
    res["machine"] = _machine()
    table = format_tables(res)
    print(table)
    out_dir = ROOT / "results"
    out_dir.mkdir(exist_ok=True)
    out = out_dir / f"env_throughput-{started:%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps(res, indent=2))
    print(f"\nresults -> {out.relative_to(ROOT)}")
    if cfg.append:
        md = append_section(
            "Environment throughput",
            shlex.join(["python", "-m", "benchmarks.env_throughput", *argv]),
            table,
            machine=res["machine"],
            when=started,
        )
        print(f"appended to {md.relative_to(ROOT) if md.is_relative_to(ROOT) else md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
