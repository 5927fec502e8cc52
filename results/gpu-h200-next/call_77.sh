#!/bin/bash
# Session 36 (carry .whl13s; CALL_LIMIT <= 560). Issue 13: the default policy s35a (shipped in session 35) on
# the GPU under the presets call_78.sh does not run (balanced there): gpt-85m under memory-first (static
# r64/b4/g0 and r0/b4/g0, the best measured there), loss-first, energy-first and time-first (static r0/b8/g0
# and r0/b4/g0), then balanced on lm-medium, one seed each, while CALL_LIMIT lasts (the first demo compiles
# and profiles). s24L47 ran the same cells in calls 64-66 (BENCHMARKS.md, sessions 31-32). The register-cap
# variants are call_78.sh's (`reg_caps`).
source results/gpu-h200-next/preamble.sh
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
left=$(left_s)
[ $left -ge 100 ] && DEMO_TIMEOUT=$left SEEDS=1 demo_mf gpt85m r64/b4/g0,r0/b4/g0
for obj in loss-first energy-first time-first; do
  left=$(left_s)
  [ $left -ge 90 ] && DEMO_TIMEOUT=$left SEEDS=1 demo_obj $obj-gpt85m $obj r0/b8/g0,r0/b4/g0
done
left=$(left_s)
[ $left -ge 70 ] && DEMO_TIMEOUT=$left SEEDS=1 demo_obj balanced-lmmed balanced r0/b8/g0,r0/b4/g0 \
  --model lm-medium --steps 600 --batch-size 32
finish
