"""Triton kernels against the torch path: same codes and scales (round-to-nearest), same law (stochastic).

Runs the kernels under ``TRITON_INTERPRET=1`` on CPU (``make test`` sets it) or compiled on CUDA; skips with
the reason where neither works. Sizes stay small because the interpreter runs each program in numpy.
"""

from __future__ import annotations

import itertools
import os

import pytest
import torch

from client.compression import kernels, quant
from client.compression.codes import NF4_LEVELS, default_block
from client.compression.quant import (
    QUANT_MODES,
    QuantizedTensor,
    dequantize_torch,
    quantize_torch,
    unpack_bits,
)

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
needs_kernels = pytest.mark.skipif(
    not kernels.available(),
    reason="Triton kernels unavailable: install triton, run with TRITON_INTERPRET=1 (make test) or on CUDA",
)
#: Compiled kernels where CUDA is present and the interpreter is off, else the interpreter on CPU tensors.
DEVICE = "cuda" if torch.cuda.is_available() and not INTERPRET else "cpu"
CONFIGS = [(bits, mode) for mode, widths in QUANT_MODES.items() for bits in widths]
CONFIG_IDS = [f"{mode}{bits}" for bits, mode in CONFIGS]
DTYPES = [torch.float32, torch.bfloat16]
#: At most this fraction of codes may differ (by one) from the torch path. The kernel rounds x / s as torch
#: does, so none do in practice; the slack is for an ACIQ clip one ulp off landing a value on a tie.
MAX_TIE_FRACTION = 1e-3


def _codes(data: torch.Tensor, bits: int) -> torch.Tensor:
    return unpack_bits(data.cpu(), bits, data.numel() * 8 // bits).to(torch.int16)


def _assert_same_quantization(data: torch.Tensor, scale: torch.Tensor, ref: QuantizedTensor) -> None:
    assert data.dtype == torch.uint8 and scale.dtype == torch.float32
    assert data.shape == ref.data.shape and scale.shape == ref.scale.shape
    if ref.mode == "aciq":  # a sum in another order: equal up to a few float32 ulps
        torch.testing.assert_close(scale.cpu(), ref.scale.cpu(), rtol=1e-6, atol=0)
    else:
        assert torch.equal(scale.cpu(), ref.scale.cpu())
    diff = (_codes(data, ref.bits) - _codes(ref.data, ref.bits)).abs()
    assert int(diff.max()) <= 1
    assert float((diff > 0).float().mean()) <= MAX_TIE_FRACTION


def _sizes(block: int) -> list[int]:
    # one value, a partial block only, whole blocks only, several programs plus a partial last block
    return [1, block - 3, 3 * block, 9 * block + 40]


@needs_kernels
@pytest.mark.parametrize(("bits", "mode"), CONFIGS, ids=CONFIG_IDS)
def test_deterministic_codes_and_scales_match_torch(bits: int, mode: str) -> None:
    gen = torch.Generator().manual_seed(bits * 31 + len(mode))
    block = default_block(bits)
    for dtype in DTYPES:
        for n in _sizes(block):
            x = (torch.randn(n, generator=gen) * torch.rand(1, generator=gen) * 10).to(dtype)
            ref = quantize_torch(x, bits, mode=mode, stochastic=False)
            # tile=4 blocks per program, so the larger sizes span several programs
            data, scale = kernels.quantize(x.to(DEVICE), bits, mode, block, False, tile=4 * block)
            _assert_same_quantization(data, scale, ref)


@needs_kernels
@pytest.mark.parametrize(("bits", "mode"), CONFIGS, ids=CONFIG_IDS)
def test_dequantize_matches_torch_on_every_code(bits: int, mode: str) -> None:
    gen = torch.Generator().manual_seed(7 + bits)
    block = default_block(bits)
    n = 5 * block - 13
    n_blocks = -(-n // block)
    data = torch.randint(0, 256, (n_blocks * block * bits // 8,), generator=gen, dtype=torch.uint8)
    scale = torch.rand(n_blocks, generator=gen) * 4
    scale[1] = 0.0  # an all-zero block dequantizes to zeros
    for out_dtype in (torch.float32, torch.bfloat16, torch.float16):
        q = QuantizedTensor(data, scale, torch.Size([n]), out_dtype, bits, mode, block, n)
        ref = dequantize_torch(q)
        got = kernels.dequantize(data.to(DEVICE), scale.to(DEVICE), bits, mode, block, n, out_dtype)
        assert got.dtype == out_dtype and got.shape == (n,)
        # one FMA instead of torch's three roundings: a few float32 ulps of the scale, then one output ulp
        ulp = {torch.float32: 2**-21, torch.bfloat16: 2**-7, torch.float16: 2**-10}[out_dtype]
        torch.testing.assert_close(got.cpu().float(), ref.float(), rtol=0, atol=4 * ulp)
        assert torch.all(got[block : 2 * block].cpu() == 0)


@needs_kernels
@pytest.mark.parametrize(("bits", "mode"), CONFIGS, ids=CONFIG_IDS)
def test_round_trip_error_is_within_half_a_step(bits: int, mode: str) -> None:
    gen = torch.Generator().manual_seed(3)
    block = default_block(bits)
    x = torch.randn(4 * block + 5, generator=gen)
    data, scale = kernels.quantize(x.to(DEVICE), bits, mode, block, False)
    y = kernels.dequantize(data, scale, bits, mode, block, x.numel(), torch.float32).cpu()
    s = scale.cpu().repeat_interleave(block)[: x.numel()]
    if mode == "nf4":
        half_gap = max(b - a for a, b in itertools.pairwise(NF4_LEVELS)) / 2
        bound = half_gap * s
    else:
        bound = s / ((1 << bits) - 1)  # delta / 2 = s / (2^b - 1)
    inside = x.abs() <= s  # ACIQ clips the rest to +-s
    err = (y - x).abs()
    assert torch.all(err[inside] <= bound[inside] * (1 + 1e-5) + 1e-7)
    assert torch.all((y[~inside] - x[~inside].sign() * s[~inside]).abs() <= 1e-5 * s[~inside])


@needs_kernels
@pytest.mark.parametrize(("bits", "mode"), CONFIGS, ids=CONFIG_IDS)
def test_stochastic_rounding_is_unbiased_with_torch_mse(bits: int, mode: str) -> None:
    block = default_block(bits)
    gen = torch.Generator().manual_seed(11 * bits)
    x = torch.randn(2 * block, generator=gen)
    reps = 64
    xr = x.repeat(reps)  # every copy has the same blocks and scales: one launch = `reps` draws
    data, scale = kernels.quantize(xr.to(DEVICE), bits, mode, block, True, seed=1234, tile=16384)
    y = kernels.dequantize(data, scale, bits, mode, block, xr.numel(), torch.float32).cpu().view(reps, -1)
    ref = quantize_torch(xr, bits, mode=mode, stochastic=True, generator=torch.Generator().manual_seed(5))
    y_ref = dequantize_torch(ref).view(reps, -1)

    s = scale[:2].cpu().repeat_interleave(block)
    inside = x.abs() < s  # ACIQ clips outside, so it is unbiased inside only
    # largest gap between neighbouring levels (NF4's widest is < 0.31 s): the rounding error's range
    step = 2 * s / ((1 << bits) - 1) if mode != "nf4" else 0.31 * s
    err = ((y - x) / step)[:, inside]  # in steps; each draw has |mean| 0 and sd <= 1/2
    assert float(err.mean().abs()) < 5 * 0.5 / err.numel() ** 0.5  # no bias overall
    assert float(err.mean(0).abs().max()) < 5 * 0.5 / reps**0.5  # nor on any one value
    mse, mse_ref = float(((y - x) ** 2).mean()), float(((y_ref - x) ** 2).mean())
    assert 0.85 < mse / mse_ref < 1.15, (mse, mse_ref)


@needs_kernels
def test_32_bit_uniforms_are_unbiased_too(monkeypatch: pytest.MonkeyPatch) -> None:
    from client.compression.kernels import triton_quant

    monkeypatch.setattr(triton_quant, "RAND16", False)
    x = torch.randn(128, generator=torch.Generator().manual_seed(2))
    reps = 64
    data, scale = kernels.quantize(x.repeat(reps).to(DEVICE), 4, "nf4", 64, True, seed=9, tile=16384)
    y = kernels.dequantize(data, scale, 4, "nf4", 64, 128 * reps, torch.float32).cpu().view(reps, -1)
    err = (y - x) / (0.31 * scale[:2].cpu().repeat_interleave(64))
    assert float(err.mean().abs()) < 5 * 0.5 / err.numel() ** 0.5


@needs_kernels
def test_seed_fixes_the_stochastic_codes() -> None:
    x = torch.randn(300).to(DEVICE)
    a = kernels.quantize(x, 4, "uniform", 64, True, seed=1)[0]
    b = kernels.quantize(x, 4, "uniform", 64, True, seed=1)[0]
    c = kernels.quantize(x, 4, "uniform", 64, True, seed=2)[0]
    assert torch.equal(a, b) and not torch.equal(a, c)


@needs_kernels
@pytest.mark.parametrize(("bits", "mode"), [(4, "uniform"), (4, "nf4"), (3, "aciq"), (8, "uniform")])
def test_a_seed_tensor_gives_the_codes_of_its_int(bits: int, mode: str) -> None:
    """A one-element seed tensor is read by the kernel (no trip to the host) and keys Philox exactly as the
    int it holds, in the whole blocks and the tail block alike."""
    x = torch.randn(5 * 64 + 17, generator=torch.Generator().manual_seed(bits)).to(DEVICE)
    for key in (7, 2**31 - 2):
        by_int = kernels.quantize(x, bits, mode, 64, True, seed=key)
        by_tensor = kernels.quantize(x, bits, mode, 64, True, seed=torch.tensor([key], device=DEVICE))
        assert torch.equal(by_int[0], by_tensor[0]) and torch.equal(by_int[1], by_tensor[1])
    other = kernels.quantize(x, bits, mode, 64, True, seed=torch.tensor([8], device=DEVICE))[0]
    assert not torch.equal(other, by_int[0])


@needs_kernels
@pytest.mark.parametrize("seed", [torch.tensor([1.0]), torch.tensor([1, 2]), torch.tensor([True])])
def test_a_bad_seed_tensor_is_refused(seed: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="a tensor seed must hold one integer"):
        kernels.quantize(torch.randn(64, device=DEVICE), 4, "uniform", 64, True, seed=seed)


@needs_kernels
@pytest.mark.parametrize(("bits", "mode", "block"), [(4, "nf4", 24), (3, "uniform", 96), (2, "aciq", 40)])
def test_block_that_is_not_a_power_of_two(bits: int, mode: str, block: int) -> None:
    x = torch.randn(7 * block + 9, generator=torch.Generator().manual_seed(block))
    ref = quantize_torch(x, bits, mode=mode, block=block, stochastic=False)
    data, scale = kernels.quantize(x.to(DEVICE), bits, mode, block, False, tile=2 * block)
    _assert_same_quantization(data, scale, ref)
    y = kernels.dequantize(data, scale, bits, mode, block, x.numel(), torch.float32).cpu()
    torch.testing.assert_close(y, dequantize_torch(ref), rtol=0, atol=1e-5)


@needs_kernels
def test_zero_empty_and_non_contiguous_inputs() -> None:
    data, scale = kernels.quantize(torch.zeros(100, device=DEVICE), 3, "aciq", None, False)
    assert torch.all(scale == 0)
    assert torch.all(kernels.dequantize(data, scale, 3, "aciq", None, 100, torch.float32) == 0)

    empty = torch.zeros(0, device=DEVICE)
    ref = quantize_torch(empty.cpu(), 4, mode="nf4", stochastic=False)
    data, scale = kernels.quantize(empty, 4, "nf4", None, False)
    _assert_same_quantization(data, scale, ref)
    assert kernels.dequantize(data, scale, 4, "nf4", None, 0, torch.float32).shape == (0,)

    m = torch.randn(40, 30, device=DEVICE).t()  # non-contiguous
    a = kernels.quantize(m, 2, "uniform", None, False)
    b = kernels.quantize(m.contiguous(), 2, "uniform", None, False)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@needs_kernels
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the interpreter's numpy meets the NaN on purpose
@pytest.mark.parametrize("mode", ["uniform", "aciq"])
def test_non_finite_values_reach_the_scale(mode: str) -> None:
    x = torch.randn(4 * 64, device=DEVICE)
    x[5], x[130] = float("nan"), float("inf")
    _, scale = kernels.quantize(x, 4, mode, 64, False)
    assert torch.isnan(scale[0]) and torch.isinf(scale[2])
    assert torch.isfinite(scale[1]) and torch.isfinite(scale[3])


def test_bad_arguments_say_what_to_change() -> None:
    x = torch.randn(64)
    with pytest.raises(ValueError, match="mode="):
        kernels.quantize(x, 4, "fp4")
    with pytest.raises(ValueError, match="bits=8 is not supported by mode='nf4'"):
        kernels.quantize(x, 8, "nf4")
    with pytest.raises(ValueError, match="multiple of 8"):
        kernels.quantize(x, 4, "uniform", 12)
    with pytest.raises(TypeError, match="float32, bfloat16 or float16"):
        kernels.quantize(torch.ones(64, dtype=torch.int32), 4)
    with pytest.raises(ValueError, match="needs 2 scales"):
        kernels.dequantize(torch.zeros(64, dtype=torch.uint8), torch.zeros(1), 4, "uniform", 64, 100)


def test_mode_table_and_probe_agree_with_the_torch_path() -> None:
    assert kernels.MODE_BITS == QUANT_MODES
    assert isinstance(kernels.available(), bool)
    assert kernels.available() is kernels.available()  # cached


@needs_kernels
@pytest.mark.slow
@pytest.mark.parametrize(("bits", "mode"), CONFIGS, ids=CONFIG_IDS)
def test_deterministic_match_default_tiles_larger_input(bits: int, mode: str) -> None:
    x = torch.randn(20_000, generator=torch.Generator().manual_seed(bits)) * 3
    x[::97] *= 20  # outliers, so ACIQ clips
    for dtype in DTYPES:
        xd = x.to(dtype)
        ref = quantize_torch(xd, bits, mode=mode, stochastic=False)
        data, scale = kernels.quantize(xd.to(DEVICE), bits, mode, None, False, tile=16384)
        _assert_same_quantization(data, scale, ref)


@pytest.mark.gpu
@pytest.mark.parametrize(("bits", "mode"), CONFIGS, ids=CONFIG_IDS)
def test_compiled_kernels_match_torch_on_cuda(bits: int, mode: str) -> None:
    if INTERPRET:
        pytest.skip("TRITON_INTERPRET=1 interprets on CPU; run without it to test the compiled kernels")
    if not kernels.available():
        pytest.skip("triton is not importable")
    n = (1 << 22) + 37
    for dtype in DTYPES:
        x = (torch.randn(n, device="cuda") * 3).to(dtype)
        ref = quantize_torch(x, bits, mode=mode, stochastic=False)  # torch ops on the GPU
        data, scale = kernels.quantize(x, bits, mode, None, False)
        _assert_same_quantization(data, scale, ref)
        y = kernels.dequantize(ref.data, ref.scale, bits, mode, ref.block, n, torch.float32)
        torch.testing.assert_close(
            y, dequantize_torch(ref, torch.float32), rtol=0, atol=1e-5 * float(x.abs().max())
        )
        # stochastic: unbiased on average over the whole tensor, MSE as the torch path's
        data, scale = kernels.quantize(x, bits, mode, None, True, seed=99)
        y = kernels.dequantize(data, scale, bits, mode, default_block(bits), n, torch.float32)
        y_ref = dequantize_torch(quantize_torch(x, bits, mode=mode, stochastic=True), torch.float32)
        xf = x.float()
        mse, mse_ref = float(((y - xf) ** 2).mean()), float(((y_ref - xf) ** 2).mean())
        assert 0.97 < mse / mse_ref < 1.03, (mse, mse_ref)
        if mode != "aciq":
            assert abs(float((y - xf).mean())) < 5 * mse**0.5 / n**0.5


@pytest.mark.gpu
def test_a_cuda_generator_keys_the_kernel_on_the_device() -> None:
    """``quant.quantize`` with a CUDA generator hands the kernel its key as a device tensor (no host read):
    the codes are those of the int the same draw holds."""
    if INTERPRET or not kernels.available():
        pytest.skip("needs the compiled kernels on CUDA")
    x = torch.randn(10_000, device="cuda")
    g1, g2 = (torch.Generator(device="cuda").manual_seed(5) for _ in range(2))
    key = quant._seed_from(g1)
    assert isinstance(key, torch.Tensor) and key.is_cuda
    q = quant.quantize(x, 2, generator=g2)
    data, scale = kernels.quantize(x, 2, "uniform", q.block, True, seed=int(key))
    assert torch.equal(q.data, data) and torch.equal(q.scale, scale)
