"""Block-wise quantization: formulas, error bounds (seed Lemma 2, corrected), NF4, ACIQ, packing, errors.

Note on seed Lemma 2. ``../shared/seeds/mango-lrq-theory.md`` states ``E||x - Q_b(x)||^2 <= 2^{-2b}/12 *
||x||_inf^2``. Read literally (squared norm of the whole vector on the left, one coordinate's range on the
right) it is off by a factor of the dimension; read per coordinate it assumes a range of width ``||x||_inf``
cut into ``2^b`` cells (step ``||x||_inf / 2^b``). Our signed absmax quantizer covers ``[-s, s]`` (width
``2 s``) with ``2^b - 1`` steps, so its step is ``delta = 2 s / (2^b - 1)`` and the correct bounds are
``MSE <= delta^2 / 12`` (round to nearest, errors spread evenly over a cell: smooth data) and
``MSE <= delta^2 / 4`` (stochastic rounding, worst case ``frac (1 - frac) <= 1/4``; ``delta^2 / 6`` on
smooth data). Measured (Gaussian data, block 64): deterministic MSE / (delta^2/12) = 0.99-1.0, and
MSE / (literal per-coordinate bound, s = block absmax) = 7.1, 5.1, 4.5, 4.0 at 2, 3, 4, 8 bits, i.e.
``4 (2^b / (2^b - 1))^2``: the quantizer satisfies the corrected bound and NOT the literal seed statement.
:func:`test_lemma2_literal_seed_bound_is_violated_by_the_range_factor` pins this down.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from client.compression import quant
from client.compression.codes import NF4_LEVELS, default_block
from client.compression.quant import (
    DenseState,
    QuantizedTensor,
    aciq_alpha,
    compress_state,
    decompress_state,
    default_state_mode,
    dequantize,
    dequantize_torch,
    expected_nbytes,
    pack_bits,
    quantize,
    quantize_many,
    quantize_torch,
    unpack_bits,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _step_per_value(q: QuantizedTensor) -> torch.Tensor:
    """delta = 2 s / (2^b - 1) for every (padded) value."""
    return (2.0 * q.scale / ((1 << q.bits) - 1)).repeat_interleave(q.block)[: q.numel]


def _mse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).square().mean())


# ---------------------------------------------------------------------------------------- formulas
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_deterministic_uniform_matches_spec_formula(bits: int) -> None:
    x = torch.randn(3, 100, generator=_gen(bits))
    q = quantize(x, bits, stochastic=False, block=64)
    top = (1 << bits) - 1
    flat = torch.nn.functional.pad(x.reshape(-1), (0, 20)).view(-1, 64)
    s = flat.abs().amax(1, keepdim=True)
    codes = torch.floor((torch.clamp(flat / s, -1, 1) + 1) / 2 * top + 0.5)
    expect = ((codes / top * 2 - 1) * s).reshape(-1)[:300].view(3, 100)
    assert torch.equal(q.scale, s.squeeze(1))
    assert torch.equal(unpack_bits(q.data, bits, 320), codes.reshape(-1).to(torch.uint8))
    assert torch.allclose(dequantize(q), expect, atol=0, rtol=0)
    # The block maximum is representable: it comes back exactly.
    assert torch.equal(dequantize(q).abs().amax(), x.abs().amax())


def test_nf4_deterministic_picks_nearest_level() -> None:
    y = torch.linspace(-1, 1, 1001)
    q = quantize(y, 4, mode="nf4", stochastic=False, block=1008)
    assert float(q.scale[0]) == 1.0
    levels = torch.tensor(NF4_LEVELS)
    nearest = levels[(y[:, None] - levels[None, :]).abs().argmin(1)]
    assert torch.equal(dequantize(q), nearest)


def test_all_zero_block_and_empty_tensor() -> None:
    x = torch.zeros(130)
    x[:64] = torch.randn(64, generator=_gen(0))
    for mode, bits in [("uniform", 2), ("uniform", 8), ("nf4", 4), ("aciq", 3)]:
        q = quantize(x, bits, mode=mode, block=64)
        assert float(q.scale[1]) == 0.0
        out = dequantize(q)
        assert torch.equal(out[64:], torch.zeros(66)), mode
    empty = quantize(torch.zeros(0, 5), 4)
    assert dequantize(empty).shape == (0, 5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_dtype_and_shape_roundtrip(dtype: torch.dtype) -> None:
    x = torch.randn(7, 11, 3, generator=_gen(1)).to(dtype)
    q = quantize(x, 8, generator=_gen(2))
    out = dequantize(q)
    assert out.shape == x.shape and out.dtype == dtype
    assert q.dequantize(out_dtype=torch.float32).dtype == torch.float32
    assert _mse(out, x) < 1e-3


def test_stochastic_is_reproducible_with_a_generator() -> None:
    x = torch.randn(1000, generator=_gen(3))
    a = quantize(x, 3, generator=_gen(7))
    b = quantize(x, 3, generator=_gen(7))
    c = quantize(x, 3, generator=_gen(8))
    assert torch.equal(a.data, b.data) and not torch.equal(a.data, c.data)


def test_public_torch_path_equals_dispatch_on_cpu() -> None:
    x = torch.randn(500, generator=_gen(4))
    for mode, bits in [("uniform", 3), ("nf4", 4), ("aciq", 2)]:
        a = quantize(x, bits, mode=mode, stochastic=False)
        b = quantize_torch(x, bits, mode=mode, stochastic=False)
        assert torch.equal(a.data, b.data) and torch.equal(a.scale, b.scale)
        assert torch.equal(dequantize(a), dequantize_torch(b))


# ------------------------------------------------------------------------------- Lemma 2 (corrected)
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_lemma2_deterministic_mse_within_delta_sq_over_12(bits: int) -> None:
    x = torch.randn(512 * 64, generator=_gen(10 + bits))
    q = quantize(x, bits, stochastic=False, block=64)
    err = (dequantize(q) - x).double().square()
    delta_sq = _step_per_value(q).double().square()
    assert float(err.mean()) <= 1.02 * float(delta_sq.mean()) / 12
    assert bool((err <= delta_sq / 4 * (1 + 1e-5) + 1e-12).all())  # never more than half a step


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_lemma2_stochastic_mse_within_delta_sq_over_4(bits: int) -> None:
    x = torch.randn(512 * 64, generator=_gen(20 + bits))
    q = quantize(x, bits, stochastic=True, block=64, generator=_gen(30 + bits))
    err = (dequantize(q) - x).double().square()
    delta_sq = _step_per_value(q).double().square()
    ratio = float(err.mean() / delta_sq.mean())
    assert ratio <= 0.25
    assert 1 / 6 * 0.9 <= ratio <= 1 / 6 * 1.1  # smooth data: E[f (1 - f)] = 1/6 for a uniform fraction f
    assert bool((err <= delta_sq * (1 + 1e-5) + 1e-12).all())  # never more than one step


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_lemma2_literal_seed_bound_is_violated_by_the_range_factor(bits: int) -> None:
    """The seed's per-coordinate 2^{-2b}/12 ||x||_inf^2 is ~4 (2^b/(2^b-1))^2 too small for our quantizer."""
    x = torch.randn(512 * 64, generator=_gen(40 + bits))
    q = quantize(x, bits, stochastic=False, block=64)
    mse = float((dequantize(q) - x).double().square().mean())
    literal = float((2.0 ** (-2 * bits) / 12 * q.scale.double().square()).mean())
    factor = 4 * (2**bits / (2**bits - 1)) ** 2
    assert mse > literal  # the literal statement does not hold...
    assert mse / literal == pytest.approx(factor, rel=0.05)  # ...by exactly the range/step-count factor


def test_error_shrinks_about_4x_per_bit() -> None:
    x = torch.randn(256 * 64, generator=_gen(50))
    mses = [_mse(dequantize(quantize(x, b, stochastic=False, block=64)), x) for b in (2, 3, 4)]
    for a, b in itertools.pairwise(mses):
        assert 3.0 <= a / b <= 6.0


# -------------------------------------------------------------------------- stochastic rounding bias
@pytest.mark.parametrize(("mode", "bits"), [("uniform", 2), ("uniform", 4), ("nf4", 4)])
def test_stochastic_rounding_is_unbiased_error_shrinks_like_inv_sqrt_n(mode: str, bits: int) -> None:
    x = torch.randn(256, generator=_gen(60))
    gen = _gen(61)

    def mean_error(n: int) -> float:
        # n independent quantizations in one call: each copy is 4 whole blocks of 64
        q = quantize(x.repeat(n, 1), bits, mode=mode, block=64, generator=gen)
        return float((dequantize(q).mean(0) - x).square().mean().sqrt())

    errs = {n: mean_error(n) for n in (16, 256, 4096)}
    # RMS error of the mean ~ sigma / sqrt(N): 16x more samples, 4x smaller error
    assert 2.8 <= errs[16] / errs[256] <= 5.5, errs
    assert 2.8 <= errs[256] / errs[4096] <= 5.5, errs
    det = _mse(dequantize(quantize(x, bits, mode=mode, block=64, stochastic=False)), x) ** 0.5
    assert errs[4096] < det / 10  # round-to-nearest keeps its bias; the stochastic mean does not


# ------------------------------------------------------------------------------------------ NF4
def test_nf4_beats_uniform_4bit_on_gaussian() -> None:
    x = torch.randn(1 << 16, generator=_gen(70))
    for stochastic in (False, True):
        nf4 = _mse(dequantize(quantize(x, 4, mode="nf4", stochastic=stochastic, generator=_gen(71))), x)
        uni = _mse(dequantize(quantize(x, 4, stochastic=stochastic, generator=_gen(71))), x)
        assert nf4 < 0.9 * uni, (stochastic, nf4, uni)  # measured 0.83-0.84


# ------------------------------------------------------------------------------------------ ACIQ
def _model_mse(xb: torch.Tensor, alpha: torch.Tensor, bits: int) -> torch.Tensor:
    """mean((|x| - a)_+^2) + delta(a)^2 / 12 per block, for alpha of shape (nb, G)."""
    top = (1 << bits) - 1
    clip = (xb.abs()[:, None, :] - alpha[:, :, None]).clamp_min(0).square().mean(-1)
    return clip + (2 * alpha / top).square() / 12


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_aciq_alpha_matches_brute_force_grid(bits: int) -> None:
    torch.manual_seed(bits)  # distributions sample from the global RNG
    xb = torch.distributions.Laplace(0.0, 1.0).sample((48, 64)).double()
    alpha = aciq_alpha(xb, bits).double()
    absmax = xb.abs().amax(1)
    grid = torch.linspace(0, 1, 4001, dtype=torch.float64)[None, :] * absmax[:, None]  # (nb, G)
    objective = _model_mse(xb, grid, bits)
    best = grid.gather(1, objective.argmin(1, keepdim=True)).squeeze(1)
    spacing = absmax / 4000
    assert bool(((alpha - best).abs() <= spacing + 1e-6).all())
    at_alpha = _model_mse(xb, alpha[:, None], bits).squeeze(1)
    assert bool((at_alpha <= objective.min(1).values * (1 + 1e-6)).all())
    assert bool((alpha <= absmax + 1e-6).all() and (alpha > 0).all())
    # stationarity: alpha = 3 (2^b - 1)^2 mean((|x| - alpha)_+)
    rhs = 3 * ((1 << bits) - 1) ** 2 * (xb.abs() - alpha[:, None]).clamp_min(0).mean(1)
    assert torch.allclose(alpha, rhs, rtol=1e-5)


def test_aciq_alpha_close_to_best_real_quantization_mse() -> None:
    """The model's alpha is near the clip that minimizes the actual round-to-nearest MSE."""
    torch.manual_seed(80)
    xb = torch.distributions.Laplace(0.0, 1.0).sample((64, 64))
    bits, top = 3, 7
    alpha = aciq_alpha(xb, bits)
    grid = torch.linspace(0.01, 1, 400)[None, :] * xb.abs().amax(1, keepdim=True)  # (nb, G)

    def real(a: torch.Tensor) -> torch.Tensor:  # (nb, G) -> (nb, G)
        y = torch.clamp(xb[:, None, :] / a[:, :, None], -1, 1)
        code = torch.floor((y + 1) / 2 * top + 0.5)
        return ((code / top * 2 - 1) * a[:, :, None] - xb[:, None, :]).square().mean(-1)

    ratio = real(alpha[:, None]).squeeze(1) / real(grid).min(1).values
    assert float(ratio.mean()) <= 1.10  # measured ~1.03
    assert float((real(grid)[:, -1] / real(grid).min(1).values).mean()) > 1.3  # absmax is far worse


@pytest.mark.parametrize("bits", [2, 3])
@pytest.mark.parametrize("dist", ["laplace", "student_t"])
def test_aciq_beats_absmax_on_heavy_tails(bits: int, dist: str) -> None:
    torch.manual_seed(90 + bits)
    d = torch.distributions.Laplace(0.0, 1.0) if dist == "laplace" else torch.distributions.StudentT(3.0)
    x = d.sample((1 << 15,))
    for stochastic in (False, True):
        aciq = _mse(dequantize(quantize(x, bits, mode="aciq", stochastic=stochastic, generator=_gen(1))), x)
        absmax = _mse(dequantize(quantize(x, bits, stochastic=stochastic, generator=_gen(1))), x)
        assert aciq < 0.8 * absmax, (stochastic, aciq, absmax)  # measured 0.2-0.7


def test_aciq_clips_outliers_to_alpha() -> None:
    x = torch.randn(64, generator=_gen(95))
    x[5] = 100.0
    q = quantize(x, 2, mode="aciq", stochastic=False, block=64)
    assert float(q.scale[0]) < 100.0
    assert float(dequantize(q).abs().max()) == pytest.approx(float(q.scale[0]))


# --------------------------------------------------------------------------------------- packing
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("n", [1, 7, 8, 9, 63, 1001])
def test_pack_unpack_roundtrip(bits: int, n: int) -> None:
    codes = torch.randint(0, 1 << bits, (n,), generator=_gen(n * 10 + bits), dtype=torch.uint8)
    packed = pack_bits(codes, bits)
    assert packed.dtype == torch.uint8
    per = {2: 4, 3: 8, 4: 2, 8: 1}[bits]
    assert packed.numel() == math.ceil(n / per) * (3 if bits == 3 else 1)
    assert torch.equal(unpack_bits(packed, bits, n), codes)


def test_pack_layout_matches_spec() -> None:
    # 4 bits: element 2i in the low nibble
    assert pack_bits(torch.tensor([0x1, 0x2, 0xF, 0x0]), 4).tolist() == [0x21, 0x0F]
    # 2 bits: element 4i + j at bit 2j
    assert pack_bits(torch.tensor([1, 2, 3, 0]), 2).tolist() == [1 | 2 << 2 | 3 << 4]
    # 3 bits: element 8i + j at bit 3j of the little-endian 24-bit word
    codes = [1, 2, 3, 4, 5, 6, 7, 0]
    word = sum(c << (3 * j) for j, c in enumerate(codes))
    assert pack_bits(torch.tensor(codes), 3).tolist() == [word & 0xFF, (word >> 8) & 0xFF, word >> 16]
    assert pack_bits(torch.tensor([200, 7]), 8).tolist() == [200, 7]


def test_unpack_rejects_short_buffer() -> None:
    with pytest.raises(ValueError, match="packed has 2 bytes"):
        unpack_bits(torch.zeros(2, dtype=torch.uint8), 3, 9)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_packing_really_shrinks_memory(bits: int) -> None:
    n = 100_000
    q = quantize(torch.randn(n, generator=_gen(bits)), bits)
    block = default_block(bits)
    blocks = math.ceil(n / block)
    assert q.data.dtype == torch.uint8
    assert q.nbytes == blocks * block * bits // 8 + 4 * blocks == expected_nbytes(n, bits)
    assert q.nbytes <= n * bits / 8 * 1.002 + 4 * blocks
    assert q.nbytes < 4 * n * (bits + 32 / block + 0.01) / 32  # vs 4 bytes per fp32 value


# ------------------------------------------------------------------------------ compress_state
@pytest.mark.parametrize("bits", [2, 3, 4, 8, 16, 32])
def test_compress_state_every_width(bits: int) -> None:
    x = torch.randn(40, 50, generator=_gen(100 + bits))
    st = compress_state(x, bits, generator=_gen(1))
    out = decompress_state(st)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert st.nbytes == expected_nbytes(x.numel(), bits)
    if bits == 32:
        assert isinstance(st, DenseState) and torch.equal(out, x) and st.nbytes == 4 * x.numel()
        source = x.clone()
        st_copy = compress_state(source, 32)
        source.add_(1.0)  # the state is a copy of its input...
        decompress_state(st_copy).add_(1.0)  # ...and decompress returns a copy of the state
        assert torch.equal(decompress_state(st_copy), x)
    elif bits == 16:
        assert isinstance(st, DenseState) and st.data.dtype == torch.bfloat16 and st.nbytes == 2 * x.numel()
        assert torch.equal(out, x.bfloat16().float())
    else:
        assert isinstance(st, QuantizedTensor)
        assert st.mode == "uniform" == default_state_mode(bits)  # NF4 only when asked for (since session 30)
    max_mse = {2: 0.6, 3: 0.12, 4: 0.03, 8: 1e-3, 16: 1e-4, 32: 0.0}[bits]  # unit-variance data
    assert _mse(out, x) <= max_mse


# --------------------------------------------------------------------------------- bad arguments
def test_bad_arguments_name_the_argument_and_the_fix() -> None:
    x = torch.randn(64)
    with pytest.raises(ValueError, match=r"bits=5 .*choose one of \(2, 3, 4, 8\)"):
        quantize(x, 5)
    with pytest.raises(ValueError, match=r"bits=16 .*compress_state"):
        quantize(x, 16)
    with pytest.raises(ValueError, match=r"bits=8 is not supported by mode='nf4'.*mode='uniform'"):
        quantize(x, 8, mode="nf4")
    with pytest.raises(ValueError, match="bits=8 is not supported by mode='aciq'"):
        quantize(x, 8, mode="aciq")
    with pytest.raises(ValueError, match="mode='int4' is unknown"):
        quantize(x, 4, mode="int4")
    with pytest.raises(ValueError, match="block=12 must be a positive multiple of 8"):
        quantize(x, 4, block=12)
    with pytest.raises(ValueError, match="block=0"):
        quantize(x, 4, block=0)
    with pytest.raises(TypeError, match=r"x must be a floating-point tensor.*int64"):
        quantize(torch.arange(64), 4)
    with pytest.raises(ValueError, match="bits=7 is not a state width"):
        compress_state(x, 7)
    with pytest.raises(ValueError, match="bits=8 is not supported by ACIQ"):
        aciq_alpha(x.view(1, 64), 8)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("bits", [2, 4, 8, 16, 32])
def test_non_finite_input_is_rejected(bad: float, bits: int) -> None:
    x = torch.randn(300)
    x[123] = bad
    with pytest.raises(ValueError, match="non-finite"):
        compress_state(x, bits)


@pytest.mark.parametrize("bits", [2, 4, 8, 16, 32])
def test_check_finite_false_skips_the_check(bits: int) -> None:
    """The optimizer's own states skip the check (and its host sync): a NaN then stores, not raises."""
    x = torch.randn(300)
    x[5] = float("nan")
    state = compress_state(x, bits, check_finite=False)
    assert not bool(torch.isfinite(decompress_state(state, torch.float32)).all())


# -------------------------------------------------------------------------------------------- GPU
@pytest.mark.gpu
@pytest.mark.parametrize(
    ("mode", "bits"),
    [("uniform", 2), ("uniform", 3), ("uniform", 4), ("uniform", 8), ("nf4", 4), ("aciq", 2)],
)
def test_cuda_dispatch_matches_torch_path_deterministic(mode: str, bits: int) -> None:
    x = torch.randn(10_001, generator=_gen(5)).cuda()
    a = quantize(x, bits, mode=mode, stochastic=False)
    b = quantize_torch(x, bits, mode=mode, stochastic=False)
    if mode == "aciq":  # the kernel iterates to the clip, the torch path solves it exactly: ulps apart
        assert torch.allclose(a.scale, b.scale, rtol=1e-5, atol=0)
        ca, cb = unpack_bits(a.data, bits, x.numel()), unpack_bits(b.data, bits, x.numel())
        assert float((ca != cb).float().mean()) <= 1e-3
        return
    assert torch.equal(a.scale, b.scale) and torch.equal(a.data, b.data)
    # codes agree exactly; the rescale may differ by an ulp (the compiler may contract it into an FMA)
    assert torch.allclose(dequantize(a), dequantize_torch(b), rtol=1e-6, atol=1e-6)
    s = quantize(x, bits, mode=mode, generator=torch.Generator(device="cuda").manual_seed(0))
    assert s.data.is_cuda and _mse(dequantize(s), x) < 4 * _mse(dequantize(a), x) + 1e-12


@pytest.mark.gpu
@pytest.mark.parametrize(
    ("mode", "bits"), [("uniform", 2), ("uniform", 3), ("uniform", 8), ("nf4", 4), ("aciq", 3)]
)
def test_torch_path_on_cuda_matches_cpu(mode: str, bits: int) -> None:
    x = torch.randn(10_001, generator=_gen(6))
    cpu = quantize_torch(x, bits, mode=mode, stochastic=False)
    gpu = quantize_torch(x.cuda(), bits, mode=mode, stochastic=False)
    assert torch.allclose(gpu.scale.cpu(), cpu.scale, rtol=1e-6, atol=0)
    codes_cpu = unpack_bits(cpu.data, bits, cpu.numel)
    codes_gpu = unpack_bits(gpu.data.cpu(), bits, cpu.numel)
    assert float((codes_cpu != codes_gpu).float().mean()) <= (1e-3 if mode == "aciq" else 0.0)
    out = dequantize_torch(gpu)
    assert out.is_cuda and torch.allclose(out.cpu(), dequantize_torch(cpu), atol=1e-5)
    s = quantize_torch(x.cuda(), bits, mode=mode, generator=torch.Generator(device="cuda").manual_seed(1))
    assert s.data.is_cuda and _mse(dequantize_torch(s).cpu(), x) < 4 * _mse(dequantize_torch(cpu), x) + 1e-12


# ------------------------------------------------------------------------------------------ many at once


@pytest.mark.parametrize(
    ("bits", "mode"), [(2, "uniform"), (3, "uniform"), (4, "nf4"), (4, "aciq"), (8, "uniform")]
)
def test_quantize_many_equals_one_by_one_with_round_to_nearest(bits: int, mode: str) -> None:
    gen = torch.Generator().manual_seed(1)
    xs = [torch.randn(48, 32, generator=gen) * (j + 1) for j in range(4)]  # 1536 values: whole blocks
    many = quantize_many(xs, bits, mode=mode, stochastic=False)
    for x, q in zip(xs, many, strict=True):
        ref = quantize(x, bits, mode=mode, stochastic=False)
        assert (q.shape, q.numel, q.bits, q.mode, q.block) == (
            ref.shape,
            ref.numel,
            ref.bits,
            ref.mode,
            ref.block,
        )
        assert torch.equal(q.data, ref.data) and torch.equal(q.scale, ref.scale)
        assert torch.equal(dequantize(q), dequantize(ref)) and q.nbytes == ref.nbytes
    assert many[0].data.untyped_storage().data_ptr() == many[3].data.untyped_storage().data_ptr()  # one stack


@pytest.mark.parametrize("bits", [3, 4, 8])
def test_quantize_many_pads_each_tensor_like_quantize(bits: int) -> None:
    gen = torch.Generator().manual_seed(2)
    xs = [torch.randn(10, 7, generator=gen) for _ in range(3)]  # 70 values: the last block is padded
    many = quantize_many(xs, bits, stochastic=False)
    for x, q in zip(xs, many, strict=True):
        ref = quantize(x, bits, stochastic=False)
        assert torch.equal(q.data, ref.data) and torch.equal(q.scale, ref.scale) and q.numel == 70
        assert torch.equal(dequantize(q), dequantize(ref))


def test_quantize_many_one_by_one_when_tensors_differ() -> None:
    gen = torch.Generator().manual_seed(4)
    xs = [torch.randn(8, 8, generator=gen), torch.randn(4, 16, generator=gen)]  # same numel, other shapes
    many = quantize_many(xs, 8, stochastic=False)
    assert [q.shape for q in many] == [x.shape for x in xs]
    assert many[0].data.untyped_storage().data_ptr() != many[1].data.untyped_storage().data_ptr()
    assert quantize_many([], 8) == []
    with pytest.raises(ValueError, match="bits"):
        quantize_many(xs, 5)


def test_quantize_many_stochastic_is_unbiased_per_tensor() -> None:
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(64, 64, generator=gen)
    xs = [x, 2 * x]
    draws = torch.stack(
        [torch.stack([dequantize(q) for q in quantize_many(xs, 2, generator=gen)]) for _ in range(400)]
    )
    mean = draws.mean(0)  # E[Q(x)] = x for each tensor of the stack
    for j, xj in enumerate(xs):
        step = 2 * xj.abs().reshape(-1, 64).amax(1, keepdim=True) / 3  # a 2-bit level gap per block
        err = ((mean[j] - xj).reshape(-1, 64) / step).abs()
        assert float(err.mean()) < 0.03 and float(err.max()) < 0.2  # sd of a mean of 400: <= 0.025 steps


# --------------------------------------------------------------------------- the torch path's fast forms
def _nf4_codes_by_search(y: torch.Tensor, u: torch.Tensor | None) -> torch.Tensor:
    """The NF4 encoders as binary searches (the formulas of :func:`quantize_torch`'s docstring)."""
    levels = torch.tensor(NF4_LEVELS)
    if u is None:
        return torch.bucketize(y, (levels[:-1] + levels[1:]) / 2, right=False)
    lo = (torch.searchsorted(levels, y, right=True) - 1).clamp_(0, 14)
    p = (y - levels[lo]) / (levels[lo + 1] - levels[lo])
    return lo + (u < p).long()


def test_nf4_cell_tables_count_as_the_binary_search() -> None:
    """The cell look-up (``quant._nf4_count``) against ``bucketize`` / ``searchsorted`` on every level and
    midpoint, their float neighbours, the ends, signed zeros and random values; stochastic codes with the
    same uniforms."""
    levels = torch.tensor(NF4_LEVELS)
    pts = torch.cat([levels, (levels[:-1] + levels[1:]) / 2, torch.tensor([0.0, -0.0])])
    near = torch.cat([pts, torch.nextafter(pts, torch.tensor(2.0)), torch.nextafter(pts, torch.tensor(-2.0))])
    y = torch.cat([near.clamp(-1, 1), torch.rand(20000, generator=_gen(3)) * 2 - 1]).view(1, -1)
    scale = torch.ones(1)
    got = quant._codes_torch(y, scale, 4, "nf4", False, None)
    assert torch.equal(got.long(), _nf4_codes_by_search(y, None))
    got = quant._codes_torch(y, scale, 4, "nf4", True, _gen(9))
    u = torch.rand(y.shape, generator=_gen(9))
    assert torch.equal(got.long(), _nf4_codes_by_search(y, u))


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_byte_packing_matches_the_word_layout(bits: int) -> None:
    """uint8 codes take byte shifts (2 and 4 bits); other dtypes the int32 words: the same bytes, and both
    unpack alike (odd lengths, higher code bits masked off)."""
    for n in (1, 7, 8, 13, 1000):
        c = torch.randint(0, 256, (n,), generator=_gen(n), dtype=torch.int32)
        fast, word = pack_bits(c.to(torch.uint8), bits), pack_bits(c, bits)
        assert torch.equal(fast, word)
        assert torch.equal(unpack_bits(fast, bits, n), (c & ((1 << bits) - 1)).to(torch.uint8))
