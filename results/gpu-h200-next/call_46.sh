#!/bin/bash
# Session 28's third call. Issue 12: (1) the step rows with the per-tile skip default and two rank-0 operating
# points at fewer instructions (r0/b8/g0 rounded to nearest: call 45's H100 timed it at 0.76x fused AdamW
# and 0.96x its energy; r0/b4/g0 with a full v), 2 s energy window, (2) their 300-step convergence on the
# 85M byte GPT beside AdamW and the defaults. Issue 13: (3) the shipped policy's demo on gpt-85m under
# PRESETS (default "energy-first balanced"), one seed each, while time is left (CALL_LIMIT s, default 540).
# Carry .whl13s.
source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
timeout 120 python3 -m mango_cli bench gpu --out $R/step --parts step --optimizers "AdamW (fused),r0/b8/g0,r0/b4/g0,-torch-path,-g0.5" --energy-window-s 2.0 > $R/step.log 2>&1
step step $?; cat $R/step/*.md >> $L 2>/dev/null
timeout 200 python3 -m mango_cli bench gpu --out $R/conv --parts converge --optimizers "AdamW (fused),r0/b8/g0,r0/b4/g0,-torch-path,-g0.5,-unchecked,-no-EF" > $R/conv.log 2>&1
step converge $?; cat $R/conv/*.md >> $L 2>/dev/null
for obj in ${PRESETS:-energy-first balanced}; do
  left=$(( ${CALL_LIMIT:-540} - ($(date +%s)-t0) )); echo "left $left" >> $L
  [ $left -gt 100 ] && SEEDS=1 DEMO_TIMEOUT=$left demo_obj $obj-gpt85m $obj "r0/b8/g0,r0/b4/g0,r64/b4/g0"
done
finish
