#!/bin/bash
# Session 22: torch.compile of the step on torch 2.11 (the _Progress/_Knobs fix), then issue 13's same-card
# baseline: the shipped s20j52 under balanced on gpt-85m (s21L55 measured 0.486 in call 23 on this H200), and
# s21L55 under loss-first and time-first (static r0/b8/g0). ~560 s. Carry .whl13.
source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
timeout 90 python3 -m pytest -q -p no:cacheprovider tests/client/test_optimizer_compile.py > $R/compile.log 2>&1
step compile-tests $?; tail -2 $R/compile.log >> $L
DEMO_TIMEOUT=240 demo_obj bal-gpt85m-s20j52 balanced r64/b4/g0
P="--policy s21L55 --policy-dir results/policy-s21L55"
DEMO_TIMEOUT=170 demo_obj lf-gpt85m-s21L55 loss-first r0/b8/g0 $P
left=$(( 560 - ($(date +%s)-t0) )); echo "left $left" >> $L
[ $left -gt 100 ] && DEMO_TIMEOUT=$left demo_obj tf-gpt85m-s21L55 time-first r0/b8/g0 $P
finish
