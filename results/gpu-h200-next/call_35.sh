#!/bin/bash
# Prepared in session 24, not run. Issue 13: the candidates s24L47 (s21L55's recipe, seed 47) and s24L05 (seed
# 46, reference depth 0-0.5), whose first service decision is not a coin flip on the recorded GPU windows, on
# the held-out gpt-wide-100m's seeds 2-3, where the shipped s21L55 stayed at r0/b8/g0 and lost to static
# r0/b4/g0 (J 0.645 vs 0.565, call 31). Then memory-first on gpt-85m for s24L47 if time is left. ~580 s.
# Carry .whl13. Pool with `mango verdict`; the selection rule's GPU cells are balanced and memory-first.
source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
DEMO_TIMEOUT=250 demo_obj bal-wide100m-s24L47-s2 balanced r0/b4/g0 --model gpt-wide-100m --seed 2 --policy s24L47 --policy-dir results/policy-s24L47
DEMO_TIMEOUT=170 demo_obj bal-wide100m-s24L05-s2 balanced r0/b4/g0 --model gpt-wide-100m --seed 2 --policy s24L05 --policy-dir results/policy-s24L05
left=$(( 585 - ($(date +%s)-t0) )); echo "left $left" >> $L
[ $left -gt 150 ] && DEMO_TIMEOUT=$left demo_mf gpt85m-s24L47 r64/b4/g0 --policy s24L47 --policy-dir results/policy-s24L47
finish
