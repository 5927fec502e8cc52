"""`mango fit` on the shipped traces: it runs, reproduces the shipped model, memory is exact, errors bound."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from envs.fit import (
    MODEL_PATH,
    FitConfig,
    _excess_tables,
    _prepare,
    _stack,
    fit_surrogate,
    main,
    traces_digest,
)
from envs.surrogate_model import SurrogateModel
from envs.traces import TRACES_DIR, load_traces
from envs.workloads import GPU_WORKLOADS, HELDOUT_WORKLOADS, TRAIN_WORKLOADS


@pytest.fixture(scope="module")
def fitted() -> tuple[SurrogateModel, dict]:
    return fit_surrogate(load_traces(), FitConfig())


def test_traces_cover_both_splits_and_are_small() -> None:
    ts = load_traces()
    assert set(TRAIN_WORKLOADS) <= set(ts.workloads) and set(HELDOUT_WORKLOADS) <= set(ts.workloads)
    for w in ts.workloads:
        # the H200 traces are few (minutes of GPU time): two reference seeds and a controller or two each
        assert ts.seeds_of(w) and len(ts.episodes_of(w)) >= (2 if w in GPU_WORKLOADS else 4), w
    size = sum(p.stat().st_size for p in Path(MODEL_PATH).parent.glob("*"))
    assert size < 2_000_000


def test_shipped_model_matches_traces(fitted: tuple[SurrogateModel, dict]) -> None:
    shipped = SurrogateModel.load(MODEL_PATH)
    assert shipped.info["traces_digest"] == traces_digest(), "traces changed: run `mango fit` to refit"
    model, _ = fitted
    assert model.rho == shipped.rho
    for name, tab in model.tables.items():
        np.testing.assert_allclose(tab.excess_a, shipped.tables[name].excess_a, rtol=1e-9, atol=1e-12)
        np.testing.assert_array_equal(tab.state_bytes, shipped.tables[name].state_bytes)


def test_memory_term_is_exact_on_recorded_episodes(fitted: tuple[SurrogateModel, dict]) -> None:
    _, report = fitted
    for group, row in report.items():
        # the exact formula, under the factoring rule the traces were recorded with (their header's
        # factor_max_bits, 4 before session 30), reproduces MangoAdamW.state_bytes() as recorded; a mismatch
        # means the optimizer changed otherwise since the traces were recorded: re-record (`mango record`)
        assert row["memory_abs"] == 0.0, group


def test_fit_errors_are_bounded(fitted: tuple[SurrogateModel, dict]) -> None:
    model, report = fitted
    assert 0.0 <= model.rho < 1.0
    held = report["held-out episodes (train workloads)"]
    assert held["episodes"] > 0
    # the excess model must beat "compression changes nothing" on unseen episodes
    assert held["lterm_abs"] < held["lterm_abs_noexcess"]
    for row in report.values():
        for key, val in row.items():
            assert np.isfinite(val), key


def test_main_writes_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "m.json"
    assert main(["--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "loss traj. rel. err" in text and "reward rel. err" in text
    d = json.loads(out.read_text())
    assert d["version"].startswith("mango-surrogate") and set(d["tables"]) >= set(TRAIN_WORKLOADS)


def test_gpu_traces_are_fitted_and_predicted(fitted: tuple[SurrogateModel, dict]) -> None:
    model, report = fitted
    assert set(GPU_WORKLOADS) <= set(model.tables)
    assert {"gpu-gpt85m-cosine", "gpu-lm-medium-cosine"} <= set(model.info["fit_workloads"])
    row = report["GPU gpu-gpt85m-val-linear, transfer (scale 1)"]
    # the held-out 85 M workload: the simulated excess must beat "compression changes nothing" by far
    assert row["episodes"] >= 2 and row["lterm_abs"] < 0.5 * row["lterm_abs_noexcess"]


def test_excess_floor_clips_each_end_of_training_alone() -> None:
    cfg = FitConfig()
    tail = np.array([0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05, 0.0])  # per rank index; the last is rank 0
    # low ranks: negative late (A), strongly positive early (A + B): only the late end may be clipped
    beta = np.array([0.0, 0.0, -2.0, 0.0, 0.0, 0.0, 0.0, 4.0, 0.0, 0.0])  # b_a, then b_b
    a, b = _excess_tables(tail, beta, 1.0, cfg)
    ra, rb = _excess_tables(tail, beta, 1.0, FitConfig(excess_floor=-1e9, excess_floor_projected=-1e9))
    floor = np.where(np.arange(a.size) // (a.size // 8) == 7, cfg.excess_floor, cfg.excess_floor_projected)
    np.testing.assert_allclose(a, np.maximum(ra, floor))
    np.testing.assert_allclose(a + b, np.maximum(ra + rb, floor))
    assert (ra < floor - 0.5).any() and (a + b > 1.0).any()  # the case the first floor got wrong


def test_balanced_rows_weigh_each_workload_alike(fitted: tuple[SurrogateModel, dict]) -> None:
    ts = load_traces()
    fitted_model, _ = fitted  # the default FitConfig's fit
    data = _prepare(ts, FitConfig())
    eps = [e for w in ("gpu-gpt85m-cosine", "lm-tiny-cosine") for e in data[w].eps]
    tails = {n: t.spectral_tail for n, t in fitted_model.tables.items()}
    _, _, w = _stack(eps, tails, 0.5, balance=True)
    names = np.array([e.workload for e in eps for _ in range(len(e.y) - 1)])
    assert np.isclose(w.mean(), 1.0)
    assert np.isclose(w[names == "gpu-gpt85m-cosine"].sum(), w[names == "lm-tiny-cosine"].sum())
    _, _, w1 = _stack(eps, tails, 0.5, balance=False)
    assert (w1 == 1.0).all()
    _, _, w3 = _stack(eps, tails, 0.5, balance=True, gpu_weight=3.0)
    assert np.isclose(w3[names == "gpu-gpt85m-cosine"].sum(), 3.0 * w3[names == "lm-tiny-cosine"].sum())


def test_gpu_weight_lowers_the_heldout_gpu_error(fitted: tuple[SurrogateModel, dict]) -> None:
    assert FitConfig().gpu_weight == 3.0  # the module's fit is the gpu_weight=3 fit (a fit draws nothing)
    _, gpu3 = fitted
    _, even = fit_surrogate(load_traces(), FitConfig(gpu_weight=1.0))
    # since session 34's fit (the old core's 2-3-bit episodes out) the weight lowers the GPU workloads' own
    # rows and no longer the transfer rows (BENCHMARKS.md, session 34)
    for group in (
        "GPU gpu-gpt85m-cosine, all episodes (own scale)",
        "GPU gpu-lm-medium-cosine, all episodes (own scale)",
    ):
        assert gpu3[group]["lterm_abs"] < even[group]["lterm_abs"], group


def test_late_penalty_table_charges_the_second_half_less_than_the_whole_run(
    fitted: tuple[SurrogateModel, dict],
) -> None:
    from envs.fit import _static_loss_terms, late_penalty_table

    model, report = fitted
    tab = model.tables["gpu-gpt85m-cosine"]
    whole = _static_loss_terms(tab, model.rho, "r16/b4/g0", "r16/b4/g0")
    late = _static_loss_terms(tab, model.rho, "r0/b8/g0", "r16/b4/g0")
    off = _static_loss_terms(tab, model.rho, "r0/b8/g0", "r0/b8/g0")
    assert len(whole) == tab.intervals and abs(off).max() < 1e-3
    first = tab.progress[1:] <= 0.5
    np.testing.assert_allclose(late[first], off[first])  # nothing projected before mid-run
    assert 0.0 < late[-1] < whole[-1] and late.mean() < 0.5 * late[-1]
    text = late_penalty_table(model)
    assert text.count("| gpu-") == 5 * 3 and "r16/b4/g0" in text
    for row in report.values():
        assert np.isfinite(row["late_abs"]) and row["late_abs"] >= 0.0


def test_ranking_tau_compares_episodes_of_one_workload_only() -> None:
    from envs.fit import _within_workload_tau

    # a: (pred, true) agree on one pair, disagree on one of the three; b: one agreeing pair; a-b not compared
    rets = [("a", 1.0, 1.0), ("a", 2.0, 3.0), ("a", 3.0, 2.0), ("b", 0.0, 9.0), ("b", 5.0, 10.0)]
    assert _within_workload_tau(rets) == (1 + 1 - 1 + 1) / 4
    assert np.isnan(_within_workload_tau([("a", 1.0, 1.0), ("b", 2.0, 2.0)]))


def test_projected_fraction_counts_only_matrices_a_rank_projects() -> None:
    from envs.fit import _RANKS, projected_fraction

    # a 48 x 4096 matrix (short side 48), a 256 x 768 one (256), a bias and a small matrix (not compressed)
    shapes = [(48, 4096), (256, 768), (4096,), (16, 16)]
    frac = projected_fraction(shapes, min_compress_numel=4096)
    big, small = 256 * 768, 48 * 4096
    by_rank = dict(zip(_RANKS.tolist(), frac.tolist(), strict=True))
    assert by_rank[0] == 0.0 and by_rank[1] == 1.0 and by_rank[32] == 1.0
    assert by_rank[64] == pytest.approx(big / (big + small))  # rank 64 keeps the 48-row matrix whole


def test_two_scale_fit_recovers_early_and_late_scales() -> None:
    """_fit_scales: data made with scale 1.5 on the early part and 0.5 on the late part gives back both
    (a little shrunk towards 1); one scale cannot (it lands between)."""
    from envs.fit import _fit_scales

    rng = np.random.default_rng(0)
    parts = []
    for _ in range(6):
        pa, pb = rng.random(12), rng.random(12)
        parts.append((pa, pb, 0.5 * pa + 1.5 * pb, np.ones(12)))
    _, s, late = _fit_scales(parts, 0.01, True)
    assert s == pytest.approx(1.5, abs=0.03) and late == pytest.approx(0.5, abs=0.03)
    _, s1, late1 = _fit_scales(parts, 0.01, False)
    assert s1 == late1 and 0.6 < s1 < 1.4


def test_late_scale_refit_lowers_the_final_loss_error(
    fitted: tuple[SurrogateModel, dict],
) -> None:
    """The shipped fit (late scale on) against one scale per workload: the final l_T error, what the final
    score charges, is lower on the fit data and the GPU workloads' own rows (since session 34's fit; before
    it on the held-out workloads' own-scale rows too, where it is now higher: BENCHMARKS.md, session 34)."""
    _, rep = fitted
    _, one = fit_surrogate(load_traces(), FitConfig(late_scale=False))
    for g in (
        "fit data (train workloads)",
        "GPU gpu-gpt85m-cosine, all episodes (own scale)",
        "GPU gpu-lm-medium-cosine, all episodes (own scale)",
    ):
        assert rep[g]["final_abs"] < one[g]["final_abs"], g


def test_each_episode_keeps_the_rules_of_its_own_recording() -> None:
    """Two recordings of one workload under different factoring rules (session 29's traces, before the
    header named it, and session 31's, ``factor_max_bits`` 3): the set's workload entry is the last file's,
    but every episode carries its own file's entry, which the fit's memory check and byte model read."""
    ts = load_traces(TRACES_DIR)
    gpu = ts.episodes_of("gpu-gpt85m-cosine")
    rules = {e.meta.get("factor_max_bits") for e in gpu}
    assert {None, 3} <= rules
    one = load_traces(TRACES_DIR / "gpu-h100-s31.jsonl.gz")
    assert all(e.meta["factor_max_bits"] == 3 for e in one.episodes) and one.episodes


def test_the_fit_leaves_out_the_old_cores_2_3_bit_episodes_only() -> None:
    """``current_low_bits``: an episode that plays 2-3 bits leaves the fit when its file factored ``v`` there
    (before session 33), and stays when its file did not (``cpu-train5``); episodes at 4+ bits stay either
    way, and the held-out split of the others does not move."""
    ts = load_traces()
    on, off = _prepare(ts, FitConfig()), _prepare(ts, FitConfig(current_low_bits=False))

    def old_low(e: Any) -> bool:
        return bool((e.trace.columns["bits"] <= 3).any()) and e.trace.meta.get("factor_max_bits", 4) >= 2

    for name, wd in off.items():
        stay = [e for e in wd.eps if not old_low(e)]
        assert [(id(e.trace), e.held_out) for e in on[name].eps] == [(id(e.trace), e.held_out) for e in stay]
    assert sum(len(wd.eps) for wd in on.values()) < sum(len(wd.eps) for wd in off.values())
    today = [e for wd in on.values() for e in wd.eps if e.trace.meta.get("factor_max_bits") == 0]
    assert any((e.trace.columns["bits"] <= 3).any() for e in today)  # today's 2-3-bit episodes are fitted
