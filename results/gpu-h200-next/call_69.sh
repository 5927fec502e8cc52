#!/bin/bash
# Session 33 (ask for an H200; CALL_LIMIT <= 530; carry .whl13s). After call 68, 2-3 bits keep a full v and 3 bits
# round to nearest by default, and r0/b3/g0 is a first-interval candidate. Issue 12: the compiled tests of the new
# defaults; the step rows of every 2-3-bit grid setting (rank 0 and projected) with 2 s energy windows. Issue 13:
# the cost profiles of gpt-85m and lm-medium re-measured (the shipped ones timed the factored 3-bit step and its
# state bytes), then the demo on gpt-85m under balanced against static r0/b4/g0 and r0/b3/g0, one seed.
source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
gpu_tests
timeout 120 python3 -m mango_cli bench gpu --out $R/low --parts step --energy-window-s 2.0 \
  --optimizers "torch AdamW (fused),r0/b8/g0,r0/b4/g0,r0/b3/g0,r0/b2/g0,r8/b2,r16/b3,-torch-path,-unchecked,-g0.5,-no-EF,-nf4,-stochastic,-full-v,-nearest,-factored" \
  > $R/low.log 2>&1
step low-bit-step $?; cat $R/low/*.md >> $L 2>/dev/null || tail -20 $R/low.log >> $L
timeout 120 python3 -m mango_cli profile --model gpt-85m --seq-len 256 --batch-size 16 --force --device cuda \
  --out $OUT/prof-gpt85m.json > $R/prof-gpt85m.log 2>&1
step prof-gpt85m $?; tail -3 $R/prof-gpt85m.log >> $L
timeout 90 python3 -m mango_cli profile --model lm-medium --batch-size 32 --force --device cuda \
  --out $OUT/prof-lm-medium.json > $R/prof-lm-medium.log 2>&1
step prof-lm-medium $?; tail -3 $R/prof-lm-medium.log >> $L
left=$(left_s)
[ $left -ge 100 ] && DEMO_TIMEOUT=$left SEEDS=1 demo_obj balanced-gpt85m balanced r0/b4/g0,r0/b3/g0
finish
