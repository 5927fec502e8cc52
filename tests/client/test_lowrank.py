"""Low-rank projection: Lemma 1 (exact projection error = tail energy) and warm-started power iteration."""

from __future__ import annotations

import itertools

import pytest
import torch

from client.compression.lowrank import (
    exact_lowrank,
    init_q,
    orthonormalize,
    orthonormalize_batched,
    power_iteration,
    spectral_tail_estimate,
    tail_energy,
    top_left_singular,
)
from client.compression.transfer import upload


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _stable_spectrum(m: int, n: int, decay: float, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    k = min(m, n)
    u = orthonormalize(torch.randn(m, k, generator=gen, dtype=torch.float64))
    v = orthonormalize(torch.randn(n, k, generator=gen, dtype=torch.float64))
    s = 10.0 * decay ** torch.arange(k, dtype=torch.float64)
    return u, s, v


@pytest.mark.parametrize(("m", "n"), [(32, 32), (64, 17), (9, 50), (128, 40)])
@pytest.mark.parametrize("rank", [1, 3, 8])
def test_lemma1_exact_projection_error_equals_tail_energy(m: int, n: int, rank: int) -> None:
    g = torch.randn(m, n, generator=_gen(m * 1000 + n * 10 + rank), dtype=torch.float64)
    approx = exact_lowrank(g, rank)
    err = float((g - approx).square().sum())
    assert err == pytest.approx(tail_energy(g, rank), rel=1e-9)
    assert torch.linalg.matrix_rank(approx) == min(rank, m, n)


def test_lemma1_float32_and_edge_ranks() -> None:
    g = torch.randn(40, 30, generator=_gen(0))
    err = float((g - exact_lowrank(g, 5)).double().square().sum())
    assert err == pytest.approx(tail_energy(g, 5), rel=1e-4)
    total = float(g.double().square().sum())
    assert tail_energy(g, 0) == pytest.approx(total, rel=1e-5)
    assert tail_energy(g, 30) == 0.0
    assert torch.equal(exact_lowrank(g, 0), torch.zeros_like(g))
    assert torch.equal(exact_lowrank(g, 30), g)
    # The tail shrinks as the rank grows.
    tails = [tail_energy(g, r) for r in range(0, 31)]
    assert all(a >= b for a, b in itertools.pairwise(tails))


def test_exact_lowrank_beats_any_other_rank_r_projection() -> None:
    gen = _gen(1)
    g = torch.randn(50, 40, generator=gen, dtype=torch.float64)
    best = tail_energy(g, 4)
    for _ in range(5):
        p = orthonormalize(torch.randn(50, 4, generator=gen, dtype=torch.float64))
        assert float((g - p @ (p.T @ g)).square().sum()) >= best


def test_orthonormalize_is_orthonormal_spans_x_and_sign_fixed() -> None:
    x = torch.randn(30, 5, generator=_gen(2), dtype=torch.float64)
    q = orthonormalize(x)
    assert torch.allclose(q.T @ q, torch.eye(5, dtype=torch.float64), atol=1e-12)
    r = q.T @ x  # upper triangular with a non-negative diagonal
    assert torch.allclose(q @ r, x, atol=1e-12)
    assert torch.allclose(torch.tril(r, -1), torch.zeros_like(r), atol=1e-12)
    assert (torch.diagonal(r) >= 0).all()
    assert torch.allclose(orthonormalize(-x), -q, atol=1e-12)  # deterministic sign: no flip ambiguity
    assert orthonormalize(x.float()).dtype == torch.float32
    assert orthonormalize(x.bfloat16()).dtype == torch.float32


def test_orthonormalize_rank_deficient_still_orthonormal() -> None:
    x = torch.zeros(10, 3)
    x[:, 0] = 1.0
    q = orthonormalize(x)
    assert torch.allclose(q.T @ q, torch.eye(3), atol=1e-6)


def test_orthonormalize_batched_equals_householder_per_matrix() -> None:
    """CholeskyQR2 on a stack gives each matrix's sign-fixed Householder factor (to the nudge's ~1e-6), any
    batch."""
    x = torch.randn(2, 3, 40, 6, generator=_gen(7), dtype=torch.float64)
    x[0, 1] *= 1e3  # scales differ within the stack
    x[1, 2, :, 5] = x[1, 2, :, 0] + 1e-5 * x[1, 2, :, 5]  # ill-conditioned (cond ~1e5)
    q = orthonormalize_batched(x)
    assert q.shape == x.shape and q.dtype == torch.float64
    for idx in [(0, 0), (0, 1), (1, 0), (1, 2)]:
        ref = orthonormalize(x[idx])
        well = 5 if idx == (1, 2) else 6  # the last direction of the ill-conditioned one moves with rounding
        assert torch.allclose(q[idx][:, :well], ref[:, :well], atol=1e-5), idx
        assert torch.allclose(q[idx].T @ q[idx], torch.eye(6, dtype=torch.float64), atol=1e-10)
        back = q[idx] @ (q[idx].T @ x[idx])  # the span is x's
        assert torch.allclose(back, x[idx], atol=1e-5 * float(x[idx].abs().max())), idx
    assert orthonormalize_batched(x.float()).dtype == torch.float32
    assert orthonormalize_batched(x[0, 0]).shape == (40, 6)  # a single matrix


def test_orthonormalize_batched_support_in_the_leading_rows() -> None:
    """The H200 demo's NaN (session 9): a first moment whose non-zero rows are the leading ones (a position
    embedding trained on windows shorter than its block) times an oversampled start, 72 columns of rank 64.
    A nudge on the leading diagonal left the Gram matrix singular to float64 (Cholesky failed, NaN basis on
    CUDA); the fixed random nudge keeps it orthonormal and spanning the matrix."""
    g = _gen(11)
    a = torch.zeros(256, 768)
    a[:64] = (
        torch.randn(64, 64, generator=g)
        @ torch.diag(torch.logspace(0, -3, 64))
        @ torch.randn(64, 768, generator=g)
    )
    x = a @ torch.randn(768, 72, generator=g)
    for _ in range(2):  # the randomized SVD's two subspace iterations
        q = orthonormalize_batched(x[None])[0]
        assert bool(torch.isfinite(q).all())
        assert torch.allclose(q.T @ q, torch.eye(72), atol=1e-5)
        assert torch.allclose(q @ (q.T @ x), x, atol=1e-5 * float(x.abs().max()))
        x = a @ (a.T @ q)


def test_orthonormalize_batched_non_finite_input_gets_the_fixed_basis() -> None:
    """An inf or NaN entry (a diverged moment) fails the check on the result, not only the factorization:
    that matrix gets the zero matrix's fixed basis, the others of the stack are untouched."""
    x = torch.randn(3, 12, 4, generator=_gen(9), dtype=torch.float64)
    x[0, 3, 1], x[2, 0, 0] = float("inf"), float("nan")
    q = orthonormalize_batched(x)
    fixed = orthonormalize_batched(torch.zeros(12, 4, dtype=torch.float64))
    assert torch.equal(q[0], fixed) and torch.equal(q[2], fixed)
    assert torch.allclose(q[1], orthonormalize_batched(x[1]), atol=0)


def test_orthonormalize_batched_rank_deficient_and_zero_input() -> None:
    x = torch.zeros(3, 10, 3)
    x[0, :, 0] = 1.0  # rank 1
    x[1] = torch.randn(10, 3, generator=_gen(8))
    q = orthonormalize_batched(x)  # x[2] is all zero
    assert bool(torch.isfinite(q).all())
    for j in range(3):
        assert torch.allclose(q[j].T @ q[j], torch.eye(3), atol=1e-5), j
    assert torch.allclose(
        q[2], orthonormalize_batched(torch.zeros(10, 3)), atol=0
    )  # a zero matrix: a fixed basis
    assert torch.allclose(q[0][:, 0], torch.ones(10) / 10**0.5, atol=1e-5)  # the span of x comes first
    with pytest.raises(ValueError, match="rows >= columns"):
        orthonormalize_batched(torch.randn(2, 3, 5))
    with pytest.raises(TypeError, match=r"\(\.\.\., m, r\)"):
        orthonormalize_batched(torch.ones(4, dtype=torch.int64))


def test_top_left_singular_spans_the_svds_top_subspace() -> None:
    """The Gram-matrix route gives the SVD's top left singular vectors (up to sign), signs fixed, batched."""
    gen = _gen(9)
    u0 = orthonormalize(torch.randn(12, 12, generator=gen, dtype=torch.float64))
    s0 = torch.tensor([10.0, 5.0, 3.0, 2.0, 1.0] + [0.1] * 7, dtype=torch.float64)
    v0 = orthonormalize(torch.randn(300, 12, generator=gen, dtype=torch.float64))
    b = (u0 * s0) @ v0.T  # (12, 300), known singular vectors
    u = top_left_singular(b, 4)
    assert u.shape == (12, 4) and u.dtype == torch.float64
    assert torch.allclose((u.T @ u0[:, :4]).abs(), torch.eye(4, dtype=torch.float64), atol=1e-8)
    assert bool((torch.gather(u, 0, u.abs().argmax(dim=0, keepdim=True)) > 0).all())  # the sign rule
    assert torch.allclose(top_left_singular(-b, 4), u, atol=1e-10)  # a pure function of b's span
    batch = torch.stack([b, 2 * b]).float()
    ub = top_left_singular(batch, 4)
    assert ub.shape == (2, 12, 4) and ub.dtype == torch.float32
    assert torch.allclose(ub[0], u.float(), atol=1e-5) and torch.allclose(ub[1], u.float(), atol=1e-5)
    with pytest.raises(ValueError, match="b's rows"):
        top_left_singular(b, 13)


def test_init_q_seeded_and_orthonormal() -> None:
    a = init_q(20, 4, _gen(3))
    b = init_q(20, 4, _gen(3))
    assert torch.equal(a, b)
    assert a.shape == (20, 4)
    assert torch.allclose(a.T @ a, torch.eye(4), atol=1e-5)
    assert not torch.equal(a, init_q(20, 4, _gen(4)))


def test_power_iteration_shapes_and_projection() -> None:
    gen = _gen(5)
    g = torch.randn(24, 16, generator=gen)
    p, q_new = power_iteration(g, init_q(16, 3, gen))
    assert p.shape == (24, 3) and q_new.shape == (16, 3)
    assert torch.allclose(p.T @ p, torch.eye(3), atol=1e-5)
    assert torch.allclose(p @ q_new.T, p @ (p.T @ g), atol=1e-5)  # g ~= p q_new^T is the projection


def test_power_iteration_warm_start_tracks_stable_spectrum() -> None:
    """Theory check (2): on G_t = U diag(s) V^T + noise, warm-started PowerSGD reaches the SVD tail."""
    gen = _gen(6)
    m, n, rank = 96, 64, 4
    u, s, v = _stable_spectrum(m, n, 0.7, gen)
    base = ((u * s) @ v.T).float()
    q = init_q(n, rank, gen)
    ratios = []
    for _ in range(8):
        g = base + 0.01 * torch.randn(m, n, generator=gen)
        p, q = power_iteration(g, q)
        err = float((g - p @ q.T).double().square().sum())
        ratios.append(err / tail_energy(g, rank))
    assert ratios[0] > 1.05  # a random start is far from the top subspace...
    assert all(r <= 1.05 for r in ratios[4:]), ratios  # ...and within 5% of the optimum after a few steps


def test_power_iteration_more_iters_converge_from_cold_start() -> None:
    gen = _gen(7)
    u, s, v = _stable_spectrum(80, 60, 0.6, gen)
    g = ((u * s) @ v.T).float()
    p, q = power_iteration(g, init_q(60, 3, gen), iters=6)
    assert float((g - p @ q.T).double().square().sum()) <= 1.05 * tail_energy(g, 3)


def test_power_iteration_accepts_bf16() -> None:
    gen = _gen(8)
    g = torch.randn(16, 12, generator=gen).bfloat16()
    p, q = power_iteration(g, init_q(12, 2, gen))
    assert p.dtype == torch.float32 and torch.isfinite(q).all()


def test_spectral_tail_estimate() -> None:
    gen = _gen(9)
    g = torch.randn(40, 30, generator=gen, dtype=torch.float64)
    total = float(g.square().sum())
    u = torch.linalg.svd(g, full_matrices=False).U
    exact = tail_energy(g, 5) / total
    assert spectral_tail_estimate(g, u[:, :5]) == pytest.approx(exact, rel=1e-9)
    p, _ = power_iteration(g, init_q(30, 5, gen, dtype=torch.float64))
    est = spectral_tail_estimate(g, p)
    assert exact - 1e-12 <= est <= 1.0  # any other basis captures less energy
    assert spectral_tail_estimate(torch.zeros(5, 4), torch.eye(5)[:, :2]) == 0.0


def test_bad_inputs_name_the_argument() -> None:
    with pytest.raises(ValueError, match="2-D"):
        exact_lowrank(torch.randn(10), 2)
    with pytest.raises(TypeError, match="floating-point"):
        tail_energy(torch.ones(4, 4, dtype=torch.int64), 1)
    with pytest.raises(ValueError, match="rank"):
        exact_lowrank(torch.randn(4, 4), -1)
    with pytest.raises(ValueError, match="q has 5 rows"):
        power_iteration(torch.randn(4, 6), torch.randn(5, 2))
    with pytest.raises(ValueError, match="rank"):
        power_iteration(torch.randn(4, 6), torch.randn(6, 5))
    with pytest.raises(ValueError, match="iters"):
        power_iteration(torch.randn(4, 6), torch.randn(6, 2), iters=0)
    with pytest.raises(ValueError, match="rank"):
        init_q(5, 6)
    with pytest.raises(ValueError, match="p has"):
        spectral_tail_estimate(torch.randn(4, 6), torch.randn(5, 2))


def test_orthonormalize_batched_padded_rows_give_each_matrix_its_own_result() -> None:
    """The DDP hook pads a bucket's matrices to one row count and passes each one's rows: every result is the
    unpadded call's, with exactly zero padding, rank-deficient matrices included."""
    g = _gen(12)
    a = torch.randn(20, 4, generator=g, dtype=torch.float64)
    b = torch.zeros(12, 4, dtype=torch.float64)
    b[:, 0] = 1.0  # rank 1: the nudge completes it inside its own 12 rows
    pad = torch.zeros(2, 20, 4, dtype=torch.float64)
    pad[0], pad[1, :12] = a, b
    out = orthonormalize_batched(pad, rows=[20, 12])
    assert torch.allclose(out[0], orthonormalize_batched(a), atol=1e-12)
    assert torch.allclose(out[1, :12], orthonormalize_batched(b), atol=1e-12)
    assert bool((out[1, 12:] == 0).all())
    assert torch.allclose(out[1, :12].T @ out[1, :12], torch.eye(4, dtype=torch.float64), atol=1e-10)
    with pytest.raises(ValueError, match="row counts"):
        orthonormalize_batched(pad, rows=[20])
    with pytest.raises(ValueError, match="row counts"):
        orthonormalize_batched(pad, rows=[20, 3])


def test_upload_keeps_a_table_and_leaves_a_device_tensor_alone() -> None:
    """``transfer.upload``: a host table's values on the device asked for; a tensor already there unmoved."""
    t = torch.arange(7, dtype=torch.int64)
    assert torch.equal(upload(t, torch.device("cpu")), t)
    if torch.cuda.is_available():
        d = upload(t, torch.device("cuda"))
        assert d.is_cuda and torch.equal(d.cpu(), t) and upload(d, d.device) is d


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_uploads_and_singular_vectors_do_not_wait_on_the_way_back() -> None:
    """On a GPU a host table's upload and ``top_left_singular``'s return copy do not synchronize the stream
    (a copy from pageable memory does: the sync debug mode raises on it); only the Gram's trip to the host
    does, once."""
    b = torch.randn(3, 8, 64, device="cuda")
    g = (b.double() @ b.double().mT).cpu()  # the one wait, outside the checked region
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        d = upload(torch.arange(1000, dtype=torch.int64), torch.device("cuda"))
        with pytest.raises(RuntimeError):
            torch.arange(1000, dtype=torch.int64).to("cuda")  # the pageable copy this replaces
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.equal(d.cpu(), torch.arange(1000))
    u = top_left_singular(b, 4)
    ref = torch.linalg.eigh(g).eigenvectors.flip(-1)[..., :4]
    assert torch.allclose(u.double().abs().cpu(), ref.abs(), atol=1e-4)
