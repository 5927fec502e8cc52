#!/bin/bash
# Session 31, issue 12 and 13: 4 bits round to nearest by default (`stochastic_rounding="auto"`), (1) compiled
# tests at that default, (2) the rank-0 step rows with 2 s energy windows (the default against 4 bits rounded
# stochastically and without the error buffer), (3) the 1B rows of the default, (4) the demo on gpt-85m under
# each of OBJS (default "balanced time-first") with static r0/b8/g0 and r0/b4/g0, one seed, played by POLICY
# (default: the shipped one; a candidate as `--policy NAME --policy-dir DIR`), while CALL_LIMIT lasts (a demo
# starts with 120 s or more left). Carry .whl13s.
source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
gpu_tests
timeout 110 python3 -m mango_cli bench gpu --out $R/step --parts step --energy-window-s 2.0 \
  --optimizers "AdamW (fused),r0/b8/g0,r0/b4/g0,-torch-path,-g0.5,-unchecked,-factored,-nf4,-r0/b8/g0 stochastic,-r0/b8/g0 no-EF" > $R/step.log 2>&1
step step $?; cat $R/step/*.md >> $L 2>/dev/null
timeout 110 python3 -m mango_cli bench gpu --out $R/step1b --model 1b --parts step --energy-window-s 1.0 \
  --optimizers "AdamW (fused),r0/b8/g0,r0/b4/g0,-torch-path,-g0.5,-unchecked,-stochastic,-no-EF,-factored,-nf4" > $R/step1b.log 2>&1
step step1b $?; cat $R/step1b/*.md >> $L 2>/dev/null
for obj in ${OBJS:-balanced time-first}; do
  left=$(left_s)
  [ $left -ge 120 ] && DEMO_TIMEOUT=$left SEEDS=1 demo_obj $obj-gpt85m $obj r0/b8/g0,r0/b4/g0 $POLICY
done
finish
