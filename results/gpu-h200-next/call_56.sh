#!/bin/bash
# Session 30 (ask for an H200): 4 bits' second moment is full by default (factored at 2-3 bits only) and its
# matrix kernel issues its loads early at cap 128 (fused.EARLY_LOADS[(4, False)]). (1) `pytest -m gpu` and the
# fused tests compiled at the new defaults, (2) the step rows: the new r0/b4/g0 beside the factored one (with
# and without the error buffer) and the projected 4-bit rows, (3) the variants of the 4-bit rows (early loads
# and their caps, factored against full, rank 0 / 8 / 32, gamma 1), (4) the 1B rows of r0/b8 and the new
# r0/b4, (5) the demo on the 85M GPT under time-first, one seed, statics r0/b8/g0 and r0/b4/g0. ~520 s.
# Carry .whl13s.
source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
gpu_tests
timeout 110 python3 -m mango_cli bench gpu --out $R/step --parts step --energy-window-s 2.0 \
  --optimizers "AdamW (fused),r0/b8/g0,r0/b4/g0,r8/b4/g0,r32/b4/g0,-torch-path,-g0.5,-unchecked,-stochastic" > $R/step.log 2>&1
step step $?; cat $R/step/*.md >> $L 2>/dev/null
timeout 90 python3 -m mango_cli bench gpu --out $R/var --parts variants --optimizers "r0/b4/g,r8/b4/g0,r32/b4/g0" > $R/var.log 2>&1
step variants $?; cat $R/var/*.md >> $L 2>/dev/null
timeout 110 python3 -m mango_cli bench gpu --out $R/step1b --model 1b --parts step --energy-window-s 1.0 \
  --optimizers "AdamW (fused),r0/b8/g0,r0/b4/g0,-torch-path,-g0.5,-unchecked,-stochastic,-no-EF,-factored" > $R/step1b.log 2>&1
step step1b $?; cat $R/step1b/*.md >> $L 2>/dev/null
left=$(( ${CALL_LIMIT:-520} - ($(date +%s)-t0) - 10 )); echo "left $left" >> $L
[ $left -ge 100 ] && DEMO_TIMEOUT=$left SEEDS=1 demo_obj time-first-gpt85m time-first r0/b8/g0,r0/b4/g0
finish
