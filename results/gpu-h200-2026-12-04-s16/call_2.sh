#!/bin/bash
# Session 16, GPU call 2 (issue 13; ran 2026-12-04 20:17 UTC without CAND, logs in call2/). The first decision may now open a job at r64/b4/g0 (memory-first), so
# the shipped policy no longer pays a switch from rank 0 after one interval. The shipped policy under
# memory-first against the best static r64/b4/g0 on both models; then CAND (a retrain on the new first rule;
# optional) under memory-first on gpt-85m and loss-first against the floor. Carry .whl13.
source results/gpu-h200-next/preamble.sh
DEMO_TIMEOUT=300 demo_mf shipped-r64b4 r64/b4/g0
demo_mf lmm-shipped-r64b4 r64/b4/g0 --model lm-medium --steps 600 --batch-size 32
if [ -n "$CAND" ]; then
  P="--policy $CAND --policy-dir results/policy-$CAND"
  demo_mf $CAND-r64b4 r64/b4/g0 $P
  DEMO_TIMEOUT=$(( 585 - ($(date +%s)-t0) )) demo_obj lf-$CAND loss-first r0/b8/g0 $P
fi
finish
