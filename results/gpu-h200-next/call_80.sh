#!/bin/bash
# Session 37 (carry .whl13s; CALL_LIMIT <= 560). Issue 13: does the room `mango bench headroom` finds in the
# surrogate on gpt-85m exist on the GPU? Today's surrogate (`mango bench headroom --workloads
# gpu-gpt85m-val-linear --hardware h100-gpt85m --depth 0.31 0.31 --episodes 16`) puts the best open-loop
# schedule 15.4 % above the best static setting under loss-first (r0/b8/g0 for the first half, r0/b4/g0
# after) and 8.4 % under memory-first (rank 64 at 4 bits with gamma 0.5 -> 0.25 -> 0, then 3 bits); under
# balanced, energy- and time-first under 1 %. The demo runs 30 intervals (600 steps of 20), the surrogate 12,
# so the schedules are stretched by 2.5. One seed each, the default policy s35a beside them.
source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
left=$(left_s)
[ $left -ge 120 ] && DEMO_TIMEOUT=$left SEEDS=1 demo_obj lf-sched loss-first "r0/b8/g0:15>r0/b4/g0,r0/b4/g0"
left=$(left_s)
[ $left -ge 120 ] && DEMO_TIMEOUT=$left SEEDS=1 demo_mf sched \
  "r64/b4/g0.5:8>r64/b4/g0.25:7>r64/b4/g0:10>r64/b3/g0,r64/b4/g0.25"
finish
