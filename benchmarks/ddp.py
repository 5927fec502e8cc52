"""`mango bench ddp`: DDP communication hooks compared on the same model, data and steps.

Two modes, one command each (everything else is a knob):

GPU (default; NCCL, one process per GPU)::

    python -m benchmarks.ddp --out results/ddp --nproc 2

  A GPT-2-small-sized byte-level LM (12 layers, 12 heads, width 768, vocab 256, block 256, random init; about
  85M parameters, since the byte vocabulary makes the embeddings tiny) trained on the Python-stdlib byte
  corpus (``envs.data``) under each configuration: no hook (plain DDP all-reduce), PowerSGD at ranks
  1, 2, 4, 8 (torch's hook with error feedback and warm start), and the MANGO hook at a grid of settings. Per
  configuration: bytes handed to the all-reduce per rank and step, step time, energy per step summed over
  every GPU (NVML's total-energy counter, over a window of at least ``--min-window-s``), the hook's own
  collective time (MANGO), and the validation loss after ``--steps`` steps.

CPU (``--cpu-gloo``; gloo, 2 processes, a tiny LM)::

    python -m benchmarks.ddp --cpu-gloo --out results/ddp-cpu --append BENCHMARKS.md

  Bits sent vs final loss for block-wise b-bit (the MANGO hook at ``rank=0``), SimQ+ and RATQ
  (``client.compression.unbiased``) at comparable bit budgets. SimQ+/RATQ codes are exact fixed-length codes
  (their round trip through bytes is tested); in this benchmark their decoded values travel as an fp32
  all-reduce and the "sent" column counts their code length, i.e. what an all-gather of the codes sends per
  rank at W = 2 (where all-gather and ring all-reduce send the same bytes per rank).

Launch: by default the command spawns the worker group itself and is fail-soft per configuration: an
exception becomes an error row; a hang or crash kills the group after ``--config-timeout-s``, records the
error and relaunches a fresh group for the remaining configurations. Under ``torchrun`` (``RANK`` set) it runs
every configuration in the launched group (errors are caught; a hang ends the run). NVLink multicast stays off
in everything it starts (``NCCL_NVLS_ENABLE=0``, ``TORCH_SYMM_MEM_DISABLE_MULTICAST=1``).

Outputs under ``--out``: ``<config>.json`` per configuration, ``summary.json`` and ``table.md``.
"""

# No `from __future__ import annotations`: DDP checks the hook's annotations against the real classes.
import datetime as dt
import json
import math
import os
import platform
import queue
import shlex
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

for _var, _val in (
    ("NCCL_NVLS_ENABLE", "0"),
    ("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1"),
    ("NVSHMEM_DISABLE_NVLS", "1"),
):
    os.environ[_var] = _val  # before torch/NCCL load, inherited by every process started from here

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import tyro  # noqa: E402
from torch.nn.parallel import DistributedDataParallel as DDP  # noqa: E402

from benchmarks.common import append_section  # noqa: E402

__all__ = ["DdpBenchArgs", "main"]


@dataclass
class DdpBenchArgs:
    """DDP communication hooks compared on one model (defaults fit ~8 min on 2 H200s; --cpu-gloo: CPU)."""

    out: str = "results/ddp"
    """output folder (JSON per configuration, summary.json, table.md)"""
    cpu_gloo: bool = False
    """the CPU mode: 2 gloo processes, tiny LM, bits vs loss for block-wise b-bit, SimQ+, RATQ"""
    nproc: int = 0
    """processes (GPUs); 0 = every visible GPU (2 in --cpu-gloo mode)"""
    steps: int = 200
    """training steps per configuration (the validation loss is taken after these)"""
    warmup: int = 10
    """steps before the timing / energy window opens (DDP's bucket rebuild, PowerSGD's start)"""
    min_window_s: float = 1.0
    """the timing/energy window is extended with extra steps (after the evaluation) to at least this"""
    batch_size: int = 16
    """sequences per rank and step"""
    seq_len: int = 256
    """bytes per sequence (<= the model's block size)"""
    n_layer: int = 12
    """transformer blocks"""
    n_head: int = 12
    """attention heads"""
    n_embd: int = 768
    """model width"""
    lr: float = 6e-4
    """AdamW learning rate (linear warm-up over the first 10% of steps)"""
    eval_batches: int = 8
    """validation batches per rank (the same for every configuration)"""
    corpus_bytes: int = 8_000_000
    """stdlib corpus size (train + val)"""
    configs: str = ""
    """comma-separated configuration names to run (default: all of the mode); see --list"""
    list: bool = False
    """print the configuration names of the mode and exit"""
    powersgd_ranks: str = "1,2,4,8"
    """PowerSGD ranks (GPU mode)"""
    mango: str = "r4/b8/g0,r4/b4/g0,r8/b4/g0,r4/b2/g0,r4/b4/g0.5,r1/b4/g0,r0/b8/g0,r0/b4/g0,r0/b2/g0"
    """MANGO hook settings, labels r<rank>/b<bits>/g<gamma> (GPU mode); r0/b32/g0 = the hook switched off"""
    config_timeout_s: float = 300.0
    """a configuration running longer than this is declared hung and its group killed (spawn mode)"""
    seed: int = 0
    """model init and data order"""
    append: str = ""
    """append the table with the command, machine and date to this markdown file (e.g. BENCHMARKS.md)"""


@dataclass(frozen=True)
class Config:
    """One row of the comparison."""

    name: str
    kind: str  # "none" | "powersgd" | "mango" | "simq" | "ratq"
    rank: int = 0
    bits: int = 32
    gamma: float = 0.0
    error_feedback: bool = True
    budget: float = 0.0  # SimQ+: target code bits per coordinate


def _parse_label(label: str) -> tuple[int, int, float]:
    from client.protocol import CompressionSetting  # imported late, like the rest of client here

    s = CompressionSetting.parse(label)
    return s.rank, s.bits, s.gamma


def configs_for(args: DdpBenchArgs) -> list[Config]:
    """The configurations of the mode, filtered by ``--configs``."""
    if args.cpu_gloo:
        out = [
            Config("dense-fp32", "none"),
            Config("blockwise-b8-ef", "mango", bits=8),
            Config("blockwise-b4-ef", "mango", bits=4),
            Config("blockwise-b4", "mango", bits=4, error_feedback=False),
            Config("blockwise-b2-ef", "mango", bits=2),
            Config("blockwise-b2", "mango", bits=2, error_feedback=False),
            Config("ratq-b3", "ratq", bits=3),
            Config("ratq-b2", "ratq", bits=2),
            Config("simq+-4.5", "simq", budget=4.5),
            Config("simq+-2.5", "simq", budget=2.5),
        ]
    else:
        out = [Config("no-hook", "none")]
        out += [
            Config(f"powersgd-r{r}", "powersgd", rank=int(r)) for r in args.powersgd_ranks.split(",") if r
        ]
        for label in (x for x in args.mango.split(",") if x.strip()):
            r, b, g = _parse_label(label)
            out.append(Config(f"mango-r{r}-b{b}-g{g:g}", "mango", rank=r, bits=b, gamma=g))
    if args.configs:
        wanted = [c.strip() for c in args.configs.split(",") if c.strip()]
        unknown = sorted(set(wanted) - {c.name for c in out})
        if unknown:
            raise ValueError(f"unknown configurations {unknown}; choose from {[c.name for c in out]}")
        out = [c for c in out if c.name in wanted]
    return out


# ------------------------------------------------------------------------------ SimQ+ / RATQ as a hook
class UnbiasedHookState:
    """Per-tensor SimQ+ or RATQ on each bucket; counts the exact code bits this rank would send."""

    def __init__(self, kind: str, bits: int, budget: float, seed: int) -> None:
        self.kind, self.bits, self.budget = kind, bits, budget
        self.gen = torch.Generator().manual_seed(seed)
        self.total_bits = 0
        self._k: dict[int, int] = {}

    def k_for(self, d: int) -> int:
        """SimQ+ draws whose exact code length is closest to ``budget * d`` bits (bisection, cached)."""
        from client.compression.unbiased import simq_plus_bits

        if d not in self._k:
            lo, hi = 1, max(1, int(4 * self.budget * d))
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if simq_plus_bits(d, mid) <= self.budget * d:
                    lo = mid
                else:
                    hi = mid - 1
            self._k[d] = lo
        return self._k[d]


def unbiased_hook(state: UnbiasedHookState, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    from client.compression.unbiased import ratq_decode, ratq_encode, simq_plus_decode, simq_plus_encode

    buf = bucket.buffer()
    out = torch.empty_like(buf)
    off = 0
    for p in bucket.parameters():
        n = p.numel()
        y = buf[off : off + n]
        if state.kind == "simq":
            code: Any = simq_plus_encode(y, state.k_for(n), generator=state.gen)
            out[off : off + n] = simq_plus_decode(code, buf.device)
        else:
            code = ratq_encode(y, state.bits, generator=state.gen)
            out[off : off + n] = ratq_decode(code, buf.device)
        state.total_bits += code.bits
        off += n
    out.mul_(1.0 / dist.get_world_size())
    dist.all_reduce(out)  # transport simulated with decoded values; the bits counted are the codes'
    buf.copy_(out)
    fut: torch.futures.Future[torch.Tensor] = torch.futures.Future()
    fut.set_result(buf)
    return fut


# -------------------------------------------------------------------------------------------- worker
def _nvml_index(local_rank: int) -> int:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    ids = [v.strip() for v in visible.split(",") if v.strip()]
    if ids and all(v.isdigit() for v in ids) and local_rank < len(ids):
        return int(ids[local_rank])
    return local_rank


class _Window:
    """Wall time and NVML energy over one or more stretches of steps (paused for evaluation)."""

    def __init__(self, device: torch.device, local_rank: int) -> None:
        self.device = device
        self.time_s = 0.0
        self.energy_j: float | None = None
        self.steps = 0
        self.coarse = False
        self._t0 = 0.0
        self.meter: Any = None
        self.error = ""
        if device.type == "cuda":
            try:
                from client.telemetry.energy import NvmlMeter

                self.meter = NvmlMeter(_nvml_index(local_rank))
                self.energy_j = 0.0
            except Exception as exc:  # no NVML: time only, and say so in the row
                self.error = f"{type(exc).__name__}: {exc}"

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def start(self) -> None:
        self._sync()
        if self.meter is not None:
            self.meter.begin()
        self._t0 = time.perf_counter()

    def stop(self, steps: int) -> None:
        self._sync()
        self.time_s += time.perf_counter() - self._t0
        self.steps += steps
        if self.meter is not None and self.energy_j is not None:
            reading = self.meter.end(steps=steps)
            self.energy_j += reading.energy_j
            self.coarse = self.coarse or reading.coarse

    def close(self) -> None:
        if self.meter is not None:
            self.meter.close()
            self.meter = None


def _setup_model(args: DdpBenchArgs, device: torch.device) -> torch.nn.Module:
    from envs.models import ByteGPT, GPTConfig

    cfg = GPTConfig(
        vocab_size=256,
        n_layer=args.n_layer,
        n_head=args.n_head,
        n_embd=args.n_embd,
        block_size=args.seq_len,
        dropout=0.0,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        model = ByteGPT(cfg)
    return model.to(device)


def _run_config(
    cfg: Config, args: DdpBenchArgs, corpus: Any, device: torch.device, local_rank: int
) -> dict[str, Any]:
    from client.compression.comm_hook import MangoHookState, mango_comm_hook
    from client.protocol import CompressionSetting

    rank, world = dist.get_rank(), dist.get_world_size()
    model = _setup_model(args, device)
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    ddp = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    state: Any = None
    if cfg.kind == "mango":
        setting = CompressionSetting(rank=cfg.rank, bits=cfg.bits, gamma=cfg.gamma)
        state = MangoHookState(
            setting=setting, module=model, error_feedback=cfg.error_feedback, seed=args.seed
        )
        ddp.register_comm_hook(state, mango_comm_hook)
    elif cfg.kind == "powersgd":
        from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as psgd

        state = psgd.PowerSGDState(
            process_group=None, matrix_approximation_rank=cfg.rank, start_powerSGD_iter=2, warm_start=True
        )
        ddp.register_comm_hook(state, psgd.powerSGD_hook)
    elif cfg.kind in ("simq", "ratq"):
        state = UnbiasedHookState(cfg.kind, cfg.bits, cfg.budget, seed=args.seed * 1000 + rank + 1)
        ddp.register_comm_hook(state, unbiased_hook)
    fused = device.type == "cuda"
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1, fused=fused)
    warm_lr = max(1, args.steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm_lr))
    gen = torch.Generator().manual_seed(args.seed * 7919 + rank)
    amp = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device.type == "cuda"
        else torch.autocast("cpu", enabled=False)
    )

    def step() -> float:
        x, y = corpus.get_batch("train", args.batch_size, args.seq_len, gen)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        opt.zero_grad(set_to_none=True)
        with amp:
            logits = ddp(x)  # (B, T, 256), through DDP so its hooks fire
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), y.reshape(-1))
        loss.backward()
        opt.step()
        sched.step()
        return float(loss.detach()) if device.type == "cpu" else 0.0

    def counter() -> float:
        if cfg.kind == "mango":
            state.stats()  # resolves the finished steps into the totals
            return float(state.total_comm_bytes)
        if cfg.kind == "powersgd":
            return 4.0 * state.total_numel_after_compression
        if cfg.kind in ("simq", "ratq"):
            return state.total_bits / 8.0
        return 0.0

    window = _Window(device, local_rank)
    losses: list[float] = []
    for _ in range(args.warmup):
        losses.append(step())
    c0 = counter()
    comm0 = state.total_comm_time_s if cfg.kind == "mango" else 0.0
    window.start()
    for _ in range(args.steps - args.warmup):
        losses.append(step())
    window.stop(args.steps - args.warmup)
    bytes_in_window = counter() - c0
    steps_in_window = window.steps
    hook_stats = state.stats() if cfg.kind == "mango" else {}
    comm_s = (state.total_comm_time_s - comm0) / max(steps_in_window, 1) if cfg.kind == "mango" else None
    # evaluation after exactly `steps` steps, on the same validation batches for every configuration
    model.eval()
    lm: Any = model
    vgen = torch.Generator().manual_seed(10_000 + rank)
    tot = torch.zeros(2, dtype=torch.float64, device=device)
    with torch.no_grad():
        for _ in range(args.eval_batches):
            x, y = corpus.get_batch("val", args.batch_size, args.seq_len, vgen)
            with amp:
                tot[0] += float(lm.loss(x.to(device), y.to(device)))
            tot[1] += 1
    dist.all_reduce(tot)
    val_loss = float(tot[0] / tot[1])
    model.train()
    extra = 0
    if window.time_s < args.min_window_s and window.steps > 0:  # extend the timing window (loss is taken)
        per = window.time_s / window.steps
        extra = max(1, math.ceil((args.min_window_s - window.time_s) / max(per, 1e-4) * 1.1))
    agreed = torch.tensor([float(extra)], device=device)
    dist.all_reduce(agreed, op=dist.ReduceOp.MAX)  # every rank must run the same number of steps
    extra = int(agreed.item())
    if extra > 0:
        window.start()
        for _ in range(extra):
            step()
        window.stop(extra)
    agg = torch.tensor(
        [window.time_s, window.energy_j if window.energy_j is not None else -1.0, float(window.coarse)],
        dtype=torch.float64,
        device=device,
    )
    window.close()
    times = [torch.zeros_like(agg) for _ in range(world)]
    dist.all_gather(times, agg)
    step_time_s = max(float(t[0]) for t in times) / window.steps
    energies = [float(t[1]) for t in times]
    energy_per_step = sum(energies) / window.steps if all(e >= 0 for e in energies) else None
    # plain DDP all-reduces every fp32 gradient once
    bytes_per_step = 4.0 * n_params if cfg.kind == "none" else bytes_in_window / max(steps_in_window, 1)
    row: dict[str, Any] = {
        "config": cfg.name,
        "kind": cfg.kind,
        "setting": {"rank": cfg.rank, "bits": cfg.bits, "gamma": cfg.gamma, "ef": cfg.error_feedback},
        "world_size": world,
        "params": n_params,
        "steps": args.steps,
        "bytes_per_step": bytes_per_step,
        "bits_per_param": 8.0 * bytes_per_step / n_params,
        "compression_ratio": 4.0 * n_params / bytes_per_step if bytes_per_step else None,
        "step_time_s": step_time_s,
        "energy_j_per_step": energy_per_step,
        "energy_source": "nvml" if energy_per_step is not None else None,
        "energy_coarse": bool(any(float(t[2]) for t in times)),
        "energy_error": window.error or None,
        "window_s": max(float(t[0]) for t in times),
        "window_steps": window.steps,
        "val_loss": val_loss,
        "train_loss_last": losses[-1] if losses and device.type == "cpu" else None,
    }
    if cfg.kind == "mango":
        row["hook_comm_time_s_per_step"] = comm_s  # CUDA events around the hook's collectives, mean
        row["hook_compression_error"] = hook_stats.get("compression_error")
        row["code_bits_per_param"] = _mango_code_bits(cfg)
    if cfg.kind in ("simq", "ratq"):
        row["code_bits_per_param"] = row["bits_per_param"]
        row["transport"] = "simulated: decoded fp32 all-reduce; bytes = exact code length (all-gather at W=2)"
    if cfg.kind == "powersgd":
        row["code_bits_per_param"] = row["bits_per_param"]
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def _mango_code_bits(cfg: Config) -> float | None:
    """Code bits per parameter before the all-reduce headroom (``rank=0`` only: b + 32 / block)."""
    if cfg.rank != 0:
        return None
    if cfg.bits >= 16:
        return float(cfg.bits)
    return cfg.bits + 32.0 / (256 if cfg.bits == 8 else 64)


def _worker(
    local_rank: int, args: DdpBenchArgs, cfgs: list[Config], world: int, store: str, results: Any
) -> None:
    """One rank of a spawned group: run ``cfgs`` in order, report each to the parent through ``results``."""
    try:
        cuda = not args.cpu_gloo
        if cuda:
            torch.cuda.set_device(local_rank)
            device = torch.device("cuda", local_rank)
        else:
            torch.set_num_threads(1)
            device = torch.device("cpu")
        dist.init_process_group(
            "nccl" if cuda else "gloo",
            store=dist.FileStore(store, world),
            rank=local_rank,
            world_size=world,
            timeout=dt.timedelta(seconds=max(60.0, args.config_timeout_s / 2)),
        )
    except Exception:
        results.put(("fatal", local_rank, traceback.format_exc()))
        return
    try:
        _run_all(args, cfgs, device, local_rank, results)
    finally:
        dist.destroy_process_group()


def _run_all(
    args: DdpBenchArgs, cfgs: list[Config], device: torch.device, local_rank: int, results: Any
) -> None:
    from envs.data import load_corpus

    rank = dist.get_rank()
    corpus = load_corpus(max_bytes=args.corpus_bytes) if rank == 0 else None
    dist.barrier()  # rank 0 built the cache; the others read it
    if corpus is None:
        corpus = load_corpus(max_bytes=args.corpus_bytes)
    for cfg in cfgs:
        if rank == 0 and results is not None:
            results.put(("start", cfg.name, None))
        row, err = None, ""
        try:
            row = _run_config(cfg, args, corpus, device, local_rank)
        except Exception as exc:
            err = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
        failed = torch.tensor([0.0 if row is not None else 1.0], device=device)
        dist.all_reduce(failed)  # every rank agrees whether the configuration failed
        if failed.item() > 0:
            row = {"config": cfg.name, "kind": cfg.kind, "error": err or "failed on another rank"}
        if rank == 0 and row is not None:
            if results is not None:
                results.put(("row", cfg.name, row))
            else:
                _write_row(Path(args.out), row)
                print(_format_row(row), flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------------- launcher
def _write_row(out: Path, row: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{row['config']}.json").write_text(json.dumps(row, indent=2))


def _launch_spawned(args: DdpBenchArgs, cfgs: list[Config], world: int) -> list[dict[str, Any]]:
    """Run ``cfgs`` in spawned groups, relaunching after a hang or crash; returns one row per config."""
    ctx = mp.get_context("spawn")
    out = Path(args.out)
    rows: dict[str, dict[str, Any]] = {}
    remaining = list(cfgs)
    while remaining:
        store = tempfile.mktemp(prefix="mango-ddp-store-")
        results = ctx.Queue()
        procs = [
            ctx.Process(target=_worker, args=(r, args, remaining, world, store, results))
            for r in range(world)
        ]
        for p in procs:
            p.start()
        current: str | None = None
        deadline = time.monotonic() + args.config_timeout_s + 120.0  # + start-up (imports, corpus, NCCL)
        broken = ""
        while remaining and not broken:
            try:
                msg = results.get(timeout=5.0)
            except queue.Empty:
                if time.monotonic() > deadline:
                    broken = f"no progress within {args.config_timeout_s:.0f} s (hung)"
                elif not all(p.is_alive() for p in procs):
                    time.sleep(2.0)  # let a final message arrive
                    if results.empty():
                        codes = [p.exitcode for p in procs]
                        broken = f"a worker exited (exit codes {codes})"
                continue
            kind, name, payload = msg
            if kind == "fatal":
                broken = f"rank {name} could not start: {payload.strip().splitlines()[-1]}"
            elif kind == "start":
                current = name
                deadline = time.monotonic() + args.config_timeout_s
            elif kind == "row":
                rows[name] = payload
                _write_row(out, payload)
                print(_format_row(payload), flush=True)
                remaining = [c for c in remaining if c.name != name]
                current = None
        for p in procs:
            if p.is_alive():
                p.kill()
            p.join(timeout=10)
        if os.path.exists(store):
            os.remove(store)
        if broken:
            victim = current or remaining[0].name
            row = {
                "config": victim,
                "kind": next(c.kind for c in remaining if c.name == victim),
                "error": broken,
            }
            rows[victim] = row
            _write_row(out, row)
            print(_format_row(row), flush=True)
            remaining = [c for c in remaining if c.name != victim]
    return [rows[c.name] for c in cfgs if c.name in rows]


# ---------------------------------------------------------------------------------------------- table
def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _format_row(row: dict[str, Any]) -> str:
    if "error" in row:
        return f"{row['config']:<22} ERROR {row['error']}"
    return (
        f"{row['config']:<22} {row['bits_per_param']:8.3f} bits/param  "
        f"{row['step_time_s'] * 1e3:8.1f} ms/step  "
        f"{_fmt(row.get('energy_j_per_step'), '8.2f')} J/step  val {row['val_loss']:.4f}"
    )


def table(rows: list[dict[str, Any]], cpu: bool) -> str:
    """Markdown table of the rows."""
    if cpu:
        head = (
            "| config | code bits/param | sent bits/param | x fewer bytes than fp32 | ms/step "
            "| final val loss |\n"
            "| --- | ---: | ---: | ---: | ---: | ---: |"
        )
    else:
        head = (
            "| config | MB/step/rank | bits/param | x fewer bytes | ms/step | hook comm ms/step "
            "| J/step (all GPUs) "
            "| val loss |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        )
    lines = [head]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['config']} | error: {r['error']} |")
            continue
        ratio = _fmt(r.get("compression_ratio"), ".1f")
        if cpu:
            lines.append(
                f"| {r['config']} | {_fmt(r.get('code_bits_per_param'), '.2f')} | "
                f"{r['bits_per_param']:.2f} | "
                f"{ratio} | {r['step_time_s'] * 1e3:.1f} | {r['val_loss']:.4f} |"
            )
        else:
            comm = r.get("hook_comm_time_s_per_step")
            lines.append(
                f"| {r['config']} | {r['bytes_per_step'] / 1e6:.2f} | {r['bits_per_param']:.3f} | {ratio} | "
                f"{r['step_time_s'] * 1e3:.1f} | {_fmt(comm * 1e3 if comm is not None else None, '.2f')} | "
                f"{_fmt(r.get('energy_j_per_step'), '.2f')}{'*' if r.get('energy_coarse') else ''} | "
                f"{r['val_loss']:.4f} |"
            )
    return "\n".join(lines)


def notes(args: DdpBenchArgs, rows: list[dict[str, Any]]) -> str:
    """What the table's numbers are (goes above the table in BENCHMARKS.md)."""
    params = next((r["params"] for r in rows if "params" in r), 0)
    model = (
        f"ByteGPT {args.n_layer} layers x {args.n_embd} wide, vocab 256 ({params / 1e6:.2f} M parameters); "
        f"batch {args.batch_size} x {args.seq_len} bytes per rank; AdamW lr {args.lr:g} (10 % warm-up); "
        f"{args.steps} steps, one seed ({args.seed}); val loss on {args.eval_batches} fixed batches per rank."
    )
    if args.cpu_gloo:
        return (
            f"{model} Code bits/param: the information sent (block-wise: b + 32 / block; SimQ+ / RATQ: their "
            "exact fixed-length code, radius included). Sent bits/param: what each rank hands to the "
            "collective (block-wise: the MANGO hook's int64 fields with all-reduce headroom + shared scales; "
            "SimQ+ / RATQ: their code length: here the decoded values travel as fp32 (a simulation), the "
            "figure is what an all-gather of the codes sends per rank at W = 2). `-ef`: error feedback on."
        )
    return (
        f"{model} MB/step/rank: payload each rank hands to the all-reduce per step (no hook: 4 bytes per "
        "parameter). J/step: NVML total-energy counter summed over every GPU over the timed window (after "
        f"{args.warmup} warm-up steps, >= {args.min_window_s:g} s), per step; `*` marks a coarse window. "
        "Hook comm: CUDA-event time around the MANGO hook's collectives (includes waiting for the other "
        "rank). mango-r0-b32-g0 is the hook switched off (it must match no-hook's loss exactly)."
    )


def _machine() -> str:
    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        return f"{n}x {torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    return f"{cpu} CPU ({os.cpu_count()} cores), torch {torch.__version__}"


def _apply_mode_defaults(args: DdpBenchArgs, given: set[str]) -> None:
    """CPU mode: a tiny LM and short runs unless the knob was given explicitly."""
    if not args.cpu_gloo:
        return
    small = {
        "steps": 100,
        "warmup": 5,
        "batch_size": 16,
        "seq_len": 64,
        "n_layer": 2,
        "n_head": 2,
        "n_embd": 64,
        "lr": 1e-3,
        "eval_batches": 16,
        "corpus_bytes": 1_000_000,
        "config_timeout_s": 150.0,
    }
    for k, v in small.items():
        if k not in given:
            setattr(args, k, v)


def parse(argv: list[str]) -> DdpBenchArgs:
    """Parse ``argv`` into :class:`DdpBenchArgs` (mode defaults applied)."""
    d = DdpBenchArgs()
    args = tyro.cli(DdpBenchArgs, args=argv, prog="mango bench ddp", description=DdpBenchArgs.__doc__)
    given = {f.name for f in fields(d) if getattr(args, f.name) != getattr(d, f.name)}
    _apply_mode_defaults(args, given)
    if args.warmup >= args.steps:
        raise SystemExit(f"--warmup {args.warmup} must be below --steps {args.steps}")
    return args


def main(argv: list[str]) -> int:
    args = parse(argv)
    cfgs = configs_for(args)
    if args.list:
        print("\n".join(c.name for c in cfgs))
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now(dt.UTC)
    torchrun = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    if torchrun:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        cuda = not args.cpu_gloo
        if cuda:
            torch.cuda.set_device(local)
        else:
            torch.set_num_threads(1)
        dist.init_process_group("nccl" if cuda else "gloo")
        device = torch.device("cuda", local) if cuda else torch.device("cpu")
        try:
            _run_all(args, cfgs, device, local, None)
        finally:
            world = dist.get_world_size()
            dist.destroy_process_group()
        if int(os.environ["RANK"]) != 0:
            return 0
        rows = [
            json.loads((out / f"{c.name}.json").read_text())
            for c in cfgs
            if (out / f"{c.name}.json").exists()
        ]
    else:
        if args.cpu_gloo:
            world = args.nproc or 2
        else:
            if not torch.cuda.is_available():
                print(
                    "mango bench ddp: no CUDA device here; use --cpu-gloo on CPU (see the module docstring)."
                )
                return 0
            world = args.nproc or torch.cuda.device_count()
        print(f"mango bench ddp: {len(cfgs)} configurations on {world} ranks ({_machine()})", flush=True)
        rows = _launch_spawned(args, cfgs, world)
    elapsed = (dt.datetime.now(dt.UTC) - started).total_seconds()
    md = table(rows, args.cpu_gloo)
    command = shlex.join(["python", "-m", "benchmarks.ddp", *argv])
    meta = {
        "command": command,
        "machine": _machine(),
        "world_size": world,
        "date_utc": started.strftime("%Y-%m-%d %H:%M UTC"),
        "elapsed_s": elapsed,
        "args": asdict(args),
    }
    (out / "summary.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    (out / "table.md").write_text(md + "\n")
    print()
    print(md)
    print(f"\n{len(rows)} rows in {elapsed:.0f} s; JSON under {out}/")
    if args.append:
        append_section(
            f"DDP hooks: {'bits vs loss (CPU, gloo)' if args.cpu_gloo else 'GPU (NCCL)'}",
            command,
            f"{notes(args, rows)}\n\n{md}",
            machine=f"{meta['machine']}, {world} ranks",
            details=[f"wall time {elapsed:.0f} s"],
            when=started,
            path=args.append,
        )
    return 0 if rows and all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
