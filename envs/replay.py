"""Replay backend: plays recorded traces back, answering each action with the nearest recorded interval.

At reset it picks a recorded job seed of the workload (the drawn job seed modulo the recorded ones) and one of
that seed's recorded episodes; its warm-up record is the first observation. At interval ``t`` it looks at
interval ``t`` of every recorded episode of the same workload and seed and returns the one whose setting is
nearest the requested one (distance: normalized grid-index difference of rank and bits plus the gamma
difference), preferring the episode it is already following on ties, and follows that episode from then on.
``info["replayed_setting"]`` is the setting actually played (the record carries it too), and
``info["setting_distance"]`` how far it was from the request.

It is real data, not a model: the right backend to sanity-check a policy or a controller against recorded
behaviour, but history-blind (what happened before interval ``t`` in the followed episode is not what the
agent did) and limited to recorded settings.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from client.protocol import DEFAULT_GRID, CompressionSetting, Objective, Reference, TelemetryRecord
from envs.episode import Backend, EpisodeStart, StepOutcome, draw_episode, loss_term_of, score
from envs.objectives import ObjectiveSampler, make_objective
from envs.reward import RewardConfig
from envs.traces import EpisodeTrace, TraceSet, load_traces

__all__ = ["ReplayBackend"]


class _Group:
    """Recorded episodes of one (workload, seed) with their reference."""

    def __init__(self, ref: EpisodeTrace, eps: list[EpisodeTrace], dense_state_bytes: int) -> None:
        self.ref_loss = ref.columns["loss"]
        k = ref.length
        tail = slice(1, k) if k > 1 else slice(0, k)
        self.initial_loss = max(float(self.ref_loss[0]), 1e-6)
        self.ref_state_bytes = max(int(ref.columns["state_bytes"][-1]), 1)
        self.ref_interval_s = max(float(np.median(ref.columns["interval_s"][tail])), 1e-9)
        self.ref_energy_j = max(float(np.median(ref.columns["energy_j"][tail])), 1e-9)
        self.reference = Reference(
            initial_loss=self.initial_loss,
            dense_state_bytes=dense_state_bytes,
            interval_energy_j=self.ref_energy_j,
            interval_s=self.ref_interval_s,
        )
        self.records = [e.records() for e in eps]
        self.actions = [e.actions() for e in eps]
        self.names = [e.controller for e in eps]


class ReplayBackend(Backend):
    """The ``"replay"`` backend of :class:`envs.env.CompressionEnv` (see the module docstring).

    :param names: workloads the episodes draw from.
    :param traces: a :class:`TraceSet`, a trace file / directory, or ``None`` for the shipped traces.
    :param sampler: objective sampler.
    :param reward: penalty knobs.
    :param job_seeds: size of the drawn job-seed pool (mapped onto the recorded seeds).
    """

    name = "replay"

    def __init__(
        self,
        names: Sequence[str],
        traces: TraceSet | str | None,
        sampler: ObjectiveSampler,
        reward: RewardConfig,
        job_seeds: int,
    ) -> None:
        ts = traces if isinstance(traces, TraceSet) else load_traces(traces)
        self.names = list(names)
        self.sampler = sampler
        self.reward_config = reward
        self.job_seeds = job_seeds
        self.groups: dict[str, dict[int, _Group]] = {}
        for w in self.names:
            if w not in ts.workloads:
                raise ValueError(
                    f"the traces hold no workload {w!r}; record some with `mango record --workloads {w}`"
                )
            dense = int(ts.workloads[w]["dense_state_bytes"])
            per_seed: dict[int, _Group] = {}
            for seed in ts.seeds_of(w):
                eps = [e for e in ts.episodes_of(w) if e.seed == seed]
                if eps:
                    ref = ts.references[(w, seed)]
                    per_seed[seed] = _Group(ref, eps, dense)
            if not per_seed:
                raise ValueError(
                    f"no recorded episodes for workload {w!r}; "
                    f"record some with `mango record --workloads {w}`"
                )
            self.groups[w] = per_seed
        g = DEFAULT_GRID
        self._scale = np.array([1.0 / max(len(g.ranks) - 1, 1), 1.0 / max(len(g.bits) - 1, 1)])
        self._gammas = np.asarray(g.gammas)
        self.group: _Group | None = None
        self.current = 0
        self.t = 0
        self.objective: Objective | None = None
        self.prev_loss_term = 0.0

    def reset(
        self,
        rng: np.random.Generator,
        *,
        objective: Objective | None,
        workload: str | None,
        job_seed: int | None,
    ) -> EpisodeStart:
        wi, js, weights, budget = draw_episode(
            rng, self.names, self.job_seeds, self.sampler, workload=workload, job_seed=job_seed
        )
        name = self.names[wi]
        seeds = sorted(self.groups[name])
        seed = seeds[js % len(seeds)]
        grp = self.group = self.groups[name][seed]
        self.current = int(rng.integers(len(grp.records)))
        self.t = 0
        if objective is None:
            dense = grp.reference.dense_state_bytes
            objective = make_objective(weights, None if budget is None else max(1, int(budget * dense)))
        self.objective = objective
        self.prev_loss_term = loss_term_of(
            grp.records[self.current][0], float(grp.ref_loss[0]), grp.initial_loss
        )
        return EpisodeStart(
            workload=name,
            job_seed=seed,
            objective=objective,
            reference=grp.reference,
            record=grp.records[self.current][0],
            # the controller's name, and which of the seed's recorded episodes (in recording order): two trace
            # files may hold episodes of one controller and seed
            info={"replaying": grp.names[self.current], "replaying_index": self.current},
        )

    def _nearest(self, action: np.ndarray) -> tuple[int, float]:
        grp = self.group
        assert grp is not None
        best, best_d = self.current, np.inf
        order = [self.current, *[i for i in range(len(grp.records)) if i != self.current]]
        for i in order:
            acts = grp.actions[i]
            if self.t >= acts.shape[0]:
                continue
            a = acts[self.t]
            d = float(
                abs(a[0] - action[0]) * self._scale[0]
                + abs(a[1] - action[1]) * self._scale[1]
                + abs(self._gammas[a[2]] - self._gammas[action[2]])
            )
            if d < best_d - 1e-12:
                best, best_d = i, d
        return best, best_d

    def step(self, action: np.ndarray, setting: CompressionSetting) -> StepOutcome:
        grp = self.group
        assert grp is not None and self.objective is not None
        self.t += 1
        self.current, dist = self._nearest(np.asarray(action))
        recs = grp.records[self.current]
        rec: TelemetryRecord = recs[self.t]
        ref_loss = float(grp.ref_loss[min(self.t, grp.ref_loss.size - 1)])
        reward, terms, over, div = score(
            rec,
            ref_loss=ref_loss,
            ref_state_bytes=grp.ref_state_bytes,
            ref_energy_j=grp.ref_energy_j,
            ref_interval_s=grp.ref_interval_s,
            initial_loss=grp.initial_loss,
            objective=self.objective,
            config=self.reward_config,
            prev_loss_term=self.prev_loss_term,
            intervals=len(recs) - 1,
        )
        self.prev_loss_term = terms[0]
        return StepOutcome(
            record=rec,
            reward=reward,
            terms=terms,
            ref_loss=ref_loss,
            over_budget=over,
            diverged=div,
            info={
                "last": self.t >= len(recs) - 1,
                "replayed_setting": rec.setting.label(),
                "setting_distance": dist,
                "replaying": grp.names[self.current],
            },
        )

    def close(self) -> None:
        pass
