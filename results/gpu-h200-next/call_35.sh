#!/bin/bash
# Prepared in session 24, not run. Issue 13: the candidate s24L05 (s21L55's recipe with reference depth 0-0.5;
# results/policy-s24L05) in the GPU cells of the selection rule, on the windows where the shipped s21L55's
# first service decision fell to r0/b8/g0: balanced on the held-out gpt-wide-100m, seeds 2-3 (s21L55: J 0.645
# against static r0/b4/g0's 0.565, call 31), then memory-first on gpt-85m. ~500 s. Carry .whl13.
source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
C="--policy s24L05 --policy-dir results/policy-s24L05"
DEMO_TIMEOUT=250 demo_obj bal-wide100m-s24L05-s2 balanced r0/b4/g0,r0/b8/g0 --model gpt-wide-100m --seed 2 $C
left=$(( 585 - ($(date +%s)-t0) )); echo "left $left" >> $L
[ $left -gt 150 ] && DEMO_TIMEOUT=$left demo_mf gpt85m-s24L05 r64/b4/g0,r32/b4/g0 $C
finish
