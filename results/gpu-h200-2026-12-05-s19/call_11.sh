#!/bin/bash
# Prepared in session 16, not run (device budget spent). Issue 13: the H200 demos ended 0.9-1.5 % above the
# static r64/b4/g0 after the policy changed r64/b4/g0 -> r64/b8/g0 at step 21, while paired H200 traces have
# r64/b8 from step 0 slightly below r64/b4, and on the CPU (lm-small) a change of bits costs nothing. Is it
# the change, the GPU conversion or the model? Session 19: the demo's 40-step warm-up, AdamW beside, and the early-phase
# question of session 17 (r64/b8 for 20 steps, then r0/b8: does it keep rank 64's gain on this model?). ~470 s. Carry .whl13.
source results/gpu-h200-next/preamble.sh
timeout 540 python3 -m benchmarks.switch_loss --model gpt-85m --steps 600 --batch-size 16 --seq-len 64 --lr 3e-4 \
  --warmup-steps 40 --seeds 0 1 --schedules adamw r0/b8/g0 r64/b8/g0 "r64/b8/g0>r0/b8/g0" "r0/b8/g0>r64/b8/g0" \
  > $R/switch_loss.md 2>&1
step switch_loss $?; cat $R/switch_loss.md >> $L
finish
