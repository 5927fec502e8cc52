"""Energy meters: one interface, three sources (NVML counter, Zeus, modelled), a probe and a factory.

Zeus habits: the hardware sits behind the :class:`EnergyMeter` ABC, vendor errors are translated into
:class:`TelemetryError` at one boundary per meter, availability is probed once per process and cached
(:func:`probe_energy_meters`), and :func:`make_energy_meter` falls back to :class:`ModelledMeter` (the
null object for "no GPU") and logs why.

Use::

    meter = make_energy_meter("auto", device_index=0)   # nvml -> zeus -> modelled
    meter.begin()
    ...  # a control interval of training steps
    reading = meter.end(steps=50)   # EnergyReading(energy_j, mean_power_w, interval_s, source, coarse)

Units are in every name: ``_j`` joules, ``_w`` watts, ``_s`` seconds, ``_mj`` millijoules.
A modelled figure is labelled ``source="modelled"`` and is never presented as measured.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from client.protocol import EnergySource

__all__ = [
    "DEFAULT_COUNTER_PERIOD_S",
    "EnergyMeter",
    "EnergyModel",
    "EnergyReading",
    "ModelledMeter",
    "NvmlMeter",
    "TelemetryError",
    "ZeusMeter",
    "make_energy_meter",
    "nvml_index",
    "probe_energy_meters",
]

logger = logging.getLogger(__name__)

#: NVML's total-energy counter updates about every 100 ms on an H200; shorter intervals are flagged coarse.
DEFAULT_COUNTER_PERIOD_S = 0.1


class TelemetryError(RuntimeError):
    """A telemetry source failed at run time (NVML/Zeus error, meter unavailable, misuse of begin/end)."""


@dataclass(frozen=True)
class EnergyReading:
    """Energy over one measurement window.

    :param energy_j: energy used over the window, joules (>= 0).
    :param mean_power_w: ``energy_j / interval_s``, watts.
    :param interval_s: wall time of the window, seconds.
    :param source: ``"nvml" | "zeus" | "modelled"`` (goes into ``TelemetryRecord.energy_source``).
    :param coarse: the window was shorter than the energy counter's update period, so ``energy_j`` may be
        off by up to one counter step (goes into ``TelemetryRecord.energy_coarse``).
    """

    energy_j: float
    mean_power_w: float
    interval_s: float
    source: EnergySource
    coarse: bool = False


class EnergyMeter(ABC):
    """A source of energy readings over windows delimited by :meth:`begin` and :meth:`end`.

    Windows do not nest: :meth:`begin` starts a new window (discarding an open one).
    """

    source: EnergySource

    @abstractmethod
    def begin(self) -> None:
        """Start a measurement window."""

    @abstractmethod
    def end(self, steps: int = 0) -> EnergyReading:
        """Close the window and return its reading.

        :param steps: optimizer steps run in the window; only :class:`ModelledMeter` uses it.
        :raises TelemetryError: the source failed, or no window is open.
        """

    def wait_for_move(self, work: Callable[[], object] | None = None) -> int:
        """Return once the source's reading has moved, calling ``work`` between reads; how many times it
        ran. A window that starts and ends on a move resolves a source that updates in steps (NVML's
        counter, :meth:`NvmlMeter.wait_for_move`); the others read continuously: at once, 0."""
        return 0

    def poll(self) -> None:  # noqa: B027 - optional hook, most meters read continuously
        """Note the source's reading mid-window; call it once per training step (cheap, never raises). A
        source that updates in steps (NVML's counter, :meth:`NvmlMeter.poll`) dates its moves by it; the
        others ignore it."""

    def close(self) -> None:  # noqa: B027 - optional hook, most meters hold nothing
        """Release the source (NVML handle, Zeus monitor); the meter is unusable afterwards."""

    def describe(self) -> str:
        """One line for logs: the source and its knobs."""
        return self.source


# ---------------------------------------------------------------------------------------------- NVML


class NvmlMeter(EnergyMeter):
    """GPU energy from NVML's total-energy counter (Volta and newer), the reference measurement.

    ``energy_j`` comes from ``nvmlDeviceGetTotalEnergyConsumption`` (millijoules since driver load), which
    moves once per update period (about 100 ms): a window's plain counter difference is off by up to one
    period's energy at each end (a 0.3 s window by up to +/- 30 %). Where :meth:`poll` ran during the window
    (the hook calls it every training step), the meter dates each counter move it saw (to within the gap
    between two reads, at most ``max_read_gap_s``) and reads the power between the first and the last move
    inside the window: ``energy_j = that power * interval_s``, ``mean_power_w = that power``. Without two
    dated moves a period apart (no polls, or a short window) it is the plain difference. Reading the counter
    costs a few microseconds and does not synchronize CUDA: call :meth:`end` after the work of the window has
    finished (the hook does it after its once-per-interval sync).

    :param device_index: NVML device index (NVML ignores ``CUDA_VISIBLE_DEVICES``).
    :param counter_period_s: update period of the energy counter; windows shorter than it are flagged
        ``coarse`` (about 0.1 s on an H200; raise it for older boards, or lengthen the control interval).
    :param poll_period_s: :meth:`poll` reads the counter at most this often (a read costs a few
        microseconds: 2 ms keeps it under 0.3 % of any step rate); a move is dated to within it.
    :param max_read_gap_s: a move seen by a read longer than this after the previous one (a read after a
        long sync, or after a slow step) is not dated: the window's power comes from the better-dated moves.
    :param nvml: the pynvml module; injectable so tests can simulate hardware and faults. ``nvmlInit`` and
        ``nvmlShutdown`` are reference-counted by NVML itself, so several meters may coexist.
    :param clock: seconds, monotonic (``time.perf_counter``); injectable with ``nvml`` for simulated time.
    :raises TelemetryError: NVML is missing, the device is absent, or it has no energy counter.
    """

    source: EnergySource = "nvml"

    def __init__(
        self,
        device_index: int = 0,
        *,
        counter_period_s: float = DEFAULT_COUNTER_PERIOD_S,
        poll_period_s: float = 0.002,
        max_read_gap_s: float = 0.02,
        nvml: Any = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if device_index < 0:
            raise ValueError(f"device_index={device_index} must be >= 0")
        if not counter_period_s >= 0.0:
            raise ValueError(f"counter_period_s={counter_period_s} must be >= 0 seconds (H200: 0.1)")
        if not 0.0 <= poll_period_s <= max_read_gap_s:
            raise ValueError(
                f"poll_period_s={poll_period_s} and max_read_gap_s={max_read_gap_s}: need "
                "0 <= poll_period_s <= max_read_gap_s (defaults 0.002 and 0.02 seconds)"
            )
        if nvml is None:
            try:
                import pynvml
            except ImportError as exc:  # pragma: no cover - nvidia-ml-py is a dependency
                raise TelemetryError(f"pynvml is not importable ({exc}); pip install nvidia-ml-py") from exc
            nvml = pynvml
        self._nvml = nvml
        self.device_index = device_index
        self.counter_period_s = float(counter_period_s)
        self.poll_period_s, self.max_read_gap_s = float(poll_period_s), float(max_read_gap_s)
        self._clock = clock
        self._start: tuple[float, int] | None = None
        self._last_read: tuple[float, int] = (0.0, 0)  # the window's newest read (seconds, mJ)
        self._first_move: tuple[float, int] | None = None  # this window's first dated move (seconds, mJ)
        self._last_move: tuple[float, int] | None = None  # and its newest
        self._closed = False
        self._call("nvmlInit")
        try:
            self._handle = self._call("nvmlDeviceGetHandleByIndex", device_index)
            self._call("nvmlDeviceGetTotalEnergyConsumption", self._handle)  # probes counter support
        except TelemetryError:
            self._call("nvmlShutdown")
            raise

    def _call(self, fn: str, *args: Any) -> Any:
        """The one boundary where pynvml errors become :class:`TelemetryError`."""
        try:
            return getattr(self._nvml, fn)(*args)
        except self._nvml.NVMLError as exc:
            raise TelemetryError(f"NVML {fn} failed on device {self.device_index}: {exc}") from exc

    def _read_mj(self) -> int:
        return int(self._call("nvmlDeviceGetTotalEnergyConsumption", self._handle))

    def wait_for_move(self, work: Callable[[], object] | None = None) -> int:
        """Return once the energy counter has moved (at most 3 ``counter_period_s``): polling every
        millisecond, or calling ``work`` between reads (it must finish its device work before it returns).
        The counter moves once per update period, so a window that starts and ends on a move resolves far
        finer than one that starts and ends anywhere (:func:`client.profile.profile_optimizer` aligns its
        windows so). Returns how many times ``work`` ran."""
        start, t0, n = self._read_mj(), time.perf_counter(), 0
        while self._read_mj() == start and time.perf_counter() - t0 < 3 * self.counter_period_s:
            if work is None:
                time.sleep(0.001)
            else:
                work()
                n += 1
        return n

    def _note(self, t: float, e_mj: int) -> None:
        """Date a counter move between the previous read and this one (the middle of the gap)."""
        t_prev, e_prev = self._last_read
        if e_mj != e_prev and t - t_prev <= self.max_read_gap_s:
            self._last_move = (0.5 * (t_prev + t), e_mj)
            self._first_move = self._first_move or self._last_move
        self._last_read = (t, e_mj)

    def poll(self) -> None:
        if self._start is None or self._closed:
            return
        t = self._clock()
        if t - self._last_read[0] < self.poll_period_s:
            return
        try:
            e_mj = self._read_mj()
        except TelemetryError:  # end() reports the fault; a step never raises for telemetry
            return
        self._note(t, e_mj)

    @property
    def power_limit_w(self) -> float:
        """The board's enforced power limit, watts (context for a power budget)."""
        return float(self._call("nvmlDeviceGetEnforcedPowerLimit", self._handle)) / 1000.0

    def begin(self) -> None:
        if self._closed:
            raise TelemetryError("NvmlMeter is closed")
        self._start = self._last_read = (self._clock(), self._read_mj())
        self._first_move = self._last_move = None

    def end(self, steps: int = 0) -> EnergyReading:
        if self._start is None:
            raise TelemetryError("NvmlMeter.end() called without begin()")
        t0, e0_mj = self._start
        e1_mj = self._read_mj()
        t1 = self._clock()
        interval_s = t1 - t0
        self._start = None
        if e1_mj < e0_mj:
            raise TelemetryError(
                f"NVML energy counter went backwards ({e0_mj} -> {e1_mj} mJ): driver reloaded or device reset"
            )
        self._note(t1, e1_mj)
        energy_j = (e1_mj - e0_mj) / 1000.0
        power_w = energy_j / interval_s if interval_s > 0.0 else 0.0
        coarse = interval_s < self.counter_period_s
        if self._first_move is not None and self._last_move is not None:
            (ta, ea), (tb, eb) = self._first_move, self._last_move
            if tb > ta and tb - ta >= self.counter_period_s - self.max_read_gap_s:  # a period apart or more
                power_w = (eb - ea) / 1000.0 / (tb - ta)
                energy_j, coarse = power_w * interval_s, False
        return EnergyReading(
            energy_j=energy_j, mean_power_w=power_w, interval_s=interval_s, source="nvml", coarse=coarse
        )

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                self._call("nvmlShutdown")
            except TelemetryError as exc:
                logger.debug("nvmlShutdown: %s", exc)

    def describe(self) -> str:
        return f"nvml(device={self.device_index}, counter_period_s={self.counter_period_s:g})"


# ---------------------------------------------------------------------------------------------- Zeus


class ZeusMeter(EnergyMeter):
    """GPU energy from Zeus's ``ZeusMonitor`` windows (zeus-ml), the alternative measured source.

    :param device_index: GPU index as the framework sees it (after ``CUDA_VISIBLE_DEVICES``).
    :param sync_execution: let Zeus synchronize CUDA at window edges (exact windows, one sync per interval).
    :param counter_period_s: windows shorter than this are flagged ``coarse`` (Zeus reads the same counter).
    :raises TelemetryError: zeus-ml is missing or the monitor cannot start (no GPU: the reason is kept).
    """

    source: EnergySource = "zeus"

    def __init__(
        self,
        device_index: int = 0,
        *,
        sync_execution: bool = True,
        counter_period_s: float = DEFAULT_COUNTER_PERIOD_S,
    ) -> None:
        # Zeus imports AMD's amdsmi, which prints "Unable to find libamd_smi.so ..." to stdout on every
        # machine without ROCm: caught here and logged at debug level (the reason still reaches the
        # TelemetryError when the monitor cannot start).
        torch = sys.modules.get("torch")
        if torch is not None and not torch.cuda.is_available():
            # Zeus measures GPUs; with none visible, its slow import (it probes CPU, AMD and NVIDIA
            # libraries) would only end in this error
            raise TelemetryError("Zeus measures GPUs, and torch sees none (torch.cuda.is_available())")
        noise = io.StringIO()
        try:
            with contextlib.redirect_stdout(noise), contextlib.redirect_stderr(noise):
                from zeus.monitor import ZeusMonitor
        except Exception as exc:
            raise TelemetryError(f"zeus-ml is not importable: {type(exc).__name__}: {exc}") from exc
        try:
            with contextlib.redirect_stdout(noise), contextlib.redirect_stderr(noise):
                self._monitor = ZeusMonitor(gpu_indices=[device_index])
        except Exception as exc:  # Zeus raises assorted errors (even KeyError) when no GPU is present
            raise TelemetryError(f"ZeusMonitor failed to start: {type(exc).__name__}: {exc}") from exc
        finally:
            if noise.getvalue().strip():
                logger.debug("zeus printed: %s", noise.getvalue().strip())
        self.device_index = device_index
        self.sync_execution = sync_execution
        self.counter_period_s = float(counter_period_s)
        self._key = f"mango-{id(self)}"
        self._open = False

    def begin(self) -> None:
        try:
            if self._open:
                self._monitor.end_window(self._key, sync_execution=False, cancel=True)
            self._monitor.begin_window(self._key, sync_execution=self.sync_execution)
        except Exception as exc:
            raise TelemetryError(f"Zeus begin_window failed: {type(exc).__name__}: {exc}") from exc
        self._open = True

    def end(self, steps: int = 0) -> EnergyReading:
        if not self._open:
            raise TelemetryError("ZeusMeter.end() called without begin()")
        self._open = False
        try:
            m = self._monitor.end_window(self._key, sync_execution=self.sync_execution)
        except Exception as exc:
            raise TelemetryError(f"Zeus end_window failed: {type(exc).__name__}: {exc}") from exc
        energy_j = float(sum(m.gpu_energy.values()))
        interval_s = float(m.time)
        return EnergyReading(
            energy_j=energy_j,
            mean_power_w=energy_j / interval_s if interval_s > 0.0 else 0.0,
            interval_s=interval_s,
            source="zeus",
            coarse=interval_s < self.counter_period_s,
        )

    def describe(self) -> str:
        return f"zeus(device={self.device_index}, sync_execution={self.sync_execution})"


# ---------------------------------------------------------------------------------------------- modelled


@dataclass(frozen=True)
class EnergyModel:
    """Coefficients of the LoRAven energy model (seed ``loraven-foundations.md`` section 4.1).

    ``E = E_compute + E_memory + E_static`` with

    * ``E_compute = FLOPs * e_flop_j * eta_parallel * f_dvfs`` (4.1.1);
    * ``E_memory = sum_l bytes * miss_l * e_byte_j[l]`` over the levels ``l1, l2, dram`` (4.1.2; the
      optimizer streams its state once per step, so every byte reaches DRAM: the default miss rates are 1
      for DRAM, and the cache levels are left at 0 energy);
    * ``E_static = idle_power_w * interval_s`` (4.1.3).

    Defaults describe an H200-class GPU, order-of-magnitude only: ``e_flop_j`` = 1 pJ per FLOP (dense BF16
    tensor-core work at ~700 W and ~1e15 FLOP/s is ~0.7 pJ; fp32 is costlier), ``e_byte_j["dram"]`` = 31 pJ
    per byte (HBM3 ~3.9 pJ/bit), ``idle_power_w`` = 75 W. Calibrate them against NVML on the target GPU
    before comparing modelled and measured runs.
    """

    e_flop_j: float = 1.0e-12
    eta_parallel: float = 1.0
    f_dvfs: float = 1.0
    e_byte_j: dict[str, float] = field(default_factory=lambda: {"l1": 0.0, "l2": 0.0, "dram": 3.1e-11})
    miss_rate: dict[str, float] = field(default_factory=lambda: {"l1": 1.0, "l2": 1.0, "dram": 1.0})
    idle_power_w: float = 75.0

    def energy_j(self, flops: float, bytes_moved: float, interval_s: float) -> float:
        """Modelled joules for ``flops`` FLOPs and ``bytes_moved`` bytes over ``interval_s`` seconds."""
        compute = flops * self.e_flop_j * self.eta_parallel * self.f_dvfs
        memory = sum(bytes_moved * self.miss_rate.get(lvl, 1.0) * e for lvl, e in self.e_byte_j.items())
        return compute + memory + self.idle_power_w * interval_s


class ModelledMeter(EnergyMeter):
    """Energy estimated from work done, for machines without a GPU meter (always available).

    ``energy_j = model.energy_j(steps * flops_per_step, steps * bytes_per_step, interval_s)``. Both per-step
    figures are plain attributes: update them when the workload changes (the hook refreshes
    ``bytes_per_step`` from the optimizer's state bytes every interval, so compression shows up in it).

    :param flops_per_step: FLOPs of one training step (forward + backward ~ 6 x parameters x tokens).
    :param bytes_per_step: bytes moved through DRAM per step (parameters, gradients, optimizer state).
    :param model: the coefficients (:class:`EnergyModel`).

    Every reading says ``source="modelled"`` and ``coarse=False``.
    """

    source: EnergySource = "modelled"

    def __init__(
        self,
        flops_per_step: float = 0.0,
        bytes_per_step: float = 0.0,
        model: EnergyModel | None = None,
    ) -> None:
        if flops_per_step < 0 or bytes_per_step < 0:
            raise ValueError(
                f"flops_per_step={flops_per_step} and bytes_per_step={bytes_per_step} must be >= 0"
            )
        self.flops_per_step = float(flops_per_step)
        self.bytes_per_step = float(bytes_per_step)
        self.model = model or EnergyModel()
        self._t0: float | None = None

    def begin(self) -> None:
        self._t0 = time.perf_counter()

    def end(self, steps: int = 0) -> EnergyReading:
        if self._t0 is None:
            raise TelemetryError("ModelledMeter.end() called without begin()")
        if steps < 0:
            raise ValueError(f"steps={steps} must be >= 0")
        interval_s = time.perf_counter() - self._t0
        self._t0 = None
        energy_j = self.model.energy_j(steps * self.flops_per_step, steps * self.bytes_per_step, interval_s)
        return EnergyReading(
            energy_j=energy_j,
            mean_power_w=energy_j / interval_s if interval_s > 0.0 else 0.0,
            interval_s=interval_s,
            source="modelled",
            coarse=False,
        )

    def describe(self) -> str:
        return f"modelled(flops_per_step={self.flops_per_step:.3g}, bytes_per_step={self.bytes_per_step:.3g})"


# ---------------------------------------------------------------------------------------------- factory

Prefer = Literal["auto", "nvml", "zeus", "modelled"]
_ORDER: dict[str, tuple[str, ...]] = {
    "auto": ("nvml", "zeus", "modelled"),
    "nvml": ("nvml", "modelled"),
    "zeus": ("zeus", "modelled"),
    "modelled": ("modelled",),
}


def nvml_index(cuda_index: int) -> int:
    """NVML's index of the GPU that torch calls ``cuda:<cuda_index>``.

    NVML numbers every GPU of the host and ignores ``CUDA_VISIBLE_DEVICES``; torch numbers the visible ones.
    With ``CUDA_VISIBLE_DEVICES=2,3``, ``cuda:0`` is NVML device 2. UUID entries (``GPU-...``) are not
    resolved here: the index is returned unchanged and a warning says so.
    """
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if not visible or cuda_index >= len(visible):
        return cuda_index
    entry = visible[cuda_index]
    if entry.isdigit():
        return int(entry)
    logger.warning(
        "CUDA_VISIBLE_DEVICES entry %r is not an index: assuming NVML device %d", entry, cuda_index
    )
    return cuda_index


def _try_build(kind: str, device_index: int) -> EnergyMeter:
    if kind == "nvml":
        return NvmlMeter(nvml_index(device_index))
    if kind == "zeus":
        return ZeusMeter(device_index)
    raise AssertionError(kind)


@functools.cache
def _probe(kind: str, device_index: int) -> str | None:
    try:
        meter = _try_build(kind, device_index)
    except TelemetryError as exc:
        return str(exc)
    meter.close()
    return None


def probe_energy_meters(device_index: int = 0) -> dict[str, str | None]:
    """Which measured meters work here: ``{"nvml": None | reason, "zeus": None | reason}``.

    ``None`` means available. Each probe runs once per process and device (cached): Zeus takes about a
    second to import. ``"modelled"`` is always available and not listed.
    """
    return {kind: _probe(kind, device_index) for kind in ("nvml", "zeus")}


def make_energy_meter(
    prefer: Prefer = "auto",
    device_index: int = 0,
    *,
    strict: bool = False,
    counter_period_s: float = DEFAULT_COUNTER_PERIOD_S,
    flops_per_step: float = 0.0,
    bytes_per_step: float = 0.0,
) -> EnergyMeter:
    """Build the best available energy meter.

    :param prefer: ``"auto"`` tries NVML, then Zeus, then the model; ``"nvml"`` / ``"zeus"`` try that meter
        then fall back to the model; ``"modelled"`` always models.
    :param device_index: the GPU as torch numbers it (``cuda:<device_index>``); mapped to NVML's numbering
        with :func:`nvml_index`.
    :param strict: raise :class:`TelemetryError` instead of falling back when the preferred measured meter
        is unavailable (for GPU benchmarks where a modelled number would be misleading).
    :param counter_period_s: see :class:`NvmlMeter`.
    :param flops_per_step: initial :attr:`ModelledMeter.flops_per_step` if the model is used.
    :param bytes_per_step: initial :attr:`ModelledMeter.bytes_per_step` if the model is used.

    Every fallback is logged once with the reason the measured meter is unavailable.
    """
    if prefer not in _ORDER:
        raise ValueError(f"prefer={prefer!r}; choose one of {sorted(_ORDER)}")
    reasons: list[str] = []
    for kind in _ORDER[prefer]:
        if kind == "modelled":
            break
        reason = _probe(kind, device_index)
        if reason is None:
            meter: EnergyMeter
            try:
                meter = (
                    NvmlMeter(nvml_index(device_index), counter_period_s=counter_period_s)
                    if kind == "nvml"
                    else ZeusMeter(device_index, counter_period_s=counter_period_s)
                )
            except TelemetryError as exc:  # worked at probe time, failed now: treat as unavailable
                reason = str(exc)
            else:
                logger.info("energy meter: %s", meter.describe())
                return meter
        reasons.append(f"{kind}: {reason}")
    if strict and prefer != "modelled":
        raise TelemetryError(f"no measured energy meter available ({'; '.join(reasons)})")
    if reasons:
        logger.warning("energy meter: falling back to the modelled estimate (%s)", "; ".join(reasons))
    modelled = ModelledMeter(flops_per_step, bytes_per_step)
    logger.info("energy meter: %s", modelled.describe())
    return modelled
