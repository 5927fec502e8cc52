"""AdamW vs MangoAdamW on the byte-level stdlib LM: validation loss, state bytes, step time.

Every run trains the same model (same seed, same initial weights) on the same batches in the same order;
only the optimizer differs. ``adamw`` is ``torch.optim.AdamW``; ``off`` is MangoAdamW with compression off
(must match AdamW); ``rR/bB[/gG]`` is MangoAdamW at that setting.

``--seeds 0,1,2`` runs every setting once per seed (initial weights and batch order) and adds a table of each
setting's mean validation loss and its paired difference to AdamW's (mean over seeds, 95 % CI): one seed
can differ from the next by more than a setting does. ``--device cuda`` runs on the GPU (``--model
gpt-85m`` is the demo's GPU model); the JSON keeps each run's train loss per ``--interval-steps`` interval,
the curve ``mango bench sim2real`` compares with the surrogate.

Run ``python -m benchmarks.lm --help`` (or ``mango bench lm``) for the knobs. It prints a table, writes
``results/lm-<date>.json`` (rewritten after every run, ``"complete": true`` once all have run) and appends a
dated section to ``BENCHMARKS.md`` (``--no-write`` skips both).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import tyro

from agents.stats import mean_ci
from benchmarks.common import BENCHMARKS_MD, append_section, machine_line
from client.compression.optimizer import MangoAdamW
from client.protocol import CompressionSetting
from envs.data import load_corpus
from envs.models import ByteGPT, build_model
from envs.workloads import schedule_lr

DEFAULT_SETTINGS = (
    "adamw",
    "off",
    "r0/b8",
    "r0/b4",
    "r8/b8",
    "r8/b4",
    "r16/b4",
    "r32/b4",
    "r8/b4/g0.5",
    "r4/b2",
    "r32/b3",
)
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class LMBenchConfig:
    """AdamW vs MangoAdamW on the byte-level stdlib LM: loss and state bytes per setting (and seed)."""

    model: str = "lm-small"
    """:func:`envs.models.build_model` preset."""
    steps: int = 300
    """Optimizer steps per run."""
    batch_size: int = 16
    """Windows per batch."""
    seq_len: int = 64
    """Bytes per window (0: the model's block size)."""
    lr: float = 1e-3
    """Peak learning rate (linear warm-up, then cosine to 10 %); 1e-3 is AdamW's best of {5e-4, 1e-3, 2e-3}
    on the default workload."""
    warmup_steps: int = 20
    """Linear warm-up steps."""
    weight_decay: float = 0.01
    """AdamW decoupled weight decay (all parameters)."""
    eps: float = 1e-8
    """Adam epsilon (both optimizers)."""
    eval_batches: int = 32
    """Fixed validation batches for the final loss."""
    corpus_bytes: int = 4_000_000
    """``max_bytes`` of the stdlib corpus (train + val)."""
    seed: int = 0
    """Model-initialization and data-order seed (shared by every run)."""
    seeds: str = ""
    """Comma-separated seeds (overrides ``--seed``): every setting runs once per seed."""
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    """Where the model trains ('auto': the GPU when one is present)."""
    interval_steps: int = 20
    """Steps per train-loss interval kept in the JSON (the demo's control interval)."""
    threads: int = 2
    """``torch.set_num_threads``."""
    settings: str = ",".join(DEFAULT_SETTINGS)
    """Runs, comma-separated: ``adamw``, ``off`` or ``rR/bB[/gG]``."""
    refresh_every: int = 50
    """MangoAdamW ``refresh_every``."""
    ef_beta: float = 0.9
    """MangoAdamW ``ef_beta``."""
    error_feedback: bool = True
    """MangoAdamW ``error_feedback``."""
    ef_scope: str = "subspace"
    """MangoAdamW ``ef_scope`` ('subspace' or 'full')."""
    proj_scale: float = 0.0
    """MangoAdamW ``proj_scale`` (0: the default, ``sqrt(m / r)``)."""
    embed_rank0: bool = False
    """Put the (tied) token and position embeddings in a ``project=False`` group (quantized, unprojected)."""
    factor_v: str = "auto"
    """MangoAdamW ``factor_second_moment``: 'auto' (the optimizer's default: a full ``v``), 'yes' or 'no'."""
    quant_mode: str = ""
    """MangoAdamW ``quant_mode`` ('' for the default: the uniform code at every width)."""
    rounding: Literal["auto", "stochastic", "nearest"] = "auto"
    """MangoAdamW ``stochastic_rounding``: 'auto' (the default: 8-bit codes to nearest, the other widths
    stochastically), 'stochastic' (every stored state, ``True``) or 'nearest' (every one, ``False``)."""
    min_compress_numel: int = 4096
    """MangoAdamW ``min_compress_numel``."""
    out_dir: str = "results"
    """Where the JSON goes (relative to the repository root)."""
    no_write: bool = False
    """Print only: no JSON, no BENCHMARKS.md section."""
    bench_file: str = ""
    """File the dated section is appended to ('' = BENCHMARKS.md at the repository root)."""

    def labels(self) -> list[str]:
        """The runs of ``settings``, in order."""
        return [s.strip() for s in self.settings.split(",") if s.strip()]

    def seed_list(self) -> list[int]:
        """``seeds`` as integers, or ``[seed]``; ``ValueError`` naming a bad entry."""
        out = []
        for item in (x.strip() for x in self.seeds.split(",")):
            if not item:
                continue
            try:
                out.append(int(item))
            except ValueError:
                raise ValueError(f"--seeds {self.seeds!r}: {item!r} is not an integer") from None
        return out or [self.seed]

    def torch_device(self) -> torch.device:
        """``device`` resolved; ``ValueError`` when 'cuda' is asked for and there is no GPU."""
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda: no CUDA GPU here (use --device cpu or auto)")
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)


def parse_setting(label: str) -> CompressionSetting | None:
    """``"adamw"`` -> None; ``"off"`` -> off; ``"r8/b4/g0.5"`` -> that setting."""
    if label == "adamw":
        return None
    if label == "off":
        return CompressionSetting.off()
    return CompressionSetting.parse(label)


def lr_at(cfg: LMBenchConfig, step: int) -> float:
    """Linear warm-up to ``lr``, then cosine decay to 10 % of it at the last step."""
    return schedule_lr(cfg.lr, step, total=cfg.steps, warmup_steps=cfg.warmup_steps, schedule="cosine")


def run_one(
    cfg: LMBenchConfig,
    label: str,
    corpus: Any,
    val: list[tuple[torch.Tensor, torch.Tensor]],
    seed: int | None = None,
) -> dict:
    """One training run of ``label`` at ``seed`` (default ``cfg.seed``); its JSON row."""
    seed = cfg.seed if seed is None else seed
    device = cfg.torch_device()
    setting = parse_setting(label)
    model = build_model(cfg.model, seed).to(device)
    assert isinstance(model, ByteGPT), f"{cfg.model} is not a byte LM preset"
    seq_len = cfg.seq_len or model.cfg.block_size
    params = [p for p in model.parameters() if p.requires_grad]
    opt: torch.optim.Optimizer
    if setting is None:
        opt = torch.optim.AdamW(params, lr=cfg.lr, eps=cfg.eps, weight_decay=cfg.weight_decay)
    else:
        groups: list[dict[str, Any]] = [{"params": params}]
        if cfg.embed_rank0:
            embed = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
            groups = [
                {"params": [p for p in params if id(p) not in embed]},
                {"params": [p for p in params if id(p) in embed], "project": False},
            ]
        opt = MangoAdamW(
            groups,
            lr=cfg.lr,
            eps=cfg.eps,
            weight_decay=cfg.weight_decay,
            setting=setting,
            refresh_every=cfg.refresh_every,
            ef_beta=cfg.ef_beta,
            error_feedback=cfg.error_feedback,
            ef_scope=cfg.ef_scope,
            proj_scale=cfg.proj_scale or None,
            factor_second_moment={"auto": None, "yes": True, "no": False}[cfg.factor_v],
            quant_mode=cfg.quant_mode or None,
            stochastic_rounding={"auto": "auto", "stochastic": True, "nearest": False}[cfg.rounding],
            min_compress_numel=cfg.min_compress_numel,
            seed=seed,
        )
    gen = torch.Generator().manual_seed(seed + 1)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    step_s: list[float] = []
    opt_s: list[float] = []
    losses: list[float] = []
    for step in range(cfg.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(cfg, step)
        x, y = corpus.get_batch("train", cfg.batch_size, seq_len, gen)
        x, y = x.to(device), y.to(device)
        sync()
        t0 = time.perf_counter()
        loss = model.loss(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        sync()
        t1 = time.perf_counter()
        opt.step()
        sync()
        t2 = time.perf_counter()
        step_s.append(t2 - t0)
        opt_s.append(t2 - t1)
        losses.append(loss.item())
    val_loss = model.mean_loss(val)
    k = max(1, cfg.interval_steps)
    intervals = [sum(losses[i : i + k]) / len(losses[i : i + k]) for i in range(0, len(losses), k)]
    skip = min(5, cfg.steps - 1)  # first steps allocate state
    n_params = sum(p.numel() for p in params)
    if isinstance(opt, MangoAdamW):
        state_bytes = opt.state_bytes()
        stats = opt.compression_stats().as_dict()
    else:
        state_bytes = sum(
            t.numel() * t.element_size() for s in opt.state.values() for t in s.values() if t.ndim
        )
        stats = {}
    return {
        "setting": label,
        "seed": seed,
        "val_loss": val_loss,
        "interval_losses": intervals,
        "train_loss_last20": sum(losses[-20:]) / len(losses[-20:]),
        "state_bytes": state_bytes,
        "params": n_params,
        "state_bytes_per_param": state_bytes / n_params,
        "step_ms": 1e3 * sum(step_s[skip:]) / len(step_s[skip:]),
        "opt_ms": 1e3 * sum(opt_s[skip:]) / len(opt_s[skip:]),
        "finite": math.isfinite(val_loss),
        "stats": stats,
    }


def format_table(rows: list[dict]) -> str:
    """One seed's runs: each against that seed's AdamW run (else the first run)."""
    base = next((r for r in rows if r["setting"] == "adamw"), rows[0])
    head = "| setting | val loss | vs AdamW | state B/param | state vs AdamW | step ms | opt ms |"
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        rel = (r["val_loss"] / base["val_loss"] - 1.0) * 100.0
        ratio = r["state_bytes"] / max(base["state_bytes"], 1)
        lines.append(
            f"| {r['setting']} | {r['val_loss']:.4f} | {rel:+.2f}% | {r['state_bytes_per_param']:.3f} | "
            f"{ratio:.3f} (1/{1 / max(ratio, 1e-9):.1f}) | {r['step_ms']:.1f} | {r['opt_ms']:.1f} |"
        )
    return "\n".join(lines)


def format_seed_table(rows: list[dict]) -> str:
    """Every setting over the seeds: mean validation loss and the paired difference to the same seed's AdamW
    run, in percent (mean and 95 % CI half-width, Student t; a CI that excludes 0 is a difference seeds do
    not explain)."""
    base = {r["seed"]: r["val_loss"] for r in rows if r["setting"] == "adamw"}
    labels = list(dict.fromkeys(r["setting"] for r in rows))
    lines = [
        "| setting | seeds | mean val loss | vs AdamW, paired (95 % CI) | worst seed vs AdamW "
        "| state B/param |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label in labels:
        mine = [r for r in rows if r["setting"] == label]
        diffs = np.array([100.0 * (r["val_loss"] / base[r["seed"]] - 1.0) for r in mine if r["seed"] in base])
        mean, half = mean_ci(diffs) if diffs.size else (math.nan, math.nan)
        worst = f"{diffs.max():+.2f}%" if diffs.size else "-"
        lines.append(
            f"| {label} | {len(mine)} | {np.mean([r['val_loss'] for r in mine]):.4f} | "
            f"{mean:+.2f}% +- {half:.2f} | {worst} | {mine[0]['state_bytes_per_param']:.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    cfg = tyro.cli(LMBenchConfig, args=sys.argv[1:] if argv is None else argv, prog="mango bench lm")
    torch.set_num_threads(cfg.threads)
    for label in cfg.labels():
        parse_setting(label)  # fail fast on a typo
    corpus = load_corpus(cfg.corpus_bytes)
    probe = build_model(cfg.model, cfg.seed)
    if not isinstance(probe, ByteGPT):
        raise ValueError(
            f"--model {cfg.model} is not a byte LM preset; choose lm-tiny, lm-small, lm-medium or gpt-85m"
        )
    seq_len = cfg.seq_len or probe.cfg.block_size
    seeds = cfg.seed_list()
    device = cfg.torch_device()
    print(
        f"# lm benchmark: {cfg.model}, {cfg.steps} steps, batch {cfg.batch_size}x{seq_len}, lr {cfg.lr}, "
        f"seeds {seeds}, {device}, {machine_line()}"
    )
    rows: list[dict] = []
    t_start = time.perf_counter()
    now = dt.datetime.now().astimezone()
    command = "python -m benchmarks.lm " + shlex.join(sys.argv[1:] if argv is None else argv)
    path = ROOT / cfg.out_dir / f"lm-{now:%Y%m%d-%H%M%S}.json"

    def save(complete: bool) -> None:
        """The JSON so far, rewritten after every run: a run cut short keeps the finished ones."""
        if cfg.no_write:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        doc = {"date": now.isoformat(), "command": command, "machine": machine_line(), "complete": complete}
        doc |= {"wall_s": time.perf_counter() - t_start, "config": dataclasses.asdict(cfg), "rows": rows}
        path.write_text(json.dumps(doc, indent=2))

    tables = []
    for seed in seeds:
        vgen = torch.Generator().manual_seed(10_000 + seed)
        val = [corpus.get_batch("val", cfg.batch_size, seq_len, vgen) for _ in range(cfg.eval_batches)]
        mine = []
        for label in cfg.labels():
            row = run_one(cfg, label, corpus, val, seed)
            mine.append(row)
            rows.append(row)
            save(complete=False)
            print(
                f"  seed {seed} {label:<12} val {row['val_loss']:.4f}  state "
                f"{row['state_bytes_per_param']:.3f} B/param  step {row['step_ms']:.1f} ms  "
                f"(opt {row['opt_ms']:.1f} ms)",
                flush=True,
            )
        tables.append((f"seed {seed}" if len(seeds) > 1 else "", format_table(mine)))
    wall_s = time.perf_counter() - t_start
    table = "\n\n".join(f"{name}\n\n{t}" if name else t for name, t in tables)
    if len(seeds) > 1:
        table = f"Over seeds {seeds}:\n\n{format_seed_table(rows)}\n\n{table}"
    print()
    print(table)
    if cfg.no_write:
        return 0
    save(complete=True)
    knobs = (
        f"refresh_every={cfg.refresh_every}, ef_beta={cfg.ef_beta}, ef_scope={cfg.ef_scope}, "
        f"error_feedback={cfg.error_feedback}, quant_mode={cfg.quant_mode or 'default'}, "
        f"proj_scale={cfg.proj_scale or 'sqrt(m/r)'}, factor_v={cfg.factor_v}, "
        f"rounding={cfg.rounding}, embeddings "
        + ("unprojected (project=False group)" if cfg.embed_rank0 else "projected like every matrix")
    )
    md = append_section(
        f"LM: AdamW vs MangoAdamW ({cfg.model}, {cfg.steps} steps)",
        command,
        table,
        details=[
            f"batch {cfg.batch_size} x {seq_len} bytes, lr {cfg.lr} (warm-up {cfg.warmup_steps}, cosine to "
            f"10 %), eps {cfg.eps}, weight decay {cfg.weight_decay}, corpus {cfg.corpus_bytes} bytes, "
            f"{cfg.eval_batches} validation batches, seeds {seeds}, {device}; MangoAdamW {knobs}",
            f"wall {wall_s:.0f} s",
            f"raw: `{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}`",
        ],
        when=now,
        path=cfg.bench_file or BENCHMARKS_MD,
    )
    print(f"\nwrote {path} and appended to {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
