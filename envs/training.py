"""Training backend: real models on real data with the real ``MangoAdamW`` and telemetry.

:class:`TrainingJob` runs one workload (:mod:`envs.workloads`) for one job seed, one control interval at a
time, and returns a :class:`client.protocol.TelemetryRecord` per interval, exactly what the production client
would send. :func:`reference_run` runs the same job uncompressed once and caches it on disk under a content
key (workload config + seed + code version + clock), so episodes never pay for their reference twice.

Clocks (:attr:`TrainingConfig.clock`) - what ``interval_s`` means:

* ``"wall"`` - wall time (``perf_counter``): what a dedicated machine or a GPU job measures.
* ``"cpu"`` - this process's CPU time (``process_time``): on a shared CPU machine it measures the job's own
  work and not its neighbours'; with one torch thread it is what the wall time would be on an idle core.
* ``"modelled"`` - ``steps * (flops_per_step / flops_per_s + bytes_per_step / bytes_per_s)``: deterministic,
  so whole episodes are bit-reproducible (tests); blind to the compressor's own compute.
* ``"auto"`` (default) - ``"wall"`` on CUDA, ``"cpu"`` elsewhere.

Energy is :class:`client.telemetry.ModelledMeter`'s model on CPU (every record says
``energy_source="modelled"``), with coefficients for a small server-CPU slice (:data:`CPU_ENERGY_MODEL`); on
CUDA the first working measured meter (NVML, then Zeus) from :func:`client.telemetry.make_energy_meter`.

Determinism: model init, data order and the optimizer's generator are seeded from the job seed; on CPU with a
fixed thread count two runs of the same job are bit-identical (losses, gradients, state bytes).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from client.compression.optimizer import MangoAdamW
from client.controllers import first_setting_for_profile
from client.protocol import CompressionSetting, Reference, TelemetryRecord
from client.telemetry import EnergyMeter, EnergyModel, MemoryTracker, ModelledMeter, make_energy_meter
from envs.data import cache_dir, get_batch, load_corpus, load_digits_data
from envs.episode import Backend, EpisodeStart, StepOutcome, draw_episode, loss_term_of, score
from envs.objectives import make_objective
from envs.workloads import Workload, get_workload

__all__ = [
    "CPU_ENERGY_MODEL",
    "ReferenceRun",
    "TrainingBackend",
    "TrainingConfig",
    "TrainingJob",
    "code_version",
    "reference_run",
]

log = logging.getLogger(__name__)

Clock = Literal["auto", "wall", "cpu", "modelled"]

#: Order-of-magnitude energy coefficients for two cores of a server CPU: ~0.5 nJ per fp32 FLOP (about
#: 20 GFLOP/s at 10 W), ~0.16 nJ per DRAM byte (~20 pJ/bit), 10 W static. Modelled, never measured.
CPU_ENERGY_MODEL = EnergyModel(
    e_flop_j=5.0e-10,
    e_byte_j={"l1": 0.0, "l2": 0.0, "dram": 1.6e-10},
    idle_power_w=10.0,
)
#: Loss recorded for an interval whose every loss was NaN/inf (the record must stay finite); the env's
#: divergence rule (loss > factor * initial loss) then ends the episode.
DIVERGED_LOSS = 1.0e6
# Source files whose change changes a reference run (part of the reference cache key).
_CODE_FILES = (
    "envs/training.py",
    "envs/models.py",
    "envs/data.py",
    "client/compression/optimizer.py",
    "client/compression/quant.py",
    "client/compression/lowrank.py",
    "client/compression/feedback.py",
    "client/compression/codes.py",
)
_REF_VERSION = "mango-ref-v1"


@dataclass(frozen=True)
class TrainingConfig:
    """Knobs of the training backend (all runs of one env share them).

    :ivar device: ``"auto"`` (CUDA if available, else CPU), ``"cpu"`` or ``"cuda[:i]"``.
    :ivar clock: see the module docstring; ``"auto"`` = wall on CUDA, CPU time elsewhere.
    :ivar threads: ``torch.set_num_threads`` before each run (``None`` leaves it). 1 is kind to a shared
        machine and makes ``clock="cpu"`` meaningful; determinism needs the same value everywhere.
    :ivar cache: cache reference runs on disk (``False``: recompute every time).
    :ivar cache_dir: where (default ``$MANGO_CACHE_DIR/references`` or ``~/.cache/mango/references``).
    :ivar energy_model: coefficients of the modelled meter (default :data:`CPU_ENERGY_MODEL` on CPU, the
        meter's GPU defaults on CUDA).
    :ivar flops_per_s: compute rate of the ``"modelled"`` clock (default 2e10: two CPU cores).
    :ivar bytes_per_s: memory bandwidth of the ``"modelled"`` clock (default 1e10).
    :ivar optimizer: extra ``MangoAdamW`` keyword arguments (e.g. ``{"refresh_every": 10}``).
    """

    device: str = "auto"
    clock: Clock = "auto"
    threads: int | None = None
    cache: bool = True
    cache_dir: str | None = None
    energy_model: EnergyModel | None = None
    flops_per_s: float = 2.0e10
    bytes_per_s: float = 1.0e10
    optimizer: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.clock not in ("auto", "wall", "cpu", "modelled"):
            raise ValueError(f"clock={self.clock!r}; choose 'auto', 'wall', 'cpu' or 'modelled'")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads={self.threads} must be >= 1 (or None to leave torch's setting)")
        if not (self.flops_per_s > 0 and self.bytes_per_s > 0):
            raise ValueError("flops_per_s and bytes_per_s must be positive")
        if self.device != "auto":
            torch.device(self.device)  # raises on a malformed name

    def resolved_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def resolved_clock(self) -> str:
        if self.clock != "auto":
            return self.clock
        return "wall" if self.resolved_device().type == "cuda" else "cpu"


@lru_cache(maxsize=1)
def code_version() -> str:
    """Hash of the source files a reference run depends on (see ``_CODE_FILES``) and the torch version.

    Computed once per process: a long recording keeps using its references even if the files change under
    it (it runs the code it imported at start anyway)."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256(f"{_REF_VERSION}|torch={torch.__version__}".encode())
    for rel in _CODE_FILES:
        p = root / rel
        h.update(rel.encode())
        h.update(p.read_bytes() if p.exists() else b"<missing>")
    return h.hexdigest()[:16]


@lru_cache(maxsize=4)
def _corpus(max_bytes: int) -> Any:
    return load_corpus(max_bytes=max_bytes)


@lru_cache(maxsize=1)
def _digits() -> Any:
    return load_digits_data()


def _lm_flops_per_step(n_params: int, tokens: int) -> float:
    return 6.0 * n_params * tokens  # forward + backward ~ 6 x parameters x tokens


@dataclass
class IntervalResult:
    """One interval: the telemetry record plus what the env and the benchmark need besides it."""

    record: TelemetryRecord
    diverged: bool
    train_s: float  # wall time inside the raw training steps (batch, forward, backward, optimizer step)
    total_s: float  # wall time of the whole run_interval call
    apply_s: float = 0.0  # wall time of MangoAdamW.apply_setting (state conversion) at the interval start


class TrainingJob:
    """One real training run of ``workload`` for job seed ``seed``, advanced one interval at a time.

    :param workload: a :class:`Workload` or its name.
    :param seed: job seed: model init, data order, optimizer generator (and label noise for digits).
    :param config: backend knobs (:class:`TrainingConfig`).
    :param setting: the optimizer's initial setting (default off).
    """

    def __init__(
        self,
        workload: Workload | str,
        seed: int,
        config: TrainingConfig | None = None,
        setting: CompressionSetting | None = None,
    ) -> None:
        self.workload = w = get_workload(workload)
        self.seed = int(seed)
        self.config = cfg = config or TrainingConfig()
        if cfg.threads is not None:
            torch.set_num_threads(cfg.threads)
        self.device = cfg.resolved_device()
        self.clock = cfg.resolved_clock()
        self.model = w.build_model(self.seed).to(self.device)
        self.model.train()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.n_params = sum(p.numel() for p in self.params)
        self.shapes = [tuple(p.shape) for p in self.params]  # as the optimizer sees them (tied ones once)
        self.opt = MangoAdamW(
            self.params,
            lr=w.lr_at(0),
            weight_decay=w.weight_decay,
            setting=setting or CompressionSetting.off(),
            min_compress_numel=w.min_compress_numel,
            seed=self.seed,
            **cfg.optimizer,
        )
        self.gen = torch.Generator().manual_seed(1_000_003 * self.seed + 17)
        if w.task == "lm":
            corpus = _corpus(w.corpus_bytes)
            self.stream = corpus.data("val" if w.data == "stdlib-val" else "train")
            tokens = w.batch_size * w.seq_len
        else:
            d = _digits()
            self.x_train, self.y_train = d.x_train, d.y_train.clone()
            if w.label_noise > 0:
                g = torch.Generator().manual_seed(7_919 * self.seed + 5)
                n = self.y_train.numel()
                flip = torch.rand(n, generator=g) < w.label_noise
                self.y_train[flip] = torch.randint(0, d.n_classes, (int(flip.sum()),), generator=g)
            tokens = w.batch_size
        self.flops_per_step = _lm_flops_per_step(self.n_params, tokens)
        self.param_bytes_per_step = 16.0 * self.n_params  # params read+write, grads write+read (fp32)
        self.energy_model = cfg.energy_model or (CPU_ENERGY_MODEL if self.device.type == "cpu" else None)
        self.meter: EnergyMeter
        if self.device.type == "cuda":
            self.meter = make_energy_meter("auto", device_index=self.device.index or 0)
        else:
            self.meter = ModelledMeter(self.flops_per_step, self.param_bytes_per_step, self.energy_model)
        self.memory = MemoryTracker(self.device)
        self.step = 0
        log.info(
            "TrainingJob %s seed=%d device=%s clock=%s params=%d meter=%s",
            w.name,
            self.seed,
            self.device,
            self.clock,
            self.n_params,
            self.meter.describe(),
        )

    def dense_state_bytes(self) -> int:
        return self.opt.dense_state_bytes()

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.workload
        if w.task == "lm":
            x, y = get_batch(self.stream, w.batch_size, w.seq_len, self.gen)
        else:
            idx = torch.randint(0, self.x_train.shape[0], (w.batch_size,), generator=self.gen)
            x, y = self.x_train[idx], self.y_train[idx]
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def run_interval(self, setting: CompressionSetting) -> IntervalResult:
        """Apply ``setting`` (converting the optimizer state) and train ``steps_per_interval`` steps."""
        t_start = time.perf_counter()
        w = self.workload
        n = w.steps_per_interval
        bytes_per_step = self.param_bytes_per_step + 2.0 * self.opt.state_bytes()
        if isinstance(self.meter, ModelledMeter):
            self.meter.bytes_per_step = bytes_per_step
        self.memory.reset()
        cpu0 = time.process_time()
        self.meter.begin()
        ta = time.perf_counter()
        self.opt.apply_setting(setting)
        apply_s = time.perf_counter() - ta
        losses: list[float] = []
        sums = {"compression_error": 0.0, "spectral_tail": 0.0, "grad_kurtosis": 0.0, "grad_norm": 0.0}
        skipped0 = self.opt.compression_stats().skipped_steps
        train_s = 0.0
        lr = w.lr_at(self.step)
        for _ in range(n):
            t0 = time.perf_counter()
            lr = w.lr_at(self.step)
            for group in self.opt.param_groups:
                group["lr"] = lr
            x, y = self._batch()
            loss = self.model.loss(x, y)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            lv = float(loss.detach())  # the one host sync of the step besides the optimizer's own
            self.meter.poll()  # NVML's counter moves dated inside the interval (EnergyMeter.poll)
            train_s += time.perf_counter() - t0
            losses.append(lv)
            stats = self.opt.compression_stats()
            for k in sums:
                sums[k] += getattr(stats, k)
            self.step += 1
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        reading = self.meter.end(n)
        cpu_s = time.process_time() - cpu0
        skipped = self.opt.compression_stats().skipped_steps - skipped0
        finite = [v for v in losses if math.isfinite(v)]
        diverged = len(finite) < len(losses) or not finite
        mean = math.fsum(finite) / len(finite) if finite else DIVERGED_LOSS
        std = math.sqrt(math.fsum((v - mean) ** 2 for v in finite) / len(finite)) if finite else 0.0
        if not math.isfinite(mean) or mean > DIVERGED_LOSS:
            mean, diverged = DIVERGED_LOSS, True
        state_bytes = self.opt.state_bytes()
        interval_s, energy_j, source, coarse = self._time_energy(reading, cpu_s, n, bytes_per_step)
        rec = TelemetryRecord(
            step=self.step,
            loss=mean,
            loss_std=min(std, 1e12),
            grad_norm=_finite(sums["grad_norm"] / n),
            compression_error=_finite(sums["compression_error"] / n),
            grad_kurtosis=_finite(sums["grad_kurtosis"] / n, lo=-1e12),
            spectral_tail=min(max(_finite(sums["spectral_tail"] / n), 0.0), 1.0),
            state_bytes=state_bytes,
            peak_memory_bytes=self.memory.read().peak_bytes,
            energy_j=energy_j,
            mean_power_w=energy_j / interval_s if interval_s > 0 else 0.0,
            energy_source=source,  # type: ignore[arg-type]
            energy_coarse=coarse,
            interval_s=interval_s,
            lr=lr,
            setting=setting,
            progress=min(self.step / w.planned_steps, 1.0),
            skipped_steps=skipped,
        )
        return IntervalResult(rec, diverged, train_s, time.perf_counter() - t_start, apply_s)

    def _time_energy(
        self, reading: Any, cpu_s: float, steps: int, bytes_per_step: float
    ) -> tuple[float, float, str, bool]:
        if self.clock == "wall" or self.device.type == "cuda":
            return reading.interval_s, reading.energy_j, reading.source, reading.coarse
        model = self.energy_model or CPU_ENERGY_MODEL
        if self.clock == "cpu":
            interval_s = cpu_s
        else:  # modelled
            cfg = self.config
            interval_s = steps * (self.flops_per_step / cfg.flops_per_s + bytes_per_step / cfg.bytes_per_s)
        energy = model.energy_j(steps * self.flops_per_step, steps * bytes_per_step, interval_s)
        return interval_s, energy, "modelled", False

    def close(self) -> None:
        self.meter.close()


def _finite(x: float, lo: float = 0.0, hi: float = 1e12) -> float:
    return min(max(x, lo), hi) if math.isfinite(x) else lo


# ------------------------------------------------------------------------------------------ reference runs
@dataclass
class ReferenceRun:
    """The uncompressed run of a workload for one job seed: one record per interval (warm-up included).

    :ivar workload: workload name.
    :ivar workload_key: :meth:`Workload.key` it was run with.
    :ivar seed: job seed.
    :ivar records: ``intervals + 1`` records, setting off throughout.
    :ivar dense_state_bytes: fp32 AdamW state bytes of the model.
    :ivar param_shapes: trainable parameter shapes (for the exact memory formula).
    :ivar meta: how it was produced (clock, device, code version, wall time).
    """

    workload: str
    workload_key: str
    seed: int
    records: list[TelemetryRecord]
    dense_state_bytes: int
    param_shapes: list[tuple[int, ...]]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def loss(self) -> np.ndarray:
        """``[K+1]`` reference losses."""
        return np.array([r.loss for r in self.records], dtype=np.float64)

    @property
    def initial_loss(self) -> float:
        """The warm-up interval's mean loss: the unit of the reward's loss term."""
        return max(float(self.records[0].loss), 1e-6)

    @property
    def state_bytes(self) -> int:
        """Reference state bytes (the last interval's; constant after the first step)."""
        return max(int(self.records[-1].state_bytes), 1)

    def _median(self, attr: str) -> float:
        vals = [getattr(r, attr) for r in (self.records[1:] or self.records)]
        return max(float(np.median(vals)), 1e-9)

    @property
    def interval_s(self) -> float:
        """Median wall/CPU time of the control intervals (the warm-up interval excluded: lazy init)."""
        return self._median("interval_s")

    @property
    def energy_j(self) -> float:
        """Median energy of the control intervals."""
        return self._median("energy_j")

    def reference(self) -> Reference:
        """The :class:`Reference` that normalizes the observation (same numbers as the reward's)."""
        return Reference(
            initial_loss=self.initial_loss,
            dense_state_bytes=self.dense_state_bytes,
            interval_energy_j=self.energy_j,
            interval_s=self.interval_s,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": _REF_VERSION,
            "workload": self.workload,
            "workload_key": self.workload_key,
            "seed": self.seed,
            "dense_state_bytes": self.dense_state_bytes,
            "param_shapes": [list(s) for s in self.param_shapes],
            "meta": self.meta,
            "records": [r.model_dump(mode="json") for r in self.records],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ReferenceRun:
        return cls(
            workload=d["workload"],
            workload_key=d["workload_key"],
            seed=int(d["seed"]),
            records=[TelemetryRecord.model_validate(r) for r in d["records"]],
            dense_state_bytes=int(d["dense_state_bytes"]),
            param_shapes=[tuple(s) for s in d["param_shapes"]],
            meta=d.get("meta", {}),
        )


def _cache_root(config: TrainingConfig) -> Path:
    if config.cache_dir:
        return Path(config.cache_dir)
    return cache_dir() / "references"


def reference_key(workload: Workload, seed: int, config: TrainingConfig) -> str:
    """Content key of a reference run: workload config, seed, code version, device type, clock, knobs."""
    blob = json.dumps(
        {
            "workload": workload.config(),
            "seed": int(seed),
            "code": code_version(),
            "device": config.resolved_device().type,
            "clock": config.resolved_clock(),
            "threads": config.threads,
            "optimizer": config.optimizer,
            "rates": [config.flops_per_s, config.bytes_per_s],
            "energy": repr(config.energy_model),
        },
        sort_keys=True,
        default=str,
    ).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


_MEMO: dict[str, ReferenceRun] = {}


def reference_run(workload: Workload | str, seed: int, config: TrainingConfig | None = None) -> ReferenceRun:
    """The uncompressed run of ``workload`` / ``seed``: from memory, else the disk cache, else computed
    (``intervals + 1`` intervals with the setting off) and cached. Writes are atomic."""
    w = get_workload(workload)
    cfg = config or TrainingConfig()
    key = reference_key(w, seed, cfg)
    if key in _MEMO:
        return _MEMO[key]
    path = _cache_root(cfg) / f"{w.name}-s{int(seed)}-{key}.json"
    if cfg.cache and path.exists():
        try:
            run = ReferenceRun.from_dict(json.loads(path.read_text()))
            _MEMO[key] = run
            return run
        except (OSError, ValueError, KeyError) as exc:
            log.warning("ignoring unreadable reference cache %s: %s", path, exc)
    t0 = time.perf_counter()
    job = TrainingJob(w, seed, cfg, CompressionSetting.off())
    off = CompressionSetting.off()
    records = [job.run_interval(off).record for _ in range(w.intervals + 1)]
    job.close()
    run = ReferenceRun(
        workload=w.name,
        workload_key=w.key(),
        seed=int(seed),
        records=records,
        dense_state_bytes=job.dense_state_bytes(),
        param_shapes=job.shapes,
        meta={
            "key": key,
            "clock": job.clock,
            "device": str(job.device),
            "code_version": code_version(),
            "threads": torch.get_num_threads(),
            "wall_s": round(time.perf_counter() - t0, 3),
        },
    )
    log.info("reference run %s seed=%d computed in %.1f s", w.name, seed, run.meta["wall_s"])
    _MEMO[key] = run
    if cfg.cache:
        _atomic_write_text(path, json.dumps(run.to_dict()))
    return run


def _atomic_write_text(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as exc:  # a read-only cache is not fatal: the run is in memory
        log.warning("could not cache %s: %s", path, exc)


# ------------------------------------------------------------------------------------------ env backend
class TrainingBackend(Backend):
    """The ``"training"`` backend of :class:`envs.env.CompressionEnv`: a fresh :class:`TrainingJob` per
    episode and its cached :func:`reference_run` for the reward and the observation's normalization."""

    name = "training"

    def __init__(
        self,
        workloads: list[Workload],
        config: TrainingConfig | None,
        sampler: Any,
        reward: Any,
        initial_setting: CompressionSetting | None,
        job_seeds: int,
        profile: Any = None,
    ) -> None:
        self.workloads = workloads
        self.profile = profile  # this machine's CostProfile (the observation's hardware block), or None
        self.names = [w.name for w in workloads]
        self.config = config or TrainingConfig()
        self.sampler = sampler
        self.reward_config = reward
        self.initial_setting = initial_setting
        self.job_seeds = job_seeds
        self.job: TrainingJob | None = None
        self.ref: ReferenceRun | None = None
        self.objective: Any = None
        self.t = 0
        self.prev_loss_term = 0.0
        #: wall times of the last interval (``train_s``, ``total_s``, ``apply_s``): kept out of ``info`` so
        #: that equal seeds give equal infos; read by the recorder and the benchmark.
        self.last_timing: dict[str, float] = {}

    def reset(
        self, rng: np.random.Generator, *, objective: Any, workload: str | None, job_seed: int | None
    ) -> EpisodeStart:
        wi, js, weights, budget = draw_episode(
            rng, self.names, self.job_seeds, self.sampler, workload=workload, job_seed=job_seed
        )
        w = self.workloads[wi]
        self.ref = ref = reference_run(w, js, self.config)
        if objective is None:
            objective = make_objective(
                weights, None if budget is None else max(1, int(budget * ref.dense_state_bytes))
            )
        if self.job is not None:
            self.job.close()
        self.objective = objective
        first = self.initial_setting
        if first is None:  # the first decision, as a job makes it before its first interval
            first, _ = first_setting_for_profile(objective, self.profile, ref.state_bytes)
        self.job = TrainingJob(w, js, self.config, first)
        res = self.job.run_interval(first)
        self.last_timing = {"train_s": res.train_s, "total_s": res.total_s, "apply_s": res.apply_s}
        self.t = 0
        self.prev_loss_term = loss_term_of(res.record, float(ref.records[0].loss), ref.initial_loss)
        return EpisodeStart(
            workload=w.name,
            job_seed=js,
            objective=objective,
            reference=ref.reference(),
            record=res.record,
            profile=self.profile,
        )

    def step(self, action: np.ndarray, setting: CompressionSetting) -> StepOutcome:
        assert self.job is not None and self.ref is not None
        res = self.job.run_interval(setting)
        self.last_timing = {"train_s": res.train_s, "total_s": res.total_s, "apply_s": res.apply_s}
        self.t += 1
        ref = self.ref
        ref_loss = float(ref.records[min(self.t, len(ref.records) - 1)].loss)
        reward, terms, over, div = score(
            res.record,
            ref_loss=ref_loss,
            ref_state_bytes=ref.state_bytes,
            ref_energy_j=ref.energy_j,
            ref_interval_s=ref.interval_s,
            initial_loss=ref.initial_loss,
            objective=self.objective,
            config=self.reward_config,
            diverged=res.diverged,
            prev_loss_term=self.prev_loss_term,
            intervals=self.job.workload.intervals,
        )
        self.prev_loss_term = terms[0]
        return StepOutcome(
            record=res.record,
            reward=reward,
            terms=terms,
            ref_loss=ref_loss,
            over_budget=over,
            diverged=div,
            info={"last": self.t >= self.job.workload.intervals},
        )

    def close(self) -> None:
        if self.job is not None:
            self.job.close()
            self.job = None
