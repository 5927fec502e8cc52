#!/bin/bash
# Prepared in session 17, not run (no device lent). Issue 13: every H200 demo before session 17 sent the policy
# a cost profile without a training step (no optimizer share: features no training episode has; BENCHMARKS,
# session 17). The demo now times one. Re-measure the shipped policy where it lost (memory-first, gpt-85m and
# lm-medium) and where it tied (balanced), then the switch benchmark (call 11). ~560 s on a fresh machine.
# Carry .whl13.
source results/gpu-h200-next/preamble.sh
export MANGO_CACHE_DIR=$R/cache  # the gpt-85m demo's profile is the only one there when obs-shift reads it
DEMO_TIMEOUT=330 demo_mf gpt85m r64/b4/g0
python3 -m mango_cli bench obs-shift $R/demo-mf-gpt85m/telemetry.jsonl --workload gpu-gpt85m-cosine \
  --hardware h200-gpt85m --objective memory-first --policy default \
  --profile "$(ls $R/cache/profiles/*.json | head -1)" > $R/obs_shift.md 2>&1
step obs_shift $?; tail -20 $R/obs_shift.md >> $L
DEMO_TIMEOUT=150 demo_obj bal-gpt85m balanced r0/b8/g0
DEMO_TIMEOUT=100 demo_mf lmmed r64/b4/g0 --model lm-medium --steps 600 --batch-size 32
finish
