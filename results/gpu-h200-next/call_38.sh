#!/bin/bash
# Session 26 (call_35 trimmed to fit the session's device time). Issue 13's balanced goal cell with enough
# seeds to see a 10 % margin: the candidate s24L47 on gpt-85m, 7 new seeds (4-10), against static r0/b4/g0 (the
# best static setting measured there), then seed 0 (where `mango bench replay` says s24L47 answers r0/b4/g0 at
# the first window and s21L55 kept r0/b8/g0). The schedule r0/b8/g0:1>r0/b4/g0 of call_35 is left out: where
# the policy plays it, the adaptive run is that schedule's run and the demo says "trained alike".
# ~450 s (8 seeds x 3 runs x ~18 s). Carry .whl13.
source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
P="--policy s24L47 --policy-dir results/policy-s24L47"
SEEDS=7 DEMO_TIMEOUT=470 demo_obj bal-gpt85m-s24L47-7s balanced r0/b4/g0 --seed 4 $P
left=$(( 580 - ($(date +%s)-t0) )); echo "left $left" >> $L
[ $left -gt 60 ] && SEEDS=1 DEMO_TIMEOUT=$left demo_obj bal-gpt85m-s24L47-s0 balanced r0/b4/g0 --seed 0 $P
finish
