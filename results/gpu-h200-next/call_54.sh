#!/bin/bash
# Session 29's last call (~240 s; the session's device time is nearly spent): issue 12's two goals not measured
# since session 4, with the new default rounding: (1) the 1B-parameter step rows (`--model 1b`: AdamW, r0/b8/g0
# nearest and stochastic, r0/b4/g0, two projected settings) and (2) `apply_setting` between settings on the
# GPT-2-sized set (`--parts switch`). Carry .whl13s.
source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
timeout 110 python3 -m mango_cli bench gpu --out $R/step1b --model 1b --parts step --energy-window-s 1.0 \
  --optimizers "AdamW (fused),r0/b8/g0,r0/b4/g0,r8/b4/g0,r64/b8/g0,-torch-path,-g0.5,-unchecked,-no-EF,-full-v" > $R/step1b.log 2>&1
step step1b $?; cat $R/step1b/*.md >> $L 2>/dev/null
left=$(( ${CALL_LIMIT:-230} - ($(date +%s)-t0) - 5 )); echo "left $left" >> $L
timeout $left python3 -m mango_cli bench gpu --out $R/switch --parts switch > $R/switch.log 2>&1
step switch $?; cat $R/switch/*.md >> $L 2>/dev/null; grep "cost_in_steps" $R/switch.log | tail -6 >> $L
finish
