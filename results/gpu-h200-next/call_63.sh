#!/bin/bash
# Session 31, issue 12 (right after call 62, same machine): the paired convergence of 4-bit rounding to nearest
# against the default stochastic rounding at the uniform full-v default, three seeds (`--parts converge`, the
# table rewritten after every run), then the step rows of the whole bench grid beside fused AdamW, peers left
# out, in what is left of CALL_LIMIT. Carry .whl13s.
source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
converge 240 3 "AdamW (fused),r0/b4/g0,-torch-path,-g0.5,-unchecked,-factored,-no-EF,-nf4"
grid_step -torch-path,-unchecked,-stochastic,-no-EF,-factored,-nf4,-nearest
finish
