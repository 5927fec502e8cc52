"""``mango record``: record episodes from the training backend to a trace file (gzip JSON lines).

Each episode runs ``CompressionEnv(backend="training")`` for one workload and job seed under one controller:

* ``static:<label>`` - a fixed setting (:data:`DEFAULT_STATICS`, a spread over the grid);
* ``accordion`` / ``loraven`` / ``energy_aware`` - the heuristic controllers of :mod:`client.controllers`;
* ``random`` - a uniformly random setting every interval (coverage);
* ``random-sticky`` - a random setting held for a geometric number of intervals (mean 3): persistence;
* ``pulse`` - off, then one random compressed setting for 2-4 intervals, then off again: how compression
  damage builds up and decays (what the surrogate's ``rho`` is fitted on).

``--controllers`` replaces that cycle: a comma list of kinds (``random``, ``random-sticky``, ``pulse``, a
heuristic name, ``static`` for the next of ``DEFAULT_STATICS``) and fixed settings by label
(``r0/b4/g0``), cycled per workload in that order.

Budgets: ``--budget-min`` is CPU time of this process (one thread on a shared CPU machine: what the
recording takes from others); ``--max-wall-min`` is wall-clock time. On a GPU host with many threads CPU time
runs faster than the wall clock, so give ``--max-wall-min`` alone there: without ``--budget-min`` it is the
only budget (with neither, the CPU budget is 12 minutes and the wall cap three times that, as before).

Episodes are interleaved across workloads (round robin) and job seeds rotate, so a recording stopped by its
time budget is balanced. Reference runs come from the env's on-disk cache and are written once per
(workload, seed). Every line is flushed, so an interrupted recording keeps what it wrote.

What produced the shipped traces (single-thread processes, about 21 CPU-minutes in all)::

    nice mango record --workloads train --seeds 0,1 --budget-min 4.5 --out envs/traces/cpu-train.jsonl.gz
    nice mango record --workloads heldout --seeds 0,1 --seed 1 --budget-min 3.5 \
        --out envs/traces/cpu-heldout.jsonl.gz
    nice mango record --workloads lm-deep-cosine,lm-tiny-linear-lowlr,digits-mlp-step-noisy --seeds 0,1 \
        --budget-min 5 --seed 2 --out envs/traces/cpu-train2.jsonl.gz          # issue 13
    nice mango record --workloads val --seeds 0,1 --budget-min 3 --seed 3 --out envs/traces/cpu-val.jsonl.gz
    nice mango record --workloads gru-tiny-linear --seeds 0,1 --budget-min 4.5 --seed 4 \
        --out envs/traces/cpu-train3.jsonl.gz                                      # session 18
    nice mango record --workloads train --seeds 0,1 --budget-min 7 --seed 32 \
        --controllers r0/b4/g0,random,r0/b8/g0,random-sticky,pulse,r64/b4/g0 \
        --out envs/traces/cpu-train4.jsonl.gz                                      # session 32
    nice mango record --workloads train --seeds 0,1 --budget-min 7 --seed 34 \
        --controllers r0/b3/g0,r0/b2/g0,r16/b3/g0.75,random,r8/b2/g0.25,r0/b4/g0 \
        --out envs/traces/cpu-train5.jsonl.gz                         # session 34: full-v 2-3 bits

GPU traces (issue 13; the 85 M byte GPT and lm-medium on an H200, ~5 minutes)::

    mango record --workloads gpu --seeds 0,1 --device cuda --clock wall --threads 8 --budget-min 4 \
        --max-wall-min 4 --out envs/traces/gpu-h200.jsonl.gz

Chosen controllers on a wall-clock budget (what the next H200 recording of issue 13 asks for)::

    mango record --workloads gpu-gpt85m-cosine --seeds 0,1,2,3 --device cuda --clock wall --threads 8 \
        --controllers r0/b4/g0,r32/b4/g0,r64/b4/g0.5,random --max-wall-min 8 --out $OUT/gpu-h200-2.jsonl.gz
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import tyro
from tqdm import tqdm

from client.compression.optimizer import auto_rounding_is_stochastic
from client.compression.sizes import FACTOR_MAX_BITS
from client.controllers import HEURISTICS, StaticController, make_controller
from client.policy import Controller, ProfileFeatures
from client.protocol import DEFAULT_GRID, CompressionSetting, Objective, Reference
from envs.env import CompressionEnv
from envs.traces import TraceWriter
from envs.training import TrainingConfig, code_version, reference_run
from envs.workloads import get_workload, workloads_of

__all__ = [
    "CONTROLLER_KINDS",
    "DEFAULT_STATICS",
    "RecordConfig",
    "config_from_args",
    "main",
    "parse_controllers",
    "record",
]

log = logging.getLogger(__name__)

#: Static settings recorded (labels ``r<rank>/b<bits>/g<gamma>``): from light to brutal, gamma varied.
DEFAULT_STATICS: tuple[str, ...] = (
    "r8/b8/g0",
    "r4/b4/g0",
    "r0/b8/g0",
    "r0/b16/g0",
    "r1/b2/g0",
    "r32/b3/g0.5",
    "r0/b4/g0.25",
    "r2/b2/g1",
    "r64/b4/g0",
    "r16/b8/g0.75",
    "r0/b2/g0",
    "r0/b3/g0.5",
)
#: Controller kinds cycled per workload, in this order (statics take the next label each time).
DEFAULT_CYCLE: tuple[str, ...] = (
    "random",
    "static",
    "pulse",
    "accordion",
    "random-sticky",
    "static",
    "loraven",
    "random",
    "static",
    "energy_aware",
    "pulse",
    "random-sticky",
)


#: Controller kinds besides fixed settings given by label (``static`` takes the next of ``statics``).
CONTROLLER_KINDS: tuple[str, ...] = ("random", "random-sticky", "pulse", *HEURISTICS)


def parse_controllers(spec: str) -> tuple[str, ...]:
    """``--controllers``: ``"r0/b4/g0,random,loraven"`` -> the cycle ``("static:r0/b4/g0", "random",
    "loraven")``. A setting label (``static:`` prefix optional) is a fixed setting; ``ValueError`` names the
    valid kinds."""
    out = []
    for raw in (x.strip() for x in spec.split(",")):
        if not raw:
            continue
        if raw in CONTROLLER_KINDS:
            out.append(raw)
            continue
        label = raw.removeprefix("static:")
        try:
            setting = parse_setting(label)
        except ValueError:
            raise ValueError(
                f"--controllers: {raw!r} is neither a controller kind {list(CONTROLLER_KINDS)} nor a setting "
                "label like r0/b4/g0"
            ) from None
        DEFAULT_GRID.check(setting)
        out.append(f"static:{setting.label()}")
    if not out:
        raise ValueError("--controllers is empty: name at least one controller or setting")
    return tuple(out)


def parse_setting(label: str) -> CompressionSetting:
    """``"r8/b4/g0.25"`` -> ``CompressionSetting(rank=8, bits=4, gamma=0.25)`` (CompressionSetting.parse)."""
    return CompressionSetting.parse(label)


@dataclass
class RecordConfig:
    """Knobs of ``mango record``.

    :ivar workloads: names, or the split names ``train`` / ``heldout`` / ``all`` (default all).
    :ivar seeds: job seeds rotated over episodes (each costs one cached reference run per workload).
    :ivar budget_s: stop starting episodes once this process has used this much CPU time (reference runs
        included); with one thread that is the CPU budget the recording takes from a shared machine.
        ``None``: no CPU budget (``max_wall_s`` or ``max_episodes`` must bound the recording).
    :ivar max_wall_s: also stop after this much wall time (default 3x ``budget_s``); an episode is not started
        when one as long as the workload's longest so far would end past it.
    :ivar max_episodes: stop after this many episodes in total (``None``: budget only).
    :ivar cycle: controller kinds cycled per workload (see the module docstring; ``static:<label>`` is that
        fixed setting, :func:`parse_controllers` builds a cycle from ``--controllers``).
    :ivar statics: static setting labels, taken in turn.
    :ivar objective: objective preset the recorded rewards use (the terms are stored too, so any objective
        can be rescored later).
    :ivar out: output file (appended to if it exists).
    :ivar threads: torch threads (1: one core, kind to a shared machine, and ``clock="cpu"`` exact).
    :ivar clock: the training backend's clock (``cpu`` on a shared CPU machine).
    :ivar device: training device.
    :ivar seed: seed of the random controllers.
    """

    workloads: list[str] = field(default_factory=lambda: ["all"])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    budget_s: float | None = 720.0
    max_wall_s: float | None = None
    max_episodes: int | None = None
    cycle: tuple[str, ...] = DEFAULT_CYCLE
    statics: tuple[str, ...] = DEFAULT_STATICS
    objective: str = "balanced"
    out: str = ""
    threads: int | None = 1
    clock: str = "cpu"
    device: str = "auto"
    seed: int = 0

    def workload_names(self) -> list[str]:
        names: list[str] = []
        for w in self.workloads:
            split = w in ("train", "val", "heldout", "all", "gpu")
            names.extend(workloads_of(w) if split else [get_workload(w).name])
        return list(dict.fromkeys(names))


class _RandomController(Controller):
    """Uniform (``sticky=False``) or sticky random settings; ``pulse`` mode: off / compressed / off."""

    def __init__(self, rng: np.random.Generator, mode: str, intervals: int) -> None:
        self.rng = rng
        self.mode = mode
        self.name = mode
        self.current = DEFAULT_GRID.setting([int(self.rng.integers(n)) for n in DEFAULT_GRID.nvec])
        lo = int(rng.integers(1, max(intervals - 3, 2)))
        self.pulse = (lo, lo + int(rng.integers(2, 5)))
        self.pulse_setting = self._compressed()
        self.t = 0

    def _compressed(self) -> CompressionSetting:
        while True:
            s = DEFAULT_GRID.setting([int(self.rng.integers(n)) for n in DEFAULT_GRID.nvec])
            if not s.is_off and s.bits <= 8:
                return s

    def decide(
        self,
        history: Any,
        objective: Objective,
        *,
        reference: Reference | None = None,
        profile: ProfileFeatures | None = None,
    ) -> CompressionSetting:
        self.t += 1
        if self.mode == "random":
            self.current = DEFAULT_GRID.setting([int(self.rng.integers(n)) for n in DEFAULT_GRID.nvec])
        elif self.mode == "random-sticky":
            if self.rng.random() < 1.0 / 3.0:
                self.current = DEFAULT_GRID.setting([int(self.rng.integers(n)) for n in DEFAULT_GRID.nvec])
        else:  # pulse
            lo, hi = self.pulse
            self.current = self.pulse_setting if lo <= self.t < hi else CompressionSetting.off()
        self.reason = f"{self.mode}: {self.current.label()}"
        return self.current


def _controller(
    kind: str, static_label: str, rng: np.random.Generator, intervals: int, power_w: float
) -> Controller:
    if kind == "static":
        return StaticController(parse_setting(static_label))
    if kind in ("random", "random-sticky", "pulse"):
        return _RandomController(rng, kind, intervals)
    if kind == "energy_aware":
        # the modelled CPU power of the uncompressed run; compressed settings differ by tens of percent
        return make_controller(
            "energy_aware", budget_w=max(power_w * 0.95, 1e-3), window=1, cooldown_intervals=0
        )
    if kind == "accordion":
        return make_controller("accordion", threshold=0.15)
    if kind == "loraven":
        return make_controller("loraven", target_error=0.2, bits=4)
    return make_controller(kind)


def _controller_label(kind: str, static_label: str) -> str:
    return f"static:{static_label}" if kind == "static" else kind


def _check_cycle(cycle: tuple[str, ...]) -> None:
    for kind in cycle:
        if kind not in CONTROLLER_KINDS:
            if not kind.startswith("static:"):
                raise ValueError(f"unknown controller kind {kind!r}; known: {list(CONTROLLER_KINDS)}")
            DEFAULT_GRID.check(parse_setting(kind.removeprefix("static:")))


def record(cfg: RecordConfig, progress: bool = True) -> dict[str, Any]:
    """Record episodes as configured; returns a summary (episodes, wall time, file, size)."""
    names = cfg.workload_names()
    if not names:
        raise ValueError("no workloads selected")
    if not cfg.seeds:
        raise ValueError("seeds is empty: give at least one job seed")
    for lab in cfg.statics:
        parse_setting(lab)
    _check_cycle(tuple(cfg.cycle))
    if cfg.budget_s is None and cfg.max_wall_s is None and cfg.max_episodes is None:
        raise ValueError("no budget: give budget_s (CPU time), max_wall_s (wall clock) or max_episodes")
    out = Path(cfg.out or f"envs/traces/traces-{dt.date.today().isoformat()}.jsonl.gz")
    tcfg = TrainingConfig(device=cfg.device, clock=cfg.clock, threads=cfg.threads)  # type: ignore[arg-type]
    objective_name = cfg.objective
    rng = np.random.default_rng(cfg.seed)
    envs = {
        n: CompressionEnv(backend="training", workload=n, objective=objective_name, training=tcfg)
        for n in names
    }
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    if cfg.max_wall_s is not None:
        max_wall = cfg.max_wall_s
    else:
        max_wall = 3.0 * cfg.budget_s if cfg.budget_s is not None else math.inf
    budget_cpu = math.inf if cfg.budget_s is None else cfg.budget_s
    header_workloads: dict[str, Any] = {}
    for n in names:
        w = get_workload(n)
        ref = reference_run(w, cfg.seeds[0], tcfg)
        header_workloads[n] = {
            "key": w.key(),
            "config": w.config(),
            "param_shapes": [list(s) for s in ref.param_shapes],
            "dense_state_bytes": ref.dense_state_bytes,
            "factor_max_bits": FACTOR_MAX_BITS,  # the factoring rule of factor_second_moment=None
            # the widths that stochastic_rounding="auto" rounds stochastically (4 bits did until session 31)
            "stochastic_bits": [b for b in DEFAULT_GRID.bits if b < 32 and auto_rounding_is_stochastic(b)],
        }
    header = {
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {platform.processor() or ''} cpus={torch.get_num_threads()} "
        f"torch={torch.__version__} python={platform.python_version()}".strip(),
        "code_version": code_version(),
        "clock": tcfg.resolved_clock(),
        "device": str(tcfg.resolved_device()),
        "energy_source": "modelled" if tcfg.resolved_device().type == "cpu" else "measured-or-modelled",
        "threads": cfg.threads,
        "grid": DEFAULT_GRID.model_dump(),
        "objective": objective_name,
        "workloads": header_workloads,
    }
    plan_len = cfg.max_episodes or len(names) * len(cfg.cycle) * 4
    written_refs: set[tuple[str, int]] = set()
    counts = {n: 0 for n in names}
    static_i = {n: 0 for n in names}
    n_eps = 0
    # the longest episode so far per workload (wall seconds, its reference run included): an episode is
    # started only if one that long still ends inside the wall budget, so a recording under an outer
    # timeout (a GPU call) ends cleanly instead of being killed mid-episode
    longest: dict[str, float] = {}
    bar = tqdm(total=plan_len, desc="record", unit="ep", disable=not progress)
    with TraceWriter(out, header) as writer:
        stop = False
        while not stop:
            for n in names:
                elapsed = time.perf_counter() - t0
                over = time.process_time() - cpu0 > budget_cpu or elapsed > max_wall
                if over or (cfg.max_episodes and n_eps >= cfg.max_episodes):
                    stop = True
                    break
                if elapsed + longest.get(n, 0.0) > max_wall:  # would not finish inside the wall budget
                    if all(elapsed + longest.get(m, 0.0) > max_wall for m in names):
                        stop = True
                        break
                    continue
                t_ep = time.perf_counter()
                env = envs[n]
                j = counts[n]
                kind = cfg.cycle[j % len(cfg.cycle)]
                seed = cfg.seeds[j % len(cfg.seeds)]
                label = cfg.statics[static_i[n] % len(cfg.statics)]
                if kind == "static":
                    static_i[n] += 1
                elif kind.startswith("static:"):  # a setting chosen by name
                    kind, label = "static", kind.removeprefix("static:")
                ref = reference_run(get_workload(n), seed, tcfg)
                if (n, seed) not in written_refs:
                    writer.reference(n, ref.workload_key, seed, ref.records)
                    written_refs.add((n, seed))
                power = ref.records[-1].mean_power_w
                ctl = _controller(kind, label, rng, get_workload(n).intervals, power)
                ctl.reset()
                env.reset(seed=int(rng.integers(2**31)), options={"job_seed": seed})
                objective = env.objective
                assert objective is not None
                records = [env.history[-1]]
                terms: dict[str, list[float]] = {
                    k: [] for k in ("loss_term", "memory_term", "energy_term", "time_term")
                }
                rewards: list[float] = []
                timing = env.backend.last_timing  # type: ignore[attr-defined]
                train_s = [float(timing.get("train_s", 0.0))]
                total_s = [float(timing.get("total_s", 0.0))]
                step_s: list[float] = [0.0]
                done = False
                while not done:
                    setting = ctl.decide(env.history, objective)
                    ts = time.perf_counter()
                    _, r, term, trunc, sinfo = env.step(np.array(DEFAULT_GRID.action(setting)))
                    step_s.append(time.perf_counter() - ts)
                    done = term or trunc
                    records.append(env.history[-1])
                    rewards.append(float(r))
                    for k in terms:
                        terms[k].append(float(sinfo[k]))
                    timing = env.backend.last_timing  # type: ignore[attr-defined]
                    train_s.append(float(timing.get("train_s", 0.0)))
                    total_s.append(float(timing.get("total_s", 0.0)))
                writer.episode(
                    n,
                    get_workload(n).key(),
                    seed,
                    _controller_label(kind, label),
                    objective.model_dump(),
                    records,
                    terms=terms,
                    rewards=rewards,
                    train_s=train_s,
                    total_s=total_s,
                    step_s=step_s,
                )
                longest[n] = max(longest.get(n, 0.0), time.perf_counter() - t_ep)
                counts[n] += 1
                n_eps += 1
                bar.update(1)
                bar.set_postfix_str(
                    f"{n} {_controller_label(kind, label)} cpu {time.process_time() - cpu0:.0f}s"
                )
    bar.close()
    for env in envs.values():
        env.close()
    wall = time.perf_counter() - t0
    summary = {
        "episodes": n_eps,
        "per_workload": counts,
        "wall_s": round(wall, 1),
        "cpu_s": round(time.process_time() - cpu0, 1),
        "file": str(out),
    }
    summary["bytes"] = out.stat().st_size if out.exists() else 0
    return summary


@dataclass
class RecordArgs:
    """Record traces (episodes of the training backend under random and static controllers)."""

    workloads: str = "all"
    """comma list of names, or train / val / heldout / all / gpu"""
    seeds: str = "0,1,2"
    """job seeds rotated over episodes (comma list)"""
    budget_min: float | None = None
    """CPU-time budget in minutes (default 12, or none when --max-wall-min is given: then the wall clock alone
    bounds the recording)"""
    max_wall_min: float | None = None
    """wall-clock budget in minutes, not CPU time (default 3x the CPU budget)"""
    controllers: str = ""
    """comma list of the recorded episodes' controllers, cycled per workload: setting labels (r0/b4/g0),
    heuristics (accordion, loraven, energy_aware, static), random, random-sticky, pulse ('': the default
    cycle of random, statics, pulses and heuristics)"""
    max_episodes: int | None = None
    """stop after this many episodes"""
    objective: str = "balanced"
    """objective preset of the recorded rewards"""
    out: str = ""
    """output .jsonl.gz (default envs/traces/traces-<date>.jsonl.gz)"""
    threads: int = 1
    """torch threads"""
    clock: Literal["auto", "wall", "cpu", "modelled"] = "cpu"
    """what the recorded interval times measure"""
    device: str = "auto"
    """auto (CUDA if present), cpu or cuda"""
    seed: int = 0
    """seed of the random controllers"""
    progress: bool = True
    """progress bar (--no-progress: none)"""


def config_from_args(a: RecordArgs) -> RecordConfig:
    """The :class:`RecordConfig` of parsed ``mango record`` arguments (the budgets resolved as documented)."""
    budget_min = a.budget_min if a.budget_min is not None else (None if a.max_wall_min is not None else 12.0)
    return RecordConfig(
        workloads=[w.strip() for w in a.workloads.split(",") if w.strip()],
        seeds=[int(s) for s in a.seeds.split(",") if s.strip()],
        budget_s=None if budget_min is None else budget_min * 60.0,
        cycle=parse_controllers(a.controllers) if a.controllers.strip() else DEFAULT_CYCLE,
        max_wall_s=None if a.max_wall_min is None else a.max_wall_min * 60.0,
        max_episodes=a.max_episodes,
        objective=a.objective,
        out=a.out,
        threads=a.threads,
        clock=a.clock,
        device=a.device,
        seed=a.seed,
    )


def main(argv: list[str] | None = None) -> int:
    a = tyro.cli(RecordArgs, args=argv, prog="mango record", description=RecordArgs.__doc__)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    cfg = config_from_args(a)
    summary = record(cfg, progress=a.progress)
    print(
        f"recorded {summary['episodes']} episodes in {summary['wall_s']} s wall, {summary['cpu_s']} s CPU "
        f"-> {summary['file']} "
        f"({summary['bytes'] / 1e6:.2f} MB); per workload {summary['per_workload']}"
    )
    return 0
