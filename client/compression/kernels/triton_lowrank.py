"""Triton kernel for the skinny products of the low-rank refresh: ``G @ Q`` and ``G^T @ P`` with r <= 64.

cuBLAS handles an ``(m x n) @ (n x r)`` product with ``r`` of 1-64 at a fraction of the copy bandwidth (the
refresh of a 4096^2 gradient at rank 4 reads 128 MB in ~0.15 ms on an H200, ~0.85 TB/s; BENCHMARKS.md). The
products are memory-bound (2 r flops per 4-byte value), so the kernel only has to stream ``G`` once:

* a program owns ``BM`` rows of the output and a ``K / SPLIT`` slice of the shared dimension, loads
  ``[BM, BK]`` tiles of ``A`` (any strides: ``G`` or its transposed view, so ``G^T @ P`` needs no copy) and
  ``[BK, RP]`` tiles of ``B`` (``RP`` = r rounded up to a power of two, at least 16, zero-padded), and
  accumulates with ``tl.dot`` at IEEE float32 precision (what ``torch.matmul`` computes with TF32 off);
* ``SPLIT`` programs share a row block when there are too few row blocks to fill the GPU; each writes its
  partial ``[BM, r]`` sum to its own slice and the host adds the slices (a fixed order: deterministic, no
  atomics).
"""

from __future__ import annotations

import triton
import triton.language as tl

__all__ = ["skinny_mm_kernel"]


@triton.jit
def skinny_mm_kernel(
    a_ptr,  # float32 A (M x K), strides (sam, sak)
    b_ptr,  # float32 B (K x R), strides (sbk, sbr)
    c_ptr,  # float32 out: SPLIT partial products, (SPLIT, M, R) contiguous
    M,
    K,
    R,
    sam,
    sak,
    sbk,
    sbr,
    k_per,  # shared-dimension values per split (a multiple of BK)
    BM: tl.constexpr,
    BK: tl.constexpr,
    RP: tl.constexpr,
):
    """``C[split] = A[rows, kslice] @ B[kslice, :]`` for one block of ``BM`` rows and one ``k`` slice."""
    pid_m = tl.program_id(0)
    pid_k = tl.program_id(1)
    rm = pid_m * BM + tl.arange(0, BM)
    rr = tl.arange(0, RP)
    k0 = pid_k * k_per
    k_end = tl.minimum(k0 + k_per, K)
    acc = tl.zeros([BM, RP], dtype=tl.float32)
    for k in range(k0, k_end, BK):
        rk = k + tl.arange(0, BK)
        a = tl.load(
            a_ptr + rm[:, None].to(tl.int64) * sam + rk[None, :].to(tl.int64) * sak,
            mask=(rm[:, None] < M) & (rk[None, :] < k_end),
            other=0.0,
        )
        b = tl.load(
            b_ptr + rk[:, None] * sbk + rr[None, :] * sbr,
            mask=(rk[:, None] < k_end) & (rr[None, :] < R),
            other=0.0,
        )
        acc += tl.dot(a, b, input_precision="ieee")
    out = c_ptr + pid_k.to(tl.int64) * M * R + rm[:, None] * R + rr[None, :]
    tl.store(out, acc, mask=(rm[:, None] < M) & (rr[None, :] < R))
