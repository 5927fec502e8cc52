"""Session 26 GPU probe (issue 12): where do fused.NF4_SEARCH "cells" codes differ from "compare" compiled?

Runs the step kernel's NF4 encoders on a dense grid of y in [-1, 1] (every 2^-22 plus each midpoint and level
+/- 3 ulps) and on random dithers, and prints the mismatch counts and the first few mismatching values for:
cells (as shipped), cells with the cell index subtracted before the gather (pointer hypothesis), and cells
with tl.where masks instead of the inline-asm set (mask hypothesis). `python results/gpu-h200-next/nf4_probe.py`
"""

import torch
import triton
import triton.language as tl

from client.compression.kernels import _nf4_table
from client.compression.kernels import triton_step as ts
from client.compression.kernels.triton_quant import _nf4_dithered, _nf4_nearest_tree


@triton.jit
def _probe(y_ptr, u_ptr, tab_ptr, out_ptr, n, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = i < n
    y = tl.load(y_ptr + i, mask=m, other=0.0)
    u = tl.load(u_ptr + i, mask=m, other=0.0)
    ref_n = _nf4_nearest_tree(y)
    cel_n = ts._nf4_nearest(y, tab_ptr)
    z = tl.fma(y, ts.NF4_CELL_SCALE, ts.NF4_CELL_SHIFT + ts.MAGIC)
    cell = tl.minimum(z.to(tl.int32, bitcast=True) - ts.MAGIC_BITS, ts.NF4_CELL_TOP)
    nxt, base = ts._nf4_pair(tab_ptr.to(tl.pointer_type(tl.int64)) + ts.NF4_MID_CELLS, cell)
    sub_n = base - ts._gt_mask(y, nxt)
    whr_n = base + tl.where(y > nxt, 1, 0)
    ref_s = _nf4_dithered(y, u)
    cel_s, _ = ts._nf4_stochastic(y, u, tab_ptr)
    tl.store(out_ptr + i * 8 + 0, ref_n, mask=m)
    tl.store(out_ptr + i * 8 + 1, cel_n, mask=m)
    tl.store(out_ptr + i * 8 + 2, sub_n, mask=m)
    tl.store(out_ptr + i * 8 + 3, whr_n, mask=m)
    tl.store(out_ptr + i * 8 + 4, ref_s, mask=m)
    tl.store(out_ptr + i * 8 + 5, cel_s, mask=m)
    tl.store(out_ptr + i * 8 + 6, cell, mask=m)
    tl.store(out_ptr + i * 8 + 7, base, mask=m)


def main() -> None:
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    grid = torch.linspace(-1.0, 1.0, (1 << 22) + 1)
    tab = _nf4_table(dev)
    pts = torch.cat([tab[:16], tab[16:31]]).cpu()
    near = [torch.nextafter(pts, torch.full_like(pts, d * 2.0)) for d in (-1, 1)]
    y = torch.cat([grid, pts, *near, near[0] - 1e-7, near[1] + 1e-7]).clamp(-1, 1).to(torch.float32)
    g = torch.Generator().manual_seed(0)
    u = torch.rand(y.numel(), generator=g)
    y, u = y.to(dev), u.to(dev)
    out = torch.zeros(y.numel() * 8, dtype=torch.int32, device=dev)
    _probe[(triton.cdiv(y.numel(), 1024),)](y, u, tab, out, y.numel(), BLOCK=1024)
    out = out.view(-1, 8).cpu()
    yc, uc = y.cpu(), u.cpu()
    names = ["cells (shipped)", "cells, index subtracted", "cells, where-mask"]
    for k, name in enumerate(names, start=1):
        bad = (out[:, k] != out[:, 0]).nonzero().flatten()
        print(f"nearest  {name:26s} mismatches {bad.numel():8d} of {y.numel()}")
        for j in bad[:6].tolist():
            print(f"   y={yc[j].item():.9g} ref={out[j, 0].item()} got={out[j, k].item()} cell={out[j, 6].item()} base={out[j, 7].item()}")
    bad = (out[:, 5] != out[:, 4]).nonzero().flatten()
    print(f"stochastic cells (shipped)          mismatches {bad.numel():8d} of {y.numel()}")
    for j in bad[:6].tolist():
        print(f"   y={yc[j].item():.9g} u={uc[j].item():.6g} ref={out[j, 4].item()} got={out[j, 5].item()}")


if __name__ == "__main__":
    main()
