"""``mango profile``: what each compression setting costs on the job's own hardware and parameter shapes.

The policy weighs loss against memory, energy and time; the time and energy of a setting depend on the
device and on the compression core's kernels (on an H200 a projected step was ~100x fused AdamW in issue 12,
on a CPU every compressed step is slower than AdamW). :func:`profile_optimizer` times the optimizer step of
``MangoAdamW`` at a covering subset of the action grid (:data:`PROFILE_SETTINGS`: every rank, every bits
value and every gamma at least once) beside plain torch AdamW (fused on CUDA), on freshly allocated
parameters of the job's shapes with random gradients, and returns a :class:`~client.protocol.CostProfile`:
seconds per step, joules per step (NVML / Zeus where available, else the power model of
:class:`~client.telemetry.ModelledMeter`, labelled ``energy_source="modelled"``) and state bytes.

Profiles are cached as JSON by device, model signature and compression core (:func:`cached_profile`), so a
job profiles once per machine kind, model and version of the core; the client sends the profile with every
``/v1/decide`` request, the policy reads its features
(:attr:`~client.protocol.ObservationSpec.PROFILE_FEATURES`) and the service's shield refuses settings whose
measured step time breaks ``Objective.max_step_time_ratio``.

Tuning: ``steps`` 10-20 after ``warmup`` 3 is enough on a GPU (a step is milliseconds); on a CPU the
projected settings dominate the run time, so keep ``steps`` small. A profile taken while other jobs share
the device measures them too: profile an idle device.

``AdaptiveCompression`` takes :func:`job_profile` of its parameters by itself (``profile="auto"``).
The training step (``train_step``) gives the optimizer's share of a step, which the policy reads; time it on
a scratch copy, so the job's own weights and gradients stay untouched (without it the hook estimates the
share from the job's first interval), and pass the profile to the hook::

    import copy
    from client.profile import job_profile, reference_adamw

    scratch = copy.deepcopy(model)
    scratch_opt = reference_adamw(scratch.parameters())  # fused on CUDA: the AdamW that ratios are against

    def train_step() -> None:
        loss_fn(scratch).backward()
        scratch_opt.step()
        scratch_opt.zero_grad()

    profile = job_profile(model.parameters(), train_step=train_step)
    hook = AdaptiveCompression(opt, profile=profile)
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import platform
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from client.compression import MangoAdamW
from client.compression.sharded import local
from client.protocol import CompressionSetting, CostProfile, SettingCost
from client.telemetry import EnergyMeter, ModelledMeter, make_energy_meter

__all__ = [
    "PROFILE_SETTINGS",
    "cache_path",
    "cached_profile",
    "core_signature",
    "device_name",
    "job_profile",
    "model_signature",
    "profile_log",
    "profile_optimizer",
    "reference_adamw",
    "time_train_step",
]

logger = logging.getLogger(__name__)

#: Shortest timed window per setting, seconds (see :func:`_time_steps`).
MIN_WINDOW_S = 0.3

#: The covering subset profiled by default: every rank (0-64), every bits value (2-32), every gamma, and
#: every variant of the fused GPU kernels that a grid setting compiles (each width with and without the gamma
#: shift, at rank 0 and projected; each padded rank 16 / 32 / 64 at 32 bits and below). A job profiles before
#: it trains, so on a GPU the profile also compiles every kernel the policy can switch to: a setting change in
#: training then never waits for Triton's JIT (seconds per new variant).
PROFILE_SETTINGS: tuple[str, ...] = (
    "r0/b32/g0",
    "r0/b16/g0",
    "r0/b8/g0",
    "r0/b4/g0",
    "r0/b3/g0",
    "r0/b2/g0",
    "r0/b8/g0.5",
    "r0/b4/g1",
    "r1/b8/g0",
    "r2/b4/g0",
    "r4/b8/g0",
    "r8/b4/g0",
    "r8/b8/g0.75",
    "r16/b16/g0",
    "r32/b4/g0.25",
    "r32/b32/g0",
    "r64/b8/g0",
    "r4/b2/g0",
    # the kernel variants the settings above leave uncompiled
    "r0/b32/g0.5",
    "r0/b16/g0.25",
    "r0/b3/g0.75",
    "r0/b2/g0.25",
    "r2/b32/g0",
    "r16/b3/g0",
    "r16/b3/g0.75",
    "r8/b2/g0.25",
    "r64/b16/g1",
    "r64/b32/g0.5",
)


def model_signature(shapes: Iterable[Sequence[int]], dtype: str = "float32") -> str:
    """16 hex chars identifying a set of parameter shapes (order-insensitive) and their dtype."""
    canon = sorted(tuple(int(d) for d in s) for s in shapes)
    return hashlib.sha256(json.dumps([dtype, canon]).encode()).hexdigest()[:16]


def device_name(device: torch.device) -> str:
    """A human and cache-key name of ``device``: the CUDA device name, else the CPU and its thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    return f"cpu {cpu} ({torch.get_num_threads()} threads)"


def cache_dir() -> Path:
    """``$MANGO_CACHE_DIR/profiles`` (default ``~/.cache/mango/profiles``)."""
    root = os.environ.get("MANGO_CACHE_DIR") or str(Path.home() / ".cache" / "mango")
    return Path(root) / "profiles"


@functools.cache
def core_signature() -> str:
    """8 hex chars identifying the compression core that a profile times: the sources of
    ``client.compression`` (its kernels included) and the torch version. Part of the cache key, so a
    profile taken before the core or torch changed (a faster kernel, a new layout) is measured again
    instead of advising the policy with old costs."""
    root = Path(__file__).resolve().parent / "compression"
    digest = hashlib.sha256(torch.__version__.encode())
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:8]


def cache_path(device: str, signature: str, root: Path | None = None) -> Path:
    """Where the profile of ``device`` and ``signature`` is cached (for this compression core:
    :func:`core_signature`)."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", device).strip("-").lower()[:60]
    return (root or cache_dir()) / f"{slug}-{signature}-core{core_signature()}.json"


def profile_log(telemetry_log: Path) -> Path:
    """Where a run keeps the cost profile its hook sent the service: beside its telemetry log
    (``telemetry-1.jsonl`` -> ``profile-1.json``). ``mango demo`` writes it there and the replays
    (``mango bench replay``, ``step-share``) read it, so a replay encodes the windows the policy was sent."""
    return telemetry_log.with_name(telemetry_log.name.replace("telemetry", "profile", 1)).with_suffix(".json")


def reference_adamw(params: Iterable[torch.Tensor], *, lr: float = 1e-3, **kwargs: Any) -> torch.optim.AdamW:
    """The AdamW that MANGO's costs and verdicts are measured against: torch's fastest implementation for the
    parameters' device, ``fused=True`` on CUDA and ``foreach=True`` elsewhere.

    Every ratio to "AdamW" in the project means this one: a profile's step and energy ratios, the
    training step whose optimizer share the policy reads, and the demo's AdamW run that its verdict and
    ``J`` are relative to. Torch's default (``torch.optim.AdamW(params)``) is the ``foreach`` implementation
    on CUDA, a few times slower a step than the fused one (BENCHMARKS.md, issue 12), so a baseline left at
    the default would credit MANGO with the difference. ``kwargs`` go to ``torch.optim.AdamW``
    (``weight_decay``, ``betas``, ...), except the implementation choice.
    """
    ps = list(params)
    if not ps:
        raise ValueError("reference_adamw() got no parameters")
    if "fused" in kwargs or "foreach" in kwargs:
        raise ValueError("reference_adamw() chooses fused/foreach itself: build torch.optim.AdamW directly")
    if ps[0].device.type == "cuda":
        return torch.optim.AdamW(ps, lr=lr, fused=True, **kwargs)
    return torch.optim.AdamW(ps, lr=lr, foreach=True, **kwargs)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_steps(
    opt: torch.optim.Optimizer,
    device: torch.device,
    steps: int,
    warmup: int,
    meter: EnergyMeter,
) -> tuple[float, float, str]:
    """``(seconds per step, joules per step, energy source)`` of ``opt.step()`` after ``warmup`` steps.

    Fast steps are repeated until the timed window lasts :data:`MIN_WINDOW_S` (at most 50x ``steps``), so an
    energy counter that updates every ~100 ms (NVML) sees a window it can resolve. With NVML the energy
    window also starts and ends on a move of the counter (:meth:`EnergyMeter.wait_for_move`): a window of
    :data:`MIN_WINDOW_S` that starts and ends anywhere reads up to a counter period more or less than it
    used, a third of it at 0.3 s, and a profile's small steps then read about 1x or 2x AdamW's energy
    whatever their cost. The steps run to reach the closing move count in the energy, not in the time.
    """
    for _ in range(warmup):
        opt.step()
    _sync(device)
    if warmup:
        # the step's speed from a probe after the warm-up: the warm-up itself holds the kernels' compilation
        # (seconds on a GPU), which made the window a few milliseconds and NVML's ~100 ms counter read 0 J
        t0 = time.perf_counter()
        probe = min(steps, 3)
        for _ in range(probe):
            opt.step()
        _sync(device)
        per_step = (time.perf_counter() - t0) / probe
        steps = min(max(steps, math.ceil(MIN_WINDOW_S / max(per_step, 1e-9))), 50 * steps)
    meter.wait_for_move()
    meter.begin()
    t0 = time.perf_counter()
    for _ in range(steps):
        opt.step()
    _sync(device)
    dt = time.perf_counter() - t0

    def step() -> None:
        opt.step()
        _sync(device)  # the step's energy is spent before the counter is read

    extra = meter.wait_for_move(step)
    reading = meter.end(steps=steps + extra)
    return dt / steps, reading.energy_j / (steps + extra), reading.source


def profile_optimizer(
    params: Iterable[torch.Tensor],
    *,
    device: str | torch.device | None = None,
    settings: Sequence[str] = PROFILE_SETTINGS,
    steps: int = 10,
    warmup: int = 3,
    min_compress_numel: int = 4096,
    train_step: Callable[[], object] | None = None,
    train_steps: int = 5,
    energy: str = "auto",
    note: str = "",
) -> CostProfile:
    """Measure a :class:`~client.protocol.CostProfile` for parameters shaped like ``params``.

    The parameters themselves are not touched: fresh fp32 tensors of the same shapes are allocated on
    ``device`` (default: the first parameter's), with fixed random gradients.

    :param settings: setting labels to time (default :data:`PROFILE_SETTINGS`, a covering subset).
    :param steps: timed optimizer steps per setting (after ``warmup`` untimed ones).
    :param min_compress_numel: as ``MangoAdamW(min_compress_numel=...)`` in the job.
    :param train_step: optional callable running one forward + backward + AdamW step of the job; timed
        ``train_steps`` times, it gives :attr:`CostProfile.train_step_s` (the optimizer's share of a step).
    :param energy: ``"auto"`` (NVML, Zeus, else modelled) or ``"modelled"``.
    :raises ValueError: no parameters, or a label off the grid.
    """
    src = _local_shards(params)
    if not src:
        raise ValueError("profile_optimizer got no parameters: pass model.parameters()")
    if steps < 1 or warmup < 0:
        raise ValueError(f"steps={steps} must be >= 1 and warmup={warmup} >= 0")
    parsed = [CompressionSetting.parse(s) for s in settings]
    dev = torch.device(device) if device is not None else src[0].device
    shapes = [tuple(p.shape) for p in src]
    n_params = sum(p.numel() for p in src)
    gen = torch.Generator(device="cpu").manual_seed(0)
    grads = [torch.randn(s, generator=gen).to(dev) * 1e-2 for s in shapes]

    def fresh() -> list[torch.nn.Parameter]:
        ps = [torch.nn.Parameter(torch.randn(s, generator=gen).to(dev) * 0.02) for s in shapes]
        for p, g in zip(ps, grads, strict=True):
            p.grad = g
        return ps

    bytes_per_step = 28.0 * n_params  # read p, g, m, v; write p, m, v (fp32)
    meter: EnergyMeter
    if energy == "modelled":
        meter = ModelledMeter(bytes_per_step=bytes_per_step)
    else:
        meter = make_energy_meter("auto", dev.index or 0, bytes_per_step=bytes_per_step)
    energy_source = "modelled"
    try:
        cuda = dev.type == "cuda"
        adamw = reference_adamw(fresh(), lr=1e-4)
        adamw_s, adamw_j, energy_source = _time_steps(adamw, dev, steps, warmup, meter)
        del adamw
        costs: dict[str, SettingCost] = {}
        for s in parsed:
            opt = MangoAdamW(fresh(), lr=1e-4, setting=s, min_compress_numel=min_compress_numel)
            # on a GPU the first basis refresh compiles its own kernels (seconds): warm up through it, so the
            # timed window holds refreshes at their amortized rate and no compilation
            warm = max(warmup, opt.refresh_every + 1) if cuda and s.rank > 0 else warmup
            step_s, step_j, _ = _time_steps(opt, dev, steps, warm, meter)
            costs[s.label()] = SettingCost(step_s=step_s, energy_j=step_j, state_bytes=int(opt.state_bytes()))
            logger.info("profile %s: %.3f ms/step (AdamW %.3f)", s.label(), 1e3 * step_s, 1e3 * adamw_s)
            del opt
        train_s = time_train_step(train_step, dev, train_steps) if train_step is not None else None
    finally:
        meter.close()
    return CostProfile(
        device=device_name(dev),
        signature=model_signature(shapes),
        source="measured",
        energy_source=energy_source,  # type: ignore[arg-type]
        n_params=n_params,
        adamw_step_s=adamw_s,
        adamw_energy_j=adamw_j,
        train_step_s=train_s,
        settings=costs,
        note=note or f"{steps} timed steps after {warmup} warm-ups, torch {torch.__version__}",
    )


def _local_shards(params: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    """The parameters as this rank holds them: an FSDP2 (DTensor) parameter's local shard, so each rank
    profiles its own shapes (its optimizer steps on them; the projection's gathers are not timed)."""
    return [local(p.detach()) for p in params]


def time_train_step(train_step: Callable[[], object], device: torch.device, steps: int = 5) -> float:
    """Seconds per call of ``train_step`` (one forward + backward + AdamW step of the job), after 2 untimed
    calls: :attr:`CostProfile.train_step_s`, from which the optimizer's share of a step follows."""
    if steps < 1:
        raise ValueError(f"train_steps={steps} must be >= 1")
    for _ in range(2):
        train_step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        train_step()
    _sync(device)
    return (time.perf_counter() - t0) / steps


def _write_cache(path: Path, prof: CostProfile) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # a temporary file of this writer's own: jobs (or test workers) profiling one model at once must not
    # move each other's half-written file
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(prof.model_dump_json(indent=1))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cached_profile(
    params: Iterable[torch.Tensor],
    *,
    device: str | torch.device | None = None,
    root: Path | None = None,
    force: bool = False,
    train_step: Callable[[], object] | None = None,
    train_steps: int = 5,
    **kwargs: object,
) -> CostProfile:
    """The cached profile of this device and parameter shapes, measured (and cached) on a miss.

    ``train_steps`` and ``kwargs`` go to :func:`profile_optimizer`; ``force=True`` measures again and
    overwrites the cache. The cache holds what the device, the parameter shapes and the core decide: the
    settings' optimizer steps and AdamW's. The training step is the job's (its batch, sequence length and
    data pipeline move it, under one set of shapes), so it is never cached: with a ``train_step`` it is
    timed on every call (``train_steps`` calls after 2 untimed ones, milliseconds), and without one the
    profile has none (the hook then takes it from the job's first interval). A profile carries the
    optimizer's share of a step through it, which a policy reads and from which the interval-time ratios
    that rank the first decision's candidates follow: a step cached from another job (a test's small
    batch) once told the CPU demo a third of its real step, and every slower setting looked three times
    as costly as it was.
    """
    src = _local_shards(params)
    if not src:
        raise ValueError("cached_profile got no parameters: pass model.parameters()")
    dev = torch.device(device) if device is not None else src[0].device
    path = cache_path(device_name(dev), model_signature(tuple(p.shape) for p in src), root)
    if path.exists() and not force:
        prof = CostProfile.model_validate_json(path.read_text()).model_copy(update={"train_step_s": None})
    else:
        prof = profile_optimizer(src, device=dev, **kwargs)  # type: ignore[arg-type]
        _write_cache(path, prof)
        logger.info("profile cached at %s", path)
    if train_step is None:
        return prof
    return prof.model_copy(update={"train_step_s": time_train_step(train_step, dev, train_steps)})


def job_profile(
    params: Iterable[torch.Tensor],
    *,
    train_step: Callable[[], object] | None = None,
    root: Path | None = None,
) -> CostProfile:
    """The profile a job takes before it trains: :func:`cached_profile` with 5 timed steps after 2 warm-ups
    per setting (the hook's ``profile="auto"`` and ``mango demo`` share it, and so share the cache).

    A miss times every setting of :data:`PROFILE_SETTINGS` once per device, model and core (on a GPU it
    also compiles every kernel the policy can switch to; on a CPU the :data:`MIN_WINDOW_S` per setting and
    the slow compressed steps set the wait). The profiled copies are freed before it returns (on CUDA
    their cached blocks too, so the job's memory readings do not hold them).
    """
    try:
        return cached_profile(params, train_step=train_step, root=root, steps=5, warmup=2)
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
