#!/bin/bash
# Session 15, GPU call 2 (issue 13): a retrain on the surrogate refitted with the session-15 H200 traces
# (CAND, exported to results/policy-CAND/), on the H200 demo. Static runs: the best static measured in
# hindsight under memory-first (r64/b4/g0, on both models), the floor r0/b8/g0 under time-first (where the
# surrogate has it play r0/b32/g0 twice). Carry .whl13.
source results/gpu-h200-next/preamble.sh
P="--policy $CAND --policy-dir results/policy-$CAND"
demo_mf $CAND-r64b4 r64/b4/g0 $P
demo_mf lmm-$CAND-r64b4 r64/b4/g0 $P --model lm-medium --steps 600 --batch-size 32
demo_obj tf-$CAND time-first r0/b8/g0 $P
finish
