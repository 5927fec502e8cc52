#!/bin/bash
# Session 32 (ask for an H200; ~330 s; carry .whl13s). Ran as call 67 (CALL_LIMIT=90, the switch part only); with
# the paired call 67b it showed no gain from the numpy tables, which were reverted (BENCHMARKS, session 32). Issue 12: setting changes with the fused plan's program
# tables built in numpy (`mango bench gpu --parts switch`; call 66 timed the torch tables: 11-74 steps' time).
# Issue 13: with POLICY=DIR (a candidate's artifact directory, passed as --policy-dir with --policy NAME), its
# demo on gpt-85m under balanced and time-first beside static r0/b8/g0 and r0/b4/g0; without it, the 3-bit
# converge seeds (nearest against stochastic rounding) in the time left.
source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200 && gpu_tests
timeout 60 python3 -m mango_cli bench gpu --out $R/switch --parts switch > $R/switch.log 2>&1
step switch $?; cat $R/switch/*.md >> $L 2>/dev/null || tail -12 $R/switch.log >> $L
if [ -n "$POLICY" ]; then
  for obj in balanced time-first; do
    left=$(left_s)
    [ $left -ge 80 ] && DEMO_TIMEOUT=$left SEEDS=1 demo_obj $obj-cand $obj r0/b8/g0,r0/b4/g0 \
      --policy-dir "$POLICY" --policy "$POLICY_NAME"
  done
fi
left=$(left_s)
[ $left -ge 90 ] && converge $left 3 "AdamW (fused),r0/b3/g0,-torch-path,-g0.5,-unchecked,-factored,-no-EF,-nf4"
finish
