#!/bin/bash
# Session 24. Issue 12: the r0/b8/g0 step's variants of this session (VARIANTS rows filtered by --optimizers)
# timed beside the defaults, and the fused tests compiled. Issue 13: the held-out job gpt-wide-100m again,
# balanced seeds 2-3 (pool with call 30's seeds 0-1 by `mango verdict`), then memory-first if time is left.
# ~580 s on a fresh machine. Carry .whl13.
source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
timeout 150 python3 -m mango_cli bench gpu --out $R/var --parts variants --optimizers "r0/b8/g" > $R/var.log 2>&1
step variants $?; cat $R/var/*.md >> $L 2>/dev/null
timeout 90 python3 -m pytest -q -n 8 -p no:cacheprovider tests/client/test_draws.py tests/client/test_fused.py > $R/fused.log 2>&1
step fused-tests $?; tail -2 $R/fused.log >> $L
DEMO_TIMEOUT=200 demo_obj bal-wide100m-hind-s2 balanced r0/b4/g0,r0/b8/g0 --model gpt-wide-100m --seed 2
left=$(( 585 - ($(date +%s)-t0) )); echo "left $left" >> $L
[ $left -gt 150 ] && DEMO_TIMEOUT=$left demo_mf wide100m-hind r64/b4/g0,r0/b4/g0 --model gpt-wide-100m
finish
