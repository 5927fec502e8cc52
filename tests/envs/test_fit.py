"""`mango fit` on the shipped traces: it runs, reproduces the shipped model, memory is exact, errors bound."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from envs.fit import MODEL_PATH, FitConfig, fit_surrogate, main, traces_digest
from envs.surrogate_model import SurrogateModel
from envs.traces import load_traces
from envs.workloads import HELDOUT_WORKLOADS, TRAIN_WORKLOADS


@pytest.fixture(scope="module")
def fitted() -> tuple[SurrogateModel, dict]:
    return fit_surrogate(load_traces(), FitConfig())


def test_traces_cover_both_splits_and_are_small() -> None:
    ts = load_traces()
    assert set(TRAIN_WORKLOADS) <= set(ts.workloads) and set(HELDOUT_WORKLOADS) <= set(ts.workloads)
    for w in ts.workloads:
        assert ts.seeds_of(w) and len(ts.episodes_of(w)) >= 4, w
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
        # the exact formula reproduces MangoAdamW.state_bytes() as recorded; a mismatch means the optimizer
        # changed since the traces were recorded: re-record (`mango record`) and refit
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
