"""``mango eval``: a 1-episode run produces the tables, the plots and the BENCHMARKS section."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from agents.evaluate import (
    ORACLE,
    ControllerResult,
    EvalArgs,
    _heuristic,
    _play,
    evaluate,
    floor_check,
    held_static_best,
    main,
    mean_ci,
    static_best_episodes,
)
from envs.env import CompressionEnv
from envs.objectives import OBJECTIVE_PRESETS
from envs.training import TrainingConfig
from envs.workloads import HELDOUT_WORKLOADS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def report(smoke_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path]:
    out = tmp_path_factory.mktemp("eval")
    args = EvalArgs(
        policy=str(smoke_run / "policy"),
        compare=(f"sb3={smoke_run / 'best_model.zip'}",),
        workloads=(HELDOUT_WORKLOADS[0],),
        presets=("balanced", "memory-first"),
        episodes=2,
        out=str(out),
        bench_file=str(out / "BENCH.md"),
    )
    return evaluate(args, command="mango eval --test"), out


def test_every_controller_plays_every_episode(report: tuple[object, Path]) -> None:
    rep, _ = report
    expected = {
        "ppo",
        "sb3",
        "static",
        "accordion",
        "loraven",
        "energy_aware",
        "random",
        "static-best",
        ORACLE,
    }
    for preset in ("balanced", "memory-first"):
        res = rep.results[preset]  # type: ignore[attr-defined]
        assert set(res) == expected
        for name, r in res.items():
            assert r.returns.shape == (2,) and r.terms.shape == (2, 4), name
            assert np.isfinite(r.returns).all()
        # the hindsight best static is a grid point chosen on these very episodes: no static can beat it
        assert res["static-best"].returns.mean() >= res["static"].returns.mean() - 1e-9
        # the SB3 checkpoint and its exported artifact are the same policy -> identical episodes
        np.testing.assert_array_equal(res["sb3"].returns, res["ppo"].returns)
        assert len(res["ppo"].timeline) == 12
        # every played episode keeps its schedule, seeds in order (the first is the timeline's)
        assert len(res["ppo"].schedules) == 2 and res["ppo"].schedules[0] == res["ppo"].timeline


def test_outputs_tables_plots_and_bench_section(report: tuple[object, Path]) -> None:
    _, out = report
    for name in ("pareto.png", "timeline.png"):
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000, name
    text = (out / "BENCH.md").read_text()
    assert "## Policy evaluation: surrogate backend" in text and "`mango eval --test`" in text
    assert "**balanced**" in text and "**memory-first**" in text and "| static-best |" in text
    assert "Goal (>= 10 % better" in text
    saved = json.loads((out / "results.json").read_text())
    assert saved["seeds"] == [0, 1] and set(saved["results"]) == {"balanced", "memory-first"}
    assert "Floor check, ppo vs r0/b8/g0 per workload" in text and "Floor check, sb3" in text
    floor = saved["floor"]["ppo"]
    assert set(floor["cells"]) == {"balanced", "memory-first"}
    assert floor["failed_cells"] == sum(c["fails"] for row in floor["cells"].values() for c in row.values())
    assert f"**{floor['failed_cells']} of 2 cells fail**" in text


def _result(returns: list[float]) -> ControllerResult:
    return ControllerResult(returns=np.asarray(returns), terms=np.zeros((len(returns), 4)))


def test_floor_check_fails_a_cell_only_beyond_the_paired_ci() -> None:
    # two workloads x three seeds, workload-major: on "a" the policy is worse by 1 +- 0.1 on every seed
    # (fails), on "b" worse on average but the paired CI straddles 0 (does not fail)
    base = [0.0, 1.0, 2.0, 0.0, 1.0, 2.0]
    pol = [-1.0, -0.1, 1.1, 1.0, 0.0, 1.0]
    results = {
        "balanced": {"ppo": _result(pol), "static": _result(base)},
        "loss-first": {"ppo": _result(pol)},
    }
    cells = floor_check(results, ["a", "b"], "ppo")
    assert set(cells) == {"balanced"}  # no r0/b8/g0 entrant under loss-first: no check there
    a, b = cells["balanced"]["a"], cells["balanced"]["b"]
    assert a.diff == pytest.approx(-1.0) and a.fails
    assert b.diff == pytest.approx(-1.0 / 3.0) and not b.fails and b.diff + b.ci > 0.0
    assert a.rel == pytest.approx(-1.0)  # mean -0 vs 1 -> (0 - 1) / 1


def test_floor_entrant_is_added_for_a_learned_policy(smoke_run: Path, tmp_path: Path) -> None:
    args = EvalArgs(
        policy=str(smoke_run / "policy"),
        workloads=(HELDOUT_WORKLOADS[0],),
        presets=("time-first",),
        episodes=2,
        heuristics=("random",),
        out=str(tmp_path),
        bench=False,
    )
    rep = evaluate(args)
    assert {"ppo", "random", "static"} <= set(rep.results["time-first"])
    assert "Floor check, ppo" in rep.markdown


def test_cli_refuses_training_workloads(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a held-out workload"):
        main(["--workloads", "lm-tiny-cosine", "--no-bench", "--out", str(tmp_path), "--policy", "none"])


def test_training_split_is_a_diagnosis_by_name(tmp_path: Path) -> None:
    """``--split train`` plays the world a policy learned in (how session 12 found the default's in-sim
    memory-first choice on the GPU workloads); the report says it is no test, and a held-out workload is
    refused there."""
    main(["--split", "train", "--workloads", "lm-tiny-cosine", "--presets", "memory-first", "--episodes", "2",
          "--heuristics", "static", "--no-bench", "--out", str(tmp_path), "--policy", "none"])  # fmt: skip
    text = (tmp_path / "report.md").read_text()
    assert "workloads (training split: a diagnosis of the world the policy learned in, not a test)" in text
    assert "lm-tiny-cosine" in text
    with pytest.raises(ValueError, match="is not a training split"):
        main(["--split", "train", "--workloads", HELDOUT_WORKLOADS[0], "--no-bench", "--out", str(tmp_path)])


def test_depth_shows_in_the_report_and_bad_depth_is_refused_before_any_output(tmp_path: Path) -> None:
    """``--depth`` plays the surrogate's deeper reference (named in the report); an inverted range, or any
    depth with the training backend, is refused before the output folder exists."""
    out = tmp_path / "deep"
    main(["--workloads", HELDOUT_WORKLOADS[0], "--presets", "memory-first", "--episodes", "2",
          "--heuristics", "static", "--depth", "0.31", "0.31", "--no-bench", "--out", str(out),
          "--policy", "none"])  # fmt: skip
    assert "reference depth 0.31-0.31" in (out / "report.md").read_text()
    bad_args = [
        (["--depth", "0.4", "0.1"], r"0 <= lo <= hi"),
        (["--depth", "0", "0.3", "--backend", "training"], "training backend trains real jobs"),
        (["--no-profile", "--backend", "training"], "drop --no-profile"),
    ]
    for bad, match in bad_args:
        with pytest.raises(ValueError, match=match):
            main([*bad, "--no-bench", "--out", str(tmp_path / "no"), "--policy", "none"])
        assert not (tmp_path / "no").exists()


def test_no_profile_hides_the_profile_from_the_policy(smoke_run: Path, tmp_path: Path) -> None:
    """``--no-profile`` runs with a learned policy and says so in the report (the episodes themselves:
    ``tests/envs/test_env_surrogate.py``, hidden profiles)."""
    out = tmp_path / "hidden"
    main(["--workloads", HELDOUT_WORKLOADS[0], "--presets", "memory-first", "--episodes", "2",
          "--heuristics", "static", "--no-profile", "--no-bench", "--out", str(out),
          "--policy", str(smoke_run / "policy")])  # fmt: skip
    assert "(jobs send no profile)" in (out / "report.md").read_text()


def test_mean_ci_matches_the_t_interval() -> None:
    m, h = mean_ci(np.array([1.0, 2.0, 3.0, 4.0]))
    assert m == 2.5 and h == pytest.approx(3.182446 * np.std([1, 2, 3, 4], ddof=1) / 2, rel=1e-5)
    assert np.isnan(mean_ci(np.array([1.0]))[1])


def test_vectorized_statics_play_the_single_env_episodes() -> None:
    # static-best comes from the vectorized grid; the closed-loop controllers from CompressionEnv: the
    # comparison is only fair if the same seed gives the same episode in both
    from agents.rollout import EVAL_REWARD, run_surrogate
    from envs.env import CompressionEnv
    from envs.reward import TERM_NAMES, episode_objective

    a = np.array([2, 3, 1])
    w = HELDOUT_WORKLOADS[-1]
    vec = run_surrogate(lambda o: np.tile(a, (o.shape[0], 1)), w, "time-first", [5, 6])
    env = CompressionEnv(workload=w, objective="time-first", reward=EVAL_REWARD)
    weights = np.array(OBJECTIVE_PRESETS["time-first"])
    for i, seed in enumerate((5, 6)):
        env.reset(seed=seed)
        total, done, terms, n = 0.0, False, np.zeros(4), 0
        while not done:
            _, r, done, _, info = env.step(a)
            total += r
            terms += [info[k] for k in TERM_NAMES]
            n += 1
        assert total == pytest.approx(vec.returns[i], rel=1e-12)
        assert vec.final_loss[i] == info["loss_term"]
        assert vec.scores("final")[i] == pytest.approx(
            -episode_objective(weights, info["loss_term"], terms / n)
        )


def test_one_objective_function_for_the_demo_and_eval() -> None:
    """The demo's verdict and mango eval's final score are one function: the same final loss excess and cost
    ratios give the same J through demo.objective_scores and envs.reward.episode_objective."""
    from client.protocol import Objective
    from demo import RunResult, objective_scores
    from envs.reward import episode_objective

    def run(name: str, loss: float, state: int, energy: float, wall: float) -> RunResult:
        return RunResult(name, name, loss, state, 100, energy, "modelled", wall)

    runs = [run("adamw (torch)", 2.0, 800, 10.0, 1.0), run("adaptive (service)", 2.3, 200, 12.0, 0.9)]
    obj = Objective(w_loss=5.0, w_memory=0.5, w_energy=0.25, w_time=0.25)
    demo_j = objective_scores(runs, obj)["adaptive (service)"]
    eval_j = episode_objective(obj.weights().astype(float), 0.15, [0.0, 0.25, 1.2, 0.9])
    assert (
        demo_j
        == pytest.approx(float(eval_j))
        == pytest.approx(5 * 0.15 + 0.5 * 0.25 + 0.25 * 1.2 + 0.25 * 0.9)
    )


def test_final_score_charges_a_late_low_rank_the_interval_return_hides() -> None:
    """On the 85 M GPU workload, r0/b8/g0 that drops to a low rank for the last 3 of 12 intervals: under
    balanced the per-interval return charges the drop little or calls it a gain (it did until the refit of
    session 32), the final score (the demo's J) several times more; under loss-first both charge it, the
    final score several times more."""
    from agents.rollout import run_surrogate
    from client.protocol import DEFAULT_GRID, CompressionSetting

    base = np.asarray(DEFAULT_GRID.action(CompressionSetting.parse("r0/b8/g0")))
    seeds = list(range(8))

    def gaps(label: str, preset: str) -> tuple[float, float]:
        late = np.asarray(DEFAULT_GRID.action(CompressionSetting.parse(label)))
        t = {"t": 0}

        def switch(obs: np.ndarray) -> np.ndarray:
            t["t"] += 1
            return np.tile(late if t["t"] > 9 else base, (obs.shape[0], 1))

        fixed = run_surrogate(lambda o: np.tile(base, (o.shape[0], 1)), "gpu-gpt85m-cosine", preset, seeds)
        ends = run_surrogate(switch, "gpu-gpt85m-cosine", preset, seeds)
        assert (ends.actions[:, 9:] == late).all() and (ends.actions[:, :9] == base).all()
        assert ends.final_loss.mean() > fixed.final_loss.mean() + 0.004
        d_final = float(np.mean(fixed.scores("final") - ends.scores("final")))
        return d_final, float(np.mean(fixed.returns - ends.returns)) / 12  # per interval: J's unit

    d_final, d_interval = gaps("r1/b8/g0", "balanced")
    assert d_final > 0 and d_final > 5 * d_interval
    d_final, d_interval = gaps("r4/b8/g0", "loss-first")
    assert d_final > 3 * d_interval > 0


def test_episodes_that_played_the_best_static_are_counted() -> None:
    """A controller that held the best static setting through an episode trained exactly as static-best:
    the report counts those episodes, so a score gap there reads as measurement noise, not a choice."""
    best = ControllerResult(returns=np.zeros(3), terms=np.zeros((3, 4)), label="r0/b4/g0")
    pol = _result([0.0, 0.0, 0.0])
    pol.schedules = [["r0/b4/g0"] * 3, ["r0/b8/g0", "r0/b4/g0", "r0/b4/g0"], ["r0/b4/g0"] * 3]
    other = _result([0.0, 0.0, 0.0])
    other.schedules = [["r0/b8/g0"] * 3] * 3
    lines = static_best_episodes({"static-best": best, "ppo": pol, "static": other})
    assert len(lines) == 1
    assert "ppo played the best static setting (`r0/b4/g0`) in every interval of 2 of 3 episodes" in lines[0]
    assert static_best_episodes({"ppo": pol}) == []  # no static-best to compare with


def _held(returns: list[float], label: str) -> ControllerResult:
    """An entrant that played ``label`` in all three intervals of every episode."""
    r = _result(returns)
    r.schedules = [[label] * 3 for _ in returns]
    return r


def test_best_held_setting_is_found_among_the_entrants_played() -> None:
    """On real jobs static-best is the surrogate's pick: the report also names the best setting among the
    entrants that held one setting throughout, and each learned policy's paired difference to it; an
    entrant that changed setting is not one of them."""

    moved = _result([9.0, 9.0])
    moved.schedules = [["r0/b8/g0", "r0/b4/g0", "r0/b4/g0"]] * 2
    res = {
        "static-best": _held([1.0, 1.0], "r0/b4/g0"),
        "static": _held([2.0, 2.0], "r0/b8/g0"),
        "schedule:r0/b32/g0": _held([3.0, 5.0], "r0/b32/g0"),
        "schedule:r0/b8/g0:1>r0/b4/g0": moved,
        "ppo": _held([4.0, 4.0], "r0/b4/g0"),
    }
    lines = held_static_best(res, ["ppo"])
    assert lines[0].startswith(
        "- best static setting played here, in hindsight: `r0/b32/g0` (schedule:r0/b32/g0"
    )
    assert "over 3 one-setting entrants: r0/b32/g0, r0/b4/g0, r0/b8/g0" in lines[0]
    assert lines[1].startswith("- ppo vs it: paired diff +0.0000") and "(+0.0%)" in lines[1]
    assert held_static_best({"static": res["static"], "ppo": res["ppo"]}, ["ppo"]) == []  # one only


def test_held_static_best_per_workload_picks_each_workloads_best() -> None:
    """Over two workloads (episodes workload-major) the per-workload line takes each workload's best held
    setting: r0/b8/g0 on the first, r0/b32/g0 on the second, and the policy's paired diff is to those."""

    res = {
        "static": _held([5.0, 5.0, 1.0, 1.0], "r0/b8/g0"),  # mean 3
        "schedule:r0/b32/g0": _held([2.0, 2.0, 4.0, 4.0], "r0/b32/g0"),  # mean 3
        "schedule:r0/b4/g0": _held([3.0, 3.0, 3.5, 3.5], "r0/b4/g0"),  # mean 3.25: the best single one
        "ppo": _held([5.0, 5.0, 4.0, 4.0], "r0/b4/g0"),
    }
    lines = held_static_best(res, ["ppo"], n_workloads=2)
    assert "`r0/b4/g0` (schedule:r0/b4/g0" in lines[0]
    per = next(line for line in lines if line.startswith("- best of them per workload"))
    assert "`r0/b8/g0`, `r0/b32/g0`, score 4.5000" in per
    assert "(+38.5% over the best single one)" in per  # 4.5 against 3.25
    assert lines[-1].startswith("- ppo vs the per-workload picks: paired diff +0.0000")
    assert not any("per workload" in line for line in held_static_best(res, ["ppo"]))  # one workload
    assert not any("per workload" in line for line in held_static_best(res, ["ppo"], n_workloads=3))


def test_open_loop_schedules_play_their_settings_in_order(tmp_path: Path) -> None:
    """``--schedules`` entrants play setting A for k decisions (the first made before the first interval),
    then B; a one-setting schedule plays the ``static`` entrant's episodes exactly; a bad spec is refused
    before any output."""
    out = tmp_path / "sched"
    rep = evaluate(
        EvalArgs(
            policy="none",
            workloads=(HELDOUT_WORKLOADS[0],),
            presets=("balanced",),
            episodes=2,
            heuristics=("static",),
            schedules=("r0/b8/g0:2>r0/b4/g0", "r0/b8/g0"),
            out=str(out),
            bench=False,
        )
    )
    res = rep.results["balanced"]
    two = res["schedule:r0/b8/g0:2>r0/b4/g0"]
    assert len(two.schedules) == 2
    for sched in two.schedules:
        assert sched[:2] == ["r0/b8/g0", "r0/b8/g0"] and set(sched[2:]) == {"r0/b4/g0"} and len(sched) > 2
    one, static = res["schedule:r0/b8/g0"], res["static"]
    np.testing.assert_allclose(one.returns, static.returns)
    assert not np.allclose(two.returns, static.returns)
    assert "schedule:r0/b8/g0:2>r0/b4/g0" in rep.markdown
    for bad, match in [(("r0/b8/g0>r0/b4/g0",), "needs a count"), (("r0/b8/g0", "r0/b8/g0"), "given twice")]:
        with pytest.raises(ValueError, match=match):
            evaluate(EvalArgs(policy="none", schedules=bad, out=str(tmp_path / "no"), bench=False))
        assert not (tmp_path / "no").exists()


def test_training_backend_episodes_are_distinct_jobs(tmp_path: Path) -> None:
    """On real jobs every evaluation episode trains its own job (job seed = reset seed): drawn from the
    backend's pool of 4, four episodes repeated jobs exactly and the CIs counted the copies as evidence."""
    cfg = TrainingConfig(device="cpu", clock="modelled", threads=1, cache_dir=str(tmp_path))
    env = CompressionEnv(
        backend="training", workload="digits-mlp-noisy", interval_steps=2, intervals=2, training=cfg,
        objective="balanced",
    )  # fmt: skip
    static = _heuristic("static")
    finals = [_play(env, static, seed, "balanced")[3] for seed in range(4)]
    assert len(set(finals)) == 4, finals
    assert _play(env, static, 2, "balanced")[3] == finals[2]  # the same seed is the same job
