"""The byte model (client.compression.sizes) == MangoAdamW.state_bytes() counted from its tensors."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest
import torch
from torch import nn

from client.compression.optimizer import MangoAdamW
from client.compression.quant import compress_state
from client.compression.sizes import (
    FullBasisSplit,
    ParamStateBytes,
    auto_factors_second_moment,
    dense_state_bytes,
    expected_nbytes,
    full_basis_split,
    param_state_bytes,
    state_bytes,
)
from client.controllers import FIRST_CANDIDATES, FIRST_MATRIX_SIDE
from client.protocol import DEFAULT_GRID, CompressionSetting
from envs.models import build_model


def _shapes(model: nn.Module) -> list[tuple[int, ...]]:
    return [tuple(p.shape) for p in model.parameters() if p.requires_grad]


def _check(model: nn.Module, settings: list[CompressionSetting], **opt_kw: object) -> None:
    shapes = _shapes(model)
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
        want = state_bytes(
            shapes,
            s,
            min_compress_numel=mcn,
            error_feedback=bool(opt_kw.get("error_feedback", True)),
            factor_second_moment=opt_kw.get("factor_second_moment"),  # type: ignore[arg-type]
            ef_scope=str(opt_kw.get("ef_scope", "subspace")),
        )
        assert opt.state_bytes() == want, s.label()
        assert opt.expected_state_bytes() == want, s.label()


def _shuffled(k: int | None, seed: int) -> list[CompressionSetting]:
    settings = DEFAULT_GRID.all_settings()
    random.Random(seed).shuffle(settings)
    return settings[:k] if k else settings


def _distinct_shapes(name: str) -> nn.Module:
    """One parameter per distinct trainable shape of the workload model ``name``: the byte model and the
    optimizer's count are both sums over parameters, so each shape once discriminates as well as the whole
    model does, at a fraction of its steps' cost."""
    shapes = dict.fromkeys(_shapes(build_model(name, 0)))
    gen = torch.Generator().manual_seed(0)
    return nn.ParameterList(nn.Parameter(torch.randn(s, generator=gen)) for s in shapes)


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


@pytest.mark.parametrize(
    "shape",
    [(96, 160), (160, 96), (8, 4, 3, 3), (300,), (64, 64), (2, 2048), (33, 65)],
)
def test_measured_equals_model_per_shape(shape: tuple[int, ...]) -> None:
    """Odd shapes (conv kernels, tall and wide, padding of the last block, 1-D) for several settings."""
    settings = [CompressionSetting.parse(lb) for lb in ("r8/b4/g0.5", "r0/b3/g0", "r2/b8/g1", "r0/b16/g0.25")]
    settings += [CompressionSetting.parse(lb) for lb in ("r64/b2/g0", "r0/b32/g0", "r1/b32/g0.75")]
    p = nn.Parameter(torch.randn(shape, generator=torch.Generator().manual_seed(1)))
    opt = MangoAdamW([p], lr=1e-3, min_compress_numel=64)
    for s in settings:
        opt.apply_setting(s)
        p.grad = torch.randn(shape)
        opt.step()
        want = param_state_bytes(shape, s, min_compress_numel=64)
        assert opt.state_bytes() == want.total == opt.expected_state_bytes(), (shape, s.label())


def test_unprojected_group_and_bf16_exact_tensors() -> None:
    """``project=False`` groups hold rank-0 state at the setting's bits; a bf16 bias keeps bf16 moments."""
    w = nn.Parameter(torch.randn(128, 256))
    emb = nn.Parameter(torch.randn(256, 64))
    bias = nn.Parameter(torch.zeros(256, dtype=torch.bfloat16))
    s = CompressionSetting(rank=8, bits=4, gamma=0.5)
    opt = MangoAdamW([{"params": [w, bias]}, {"params": [emb], "project": False}], lr=1e-3, setting=s)
    for p in (w, emb, bias):
        p.grad = torch.randn(p.shape).to(p.dtype)
    opt.step()
    want = (
        param_state_bytes(w.shape, s).total
        + param_state_bytes(emb.shape, s, project=False).total
        + param_state_bytes(bias.shape, s, element_size=2).total
    )
    assert opt.state_bytes() == want == opt.expected_state_bytes()
    assert param_state_bytes(emb.shape, s, project=False).basis == 0
    assert param_state_bytes(bias.shape, s, element_size=2) == ParamStateBytes(m=512, v=512)
    # a prediction for another setting than the one in force
    r0 = CompressionSetting(rank=0, bits=8, gamma=0.0)
    assert opt.expected_state_bytes(r0) == sum(
        param_state_bytes(p.shape, r0, element_size=p.element_size()).total for p in (w, emb, bias)
    )


def test_pinned_group_settings() -> None:
    """A group pinned to its own setting holds that setting's state whatever the optimizer-wide one is."""
    w = nn.Parameter(torch.randn(128, 256))
    head = nn.Parameter(torch.randn(64, 256))
    pin = CompressionSetting(rank=0, bits=16, gamma=0.0)
    opt = MangoAdamW([{"params": [w]}, {"params": [head], "setting": pin}], lr=1e-3, min_compress_numel=64)
    for s in (CompressionSetting(rank=16, bits=2, gamma=0.25), CompressionSetting(rank=0, bits=8)):
        opt.apply_setting(s)
        for p in (w, head):
            p.grad = torch.randn(p.shape)
        opt.step()
        want = param_state_bytes(w.shape, s, min_compress_numel=64).total
        want += param_state_bytes(head.shape, pin, min_compress_numel=64).total
        assert opt.state_bytes() == want == opt.expected_state_bytes(), s.label()


@pytest.mark.slow
def test_digits_every_setting() -> None:
    _check(build_model("digits-mlp", 0), _shuffled(None, 6))


@pytest.mark.slow
def test_lm_small_sampled_settings() -> None:
    """lm-small's shapes (128-wide: square, 3:1 and 4:1 tall, 1:4 wide, 2:1; 1-D) over 60 settings."""
    model = _distinct_shapes("lm-small")
    assert len(_shapes(model)) == 8
    _check(model, _shuffled(60, 4))


def test_matrix_formula_by_hand() -> None:
    # 128 x 512 at rank 8 / 4 bits, gamma 0, full-scope e: e (65536 values: 32768 code bytes + 1024 scales
    # x 4 B) + P (4 * 128 * 8) + m and sqrt(v) (8 x 512 = 4096 values each: 2048 + 64 x 4).
    s = CompressionSetting(rank=8, bits=4, gamma=0.0)
    full = param_state_bytes((128, 512), s, ef_scope="full")
    assert full == ParamStateBytes(m=2048 + 256, v=2048 + 256, error=32768 + 4096, shift=0, basis=4096)
    # subspace scope (default): e is 8 x 512 coefficients like m
    assert param_state_bytes((128, 512), s).total == 3 * (2048 + 256) + 4096
    # the factored v when asked for (the default at 2-3 bits until session 33): 4 * (8 + 512)
    assert param_state_bytes((128, 512), s, factor_second_moment=True).v == 2080
    # at 3 bits by default sqrt(v) on the code like m: 4096 values, 1536 code bytes + 64 scales x 4 B
    assert param_state_bytes((128, 512), CompressionSetting(rank=8, bits=3)).v == 1536 + 256
    assert param_state_bytes((512, 128), s) == param_state_bytes((128, 512), s)  # canonical orientation
    assert param_state_bytes((64, 64), CompressionSetting.off()).total == 8 * 64 * 64
    # the shift reference h is the size of m
    g = param_state_bytes((128, 512), CompressionSetting(rank=8, bits=4, gamma=0.5))
    assert g.shift == g.m == 2048 + 256
    # rank >= the smaller side is no projection
    assert param_state_bytes((8, 64), CompressionSetting(rank=8, bits=8)) == param_state_bytes(
        (8, 64), CompressionSetting(rank=0, bits=8)
    )
    # below min_compress_numel: exact fp32 AdamW
    assert param_state_bytes((16, 16), s) == ParamStateBytes(m=1024, v=1024)


@pytest.mark.parametrize("bits", [2, 3, 4, 8, 16, 32])
@pytest.mark.parametrize("numel", [1, 63, 64, 65, 1000])
def test_expected_nbytes_is_what_compress_state_holds(bits: int, numel: int) -> None:
    st = compress_state(torch.randn(numel), bits)
    assert st.nbytes == expected_nbytes(numel, bits)


def test_sizes_imports_no_torch() -> None:
    """The service's shield and the surrogate use the byte model without loading torch."""
    code = "import sys, client.compression.sizes, policy_service.shield; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_full_basis_split_and_its_bytes_by_hand() -> None:
    # wide (the sharded rows are the canonical rows) and tall (the canonical view is transposed: the sharded
    # rows are its columns); uneven, 1-D and single-rank cases keep a basis per shard
    assert full_basis_split((128, 512), 2) == FullBasisSplit(axis=0, m=128, n=512, rows=64, cols=256)
    assert full_basis_split((512, 64), 4) == FullBasisSplit(axis=1, m=64, n=512, rows=16, cols=128)
    assert full_basis_split((64, 8, 64), 2) == FullBasisSplit(axis=0, m=64, n=512, rows=32, cols=256)
    for shape, world in (((63, 64), 2), ((64, 63), 2), ((64,), 2), ((64, 64), 1), ((66, 64), 4)):
        assert full_basis_split(shape, world) is None, (shape, world)
    # 128 x 512 at rank 8 / 4 bits over 2 ranks, per rank: P 64 x 8 fp32 (2048 B), m, e and sqrt(v) 8 x 256
    # at 4 bits (2048 values: 1024 code bytes + 32 block scales = 1152 B each): half the whole matrix's state
    s = CompressionSetting(rank=8, bits=4)
    got = param_state_bytes((64, 512), s, full_shape=(128, 512), world_size=2)
    assert (got.basis, got.m, got.error, got.v, got.shift) == (2048, 1152, 1152, 1152, 0)
    assert got.total == param_state_bytes((128, 512), s).total // 2
    # a factored v (8 + 256) fp32 (1056 B): half the state, but both ranks keep v's r row values
    fac = param_state_bytes((64, 512), s, full_shape=(128, 512), world_size=2, factor_second_moment=True)
    assert fac.v == 1056
    assert fac.total == param_state_bytes((128, 512), s, factor_second_moment=True).total // 2 + 4 * 8 // 2
    # rank 0 (and ef_scope="full") keeps the local shard's layout
    r0 = CompressionSetting(rank=0, bits=8)
    assert param_state_bytes((64, 512), r0, full_shape=(128, 512), world_size=2) == param_state_bytes(
        (64, 512), r0, full_shape=(128, 512)
    )
    full = param_state_bytes((64, 512), s, full_shape=(128, 512), world_size=2, ef_scope="full")
    assert full == param_state_bytes((64, 512), s, full_shape=(128, 512), ef_scope="full")


def test_first_interval_candidates_carry_the_optimizers_own_state_ratio() -> None:
    """FIRST_CANDIDATES' memory column is the byte model's: what MangoAdamW holds on such a matrix."""
    side = FIRST_MATRIX_SIDE
    param = nn.Parameter(torch.zeros(side, side))
    opt = MangoAdamW([param], lr=1e-3, setting=CompressionSetting.off())
    gen = torch.Generator().manual_seed(0)
    for label, (_, ratio) in FIRST_CANDIDATES.items():
        opt.apply_setting(CompressionSetting.parse(label))
        param.grad = torch.randn(param.shape, generator=gen)
        opt.step()
        assert ratio == opt.state_bytes() / opt.dense_state_bytes(), label
    assert FIRST_CANDIDATES["r0/b32/g0"][1] == 1.0 and FIRST_CANDIDATES["r0/b4/g0"][1] < 0.25


def test_auto_factoring_covers_no_width() -> None:
    """``factor_second_moment=None`` stores ``v`` like ``m`` at every width (2-3 bits factored it until
    session 33); the optimizer asks the same rule, and ``True`` still factors at any width."""
    assert [b for b in (2, 3, 4, 8, 16, 32) if auto_factors_second_moment(b)] == []
    opt = MangoAdamW([torch.nn.Parameter(torch.zeros(64, 64))], setting=CompressionSetting(rank=0, bits=4))
    assert opt._factored() is False
    assert opt._factored(CompressionSetting(rank=0, bits=2)) is False
    forced = MangoAdamW([torch.nn.Parameter(torch.zeros(64, 64))], factor_second_moment=True)
    assert forced._factored(CompressionSetting(rank=0, bits=8)) is True
