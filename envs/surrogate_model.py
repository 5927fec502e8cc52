"""The fitted surrogate as data: per-workload tables and the excess dynamics, with their JSON form.

:func:`envs.fit.fit_surrogate` builds a :class:`SurrogateModel` from recorded traces and
:func:`envs.fit.default_model` loads (or refits) the one for the shipped traces; :mod:`envs.simulator` runs
episodes on a model it is handed. This module imports neither of them, nor gymnasium or torch.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from client.protocol import DEFAULT_GRID

__all__ = ["GRID_SHAPE", "SURROGATE_VERSION", "SurrogateModel", "WorkloadTables"]

SURROGATE_VERSION = "mango-surrogate-v1"
#: Shape ``(R, B, G)`` of the per-setting tables: :data:`client.protocol.DEFAULT_GRID`'s.
GRID_SHAPE: tuple[int, int, int] = DEFAULT_GRID.nvec


def _arr(x: Any, dtype: Any = np.float64) -> np.ndarray:
    return np.asarray(x, dtype=dtype)


@dataclass
class WorkloadTables:
    """Everything the surrogate knows about one workload (arrays over intervals ``[K+1]`` or the grid
    ``[R, B, G]`` of :data:`client.protocol.DEFAULT_GRID`).

    Built by :func:`envs.fit.fit_surrogate`; JSON round-trips through :meth:`SurrogateModel.to_json`.
    """

    name: str
    key: str
    intervals: int
    steps_per_interval: int
    ref_loss: np.ndarray  # [K+1] mean reference loss per interval (over recorded seeds)
    ref_loss_std: np.ndarray  # [K+1]
    ref_grad_norm: np.ndarray  # [K+1]
    ref_kurtosis: np.ndarray  # [K+1]
    lr: np.ndarray  # [K+1] learning rate at the end of each interval
    ref_interval_s: float  # reference per-interval median wall time, s
    ref_energy_j: float  # reference per-interval median energy, J
    ref_state_bytes: int  # reference (uncompressed) state bytes
    dense_state_bytes: int  # fp32 AdamW state bytes (8 per parameter)
    state_bytes: np.ndarray  # int64 [R, B, G], exact formula
    spectral_tail: np.ndarray  # [R]
    compression_error: np.ndarray  # [R, B, G]
    time_ratio: np.ndarray  # [R, B, G] interval_s / ref_interval_s
    energy_ratio: np.ndarray  # [R, B, G] energy_j / ref_energy_j
    excess_a: np.ndarray  # [R, B, G]
    excess_b: np.ndarray  # [R, B, G], scaled by (1 - progress)
    rho: float | None = None  # this workload's excess persistence (None: the model's shared rho)
    seed_sigma: float = 0.0  # relative std of the reference level across job seeds
    sigma_excess: float = 0.0  # residual std of the excess after the first compressed interval
    sigma_loss_std: float = 0.0  # log-normal std
    sigma_grad_norm: float = 0.0  # log-normal std
    sigma_kurtosis: float = 0.0  # additive std
    sigma_compression_error: float = 0.0  # log-normal std
    sigma_time: float = 0.0  # log-normal std of time (and energy) ratios
    energy_source: str = "modelled"

    def __post_init__(self) -> None:
        k1 = self.intervals + 1
        for name in ("ref_loss", "ref_loss_std", "ref_grad_norm", "ref_kurtosis", "lr"):
            a = _arr(getattr(self, name))
            if a.shape != (k1,):
                raise ValueError(f"WorkloadTables {self.name}: {name} has shape {a.shape}, expected ({k1},)")
            setattr(self, name, a)
        for name in ("compression_error", "time_ratio", "energy_ratio", "excess_a", "excess_b"):
            a = _arr(getattr(self, name))
            if a.shape != GRID_SHAPE:
                raise ValueError(
                    f"WorkloadTables {self.name}: {name} has shape {a.shape}, expected {GRID_SHAPE}"
                )
            setattr(self, name, a)
        self.state_bytes = _arr(self.state_bytes, np.int64).reshape(GRID_SHAPE)
        self.spectral_tail = _arr(self.spectral_tail).reshape(GRID_SHAPE[0])
        if not (self.ref_loss > 0).all():
            raise ValueError(f"WorkloadTables {self.name}: reference losses must be positive")

    @property
    def progress(self) -> np.ndarray:
        """``[K+1]`` progress at the end of each interval: ``(t + 1) / (K + 1)``."""
        return np.arange(1, self.intervals + 2, dtype=np.float64) / (self.intervals + 1)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = v.tolist() if isinstance(v, np.ndarray) else v
        return out


#: The lasting relative excess of a job's loss once it enters projection (rank > 0) after an unprojected
#: first interval: the measured cost of opening at rank 0 and projecting later, against projecting from the
#: start (issue 13; BENCHMARKS.md): 2.3 % (s20j52, H100, gpt-85m, balanced, r0/b8/g0 for 20 of 600 steps
#: then r64/b4/g0), 1.7 % (s20j51, the same on an H100 in session 20), 0.6 % (``benchmarks.switch_loss`` on
#: the H200, two seeds), 2.4-2.8 % (lm-small on the CPU, three seeds). The median, rounded.
LATE_ENTRY = 0.02


@dataclass
class SurrogateModel:
    """A fitted surrogate: per-workload tables, the shared excess dynamics ``rho`` and fit metadata.

    :ivar tables: workload name -> :class:`WorkloadTables`.
    :ivar rho: shared excess persistence per interval in ``[0, 1)`` (0: damage vanishes when compression
        stops); a workload's own ``WorkloadTables.rho`` overrides it.
    :ivar coef: fitted global coefficients (for the record; the tables already apply them).
    :ivar info: fit metadata (trace hash, episode counts, errors).
    :ivar late_entry: the loss a late entry into projection keeps for the rest of the run, relative to the
        reference loss (:data:`LATE_ENTRY`; measured on real runs, not fitted on the traces, whose schedules
        hold one setting). ``0``: a change of setting costs only its ``rho`` lag, as before session 21.
    """

    tables: dict[str, WorkloadTables]
    rho: float
    coef: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    version: str = SURROGATE_VERSION
    late_entry: float = LATE_ENTRY

    def workload(self, name: str) -> WorkloadTables:
        """Tables of a workload; ``ValueError`` says how to get traces for one that has none."""
        try:
            return self.tables[name]
        except KeyError:
            raise ValueError(
                f"the surrogate has no data for workload {name!r} (it knows {sorted(self.tables)}); record "
                f"traces for it with `mango record --workloads {name}` and refit with `mango fit`"
            ) from None

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": self.version,
                "rho": self.rho,
                "late_entry": self.late_entry,
                "coef": self.coef,
                "info": self.info,
                "tables": {k: t.to_dict() for k, t in self.tables.items()},
            }
        )

    @classmethod
    def from_json(cls, text: str) -> SurrogateModel:
        d = json.loads(text)
        if d.get("version") != SURROGATE_VERSION:
            raise ValueError(f"surrogate version {d.get('version')!r} is not {SURROGATE_VERSION!r}; refit")
        tables = {k: WorkloadTables(**v) for k, v in d["tables"].items()}
        return cls(
            tables=tables,
            rho=float(d["rho"]),
            coef=d.get("coef", {}),
            info=d.get("info", {}),
            late_entry=float(d.get("late_entry", LATE_ENTRY)),
        )

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> SurrogateModel:
        return cls.from_json(Path(path).read_text())
