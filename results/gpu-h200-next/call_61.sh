#!/bin/bash
# Prepared in session 30, not run yet (ask for an H200; ~540 s; carry .whl13s). 4 bits now default to a full v
# on the uniform code (commit 9789a4a): (1) `pytest -m gpu` and the fused tests compiled at those defaults
# (call 59 compiled them with NF4 as the default, the uniform 4-bit cases among them), (2) the paired
# convergence of 4-bit rounding to nearest against the default stochastic rounding, three seeds (call 59's two
# seeds, NF4: nearest 1.5-2.4 % lower; `--parts converge`, the table rewritten after every run), (3) the step
# rows of the whole bench grid (21 settings) beside fused AdamW, peers left out, while the call's time lasts.
source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
gpu_tests
converge 250 3 "AdamW (fused),r0/b4/g0,-torch-path,-g0.5,-unchecked,-factored,-no-EF,-nf4"
grid_step -torch-path,-unchecked,-stochastic,-no-EF,-factored,-nf4,-nearest
finish
