"""(Ran in GPU call 2 on commit 7eec18d, where the step kernel used the search form.) `mango bench gpu` with the step kernel's stochastic NF4 by the fifteen-threshold count (the form before
session 5's search), for the same-run comparison: python3 results/gpu-h200-2026-12-03-s5/nf4_count.py <args>."""

import sys

from client.compression.kernels import triton_quant as tq
from client.compression.kernels import triton_step as ts

ts._nf4_dithered = tq._nf4_dithered_count  # resolved when the step kernel first compiles in this process

import mango_cli  # noqa: E402

sys.exit(mango_cli.main(sys.argv[1:]))
