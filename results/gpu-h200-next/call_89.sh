#!/bin/bash
# Session 40, after call 88 (carry .whl13p; CALL_LIMIT ~300): the default policy s35a on lm-medium under the
# other three presets (call 88 ran balanced), statics r0/b8/g0 and r0/b4/g0 beside it, one seed each.
WHL=.whl13p source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
for obj in loss-first memory-first time-first; do
  left=$(left_s)
  [ $left -ge 80 ] && DEMO_TIMEOUT=$left SEEDS=1 demo_obj $obj-lmm $obj "r0/b8/g0,r0/b4/g0" --model lm-medium
done
finish
