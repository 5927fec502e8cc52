"""CompressionEnv on the surrogate backend and SurrogateVecEnv: API conformance, determinism, errors."""

from __future__ import annotations

import warnings
from dataclasses import replace

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import envs
from client.compression.sizes import state_bytes
from client.controllers import FIRST_CANDIDATES, first_setting
from client.protocol import DEFAULT_GRID, CompressionSetting, Objective, ObservationSpec
from envs.env import CompressionEnv
from envs.fit import default_model
from envs.hardware import HardwareSampler
from envs.objectives import OBJECTIVE_PRESETS, ObjectiveSampler, make_objective
from envs.reward import TERM_NAMES, RewardConfig
from envs.simulator import SurrogateEngine
from envs.surrogate import SurrogateVecEnv
from envs.surrogate_model import SurrogateModel


@pytest.fixture(scope="module")
def model() -> SurrogateModel:
    return default_model()


def _episode(env: gym.Env, seed: int, actions: np.ndarray) -> list[tuple[np.ndarray, float, bool]]:
    obs, _ = env.reset(seed=seed)
    out = [(obs, 0.0, False)]
    for a in actions:
        obs, r, term, trunc, _ = env.step(a)
        out.append((obs, float(r), term))
        if term or trunc:
            break
    return out


def test_registered_and_makes(model: SurrogateModel) -> None:
    assert envs.ENV_ID in gym.registry
    env = gym.make(envs.ENV_ID, backend="surrogate", workload="lm-tiny-cosine", model=model)
    obs, info = env.reset(seed=0)
    spec = ObservationSpec()
    assert obs.shape == (spec.size,) and obs.dtype == np.float32
    assert env.action_space.nvec.tolist() == [8, 6, 5]
    # the first interval runs the first decision (objective + hardware), not always "off"
    assert info["workload"] == "lm-tiny-cosine" and info["setting"] in FIRST_CANDIDATES
    vec = gym.make_vec(envs.ENV_ID, num_envs=3, vectorization_mode="vector_entry_point", model=model)
    assert isinstance(vec, SurrogateVecEnv) and vec.reset(seed=0)[0].shape == (3, spec.size)


@pytest.mark.parametrize("workload", [*envs.TRAIN_WORKLOADS, None])
def test_gymnasium_and_sb3_checkers(model: SurrogateModel, workload: str | None) -> None:
    env = CompressionEnv(backend="surrogate", workload=workload, model=model)
    with warnings.catch_warnings():
        warnings.simplefilter("error", category=UserWarning)  # any checker warning fails the test
        gym_check_env(env, skip_render_check=True)
    sb3_check_env(CompressionEnv(backend="surrogate", workload=workload, model=model), warn=True)


def test_same_seed_same_episode_exactly(model: SurrogateModel) -> None:
    acts = np.random.default_rng(0).integers(0, [8, 6, 5], size=(20, 3))
    a = _episode(CompressionEnv(model=model), 7, acts)
    b = _episode(CompressionEnv(model=model), 7, acts)
    c = _episode(CompressionEnv(model=model), 8, acts)
    assert len(a) == len(b)
    for (oa, ra, ta), (ob, rb, tb) in zip(a, b, strict=True):
        assert np.array_equal(oa, ob) and ra == rb and ta == tb
    assert not all(np.array_equal(x[0], y[0]) for x, y in zip(a, c, strict=False))


def test_episode_length_termination_and_info(model: SurrogateModel) -> None:
    env = CompressionEnv(workload="lm-small-constant", model=model, objective="balanced")
    _, info = env.reset(seed=1)
    k = envs.get_workload("lm-small-constant").intervals
    prev = 0.0
    for t in range(k):
        prev = info.get("loss_term", 0.0)
        obs, r, term, trunc, info = env.step(np.array([3, 3, 0]))
        assert not trunc and term == (t == k - 1)
        assert env.observation_space.contains(obs)
    for key in (*TERM_NAMES, "over_budget", "diverged", "ref_loss", "loss", "state_bytes", "setting"):
        assert key in info
    w = OBJECTIVE_PRESETS["balanced"]
    # loss_credit="final" (the default): the loss part is K x the change of the loss term
    paid = (k * (info["loss_term"] - prev), info["memory_term"], info["energy_term"], info["time_term"])
    assert r == pytest.approx(-sum(wi * x for wi, x in zip(w, paid, strict=True)))
    assert info["setting"] == "r8/b8/g0" and 0 < info["memory_term"] < 1
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.array([0, 0, 0]))


def test_objective_sampled_per_episode_and_fixed_by_option(model: SurrogateModel) -> None:
    env = CompressionEnv(model=model, objective_sampler=ObjectiveSampler(preset_prob=0.0))
    seen = {tuple(env.reset(seed=s)[1]["objective"].values())[:4] for s in range(6)}
    assert len(seen) == 6
    obj = Objective(w_loss=1.0, w_memory=2.0, w_energy=0.0, w_time=0.0)
    obs, info = env.reset(seed=3, options={"objective": obj})
    assert info["objective"]["w_memory"] == 2.0
    job = obs[-len(ObservationSpec.OBJECTIVE_FEATURES) :]
    np.testing.assert_allclose(job[:4], [1 / 3, 2 / 3, 0, 0], rtol=1e-6)  # visible in the observation
    _, info = env.reset(seed=3, options={"objective": "memory-first"})
    assert info["objective"]["w_memory"] == OBJECTIVE_PRESETS["memory-first"][1]


def test_memory_budget_penalty(model: SurrogateModel) -> None:
    from envs.reward import RewardConfig

    # the per-interval loss credit keeps the loss part to this interval's term (the penalty is the same)
    env = CompressionEnv(workload="lm-tiny-cosine", model=model, reward=RewardConfig(loss_credit="interval"))
    obs, info = env.reset(seed=0, options={"objective": Objective(w_loss=1.0, memory_budget_bytes=1000)})
    job = obs[-len(ObservationSpec.OBJECTIVE_FEATURES) :]
    assert job[5] == 1.0  # has_budget
    _, r, _, _, info = env.step(np.array([7, 5, 0]))  # off: over any tiny budget
    # memory is a constraint under a budget: no memory cost, a penalty of 1 + 2 x overshoot instead
    over = info["state_bytes"] / 1000 - 1.0
    assert info["over_budget"] and r == pytest.approx(-info["loss_term"] - 1.0 - 2.0 * over)


@pytest.mark.parametrize(
    ("kw", "exc", "match"),
    [
        ({"workload": "no-such-workload"}, ValueError, "unknown workload 'no-such-workload'"),
        ({"objective": (0.0, 0.0, 0.0, 0.0)}, ValueError, "all zero"),
        ({"objective": {"w_loss": 0.0}}, ValueError, "all zero"),
        ({"objective": "speed-first"}, ValueError, "unknown objective preset"),
        ({"backend": "simulator"}, ValueError, "backend='simulator'"),
        ({"backend": "training", "interval_steps": 0}, ValueError, "interval_steps=0"),
        ({"backend": "training", "intervals": 0}, ValueError, "intervals=0"),
        ({"interval_steps": 5}, ValueError, "only be overridden on the training backend"),
        ({"window": 0}, ValueError, "window"),
        ({"split": "test"}, ValueError, "split"),
        ({"render_mode": "human"}, ValueError, "render_mode"),
        ({"depth": (0.3, 0.1)}, ValueError, "depth=\\(0.3, 0.1\\)"),
        ({"depth": (-0.1, 0.2)}, ValueError, "0 <= lo <= hi"),
        ({"depth": (0.0, 5.0)}, ValueError, "<= 2.0"),
        ({"backend": "training", "depth": (0.0, 0.3)}, ValueError, "training backend"),
    ],
)
def test_bad_configuration_is_a_clear_error(kw: dict[str, object], exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        CompressionEnv(**kw)  # type: ignore[arg-type]


def test_bad_reset_options_and_actions(model: SurrogateModel) -> None:
    env = CompressionEnv(workload="lm-tiny-cosine", model=model)
    with pytest.raises(ValueError, match="unknown reset options"):
        env.reset(options={"objectives": "balanced"})
    with pytest.raises(ValueError, match="not one of this env"):
        env.reset(options={"workload": "digits-mlp-cosine"})
    env.reset(seed=0)
    with pytest.raises(ValueError, match="not in MultiDiscrete"):
        env.step(np.array([8, 0, 0]))


@pytest.mark.parametrize("depth", [(0.0, 0.0), (0.0, 0.4)])
def test_vectorized_equals_single_envs(model: SurrogateModel, depth: tuple[float, float]) -> None:
    """Sub-env i of SurrogateVecEnv(seed=s) plays exactly CompressionEnv.reset(seed=s+i)'s episodes, and its
    numpy observations equal ObservationSpec.encode on the single env's pydantic records."""
    n = 6
    names = [w for w in envs.TRAIN_WORKLOADS if w in model.tables]
    vec = SurrogateVecEnv(num_envs=n, workload=names, model=model, window=5, depth=depth)
    singles = [CompressionEnv(workload=names, model=model, window=5, depth=depth) for _ in range(n)]
    ov, _ = vec.reset(seed=100)
    for i, e in enumerate(singles):
        np.testing.assert_array_equal(ov[i], e.reset(seed=100 + i)[0])
    rng = np.random.default_rng(1)
    ends = 0
    for _ in range(40):  # > 3 episodes each: autoresets included
        acts = rng.integers(0, [8, 6, 5], size=(n, 3))
        ov, rv, tv, _, iv = vec.step(acts)
        for i, e in enumerate(singles):
            o, r, term, _, info = e.step(acts[i])
            assert r == rv[i] and term == tv[i]
            assert info["memory_term"] == iv["memory_term"][i]
            if term:
                ends += 1
                np.testing.assert_array_equal(iv["final_obs"][i], o)
                o, _ = e.reset()
            np.testing.assert_array_equal(ov[i], o)
    assert ends >= n * 2


def test_surrogate_memory_is_exact_formula(model: SurrogateModel) -> None:
    tab = model.workload("lm-tiny-cosine")
    w = envs.get_workload("lm-tiny-cosine")
    shapes = [tuple(p.shape) for p in w.build_model(0).parameters() if p.requires_grad]
    for s in (CompressionSetting(rank=4, bits=2, gamma=0.5), CompressionSetting(rank=0, bits=16, gamma=0.0)):
        idx = DEFAULT_GRID.action(s)
        assert tab.state_bytes[idx] == state_bytes(shapes, s, min_compress_numel=w.min_compress_numel)


def test_render_ansi(model: SurrogateModel) -> None:
    env = CompressionEnv(model=model, render_mode="ansi")
    env.reset(seed=0)
    env.step(np.array([2, 2, 1]))
    text = env.render()
    assert isinstance(text, str) and "r4/b4/g0.25" in text and "modelled" in text


def test_loss_term_is_relative_to_the_reference_at_the_same_step() -> None:
    """Issue 13: a loss 20 % above the uncompressed run's at the same step costs 0.2, whatever the start."""
    from envs.reward import reward_terms

    terms = reward_terms(1.2, 1, 1.0, 1.0, ref_loss=1.0, ref_state_bytes=1, ref_energy_j=1.0,
                         ref_interval_s=1.0, initial_loss=5.0)  # fmt: skip
    assert terms[0] == pytest.approx(0.2)


def test_episode_hardware_shows_in_the_observation(model: SurrogateModel) -> None:
    n_job = len(ObservationSpec.OBJECTIVE_FEATURES)
    env = CompressionEnv(
        workload="lm-tiny-cosine", model=model, hardware=HardwareSampler(fixed="cpu-dev-2core")
    )
    obs, info = env.reset(seed=0)
    assert info["hardware"] == "cpu-dev-2core" and obs[-n_job + 6] == 1.0  # has_profile
    bare = CompressionEnv(workload="lm-tiny-cosine", model=model, hardware=None)
    obs, _ = bare.reset(seed=0)
    assert (obs[-n_job + 6 :] == 0).all()


def test_matched_hardware_draws_follow_the_workloads_device(model: SurrogateModel) -> None:
    """``match_device``: GPU workloads draw only H200 profiles (blends between them included), CPU workloads
    only the CPU one; without it both kinds draw both."""
    profiles = ("cpu-dev-2core", "h200-gpt85m", "h200-lm-medium")
    names = ["lm-tiny-cosine", "gpu-gpt85m-cosine"]

    def labels(match: bool) -> dict[str, set[str]]:
        env = SurrogateVecEnv(
            num_envs=64, workload=names, model=model,
            hardware=HardwareSampler(profiles=profiles, match_device=match),
        )  # fmt: skip
        seen: dict[str, set[str]] = {n: set() for n in names}
        for seed in range(4):
            env.reset(seed=seed)
            for wi, label in zip(env.engine.w, env.engine.hw_label, strict=True):
                seen[names[wi]] |= set(label.split("@")[0].split("~"))
        return seen

    matched = labels(True)
    assert matched["lm-tiny-cosine"] == {"cpu-dev-2core"}
    assert matched["gpu-gpt85m-cosine"] == {"h200-gpt85m", "h200-lm-medium"}
    free = labels(False)
    assert free["lm-tiny-cosine"] == free["gpu-gpt85m-cosine"] == set(profiles)


def test_hidden_profiles_look_like_a_job_that_sends_none(model: SurrogateModel) -> None:
    """``hide_profile``: that share of episodes gets zero profile features (as ``ObservationSpec.encode``
    writes them for a job without a profile) and the first setting the hook picks without one; the rest keep
    their features and the profile-ranked first setting."""
    env = SurrogateVecEnv(
        num_envs=64, workload=["lm-tiny-cosine", "gpu-gpt85m-cosine"], model=model,
        hardware=HardwareSampler(hide_profile=0.5),
    )  # fmt: skip
    eng = env.engine
    hidden_seen = shown_seen = 0
    for seed in range(3):
        obs, _ = env.reset(seed=seed)
        block = obs[:, -len(ObservationSpec.OBJECTIVE_FEATURES) + 6 :]
        for i, label in enumerate(eng.hw_label):
            if label.endswith("(hidden)"):
                hidden_seen += 1
                assert (block[i] == 0).all() and (eng.hw_feat[i] == 0).all()
                budget = int(eng.budget[i])
                objective = make_objective(eng.weights[i], budget if budget > 0 else None)
                wi = int(eng.w[i])
                expected, _ = first_setting(objective, dense_state_bytes=int(eng.s_ref_state[wi]))
                assert tuple(eng.init_acts[i]) == DEFAULT_GRID.action(expected)
            else:
                shown_seen += 1
                assert block[i, 0] == 1.0  # has_profile
    assert 0.35 < hidden_seen / (hidden_seen + shown_seen) < 0.65
    with pytest.raises(ValueError, match="hide_profile"):
        HardwareSampler(hide_profile=1.5)


def test_final_loss_credit_orders_equal_interval_sums_by_the_final_loss() -> None:
    """Two synthetic episodes with the same per-interval loss terms in another order: the per-interval sum
    cannot tell them apart; loss_credit="final" charges the one that ends worse (20 % worse costs 0.2 x K)."""
    from envs.reward import RewardConfig, penalized_reward

    w = np.array(OBJECTIVE_PRESETS["balanced"])
    early = [0.0, 0.2, 0.0]  # damage that recovered by the end
    late = [0.0, 0.0, 0.2]  # the same damage, left at the end (a low rank in the last interval)

    def ret(losses: list[float], credit: str) -> float:
        cfg = RewardConfig(loss_credit=credit)  # type: ignore[arg-type]
        total, prev = 0.0, 0.0  # l_0 = 0: an uncompressed warm-up interval
        for l_t in losses:
            r, _, _ = penalized_reward(w, (l_t, 0.3, 1.0, 1.0), state_bytes=1, budget_bytes=0, loss=1.0,
                                       initial_loss=1.0, config=cfg, prev_loss_term=prev,
                                       intervals=len(losses))  # fmt: skip
            total, prev = total + float(r), l_t
        return total

    assert ret(early, "interval") == pytest.approx(ret(late, "interval"))
    assert ret(late, "final") < ret(early, "final")
    # the final credit's return is -K x the users' objective J (final loss, mean costs)
    k = len(late)
    j = 5.0 * 0.2 + 0.5 * 0.3 + 0.25 + 0.25
    assert ret(late, "final") == pytest.approx(-k * j)
    with pytest.raises(ValueError, match="loss_credit"):
        RewardConfig(loss_credit="sum")  # type: ignore[arg-type]


def test_final_credit_return_is_k_times_the_episode_objective(model: SurrogateModel) -> None:
    """On the surrogate, vectorized: the return under loss_credit="final" equals -K x episode_objective
    (the function mango eval scores with) plus K w_loss l_0 of the warm-up interval, per episode."""
    from envs.reward import episode_objective

    w = "gpu-gpt85m-cosine"
    env = SurrogateVecEnv(num_envs=3, workload=w, model=model, objective="balanced")
    env.reset(seed=[5, 6, 7])
    l0 = env.engine.prev_loss_term.copy()
    k = model.tables[w].intervals
    acts = np.array(
        [DEFAULT_GRID.action(CompressionSetting.parse(s)) for s in ("r0/b8/g0", "r8/b4/g0", "r4/b8/g0")]
    )
    total, terms = np.zeros(3), np.zeros((3, 4))
    for _ in range(k):
        _, r, _, _, info = env.step(acts)
        total += r
        terms += np.stack([info[n] for n in TERM_NAMES], axis=1)
    weights = np.array(OBJECTIVE_PRESETS["balanced"])
    j = episode_objective(weights, info["loss_term"], terms / k)
    np.testing.assert_allclose(total, -k * j + k * weights[0] * l0, rtol=1e-9, atol=1e-9)
    assert j[1] > j[0]  # r8/b4 ends above the uncompressed loss on the 85 M model: it pays for it


def test_depth_deepens_the_reference_and_keeps_the_absolute_excess(model: SurrogateModel) -> None:
    """A deeper job (depth d): the reference is exp(-d * progress) lower, loss - reference is the same in
    initial-loss units (same draws), so the same damage costs a larger loss term; the policy sees it."""
    name = next(w for w in envs.TRAIN_WORKLOADS if w in model.tables)
    act = np.array(DEFAULT_GRID.action(CompressionSetting.parse("r4/b8/g0")))
    model = replace(model, late_entry=0.0)  # the rule opens at rank 0: the late entry's cost is relative
    runs = {}
    for d in (0.0, 0.3):
        vec = SurrogateVecEnv(num_envs=3, workload=name, model=model, objective="balanced", depth=(d, d))
        vec.reset(seed=7)
        eng = vec.engine
        rows = []
        for _ in range(int(eng.k[0]) - 1):  # the last step autoresets: eng.last is the next episode's
            _, _, _, _, info = vec.step(np.tile(act, (3, 1)))
            last = eng.last
            rows.append(
                (last["ref_loss"].copy(), last["loss"].copy(), last["progress"].copy(), info["loss_term"])
            )
        runs[d] = rows
    for (ref0, loss0, p, term0), (ref1, loss1, p1, term1) in zip(runs[0.0], runs[0.3], strict=True):
        np.testing.assert_array_equal(p, p1)
        np.testing.assert_allclose(ref1, ref0 * np.exp(-0.3 * p), rtol=1e-12)
        np.testing.assert_allclose(loss1 - ref1, loss0 - ref0, rtol=1e-9, atol=1e-12)
        assert (np.abs(term1) >= np.abs(term0) - 1e-12).all()
    assert (
        runs[0.3][-1][3] > runs[0.0][-1][3]
    ).all()  # r4 ends above the reference: the deeper run pays more


def test_a_late_entry_into_projection_keeps_its_cost(model: SurrogateModel) -> None:
    """An episode that opens at rank 0 and projects later ends ``late_entry`` (relative) above the same
    episode without the term; one that opens projected, or never projects, is unchanged."""
    name = "lm-small-cosine" if "lm-small-cosine" in model.tables else sorted(model.tables)[0]
    spec = ObservationSpec()
    r0b8 = DEFAULT_GRID.action(CompressionSetting.parse("r0/b8/g0"))
    r64b4 = DEFAULT_GRID.action(CompressionSetting.parse("r64/b4/g0"))

    def final_losses(late: float, first: str, then: tuple[int, int, int]) -> np.ndarray:
        eng = SurrogateEngine(
            replace(model, late_entry=late), [name], 2, spec, ObjectiveSampler(), RewardConfig(),
            initial_setting=CompressionSetting.parse(first),
        )  # fmt: skip
        eng.reset_envs(np.arange(2), [np.random.default_rng(s) for s in (1, 2)])
        for _ in range(3):
            eng.step(np.tile(np.array(then), (2, 1)))
        return eng.last["loss"] / eng.last["ref_loss"]

    late = final_losses(0.02, "r0/b8/g0", r64b4)
    np.testing.assert_allclose(late - final_losses(0.0, "r0/b8/g0", r64b4), 0.02, rtol=1e-9)
    np.testing.assert_array_equal(final_losses(0.02, "r0/b8/g0", r0b8), final_losses(0.0, "r0/b8/g0", r0b8))
    np.testing.assert_array_equal(
        final_losses(0.02, "r64/b4/g0", r64b4), final_losses(0.0, "r64/b4/g0", r64b4)
    )
    assert SurrogateModel.from_json(replace(model, late_entry=0.01).to_json()).late_entry == 0.01


def test_a_random_opening_holds_a_first_candidate_for_its_intervals(model: SurrogateModel) -> None:
    """``opening=(1, 3)``: every episode opens with one of the first-decision candidates held for 1-3
    intervals, which the first window shows, and leaves the policy that many fewer decisions."""
    name = next(w for w in envs.TRAIN_WORKLOADS if w in model.tables)
    spec = ObservationSpec()
    n = 16
    vec = SurrogateVecEnv(num_envs=n, workload=name, model=model, objective="balanced", opening=(1.0, 3))
    obs, _ = vec.reset(seed=3)
    eng = vec.engine
    cands = {tuple(DEFAULT_GRID.action(CompressionSetting.parse(lb))) for lb in FIRST_CANDIDATES}
    assert {tuple(a) for a in eng.init_acts} <= cands and len({tuple(a) for a in eng.init_acts}) > 1
    assert set(eng.open_k.tolist()) == {1, 2, 3}  # 16 draws of 1..3
    np.testing.assert_array_equal(eng.t, eng.open_k - 1)
    tokens = spec.split(obs)[0]
    real = (tokens[..., spec.TOKEN_FEATURES.index("mask")] > 0).sum(axis=1)
    np.testing.assert_array_equal(real, eng.open_k)  # the window shows every opening interval
    decisions = np.zeros(n, dtype=int)
    done = np.zeros(n, dtype=bool)
    k, open_k = eng.k.copy(), eng.open_k.copy()
    while not done.all():
        _, _, term, _, _ = vec.step(np.tile(np.array(DEFAULT_GRID.action(CompressionSetting.off())), (n, 1)))
        decisions += ~done
        done |= term
    np.testing.assert_array_equal(decisions, k - open_k + 1)


def test_the_default_opening_draws_nothing(model: SurrogateModel) -> None:
    name = next(w for w in envs.TRAIN_WORKLOADS if w in model.tables)
    a = SurrogateVecEnv(num_envs=4, workload=name, model=model)
    b = SurrogateVecEnv(num_envs=4, workload=name, model=model, opening=(0.0, 5))
    np.testing.assert_array_equal(a.reset(seed=11)[0], b.reset(seed=11)[0])
    act = np.tile(np.array(DEFAULT_GRID.action(CompressionSetting.parse("r0/b8/g0"))), (4, 1))
    np.testing.assert_array_equal(a.step(act)[0], b.step(act)[0])


@pytest.mark.parametrize("opening", [(1.5, 2), (0.5, 0), (0.5, 1.5), (0.5,)])
def test_bad_openings_are_refused(model: SurrogateModel, opening: tuple) -> None:
    with pytest.raises(ValueError, match="opening="):
        SurrogateVecEnv(num_envs=1, model=model, opening=opening)  # type: ignore[arg-type]
