"""The surrogate simulator: a fitted, vectorized, pure-numpy model of a training job under compression.

The model (:class:`envs.surrogate_model.SurrogateModel`, fitted by :func:`envs.fit.fit_surrogate` on traces
recorded from the training backend, and handed in: this module never loads or fits one) is, per
workload ``w``, control interval ``t`` (``t = 0`` is the uncontrolled warm-up interval) and setting ``s``:

* **loss**: ``loss_t = ref_t + L0 * (x_t + sigma_x * z_t * d_t)`` where ``ref_t`` is the workload's reference
  (uncompressed) loss curve scaled by a per-job-seed level ``1 + seed_sigma * z_seed``, ``L0 = ref_0`` the
  initial loss (so ``x`` is in the units of the reward's loss term), and the excess ``x``
  follows first-order dynamics ``x_t = rho * x_{t-1} + (1 - rho) * (A_w[s] + (1 - progress_t) * B_w[s])``:
  compression damage builds up and decays over a few intervals instead of vanishing the moment one switches
  back. ``A`` and ``B`` are linear in features of the setting (quantization term ``Q_BASE^-(bits-2)``,
  :data:`envs.fit.Q_BASE`; the workload's measured spectral tail at the rank, their product and their
  ``gamma`` interactions) with coefficients fitted by least squares. ``d_t`` is 0 until the first
  compressed interval (before it the run *is* the reference run) and 1 after.
* **late entry** (measured on real runs, not fitted): an episode whose first interval was unprojected keeps
  a relative excess ``late_entry`` (:data:`envs.surrogate_model.LATE_ENTRY`) on its loss, ``loss_t = ref_t
  (1 + late_entry) + ...``, from the first interval it projects (rank > 0) to the end: opening at rank 0
  and projecting later ends above projecting from the start (issue 13, BENCHMARKS.md sessions 16-21).
* **depth** (a draw, not a fit): a job trains further than the recorded one. With ``depth=(lo, hi)`` each
  episode draws ``delta ~ U[lo, hi]`` and its reference curve becomes ``ref_t * exp(-delta * progress_t)``:
  the loss ends ``exp(-delta)`` lower, while the excess stays in initial-loss units. So the same absolute
  damage weighs more against a deeper reference, as on the H200 demo (its AdamW fell to 0.47 of the
  first-interval loss, the gpt-85m traces to 0.64; issue 13, session 12's sim-to-real reading: the absolute
  excess was predicted about right, its final loss term a third to a half of the measured one).
* **memory**: ``state_bytes`` exactly, from :func:`client.compression.sizes.state_bytes` on the model's
  shapes.
* **time and energy**: the reference per-interval median times measured per-setting cost ratios (fitted per
  workload from the traces), with multiplicative log-normal noise of the fitted size.
* **telemetry** for the observation: reference curves of loss std, gradient norm and kurtosis (with noise),
  the measured spectral tail per rank and a per-setting compression-error table.

All noise of an episode is drawn at reset from the episode's generator (a fixed number of draws), so a
vectorized set and a single :class:`envs.env.CompressionEnv` seeded alike produce identical episodes.

:class:`SurrogateEngine` steps ``n`` episodes at once with :class:`envs.encode.BatchEncoder` (bit-identical to
``ObservationSpec.encode``); :class:`SurrogateBackend` is one slot of it as the single env's ``"surrogate"``
backend, and :class:`envs.surrogate.SurrogateVecEnv` wraps it as a :class:`gymnasium.vector.VectorEnv`. This
module needs neither gymnasium nor torch.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from client.controllers import FIRST_CANDIDATES, first_setting
from client.protocol import (
    DEFAULT_GRID,
    CompressionSetting,
    Objective,
    ObservationSpec,
    Reference,
    TelemetryRecord,
)
from envs.encode import BatchEncoder, objective_features_batch
from envs.episode import Backend, EpisodeStart, StepOutcome
from envs.objectives import ObjectiveSampler, make_objective
from envs.reward import TERM_NAMES, RewardConfig, penalized_reward, reward_terms
from envs.surrogate_model import GRID_SHAPE, SurrogateModel
from envs.workloads import get_workload, workloads_of

__all__ = [
    "MAX_DEPTH",
    "NOISE_CHANNELS",
    "SurrogateBackend",
    "SurrogateEngine",
    "check_depth",
    "resolve_workloads",
]

#: The largest ``depth`` bound :func:`check_depth` accepts: a reference ending ``e^-2`` (0.14x) lower.
MAX_DEPTH = 2.0


def check_depth(depth: Sequence[float]) -> tuple[float, float]:
    """``(lo, hi)`` of the reference's extra log-drop (:class:`SurrogateEngine`), checked: ``ValueError``
    unless ``0 <= lo <= hi <= MAX_DEPTH``."""
    vals = tuple(float(d) for d in depth)
    if len(vals) != 2 or not 0.0 <= vals[0] <= vals[1] <= MAX_DEPTH:
        raise ValueError(
            f"depth={tuple(depth)!r}: give (lo, hi) with 0 <= lo <= hi <= {MAX_DEPTH} (the extra log-drop of "
            "the reference loss by the end of an episode; (0, 0): the recorded curves)"
        )
    return vals[0], vals[1]


def check_opening(opening: Sequence[float]) -> tuple[float, int]:
    """``(probability, most intervals)`` of the random openings (:class:`SurrogateEngine`), checked:
    ``ValueError`` unless ``0 <= probability <= 1`` and ``most`` is a whole number >= 1."""
    vals = tuple(opening)
    if (
        len(vals) != 2
        or not 0.0 <= float(vals[0]) <= 1.0
        or float(vals[1]) != int(vals[1])
        or int(vals[1]) < 1
    ):
        raise ValueError(
            f"opening={tuple(opening)!r}: give (probability, most intervals), 0 <= probability <= 1 and a "
            "whole number of intervals >= 1 ((0, 1): each episode opens at the first decision, one interval)"
        )
    return float(vals[0]), int(vals[1])


def _loss_term(raw: dict[str, np.ndarray], initial_loss: np.ndarray) -> np.ndarray:
    """The loss term of an interval run before the policy's first decision (the reward's ``l_{t-1}`` for
    ``RewardConfig.loss_credit="final"``); its other terms do not count."""
    return reward_terms(
        raw["loss"], 1, 1.0, 1.0, ref_loss=raw["ref_loss"], ref_state_bytes=1, ref_energy_j=1.0,
        ref_interval_s=1.0, initial_loss=initial_loss,
    )[0]  # fmt: skip


log = logging.getLogger(__name__)

#: Standard-normal draws per interval of an episode, in this order.
NOISE_CHANNELS: tuple[str, ...] = ("excess", "loss_std", "grad_norm", "kurtosis", "compression_error", "time")
_N_SETTINGS = int(np.prod(GRID_SHAPE))


def _flat(label: str) -> int:
    """Index of a setting label in the surrogate's flat grid order (rank-major, like ``all_settings``)."""
    return int(np.ravel_multi_index(DEFAULT_GRID.action(CompressionSetting.parse(label)), GRID_SHAPE))


def resolve_workloads(
    workload: str | Sequence[str] | None, split: str, model: SurrogateModel | None = None
) -> tuple[str, ...]:
    """The workload names an env draws from: a name, a list of names, or (``None``) the whole split (with a
    ``model``: the split's workloads, CPU and GPU, that it has traces of; a CPU one without is logged)."""
    if workload is None:
        names = workloads_of(split)
        if model is not None:
            missing = [n for n in names if n not in model.tables]
            if missing:
                log.warning("the surrogate has no traces of %s (split %s): not drawn", missing, split)
            names = tuple(n for n in workloads_of(split, gpu=True) if n in model.tables)
    elif isinstance(workload, str):
        names = (workload,)
    else:
        names = tuple(workload)
    if not names:
        raise ValueError(f"no workloads selected (workload={workload!r}, split={split!r})")
    for n in names:
        get_workload(n)  # ValueError naming the known ones
    return names


class SurrogateEngine:
    """The batched simulator behind :class:`SurrogateVecEnv` and the single env's ``"surrogate"`` backend.

    State per episode lives in arrays of length ``n``; :meth:`reset_envs` starts episodes (drawing all their
    randomness from per-episode generators), :meth:`step` advances every episode one interval.

    :param model: fitted :class:`SurrogateModel`.
    :param workloads: names the episodes draw from (uniformly, one draw per reset).
    :param n: episodes side by side.
    :param spec: observation spec (window).
    :param sampler: objective sampler (ignored for an episode whose objective is fixed).
    :param reward: penalty knobs.
    :param initial_setting: setting of the first interval, run before the policy's first decision; default
        ``None``: :func:`client.controllers.first_setting` from the objective and the episode's hardware,
        as a job does before its first interval.
    :param job_seeds: job seeds are drawn from ``range(job_seeds)``; each has its own reference level.
    :param hardware: per-episode hardware draws (:class:`envs.hardware.HardwareSampler`): the time and
        energy of each setting follow the drawn cost profile and the observation carries its features;
        ``None``: the per-workload ratios fitted on the traces and no profile features (the first design).
    :param depth: ``(lo, hi)`` of the per-episode extra log-drop ``delta`` of the reference loss by the
        end of the episode (module docstring). ``(0, 0)`` (default): the recorded curves, and no draw, so
        episodes are those of the engine before the knob. ``(0, 0.4)`` reaches the H200 demo's depth
        (``ln(0.64 / 0.47) = 0.31``).
    :param opening: ``(p, most)``: with probability ``p`` an episode opens with one of
        :data:`~client.controllers.FIRST_CANDIDATES`, drawn uniformly, held for ``1..most`` intervals
        (uniform, fewer than the episode's) before the policy's first decision, instead of the first
        decision's setting for one interval. What it is for: a policy sees windows where a setting it would
        not have chosen has been in force for several intervals, as a job does whose first decision went
        the other way; trained only on its own openings a policy held whatever was in force (issue 13,
        sessions 24-25, BENCHMARKS.md). ``(0, 1)`` (default): no draw, the episodes
        of the engine before the knob. Training only: evaluations keep the default.
    """

    def __init__(
        self,
        model: SurrogateModel,
        workloads: Sequence[str],
        n: int,
        spec: ObservationSpec,
        sampler: ObjectiveSampler,
        reward: RewardConfig,
        initial_setting: CompressionSetting | None = None,
        job_seeds: int = 64,
        hardware: Any = None,
        depth: tuple[float, float] = (0.0, 0.0),
        opening: tuple[float, int] = (0.0, 1),
    ) -> None:
        if n < 1:
            raise ValueError(f"num_envs={n} must be >= 1")
        if job_seeds < 1:
            raise ValueError(f"job_seeds={job_seeds} must be >= 1")
        self.depth = check_depth(depth)
        self.opening = check_opening(opening)
        self._open_actions = np.array(
            [DEFAULT_GRID.action(CompressionSetting.parse(label)) for label in FIRST_CANDIDATES],
            dtype=np.int64,
        )
        self.model = model
        self.names = tuple(workloads)
        self.tabs = [model.workload(w) for w in self.names]
        self.devices = [get_workload(w).device for w in self.names]
        for name, t in zip(self.names, self.tabs, strict=True):
            wl = get_workload(name)
            if t.key != wl.key():
                log.warning(
                    "surrogate tables of %s were fitted for workload key %s, the registry now says %s; refit",
                    name,
                    t.key,
                    wl.key(),
                )
        self.n = n
        self.spec = spec
        self.sampler = sampler
        self.reward_cfg = reward
        self.job_seeds = job_seeds
        self.fixed_initial = initial_setting is not None
        init = initial_setting or CompressionSetting.off()
        self.initial_action = np.array(DEFAULT_GRID.action(init), dtype=np.int64)
        self.hw = hardware.build() if hardware is not None else None
        self._stack_tables()
        # per-seed reference levels: a fixed table so one job seed always has the same reference curve
        self.seed_z = np.random.default_rng(20240531).standard_normal((len(self.names), job_seeds))
        self.encoder = BatchEncoder(n, spec)
        c = len(NOISE_CHANNELS)
        self.w = np.zeros(n, dtype=np.int64)
        self.t = np.zeros(n, dtype=np.int64)
        self.k = np.ones(n, dtype=np.int64)
        self.x = np.zeros(n, dtype=np.float64)
        self.compressed = np.zeros(n, dtype=bool)  # d_t: any compressed interval so far
        # the late entry into projection (SurrogateModel.late_entry): the relative excess an episode keeps
        # once it projects after an unprojected first interval (its first setting: init_acts)
        self._projects = np.array([r > 0 for r in DEFAULT_GRID.ranks], dtype=bool)  # by rank index
        self.late = np.zeros(n, dtype=np.float64)
        self._ar = np.arange(n)
        self.level = np.ones(n, dtype=np.float64)
        self.drop = np.zeros(n, dtype=np.float64)  # delta: the episode's extra log-drop of the reference
        self.initial_loss = np.ones(n, dtype=np.float64)
        self.prev_loss_term = np.zeros(n, dtype=np.float64)  # l_{t-1} (RewardConfig.loss_credit="final")
        self.weights = np.zeros((n, 4), dtype=np.float64)
        self.budget = np.zeros(n, dtype=np.int64)
        self.job_seed = np.zeros(n, dtype=np.int64)
        self.z = np.zeros((n, self.kmax + 1, c), dtype=np.float64)
        self.init_acts = np.tile(self.initial_action, (n, 1))  # [n, 3] each episode's first setting
        self.open_k = np.ones(n, dtype=np.int64)  # intervals each episode opens with (``opening``)
        n_hw = len(ObservationSpec.PROFILE_FEATURES)
        self.hw_time = np.ones((n, _N_SETTINGS), dtype=np.float64)  # interval-time ratios of the episode
        self.hw_energy = np.ones((n, _N_SETTINGS), dtype=np.float64)
        self.hw_feat = np.zeros((n, n_hw), dtype=np.float64)
        self.hw_label = [""] * n
        self.last: dict[str, np.ndarray] = {}

    def _stack_tables(self) -> None:
        tabs = self.tabs
        self.kmax = max(t.intervals for t in tabs)
        kk = self.kmax + 1
        nw = len(tabs)

        def curve(name: str) -> np.ndarray:
            out = np.zeros((nw, kk), dtype=np.float64)
            for i, t in enumerate(tabs):
                a = getattr(t, name)
                out[i, : a.size] = a
                out[i, a.size :] = a[-1]
            return out

        self.ref_loss = curve("ref_loss")
        self.ref_loss_std = curve("ref_loss_std")
        self.ref_grad_norm = curve("ref_grad_norm")
        self.ref_kurtosis = curve("ref_kurtosis")
        self.lr = curve("lr")
        self.log_lr = np.vectorize(BatchEncoder.log_lr_feature)(self.lr)
        self.progress = np.zeros((nw, kk), dtype=np.float64)
        self.steps = np.zeros((nw, kk), dtype=np.int64)
        for i, t in enumerate(tabs):
            p = t.progress
            self.progress[i, : p.size] = p
            self.progress[i, p.size :] = 1.0
            self.steps[i] = t.steps_per_interval * np.arange(1, kk + 1)

        def grid(name: str, dtype: Any = np.float64) -> np.ndarray:
            return np.stack([np.asarray(getattr(t, name), dtype=dtype).reshape(_N_SETTINGS) for t in tabs])

        self.g_state_bytes = grid("state_bytes", np.int64)
        self.g_comp_err = grid("compression_error")
        self.g_time = grid("time_ratio")
        self.g_energy = grid("energy_ratio")
        self.g_a = grid("excess_a")
        self.g_b = grid("excess_b")
        self.g_tail = np.stack([t.spectral_tail for t in tabs])  # [W, R]
        self.g_off = np.zeros(_N_SETTINGS, dtype=bool)
        off = DEFAULT_GRID.action(CompressionSetting.off())
        self.g_off[np.ravel_multi_index(off, GRID_SHAPE)] = True

        def scalar(name: str, dtype: Any = np.float64) -> np.ndarray:
            return np.array([getattr(t, name) for t in tabs], dtype=dtype)

        self.s_ref_time = scalar("ref_interval_s")
        self.s_ref_energy = scalar("ref_energy_j")
        self.s_ref_state = scalar("ref_state_bytes", np.int64)
        self.s_dense = scalar("dense_state_bytes", np.int64)
        self.s_seed_sigma = scalar("seed_sigma")
        self.s_sig_x = scalar("sigma_excess")
        self.s_sig_lstd = scalar("sigma_loss_std")
        self.s_sig_gn = scalar("sigma_grad_norm")
        self.s_sig_k = scalar("sigma_kurtosis")
        self.s_sig_ce = scalar("sigma_compression_error")
        self.s_sig_t = scalar("sigma_time")
        self.s_k = scalar("intervals", np.int64)
        self.s_rho = np.array([self.model.rho if t.rho is None else t.rho for t in tabs], dtype=np.float64)

    # ---------------------------------------------------------------------------------------------- reset
    def reset_envs(
        self,
        idx: np.ndarray,
        rngs: Sequence[np.random.Generator],
        objective: Objective | None = None,
        workload: str | None = None,
        job_seed: int | None = None,
    ) -> None:
        """Start new episodes in slots ``idx`` (``rngs[i]`` is slot ``idx[i]``'s generator) and run their
        warm-up interval. ``objective`` / ``workload`` / ``job_seed`` fix those draws (still consumed)."""
        idx = np.asarray(idx, dtype=np.int64)
        if idx.size == 0:
            return
        c = len(NOISE_CHANNELS)
        for j, i in enumerate(idx):
            rng = rngs[j]
            wi = int(rng.integers(len(self.names)))
            if workload is not None:
                if workload not in self.names:
                    raise ValueError(f"workload {workload!r} is not one of this env's {self.names}")
                wi = self.names.index(workload)
            js = int(rng.integers(self.job_seeds))
            if job_seed is not None:
                js = int(job_seed) % self.job_seeds
            w_obj, budget_rel = self.sampler.sample_weights(rng)
            k = int(self.s_k[wi])
            z = rng.standard_normal((k + 1, c))
            self.w[i] = wi
            self.k[i] = k
            self.job_seed[i] = js
            self.z[i, : k + 1] = z
            self.z[i, k + 1 :] = 0.0
            dense = int(self.s_dense[wi])
            if objective is not None:
                w_obj = np.array(
                    [objective.w_loss, objective.w_memory, objective.w_energy, objective.w_time],
                    dtype=np.float64,
                )
                self.budget[i] = objective.memory_budget_bytes or 0
            else:
                self.budget[i] = 0 if budget_rel is None else max(1, int(budget_rel * dense))
            self.weights[i] = w_obj
            self.level[i] = 1.0 + self.s_seed_sigma[wi] * self.seed_z[wi, js]
            if self.hw is not None:
                t_r, e_r, feats, label = self.hw.draw(rng, self.devices[wi])
                self.hw_time[i], self.hw_energy[i], self.hw_feat[i], self.hw_label[i] = t_r, e_r, feats, label
            else:
                self.hw_time[i] = self.g_time[wi]
                self.hw_energy[i] = self.g_energy[wi]
            if self.depth[1] > 0.0:
                self.drop[i] = rng.uniform(*self.depth)
            if not self.fixed_initial:
                self.init_acts[i] = self._first_action(int(i), wi)
            self.open_k[i] = 1
            if self.opening[0] > 0.0 and rng.random() < self.opening[0]:  # no draw without the knob
                self.init_acts[i] = self._open_actions[rng.integers(len(self._open_actions))]
                self.open_k[i] = rng.integers(1, max(1, min(self.opening[1], k - 1)) + 1)
        self.t[idx] = 0
        self.x[idx] = 0.0
        self.compressed[idx] = False
        self.late[idx] = 0.0
        self.encoder.clear(
            idx,
            objective_features_batch(
                self.weights[idx],
                self.budget[idx],
                self.s_dense[self.w[idx]],
                self.hw_feat[idx] if self.hw is not None else None,
            ),
        )
        acts = self.init_acts[idx]
        raw = self._interval(idx, acts)
        self.initial_loss[idx] = raw["ref_loss"]
        self.prev_loss_term[idx] = _loss_term(raw, self.initial_loss[idx])
        self._push(idx, raw, acts)
        for j in range(1, int(self.open_k[idx].max())):  # the rest of a random opening (``opening``)
            sub = idx[self.open_k[idx] > j]
            self.t[sub] = j
            acts = self.init_acts[sub]
            raw = self._interval(sub, acts)
            self.prev_loss_term[sub] = _loss_term(raw, self.initial_loss[sub])
            self._push(sub, raw, acts)

    def _first_action(self, i: int, wi: int) -> np.ndarray:
        """Slot ``i``'s first setting: :func:`client.controllers.first_setting` (objective, hardware; without
        the hardware where the episode's job sends no profile, as the hook decides then)."""
        budget = int(self.budget[i])
        objective = make_objective(self.weights[i], budget if budget > 0 else None)
        if self.hw is not None and self.hw_feat[i, 0] == 0.0:  # a job that sends no profile (hide_profile)
            setting, _ = first_setting(objective, dense_state_bytes=int(self.s_ref_state[wi]))
            return np.array(DEFAULT_GRID.action(setting), dtype=np.int64)
        flat = {lb: _flat(lb) for lb in FIRST_CANDIDATES}
        ref_state = float(self.s_ref_state[wi])
        setting, _ = first_setting(
            objective,
            dense_state_bytes=int(self.s_ref_state[wi]),
            time_ratio={lb: float(self.hw_time[i, k]) for lb, k in flat.items()},
            energy_ratio={lb: float(self.hw_energy[i, k]) for lb, k in flat.items()},
            state_ratio={lb: float(self.g_state_bytes[wi, k]) / ref_state for lb, k in flat.items()},
        )
        return np.array(DEFAULT_GRID.action(setting), dtype=np.int64)

    # ---------------------------------------------------------------------------------------------- step
    def _interval(self, idx: np.ndarray | None, acts: np.ndarray) -> dict[str, np.ndarray]:
        """Advance episodes ``idx`` (``None``: all) one interval under grid actions ``acts`` (``[k, 3]``)."""
        idx_: Any = slice(None) if idx is None else idx
        w = self.w[idx_]
        t = self.t[idx_]
        s = (acts[:, 0] * GRID_SHAPE[1] + acts[:, 1]) * GRID_SHAPE[2] + acts[:, 2]
        rows = idx if idx is not None else self._ar
        z = self.z[rows, t]  # [k, C]
        p = self.progress[w, t]
        target = self.g_a[w, s] + (1.0 - p) * self.g_b[w, s]
        rho = self.s_rho[w]
        x = rho * self.x[idx_] + (1.0 - rho) * target
        self.x[idx_] = x
        div = self.compressed[idx_] | ~self.g_off[s]
        self.compressed[idx_] = div
        xo = x + np.where(div, self.s_sig_x[w] * z[:, 0], 0.0)
        deeper = np.exp(-self.drop[idx_] * p)
        ref = self.ref_loss[w, t] * self.level[idx_] * deeper
        late_now = (t > 0) & self._projects[acts[:, 0]] & ~self._projects[self.init_acts[idx_, 0]]
        late = np.where(late_now, self.model.late_entry, self.late[idx_])
        self.late[idx_] = late
        l0 = self.ref_loss[w, 0] * self.level[idx_]  # the episode's initial loss: the unit of the excess
        ratio_noise = np.exp(self.s_sig_t[w] * z[:, 5])
        raw = {
            "ref_loss": ref,
            "loss": np.maximum(ref * (1.0 + late) + l0 * xo, 0.1 * ref),
            "loss_std": self.ref_loss_std[w, t]
            * deeper
            * (1.0 + np.maximum(xo, 0.0))
            * np.exp(self.s_sig_lstd[w] * z[:, 1]),
            "grad_norm": self.ref_grad_norm[w, t] * np.exp(self.s_sig_gn[w] * z[:, 2]),
            "grad_kurtosis": self.ref_kurtosis[w, t] + self.s_sig_k[w] * z[:, 3],
            "compression_error": self.g_comp_err[w, s] * np.exp(self.s_sig_ce[w] * z[:, 4]),
            "spectral_tail": np.clip(self.g_tail[w, acts[:, 0]], 0.0, 1.0),
            "state_bytes": self.g_state_bytes[w, s],
            "interval_s": self.s_ref_time[w] * self.hw_time[rows, s] * ratio_noise,
            "energy_j": self.s_ref_energy[w] * self.hw_energy[rows, s] * ratio_noise,
        }
        return raw

    def _push(self, idx: np.ndarray | None, raw: dict[str, np.ndarray], acts: np.ndarray) -> None:
        sel: Any = slice(None) if idx is None else idx
        w = self.w[sel]
        t = self.t[sel]
        self.last = {**raw, "lr": self.lr[w, t], "progress": self.progress[w, t], "step": self.steps[w, t]}
        self.encoder.push(
            idx,
            loss=raw["loss"],
            loss_std=raw["loss_std"],
            grad_norm=raw["grad_norm"],
            compression_error=raw["compression_error"],
            grad_kurtosis=raw["grad_kurtosis"],
            spectral_tail=raw["spectral_tail"],
            state_bytes=raw["state_bytes"],
            energy_j=raw["energy_j"],
            interval_s=raw["interval_s"],
            log_lr=self.log_lr[w, t],
            progress=self.progress[w, t],
            action=acts,
            dense_state_bytes=self.s_dense[w],
            ref_energy_j=self.s_ref_energy[w],
            ref_interval_s=self.s_ref_time[w],
        )

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Advance every episode one control interval.

        :param actions: int ``[n, 3]`` grid indices.
        :return: ``(reward [n], terminated [n], info)`` with the raw terms and telemetry of this interval in
            ``info`` (arrays). Observations come from :attr:`encoder`.
        """
        acts = np.asarray(actions, dtype=np.int64).reshape(self.n, 3)
        nvec = np.asarray(GRID_SHAPE)
        if (acts < 0).any() or (acts >= nvec).any():
            raise ValueError(f"actions must be grid indices within MultiDiscrete{list(GRID_SHAPE)}")
        self.t += 1
        raw = self._interval(None, acts)
        self._push(None, raw, acts)
        w = self.w
        terms = reward_terms(
            raw["loss"],
            raw["state_bytes"],
            raw["energy_j"],
            raw["interval_s"],
            ref_loss=raw["ref_loss"],
            ref_state_bytes=self.s_ref_state[w],
            ref_energy_j=self.s_ref_energy[w],
            ref_interval_s=self.s_ref_time[w],
            initial_loss=self.initial_loss,
        )
        reward, over, diverged = penalized_reward(
            self.weights,
            terms,
            state_bytes=raw["state_bytes"],
            budget_bytes=self.budget,
            loss=raw["loss"],
            initial_loss=self.initial_loss,
            config=self.reward_cfg,
            prev_loss_term=self.prev_loss_term,
            intervals=self.k,
        )
        self.prev_loss_term = np.asarray(terms[0], dtype=np.float64).copy()
        terminated = (self.t >= self.k) | diverged
        info = dict(zip(TERM_NAMES, terms, strict=True))
        info["over_budget"] = over
        info["diverged"] = diverged
        return reward, terminated, info

    # ---------------------------------------------------------------------------------------------- records
    def record(self, i: int, action: Sequence[int]) -> TelemetryRecord:
        """The :class:`TelemetryRecord` of slot ``i``'s last interval (for the single-episode env)."""
        last = self.last
        j = i if last["loss"].shape[0] == self.n else 0
        e = float(last["energy_j"][j])
        s = float(last["interval_s"][j])
        return TelemetryRecord(
            step=int(last["step"][j]),
            loss=float(last["loss"][j]),
            loss_std=float(last["loss_std"][j]),
            grad_norm=float(last["grad_norm"][j]),
            compression_error=float(last["compression_error"][j]),
            grad_kurtosis=float(last["grad_kurtosis"][j]),
            spectral_tail=float(last["spectral_tail"][j]),
            state_bytes=int(last["state_bytes"][j]),
            energy_j=e,
            mean_power_w=e / s if s > 0 else 0.0,
            energy_source="modelled",
            interval_s=s,
            lr=float(last["lr"][j]),
            setting=DEFAULT_GRID.setting(action),
            progress=float(last["progress"][j]),
        )


class SurrogateBackend(Backend):
    """The single-episode ``"surrogate"`` backend of :class:`envs.env.CompressionEnv`: a
    :class:`SurrogateEngine` of one slot whose records go through the real ``ObservationSpec.encode``."""

    name = "surrogate"

    def __init__(
        self,
        model: SurrogateModel,
        names: Sequence[str],
        spec: ObservationSpec,
        sampler: ObjectiveSampler,
        reward: RewardConfig,
        initial_setting: CompressionSetting | None,
        job_seeds: int,
        hardware: Any = None,
        depth: tuple[float, float] = (0.0, 0.0),
    ) -> None:
        self.engine = SurrogateEngine(
            model, names, 1, spec, sampler, reward, initial_setting, job_seeds, hardware, depth
        )
        self._zero = np.zeros(1, dtype=np.int64)

    def reset(
        self,
        rng: np.random.Generator,
        *,
        objective: Objective | None,
        workload: str | None,
        job_seed: int | None,
    ) -> EpisodeStart:
        eng = self.engine
        eng.reset_envs(self._zero, [rng], objective, workload, job_seed)
        tab = eng.tabs[int(eng.w[0])]
        if objective is None:
            budget = int(eng.budget[0])
            objective = make_objective(eng.weights[0], budget if budget > 0 else None)
        ref = Reference(
            initial_loss=float(eng.initial_loss[0]),
            dense_state_bytes=int(tab.dense_state_bytes),
            interval_energy_j=float(tab.ref_energy_j),
            interval_s=float(tab.ref_interval_s),
        )
        return EpisodeStart(
            workload=tab.name,
            job_seed=int(eng.job_seed[0]),
            objective=objective,
            reference=ref,
            record=eng.record(0, eng.init_acts[0]),
            profile=[float(x) for x in eng.hw_feat[0]] if eng.hw is not None and eng.hw_feat[0, 0] else None,
            info={"hardware": eng.hw_label[0]} if eng.hw is not None else {},
        )

    def step(self, action: np.ndarray, setting: CompressionSetting) -> StepOutcome:
        eng = self.engine
        reward, terminated, info = eng.step(np.asarray(action, dtype=np.int64).reshape(1, 3))
        return StepOutcome(
            record=eng.record(0, action),
            reward=float(reward[0]),
            terms=tuple(float(info[k][0]) for k in TERM_NAMES),  # type: ignore[arg-type]
            ref_loss=float(eng.last["ref_loss"][0]),
            over_budget=bool(info["over_budget"][0]),
            diverged=bool(info["diverged"][0]),
            info={"last": bool(terminated[0])},
        )

    def close(self) -> None:
        pass
