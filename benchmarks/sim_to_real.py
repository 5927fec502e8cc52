"""The surrogate's loss term against real GPU runs: `mango demo` logs replayed through the excess model.

A demo trains an adaptive run, plain AdamW and a static run on the same batches and prints one line per
control interval (``[run] step N  SETTING loss X  state ...``). AdamW is the uncompressed reference, so each
other run's measured loss term is ``y_t = (L_t - L_ref_t) / L_ref_0`` (initial-loss units, the surrogate's
``x``). This command plays each run's settings through a fitted surrogate (the excess tables of the workload
that stands for the demo's model, its persistence ``rho``, progress ``(t + 1) / T`` as ``mango fit`` counts
it) and prints the simulated ``y_t`` beside the measured one: real H200 data that no surrogate was fitted on.

The demo's job is not a recorded workload (the demo's gpt-85m trains batch 16 x 64 at lr 3e-3; the recorded
``gpu-gpt85m-cosine`` batch 16 x 256 at 3e-4): the tables of the same model class stand in for it (``--map``).
Each log's train losses are interval means over single batches, so ``y_t`` carries batch noise (the same
batches in every run: paired, small). A run repeated exactly in another log (a deterministic static run of
the same seed) is counted once.

It reads ``mango bench lm`` JSONs too (``results/lm-*.json`` with ``interval_losses``): every run of a seed
against that seed's ``adamw`` run, one setting throughout (several seeds of static settings: the data that
tells a setting's cost from a seed's luck).

Usage::

    mango bench sim2real results/gpu-h200-2026-12-03-s6/policy-check/demo-cand-gpt-bal.log --per-setting
    mango bench sim2real LOG [LOG ...] --surrogate fit-a=runs/a.json fit-b=runs/b.json

Columns per run: intervals, mean and final measured ``y`` and, per surrogate, the mean and final simulated
``y`` and the mean absolute error over the intervals after the warm-up; the summary line gives each
surrogate's MAE beside that of predicting no excess at all (``y = 0``, for scale). ``--per-setting`` adds
a table of the measured and simulated ``y`` grouped by the setting played (second-half intervals, where
the persistence of earlier settings has worn off most).
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tyro

from benchmarks.common import append_section
from client.protocol import DEFAULT_GRID, CompressionSetting
from envs.fit import default_model
from envs.surrogate_model import SurrogateModel

__all__ = ["DemoLog", "SimToRealArgs", "load_runs", "main", "parse_demo_log", "parse_lm_json", "simulate"]

_HEADER = re.compile(r"MANGO demo: (?P<model>[\w.-]+), (?P<steps>\d+) steps")
_SEED = re.compile(r"^seed (?P<seed>\d+) \(\d+ of \d+\)")
_LINE = re.compile(
    r"^\s*\[(?P<run>[^\]]+)\] step\s+(?P<step>\d+)\s+(?P<setting>\S+)\s+loss (?P<loss>[-+0-9.eE]+|nan|inf)"
)
#: Demo model -> the recorded workload whose tables stand in for it.
DEFAULT_MAP = {"gpt-85m": "gpu-gpt85m-cosine", "lm-medium": "gpu-lm-medium-cosine"}
REFERENCE_RUN = "adamw (torch)"


@dataclass
class DemoLog:
    """One demo's runs: run label -> ``(step, setting label, interval train loss)`` per interval."""

    path: Path
    model: str
    runs: dict[str, list[tuple[int, str, float]]] = field(default_factory=dict)


def parse_demo_log(path: str | Path) -> list[DemoLog]:
    """Read a ``mango demo --no-progress`` log: one :class:`DemoLog` per seed (``--seeds N`` prints a
    ``seed S (k of N)`` line before each seed's runs; run labels then get `` (seed S)``). ``ValueError``
    naming the file if it holds no demo, or a seed without an AdamW run."""
    path = Path(path)
    model = ""
    seeds: list[tuple[str, dict[str, list[tuple[int, str, float]]]]] = [("", defaultdict(list))]
    for line in path.read_text(errors="replace").splitlines():
        h = _HEADER.search(line)
        if h and not model:
            model = h["model"]
            continue
        sd = _SEED.match(line)
        if sd:
            if any(seeds[-1][1].values()):
                seeds.append((sd["seed"], defaultdict(list)))
            else:
                seeds[-1] = (sd["seed"], seeds[-1][1])
            continue
        m = _LINE.match(line)
        if m:
            seeds[-1][1][m["run"]].append((int(m["step"]), m["setting"], float(m["loss"])))
    if not model or any(REFERENCE_RUN not in runs for _, runs in seeds):
        raise ValueError(
            f"{path}: not a demo log with an AdamW run (no 'MANGO demo:' header or '[{REFERENCE_RUN}]')"
        )
    out = []
    for seed, runs in seeds:
        tag = f" (seed {seed})" if len(seeds) > 1 else ""
        out.append(DemoLog(path, model, {k if k == REFERENCE_RUN else k + tag: v for k, v in runs.items()}))
    return out


def parse_lm_json(path: str | Path) -> list[DemoLog]:
    """A ``mango bench lm`` JSON as one :class:`DemoLog` per seed (runs labelled ``static SETTING``);
    ``ValueError`` naming the file if it has no per-interval losses or no AdamW run."""
    path = Path(path)
    doc = json.loads(path.read_text())
    cfg, rows = doc.get("config", {}), doc.get("rows", [])
    k = int(cfg.get("interval_steps", 0))
    if not k or any("interval_losses" not in r for r in rows):
        raise ValueError(
            f"{path}: no per-interval train losses (a `mango bench lm` JSON from before --seeds)"
        )
    out: dict[int, DemoLog] = {}
    for r in rows:
        seed = int(r.get("seed", cfg.get("seed", 0)))
        log = out.setdefault(seed, DemoLog(path, str(cfg.get("model", ""))))
        name = r["setting"]
        label = "adamw" if name == "adamw" else _setting_label(name)
        run = REFERENCE_RUN if name == "adamw" else f"static {label} (seed {seed})"
        log.runs[run] = [(k * (i + 1), label, float(v)) for i, v in enumerate(r["interval_losses"])]
    if not out or any(REFERENCE_RUN not in log.runs for log in out.values()):
        raise ValueError(f"{path}: every seed needs an 'adamw' run to compare with")
    return [out[s] for s in sorted(out)]


def _setting_label(name: str) -> str:
    return CompressionSetting.off().label() if name == "off" else CompressionSetting.parse(name).label()


def load_runs(path: str | Path) -> list[DemoLog]:
    """A demo log or a ``mango bench lm`` JSON: one :class:`DemoLog` per seed."""
    return parse_lm_json(path) if str(path).endswith(".json") else parse_demo_log(path)


def simulate(model: SurrogateModel, workload: str, settings: Sequence[str]) -> np.ndarray:
    """The surrogate's noise-free excess ``x_t`` (initial-loss units) for a run that plays ``settings``,
    one per interval, the first being the warm-up interval (``mango fit``'s progress ``(t + 1) / T``)."""
    tab = model.workload(workload)
    rho = model.rho if tab.rho is None else tab.rho
    n = len(settings)
    a_flat, b_flat = tab.excess_a.reshape(-1), tab.excess_b.reshape(-1)
    nvec = DEFAULT_GRID.nvec
    x, out = 0.0, np.zeros(n)
    for t, label in enumerate(settings):
        act = DEFAULT_GRID.action(CompressionSetting.parse(label))
        flat = int(np.ravel_multi_index(tuple(int(v) for v in act), nvec))
        p = (t + 1) / n
        x = rho * x + (1.0 - rho) * (a_flat[flat] + (1.0 - p) * b_flat[flat])
        out[t] = x
    return out


def _measured(log: DemoLog, run: str) -> tuple[list[str], np.ndarray]:
    ref = {s: loss for s, _, loss in log.runs[REFERENCE_RUN]}
    rows = [(s, lab, loss) for s, lab, loss in log.runs[run] if s in ref]
    l0 = ref[min(ref)]
    return [lab for _, lab, _ in rows], np.array([(loss - ref[s]) / l0 for s, _, loss in rows])


@dataclass
class SimToRealArgs:
    """Replay `mango demo` logs through fitted surrogates and compare the loss term with the measured one."""

    logs: tyro.conf.Positional[tuple[str, ...]]
    """demo logs (`mango demo --no-progress` output) and `mango bench lm` JSONs"""
    surrogate: tuple[str, ...] = ()
    """label=path of surrogate model JSONs (`mango fit --out`); default: envs/traces/surrogate.json"""
    map: tuple[str, ...] = ()
    """demo-model=workload overrides of the stand-in tables (default gpt-85m=gpu-gpt85m-cosine,
    lm-medium=gpu-lm-medium-cosine)"""
    per_setting: bool = False
    """also group the second half's intervals by the setting played"""
    bench: bool = False
    """append the tables to BENCHMARKS.md"""


def _surrogates(specs: Sequence[str]) -> dict[str, SurrogateModel]:
    if not specs:
        return {"shipped": default_model()}
    out = {}
    for spec in specs:
        label, sep, path = spec.partition("=")
        if not sep or not label or not path:
            raise ValueError(f"--surrogate {spec!r}: expected label=path")
        out[label] = SurrogateModel.load(path)
    return out


def report(args: SimToRealArgs) -> str:
    """The tables (markdown) of :class:`SimToRealArgs`' comparison."""
    sims = _surrogates(args.surrogate)
    mapping = dict(DEFAULT_MAP)
    for spec in args.map:
        k, sep, v = spec.partition("=")
        if not sep:
            raise ValueError(f"--map {spec!r}: expected demo-model=workload")
        mapping[k] = v
    head = "| log | run | intervals | measured mean y | measured final y |"
    rule = "|---|---|---|---|---|"
    for lab in sims:
        head += f" {lab}: mean y | {lab}: final y | {lab}: MAE |"
        rule += "---|---|---|"
    lines = [head, rule]
    err: dict[str, list[tuple[str, float]]] = defaultdict(list)  # surrogate -> (demo model, MAE) per run
    err_zero: list[tuple[str, float]] = []
    seen: set[tuple[str, tuple[str, ...], tuple[float, ...]]] = set()
    groups: dict[tuple[str, str], list[tuple[float, dict[str, float]]]] = defaultdict(list)
    for path, log in ((p, lg) for p in args.logs for lg in load_runs(p)):
        if log.model not in mapping:
            raise ValueError(
                f"{path}: no stand-in workload for model {log.model!r}; pass --map {log.model}=WORKLOAD"
            )
        wl = mapping[log.model]
        for run in log.runs:
            if run == REFERENCE_RUN:
                continue
            settings, y = _measured(log, run)
            key = (log.model, tuple(settings), tuple(np.round(y, 6)))
            if len(y) < 2 or key in seen:
                continue  # a run repeated in another log (the same seed's static run): counted once
            seen.add(key)
            err_zero.append((log.model, float(np.abs(y[1:]).mean())))
            row = (
                f"| {Path(path).name} ({log.model}) | {run} | {len(y)} | {y[1:].mean():+.4f} | {y[-1]:+.4f} |"
            )
            sim_t: dict[str, np.ndarray] = {}
            for lab, sm in sims.items():
                s = simulate(sm, wl, settings)
                sim_t[lab] = s
                mae = float(np.abs(s[1:] - y[1:]).mean())
                err[lab].append((log.model, mae))
                row += f" {s[1:].mean():+.4f} | {s[-1]:+.4f} | {mae:.4f} |"
            lines.append(row)
            half = len(y) // 2
            for t in range(half, len(y)):
                groups[(log.model, settings[t])].append(
                    (float(y[t]), {k: float(v[t]) for k, v in sim_t.items()})
                )
    lines += [
        "",
        "| demo model | runs | " + " | ".join(f"{k}: MAE" for k in sims) + " | no excess (y = 0): MAE |",
    ]
    lines.append("|---|---|" + "---|" * (len(sims) + 1))
    for model in sorted({m for m, _ in err_zero} | {"all"}):
        zs = [v for m, v in err_zero if model in ("all", m)]
        cells = [np.mean([v for m, v in err[k] if model in ("all", m)]) for k in sims]
        lines.append(
            f"| {model} | {len(zs)} | " + " | ".join(f"{c:.4f}" for c in cells) + f" | {np.mean(zs):.4f} |"
        )
    if args.per_setting:
        lines += [
            "",
            "| model | setting (2nd half) | intervals | measured mean y | "
            + " | ".join(f"{k}: mean y" for k in sims)
            + " |",
            "|---|---|---|---|" + "---|" * len(sims),
        ]
        for (model, setting), vals in sorted(groups.items()):
            ys = np.array([v for v, _ in vals])
            sims_mean = [np.mean([d[k] for _, d in vals]) for k in sims]
            lines.append(
                f"| {model} | {setting} | {len(vals)} | {ys.mean():+.4f} | "
                + " | ".join(f"{m:+.4f}" for m in sims_mean)
                + " |"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = tyro.cli(SimToRealArgs, args=argv, prog="mango bench sim2real", description=__doc__.split("\n")[0])
    text = report(args)
    print(text)
    if args.bench:
        cmd = shlex.join(["mango", "bench", "sim2real", *argv])
        print(f"appended to {append_section('Surrogate loss term vs real runs (sim-to-real)', cmd, text)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
