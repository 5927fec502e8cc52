"""The wire contract: validation messages name the field; the observation encoding is stable."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import ValidationError

from client.protocol import (
    DEFAULT_GRID,
    MAX_HISTORY,
    CompressionSetting,
    DecideRequest,
    Objective,
    ObservationSpec,
    Reference,
    TelemetryRecord,
)


def record(step: int = 50, **kw: object) -> TelemetryRecord:
    base: dict[str, object] = dict(
        step=step,
        loss=3.0,
        grad_norm=1.5,
        state_bytes=1000,
        interval_s=2.0,
        lr=1e-3,
        setting=CompressionSetting(rank=8, bits=4, gamma=0.0),
    )
    base.update(kw)
    return TelemetryRecord(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(("field", "value"), [("rank", 5), ("bits", 5), ("gamma", 1.5), ("gamma", math.nan)])
def test_out_of_grid_setting_names_field(field: str, value: float) -> None:
    kw: dict[str, float] = {"rank": 8, "bits": 4, "gamma": 0.0, field: value}
    with pytest.raises(ValidationError) as err:
        CompressionSetting(**kw)  # type: ignore[arg-type]
    assert field in str(err.value)


@pytest.mark.parametrize("field", ["loss", "grad_norm", "energy_j", "interval_s", "compression_error"])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_telemetry_rejected_naming_field(field: str, bad: float) -> None:
    with pytest.raises(ValidationError) as err:
        record(**{field: bad})
    assert field in str(err.value)


def test_objective_rejects_all_zero_and_negative() -> None:
    with pytest.raises(ValidationError, match="all zero"):
        Objective(w_loss=0.0)
    with pytest.raises(ValidationError, match="w_energy"):
        Objective(w_energy=-1.0)


def test_oversized_and_empty_history_rejected() -> None:
    obj = Objective()
    with pytest.raises(ValidationError, match="history"):
        DecideRequest(job_id="j", objective=obj, history=[record(i) for i in range(MAX_HISTORY + 1)])
    with pytest.raises(ValidationError, match="history"):
        DecideRequest(job_id="j", objective=obj, history=[])
    ok = DecideRequest(job_id="j", objective=obj, history=[record(i) for i in range(MAX_HISTORY)])
    assert len(ok.history) == MAX_HISTORY


def test_grid_roundtrip_every_point() -> None:
    settings = DEFAULT_GRID.all_settings()
    assert len(settings) == int(np.prod(DEFAULT_GRID.nvec))
    for s in settings:
        assert DEFAULT_GRID.setting(DEFAULT_GRID.action(s)) == s
    with pytest.raises(ValueError, match="outside the grid"):
        DEFAULT_GRID.setting([8, 0, 0])


def test_flat_indices_follow_all_settings_order() -> None:
    settings = DEFAULT_GRID.all_settings()
    assert DEFAULT_GRID.size == len(settings)
    actions = DEFAULT_GRID.unravel(np.arange(DEFAULT_GRID.size))
    assert [DEFAULT_GRID.setting(a) for a in actions] == settings
    np.testing.assert_array_equal(DEFAULT_GRID.ravel(actions), np.arange(DEFAULT_GRID.size))
    assert tuple(DEFAULT_GRID.unravel(0)) == (0, 0, 0)
    with pytest.raises(ValueError, match="outside the grid's 240 points"):
        DEFAULT_GRID.unravel(DEFAULT_GRID.size)
    with pytest.raises(ValueError, match="not grid indices"):
        DEFAULT_GRID.ravel([8, 0, 0])


def test_encode_shape_padding_and_objective() -> None:
    spec = ObservationSpec()
    ref = Reference(initial_loss=3.0, dense_state_bytes=8000, interval_energy_j=10.0, interval_s=2.0)
    obs = spec.encode([record(50), record(100, loss=1.5)], Objective(w_loss=1, w_memory=3), ref)
    assert obs.shape == (spec.size,) and obs.dtype == np.float32
    tokens, objective = spec.split(obs)
    assert tokens.shape == (spec.window, spec.token_dim)
    # short history is front-padded with masked rows; the newest record is last
    assert tokens[: spec.window - 2, 0].sum() == 0 and tokens[-1, 0] == 1
    assert tokens[-1, 1] == pytest.approx(0.5)  # loss / initial loss
    assert tokens[-1, 7] == pytest.approx(1000 / 8000)  # memory relative to dense AdamW
    assert objective[:4] == pytest.approx([0.25, 0.75, 0, 0])


def test_encode_is_deterministic_and_clipped() -> None:
    spec = ObservationSpec()
    hist = [record(i * 50, loss=1e9) for i in range(1, 4)]
    a = spec.encode(hist, Objective())
    b = spec.encode(hist, Objective())
    assert np.array_equal(a, b)
    assert np.abs(a).max() <= ObservationSpec.CLIP


def test_setting_label_roundtrip_and_bad_labels_name_the_form() -> None:
    for s in DEFAULT_GRID.all_settings():
        assert CompressionSetting.parse(s.label()) == s
    assert CompressionSetting.parse("r8/b4") == CompressionSetting(rank=8, bits=4, gamma=0.0)
    for bad, why in [
        ("", "missing"),
        ("rank8", "ank8"),
        ("r8/b4/x1", "unknown"),
        ("r8", "missing"),
        ("r8/b5", "bits=5"),
        ("r8/bx", ""),
    ]:
        with pytest.raises(ValueError, match=r"rR/bB\[/gG\]") as err:
            CompressionSetting.parse(bad)
        assert why in str(err.value)
