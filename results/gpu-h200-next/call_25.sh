#!/bin/bash
# Prepared in session 22, not run (no device time left). Issue 13, the shipped s21L55 (the default since
# session 22): balanced on gpt-85m against static r0/b4/g0 (the setting it played in 29 of 30 intervals in
# call 22: is it the best static setting in hindsight, and does the adaptive run tie it?), energy-first on
# gpt-85m, balanced on lm-medium; then issue 12's projected rows (what memory-first plays) on this card.
# First the compile and kernel tests on the GPU (the core changed after call 23 ran them; the fused path
# under torch.compile is new). ~600 s on a fresh machine. Carry .whl13.
source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
# session 22: torch.compile of the step with the fused kernels (torch.compiler.disable on _fused_step), compiled
timeout 150 python3 -m pytest -q -n 8 -p no:cacheprovider tests/client/test_optimizer_compile.py tests/client/test_fused.py \
  tests/client/test_kernels.py tests/client/test_convert.py > $R/compile.log 2>&1
step compile-tests $?; tail -2 $R/compile.log >> $L
DEMO_TIMEOUT=240 demo_obj bal-gpt85m-r0b4 balanced r0/b4/g0
DEMO_TIMEOUT=150 demo_obj ef-gpt85m energy-first r0/b8/g0
left=$(( 580 - ($(date +%s)-t0) )); echo "left $left" >> $L
[ $left -gt 90 ] && DEMO_TIMEOUT=90 demo_obj bal-lmmed balanced r0/b8/g0 --model lm-medium --steps 600 --batch-size 32
left=$(( 580 - ($(date +%s)-t0) )); echo "left $left" >> $L
[ $left -gt 60 ] && timeout $left python3 -m mango_cli bench gpu --out $R/proj --parts step --energy-window-s 0.3 \
  --optimizers "torch AdamW,MangoAdamW r64/b4/g0,MangoAdamW r64/b8/g0,MangoAdamW r32/b4/g0,MangoAdamW r0/b4/g0,-torch-path" \
  > $R/proj.log 2>&1
step proj $?; cat $R/proj/*.md >> $L 2>/dev/null
finish
