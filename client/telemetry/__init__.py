"""Telemetry: energy meters (NVML, Zeus, modelled), memory accounting, per-interval statistics.

- :func:`make_energy_meter` / :class:`EnergyMeter` - ``begin()`` / ``end(steps) -> EnergyReading``;
  :func:`probe_energy_meters` says which measured meters work here and why not.
- :class:`MemoryTracker` - per-interval peak memory, labelled with its source; :func:`optimizer_state_bytes`.
- :class:`IntervalStats` - loss mean/std and gradient norms over an interval, one device sync per interval.
- :class:`TelemetryError` - the package's runtime fault.
"""

from client.telemetry.energy import (
    DEFAULT_COUNTER_PERIOD_S,
    EnergyMeter,
    EnergyModel,
    EnergyReading,
    ModelledMeter,
    NvmlMeter,
    TelemetryError,
    ZeusMeter,
    make_energy_meter,
    nvml_index,
    probe_energy_meters,
)
from client.telemetry.memory import MemoryReading, MemorySource, MemoryTracker, optimizer_state_bytes
from client.telemetry.stats import IntervalStats, IntervalSummary, global_grad_norm

__all__ = [
    "DEFAULT_COUNTER_PERIOD_S",
    "EnergyMeter",
    "EnergyModel",
    "EnergyReading",
    "IntervalStats",
    "IntervalSummary",
    "MemoryReading",
    "MemorySource",
    "MemoryTracker",
    "ModelledMeter",
    "NvmlMeter",
    "TelemetryError",
    "ZeusMeter",
    "global_grad_norm",
    "make_energy_meter",
    "nvml_index",
    "optimizer_state_bytes",
    "probe_energy_meters",
]
