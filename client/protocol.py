"""The wire contract between training jobs, the policy service and the offline environment.

This module is the single source of truth (DESIGN section 3): the client, the service and the Gymnasium
environment all import these models, and :meth:`ObservationSpec.encode` is the one function that turns raw
telemetry into a policy's input.

Every float is checked to be finite; a non-finite value, an out-of-grid setting or an oversized history is
rejected with a :class:`pydantic.ValidationError` (a ``ValueError``) whose message names the field.

Knobs of a :class:`CompressionSetting`:

* ``rank`` - rank of the low-rank projection of each compressible 2-D state; ``0`` means no projection.
  Lower rank: less memory, more compression error (the tail singular-value energy, seed Lemma 1).
* ``bits`` - bits per stored state value: 2, 3, 4 (NF4 at 4), 8 (block-wise), 16 (bf16), 32 (off).
  Error shrinks about 4x per extra bit (seed Lemma 2).
* ``gamma`` - variance-reduction shift in [0, 1]: the fraction of the last reconstructed value used as the
  reference that the compressor encodes the innovation against. ``0`` is plain compression.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

__all__ = [
    "COST_PROFILE_VERSION",
    "DEFAULT_GRID",
    "MAX_HISTORY",
    "OBS_SPEC_VERSION",
    "ActionGrid",
    "CompressionSetting",
    "CostProfile",
    "DecideRequest",
    "Decision",
    "EnergySource",
    "Objective",
    "ObservationSpec",
    "Reference",
    "SettingCost",
    "TelemetryRecord",
]

#: Longest telemetry window a request may carry (the policy's context length).
MAX_HISTORY = 8
#: Version of :class:`ObservationSpec`; a policy artifact records it and the server refuses unknown ones.
#: v2 (issue 13): the job block carries the hardware cost profile's features (:attr:`ObservationSpec.
#: PROFILE_FEATURES`), so one policy serves different hardware.
#: v3 (issue 13): the loss features are relative to the window's oldest loss instead of the run's first
#: interval, so their range does not grow with the length of the job (``loss_win``, ``loss_std_win``,
#: ``loss_delta``).
OBS_SPEC_VERSION = "mango-obs-v3"
#: Version of :class:`CostProfile` (the ``mango profile`` JSON); readers refuse others.
COST_PROFILE_VERSION = "mango-cost-v1"

EnergySource = Literal["nvml", "zeus", "modelled"]

_FROZEN = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
NonNegFloat = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]


class ActionGrid(BaseModel):
    """The discrete choices a policy picks from; the action space is ``MultiDiscrete(nvec)``.

    An action is a triple of indices ``(rank_idx, bits_idx, gamma_idx)`` into the three tuples.
    """

    model_config = _FROZEN

    version: str = "grid-v1"
    ranks: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 0)
    bits: tuple[int, ...] = (2, 3, 4, 8, 16, 32)
    gammas: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)

    @field_validator("ranks")
    @classmethod
    def _ranks_ok(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v or any(r < 0 for r in v) or len(set(v)) != len(v):
            raise ValueError("ranks must be distinct non-negative integers (0 = no projection)")
        return v

    @field_validator("bits")
    @classmethod
    def _bits_ok(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v or any(b not in (2, 3, 4, 8, 16, 32) for b in v) or len(set(v)) != len(v):
            raise ValueError("bits must be distinct values from {2, 3, 4, 8, 16, 32}")
        return v

    @field_validator("gammas")
    @classmethod
    def _gammas_ok(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if not v or any(not (0.0 <= g <= 1.0) for g in v):
            raise ValueError("gammas must lie in [0, 1]")
        return v

    @property
    def nvec(self) -> tuple[int, int, int]:
        """Sizes of the three action components, for ``gymnasium.spaces.MultiDiscrete``."""
        return (len(self.ranks), len(self.bits), len(self.gammas))

    @property
    def size(self) -> int:
        """Number of grid points (``prod(nvec)``): the size of a joint action head."""
        r, b, g = self.nvec
        return r * b * g

    def unravel(self, index: int | np.ndarray) -> np.ndarray:
        """Flat grid indices (rank-major, the order of :meth:`all_settings`) -> actions ``[..., 3]`` (int64).

        A joint action head picks one of :attr:`size` points; this gives its ``(rank_idx, bits_idx,
        gamma_idx)``. Indices outside ``[0, size)`` raise ``ValueError``.
        """
        idx = np.asarray(index, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= self.size):
            raise ValueError(f"flat index {idx.tolist()} is outside the grid's {self.size} points")
        return np.stack(np.unravel_index(idx, self.nvec), axis=-1).astype(np.int64)

    def ravel(self, actions: Sequence[int] | np.ndarray) -> np.ndarray:
        """Inverse of :meth:`unravel`: actions ``[..., 3]`` -> flat indices ``[...]`` (int64)."""
        a = np.asarray(actions, dtype=np.int64)
        if a.shape[-1:] != (3,) or (a < 0).any() or (a >= np.asarray(self.nvec)).any():
            grid = f"MultiDiscrete{list(self.nvec)}"
            raise ValueError(f"actions of shape {a.shape} are not grid indices of {grid}")
        return np.ravel_multi_index(tuple(np.moveaxis(a, -1, 0)), self.nvec).astype(np.int64)

    def setting(self, action: Sequence[int] | np.ndarray) -> CompressionSetting:
        """Map an action ``(rank_idx, bits_idx, gamma_idx)`` to its setting."""
        a = [int(x) for x in np.asarray(action).reshape(-1)]
        if len(a) != 3 or not all(0 <= a[i] < self.nvec[i] for i in range(3)):
            raise ValueError(f"action {a} is outside the grid's MultiDiscrete{list(self.nvec)}")
        return CompressionSetting(rank=self.ranks[a[0]], bits=self.bits[a[1]], gamma=self.gammas[a[2]])

    def action(self, setting: CompressionSetting) -> tuple[int, int, int]:
        """Inverse of :meth:`setting`; raises ``ValueError`` naming the component that is off the grid."""
        self.check(setting)
        gi = min(range(len(self.gammas)), key=lambda i: abs(self.gammas[i] - setting.gamma))
        return (self.ranks.index(setting.rank), self.bits.index(setting.bits), gi)

    def check(self, setting: CompressionSetting) -> None:
        """Raise ``ValueError`` if ``setting`` is not one of this grid's points."""
        if setting.rank not in self.ranks:
            raise ValueError(f"rank={setting.rank} is not on grid {self.version} ranks {self.ranks}")
        if setting.bits not in self.bits:
            raise ValueError(f"bits={setting.bits} is not on grid {self.version} bits {self.bits}")
        if not any(abs(g - setting.gamma) < 1e-9 for g in self.gammas):
            raise ValueError(f"gamma={setting.gamma} is not on grid {self.version} gammas {self.gammas}")

    def all_settings(self) -> list[CompressionSetting]:
        """Every point of the grid, rank-major."""
        return [
            CompressionSetting(rank=r, bits=b, gamma=g)
            for r in self.ranks
            for b in self.bits
            for g in self.gammas
        ]


DEFAULT_GRID = ActionGrid()


class CompressionSetting(BaseModel):
    """One point of the compression core's knob space (see the module docstring for each knob).

    ``rank`` and ``bits`` must be values of the default grid; ``gamma`` must lie in [0, 1].

    >>> CompressionSetting(rank=8, bits=4, gamma=0.0)
    CompressionSetting(rank=8, bits=4, gamma=0.0)
    """

    model_config = _FROZEN

    rank: int = Field(ge=0, description="low-rank projection rank; 0 = no projection")
    bits: int = Field(description="bits per stored value: 2, 3, 4, 8, 16 (bf16) or 32 (off)")
    gamma: float = Field(0.0, ge=0.0, le=1.0, allow_inf_nan=False, description="variance-reduction shift")

    @field_validator("rank")
    @classmethod
    def _rank_on_grid(cls, v: int) -> int:
        if v not in DEFAULT_GRID.ranks:
            raise ValueError(f"rank={v} is off the action grid; choose one of {sorted(DEFAULT_GRID.ranks)}")
        return v

    @field_validator("bits")
    @classmethod
    def _bits_on_grid(cls, v: int) -> int:
        if v not in DEFAULT_GRID.bits:
            raise ValueError(f"bits={v} is off the action grid; choose one of {list(DEFAULT_GRID.bits)}")
        return v

    @property
    def is_off(self) -> bool:
        """True when the setting compresses nothing (no projection, 32 bits, no shift)."""
        return self.rank == 0 and self.bits == 32 and self.gamma == 0.0

    @classmethod
    def off(cls) -> CompressionSetting:
        """The uncompressed setting (plain AdamW)."""
        return cls(rank=0, bits=32, gamma=0.0)

    def label(self) -> str:
        """Short human label, e.g. ``r8/b4/g0.25``; :meth:`parse` is its inverse."""
        return f"r{self.rank}/b{self.bits}/g{self.gamma:g}"

    @classmethod
    def parse(cls, label: str) -> CompressionSetting:
        """Inverse of :meth:`label`: ``"r8/b4"`` or ``"r8/b4/g0.25"`` (gamma defaults to 0).

        Raises ``ValueError`` saying the expected form and why the label failed (bad syntax or off the grid).
        Labels repeat (every profile a job sends names the same settings), so parsed ones are cached.
        """
        if cls is CompressionSetting:
            return _parse_setting(str(label))
        return cls._parse_uncached(label)

    @classmethod
    def _parse_uncached(cls, label: str) -> CompressionSetting:
        try:
            parts = {p[0]: p[1:] for p in str(label).strip().split("/") if p}
            if set(parts) - {"r", "b", "g"}:
                raise ValueError(f"unknown component(s) {sorted(set(parts) - {'r', 'b', 'g'})}")
            return cls(rank=int(parts["r"]), bits=int(parts["b"]), gamma=float(parts.get("g", 0.0)))
        except (KeyError, ValueError) as exc:
            if isinstance(exc, KeyError):
                reason = f"missing {exc}"
            elif isinstance(exc, ValidationError):  # off the grid: pydantic's message names the field
                reason = "; ".join(str(e["msg"]) for e in exc.errors())
            else:
                reason = str(exc)
            raise ValueError(
                f"setting label {label!r} is not like rR/bB[/gG] with grid values "
                f"(e.g. r8/b4 or r8/b4/g0.5): {reason}"
            ) from None


@functools.lru_cache(maxsize=4096)
def _parse_setting(label: str) -> CompressionSetting:
    """:meth:`CompressionSetting.parse`, cached per label (settings are frozen; a bad label is not cached)."""
    return CompressionSetting._parse_uncached(label)


class TelemetryRecord(BaseModel):
    """One control interval of a training job, in physical units (all floats finite)."""

    model_config = _FROZEN

    step: int = Field(ge=0, description="optimizer step at the end of the interval")
    loss: FiniteFloat = Field(description="mean training loss over the interval")
    loss_std: NonNegFloat = Field(0.0, description="standard deviation of the loss over the interval")
    grad_norm: NonNegFloat = Field(description="mean global gradient L2 norm over the interval")
    compression_error: NonNegFloat = Field(
        0.0, description="relative compression error ||x - C(x)||^2 / ||x||^2 of the compressed states"
    )
    grad_kurtosis: FiniteFloat = Field(0.0, description="excess kurtosis of gradient entries")
    spectral_tail: Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)] = Field(
        0.0, description="fraction of gradient energy outside the top-r subspace (estimated)"
    )
    state_bytes: int = Field(ge=0, description="optimizer + compression state bytes, counted from tensors")
    peak_memory_bytes: int = Field(0, ge=0, description="device peak memory over the interval")
    energy_j: NonNegFloat = Field(0.0, description="energy used over the interval, joules")
    mean_power_w: NonNegFloat = Field(0.0, description="mean power over the interval, watts")
    energy_source: EnergySource = Field("modelled", description="'nvml' | 'zeus' | 'modelled'")
    energy_coarse: bool = Field(
        False, description="interval shorter than the energy counter's update period: energy is coarse"
    )
    interval_s: NonNegFloat = Field(description="wall time of the interval, seconds")
    lr: NonNegFloat = Field(description="learning rate in force at the end of the interval")
    setting: CompressionSetting
    progress: Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)] | None = Field(
        None, description="step / planned steps, if known"
    )
    skipped_steps: int = Field(
        0, ge=0, description="tensor (fused rank-0 step: tile) updates skipped for non-finite gradients"
    )
    comm_bytes: int = Field(0, ge=0, description="bytes communicated per step (DDP hook mode)")
    comm_time_s: NonNegFloat = Field(0.0, description="communication time per step, seconds (DDP hook mode)")


class Objective(BaseModel):
    """The job's trade-off: J = w_loss*Loss + w_memory*Memory + w_energy*Energy + w_time*Time.

    Each weight is non-negative and at least one is positive. ``memory_budget_bytes`` is a hard cap on
    optimizer-state bytes enforced by the service's shield (and a constraint, not a cost, in the reward).
    ``max_step_time_ratio`` caps the optimizer step time of a setting relative to plain AdamW's on the job's
    hardware (e.g. ``1.25``); the shield enforces it from the request's :class:`CostProfile` and ignores it
    without one.
    """

    model_config = _FROZEN

    w_loss: NonNegFloat = 1.0
    w_memory: NonNegFloat = 0.0
    w_energy: NonNegFloat = 0.0
    w_time: NonNegFloat = 0.0
    memory_budget_bytes: int | None = Field(None, gt=0)
    max_step_time_ratio: Annotated[float, Field(ge=1.0, allow_inf_nan=False)] | None = None

    @model_validator(mode="after")
    def _not_all_zero(self) -> Objective:
        if self.w_loss + self.w_memory + self.w_energy + self.w_time <= 0.0:
            raise ValueError("objective weights w_loss, w_memory, w_energy, w_time are all zero; set one > 0")
        return self

    def weights(self) -> np.ndarray:
        """The four weights as a float32 vector (loss, memory, energy, time)."""
        return np.array([self.w_loss, self.w_memory, self.w_energy, self.w_time], dtype=np.float32)

    def normalized(self) -> np.ndarray:
        """Weights scaled to sum to one."""
        w = self.weights()
        return w / w.sum()


class Reference(BaseModel):
    """What the uncompressed run of the same job costs, to normalize telemetry (all positive, finite).

    The client fills it from its own numbers (dense AdamW state bytes are 8 bytes per parameter; the first
    interval gives loss, energy and time); when absent, :meth:`from_history` derives one. The observation
    (since ``mango-obs-v3``) reads memory, energy and time against it; ``initial_loss`` is the unit of the
    reward's loss term and of the shield, not an observation input.
    """

    model_config = _FROZEN

    initial_loss: Annotated[float, Field(gt=0.0, allow_inf_nan=False)]
    dense_state_bytes: int = Field(gt=0)
    interval_energy_j: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] = 1.0
    interval_s: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] = 1.0

    @classmethod
    def from_history(cls, history: Sequence[TelemetryRecord]) -> Reference:
        """A best-effort reference from the oldest record of a window."""
        first = history[0]
        return cls(
            initial_loss=max(abs(first.loss), 1e-6),
            dense_state_bytes=max(first.state_bytes, 1),
            interval_energy_j=max(first.energy_j, 1e-6),
            interval_s=max(first.interval_s, 1e-6),
        )


class SettingCost(BaseModel):
    """What one setting costs per optimizer step on the profiled device and parameter shapes."""

    model_config = _FROZEN

    step_s: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] = Field(
        description="optimizer step, seconds"
    )
    energy_j: NonNegFloat | None = Field(
        None, description="energy per optimizer step, joules (None: unknown)"
    )
    state_bytes: int | None = Field(None, ge=0, description="optimizer + compression state bytes")


def _log2(x: float) -> float:
    return math.log2(max(x, 1e-6))


class CostProfile(BaseModel):
    """Measured cost of the action grid on one job's hardware (``mango profile``; :mod:`client.profile`).

    ``settings`` maps setting labels (``r0/b8/g0``) to their per-step cost; a covering subset of the grid
    is measured and :meth:`cost` answers for any grid point from the nearest measured one (same projection
    class, nearest bits, gamma class, rank). ``adamw_*`` is plain torch AdamW on the same parameters (fused
    on CUDA), the unit of every ratio. ``train_step_s`` (forward + backward + AdamW step), when measured,
    turns an optimizer-step ratio into a training-step ratio (:meth:`interval_ratio`).

    ``source`` says whether the step times were measured (``"measured"``) or built from another table
    (``"modelled"``); ``energy_source`` whether the energy came from NVML/Zeus or from a power model.
    """

    model_config = _FROZEN

    version: Literal["mango-cost-v1"] = "mango-cost-v1"
    device: str = Field(min_length=1, max_length=200, description="device name, e.g. 'NVIDIA H200'")
    signature: str = Field(min_length=1, max_length=64, description="hash of the parameter shapes profiled")
    source: Literal["measured", "modelled"] = "measured"
    energy_source: EnergySource = "modelled"
    n_params: int = Field(gt=0)
    adamw_step_s: Annotated[float, Field(gt=0.0, allow_inf_nan=False)]
    adamw_energy_j: NonNegFloat | None = None
    train_step_s: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] | None = None
    settings: dict[str, SettingCost] = Field(min_length=1)
    note: str = Field("", max_length=2000)

    @field_validator("settings")
    @classmethod
    def _labels_on_grid(cls, v: dict[str, SettingCost]) -> dict[str, SettingCost]:
        for label in v:
            CompressionSetting.parse(label)  # ValueError naming the bad label
        return v

    def cost(self, setting: CompressionSetting) -> SettingCost:
        """The measured cost of ``setting``, or of the nearest measured setting (see the class docstring)."""
        return self._cost_of(setting.label())

    def _cost_of(self, label: str) -> SettingCost:
        """:meth:`cost` by canonical label (the service answers every window with a profile: a label lookup,
        and the nearest measured setting cached per set of measured labels)."""
        exact = self.settings.get(label)
        if exact is not None:
            return exact
        return self.settings[_nearest_label(tuple(self.settings), label)]

    def step_ratio(self, setting: CompressionSetting) -> float:
        """Optimizer step time of ``setting`` over AdamW's (1.0 = AdamW speed)."""
        return self.cost(setting).step_s / self.adamw_step_s

    def energy_ratio(self, setting: CompressionSetting) -> float:
        """Optimizer step energy over AdamW's; falls back to :meth:`step_ratio` where energy is unknown."""
        c = self.cost(setting)
        if c.energy_j is None or not self.adamw_energy_j:
            return self.step_ratio(setting)
        return c.energy_j / self.adamw_energy_j

    def train_step_from_interval(self, setting: CompressionSetting, interval_s: float, steps: int) -> float:
        """The uncompressed training step (forward, backward, AdamW) that an interval of ``steps`` steps at
        ``setting`` taking ``interval_s`` implies: its time per step less what the setting's optimizer step
        costs over AdamW's by this profile. It holds whatever else the job does each step (data, logging)."""
        return interval_s / steps - (self.cost(setting).step_s - self.adamw_step_s)

    @property
    def optimizer_share(self) -> float | None:
        """AdamW's share of a training step (``adamw_step_s / train_step_s``), if the step was measured."""
        if self.train_step_s is None:
            return None
        return min(self.adamw_step_s / self.train_step_s, 1.0)

    def interval_ratio(self, setting: CompressionSetting) -> float:
        """Training-step time of ``setting`` over the uncompressed run's: ``1 + share * (step_ratio - 1)``.

        Without a measured training step the optimizer's step ratio itself is returned (an upper bound for
        a slower setting, so a budget check errs on the safe side).
        """
        share = self.optimizer_share
        r = self.step_ratio(setting)
        return r if share is None else 1.0 + share * (r - 1.0)

    #: Settings whose step-time ratios :meth:`features` reports (the grid's cost classes).
    FEATURE_SETTINGS: ClassVar[tuple[str, ...]] = (
        "r0/b8/g0",
        "r0/b4/g0",
        "r0/b16/g0",
        "r8/b8/g0",
        "r0/b8/g0.5",
    )

    def features(self) -> list[float]:
        """:attr:`ObservationSpec.PROFILE_FEATURES` (before clipping): presence, the optimizer's share of a
        step, and ``log2`` step-time ratios of the cost classes divided by 4."""
        share = self.optimizer_share
        out = [1.0, share if share is not None else 0.0, 1.0 if share is not None else 0.0]
        out += [_log2(self._cost_of(lb).step_s / self.adamw_step_s) / 4.0 for lb in self.FEATURE_SETTINGS]
        return out


@functools.lru_cache(maxsize=64)
def _nearest_label(labels: tuple[str, ...], target: str) -> str:
    """The label of ``labels`` nearest to ``target`` (:meth:`CostProfile.cost`'s distance: projection class
    first, then the shift's presence, bits, rank and gamma); the first of equals, as ``min`` picks.

    A service sees few label sets (one per profiling code), and a key holds a whole request's labels, so the
    cache stays small: 64 keys of at most one request body each."""
    t = CompressionSetting.parse(target)

    def dist(label: str) -> float:
        s = CompressionSetting.parse(label)
        return (
            8.0 * ((s.rank > 0) != (t.rank > 0))
            + 3.0 * ((s.gamma > 0) != (t.gamma > 0))
            + abs(math.log2(s.bits) - math.log2(t.bits))
            + 0.25 * abs(math.log2(max(s.rank, 1)) - math.log2(max(t.rank, 1)))
            + 0.5 * abs(s.gamma - t.gamma)
        )

    return min(labels, key=dist)


class DecideRequest(BaseModel):
    """``POST /v1/decide`` body: a job's recent telemetry window (oldest first, newest last)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    job_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:\-]+$")
    policy: str = Field("default", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\-]+$")
    objective: Objective
    history: list[TelemetryRecord] = Field(min_length=1, max_length=MAX_HISTORY)
    reference: Reference | None = None
    profile: CostProfile | None = None


class Decision(BaseModel):
    """The service's answer: the setting to apply at the next interval boundary, and why."""

    model_config = _FROZEN

    setting: CompressionSetting
    policy: str
    policy_version: str
    shielded: bool = False
    reason: str = ""


@functools.lru_cache(maxsize=1024)
def _normalized_weights(w_loss: float, w_memory: float, w_energy: float, w_time: float) -> tuple[float, ...]:
    """:meth:`Objective.normalized` as Python floats, per weight vector (a job's objective repeats every
    interval, so :meth:`ObservationSpec.encode` looks it up instead of three numpy calls). A weight of -0.0
    shares the entry of 0.0 (equal floats): a product with either adds the same to a nonzero sum."""
    w = Objective.model_construct(w_loss=w_loss, w_memory=w_memory, w_energy=w_energy, w_time=w_time)
    return tuple(w.normalized().tolist())


class ObservationSpec:
    """Turns a telemetry window + objective into the policy's input vector (version ``OBS_SPEC_VERSION``).

    Layout of the float32 vector (length :attr:`size`): ``window`` token rows of :attr:`TOKEN_FEATURES`
    features each (oldest first, zero rows with mask 0 padding the front of short histories), followed by
    :attr:`OBJECTIVE_FEATURES` job features: the objective, then the hardware cost profile
    (:attr:`PROFILE_FEATURES`, zeros without one). :meth:`split` undoes the flattening.

    The loss features are relative to the oldest loss in the window (``max(|loss|, 1e-6)``), never to the
    run's first interval: a job twice as long as any the policy trained on falls further from its first loss,
    but not further within a window, so the features stay in the range the policy learned on. Memory, energy
    and time are relative to the :class:`Reference`. Every feature is clipped to ``[-CLIP, CLIP]``.
    """

    TOKEN_FEATURES: tuple[str, ...] = (
        "mask",
        "loss_win",  # loss / the window's oldest loss
        "loss_std_win",  # loss_std / the window's oldest loss
        "log_grad_norm",  # log1p(grad_norm)
        "compression_error",
        "kurtosis",  # log1p(max(kurtosis, 0))
        "spectral_tail",
        "memory_rel",  # state_bytes / dense_state_bytes
        "energy_rel",  # energy_j / reference interval energy
        "time_rel",  # interval_s / reference interval_s
        "log_lr",  # log10(lr) / 10
        "progress",
        "rank_idx",  # grid index / (n - 1)
        "bits_idx",
        "gamma",
        "loss_delta",  # (loss - previous loss) / the window's oldest loss
    )
    #: The hardware block (:meth:`CostProfile.features`): step-time ratios to AdamW as ``log2(r) / 4``.
    PROFILE_FEATURES: tuple[str, ...] = (
        "has_profile",
        "optimizer_share",  # AdamW step / training step (0 when unknown)
        "has_share",
        "cost_r0_b8",
        "cost_r0_b4",
        "cost_r0_b16",
        "cost_projected",  # r8/b8/g0
        "cost_gamma",  # r0/b8/g0.5
    )
    OBJECTIVE_FEATURES: tuple[str, ...] = (
        "w_loss",
        "w_memory",
        "w_energy",
        "w_time",
        "budget_rel",
        "has_budget",
        *PROFILE_FEATURES,
    )
    CLIP = 10.0

    def __init__(self, window: int = MAX_HISTORY, grid: ActionGrid = DEFAULT_GRID) -> None:
        if not 1 <= window <= MAX_HISTORY:
            raise ValueError(f"window={window} must be in [1, {MAX_HISTORY}]")
        self.window = window
        self.grid = grid
        self.version = OBS_SPEC_VERSION
        # rank_idx / bits_idx features by value, looked up per record (off-grid values: rank 0, most bits)
        rank_den, bits_den = max(len(grid.ranks) - 1, 1), max(len(grid.bits) - 1, 1)
        self._rank_feature = {r: i / rank_den for i, r in enumerate(grid.ranks)}
        self._bits_feature = {b: i / bits_den for i, b in enumerate(grid.bits)}
        self._bits_off_grid = (len(grid.bits) - 1) / bits_den

    @property
    def token_dim(self) -> int:
        return len(self.TOKEN_FEATURES)

    @property
    def objective_dim(self) -> int:
        return len(self.OBJECTIVE_FEATURES)

    @property
    def size(self) -> int:
        """Length of the flat observation vector."""
        return self.window * self.token_dim + self.objective_dim

    def encode(
        self,
        history: Sequence[TelemetryRecord],
        objective: Objective,
        reference: Reference | None = None,
        profile: CostProfile | Sequence[float] | None = None,
    ) -> np.ndarray:
        """Encode the newest ``window`` records of ``history``, the objective and the job's cost profile
        (optional: a :class:`CostProfile` or its :meth:`CostProfile.features`) into a float32 vector."""
        if not history:
            raise ValueError("history is empty: send at least one TelemetryRecord")
        ref = reference or Reference.from_history(history)
        recs = list(history)[-self.window :]
        rank_feature, bits_feature = self._rank_feature, self._bits_feature
        bits_off_grid = self._bits_off_grid
        loss0 = abs(recs[0].loss)
        loss0 = loss0 if loss0 > 1e-6 else 1e-6  # max(|oldest loss|, 1e-6), as envs.encode computes it
        dense = ref.dense_state_bytes
        energy0, interval0 = ref.interval_energy_j, ref.interval_s
        log1p, log10 = math.log1p, math.log10
        # One flat list of Python floats, converted once (a row-by-row fill into an array costs 3x more;
        # the float32 values are the same). "0.0 if k < 0.0 else k" is max(k, 0.0), without the call.
        values: list[float] = [0.0] * ((self.window - len(recs)) * self.token_dim)  # padding rows
        prev_loss = recs[0].loss
        for r in recs:
            s = r.setting
            loss, kurtosis, lr = r.loss, r.grad_kurtosis, r.lr
            values += (
                1.0,
                loss / loss0,
                r.loss_std / loss0,
                log1p(r.grad_norm),
                r.compression_error,
                log1p(0.0 if kurtosis < 0.0 else kurtosis),
                r.spectral_tail,
                r.state_bytes / dense,
                r.energy_j / energy0,
                r.interval_s / interval0,
                log10(1e-12 if lr < 1e-12 else lr) / 10.0,
                r.progress if r.progress is not None else 0.0,
                rank_feature.get(s.rank, 0.0),
                bits_feature.get(s.bits, bits_off_grid),
                s.gamma,
                (loss - prev_loss) / loss0,
            )
            prev_loss = loss
        values += _normalized_weights(  # float32 values, kept exactly
            objective.w_loss, objective.w_memory, objective.w_energy, objective.w_time
        )
        budget = objective.memory_budget_bytes
        values += ((budget / dense) if budget else 0.0, 1.0 if budget else 0.0)
        if profile is None:
            values += (0.0,) * len(self.PROFILE_FEATURES)
        else:
            hw = profile.features() if isinstance(profile, CostProfile) else profile
            if len(hw) != len(self.PROFILE_FEATURES):
                raise ValueError(
                    f"profile features have length {len(hw)}, expected {len(self.PROFILE_FEATURES)}"
                )
            values += hw
        out = np.array(values, dtype=np.float32)
        np.minimum(out, self.CLIP, out=out)  # np.clip's semantics (NaN stays NaN) without its Python wrapper
        np.maximum(out, -self.CLIP, out=out)
        return out

    def split(self, obs: Any) -> tuple[Any, Any]:
        """Split flat observations ``[..., size]`` into tokens ``[..., window, token_dim]`` and objective.

        Works on numpy arrays and torch tensors alike.
        """
        n = self.window * self.token_dim
        tokens = obs[..., :n].reshape(*obs.shape[:-1], self.window, self.token_dim)
        return tokens, obs[..., n:]
