"""Stochastic rounding's random words in the fused step (``triton_step._words4``): Philox and the hash variant
(``RNG=1``) both give uniform, uncorrelated, non-repeating words. Runs under ``TRITON_INTERPRET=1`` on the CPU
(``make test``) and compiled on a CUDA GPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from client.compression import fused
from client.compression.kernels import available

triton = pytest.importorskip("triton")
import triton.language as tl  # noqa: E402 (after the skip: triton is an optional dependency)

from client.compression.kernels import triton_step as ts  # noqa: E402

pytestmark = pytest.mark.skipif(
    not available() or not (torch.cuda.is_available() or fused.fused_available(torch.device("cpu"))),
    reason="Triton kernels unavailable: install triton, run with TRITON_INTERPRET=1 (make test) or on CUDA",
)

BLOCK, ROWS, PROGRAMS = 64, 16, 16  # 16 x 16 blocks x 32 pairs = 8192 pairs, 32768 words a key


@triton.jit
def _words_kernel(out_ptr, key, BLOCK: tl.constexpr, ROWS: tl.constexpr, RNG: tl.constexpr):
    if (RNG >= 2) and (BLOCK >= 128):
        N: tl.constexpr = BLOCK // 4
    else:
        N: tl.constexpr = BLOCK // 2
    blk = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    w0, w1, w2, w3 = ts._words4(key, blk, BLOCK, True, RNG, 8)
    off = (blk[:, None] * N + tl.arange(0, N)[None, :]) * 4
    tl.store(out_ptr + off, w0.to(tl.uint32, bitcast=True).to(tl.int64))
    tl.store(out_ptr + off + 1, w1.to(tl.uint32, bitcast=True).to(tl.int64))
    tl.store(out_ptr + off + 2, w2.to(tl.uint32, bitcast=True).to(tl.int64))
    tl.store(out_ptr + off + 3, w3.to(tl.uint32, bitcast=True).to(tl.int64))


def _device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def _words(key: int, rng: int, block: int = BLOCK) -> np.ndarray:
    """``[draws, 4]`` words of one tensor and step (key) as the step draws them (a draw: a pair of values,
    or four with 8-bit dithers)."""
    per = 4 if rng >= 2 and block >= 128 else 2
    out = torch.zeros(PROGRAMS * ROWS * block // per * 4, dtype=torch.int64, device=_device())
    _words_kernel[(PROGRAMS,)](out, key, BLOCK=block, ROWS=ROWS, RNG=rng)
    return out.cpu().numpy().reshape(-1, 4)


@pytest.mark.parametrize("rng", [0, 1], ids=["philox", "hash"])
def test_words_are_uniform_uncorrelated_and_distinct(rng: int) -> None:
    key = 123456789 + 7 * 4294967296  # seed 123456789, tensor 6
    w = _words(key, rng)
    assert (w >= 0).all() and (w < 2**32).all()
    assert np.unique(w).size == w.size  # no word repeats within a tensor and step
    halves = np.concatenate([w & 0xFFFF, w >> 16]).astype(np.float64)  # the 16-bit uniforms the step uses
    u = (halves + 0.5) / 65536.0
    assert abs(u.mean() - 0.5) < 0.005  # 65536 uniforms: standard error 0.0011
    counts = np.bincount((halves.astype(np.int64) >> 12).ravel(), minlength=16)  # top 4 bits of each half
    expected = halves.size / 16
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 45.0, chi2  # 15 degrees of freedom: P(chi2 > 45) < 1e-4 for uniform draws
    flat = u.reshape(2, -1, 4)
    for a, b in (
        (flat[0, :, 0], flat[0, :, 1]),
        (flat[0, :, 2], flat[1, :, 2]),
        (flat[0, :-1, 3], flat[0, 1:, 3]),
    ):
        # word j vs j+1, low vs high half, pair i vs i+1; 8192 pairs: standard error 0.011
        assert abs(np.corrcoef(a, b)[0, 1]) < 0.05
    # another step (seed) and another tensor (high word) draw other words
    for other in (key + 1, key + 4294967296):
        assert (w != _words(other, rng)).mean() > 0.999


def test_hash_and_philox_draw_different_words() -> None:
    key = 42 + 4294967296
    assert (_words(key, 0) != _words(key, 1)).mean() > 0.999


@pytest.mark.parametrize("rng", [2, 3], ids=["philox8", "hash8"])
def test_byte_draws_are_uniform_uncorrelated_and_distinct(rng: int) -> None:
    """The 8-bit dithers' words (``fused.DRAWS = "philox8"`` / ``"hash8"``): a call per four values, so
    256-value blocks draw half the words; each byte (one value's dither) uniform, the bytes of a word, the
    words of a call and neighbouring calls uncorrelated, no word repeated. The 64-value blocks keep the
    pairs' draws (the byte draws of ``triton_step``)."""
    key = 123456789 + 7 * 4294967296
    w = _words(key, rng, 256)
    assert w.shape == (PROGRAMS * ROWS * 64, 4)
    assert np.unique(w).size == w.size
    b = np.stack([(w >> (8 * j)) & 0xFF for j in range(4)], axis=-1).astype(np.float64)  # [calls, word, byte]
    u = (b + 0.5) / 256.0
    assert abs(u.mean() - 0.5) < 0.003  # 65536 x 4 uniforms: standard error 0.0006
    counts = np.bincount(b.astype(np.int64).ravel() >> 4, minlength=16)
    expected = b.size / 16
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 45.0, chi2
    for a, c in (
        (u[:, 0, 0], u[:, 0, 1]),  # bytes of a word
        (u[:, 1, 3], u[:, 1, 2]),
        (u[:, 0, 0], u[:, 1, 0]),  # words of a call
        (u[:-1, 2, 1], u[1:, 2, 1]),  # neighbouring calls
    ):
        assert abs(np.corrcoef(a, c)[0, 1]) < 0.03  # 16384 calls: standard error 0.008
    assert (w != _words(key + 1, rng, 256)).mean() > 0.999
    assert _words(key, rng, 64).shape == _words(key, rng - 2, 64).shape  # 64-value blocks: pairs
    np.testing.assert_array_equal(_words(key, rng, 64), _words(key, rng - 2, 64))


@triton.jit
def _dither_kernel(
    w_ptr, x_ptr, u_ptr, code_ptr, deq_ptr, BLOCK: tl.constexpr, RNG: tl.constexpr, BITS: tl.constexpr
):  # fmt: skip
    """One block a program: its dithers' uniforms and its stochastic codes / dequantized values."""
    if ((RNG >= 2) and (BITS <= 8)) and (BLOCK >= 128):
        N: tl.constexpr = BLOCK // 4
    else:
        N: tl.constexpr = BLOCK // 2
    row = tl.program_id(0) + tl.arange(0, 1)
    w = tl.load(w_ptr + row[:, None] * N + tl.arange(0, N)[None, :])
    d = ts._dither(w, True, RNG, BITS, BLOCK)
    off = row[:, None] * BLOCK + tl.arange(0, BLOCK)[None, :]
    tl.store(u_ptr + off, tl.fma(d, 128.0, -128.0 + ts._dither_offset(RNG, BITS, BLOCK)))
    code, _, deq = ts._quantize(tl.load(x_ptr + off), d, x_ptr, BITS, 0, True, RNG)
    tl.store(code_ptr + off, code)
    tl.store(deq_ptr + off, deq)


def _dither_run(words: np.ndarray, x: np.ndarray, rng: int, bits: int = 8) -> tuple[np.ndarray, ...]:
    dev = _device()
    rows, block = x.shape
    u = torch.zeros(rows, block, dtype=torch.float32, device=dev)
    code = torch.zeros(rows, block, dtype=torch.int32, device=dev)
    deq = torch.zeros(rows, block, dtype=torch.float32, device=dev)
    w = torch.from_numpy(words.astype(np.uint32).view(np.int32)).to(dev)
    xt = torch.from_numpy(x.astype(np.float32)).to(dev)
    _dither_kernel[(rows,)](w, xt, u, code, deq, BLOCK=block, RNG=rng, BITS=bits)
    return u.cpu().numpy(), code.cpu().numpy(), deq.cpu().numpy()


@pytest.mark.parametrize("rng", [0, 2], ids=["16-bit", "8-bit"])
def test_dithers_take_each_word_where_documented(rng: int) -> None:
    """``_dither``'s uniforms, bit for bit: byte ``j`` of word ``i`` for element ``i + j BLOCK / 4`` (8-bit),
    half ``k`` for ``i + k BLOCK / 2`` (16-bit), each ``(r + 1/2) / 2^bits`` (compiled: one ``PRMT`` a
    value; the interpreter: integer operations)."""
    gen = np.random.default_rng(5)
    block, per, width = 256, (4 if rng == 2 else 2), (8 if rng == 2 else 16)
    words = gen.integers(0, 2**32, size=(3, block // per), dtype=np.uint64)
    u, _, _ = _dither_run(words, np.ones((3, block)), rng)
    parts = [(words >> (width * j)) & ((1 << width) - 1) for j in range(per)]
    expected = (np.concatenate(parts, axis=1).astype(np.float64) + 0.5) / 2.0**width
    np.testing.assert_array_equal(u, expected.astype(np.float32))


@pytest.mark.parametrize("rng", [0, 2], ids=["16-bit", "8-bit"])
def test_dithered_codes_are_the_floor_of_t_plus_u(rng: int) -> None:
    """Row ``k`` of the words: every byte ``k``, so with 8-bit dithers every value sees every byte once.
    The codes are ``floor(t + u)`` (the torch path's formula) save within float32 rounding of an integer,
    ties included (``t + u`` an integer: the magic number rounds half to even); with every byte, the mean
    code lies within ``2^-9`` of ``t`` (the documented bias, plus ``t``'s own float32 rounding); the
    dequantized values are the codes'. The 16-bit draws (halves ``257 k``) get the same floor check."""
    gen = np.random.default_rng(11)
    block = 256
    xrow = gen.uniform(-1.0, 1.0, block).astype(np.float32)
    xrow[:2] = [1.0, -1.0]  # the scale is 1: y = x exactly
    xrow[2:10] = [(2 * k + 1) / 256 for k in range(8)]  # t = 127.5 (x + 1): odd multiples of 1/512, ties
    x = np.tile(xrow, (256, 1))
    words = np.tile((np.arange(256, dtype=np.uint64) * 0x01010101)[:, None], (1, block // (4 if rng else 2)))
    u, code, deq = _dither_run(words, x, rng)
    t = xrow.astype(np.float64) * 127.5 + 127.5
    floor = np.minimum(np.floor(t[None, :] + u.astype(np.float64)), 255)
    gap = np.abs((t[None, :] + u + 0.5) % 1.0 - 0.5)  # from t + u to the nearest integer
    # t + u - 1/2 is rounded twice in float32 (t's FMA, the dither's) before the magic number rounds it
    near = gap < 2.0**-14
    assert (code == floor)[~near].all()
    assert (np.abs(code - floor) <= 1)[near].all()
    if rng == 2:
        assert near[:, 2:10].sum(axis=0).min() >= 1  # the ties were exercised
        # t itself is rounded to float32 (an ulp of 255 is 2^-16), as it was with the 16-bit draws
        assert np.abs(code.mean(axis=0) - t).max() <= 2.0**-9 + 2.0**-16
    np.testing.assert_allclose(deq, code * (2.0 / 255.0) - 1.0, rtol=0, atol=1e-6)


@pytest.mark.parametrize("rng", [0, 2], ids=["16-bit", "8-bit"])
def test_dithered_codes_never_pass_the_top(rng: int) -> None:
    """``y = 1`` with the largest dither: the code is the top one, not a wrapped 0. With 16-bit draws ``t +
    u - 1/2 = top + 1/2 - 2^-17`` rounds (to even) to ``top + 1/2`` and then to ``top + 1``: the cap
    catches it; the 8-bit draws stop ``2^-9`` short of 1 and need none."""
    x = np.full((1, 256), -1.0, dtype=np.float32)
    x[0, :3] = [1.0, 0.5, 0.0]
    words = np.full((1, 256 // (4 if rng == 2 else 2)), 0xFFFFFFFF, dtype=np.uint64)
    _, code, deq = _dither_run(words, x, rng)
    assert code[0, 0] == 255 and abs(deq[0, 0] - 1.0) < 1e-6
    assert code[0, 1] == 192 and code[0, 2] == 128  # t = 191.25, 127.5, plus u > 3/4
    assert (code[0, 3:] == 0).all()  # t = 0, u < 1
