#!/bin/bash
# Session 26, the session's last call: (1) issue 12's NF4 probe (results/gpu-h200-next/nf4_probe.py: where the
# "cells" search differs from "compare" compiled; call 36's compiled test found them unequal), (2) `pytest -m
# gpu tests` (after sessions 25-26's core changes, the CPU rank-0 batch's torch quantizer among them), (3)
# call_39's s24L47 on the held-out gpt-wide-100m seeds 2-3 under balanced if time is left (CALL_LIMIT s in
# all, default 330). Carry .whl13 (or WHL=.whl13s, the wheels without bitsandbytes, to fit the carry limit).
source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
timeout 60 python3 results/gpu-h200-next/nf4_probe.py > $R/nf4_probe.log 2>&1
step nf4-probe $?; cat $R/nf4_probe.log >> $L
# session 26: the search test now runs with a full v (the factored v's column sums are atomics on a GPU)
timeout 60 python3 -m pytest -q -n 8 -p no:cacheprovider tests/client/test_fused.py tests/client/test_nf4_search.py \
  -k "nf4 or matches_torch" > $R/nf4-tests.log 2>&1
step nf4-tests $?; tail -3 $R/nf4-tests.log >> $L
timeout 100 python3 -m pytest -q -n 8 -p no:cacheprovider -m gpu tests > $R/gpu-tests.log 2>&1
step gpu-tests $?; tail -6 $R/gpu-tests.log >> $L
left=$(( ${CALL_LIMIT:-330} - ($(date +%s)-t0) )); echo "left $left" >> $L
P="--policy s24L47 --policy-dir results/policy-s24L47"
[ $left -gt 150 ] && DEMO_TIMEOUT=$left demo_obj bal-wide100m-s24L47-s2 balanced r0/b4/g0 --model gpt-wide-100m --seed 2 $P
finish
