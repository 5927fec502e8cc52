#!/bin/bash
# Prepared in sessions 24-25, not run (after call_35). Issue 13: the candidate s24L47 (s21L55's recipe, seed 47) on the cells
# where `mango bench replay` (session 25, BENCHMARKS) says it would play differently from the shipped s21L55:
# the held-out gpt-wide-100m's seeds 2-3 and gpt-85m's seed 0 under balanced (s21L55 kept r0/b8/g0 there; the
# candidate answers r0/b4/g0 at the first window), then memory-first on gpt-85m (r64/b4/g0 from the start,
# where s21L55 spent 8 intervals at r64/b3/g0). s24L05 answers every replayed window as s24L47 does, so it is
# not run. On every other recorded cell the candidate's run is the recorded one. ~580 s. Carry .whl13.
# Pool with `mango verdict`; replay the new runs with `mango bench replay DIR --policy ...` as a check.
source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
P="--policy s24L47 --policy-dir results/policy-s24L47"
DEMO_TIMEOUT=270 demo_obj bal-wide100m-s24L47-s2 balanced "r0/b4/g0,r0/b8/g0:1>r0/b4/g0" --model gpt-wide-100m --seed 2 $P
DEMO_TIMEOUT=170 demo_obj bal-gpt85m-s24L47-s0 balanced r0/b4/g0 --seed 0 $P
left=$(( 585 - ($(date +%s)-t0) )); echo "left $left" >> $L
[ $left -gt 150 ] && DEMO_TIMEOUT=$left demo_mf gpt85m-s24L47 r64/b4/g0 $P
finish
