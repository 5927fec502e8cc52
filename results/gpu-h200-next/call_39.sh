#!/bin/bash
# Session 26 (call_37 trimmed). Issue 13: s24L47 on the held-out gpt-wide-100m's seeds 2-3 under balanced,
# where s21L55 kept r0/b8/g0 and lost to static r0/b4/g0 by 0.079 J (call 31) and where `mango bench replay`
# says s24L47 answers r0/b4/g0 at the first window; then memory-first on gpt-85m if time is left (replay:
# r64/b4/g0 from the start). ~320 s. Carry .whl13.
source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
P="--policy s24L47 --policy-dir results/policy-s24L47"
DEMO_TIMEOUT=220 demo_obj bal-wide100m-s24L47-s2 balanced r0/b4/g0 --model gpt-wide-100m --seed 2 $P
left=$(( ${CALL_LIMIT:-400} - ($(date +%s)-t0) )); echo "left $left" >> $L
[ $left -gt 120 ] && DEMO_TIMEOUT=$left demo_mf gpt85m-s24L47 r64/b4/g0 $P
finish
