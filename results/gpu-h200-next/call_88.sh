#!/bin/bash
# Session 40, the last call (carry .whl13p; CALL_LIMIT ~400). Issue 13 on the GPU at today's core (8 bits at
# the 512 tile): the default policy s35a under time-first on gpt-85m (the demo's GPU default; session 37 ran
# balanced, loss-first and memory-first, not time-first), static r0/b8/g0 and r0/b4/g0 beside it, one seed;
# then balanced on lm-medium in what is left.
WHL=.whl13p source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
left=$(left_s)
[ $left -ge 120 ] && DEMO_TIMEOUT=$left SEEDS=1 demo_obj tf-gpt85m time-first "r0/b8/g0,r0/b4/g0"
left=$(left_s)
[ $left -ge 100 ] && DEMO_TIMEOUT=$left SEEDS=1 demo_obj bal-lmm balanced "r0/b8/g0,r0/b4/g0" --model lm-medium
finish
