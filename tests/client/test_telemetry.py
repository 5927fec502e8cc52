"""Telemetry: energy meters (modelled always; NVML/Zeus unavailable cleanly without a GPU; NVML logic on a
fault-injected fake library), memory accounting, interval statistics."""

from __future__ import annotations

import logging
import math
import mmap
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from client.telemetry import (
    EnergyModel,
    IntervalStats,
    MemoryTracker,
    ModelledMeter,
    NvmlMeter,
    TelemetryError,
    ZeusMeter,
    global_grad_norm,
    make_energy_meter,
    nvml_index,
    optimizer_state_bytes,
    probe_energy_meters,
)

NO_GPU = not torch.cuda.is_available()
ROOT = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------------------ modelled


def test_modelled_meter_follows_the_energy_model() -> None:
    model = EnergyModel()
    meter = ModelledMeter(flops_per_step=1e9, bytes_per_step=1e6, model=model)
    meter.begin()
    time.sleep(0.01)
    r = meter.end(steps=10)
    assert r.source == "modelled" and not r.coarse
    assert r.interval_s >= 0.01
    expected = 10 * 1e9 * 1e-12 + 10 * 1e6 * 3.1e-11 + 75.0 * r.interval_s
    assert r.energy_j == pytest.approx(expected, rel=1e-9)
    assert r.energy_j == pytest.approx(model.energy_j(1e10, 1e7, r.interval_s))
    assert r.mean_power_w == pytest.approx(r.energy_j / r.interval_s)


def test_modelled_energy_grows_with_work_and_bytes() -> None:
    m = EnergyModel(idle_power_w=0.0)
    assert m.energy_j(0.0, 0.0, 1.0) == 0.0
    assert m.energy_j(2e12, 0.0, 0.0) == pytest.approx(2.0)
    assert m.energy_j(0.0, 1e9, 0.0) < m.energy_j(0.0, 2e9, 0.0)


def test_modelled_meter_misuse() -> None:
    meter = ModelledMeter()
    with pytest.raises(TelemetryError, match="without begin"):
        meter.end()
    with pytest.raises(ValueError, match="must be >= 0"):
        ModelledMeter(flops_per_step=-1.0)


def test_factory_modelled_and_bad_prefer() -> None:
    meter = make_energy_meter("modelled", flops_per_step=5.0)
    assert isinstance(meter, ModelledMeter) and meter.flops_per_step == 5.0
    with pytest.raises(ValueError, match="prefer"):
        make_energy_meter("rapl")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ no GPU here


@pytest.mark.skipif(not NO_GPU, reason="checks the no-GPU fallback")
def test_probe_and_factory_fall_back_without_gpu(caplog: pytest.LogCaptureFixture) -> None:
    probe = probe_energy_meters(0)
    assert probe["nvml"] and "NVML" in probe["nvml"]
    assert probe["zeus"]  # a reason string, not an exception
    with caplog.at_level(logging.WARNING, logger="client.telemetry.energy"):
        meter = make_energy_meter("auto")
    assert isinstance(meter, ModelledMeter)
    assert "falling back to the modelled estimate" in caplog.text and "nvml:" in caplog.text
    assert isinstance(make_energy_meter("nvml"), ModelledMeter)
    with pytest.raises(TelemetryError, match="no measured energy meter"):
        make_energy_meter("nvml", strict=True)


@pytest.mark.skipif(not NO_GPU, reason="checks the no-GPU failure")
def test_meters_report_unavailable_without_gpu() -> None:
    with pytest.raises(TelemetryError, match="NVML nvmlInit failed"):
        NvmlMeter(0)
    with pytest.raises(TelemetryError, match="Zeus"):
        ZeusMeter(0)


@pytest.mark.skipif(not NO_GPU, reason="checks the no-GPU path")
def test_without_a_gpu_zeus_is_not_imported() -> None:
    """Zeus measures GPUs: where torch sees none, the auto meter does not import it (about a second for
    every process that builds a meter: the hook, the demo, the examples)."""
    code = (
        "import sys, torch; from client.telemetry import make_energy_meter; "
        "make_energy_meter('auto', 0).close(); print('zeus' in sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "False"


# ------------------------------------------------------------------------------------------ NVML logic


class FakeNVMLError(Exception):
    pass


class FakeNvml:
    """The pynvml surface NvmlMeter uses: ``counter_mj`` is read in order, ``fail`` injects faults."""

    NVMLError = FakeNVMLError

    def __init__(self, counter_mj: list[int], devices: int = 1) -> None:
        self.counter_mj = list(counter_mj)
        self.devices = devices
        self.fail: set[str] = set()
        self.inits = 0
        self.shutdowns = 0

    def _maybe_fail(self, fn: str) -> None:
        if fn in self.fail:
            raise FakeNVMLError(f"injected fault in {fn}")

    def nvmlInit(self) -> None:
        self._maybe_fail("nvmlInit")
        self.inits += 1

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlDeviceGetHandleByIndex(self, i: int) -> Any:
        self._maybe_fail("nvmlDeviceGetHandleByIndex")
        if i >= self.devices:
            raise FakeNVMLError("Invalid Argument")
        return ("handle", i)

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: Any) -> int:
        self._maybe_fail("nvmlDeviceGetTotalEnergyConsumption")
        return self.counter_mj.pop(0)

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: Any) -> int:
        return 700_000


def test_nvml_energy_is_counter_difference_in_joules() -> None:
    fake = FakeNvml([0, 1_000_000, 1_250_500])  # probe read, begin, end
    meter = NvmlMeter(0, counter_period_s=0.0, nvml=fake)
    meter.begin()
    time.sleep(0.01)
    r = meter.end()
    assert r.source == "nvml" and not r.coarse
    assert r.energy_j == pytest.approx(250.5)
    assert r.mean_power_w == pytest.approx(250.5 / r.interval_s)
    assert meter.power_limit_w == 700.0
    meter.close()
    assert fake.shutdowns == 1


def test_nvml_coarse_flag_follows_counter_period() -> None:
    fake = FakeNvml([0, 10, 20, 30, 40])
    meter = NvmlMeter(0, counter_period_s=3600.0, nvml=fake)
    meter.begin()
    assert meter.end().coarse  # any real interval is shorter than an hour
    meter.counter_period_s = 0.005
    meter.begin()
    time.sleep(0.02)
    assert not meter.end().coarse


def test_nvml_faults_become_telemetry_errors() -> None:
    fake = FakeNvml([0, 100, 50])
    meter = NvmlMeter(0, nvml=fake)
    with pytest.raises(TelemetryError, match="without begin"):
        meter.end()
    meter.begin()
    with pytest.raises(TelemetryError, match="went backwards"):
        meter.end()
    fake.counter_mj = [0]
    fake.fail.add("nvmlDeviceGetTotalEnergyConsumption")
    with pytest.raises(TelemetryError, match=r"nvmlDeviceGetTotalEnergyConsumption failed.*injected fault"):
        meter.begin()


def test_nvml_construction_faults() -> None:
    fake = FakeNvml([0], devices=1)
    with pytest.raises(TelemetryError, match="nvmlDeviceGetHandleByIndex failed on device 3"):
        NvmlMeter(3, nvml=fake)
    assert fake.shutdowns == fake.inits == 1  # init balanced by shutdown
    fake.fail.add("nvmlDeviceGetTotalEnergyConsumption")  # a board without the energy counter
    with pytest.raises(TelemetryError, match="TotalEnergyConsumption"):
        NvmlMeter(0, nvml=fake)
    with pytest.raises(ValueError, match="device_index"):
        NvmlMeter(-1, nvml=fake)


class _SimClock:
    """Simulated seconds: the steps of a test advance it."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class _SteppedCounter(FakeNvml):
    """NVML's counter as boards show it, in simulated time: ``power_w(t)`` integrated, visible only at
    moves every ``period_s`` (shifted by ``phase_s``)."""

    def __init__(self, clock: _SimClock, power_w: float, period_s: float = 0.1, phase_s: float = 0.0) -> None:
        super().__init__([])
        self.clock, self.power_w, self.period_s, self.phase_s = clock, power_w, period_s, phase_s

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: Any) -> int:
        self._maybe_fail("nvmlDeviceGetTotalEnergyConsumption")
        last_move = math.floor((self.clock.t + self.phase_s) / self.period_s) * self.period_s - self.phase_s
        return int(max(last_move, 0.0) * self.power_w * 1000)


def _interval(meter: NvmlMeter, clock: _SimClock, steps: int, step_s: float, poll: bool = True) -> Any:
    meter.begin()
    for _ in range(steps):
        clock.t += step_s
        if poll:
            meter.poll()
    return meter.end()


def test_nvml_polled_window_reads_the_power_between_counter_moves() -> None:
    """A 20-step interval of 17 ms steps (0.34 s) on a counter that moves every 0.1 s: the plain counter
    difference holds 3 or 4 periods' energy (-12 % or +18 %); with a poll every step the meter reads the
    power between the moves inside the window: within 10 % at every phase (each move dated to within half a
    step), and on average off by less than half the plain difference's error."""
    plain, polled = [], []
    for i in range(40):
        clock = _SimClock()
        clock.t = 5.0 + i * 0.0025  # 40 phases across one counter period
        fake = _SteppedCounter(clock, power_w=300.0, period_s=0.1)
        meter = NvmlMeter(0, counter_period_s=0.1, nvml=fake, clock=clock)
        r = _interval(meter, clock, 20, 0.017)
        assert r.source == "nvml" and not r.coarse
        assert r.interval_s == pytest.approx(0.34)
        polled.append(r.energy_j / (300.0 * r.interval_s) - 1.0)
        assert r.mean_power_w == pytest.approx(r.energy_j / r.interval_s)
        r0 = _interval(meter, clock, 20, 0.017, poll=False)  # the same window unpolled: the plain difference
        plain.append(r0.energy_j / (300.0 * r0.interval_s) - 1.0)
    assert max(map(abs, polled)) < 0.1  # the moves dated to within half a step (8.5 ms) over >= 0.2 s
    assert statistics.fmean(map(abs, polled)) < 0.5 * statistics.fmean(map(abs, plain))
    assert max(map(abs, plain)) > 0.15  # what the polls fix: 3 or 4 periods' energy, -12 % or +18 %


def test_nvml_move_seen_after_a_long_gap_is_not_dated() -> None:
    """A move first seen by a read long after the previous one (the interval's final sync, a slow step) is
    not dated by that read: 300 ms of 5 ms steps then an 80 ms sync read the board's power within 6 %; dated
    at the late read, the last move would move the power by up to a fifth."""
    for i in range(20):
        clock = _SimClock()
        clock.t = 3.0 + i * 0.005
        meter = NvmlMeter(0, counter_period_s=0.1, nvml=_SteppedCounter(clock, 250.0), clock=clock)
        meter.begin()
        for _ in range(60):
            clock.t += 0.005
            meter.poll()
        clock.t += 0.08  # the host waits on the device; the counter moves meanwhile
        r = meter.end()
        assert r.mean_power_w == pytest.approx(250.0, rel=0.06)


def test_nvml_poll_is_throttled_and_never_raises() -> None:
    """``poll`` reads the counter at most every ``poll_period_s``; a failing read does not raise in the
    training step (``end`` reports it); outside a window it does nothing."""
    clock = _SimClock()
    fake = _SteppedCounter(clock, 100.0)
    reads = 0
    read = fake.nvmlDeviceGetTotalEnergyConsumption

    def counting(handle: Any) -> int:
        nonlocal reads
        reads += 1
        return read(handle)

    fake.nvmlDeviceGetTotalEnergyConsumption = counting  # type: ignore[method-assign]
    meter = NvmlMeter(0, nvml=fake, clock=clock, poll_period_s=0.002)
    meter.poll()  # no window
    meter.begin()
    reads = 0
    for _ in range(100):  # 100 steps of 0.2 ms: 20 ms, so about 10 reads
        clock.t += 0.0002
        meter.poll()
    assert 9 <= reads <= 11
    fake.fail.add("nvmlDeviceGetTotalEnergyConsumption")
    clock.t += 0.01
    meter.poll()
    with pytest.raises(TelemetryError, match="injected fault"):
        meter.end()
    with pytest.raises(ValueError, match="poll_period_s"):
        NvmlMeter(0, nvml=FakeNvml([0]), poll_period_s=0.05, max_read_gap_s=0.02)


def test_nvml_index_follows_cuda_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert nvml_index(1) == 1
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2, 3")
    assert (nvml_index(0), nvml_index(1), nvml_index(5)) == (2, 3, 5)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-1234")
    assert nvml_index(0) == 0


# ------------------------------------------------------------------------------------------ memory


def test_optimizer_state_bytes_counts_tensors() -> None:
    model = torch.nn.Linear(32, 16)
    opt = torch.optim.AdamW(model.parameters())
    assert optimizer_state_bytes(opt) == 0
    model(torch.randn(4, 32)).sum().backward()
    opt.step()
    n = sum(p.numel() for p in model.parameters())
    assert optimizer_state_bytes(opt) >= 8 * n  # exp_avg + exp_avg_sq in fp32 (+ step scalars)

    class WithCount:
        def state_bytes(self) -> int:
            return 123

    assert optimizer_state_bytes(WithCount()) == 123


def _status_bytes(field: str) -> int | None:
    """A ``/proc/self/status`` size field (``VmRSS``, ``RssAnon``) in bytes, or None off Linux."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def test_memory_tracker_cpu_peak() -> None:
    """The CPU peak covers what is resident while 64 MiB of fresh pages live, and a reset brings it down.

    Not ``peak >= before + 64 MiB``: the resident set also holds file pages (the libraries), which this
    machine's reclaim drops at any time, so the resident total can fall while the tensor is allocated
    (seen late in long test runs). The new pages are checked in the anonymous part instead."""
    tracker = MemoryTracker("cpu")
    assert tracker.source in ("process_rss_peak", "process_rss_peak_since_start")
    tracker.reset()
    before = tracker.read().peak_bytes
    anon0 = _status_bytes("RssAnon")
    # A fresh private anonymous mapping, one byte written in every page. Not a tensor: the allocator may hand
    # back pages freed earlier in the run that are still resident (seen in CI: RssAnon did not move). Not
    # mmap's default either: a shared mapping counts as RssShmem, not RssAnon.
    big = mmap.mmap(-1, 64 * 1024 * 1024, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    for offset in range(0, len(big), mmap.PAGESIZE):
        big[offset] = 1  # 64 MiB, touched
    after = tracker.read()
    rss, anon1 = _status_bytes("VmRSS"), _status_bytes("RssAnon")
    assert after.peak_bytes >= before
    if rss is not None and anon0 is not None and anon1 is not None:
        assert anon1 - anon0 >= 48 * 1024 * 1024  # the tensor is resident...
        assert after.peak_bytes >= rss  # ...and the peak covers everything resident now
    big.close()
    assert tracker.read().peak_bytes >= before  # the window's peak never goes down
    if tracker.source == "process_rss_peak":  # reset works here: the peak comes back down
        tracker.reset()
        assert tracker.read().peak_bytes < after.peak_bytes


# ------------------------------------------------------------------------------------------ stats


def test_interval_stats_mean_std_and_nonfinite() -> None:
    s = IntervalStats()
    vals = [2.0, 3.5, 1.25, 4.0]
    for i, v in enumerate(vals):
        s.add_loss(torch.tensor(v) if i % 2 else v)
    s.add_loss(torch.tensor(float("nan")))
    s.add_grad_norm(torch.tensor(1.0))
    s.add_grad_norm(3.0)
    out = s.summary()
    assert out.steps == 5 and out.nonfinite_losses == 1
    assert out.loss_mean == pytest.approx(statistics.fmean(vals))
    assert out.loss_std == pytest.approx(statistics.pstdev(vals))
    assert out.grad_norm_mean == pytest.approx(2.0) and out.grad_norm_samples == 2
    s.reset()
    empty = s.summary()
    assert empty.steps == 0 and math.isnan(empty.loss_mean) and math.isnan(empty.grad_norm_mean)
    with pytest.raises(ValueError, match="scalar"):
        s.add_loss(torch.ones(3))


def test_interval_stats_random_matches_statistics() -> None:
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        xs = (torch.randn(37, generator=g) * 3 + 1).tolist()
        s = IntervalStats()
        for x in xs:
            s.add_loss(torch.tensor(x, dtype=torch.float64))
        out = s.summary()
        assert out.loss_mean == pytest.approx(statistics.fmean(xs), rel=1e-9)
        assert out.loss_std == pytest.approx(statistics.pstdev(xs), rel=1e-9)


def test_global_grad_norm_matches_clip_grad_norm() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    params = list(model.parameters())
    assert global_grad_norm(params) is None
    model(torch.randn(5, 8)).pow(2).sum().backward()
    got = global_grad_norm(params)
    ref = torch.nn.utils.clip_grad_norm_(params, max_norm=float("inf"))
    assert got is not None and float(got) == pytest.approx(float(ref), rel=1e-5)
