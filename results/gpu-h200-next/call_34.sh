#!/bin/bash
# Prepared in session 24, not run. Issue 12 on an H200 (session 24's calls got H100s after the H200's call
# failed to compile): the r0/b8 step after the instruction cuts (158 a value, from 198) and the byte draws,
# whether they move the H200's 0.93x (session 22), with the step rows' energy. Issue 13: the held-out
# gpt-wide-100m under energy-first and time-first (the floor against r0/b8/g0). ~450 s. Carry .whl13.
source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
timeout 150 python3 -m mango_cli bench gpu --out $R/var --parts variants --optimizers "r0/b8/g" > $R/var.log 2>&1
step variants $?; cat $R/var/*.md >> $L 2>/dev/null
timeout 100 python3 -m mango_cli bench gpu --out $R/step --parts step --optimizers "AdamW (fused),r0/b8/g0,r0/b4/g0,r0/b16/g0,-torch-path" --energy-window-s 0.3 > $R/step.log 2>&1
step step $?; cat $R/step/*.md >> $L 2>/dev/null
left=$(( 580 - ($(date +%s)-t0) )); echo "left $left" >> $L
[ $left -gt 150 ] && DEMO_TIMEOUT=$left demo_obj ef-wide100m-hind energy-first r0/b8/g0,r0/b32/g0 --model gpt-wide-100m
finish
