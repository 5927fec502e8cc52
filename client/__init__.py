"""MANGO client: the wire contract, the compression core, telemetry, controllers and the optimizer hook.

Public surface (one screen):

- :mod:`client.protocol` - ``CompressionSetting``, ``ActionGrid``, ``TelemetryRecord``, ``Objective``,
  ``Reference``, ``DecideRequest``, ``Decision``, ``ObservationSpec`` (the contract, single-sourced).
- :mod:`client.compression` - ``MangoAdamW`` and the pure operators (projection, quantization, feedback).
- :mod:`client.hook` - ``AdaptiveCompression`` (telemetry + decisions; ``state_dict`` for resumes).
- :mod:`client.integrations` - Lightning, HF Transformers ``Trainer`` and Accelerate (optional extra).
"""

from client.protocol import (
    DEFAULT_GRID,
    ActionGrid,
    CompressionSetting,
    DecideRequest,
    Decision,
    Objective,
    ObservationSpec,
    Reference,
    TelemetryRecord,
)

__all__ = [
    "DEFAULT_GRID",
    "ActionGrid",
    "CompressionSetting",
    "DecideRequest",
    "Decision",
    "Objective",
    "ObservationSpec",
    "Reference",
    "TelemetryRecord",
]
