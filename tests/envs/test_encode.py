"""BatchEncoder (the vectorized surrogate's observation path) == ObservationSpec.encode, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from client.protocol import DEFAULT_GRID, Objective, ObservationSpec, Reference, TelemetryRecord
from envs.encode import BatchEncoder, objective_features, objective_features_batch


def _random_values(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    scale = rng.choice([1e-3, 1.0, 30.0], n)
    return {
        "loss": rng.uniform(0.01, 20.0, n) * scale,
        "loss_std": rng.exponential(1.0, n),
        "grad_norm": rng.exponential(3.0, n) * rng.choice([1e-4, 1.0, 1e4], n),
        "compression_error": rng.uniform(0.0, 3.0, n),
        "grad_kurtosis": rng.normal(0.0, 50.0, n),
        "spectral_tail": rng.uniform(0.0, 1.0, n),
        "state_bytes": rng.integers(0, 4 * 10**9, n),
        "energy_j": rng.exponential(50.0, n),
        "interval_s": rng.exponential(3.0, n),
    }


@pytest.mark.parametrize("window", [1, 3, 8])
def test_batch_encoder_matches_spec_encode(window: int) -> None:
    rng = np.random.default_rng(window)
    spec = ObservationSpec(window=window)
    n, steps = 24, 14
    enc = BatchEncoder(n, spec)
    weights = rng.exponential(1.0, (n, 4))
    weights[rng.random((n, 4)) < 0.3] = 0.0
    weights[:, 0] += 1e-3
    budget = np.where(rng.random(n) < 0.5, rng.integers(1, 10**10, n), 0)
    dense = rng.integers(10**4, 10**9, n)
    l0 = rng.uniform(0.1, 8.0, n)
    e0 = rng.uniform(0.01, 100.0, n)
    t0 = rng.uniform(0.001, 10.0, n)
    objs = [
        Objective(
            w_loss=weights[i, 0],
            w_memory=weights[i, 1],
            w_energy=weights[i, 2],
            w_time=weights[i, 3],
            memory_budget_bytes=int(budget[i]) or None,
        )
        for i in range(n)
    ]
    refs = [
        Reference(
            initial_loss=l0[i], dense_state_bytes=int(dense[i]), interval_energy_j=e0[i], interval_s=t0[i]
        )
        for i in range(n)
    ]
    enc.clear(slice(None), objective_features_batch(weights, budget, dense))
    hist: list[list[TelemetryRecord]] = [[] for _ in range(n)]
    for t in range(steps):
        if t == 7:  # some episodes restart: their windows empty again
            restart = np.flatnonzero(rng.random(n) < 0.4)
            enc.clear(restart, objective_features_batch(weights[restart], budget[restart], dense[restart]))
            for i in restart:
                hist[i] = []
        acts = np.stack([rng.integers(0, k, n) for k in DEFAULT_GRID.nvec], axis=1)
        v = _random_values(rng, n)
        lr = rng.uniform(1e-7, 0.5, n)
        prog = rng.uniform(0.0, 1.0, n)
        enc.push(
            **v,
            log_lr=np.array([BatchEncoder.log_lr_feature(x) for x in lr]),
            progress=prog,
            action=acts,
            dense_state_bytes=dense,
            ref_energy_j=e0,
            ref_interval_s=t0,
        )
        obs = enc.observe()
        for i in range(n):
            kw = {k: (int(x[i]) if k == "state_bytes" else float(x[i])) for k, x in v.items()}
            rec = TelemetryRecord(
                step=t, lr=float(lr[i]), progress=float(prog[i]), setting=DEFAULT_GRID.setting(acts[i]), **kw
            )
            hist[i].append(rec)
            want = spec.encode(hist[i], objs[i], refs[i])
            np.testing.assert_array_equal(obs[i], want, err_msg=f"step {t} env {i}")


def test_objective_features_match() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        w = rng.exponential(1.0, 4) * (rng.random(4) < 0.7)
        w[0] += 1e-6
        budget = int(rng.integers(1, 10**9)) if rng.random() < 0.5 else None
        obj = Objective(w_loss=w[0], w_memory=w[1], w_energy=w[2], w_time=w[3], memory_budget_bytes=budget)
        dense = int(rng.integers(1, 10**9))
        single = objective_features(obj, dense)
        batch = objective_features_batch(w[None], np.array([budget or 0]), np.array([dense]))[0]
        np.testing.assert_array_equal(single, batch)
        rec = TelemetryRecord(
            step=1,
            loss=1.0,
            grad_norm=1.0,
            state_bytes=1,
            interval_s=1.0,
            lr=1e-3,
            setting=DEFAULT_GRID.setting([0, 0, 0]),
        )
        ref = Reference(initial_loss=1.0, dense_state_bytes=dense)
        n_job = len(ObservationSpec.OBJECTIVE_FEATURES)
        np.testing.assert_array_equal(ObservationSpec().encode([rec], obj, ref)[-n_job:], single)


def test_profile_features_match() -> None:
    """The job block with a cost profile: the spec, the single helper and the batch agree bit for bit."""
    from envs.hardware import load_profiles

    obj = Objective(w_loss=2.0, w_memory=0.5, memory_budget_bytes=1000)
    rec = TelemetryRecord(
        step=1,
        loss=1.0,
        grad_norm=1.0,
        state_bytes=1,
        interval_s=1.0,
        lr=1e-3,
        setting=DEFAULT_GRID.setting([0, 0, 0]),
    )
    ref = Reference(initial_loss=1.0, dense_state_bytes=4000)
    n_job = len(ObservationSpec.OBJECTIVE_FEATURES)
    for prof in load_profiles().values():
        single = objective_features(obj, 4000, prof)
        batch = objective_features_batch(
            obj.weights().astype(np.float64)[None],
            np.array([1000]),
            np.array([4000]),
            np.asarray(prof.features(), dtype=np.float64)[None],
        )[0]
        np.testing.assert_array_equal(single, batch)
        np.testing.assert_array_equal(ObservationSpec().encode([rec], obj, ref, prof)[-n_job:], single)
        assert single[6] == 1.0  # has_profile
