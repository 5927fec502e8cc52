"""The exact memory formula of the surrogate == MangoAdamW.state_bytes() counted from its tensors."""

from __future__ import annotations

import random

import pytest
import torch

from client.compression.optimizer import MangoAdamW
from client.protocol import DEFAULT_GRID, CompressionSetting
from envs.memory import dense_state_bytes, mango_state_bytes, matrix_state_bytes, param_shapes
from envs.models import build_model


def _check(model: torch.nn.Module, settings: list[CompressionSetting], **opt_kw: object) -> None:
    shapes = param_shapes(model)
    mcn = int(opt_kw.pop("min_compress_numel", 1024))  # type: ignore[call-overload]
    opt = MangoAdamW(
        model.parameters(), lr=1e-3, setting=CompressionSetting.off(), min_compress_numel=mcn, **opt_kw
    )  # type: ignore[arg-type]
    gen = torch.Generator().manual_seed(0)
    assert opt.dense_state_bytes() == dense_state_bytes(shapes)
    for s in settings:  # switching between arbitrary settings, as a policy does
        opt.apply_setting(s)
        for p in model.parameters():
            p.grad = torch.randn(p.shape, generator=gen)
        opt.step()
        want = mango_state_bytes(
            shapes,
            s,
            min_compress_numel=mcn,
            error_feedback=bool(opt_kw.get("error_feedback", True)),
            factor_second_moment=opt_kw.get("factor_second_moment"),  # type: ignore[arg-type]
            ef_scope=str(opt_kw.get("ef_scope", "subspace")),
        )
        assert opt.state_bytes() == want, s.label()


def _shuffled(k: int | None, seed: int) -> list[CompressionSetting]:
    settings = DEFAULT_GRID.all_settings()
    random.Random(seed).shuffle(settings)
    return settings[:k] if k else settings


def test_digits_sampled_settings() -> None:
    _check(build_model("digits-mlp", 0), _shuffled(48, 0))


def test_lm_tiny_sampled_settings() -> None:
    _check(build_model("lm-tiny", 0), _shuffled(16, 1))


def test_knobs_no_error_feedback_forced_factoring_full_scope() -> None:
    _check(build_model("digits-mlp", 0), _shuffled(12, 2), error_feedback=False, factor_second_moment=True)
    _check(
        build_model("digits-mlp", 0), _shuffled(12, 3), min_compress_numel=4096, factor_second_moment=False
    )
    _check(build_model("digits-mlp", 0), _shuffled(12, 5), ef_scope="full")


@pytest.mark.slow
def test_digits_every_setting() -> None:
    _check(build_model("digits-mlp", 0), _shuffled(None, 6))


@pytest.mark.slow
def test_lm_small_sampled_settings() -> None:
    _check(build_model("lm-small", 0), _shuffled(60, 4))


def test_matrix_formula_by_hand() -> None:
    # 128 x 512 at rank 8 / 4 bits, gamma 0, full-scope e: e (65536 values: 32768 code bytes + 1024 scales
    # x 4 B) + P (4 * 128 * 8) + m (8 x 512 = 4096 values: 2048 + 64 x 4) + factored v (4 * (8 + 512)).
    s = CompressionSetting(rank=8, bits=4, gamma=0.0)
    assert matrix_state_bytes(128, 512, s, ef_scope="full") == (32768 + 4096) + 4096 + (2048 + 256) + 2080
    # subspace scope (default): e is 8 x 512 coefficients like m
    assert matrix_state_bytes(128, 512, s) == (2048 + 256) + 4096 + (2048 + 256) + 2080
    assert matrix_state_bytes(512, 128, s) == matrix_state_bytes(128, 512, s)  # canonical orientation
    assert matrix_state_bytes(64, 64, CompressionSetting.off()) == 8 * 64 * 64
    # rank >= the smaller side is no projection
    assert matrix_state_bytes(8, 64, CompressionSetting(rank=8, bits=8)) == matrix_state_bytes(
        8, 64, CompressionSetting(rank=0, bits=8)
    )
