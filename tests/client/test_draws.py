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
    HALF: tl.constexpr = BLOCK // 2
    blk = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    w0, w1, w2, w3 = ts._words4(key, blk, BLOCK, True, RNG)
    off = (blk[:, None] * HALF + tl.arange(0, HALF)[None, :]) * 4
    tl.store(out_ptr + off, w0.to(tl.uint32, bitcast=True).to(tl.int64))
    tl.store(out_ptr + off + 1, w1.to(tl.uint32, bitcast=True).to(tl.int64))
    tl.store(out_ptr + off + 2, w2.to(tl.uint32, bitcast=True).to(tl.int64))
    tl.store(out_ptr + off + 3, w3.to(tl.uint32, bitcast=True).to(tl.int64))


def _words(key: int, rng: int) -> np.ndarray:
    """``[pairs, 4]`` words of one tensor and step (key) as the step draws them."""
    dev = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    out = torch.zeros(PROGRAMS * ROWS * BLOCK // 2 * 4, dtype=torch.int64, device=dev)
    _words_kernel[(PROGRAMS,)](out, key, BLOCK=BLOCK, ROWS=ROWS, RNG=rng)
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
