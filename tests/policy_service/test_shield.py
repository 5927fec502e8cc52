"""The shield's byte model and its two rules, on random and hand-made windows."""

from __future__ import annotations

import random
from typing import Any

import pytest

from client.compression.sizes import param_state_bytes
from client.protocol import DEFAULT_GRID, CompressionSetting, DecideRequest
from policy_service.shield import Shield, ShieldConfig, bytes_per_param, estimate_state_bytes

from .support import decide_body

OFF = CompressionSetting.off()


def _request(**kw: Any) -> DecideRequest:
    return DecideRequest.model_validate(decide_body(**kw))


def test_byte_model_anchors_and_orders() -> None:
    assert bytes_per_param(OFF) == 8.0
    assert estimate_state_bytes(OFF, 8_000_000) == 8_000_000
    for s in DEFAULT_GRID.all_settings():
        if s.gamma == 0.0 and not s.is_off:
            assert estimate_state_bytes(s, 8_000_000) < 8_000_000, s
    # fewer bits never costs more at a fixed rank and gamma: v is stored like m at every width (what
    # MangoAdamW holds: the client's byte model, checked against its tensors)
    for rank in DEFAULT_GRID.ranks:
        sizes = [bytes_per_param(CompressionSetting(rank=rank, bits=b, gamma=0.0)) for b in (2, 3, 4, 8, 16)]
        assert sizes == sorted(sizes), rank
        assert len(set(sizes)) == len(sizes), rank  # and each width saves something
    side = 1024
    want = param_state_bytes((side, side), CompressionSetting(rank=1, bits=2), min_compress_numel=1).total
    assert bytes_per_param(CompressionSetting(rank=1, bits=2)) == want / side**2
    # the uncompressed share does not shrink
    s = CompressionSetting(rank=4, bits=2, gamma=0.0)
    assert estimate_state_bytes(s, 1000, uncompressed_frac=0.5) >= 500


def test_no_budget_and_healthy_loss_is_not_shielded() -> None:
    req = _request()
    res = Shield().check(CompressionSetting(rank=4, bits=2, gamma=0.5), req, DEFAULT_GRID)
    assert not res.shielded and res.reason == "" and res.rules == ()


@pytest.mark.parametrize("budget", [2_000_000, 3_000_000, 4_000_000, 6_000_000, 12_000_000])
def test_memory_budget_picks_least_compressed_setting_that_fits(budget: int) -> None:
    shield = Shield()
    req = _request(objective={"w_loss": 1.0, "memory_budget_bytes": budget})
    res = shield.check(OFF, req, DEFAULT_GRID)
    assert res.shielded and res.rules == ("memory_budget",)
    # predicted the same way as the shield: calibrated on the newest record (4 MB at r8/b4/g0 of 16 MB dense)
    r_latest = bytes_per_param(CompressionSetting(rank=8, bits=4, gamma=0.0)) / 8
    u = (4_000_000 / 16_000_000 - r_latest) / (1 - r_latest)

    def predicted(s: CompressionSetting) -> float:
        return estimate_state_bytes(s, 16_000_000, uncompressed_frac=u)

    limit = budget / 1.05
    fitting = [s for s in DEFAULT_GRID.all_settings() if predicted(s) <= limit + 1]
    if fitting:
        assert predicted(res.setting) <= limit + 1
        best = max(bytes_per_param(s, with_shift=False) for s in fitting)
        assert bytes_per_param(res.setting, with_shift=False) == pytest.approx(best)
        assert "chose " + res.setting.label() in res.reason
    else:
        assert "no grid setting fits" in res.reason
        assert predicted(res.setting) == min(predicted(s) for s in DEFAULT_GRID.all_settings())


def test_memory_budget_without_reference_scales_from_newest_record() -> None:
    body = decide_body(objective={"w_loss": 1.0, "memory_budget_bytes": 5_000_000})
    body.pop("reference")
    req = DecideRequest.model_validate(body)
    res = Shield().check(OFF, req, DEFAULT_GRID)
    assert res.shielded
    r_latest = bytes_per_param(CompressionSetting(rank=8, bits=4, gamma=0.0))
    assert 4_000_000 * bytes_per_param(res.setting) / r_latest <= 5_000_000 / 1.05 + 1


def test_divergence_backs_off_to_off_or_to_what_the_budget_allows() -> None:
    body = decide_body()
    for i, rec in enumerate(body["history"]):
        rec["loss"] = 2.0 + 0.2 * i
    req = DecideRequest.model_validate(body)
    chosen = CompressionSetting(rank=4, bits=2, gamma=0.5)  # more compression than the current r8/b4
    res = Shield().check(chosen, req, DEFAULT_GRID)
    assert res.rules == ("divergence",) and res.setting == OFF and "loss rose" in res.reason

    body["objective"] = {"w_loss": 1.0, "memory_budget_bytes": 8_000_000}
    res = Shield().check(chosen, DecideRequest.model_validate(body), DEFAULT_GRID)
    assert "divergence" in res.rules and res.setting != OFF and res.setting.gamma == 0.0
    assert bytes_per_param(res.setting) > bytes_per_param(CompressionSetting(rank=8, bits=4, gamma=0.0))


def test_divergence_allows_a_policy_that_already_backs_off() -> None:
    body = decide_body()
    for i, rec in enumerate(body["history"]):
        rec["loss"] = 2.0 + 0.2 * i
    res = Shield().check(
        CompressionSetting(rank=0, bits=16, gamma=0.0), DecideRequest.model_validate(body), DEFAULT_GRID
    )
    assert not res.shielded


def test_non_finite_skips_trigger_back_off() -> None:
    body = decide_body()
    body["history"][-1]["skipped_steps"] = 3
    res = Shield().check(
        CompressionSetting(rank=8, bits=4, gamma=0.0), DecideRequest.model_validate(body), DEFAULT_GRID
    )
    assert res.setting == OFF and "non-finite" in res.reason


def test_threshold_is_a_knob() -> None:
    body = decide_body()
    best = min(r["loss"] for r in body["history"][:-1])
    body["history"][-1]["loss"] = best + 0.45  # 15% of the initial loss (3.0) above the window's best
    req = DecideRequest.model_validate(body)
    chosen = CompressionSetting(rank=8, bits=4, gamma=0.0)
    assert not Shield(ShieldConfig(loss_rise_frac=0.2)).check(chosen, req, DEFAULT_GRID).shielded
    assert Shield(ShieldConfig(loss_rise_frac=0.1)).check(chosen, req, DEFAULT_GRID).shielded


def test_random_windows_always_give_a_grid_setting_within_budget_when_one_fits() -> None:
    rng = random.Random(0)
    shield = Shield()
    settings = DEFAULT_GRID.all_settings()
    for _ in range(200):
        body = decide_body(n=rng.randint(1, 8))
        for rec in body["history"]:
            rec["loss"] = rng.uniform(0.5, 5.0)
            rec["state_bytes"] = rng.randint(0, 20_000_000)
            rec["setting"] = rng.choice(settings).model_dump()
        budget = rng.choice([None, rng.randint(100_000, 30_000_000)])
        body["objective"] = {"w_loss": 1.0, "memory_budget_bytes": budget}
        if rng.random() < 0.5:
            body.pop("reference")
        req = DecideRequest.model_validate(body)
        res = shield.check(rng.choice(settings), req, DEFAULT_GRID)
        DEFAULT_GRID.check(res.setting)
        assert res.shielded == bool(res.rules) == bool(res.reason)
