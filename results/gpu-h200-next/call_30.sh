#!/bin/bash
# Prepared in session 23, not run (no device time left). Issue 13 against the best of several static settings
# in one demo (`--static-setting A,B`, new in session 23):
#  1. a held-out GPU job: gpt-wide-100m (8 x 1024, 101 M parameters; in no trace, workload or training
#     split), balanced, statics r0/b4/g0 and r0/b8/g0;
#  2. loss-first on gpt-85m, statics r0/b8/g0, r0/b32/g0, r0/b4/g0 (the goal: within 1 % of AdamW's loss);
#  3. time-first on gpt-85m, statics r0/b8/g0 and r0/b32/g0, if time is left.
# Pool seeds of later calls with `mango verdict A B` (run them with --seed 2). ~560 s on a fresh machine
# (call 26's first demo compiled for ~80 s: keep the first demo's limit high). Carry .whl13.
source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
DEMO_TIMEOUT=250 demo_obj bal-wide100m-hind balanced r0/b4/g0,r0/b8/g0 --model gpt-wide-100m
DEMO_TIMEOUT=200 demo_obj lf-gpt85m-hind loss-first r0/b8/g0,r0/b32/g0,r0/b4/g0
left=$(( 580 - ($(date +%s)-t0) )); echo "left $left" >> $L
[ $left -gt 140 ] && DEMO_TIMEOUT=$left demo_obj tf-gpt85m-hind time-first r0/b8/g0,r0/b32/g0
finish
