#!/bin/bash
# Session 31, issue 13: the first decision's r0/b4/g0 prior is r0/b8/g0's (commit 2bd4fb9), so a GPU job
# opens at r0/b4/g0 under time-, loss- and energy-first; the shipped policy's demos on gpt-85m under those
# presets (static r0/b8/g0 and r0/b4/g0, one seed), then memory-first (static r64/b4/g0 and r0/b4/g0), while
# CALL_LIMIT lasts (a demo starts with 100 s or more left; the first compiles and profiles). Carry .whl13s.
source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
for obj in time-first loss-first energy-first; do
  left=$(left_s)
  [ $left -ge ${DEMO_MIN:-100} ] && DEMO_TIMEOUT=$left SEEDS=1 demo_obj $obj-gpt85m $obj r0/b8/g0,r0/b4/g0
done
left=$(left_s)
[ $left -ge 100 ] && DEMO_TIMEOUT=$left SEEDS=1 demo_mf gpt85m r64/b4/g0,r0/b4/g0
finish
