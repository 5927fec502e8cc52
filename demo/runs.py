"""The three runs of the job: the same model, batches and schedule under AdamW, a static and an adaptive
setting, summarized per control interval as :class:`Point` and per run as :class:`RunResult`."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from client.compression import MangoAdamW
from client.controllers import FIRST_CANDIDATES, Schedule, ScheduleController, StaticController
from client.hook import AdaptiveCompression
from client.profile import job_profile, profile_log, reference_adamw
from client.protocol import CompressionSetting, Objective, TelemetryRecord
from client.telemetry import EnergyMeter, ModelledMeter, make_energy_meter, optimizer_state_bytes
from demo.args import DemoArgs
from envs.data import ByteCorpus
from envs.models import ByteGPT, build_model
from envs.workloads import schedule_lr
from policy_service.launch import ServiceProcess

__all__ = ["Point", "RunResult", "lr_at", "train_run"]

log = logging.getLogger(__name__)


@dataclass
class Point:
    """One control interval of a run (what the report plots)."""

    step: int
    loss: float  # mean training loss over the interval
    state_bytes: int
    energy_j: float  # this interval
    interval_s: float
    setting: str  # label in force during the interval ("adamw" for plain AdamW)
    rank: int | None
    bits: int | None
    gamma: float | None


@dataclass
class RunResult:
    """One of the three runs, summarized."""

    name: str
    label: str
    final_val_loss: float
    state_bytes: int
    n_params: int
    energy_j: float
    energy_source: str
    wall_s: float
    decisions: int | None = None
    fallbacks: int | None = None
    setting_changes: int | None = None
    policies: dict[str, int] = field(default_factory=dict)
    client: dict[str, int] = field(default_factory=dict)
    points: list[Point] = field(default_factory=list)

    @property
    def state_bytes_per_param(self) -> float:
        return self.state_bytes / max(self.n_params, 1)

    def mean_state_bytes_per_param(self) -> float:
        if not self.points:
            return self.state_bytes_per_param
        return sum(p.state_bytes for p in self.points) / len(self.points) / max(self.n_params, 1)

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["state_bytes_per_param"] = self.state_bytes_per_param
        d["mean_state_bytes_per_param"] = self.mean_state_bytes_per_param()
        return d


def _job_profile(
    args: DemoArgs, params: list[torch.nn.Parameter], corpus: ByteCorpus, device: torch.device
) -> Any:
    """This job's hardware cost profile (``mango profile``, cached per device and model), or ``None``.

    With its training step timed on a scratch copy of the model (same shapes, plain AdamW, the job's batch
    size), so the profile carries the optimizer's share of a step from the start: without it the first
    windows read ``has_share = 0`` and the first decision ranks settings by an assumed share.
    """
    try:
        scratch = build_model(args.model, args.seed).to(device)
        assert isinstance(scratch, ByteGPT)
        opt = reference_adamw(scratch.parameters(), lr=args.lr, weight_decay=args.weight_decay)
        gen = torch.Generator().manual_seed(args.seed + 2)
        return job_profile(params, train_step=lambda: _train_step(args, scratch, opt, corpus, gen, device))
    except Exception as exc:  # a profile is advice: the demo runs without one
        log.warning("no cost profile for the adaptive run: %s", exc)
        return None


def _energy_meter(device: torch.device, flops_per_step: float, bytes_per_step: float) -> EnergyMeter:
    """NVML / Zeus on a GPU; on the CPU the model (a GPU meter would measure an idle GPU, not this job)."""
    if device.type == "cuda":
        return make_energy_meter(
            "auto", device.index or 0, flops_per_step=flops_per_step, bytes_per_step=bytes_per_step
        )
    return ModelledMeter(flops_per_step, bytes_per_step)


def lr_at(args: DemoArgs, step: int) -> float:
    """Linear warm-up to ``lr``, then cosine decay to 10 % of it at the last step."""
    return schedule_lr(args.lr, step, total=args.steps, warmup_steps=args.warmup_steps, schedule="cosine")


class _Display:
    """A tqdm bar with a live postfix, or one printed line per interval (``--no-progress``)."""

    def __init__(self, args: DemoArgs, desc: str) -> None:
        self.desc = desc
        self.bar: Any = None
        if args.progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=args.steps, desc=f"{desc:<22}", unit="step", dynamic_ncols=True, leave=True)

    def update(self, n: int, p: Point, n_params: int, energy_j: float, source: str) -> None:
        line = (
            f"{p.setting:<13} loss {p.loss:.3f}  state {p.state_bytes / n_params:.2f} B/param  "
            f"energy {energy_j:,.0f} J ({source})"
        )
        if self.bar is not None:
            self.bar.update(n)
            self.bar.set_postfix_str(line, refresh=True)
        else:
            print(f"  [{self.desc}] step {p.step:>5}  {line}", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _point_from_record(rec: Any) -> Point:
    s = rec.setting
    return Point(
        rec.step, rec.loss, rec.state_bytes, rec.energy_j, rec.interval_s, s.label(), s.rank, s.bits, s.gamma
    )


def _train_step(
    args: DemoArgs,
    model: ByteGPT,
    opt: torch.optim.Optimizer,
    corpus: ByteCorpus,
    gen: torch.Generator,
    device: torch.device,
) -> torch.Tensor:
    """One optimizer step on the next training batch of ``gen``; returns the (undetached) loss."""
    x, y = corpus.get_batch("train", args.batch_size, args.seq_len, gen)
    loss = model.loss(x.to(device), y.to(device))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss


def warm_up(
    args: DemoArgs,
    corpus: ByteCorpus,
    device: torch.device,
    static: CompressionSetting | Sequence[CompressionSetting],
    steps: int = 3,
) -> float:
    """Untimed steps of every optimizer a timed run starts with (AdamW; MangoAdamW at each static setting and
    at each setting the adaptive run can open with, :data:`client.controllers.FIRST_CANDIDATES`), so
    that no timed run pays the fused kernels' one-time compilation (without it the process's first run, the
    adaptive one, did: BENCHMARKS.md, session 11). Only on CUDA (the CPU path compiles nothing); returns the
    seconds spent."""
    if device.type != "cuda":
        return 0.0
    t0 = time.perf_counter()
    model = build_model(args.model, args.seed).to(device)
    assert isinstance(model, ByteGPT)  # check() admits LM presets only
    params = [p for p in model.parameters() if p.requires_grad]
    gen = torch.Generator().manual_seed(args.seed)
    statics = [static] if isinstance(static, CompressionSetting) else list(static)
    settings = [*statics, *(CompressionSetting.parse(label) for label in FIRST_CANDIDATES)]
    optimizers: list[torch.optim.Optimizer] = [reference_adamw(params, lr=args.lr)]
    optimizers += [MangoAdamW(params, lr=args.lr, setting=s, seed=args.seed) for s in dict.fromkeys(settings)]
    for opt in optimizers:
        for _ in range(steps):
            _train_step(args, model, opt, corpus, gen, device)
    torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def _local_controller(
    setting: CompressionSetting, schedule: Schedule | None
) -> StaticController | ScheduleController:
    """A static run's controller: ``setting`` held, or ``schedule`` played (it must start at ``setting``)."""
    if schedule is None or not schedule.phases:
        return StaticController(setting)
    if schedule.first != setting:
        raise ValueError(
            f"schedule {schedule.label()} starts at {schedule.first.label()}, not {setting.label()}"
        )
    return ScheduleController(schedule)


def train_run(
    args: DemoArgs,
    name: str,
    corpus: ByteCorpus,
    val: list[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    *,
    setting: CompressionSetting | None,
    schedule: Schedule | None = None,
    service: ServiceProcess | None = None,
    objective: Objective | None = None,
    decision_log: Path | None = None,
    telemetry_log: Path | None = None,
) -> RunResult:
    """One run of the job.

    ``setting=None``: plain AdamW (:func:`client.profile.reference_adamw`: fused on CUDA). With ``service``:
    MangoAdamW starting at ``setting``, the service decides every interval. Without: MangoAdamW held at
    ``setting`` (a local static controller), or playing ``schedule`` (which starts at ``setting``).
    ``telemetry_log``: a MangoAdamW run writes there every telemetry record the hook made (JSON lines, the
    contract's ``TelemetryRecord``: what the policy saw, to set beside the surrogate's observations), and an
    adaptive run its cost profile beside it (:func:`client.profile.profile_log`).
    """
    model = build_model(args.model, args.seed).to(device)
    assert isinstance(model, ByteGPT)  # check() admits LM presets only
    params = [p for p in model.parameters() if p.requires_grad]
    n_params = sum(p.numel() for p in params)
    flops_per_step = 6.0 * n_params * args.batch_size * args.seq_len
    gen = torch.Generator().manual_seed(args.seed + 1)  # the same batches in the same order in every run
    display = _Display(args, name)
    points: list[Point] = []
    records: list[TelemetryRecord] = []
    energy_j, sources = 0.0, Counter[str]()
    hook: AdaptiveCompression | None = None
    meter: EnergyMeter | None = None
    opt: torch.optim.Optimizer
    if setting is None:
        opt = reference_adamw(params, lr=args.lr, weight_decay=args.weight_decay)
        # what the hook's modelled meter counts: params + grads read/written (12 B) and the state twice
        meter = _energy_meter(device, flops_per_step, (12.0 + 2 * 8.0) * n_params)
    else:
        opt = MangoAdamW(params, lr=args.lr, weight_decay=args.weight_decay, setting=setting, seed=args.seed)
        if decision_log is not None:
            decision_log.unlink(missing_ok=True)
        profile = _job_profile(args, params, corpus, device) if service is not None else None
        if profile is not None and telemetry_log is not None:  # what the policy read, for replays
            profile_log(telemetry_log).write_text(profile.model_dump_json(indent=1))
        hook = AdaptiveCompression(
            opt,
            server_url=service.url if service is not None else None,
            api_key=service.api_key if service is not None else None,
            objective=objective,
            interval_steps=args.interval_steps,
            planned_steps=args.steps,
            controller=None if service is not None else _local_controller(setting, schedule),
            decision_log=decision_log,
            job_id=f"demo-{name.split()[0]}-{os.getpid()}",
            policy=args.policy,
            energy_meter=_energy_meter(device, flops_per_step, 12.0 * n_params),  # the hook updates bytes
            client_options={"timeout_s": args.request_timeout_s},
            profile=profile,
        )
    t_start = time.perf_counter()
    try:
        losses: list[torch.Tensor] = []
        if meter is not None:
            meter.begin()
        t_interval = time.perf_counter()
        for step in range(args.steps):
            for g in opt.param_groups:
                g["lr"] = lr_at(args, step)
            loss = _train_step(args, model, opt, corpus, gen, device)
            if hook is not None:
                hook.step(loss)
            else:
                losses.append(loss.detach())
                assert meter is not None
                meter.poll()  # as the hook does: NVML's counter moves dated within the interval
            if (step + 1) % args.interval_steps:
                continue
            if hook is not None:
                rec = hook.history[-1] if hook.history else None
                if rec is None or rec.step != step + 1:
                    continue  # a rejected record (logged by the hook)
                p = _point_from_record(rec)
                records.append(rec)
                source = rec.energy_source
            else:
                assert meter is not None
                mean_loss = float(torch.stack(losses).mean())  # the interval's one sync
                losses.clear()
                reading = meter.end(steps=args.interval_steps)
                now = time.perf_counter()
                p = Point(
                    step + 1,
                    mean_loss,
                    optimizer_state_bytes(opt),
                    reading.energy_j,
                    now - t_interval,
                    "adamw",
                    None,
                    None,
                    None,
                )
                source = reading.source
                meter.begin()
                t_interval = now
            points.append(p)
            energy_j += p.energy_j
            sources[source] += 1
            display.update(args.interval_steps, p, n_params, energy_j, source)
        wall_s = time.perf_counter() - t_start
    finally:
        display.close()
        if hook is not None:
            hook.close()
        if meter is not None:
            meter.close()
    if telemetry_log is not None and records:
        telemetry_log.write_text("".join(r.model_dump_json() + "\n" for r in records))
    val_loss = model.mean_loss(val)
    result = RunResult(
        name=name,
        label="adamw" if setting is None else (schedule or Schedule.of(setting)).label(),
        final_val_loss=val_loss,
        state_bytes=optimizer_state_bytes(opt),
        n_params=n_params,
        energy_j=energy_j,
        energy_source="+".join(sorted(sources)) or "none",
        wall_s=wall_s,
        points=points,
    )
    if hook is not None and service is not None:
        result.label = f"adaptive, last {hook.optimizer.setting.label()}"
        c = hook.counters
        result.decisions = c["decisions"]
        result.fallbacks = c["fallbacks"]
        result.setting_changes = c["setting_changes"]
        result.policies = dict(
            Counter(f"{d.policy}@{d.policy_version}" for d in hook.decisions if d.source == "service")
        )
        result.client = {k: v for k, v in c.items() if k.startswith("client_")}
    return result
