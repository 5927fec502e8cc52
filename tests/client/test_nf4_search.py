"""The fused step's NF4 search (``triton_step._nf4_stochastic`` / ``_nf4_nearest``, ``fused.NF4_SEARCH``):
value by value the codes of a comparison with every level (``triton_quant._nf4_dithered``) and of the
midpoints' select tree (``_nf4_nearest_tree``), and the tables' premises. Runs under ``TRITON_INTERPRET=1``
(``make test``) and compiled on a CUDA GPU (where the comparisons are the inline ``set`` instructions)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from client.compression import codes, fused, kernels
from client.compression.kernels import available

triton = pytest.importorskip("triton")
import triton.language as tl  # noqa: E402 (after the skip: triton is an optional dependency)

from client.compression.kernels import triton_quant as tq  # noqa: E402
from client.compression.kernels import triton_step as ts  # noqa: E402

pytestmark = pytest.mark.skipif(
    not available() or not (torch.cuda.is_available() or fused.fused_available(torch.device("cpu"))),
    reason="Triton kernels unavailable: install triton, run with TRITON_INTERPRET=1 (make test) or on CUDA",
)

N = 1024  # values a program


@triton.jit
def _search_kernel(y_ptr, u_ptr, tab_ptr, out_ptr, N: tl.constexpr):
    i = tl.program_id(0) * N + tl.arange(0, N)
    y = tl.load(y_ptr + i)
    u = tl.load(u_ptr + i)
    code, level = ts._nf4_stochastic(y, u, tab_ptr)
    ref = tq._nf4_dithered(y, u)
    tl.store(out_ptr + i * 6, code.to(tl.float32))
    tl.store(out_ptr + i * 6 + 1, level)
    tl.store(out_ptr + i * 6 + 2, ref.to(tl.float32))
    tl.store(out_ptr + i * 6 + 3, tl.load(tab_ptr + ref))
    tl.store(out_ptr + i * 6 + 4, ts._nf4_nearest(y, tab_ptr).to(tl.float32))
    tl.store(out_ptr + i * 6 + 5, tq._nf4_nearest_tree(y).to(tl.float32))


def _device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def _ys() -> np.ndarray:
    """Every level and midpoint with its float32 neighbours two ulps either way, the ends, past the top (an
    ulp, ``inf``: a subnormal scale's ``1 / s``), every cell's edges, and uniform values."""
    lv = np.array(codes.NF4_LEVELS, dtype=np.float32)
    mids = ((lv[:-1] + lv[1:]) / np.float32(2)).astype(np.float32)
    scale, shift, top = codes.NF4_CELLS
    edges = ((np.arange(top + 2) - 0.5 - shift) / scale).astype(np.float32)
    pts = np.concatenate([lv, mids, edges])
    near = [pts]
    for k in (1, 2):
        near += [pts, pts]
        up, down = pts.copy(), pts.copy()
        for _ in range(k):
            up, down = np.nextafter(up, np.float32(2)), np.nextafter(down, np.float32(-2))
        near += [up, down]
    rnd = np.random.default_rng(0).uniform(-1.0, 1.0, 4 * N).astype(np.float32)
    special = np.array([-1.0, 1.0, np.nextafter(np.float32(1), np.float32(2)), np.inf], dtype=np.float32)
    ys = np.concatenate([*near, special, rnd])
    return ys[(ys >= -1) | ~np.isfinite(ys)]


def _dithers(width: int, n: int) -> np.ndarray:
    """``n`` dithers of ``width`` bits as the step forms them, ``(r + 1/2) / 2^width``: the extremes and
    random draws."""
    gen = np.random.default_rng(width)
    r = gen.integers(0, 2**width, n)
    r[: n // 8] = 0
    r[n // 8 : n // 4] = 2**width - 1
    return ((r + 0.5) / 2.0**width).astype(np.float32)


@pytest.mark.parametrize("width", [16, 8], ids=["16-bit", "8-bit"])
def test_search_finds_the_comparisons_codes(width: int) -> None:
    """Stochastic: the search's code is the count of passed thresholds, and its level the code's level, bit
    for bit, for every value near a level, a midpoint or a cell's edge, with the smallest, the largest and
    random dithers (each value with several); and values placed on a threshold. Nearest: the select
    tree's code."""
    ys = _ys()
    reps = 8
    y = np.repeat(ys, reps)
    u = _dithers(width, y.size)
    # values on a threshold of theirs: y = level[i-1] + u gap[i], rounded once as the FMA rounds it
    lv = np.array(codes.NF4_LEVELS, dtype=np.float64)
    i = np.random.default_rng(1).integers(1, 16, N)
    uu = _dithers(width, N).astype(np.float64)
    on = (lv[i - 1] + uu * (lv[i] - lv[i - 1])).astype(np.float32)  # exact in float64 (products of 24 bits)
    y = np.concatenate([y, on, on])
    u = np.concatenate([u, uu.astype(np.float32), _dithers(width, N)])
    pad = -y.size % N
    y = np.concatenate([y, np.zeros(pad, np.float32)])
    u = np.concatenate([u, np.full(pad, 0.5, np.float32)])
    dev = _device()
    tab = kernels._nf4_table(dev)
    out = torch.zeros(y.size * 6, dtype=torch.float32, device=dev)
    yt, ut = torch.from_numpy(y).to(dev), torch.from_numpy(u).to(dev)
    _search_kernel[(y.size // N,)](yt, ut, tab, out, N=N)
    code, level, ref, ref_level, near, near_ref = out.cpu().numpy().reshape(-1, 6).T
    assert np.array_equal(code, ref), np.flatnonzero(code != ref)[:10]
    assert np.array_equal(level.view(np.int32), ref_level.view(np.int32))
    assert np.array_equal(near, near_ref), np.flatnonzero(near != near_ref)[:10]
    assert set(np.unique(code)) == set(range(16)) and set(np.unique(near)) == set(range(16))
    assert (code[y == np.inf] == 15).all() and (near[y == np.inf] == 15).all()


def test_search_tables_rest_on_exact_gaps_and_one_point_a_cell() -> None:
    """The premise of the stochastic search: each gap is its levels' exact difference (so a threshold
    never passes the next level, and ``level + gap`` is the next level); the cells of ``codes.NF4_CELLS`` hold
    at most one level and one midpoint, ``next`` is the first point at or past the cell, and a scale too
    coarse for that is refused."""
    lv = np.array(codes.NF4_LEVELS, dtype=np.float32)
    gaps = lv[1:] - lv[:-1]
    assert np.array_equal(gaps.astype(np.float64), lv[1:].astype(np.float64) - lv[:-1].astype(np.float64))
    assert np.array_equal(lv[:-1] + gaps, lv[1:])
    table = codes.nf4_search_table().numpy()
    pairs = table[:32].reshape(16, 2)
    assert np.array_equal(pairs[:, 0], lv) and np.array_equal(pairs[:15, 1], gaps) and np.isnan(pairs[15, 1])
    scale, shift, top = codes.NF4_CELLS
    for points, cells in (
        (lv[1:], table[32 : 32 + 2 * (top + 1)]),
        ((lv[:-1] + lv[1:]) / np.float32(2), table[32 + 2 * (top + 1) :]),
    ):
        nxt, base = cells.reshape(-1, 2)[:, 0], cells.reshape(-1, 2)[:, 1].view(np.int32)
        held = np.floor(points.astype(np.float64) * scale + shift + 0.5)  # the cell of each point (no ties)
        assert np.unique(held).size == points.size  # one point a cell
        assert np.array_equal(base, [(held < j).sum() for j in range(top + 1)])
        assert np.array_equal(nxt, np.append(points, np.inf)[base])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(codes, "NF4_CELLS", (4.0, 4, 8))
        with pytest.raises(ValueError, match="two points in one cell"):
            codes.nf4_search_table()
