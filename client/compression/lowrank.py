"""Low-rank projection of gradient matrices: the exact (SVD) reference and warm-started power iteration.

A gradient matrix ``G`` (m x n) is approximated by ``P @ Q.T`` with ``P`` (m x r, orthonormal columns) and
``Q = G.T @ P`` (n x r). Storing ``P`` and ``Q`` costs ``r (m + n)`` values instead of ``m n``.

* :func:`exact_lowrank` / :func:`tail_energy` are the Eckart-Young optimum and its error (seed Lemma 1:
  ``||G - P_r(G)||_F^2 = sum_{i > r} sigma_i^2``). They cost a full SVD, ``O(m n min(m, n))``: use them as
  test references and for occasional diagnostics, not every step.
* :func:`power_iteration` is the per-step path (PowerSGD, Vogels et al. 2019): one subspace-iteration step
  (orthogonalized by :func:`orthonormalize_batched`), ``O(m n r)``, warm-started from the previous step's
  ``Q``. On gradients whose dominant subspace drifts slowly it tracks the top-r subspace within a few steps.
* :func:`orthonormalize_batched` is the optimizer's orthogonalization (CholeskyQR2 on a stack of matrices):
  a few batched launches where a Householder QR of a stack loops over it in the solver, one matrix at a time.
* :func:`spectral_tail_estimate` is the cheap telemetry signal: the fraction of ``G``'s energy outside the
  current basis.

Every function computes in float32 (float64 if given float64) whatever the input dtype.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from client.compression.transfer import upload

__all__ = [
    "exact_lowrank",
    "init_q",
    "orthonormalize",
    "orthonormalize_batched",
    "power_iteration",
    "spectral_tail_estimate",
    "tail_energy",
    "top_left_singular",
]


def _work_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _check_matrix(g: torch.Tensor, name: str = "g") -> None:
    if not isinstance(g, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(g).__name__}")
    if not g.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {g.dtype}; cast it with .float()")
    if g.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D matrix, got shape {tuple(g.shape)}; view it as (shape[0], -1) first"
        )


def _check_rank(rank: int) -> None:
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 0:
        raise ValueError(f"rank must be a non-negative int, got {rank!r}")


def exact_lowrank(g: torch.Tensor, rank: int) -> torch.Tensor:
    """Best rank-``rank`` approximation of ``g`` in Frobenius norm (truncated SVD; Eckart-Young).

    :param g: matrix (m x n), any float dtype.
    :param rank: kept singular values, ``>= 0``; ``0`` gives zeros, ``>= min(m, n)`` gives ``g`` back.
    :return: ``U_r diag(s_r) V_r^T`` in ``g``'s dtype. Cost: one full SVD (a test reference, not a hot path).
    """
    _check_matrix(g)
    _check_rank(rank)
    if rank == 0:
        return torch.zeros_like(g)
    if rank >= min(g.shape):
        return g.clone()
    u, s, vh = torch.linalg.svd(g.to(_work_dtype(g)), full_matrices=False)
    return ((u[:, :rank] * s[:rank]) @ vh[:rank]).to(g.dtype)


def tail_energy(g: torch.Tensor, rank: int) -> float:
    """Squared Frobenius error of the best rank-``rank`` approximation: ``sum_{i > rank} sigma_i^2``.

    Equals ``||g - exact_lowrank(g, rank)||_F^2`` (seed Lemma 1). Divide by ``||g||_F^2`` for the fraction
    of energy a rank-``rank`` projection loses. Cost: singular values only (cheaper than a full SVD).
    """
    _check_matrix(g)
    _check_rank(rank)
    s = torch.linalg.svdvals(g.to(_work_dtype(g)))
    return float((s[rank:].double() ** 2).sum())


def orthonormalize(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal basis of the column space of ``x`` (m x r, ``m >= r``), deterministic in sign.

    Reduced Householder QR, then each column is flipped so that ``diag(R) >= 0``: the result is a pure
    function of ``x`` (no sign ambiguity between devices or runs). A rank-deficient ``x`` still gives
    orthonormal columns (Householder ``Q`` is always orthogonal). Returns float32 (float64 for float64 input).
    Cost: ``O(m r^2)``.
    """
    _check_matrix(x, "x")
    if x.shape[0] < x.shape[1]:
        raise ValueError(f"x has shape {tuple(x.shape)}: needs rows >= columns; use a rank <= {x.shape[0]}")
    q, r = torch.linalg.qr(x.to(_work_dtype(x)), mode="reduced")
    d = torch.diagonal(r)
    sign = torch.where(d < 0, -1.0, 1.0).to(q.dtype)
    return q * sign


#: The fixed random nudge of :func:`orthonormalize_batched`, relative to the largest column norm.
ORTH_NUDGE = 1e-6
_NUDGES: dict[tuple[int, int, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}
_PADDED: dict[tuple[tuple[int, ...], int, int, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}


def _nudge(m: int, r: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed ``(m, r)`` float64 nudge directions (Gaussian, unit columns, the same on every process and
    call) and their orthonormal basis, cached per shape and device (made on first use, outside any CUDA graph
    capture: the refresh captures its tail at a plan's second refresh)."""
    key = (m, r, device)
    if key not in _NUDGES:
        om = torch.randn(m, r, generator=torch.Generator().manual_seed(0x6D616E67), dtype=torch.float64)
        om /= om.norm(dim=0)
        _NUDGES[key] = (om.to(device), torch.linalg.qr(om).Q.to(device))
    return _NUDGES[key]


def _padded_nudges(rows: tuple[int, ...], m: int, r: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """:func:`_nudge` of each matrix's own row count, zero-padded to ``m`` rows and stacked, cached."""
    key = (rows, m, r, device)
    if key not in _PADDED:
        om = torch.zeros(len(rows), m, r, dtype=torch.float64, device=device)
        fb = torch.zeros_like(om)
        for i, mi in enumerate(rows):
            om[i, :mi], fb[i, :mi] = _nudge(mi, r, device)
        _PADDED[key] = (om, fb)
    return _PADDED[key]


def orthonormalize_batched(x: torch.Tensor, rows: Sequence[int] | None = None) -> torch.Tensor:
    """Orthonormal columns spanning each matrix of ``x`` (``(..., m, r)``, ``m >= r``): CholeskyQR2, float64.

    ``R^T R = x^T x`` (Cholesky of the ``r x r`` Gram matrix), ``q = x R^{-1}``, done twice (the second pass
    restores orthogonality to rounding). The result is the QR factor with ``diag(R) > 0``, i.e.
    :func:`orthonormalize`'s, up to rounding, from a few batched launches (a Gram ``bmm``, a batched Cholesky,
    a batched triangular solve) with no host synchronization: a stack's Householder QR runs matrix by matrix
    in the solver on a GPU.

    Rank-deficient input (a gradient or moment with zero rows, such as a position embedding beyond the
    sequence length, or fewer independent rows than ``r``): a fixed random nudge of :data:`ORTH_NUDGE` times
    the largest column norm completes the span with generic directions, so the Gram matrix stays well
    conditioned (a nudge on the leading diagonal does not when ``x``'s rows are the leading ones: its
    Cholesky failed on an H200 and the basis came back NaN). Directions of ``x`` above the nudge keep their
    span to ~``ORTH_NUDGE`` relative. A matrix whose factorization still fails (no host sync to see it: a
    device-side ``where``) gets the nudge's own orthonormal basis, never NaN; a zero matrix gets that basis
    too. Returns float32 (float64 for float64 input), ``x``'s shape.

    :param rows: for a stack of matrices zero-padded to a common row count, each matrix's own rows (one per
        matrix of the flattened batch, each ``>= r``): the nudge and the fallback stay in them, so each result
        is that of the unpadded matrix, padded with zero rows.
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim < 2:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise TypeError(f"x must be a floating-point tensor of shape (..., m, r), got {got}")
    m, r = x.shape[-2:]
    if m < r:
        raise ValueError(f"x has shape {tuple(x.shape)}: needs rows >= columns; use a rank <= {m}")
    y = x.reshape(-1, m, r).to(torch.float64)
    if rows is None:
        om, fallback = _nudge(m, r, x.device)
    else:
        if len(rows) != y.shape[0] or not all(r <= int(k) <= m for k in rows):
            raise ValueError(f"rows must give {y.shape[0]} row counts in [{r}, {m}], got {list(rows)}")
        om, fallback = _padded_nudges(tuple(int(k) for k in rows), m, r, x.device)
    # Few ops on purpose: each is a launch on a GPU, and a setting change calls this per shape group
    # (`python -m benchmarks.switch_cpu` counts them).
    scale = torch.linalg.vector_norm(y, dim=-2).amax(dim=-1)  # (B,) the largest column norm
    y = torch.addcmul(y, scale[:, None, None], om, value=ORTH_NUDGE)  # a zero matrix stays zero: fails below
    infos = []
    for _ in range(2):
        chol, info = torch.linalg.cholesky_ex(y.mT @ y)  # (B, r, r); no host sync on a failure
        infos.append(info)
        y = torch.linalg.solve_triangular(chol, y.mT, upper=False).mT  # y L^{-T}
    # failed: either factorization (info > 0) or a non-finite result (s - s is NaN for inf and NaN)
    s = y.sum(dim=(-2, -1))
    failed = (s - s).add_(infos[0]).add_(infos[1]).ne(0)
    y = torch.where(failed[:, None, None], fallback, y)
    return y.to(_work_dtype(x)).reshape(x.shape)


def init_q(
    n: int,
    rank: int,
    generator: torch.Generator | None = None,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    orthonormal: bool = True,
) -> torch.Tensor:
    """Seeded random start for :func:`power_iteration`: an orthonormalized Gaussian ``n x rank`` matrix.

    :param n: number of columns of the gradient matrix (rows of ``q``).
    :param rank: subspace dimension, ``1 <= rank <= n``.
    :param generator: source of randomness (its device is used to draw; the result moves to ``device``).
    :param device: where the result lives (default: the generator's device, else CPU).
    :param orthonormal: ``False`` skips the orthonormalization (the same draws): a subspace iteration
        orthonormalizes ``g @ q`` next anyway, to the same basis up to rounding (``q``'s triangular factor
        has a positive diagonal), and on a GPU each QR is several solver launches.
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int (the gradient's column count), got {n!r}")
    if not isinstance(rank, int) or isinstance(rank, bool) or not 1 <= rank <= n:
        raise ValueError(f"rank must be an int in [1, n={n}], got {rank!r}")
    draw_device = generator.device if generator is not None else torch.device("cpu")
    q = torch.randn(n, rank, generator=generator, device=draw_device, dtype=torch.float32)
    q = (orthonormalize(q) if orthonormal else q).to(dtype)
    return q.to(device) if device is not None else q


def top_left_singular(b: torch.Tensor, r: int) -> torch.Tensor:
    """The top ``r`` left singular vectors of each matrix of ``b`` (``(..., k, n)``, ``1 <= r <= k``).

    From the eigenvectors of the small Gram matrix ``b b^T`` (``k x k``, float64), decomposed on the CPU:
    ``b`` is short and wide here (a randomized SVD's projected matrix, a first moment's ``r x n``
    coefficients), and on a GPU a batched SVD runs matrix by matrix in the solver. One host transfer of
    ``k x k`` values per call (one wait for the device; the result goes back without one). Signs are fixed
    (each vector's largest entry positive), so the result is a pure function of ``b``. Returns
    ``(..., k, r)`` in ``b``'s device, float32 (float64 for float64 input).
    """
    if not isinstance(b, torch.Tensor) or not b.is_floating_point() or b.ndim < 2:
        got = tuple(b.shape) if isinstance(b, torch.Tensor) else type(b).__name__
        raise TypeError(f"b must be a floating-point tensor of shape (..., k, n), got {got}")
    if not isinstance(r, int) or isinstance(r, bool) or not 1 <= r <= b.shape[-2]:
        raise ValueError(f"r must be an int in [1, {b.shape[-2]}] (b's rows), got {r!r}")
    bd = b.to(torch.float64)
    _, vecs = torch.linalg.eigh((bd @ bd.mT).cpu())  # ascending eigenvalues
    u = vecs.flip(-1)[..., :r]
    top = torch.gather(u, -2, u.abs().argmax(dim=-2, keepdim=True))  # (..., 1, r) each vector's largest
    u = (u * torch.where(top < 0, -1.0, 1.0)).to(_work_dtype(b))
    return upload(u, b.device)  # back without waiting (client.compression.transfer)


def power_iteration(g: torch.Tensor, q: torch.Tensor, iters: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Warm-started subspace iteration (PowerSGD): ``p = orth(g @ q)``, ``q_new = g.T @ p``.

    :param g: gradient matrix (m x n), any float dtype (computed in float32).
    :param q: n x r start, the previous call's ``q_new`` (or :func:`init_q` for the first call);
        ``r <= min(m, n)``.
    :param iters: subspace-iteration steps per call, ``>= 1``. One step per optimizer step is the PowerSGD
        choice: the warm start carries the iteration across steps. More steps converge faster on a changing
        spectrum at ``O(m n r)`` each.
    :return: ``(p, q_new)``: ``p`` (m x r, orthonormal columns) and ``q_new`` (n x r), so that
        ``g ~= p @ q_new.T`` (exactly the projection ``p p^T g``).
    """
    _check_matrix(g)
    _check_matrix(q, "q")
    m, n = g.shape
    if q.shape[0] != n:
        raise ValueError(f"q has {q.shape[0]} rows but g has {n} columns; q must be (g.shape[1], rank)")
    if q.shape[1] > min(m, n) or q.shape[1] < 1:
        raise ValueError(f"q has rank {q.shape[1]}: needs 1 <= rank <= min(g.shape) = {min(m, n)}")
    if not isinstance(iters, int) or iters < 1:
        raise ValueError(f"iters must be an int >= 1, got {iters!r}")
    wd = _work_dtype(g)
    gw = g.to(wd)
    q_new = q.to(device=g.device, dtype=wd)
    p = q_new  # overwritten below (iters >= 1)
    for _ in range(iters):
        p = orthonormalize_batched(gw @ q_new)  # (m, r)
        q_new = gw.T @ p  # (n, r)
    return p, q_new


def spectral_tail_estimate(g: torch.Tensor, p: torch.Tensor) -> float:
    """Fraction of ``g``'s energy outside the span of ``p``: ``1 - ||p^T g||_F^2 / ||g||_F^2``, in [0, 1].

    ``p`` (m x r) must have orthonormal columns (as :func:`power_iteration` returns). With the exact top-r
    singular vectors this is ``tail_energy(g, r) / ||g||_F^2``; with a tracked basis it is an upper estimate.
    A zero ``g`` gives 0. Cost: ``O(m n r)`` and one device sync.
    """
    _check_matrix(g)
    _check_matrix(p, "p")
    if p.shape[0] != g.shape[0]:
        raise ValueError(f"p has {p.shape[0]} rows but g has {g.shape[0]}; p must be (g.shape[0], rank)")
    wd = _work_dtype(g)
    gw = g.to(wd)
    total = float(gw.square().sum())
    if total == 0.0:
        return 0.0
    inside = float((p.to(device=g.device, dtype=wd).T @ gw).square().sum())
    return min(max(1.0 - inside / total, 0.0), 1.0)
