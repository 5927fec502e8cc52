"""`mango bench gpu`: the H200 suite, every peer beside MANGO on the same tensors and model in one run.

Parts (``--parts``, comma separated; all by default):

* ``kernels``  - quantize / dequantize / pack at 2/3/4/8 bits beside bitsandbytes (``benchmarks.kernels``).
* ``lowrank``  - low-rank refresh at ranks 1-64 on 1024^2-8192^2 gradients: MANGO's warm-started projection
  (eager; replayed from a CUDA graph; the same with Cholesky-QR) vs a cold plain-torch power iteration vs
  ``torch.svd_lowrank``;
  time and error against the exact SVD.
* ``step``     - one optimizer step on a GPT-2-small-sized model (~124M parameters, random init): fused torch
  AdamW, bitsandbytes AdamW8bit, GaLore AdamW, MangoAdamW at a grid of settings; step time, optimizer-state
  bytes per parameter, peak memory, energy per step from NVML's energy counter over >= ``--energy-window-s``.
* ``profile``  - host time per step call, device time per step and the busiest kernels, per optimizer.
* ``switch``   - ``apply_setting`` between settings on the ``step`` model: its time and the first step's.
* ``tune``     - the fused MangoAdamW step's tile and warps swept on the ``step`` model (rank 0).
* ``variants`` - what each option of the fused step costs (rounding, error feedback, quantizer mode,
  factored ``v``, tiles, register caps, the projections' precision) on the ``step`` model.
* ``tune-proj`` - the projected launches' tiles (P^T G and the back-projection) at ranks 8 and 64.
* ``converge`` - the same body (12 layers, width 768, vocab 256) trained ``--steps`` steps on the byte-level
  Python-stdlib corpus with each optimizer: final validation loss beside state memory and energy.

Every part writes ``<out>/<part>.json`` and ``<out>/<part>.md`` (a table to paste into BENCHMARKS.md);
a failing peer becomes an error row, never a crash. Runs on CUDA only (it says so and exits elsewhere).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import platform
import re
import statistics
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import tyro

from agents.stats import mean_ci

__all__ = ["GpuBenchArgs", "main", "seed_summary"]


@dataclass
class GpuBenchArgs:
    """The H200 suite: kernels, low-rank refresh, optimizer step, convergence (CUDA only)."""

    out: str = "results/gpu"
    """output folder for JSON and markdown tables"""
    parts: str = "kernels,lowrank,step,converge"
    """which parts to run, comma separated"""
    sizes: list[int] = field(default_factory=lambda: [1024, 2048, 4096, 8192])
    """square gradient sizes for the low-rank part"""
    ranks: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 32, 64])
    """ranks for the low-rank part"""
    step_iters: int = 20
    """timed optimizer steps per configuration (after 5 warm-ups)"""
    energy_window_s: float = 2.0
    """seconds of repeated steps per energy reading (NVML's counter updates about every 100 ms)"""
    paired_energy: bool = True
    """the step part also runs a fused-AdamW window (on a parameter set of its own) right before each row's
    energy window: ``energy_vs_adamw_paired`` is the row's energy over that neighbour's, free of the drift of
    a GPU that warms over the part (``energy_vs_adamw`` divides by the one AdamW row); ``temp_C`` is the
    temperature after the row's window. Costs one more window a row and the step part's AdamW memory"""
    steps: int = 400
    """training steps per optimizer in the convergence part"""
    seeds: int = 1
    """seeds of the convergence part (model initialization and batch order; seed 0 first): every optimizer
    trains once per seed, and with two or more a summary row per optimizer gives its mean final validation
    loss relative to AdamW's on the same seed, with the 95 % CI of that paired ratio"""
    first_seed: int = 0
    """the convergence part's first seed (seeds ``first_seed .. first_seed + seeds - 1``): a later call
    continues a part that an earlier one cut short, and the two tables pair by seed"""
    batch: int = 32
    """sequences per batch in the convergence part"""
    seq: int = 256
    """sequence length (bytes) in the convergence part"""
    optimizers: str = ""
    """only the optimizers whose name contains one of these comma-separated strings (empty: all);
    a string starting with '=' keeps the name that is exactly the rest ('=MangoAdamW r0/b4/g0', not its
    no-EF row); a string starting with '-' drops the names that contain the rest; in the variants part a
    string 'SETTING|VARIANT' keeps exactly that row ('r0/b2/g0|' its baseline, 'r0/b2/g0|DRAWS=hash',
    'r0/b8/g0|MATRIX_TILE=512, MAX_REGS=0': a comma followed by a space does not split)"""
    kernel_args: str = ""
    """extra arguments passed to benchmarks.kernels (space separated)"""
    model: str = "gpt2"
    """parameter set of the step part: gpt2 (124M) or 1b"""
    switch_repeats: int = 3
    """timed passes of the switch part over its changes (after one that compiles): a change's apply and
    first-step times are the medians, ``first_step_max_ms`` the slowest first step (one host stall no longer
    stands as the reading)"""


def _sync() -> None:
    torch.cuda.synchronize()


def _time_ms(fn: Callable[[], Any], reps: int = 50, warmup: int = 5) -> float:
    """Median wall time of ``fn`` in ms, with CUDA events around each call."""
    for _ in range(warmup):
        fn()
    _sync()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    return times[len(times) // 2]


class _Energy:
    """NVML total-energy counter of GPU 0 (mJ), read around a window; ``None`` where NVML is unavailable."""

    def __init__(self) -> None:
        self.handle = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self.nvml = pynvml
            self.handle = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
        except Exception as exc:  # no NVML: report, don't crash
            print(f"NVML unavailable: {exc}")

    def read_j(self) -> float | None:
        if self.handle is None:
            return None
        return self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle) / 1000.0

    def temp_c(self) -> float | None:
        """The GPU's core temperature (degrees C): its power at the same work rises as it warms."""
        if self.handle is None:
            return None
        return float(self.nvml.nvmlDeviceGetTemperature(self.handle, self.nvml.NVML_TEMPERATURE_GPU))


def _table(rows: list[dict[str, Any]], cols: list[str]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def _write(out: Path, part: str, rows: list[dict[str, Any]], cols: list[str], meta: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{part}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1, default=str))
    md = _table(rows, cols)
    (out / f"{part}.md").write_text(md + "\n")
    print(f"\n## {part}\n{md}\n", flush=True)


# --------------------------------------------------------------------------------------------- low-rank
def _synthetic_gradient(n: int, gen: torch.Generator, true_rank: int = 96) -> torch.Tensor:
    """``A diag(s) B^T`` with a decaying spectrum plus isotropic noise: a gradient-like n x n matrix."""
    dev = "cuda"
    a = torch.linalg.qr(torch.randn(n, true_rank, device=dev, generator=gen))[0]
    b = torch.linalg.qr(torch.randn(n, true_rank, device=dev, generator=gen))[0]
    s = 1.0 / torch.arange(1, true_rank + 1, device=dev, dtype=torch.float32) ** 1.2
    noise = torch.randn(n, n, device=dev, generator=gen) * (0.02 / math.sqrt(n))
    return (a * s) @ b.T + noise


def _proj_err(g: torch.Tensor, p: torch.Tensor) -> float:
    """||G - P P^T G||_F^2 for orthonormal P."""
    c = p.T @ g
    return float(g.square().sum() - c.square().sum())


def _cholesky_refresh(g: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The refresh with Cholesky-QR instead of Householder: ``R^T R = (G q)^T (G q)`` in float64 (an r x r
    Gram matrix), ``p = (G q) R^-1``. The same ``p`` as :func:`~client.compression.lowrank.orthonormalize`
    (unique QR with a positive diagonal) while ``G q`` is well conditioned; no host sync (``cholesky_ex``)."""
    x = g @ q
    gram = (x.T @ x).double()
    chol, _ = torch.linalg.cholesky_ex(gram)
    p = torch.linalg.solve_triangular(chol, x.T.double(), upper=False).T.float()
    return p, g.T @ p


def _graph_refresh(
    g: torch.Tensor, q: torch.Tensor, cholesky: bool = False
) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
    """Capture one warm-started refresh (``p = orth(G q)``, ``q <- G^T p``, written back into ``q``) as a CUDA
    graph; returns the graph and its output ``p`` (refreshed by every replay)."""
    from client.compression.lowrank import power_iteration

    refresh = _cholesky_refresh if cholesky else power_iteration
    q_in = q.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up outside capture (cuBLAS / cuSOLVER workspaces)
        for _ in range(3):
            refresh(g, q_in)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        p_out, q_out = refresh(g, q_in)
        q_in.copy_(q_out)  # the next replay starts from this one's result, as the optimizer's refresh does
    graph.replay()
    return graph, p_out


def run_lowrank(args: GpuBenchArgs, out: Path, meta: dict[str, Any]) -> None:
    from client.compression.lowrank import init_q, orthonormalize, power_iteration

    gen = torch.Generator(device="cuda").manual_seed(0)
    rows: list[dict[str, Any]] = []
    for n in args.sizes:
        g = _synthetic_gradient(n, gen)
        drift = _synthetic_gradient(n, gen) * 0.05
        sv = torch.linalg.svdvals(g).double().square()
        t_svd = _time_ms(lambda g=g: torch.linalg.svd(g, full_matrices=False), reps=1, warmup=0)
        for r in args.ranks:
            tail = float(sv[r:].sum())
            row: dict[str, Any] = {"n": n, "rank": r, "svd_ms": t_svd}
            try:
                # MANGO: warm start from a stream with a stable spectrum (5 refreshes before timing)
                q = init_q(n, r, torch.Generator().manual_seed(1), device="cuda")
                for k in range(5):
                    _, q = power_iteration(g + drift * (k % 2), q)
                state = {"q": q}

                def warm(state: dict[str, torch.Tensor] = state, g: torch.Tensor = g) -> None:
                    _, state["q"] = power_iteration(g, state["q"])

                row["mango_warm_ms"] = _time_ms(warm, reps=100)
                p, _ = power_iteration(g, state["q"])
                row["mango_err_ratio"] = _proj_err(g, p) / tail
                try:  # the same refresh replayed from a CUDA graph: one launch instead of ~a dozen
                    graph, p_graph = _graph_refresh(g, state["q"])
                    row["mango_graph_ms"] = _time_ms(graph.replay, reps=100)
                    row["mango_graph_err_ratio"] = _proj_err(g, p_graph) / tail
                    graph, p_graph = _graph_refresh(g, state["q"], cholesky=True)
                    row["cholqr_graph_ms"] = _time_ms(graph.replay, reps=100)
                    row["cholqr_graph_err_ratio"] = _proj_err(g, p_graph) / tail
                except Exception as exc:  # capture unsupported here: report, keep the eager numbers
                    row["error"] = f"graph: {type(exc).__name__}: {exc}"

                # plain torch: cold random start, two subspace iterations with QR, every refresh
                def cold(g: torch.Tensor = g, r: int = r) -> torch.Tensor:
                    q0 = torch.randn(g.shape[1], r, device="cuda")
                    for _ in range(2):
                        p0 = torch.linalg.qr(g @ q0)[0]
                        q0 = g.T @ p0
                    return p0

                row["plain_pi_ms"] = _time_ms(cold, reps=50)
                row["plain_err_ratio"] = _proj_err(g, cold()) / tail
                row["svd_lowrank_ms"] = _time_ms(lambda g=g, r=r: torch.svd_lowrank(g, q=r, niter=2), reps=20)
                u, _, _ = torch.svd_lowrank(g, q=r, niter=2)
                row["svd_lowrank_err_ratio"] = _proj_err(g, orthonormalize(u)) / tail
            except Exception as exc:
                row["error"] = f"{type(exc).__name__}: {exc}"
            rows.append(row)
            print(row, flush=True)
        del g, drift
        torch.cuda.empty_cache()
    cols = ["n", "rank", "mango_warm_ms", "mango_err_ratio", "mango_graph_ms", "mango_graph_err_ratio"]
    cols += ["cholqr_graph_ms", "cholqr_graph_err_ratio", "plain_pi_ms", "plain_err_ratio"]
    cols += ["svd_lowrank_ms", "svd_lowrank_err_ratio", "svd_ms", "error"]
    _write(out, "lowrank", rows, cols, meta)


# --------------------------------------------------------------------------------------------- optimizers
def _optimizer_factories() -> dict[str, Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer]]:
    from client.compression import MangoAdamW
    from client.protocol import CompressionSetting

    lr, wd = 3e-4, 0.1
    facs: dict[str, Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer]] = {
        "torch AdamW (fused)": lambda ps: torch.optim.AdamW(ps, lr=lr, weight_decay=wd, fused=True),
    }

    def bnb8(ps: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
        import bitsandbytes as bnb

        return bnb.optim.AdamW8bit(ps, lr=lr, weight_decay=wd)

    def galore(ps: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
        from galore_torch import GaLoreAdamW

        mats = [p for p in ps if p.ndim == 2 and min(p.shape) >= 128]
        rest = [p for p in ps if not (p.ndim == 2 and min(p.shape) >= 128)]
        groups = [
            {"params": rest},
            {"params": mats, "rank": 128, "update_proj_gap": 200, "scale": 0.25, "proj_type": "std"},
        ]
        return GaLoreAdamW(groups, lr=lr, weight_decay=wd)

    def torchao_low_bit(name: str) -> Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer]:
        def make(ps: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
            from torchao import optim as tao  # its README: the step compiles itself (torch.compile inside)

            return getattr(tao, name)(ps, lr=lr, weight_decay=wd)

        return make

    def flash(ps: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
        from flashoptim import FlashAdamW  # fp32 parameters: 8-bit moments, fused Triton update

        # its master-weight correction applies to bf16 parameters only; it refuses the default on fp32 ones
        return FlashAdamW(ps, lr=lr, weight_decay=wd, master_weight_bits=None)

    def apollo(
        rank: int, scale_type: str, scale: float
    ) -> Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer]:
        def make(ps: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
            from apollo_torch import APOLLOAdamW  # the README's configuration (APOLLO / APOLLO-mini)

            mats = [p for p in ps if p.ndim == 2 and min(p.shape) >= 128]
            rest = [p for p in ps if not (p.ndim == 2 and min(p.shape) >= 128)]
            groups = [
                {"params": rest},
                {"params": mats, "rank": rank, "proj": "random", "scale_type": scale_type, "scale": scale,
                 "update_proj_gap": 200, "proj_type": "std"},
            ]  # fmt: skip
            return APOLLOAdamW(groups, lr=lr, weight_decay=wd)

        return make

    facs["bnb AdamW8bit"] = bnb8
    facs["torchao AdamW8bit"] = torchao_low_bit("AdamW8bit")
    facs["torchao AdamW4bit"] = torchao_low_bit("AdamW4bit")
    facs["FlashOptim FlashAdamW"] = flash
    facs["GaLore AdamW r128"] = galore
    facs["APOLLO r256"] = apollo(256, "channel", 1.0)
    facs["APOLLO-mini r1"] = apollo(1, "tensor", 128.0)
    for r, b, gm in GRID:
        s = CompressionSetting(rank=r, bits=b, gamma=gm)
        facs[f"MangoAdamW {s.label()}"] = lambda ps, s=s: MangoAdamW(ps, lr=lr, weight_decay=wd, setting=s)
    # rank 0 / 4 bits without the error buffer: m and sqrt(v) on the 4-bit uniform code, ~1.13 B/param
    s4 = CompressionSetting(rank=0, bits=4)
    facs["MangoAdamW r0/b4/g0 no-EF"] = lambda ps: MangoAdamW(
        ps, lr=lr, weight_decay=wd, setting=s4, error_feedback=False
    )
    # rank 0 without the non-finite check (skip_nonfinite=False: no gradient pre-pass), as torch's AdamW steps
    for lb in ("r0/b8/g0", "r0/b4/g0", "r0/b32/g0"):
        s = CompressionSetting.parse(lb)
        facs[f"MangoAdamW {lb} unchecked"] = lambda ps, s=s: MangoAdamW(
            ps, lr=lr, weight_decay=wd, setting=s, skip_nonfinite=False
        )
    facs["MangoAdamW r0/b4/g0 no-EF unchecked"] = lambda ps: MangoAdamW(
        ps, lr=lr, weight_decay=wd, setting=s4, error_feedback=False, skip_nonfinite=False
    )
    # 8-bit codes rounded stochastically (the default until session 29: Philox draws)
    s8 = CompressionSetting(rank=0, bits=8)
    facs["MangoAdamW r0/b8/g0 stochastic"] = lambda ps: MangoAdamW(
        ps, lr=lr, weight_decay=wd, setting=s8, stochastic_rounding=True
    )
    # 8-bit codes without the error buffer (2.04 B/param, as bitsandbytes' and torchao's 8-bit states): the
    # buffer carries the gradient's quantization error into the next step, so the question is its loss
    facs["MangoAdamW r0/b8/g0 no-EF"] = lambda ps: MangoAdamW(
        ps, lr=lr, weight_decay=wd, setting=s8, error_feedback=False
    )
    # 4 bits with the factored v (Adafactor row / column statistics; the default until session 30), with and
    # without the error buffer (~1.14 and ~0.58 B/param, against the full v's ~1.7 and ~1.13)
    facs["MangoAdamW r0/b4/g0 factored"] = lambda ps: MangoAdamW(
        ps, lr=lr, weight_decay=wd, setting=s4, factor_second_moment=True
    )
    facs["MangoAdamW r0/b4/g0 factored no-EF"] = lambda ps: MangoAdamW(
        ps, lr=lr, weight_decay=wd, setting=s4, factor_second_moment=True, error_feedback=False
    )
    # 4 bits' two other choices (session 30): NF4 codes (the default until session 30) against the uniform
    # ones; and 4 bits rounded stochastically (the default until session 31) against the default's nearest
    facs["MangoAdamW r0/b4/g0 nf4"] = lambda ps: MangoAdamW(
        ps, lr=lr, weight_decay=wd, setting=s4, quant_mode="nf4"
    )
    facs["MangoAdamW r0/b4/g0 stochastic"] = lambda ps: MangoAdamW(
        ps, lr=lr, weight_decay=wd, setting=s4, stochastic_rounding=True
    )
    # 3 bits rounded to nearest against the default's stochastic rounding (one CPU seed: lower, session 31)
    facs["MangoAdamW r0/b3/g0 nearest"] = lambda ps: MangoAdamW(
        ps, lr=lr, weight_decay=wd, setting=CompressionSetting(rank=0, bits=3), stochastic_rounding=False
    )
    # 2 and 3 bits with a full v (sqrt(v) on the setting's uniform code, as 4 bits since session 30) against
    # the default's factored v (Adafactor statistics; their column sums are the slow part of the step), and
    # 3 bits full v rounded to nearest (no random draws at all)
    for b in (2, 3):
        sb = CompressionSetting(rank=0, bits=b)
        facs[f"MangoAdamW r0/b{b}/g0 full-v"] = lambda ps, sb=sb: MangoAdamW(
            ps, lr=lr, weight_decay=wd, setting=sb, factor_second_moment=False
        )
    s3 = CompressionSetting(rank=0, bits=3)
    facs["MangoAdamW r0/b3/g0 full-v nearest"] = lambda ps: MangoAdamW(
        ps, lr=lr, weight_decay=wd, setting=s3, factor_second_moment=False, stochastic_rounding=False
    )
    # the per-tensor torch path (the fused path's "before"), one rank-0 and one projected setting
    for s in (CompressionSetting(rank=0, bits=8), CompressionSetting(rank=8, bits=4)):
        facs[f"MangoAdamW {s.label()} torch-path"] = lambda ps, s=s: MangoAdamW(
            ps, lr=lr, weight_decay=wd, setting=s, fused=False
        )
    return {k: v for k, v in facs.items() if keeps_name(OPTIMIZERS, k)}


def keeps_name(filters: list[str], name: str) -> bool:
    """Whether ``--optimizers``' strings keep the optimizer ``name``: one that contains a kept string, or
    equals one given as ``=NAME`` (exactly that row: ``=MangoAdamW r0/b4/g0`` without its no-EF, unchecked
    or factored rows), and contains no string given as ``-STRING``. No kept strings: every name."""
    keep = [x for x in filters if not x.startswith("-")]
    if any(x[1:] in name for x in filters if x.startswith("-")):
        return False
    return not keep or any(name == x[1:] if x.startswith("=") else x in name for x in keep)


#: The covering subset of the action grid the ``step`` part times: every rank, width and gamma of the grid.
GRID: list[tuple[int, int, float]] = [
    (0, 32, 0.0), (0, 16, 0.0), (0, 8, 0.0), (0, 4, 0.0), (0, 3, 0.0), (0, 2, 0.0),
    (0, 8, 0.5), (0, 4, 1.0), (0, 16, 0.25),
    (1, 8, 0.0), (2, 32, 0.0), (4, 8, 0.0), (8, 4, 0.0), (8, 2, 0.25), (16, 3, 0.75),
    (16, 16, 0.0), (32, 4, 0.0), (32, 32, 1.0), (64, 8, 0.0), (64, 8, 0.5), (64, 16, 1.0),
]  # fmt: skip
#: Values per program swept by the ``tune`` part.
TUNE_TILES = (256, 512, 1024, 2048)
#: Register caps swept by the ``tune`` part at the default tile and warps.
TUNE_MAX_REGS = (48, 56, 64, 72, 80)
#: Set by ``main`` from ``--optimizers``.
OPTIMIZERS: list[str] = []


def _state_bytes(opt: torch.optim.Optimizer) -> int:
    if hasattr(opt, "state_bytes"):
        return int(opt.state_bytes())
    total = 0
    for st in opt.state.values():
        for v in st.values() if isinstance(st, dict) else []:
            if torch.is_tensor(v) and hasattr(v, "__tensor_flatten__"):  # torchao's quantized subclasses
                names, _ = v.__tensor_flatten__()
                total += sum(getattr(v, n).numel() * getattr(v, n).element_size() for n in names)
            elif torch.is_tensor(v):
                total += v.numel() * v.element_size()
            elif isinstance(v, dict):  # GaLore keeps its projector object in state
                total += sum(t.numel() * t.element_size() for t in v.values() if torch.is_tensor(t))
            elif hasattr(v, "ortho_matrix") and torch.is_tensor(v.ortho_matrix):
                total += v.ortho_matrix.numel() * v.ortho_matrix.element_size()
    return total


def _relative_to_adamw(rows: list[dict[str, Any]], key: str, out_key: str, name: str = "optimizer") -> None:
    """Add ``out_key = row[key] / torch AdamW's row[key]`` to every row that measured ``key`` (AdamW's row:
    the one whose ``name`` column starts with "torch")."""
    base = next((r for r in rows if str(r.get(name, "")).startswith("torch") and key in r), None)
    for r in rows:
        if base and key in r:
            r[out_key] = r[key] / base[key]


def _gpt(
    vocab: int, block: int, n_layer: int = 12, n_embd: int = 768, n_head: int = 12, seed: int = 0
) -> torch.nn.Module:
    from envs.models import ByteGPT, GPTConfig

    torch.manual_seed(seed)
    cfg = GPTConfig(vocab_size=vocab, n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block)
    return ByteGPT(cfg).cuda()


#: Parameter sets of the ``step`` part (``--model``): GPT-2 small (124M) and a 24 x 1792 GPT (1.0B).
MODELS: dict[str, dict[str, int]] = {
    "gpt2": {"n_layer": 12, "n_embd": 768, "n_head": 12},
    "1b": {"n_layer": 24, "n_embd": 1792, "n_head": 14},
}


def gpt2_with_gradients() -> list[torch.nn.Parameter]:
    """The ``step`` part's GPT-2-small parameter set (124M, tied embeddings) with random gradients."""
    return model_with_gradients("gpt2")


def model_with_gradients(name: str) -> list[torch.nn.Parameter]:
    """The ``step`` part's model (:data:`MODELS`, GPT-2's vocabulary, tied embeddings) with seeded random
    gradients (std 1e-3) on every trainable parameter."""
    model = _gpt(50304, 1024, **MODELS[name])
    params = [p for p in model.parameters() if p.requires_grad]
    gen = torch.Generator(device="cuda").manual_seed(0)
    for p in params:
        p.grad = torch.randn(p.shape, device="cuda", generator=gen) * 1e-3
    return params


def _amortized_ms(step: Callable[[], Any], n: int, windows: int = 3) -> float:
    """Mean device time per call over ``n`` consecutive calls (CUDA events around the whole run): what a job
    pays, a basis refresh every ``refresh_every`` steps included (a median of single steps would hide it).
    The median of ``windows`` such runs back to back (``n`` a multiple of the refresh interval, so each
    holds as many refreshes): one run in which the GPU waited on a host stall does not stand as the reading
    (session 40's grids had rows 15-40 % slow at unchanged energy per step; a stall longer than a run still
    shows)."""
    runs = []
    for _ in range(windows):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        _sync()
        a.record()
        for _ in range(n):
            step()
        b.record()
        b.synchronize()
        runs.append(a.elapsed_time(b) / n)
    return statistics.median(runs)


def host_ms(
    step: Callable[[], Any],
    n: int = 10,
    windows: int = 5,
    sync: Callable[[], None] = _sync,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """Host time to queue one call of ``step``: the median over ``windows`` runs of ``n`` calls, each run
    started on an idle device (``sync``) and timed without waiting for it, so the launch queue neither holds
    work nor fills. Beside the step time it says who waits: a row whose ``host_ms`` reaches its ``step_ms``
    is host-bound (the device idles between launches), one far below it is device-bound. ``n`` calls of a
    projected step queue about ``25 n`` device operations: keep ``25 n`` under the driver's ~1,000-entry
    queue, or the host waits for room and reads as slow as the device."""
    runs = []
    for _ in range(windows):
        sync()
        t0 = clock()
        for _ in range(n):
            step()
        runs.append((clock() - t0) / n * 1000)
    sync()
    return statistics.median(runs)


def _fused_adamw_ms(
    params: list[torch.nn.Parameter], time_fn: Callable[[Callable[[], Any]], float], warmup: int = 10
) -> float:
    """Fused torch AdamW's step time on ``params`` by ``time_fn`` (the denominator of a part's ratios)."""
    opt = torch.optim.AdamW(params, lr=3e-4, weight_decay=0.1, fused=True)
    for _ in range(warmup):
        opt.step()
    return time_fn(opt.step)


def _energy_row(step: Callable[[], Any], energy: _Energy, window_s: float) -> dict[str, float]:
    """``energy_mJ_per_step`` and ``mean_power_W`` of ``step`` repeated for ``window_s`` seconds (NVML's
    counter, a sync every 10 steps); empty where NVML is unavailable or ``window_s`` is 0."""
    if window_s <= 0.0 or energy.handle is None:
        return {}
    e0, t0, k = energy.read_j(), time.perf_counter(), 0
    while time.perf_counter() - t0 < window_s:
        step()
        k += 1
        if k % 10 == 0:
            _sync()
    _sync()
    e1, t1 = energy.read_j(), time.perf_counter()
    if e0 is None or e1 is None:
        return {}
    return {"energy_mJ_per_step": (e1 - e0) * 1000.0 / k, "mean_power_W": (e1 - e0) / (t1 - t0)}


def _paired_adamw(args: GpuBenchArgs, energy: _Energy) -> Callable[[], Any] | None:
    """The step of a warm fused AdamW on a parameter set of its own, the neighbour of each row's energy
    window (``--paired-energy``); None where it is off or NVML is unavailable."""
    if not args.paired_energy or args.energy_window_s <= 0.0 or energy.handle is None:
        return None
    opt = torch.optim.AdamW(model_with_gradients(args.model), lr=3e-4, weight_decay=0.1, fused=True)
    for _ in range(10):
        opt.step()
    return opt.step


def _paired_energy_row(
    row: dict[str, Any],
    step: Callable[[], Any],
    pair: Callable[[], Any] | None,
    energy: _Energy,
    window_s: float,
) -> None:
    """``row``'s energy window, after the paired AdamW's window where there is one (its ratio to it as
    ``energy_vs_adamw_paired``) and the temperature after it."""
    before = _energy_row(pair, energy, window_s) if pair is not None else {}
    row.update(_energy_row(step, energy, window_s))
    if "energy_mJ_per_step" in before and "energy_mJ_per_step" in row:
        row["adamw_mJ_paired"] = before["energy_mJ_per_step"]
        row["energy_vs_adamw_paired"] = row["energy_mJ_per_step"] / before["energy_mJ_per_step"]
    temp = energy.temp_c()
    if temp is not None:
        row["temp_C"] = temp


def run_step(args: GpuBenchArgs, out: Path, meta: dict[str, Any]) -> None:
    """Each optimizer's step on the part's model: ``step_ms`` (amortized over back-to-back steps, refreshes
    included: the ratio the goals are stated in), ``median_ms`` (single synchronized steps), ``host_ms``
    (:func:`host_ms`: where it reaches ``step_ms`` the row is host-bound), state bytes, peak memory and the
    energy window beside a paired fused-AdamW one."""
    energy = _Energy()
    pair = _paired_adamw(args, energy)
    rows: list[dict[str, Any]] = []
    for name, fac in _optimizer_factories().items():
        row: dict[str, Any] = {"model": args.model, "optimizer": name}
        try:
            torch.cuda.empty_cache()
            held = torch.cuda.memory_allocated()  # the paired AdamW's parameters and state
            params = model_with_gradients(args.model)
            n_params = sum(p.numel() for p in params)
            opt = fac(params)
            # warm-up: compilation, and for MangoAdamW two basis refreshes (every 50 steps; the second
            # captures the refresh's CUDA graph) before timing
            slow = "torch-path" in name
            for _ in range(5 if slow else (105 if "Mango" in name else 10)):
                opt.step()
            _sync()
            torch.cuda.reset_peak_memory_stats()
            n = 10 if slow else max(args.step_iters, 100)
            row["step_ms"] = _amortized_ms(opt.step, n)
            row["median_ms"] = _time_ms(opt.step, reps=10 if slow else 30, warmup=0)
            row["host_ms"] = host_ms(opt.step, n=2 if slow else 10)
            row["params_M"] = n_params / 1e6
            row["state_bytes_per_param"] = _state_bytes(opt) / n_params
            row["peak_mem_GiB"] = (torch.cuda.max_memory_allocated() - held) / 2**30
            _paired_energy_row(row, opt.step, pair, energy, args.energy_window_s)
            del opt, params
        except Exception as exc:
            row["error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
            traceback.print_exc()
        rows.append(row)
        print(row, flush=True)
    _relative_to_adamw(rows, "step_ms", "vs_fused_adamw")
    _relative_to_adamw(rows, "energy_mJ_per_step", "energy_vs_adamw")
    cols = ["model", "optimizer", "step_ms", "vs_fused_adamw", "median_ms", "host_ms"]
    cols += ["state_bytes_per_param", "peak_mem_GiB", "energy_mJ_per_step", "energy_vs_adamw"]
    cols += ["energy_vs_adamw_paired", "mean_power_W", "temp_C", "error"]
    _write(out, f"step-{args.model}", rows, cols, meta)


def run_tune(args: GpuBenchArgs, out: Path, meta: dict[str, Any]) -> None:
    """Sweep the fused step's tile (values per program) and warps on the step part's model: amortized device
    time per step (back-to-back steps), as the step and variants parts time (until session 29 the median of
    single synchronized steps, whose host latency favoured fewer, bigger programs: its best tile, 512 values,
    was 1.16x fused AdamW in the variants part where 256 was 0.76x)."""
    from client.compression import MangoAdamW, fused
    from client.protocol import CompressionSetting

    rows: list[dict[str, Any]] = []
    params = gpt2_with_gradients()
    adamw_ms = _fused_adamw_ms(params, lambda step: _amortized_ms(step, 100), warmup=5)
    settings = {
        "r0/b8": {"setting": CompressionSetting(rank=0, bits=8)},
        "r0/b4 no-EF": {"setting": CompressionSetting(rank=0, bits=4), "error_feedback": False},
    }
    tile0, warps0, regs0 = fused.MATRIX_TILE, fused.NUM_WARPS, fused.MAX_REGS
    grid: list[tuple[int, int, int | None]] = [(t, w, 0) for t in TUNE_TILES for w in (1, 2, 4, 8)]
    grid += [(tile0, warps0, r) for r in TUNE_MAX_REGS]
    for name, kw in settings.items():
        for tile, warps, regs in grid:
            fused.MATRIX_TILE, fused.NUM_WARPS, fused.MAX_REGS = tile, warps, regs
            opt = MangoAdamW(params, lr=3e-4, weight_decay=0.1, **kw)  # type: ignore[arg-type]
            for _ in range(5):
                opt.step()
            ms = _amortized_ms(opt.step, 100)
            row = {"setting": name, "tile": tile, "warps": warps, "max_regs": regs or "none"}
            rows.append({**row, "step_ms": ms, "vs_fused_adamw": ms / adamw_ms})
            print(rows[-1], flush=True)
            del opt
    fused.MATRIX_TILE, fused.NUM_WARPS, fused.MAX_REGS = tile0, warps0, regs0
    _write(out, "tune", rows, ["setting", "tile", "warps", "max_regs", "step_ms", "vs_fused_adamw"], meta)


#: Stochastic rounding asked for (the 8-bit rows of the draws: the default rounds 8-bit codes to nearest).
SR: dict[str, Any] = {"stochastic_rounding": True}
#: The factored second moment asked for (the rows that time it at 4 bits, its default until session 30).
FAC: dict[str, Any] = {"factor_second_moment": True}
#: NF4 codes asked for (the rows that time them at 4 bits, the default until session 30; uniform since).
NF4: dict[str, Any] = {"quant_mode": "nf4"}

#: The ``variants`` part: (setting, MangoAdamW keywords, fused-module knobs) - what each option of the fused
#: step costs on the step model (the knobs are :mod:`client.compression.fused`'s module constants).
VARIANTS: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("r0/b8/g0", {}, {}),
    ("r0/b8/g0", SR, {}),
    ("r0/b8/g0", {"error_feedback": False}, {}),
    ("r0/b4/g0", {}, {}),
    ("r0/b4/g0", {"stochastic_rounding": False}, {}),
    ("r0/b4/g0", NF4, {}),
    ("r0/b3/g0", {}, {}),
    ("r0/b3/g0", {}, {"MAX_REGS": 72}),
    ("r0/b2/g0", {}, {"MAX_REGS": 72}),
    # where rank 0 at 2-4 bits spends its time: the factored v (atomics; at 4 bits the default until session
    # 30, FAC), the tile, the rounding
    ("r0/b8/g0", FAC, {}),
    ("r0/b4/g0", FAC, {}),
    ("r0/b4/g0", {"error_feedback": False}, {}),
    ("r0/b4/g0", {}, {"MATRIX_TILE": 1024, "NUM_WARPS": 4}),
    ("r0/b2/g0", {}, {}),
    ("r0/b2/g0", FAC, {}),  # the default at 2-3 bits until session 33
    ("r0/b3/g0", FAC, {}),
    ("r0/b2/g0", {"stochastic_rounding": False}, {}),
    ("r0/b2/g0", {}, {"MATRIX_TILE": 512, "NUM_WARPS": 2}),
    ("r0/b2/g0", {}, {"MATRIX_TILE": 1024, "NUM_WARPS": 4}),
    # the factored strips (session 7): tiles a program walks, and the register cap with the loop
    ("r0/b2/g0", FAC, {"FACTOR_ITERS": 1}),
    ("r0/b2/g0", FAC, {"FACTOR_ITERS": 4}),
    ("r0/b2/g0", FAC, {"FACTOR_ITERS": 16}),
    # the register cap of the 2-3-bit kernels (72, chosen with the factored v) with the full v, and the
    # early loads that won at 4 and 8 bits
    # (session 36: statically, at cap 72 the full-v 2-bit kernel spills 104 B a thread, at 96 8 B, at 128
    # none; `python -m benchmarks.sass`)
    ("r0/b2/g0", {}, {"MAX_REGS": 96}),
    ("r0/b2/g0", {}, {"MAX_REGS": 128}),
    ("r0/b2/g0", {}, {"MAX_REGS": 0}),
    ("r0/b3/g0", {}, {"MAX_REGS": 0}),
    ("r0/b3/g0", {}, {"MAX_REGS": 96}),
    ("r0/b3/g0", {}, {"EARLY_LOADS": {(3, False): 128}}),
    ("r0/b4/g0", FAC, {"FACTOR_ITERS": 1}),
    ("r0/b4/g0", FAC, {"FACTOR_ITERS": 16}),
    ("r8/b4/g0", {}, {}),
    ("r8/b4/g0", FAC, {}),
    ("r8/b4/g0", FAC, {"FACTOR_ITERS": 1}),
    ("r32/b4/g0", FAC, {"FACTOR_ITERS": 1}),
    ("r4/b8/g0", {}, {}),
    ("r4/b8/g0", {"refresh_every": 10_000}, {}),
    ("r4/b8/g0", {}, {"BACK_BN": 64, "PROJ_BK": 64}),
    ("r32/b4/g0", {}, {}),
    ("r32/b4/g0", FAC, {}),
    ("r32/b4/g0", {"refresh_every": 10_000}, {}),
    ("r64/b8/g0", {}, {}),
    ("r64/b8/g0", {"refresh_every": 10_000}, {}),
    ("r64/b8/g0", {"refresh_every": 200}, {}),
    ("r64/b8/g0", {}, {"BACK_BN": 64, "PROJ_BK": 64}),
    ("r32/b32/g1", {}, {}),
    ("r32/b32/g1", {"refresh_every": 10_000}, {}),
    # rank 64's refresh every 200 steps (50 by default): the missed energy rows of session 34 (r64/b8/g0,
    # r64/b16/g1 at 1.16-1.20x AdamW's) with a quarter of the refreshes (the part's energy columns)
    ("r64/b16/g1", {}, {}),
    ("r64/b16/g1", {"refresh_every": 200}, {}),
    # rank 0 at 4 bits with its options combined (session 9: is a cheaper default at 4 bits in reach?)
    ("r0/b4/g0", {**NF4, "error_feedback": False}, {}),
    ("r0/b4/g0", {**FAC, "error_feedback": False}, {}),
    # every load of a tile first (fused.EARLY_LOADS, session 12): the early loads at their caps against the
    # loads where first used ({}), and the caps around them
    ("r0/b8/g0", {}, {"EARLY_LOADS": {}}),
    ("r0/b8/g0", {}, {"EARLY_LOADS": {}, "MAX_REGS": 96}),
    ("r0/b8/g0", {}, {"MAX_REGS": 88}),
    ("r0/b8/g0", {}, {"MAX_REGS": 128}),
    ("r0/b8/g0", {"error_feedback": False}, {"EARLY_LOADS": {}}),
    ("r0/b8/g0.5", {}, {"EARLY_LOADS": {}}),
    ("r0/b8/g0.5", {}, {"MAX_REGS": 96}),
    ("r0/b16/g0", {}, {"EARLY_LOADS": {(16, False): 96}}),
    ("r0/b4/g0", {}, {"EARLY_LOADS": {}}),
    ("r0/b4/g0", {}, {"EARLY_LOADS": {(4, False): 0}}),
    ("r0/b4/g0", {}, {"EARLY_LOADS": {(4, False): 96}}),
    ("r0/b4/g0", FAC, {"EARLY_LOADS": {}}),
    ("r0/b4/g0", {"error_feedback": False}, {"EARLY_LOADS": {}}),
    ("r8/b4/g0", {}, {"EARLY_LOADS": {}}),
    ("r0/b4/g1", {}, {"EARLY_LOADS": {(4, False): 128}}),
    ("r0/b4/g1", {}, {"MAX_REGS": 168}),  # session 36: at its cap 128 it spills 16 B a thread, at 168 none
    ("r4/b8/g0", {}, {"EARLY_LOADS": {}}),
    ("r64/b8/g0", {}, {"EARLY_LOADS": {}}),
    # stochastic rounding's words from an integer hash instead of Philox-7 (fused.DRAWS, session 13); at 8
    # bits the rows ask for stochastic rounding (SR), which "auto" leaves to 2-4 bits and bf16 (session 29)
    ("r0/b8/g0", SR, {"DRAWS": "hash"}),
    ("r0/b8/g0.5", SR, {"DRAWS": "hash"}),
    ("r0/b4/g0", {}, {"DRAWS": "hash"}),
    ("r0/b2/g0", {}, {"DRAWS": "hash"}),
    ("r4/b8/g0", SR, {"DRAWS": "hash"}),
    # 8-bit dithers, a byte a value: one Philox call (or four hashes) per four values (fused.DRAWS, session
    # 24; blocks of 128 and up: the 64-value blocks at 2-4 bits keep the 16-bit draws, the same kernel)
    ("r0/b8/g0", SR, {"DRAWS": "philox8"}),
    ("r0/b8/g0", SR, {"DRAWS": "hash8"}),
    ("r0/b8/g0", {"skip_nonfinite": False, **SR}, {"DRAWS": "philox8"}),
    ("r0/b8/g0.5", {}, {}),
    ("r0/b8/g0.5", SR, {"DRAWS": "philox8"}),
    ("r0/b8/g0", {"factor_second_moment": True, **SR}, {"DRAWS": "philox8"}),
    ("r4/b8/g0", SR, {"DRAWS": "philox8"}),
    # the factored v's sums of c^2 in each program's own slots, added up after the step, against the atomics
    # (fused.FACTOR_SUMS, issue 12): the baselines are the rows above with the same setting and no knob
    ("r0/b4/g0", FAC, {"FACTOR_SUMS": "partials"}),
    ("r0/b4/g0", FAC, {"FACTOR_SUMS": "partials", "FACTOR_ITERS": 2}),
    ("r0/b4/g1", {}, {}),
    ("r0/b4/g1", FAC, {}),
    ("r0/b4/g1", FAC, {"FACTOR_SUMS": "partials"}),
    ("r0/b8/g0", FAC, {"FACTOR_SUMS": "partials"}),
    ("r0/b8/g0", FAC, {"FACTOR_SUMS": "partials", "FACTOR_ITERS": 8}),
    ("r0/b3/g0", {}, {"FACTOR_SUMS": "partials"}),
    ("r0/b2/g0", {}, {"FACTOR_SUMS": "partials"}),
    ("r8/b4/g0", FAC, {"FACTOR_SUMS": "partials"}),
    ("r32/b4/g0", FAC, {"FACTOR_SUMS": "partials"}),
    # NF4 codes (quant_mode="nf4": the 4-bit default until session 30) by a comparison with every level
    # (fused.NF4_SEARCH "compare", the default until session 27) against the search of cells (the default
    # since): the baselines are the NF4 rows with the same keywords and no knob (the first is above)
    # the projection adding the gradient norms as it reads the gradient (fused.PROJ_NORMS_MIN_RANK, session
    # 41; at every rank by default since session 42): at none (a huge rank: the norm pre-pass, the way until
    # session 41) and from R = 64 up (session 41's default); the baselines are the rows above with the same
    # setting and no knob
    ("r64/b8/g0", {}, {"PROJ_NORMS_MIN_RANK": 1 << 30}),
    ("r32/b32/g1", {}, {"PROJ_NORMS_MIN_RANK": 64}),
    ("r64/b16/g1", {}, {"PROJ_NORMS_MIN_RANK": 1 << 30}),
    ("r4/b8/g0", {}, {"PROJ_NORMS_MIN_RANK": 64}),
    ("r16/b3/g0.75", {}, {}),
    ("r16/b3/g0.75", {}, {"PROJ_NORMS_MIN_RANK": 64}),
    # the norm sum's form (fused.PROJ_NORMS_RELOAD_BELOW, session 42): below R = 64 squaring the product's
    # tile (0: call 92's form) against the default second load of the gradient tile, and rank 64 with the
    # second load (128)
    ("r4/b8/g0", {}, {"PROJ_NORMS_RELOAD_BELOW": 0}),
    ("r32/b32/g1", {}, {"PROJ_NORMS_RELOAD_BELOW": 0}),
    ("r64/b8/g0", {}, {"PROJ_NORMS_RELOAD_BELOW": 128}),
    # the projection kernels without the alignment promise (fused.PROJ_ALIGN, session 42): 4-byte accesses
    ("r4/b8/g0", {}, {"PROJ_ALIGN": False}),
    ("r32/b32/g1", {}, {"PROJ_ALIGN": False}),
    ("r64/b8/g0", {}, {"PROJ_ALIGN": False}),
    ("r64/b16/g1", {}, {"PROJ_ALIGN": False}),
    # the matrix kernel without it (fused.MATRIX_ALIGN, session 42)
    ("r0/b8/g0", {}, {"MATRIX_ALIGN": False}),
    ("r0/b4/g0", {}, {"MATRIX_ALIGN": False}),
    ("r0/b4/g1", {}, {"MATRIX_ALIGN": False}),
    ("r0/b2/g0", {}, {"MATRIX_ALIGN": False}),
    ("r0/b8/g0.5", {}, {"MATRIX_ALIGN": False}),
    ("r64/b8/g0", {}, {"PROJ_ALIGN": False, "MATRIX_ALIGN": False}),
    # 4-bit code bytes loaded once a value, not once a pair (fused.FOUR_BIT_PAIRS, on since session 43)
    ("r0/b4/g0", {}, {"FOUR_BIT_PAIRS": False}),
    ("r0/b4/g1", {}, {"FOUR_BIT_PAIRS": False}),
    ("r0/b4/g0", {"error_feedback": False}, {"FOUR_BIT_PAIRS": False}),
    ("r8/b4/g0", {}, {"FOUR_BIT_PAIRS": False}),
    # the steady step replayed from a CUDA graph (fused.STEP_GRAPH, session 44) against its eager launches:
    # the host's share of a step (its host_ms in the step part)
    ("r0/b8/g0", {}, {"STEP_GRAPH": False}),
    ("r0/b4/g1", {}, {"STEP_GRAPH": False}),
    ("r8/b2/g0.25", {}, {}),
    ("r8/b2/g0.25", {}, {"STEP_GRAPH": False}),
    ("r4/b8/g0", {}, {"STEP_GRAPH": False}),
    ("r32/b32/g1", {}, {"STEP_GRAPH": False}),
    ("r64/b8/g0", {}, {"STEP_GRAPH": False}),
    ("r0/b4/g0", NF4, {"NF4_SEARCH": "compare"}),
    ("r0/b4/g0", {**NF4, "error_feedback": False}, {"NF4_SEARCH": "compare"}),
    ("r0/b4/g0", {**NF4, "stochastic_rounding": False}, {}),
    ("r0/b4/g0", {**NF4, "stochastic_rounding": False}, {"NF4_SEARCH": "compare"}),
    ("r0/b4/g0", {**NF4, "skip_nonfinite": False}, {"NF4_SEARCH": "compare"}),
    ("r0/b4/g1", NF4, {}),
    ("r0/b4/g1", NF4, {"NF4_SEARCH": "compare"}),
    # a non-finite gradient skips its tensor (fused.SKIP_GRAIN = "tensor", the default until session 28): the
    # gradient pre-pass of the full-v rank-0 launches, against the default per-tile rule (the rows with the
    # same setting and no knob) and the unchecked rows below
    ("r0/b8/g0", {}, {"SKIP_GRAIN": "tensor"}),
    ("r0/b8/g0.5", {}, {"SKIP_GRAIN": "tensor"}),
    ("r0/b8/g0", {"error_feedback": False}, {"SKIP_GRAIN": "tensor"}),
    ("r0/b4/g0", {}, {"SKIP_GRAIN": "tensor"}),
    # no gradient pre-pass (skip_nonfinite=False, session 21): rank 0 steps every tensor unchecked
    ("r0/b8/g0", {"skip_nonfinite": False}, {}),
    ("r0/b8/g0", {"skip_nonfinite": False, "error_feedback": False}, {}),
    ("r0/b8/g0.5", {"skip_nonfinite": False}, {}),
    ("r0/b16/g0", {"skip_nonfinite": False}, {}),
    ("r0/b4/g0", {"skip_nonfinite": False}, {}),
    ("r0/b2/g0", {"skip_nonfinite": False}, {}),
    # the tile at rank 0 (session 39: the tune part put 512 values a program, one warp, no cap at 0.65x fused
    # AdamW for r0/b8 on an H100, where 256 was 0.78x): each width at 512 and 1024, capped as now and not
    ("r0/b8/g0", {}, {"MATRIX_TILE": 512}),
    ("r0/b8/g0", {}, {"MATRIX_TILE": 512, "MAX_REGS": 0}),
    ("r0/b8/g0", {}, {"MATRIX_TILE": 1024, "MAX_REGS": 0}),
    ("r0/b8/g0", {"error_feedback": False}, {"MATRIX_TILE": 512, "MAX_REGS": 0}),
    ("r0/b4/g0", {}, {"MATRIX_TILE": 512}),
    ("r0/b4/g0", {}, {"MATRIX_TILE": 512, "MAX_REGS": 0}),
    ("r0/b4/g0", {}, {"MATRIX_TILE": 1024, "MAX_REGS": 0}),
    ("r0/b4/g0", {"error_feedback": False}, {"MATRIX_TILE": 512, "MAX_REGS": 0}),
    ("r0/b4/g0", {"error_feedback": False}, {"MATRIX_TILE": 1024, "MAX_REGS": 0}),
    ("r0/b3/g0", {}, {"MATRIX_TILE": 512, "MAX_REGS": 0}),
    ("r0/b2/g0", {}, {"MATRIX_TILE": 512, "MAX_REGS": 0}),
    ("r0/b16/g0", {}, {}),
    ("r0/b16/g0", {}, {"MATRIX_TILE": 512, "MAX_REGS": 0}),
    ("r0/b32/g0", {}, {}),
    ("r0/b32/g0", {}, {"MATRIX_TILE": 512, "MAX_REGS": 0}),
    # the 8-bit tile as it would ship (fused.MATRIX_TILE_BY_BITS): rank 0, and the projected launches at 8
    # bits, which take the width's tile too
    ("r0/b8/g0", {}, {"MATRIX_TILE_BY_BITS": {8: (512, 0)}}),
    ("r0/b8/g0", {"error_feedback": False}, {"MATRIX_TILE_BY_BITS": {8: (512, 0)}}),
    ("r4/b8/g0", {}, {"MATRIX_TILE_BY_BITS": {8: (512, 0)}}),
    ("r64/b8/g0", {}, {"MATRIX_TILE_BY_BITS": {8: (512, 0)}}),
]


def optimizer_filters(text: str) -> list[str]:
    """``--optimizers``' strings: split at commas not followed by a space, so a variants row of two knobs,
    ``'SETTING|K1=V1, K2=V2'``, stays one string."""
    return [s.strip() for s in re.split(r",(?! )", text) if s.strip()]


def _keeps_variant(keep: list[str], label: str, variant: str) -> bool:
    """Whether ``--optimizers``' kept strings select a variants row: all when none, else one that is
    ``f"{label}|{variant}"`` exactly or, without a ``|``, a part of the label."""
    return not keep or any(x == f"{label}|{variant}" if "|" in x else x in label for x in keep)


def run_variants(args: GpuBenchArgs, out: Path, meta: dict[str, Any]) -> None:
    """What each option of the fused step costs: :data:`VARIANTS` against fused AdamW in the same run
    (amortized device time per step, refreshes included; :func:`host_ms`, the host's time to queue one)."""
    from client.compression import MangoAdamW
    from client.protocol import CompressionSetting

    params = model_with_gradients(args.model)
    energy = _Energy()
    adamw: dict[str, Any] = {"setting": "torch AdamW (fused)", "variant": ""}

    def adamw_time(step: Callable[[], Any]) -> float:
        adamw["step_ms"] = _amortized_ms(step, 100)
        adamw["host_ms"] = host_ms(step)
        adamw.update(_energy_row(step, energy, args.energy_window_s))
        return float(adamw["step_ms"])

    _fused_adamw_ms(params, adamw_time)
    rows: list[dict[str, Any]] = [adamw]
    keep = [x for x in OPTIMIZERS if not x.startswith("-")]
    for label, kw, knobs in VARIANTS:
        variant = ", ".join(f"{k}={v}" for k, v in {**kw, **knobs}.items())
        if not _keeps_variant(keep, label, variant):
            continue
        row: dict[str, Any] = {"setting": label, "variant": variant}
        try:
            with fused_knobs(knobs):
                s = CompressionSetting.parse(label)
                opt = MangoAdamW(params, lr=3e-4, weight_decay=0.1, setting=s, **kw)
                for _ in range(105):
                    opt.step()
                row["step_ms"] = _amortized_ms(opt.step, 100)
                row["host_ms"] = host_ms(opt.step)
                row.update(_energy_row(opt.step, energy, args.energy_window_s))
                del opt
        except Exception as exc:
            row["error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
            traceback.print_exc()
        rows.append(row)
        print(row, flush=True)
    _relative_to_adamw(rows, "step_ms", "vs_fused_adamw", name="setting")
    _relative_to_adamw(rows, "energy_mJ_per_step", "energy_vs_adamw", name="setting")
    cols = ["setting", "variant", "step_ms", "host_ms", "vs_fused_adamw", "energy_mJ_per_step"]
    cols.append("energy_vs_adamw")
    _write(out, "variants", rows, [*cols, "mean_power_W", "error"], meta)


@contextlib.contextmanager
def fused_knobs(knobs: dict[str, Any]) -> Iterator[None]:
    """:mod:`client.compression.fused`'s module knobs set to ``knobs`` inside the block, the old values put
    back after it (also when it raises)."""
    from client.compression import fused

    saved = {k: getattr(fused, k) for k in knobs}
    try:
        for k, v in knobs.items():
            setattr(fused, k, v)
        yield
    finally:
        for k, v in saved.items():
            setattr(fused, k, v)


#: Tiles of the projected launches swept by ``tune-proj``: (PROJ_BN, PROJ_BK, BACK_BM, BACK_BN, warps,
#: the projection's pipeline stages or None for Triton's default). The first row is the shipped one.
TUNE_PROJ: list[tuple[int, int, int, int, int, int | None]] = [
    (64, 32, 64, 128, 4, None), (64, 32, 64, 128, 4, 2), (64, 32, 64, 128, 4, 4), (64, 32, 64, 128, 4, 5),
    (64, 64, 64, 128, 4, 3), (64, 16, 64, 128, 4, 4), (128, 32, 64, 128, 8, None), (128, 32, 64, 128, 8, 4),
    (32, 64, 64, 128, 4, None), (64, 32, 64, 64, 4, None), (64, 32, 128, 128, 8, None),
    (64, 32, 32, 128, 4, None), (64, 32, 64, 256, 8, None),
]  # fmt: skip


def run_tune_proj(args: GpuBenchArgs, out: Path, meta: dict[str, Any]) -> None:
    """Sweep the projected launches' tiles on the step part's model (no refresh inside the timed steps)."""
    from client.compression import MangoAdamW
    from client.protocol import CompressionSetting

    rows: list[dict[str, Any]] = []
    params = model_with_gradients(args.model)
    adamw_ms = _fused_adamw_ms(params, lambda step: _amortized_ms(step, 50), warmup=5)
    names = ("PROJ_BN", "PROJ_BK", "BACK_BM", "BACK_BN", "PROJ_WARPS", "PROJ_STAGES")
    for r in (8, 64):
        for cfg in TUNE_PROJ:
            s = CompressionSetting(rank=r, bits=8)
            try:
                with fused_knobs(dict(zip(names, cfg, strict=True))):
                    opt = MangoAdamW(params, lr=3e-4, weight_decay=0.1, setting=s, refresh_every=10**6)
                    for _ in range(5):
                        opt.step()
                    ms = _amortized_ms(opt.step, 50)
                    del opt
                row = {
                    "setting": s.label(),
                    "proj_bn_bk": f"{cfg[0]}x{cfg[1]}",
                    "back_bm_bn": f"{cfg[2]}x{cfg[3]}",
                }
                row.update(warps=cfg[4], stages=cfg[5] or "default")
                rows.append({**row, "step_ms": ms, "vs_fused_adamw": ms / adamw_ms})
            except Exception as exc:
                rows.append(
                    {"setting": s.label(), "proj_bn_bk": str(cfg), "error": f"{type(exc).__name__}: {exc}"}
                )
            print(rows[-1], flush=True)
    cols = ["setting", "proj_bn_bk", "back_bm_bn", "warps", "stages", "step_ms", "vs_fused_adamw", "error"]
    _write(out, "tune-proj", rows, cols, meta)


def run_profile(args: GpuBenchArgs, out: Path, meta: dict[str, Any]) -> None:
    """Where a step goes: host time per call (no sync), device time per step, per-kernel device time."""
    from torch.profiler import ProfilerActivity, profile

    rows: list[dict[str, Any]] = []
    params = model_with_gradients(args.model)
    for name, fac in _optimizer_factories().items():
        opt = fac(params)
        for _ in range(105 if "Mango" in name else 5):
            opt.step()
        _sync()
        t0 = time.perf_counter()
        for _ in range(20):
            opt.step()
        host_ms = (time.perf_counter() - t0) / 20 * 1000  # launches queued, not waited for
        _sync()
        device_ms = _time_ms(opt.step, reps=args.step_iters)
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(10):
                opt.step()
            _sync()
        kernels = sorted(
            ((e.key, e.device_time_total / 10 / 1000) for e in prof.key_averages()), key=lambda kv: -kv[1]
        )
        if "Mango" in name:  # where the host time goes (printed to the log)
            import cProfile
            import io
            import pstats

            cp = cProfile.Profile()
            cp.enable()
            for _ in range(50):
                opt.step()
            cp.disable()
            _sync()
            buf = io.StringIO()
            pstats.Stats(cp, stream=buf).sort_stats("tottime").print_stats(14)
            print(f"--- host profile of 50 steps: {name}\n{buf.getvalue()}", flush=True)
        busy = sum(ms for _, ms in kernels)
        top = "; ".join(f"{k[:40]} {ms:.3f}" for k, ms in kernels[:4])
        rows.append(
            {"optimizer": name, "host_ms": host_ms, "step_ms": device_ms, "gpu_busy_ms": busy, "top": top}
        )
        print(rows[-1], flush=True)
        del opt
    _write(out, "profile", rows, ["optimizer", "host_ms", "step_ms", "gpu_busy_ms", "top"], meta)


def run_converge(args: GpuBenchArgs, out: Path, meta: dict[str, Any]) -> None:
    from envs.data import load_corpus

    energy = _Energy()
    corpus = load_corpus()
    rows: list[dict[str, Any]] = []
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    runs = [(seed, name, fac) for seed in seeds for name, fac in _optimizer_factories().items()]
    for seed, name, fac in runs:
        row: dict[str, Any] = {"optimizer": name, "seed": seed, "steps": args.steps}
        try:
            torch.cuda.empty_cache()
            model = _gpt(256, args.seq, seed=seed)
            params = [p for p in model.parameters() if p.requires_grad]
            opt = fac(params)
            gen = torch.Generator().manual_seed(seed)
            sched = torch.optim.lr_scheduler.LambdaLR(
                opt, lambda s: min(1.0, (s + 1) / 50) * 0.5 * (1 + math.cos(math.pi * s / args.steps))
            )
            _sync()
            e0, t0 = energy.read_j(), time.perf_counter()
            for _ in range(args.steps):
                x, y = corpus.get_batch("train", args.batch, args.seq, gen)
                x, y = x.cuda(non_blocking=True), y.cuda(non_blocking=True)
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    loss = model.loss(x, y)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                opt.zero_grad(set_to_none=True)
                sched.step()
            _sync()
            e1, t1 = energy.read_j(), time.perf_counter()
            vgen = torch.Generator().manual_seed(123)
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
                vl = []
                for _ in range(20):
                    vx, vy = corpus.get_batch("val", args.batch, args.seq, vgen)
                    vl.append(float(model.loss(vx.cuda(), vy.cuda())))
            row["val_loss"] = sum(vl) / len(vl)
            row["state_bytes_per_param"] = _state_bytes(opt) / sum(p.numel() for p in params)
            row["wall_s"] = t1 - t0
            if e0 is not None and e1 is not None:
                row["energy_kJ"] = (e1 - e0) / 1000.0
            del opt, model, params
        except Exception as exc:
            row["error"] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
        rows.append(row)
        print(row, flush=True)
        _write_converge(out, rows, seeds, meta)  # after every run: a call cut short keeps what ran


def _write_converge(out: Path, rows: list[dict[str, Any]], seeds: range, meta: dict[str, Any]) -> None:
    """The convergence table of the runs so far: each seed's ratios to its AdamW run, and over two or more
    seeds the summary rows (:func:`seed_summary`)."""
    rows = [dict(r) for r in rows]
    for seed in seeds:
        _relative_to_adamw([r for r in rows if r["seed"] == seed], "val_loss", "loss_vs_adamw")
    rows += seed_summary(rows, "loss_vs_adamw") if len(seeds) > 1 else []
    cols = ["optimizer", "seed", "steps", "val_loss", "loss_vs_adamw", "ci95", "state_bytes_per_param"]
    _write(out, "converge", rows, [*cols, "energy_kJ", "wall_s", "error"], meta)


def seed_summary(rows: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """One row per optimizer over its seeds' rows: ``seed`` ``"mean (n)"``, the mean of ``key`` and the
    half-width ``ci95`` of its 95 % confidence interval (Student t; nan with one seed). Rows without ``key``
    (a failed run, or no AdamW row on that seed) are left out of the mean."""
    out: list[dict[str, Any]] = []
    for name in dict.fromkeys(r["optimizer"] for r in rows):
        vals = [float(r[key]) for r in rows if r["optimizer"] == name and key in r]
        if vals:
            mean, half = mean_ci(vals)
            out.append({"optimizer": name, "seed": f"mean ({len(vals)})", key: mean, "ci95": half})
    return out


#: Setting changes the ``switch`` part times: into and out of projection, across widths and gammas.
SWITCHES: list[tuple[str, str]] = [
    ("r0/b8/g0", "r4/b8/g0"), ("r4/b8/g0", "r64/b16/g0"), ("r64/b16/g0", "r0/b4/g1"),
    ("r0/b4/g1", "r0/b32/g0"), ("r0/b32/g0", "r16/b3/g0.75"), ("r16/b3/g0.75", "r0/b8/g0"),
]  # fmt: skip


def _train_step_ms(args: GpuBenchArgs) -> float:
    """Median time of one training step of the step part's model: forward and backward under bf16 autocast
    on ``--batch`` random sequences of ``--seq`` tokens, then a fused AdamW step. The unit a job pays a
    setting change in (the optimizer step alone is a small part of it)."""
    model = _gpt(50304, 1024, **MODELS[args.model])
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, fused=True)
    x = torch.randint(0, 50304, (args.batch, args.seq), device="cuda")

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model.loss(x, x)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return _time_ms(step, reps=10, warmup=3)


def _switch_row(change: str, reads: list[dict[str, float]], train_ms: float) -> dict[str, Any]:
    """One change's row of the switch part from its timed passes (medians; the slowest first step). The cost
    is the change and its first two steps (the second records the new plan's step graph) less two steady
    steps."""

    def med(key: str) -> float:
        return float(statistics.median(r[key] for r in reads))

    apply_ms, first_ms, second_ms, after_ms = med("apply"), med("first"), med("second"), med("after")
    cost_ms = apply_ms + first_ms + second_ms - 2 * after_ms
    return {
        "change": change,
        "apply_ms": apply_ms,
        "first_step_ms": first_ms,
        "first_step_max_ms": max(r["first"] for r in reads),
        "second_step_ms": second_ms,
        "step_ms_before": med("before"),
        "step_ms_after": after_ms,
        "cost_in_steps": cost_ms / max(after_ms, 1e-9),
        "train_step_ms": train_ms,
        "cost_in_train_steps": cost_ms / train_ms,
        "passes": len(reads),
    }


def run_switch(args: GpuBenchArgs, out: Path, meta: dict[str, Any]) -> None:
    """What a policy decision costs on the GPU: ``apply_setting`` (state conversion) plus the first step
    after it (plan rebuild, any kernel compile is excluded by a first untimed pass) and the second (the
    new plan's second steady step records its step graph, :mod:`client.compression.step_graph`), against
    a plain optimizer step (``cost_in_steps``) and against a whole training step of the same model at
    ``--batch`` x ``--seq`` tokens (``cost_in_train_steps``)."""
    from client.compression import MangoAdamW
    from client.protocol import CompressionSetting

    train_ms = _train_step_ms(args)
    torch.cuda.empty_cache()  # the training step's model and activations
    params = model_with_gradients(args.model)
    reads: dict[str, list[dict[str, float]]] = {f"{a} -> {b}": [] for a, b in SWITCHES}
    for timed in [False] + [True] * max(args.switch_repeats, 1):  # the first pass compiles every variant
        for a, b in SWITCHES:
            opt = MangoAdamW(params, lr=1e-4, setting=CompressionSetting.parse(a))
            for _ in range(5):
                opt.step()
            _sync()
            step_ms = _time_ms(opt.step, reps=10, warmup=2)
            t0 = time.perf_counter()
            opt.apply_setting(CompressionSetting.parse(b))
            _sync()
            apply_ms = (time.perf_counter() - t0) * 1000
            t0 = time.perf_counter()
            opt.step()
            _sync()
            first_ms = (time.perf_counter() - t0) * 1000
            t0 = time.perf_counter()
            opt.step()  # the new plan's second steady step: it records the step graph (step_graph.py)
            _sync()
            second_ms = (time.perf_counter() - t0) * 1000
            after_ms = _time_ms(opt.step, reps=10, warmup=2)
            if timed:
                read = {"apply": apply_ms, "first": first_ms, "second": second_ms, "before": step_ms}
                read["after"] = after_ms
                reads[f"{a} -> {b}"].append(read)
                print({"change": f"{a} -> {b}", **read}, flush=True)
            del opt
    rows = [_switch_row(change, rs, train_ms) for change, rs in reads.items()]
    cols = ["change", "apply_ms", "first_step_ms", "first_step_max_ms", "second_step_ms", "step_ms_before"]
    cols.append("step_ms_after")
    cols += ["cost_in_steps", "train_step_ms", "cost_in_train_steps", "passes"]
    _write(out, "switch", rows, cols, meta)


def main(argv: list[str]) -> int:
    args = tyro.cli(GpuBenchArgs, args=argv, prog="mango bench gpu", description=GpuBenchArgs.__doc__)
    if not torch.cuda.is_available():
        print("mango bench gpu: no CUDA device here; run it on the GPU machine (see BENCHMARKS.md).")
        return 0
    out = Path(args.out)
    meta = {
        "date": dt.date.today().isoformat(),
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "args": asdict(args),
    }
    print(json.dumps(meta), flush=True)
    parts = [s.strip() for s in args.parts.split(",") if s.strip()]
    OPTIMIZERS[:] = optimizer_filters(args.optimizers)
    runners = {
        "lowrank": run_lowrank,
        "step": run_step,
        "converge": run_converge,
        "tune": run_tune,
        "tune-proj": run_tune_proj,
        "profile": run_profile,
        "switch": run_switch,
        "variants": run_variants,
    }
    for part in parts:
        t0 = time.perf_counter()
        try:
            if part == "kernels":
                from benchmarks import kernels

                kernels.main([*args.kernel_args.split(), "--out", str(out / "kernels.json")])
            else:
                runners[part](args, out, meta)
        except Exception:
            traceback.print_exc()
        print(f"[{part}] {time.perf_counter() - t0:.1f} s", flush=True)
    return 0
