#!/bin/bash
# Session 20, issue 13, part 2 of call 16 (same warm machine): the default s18c33 under memory-first on gpt-85m
# (the baseline on this device), and the candidate CAND under time- and energy-first on gpt-85m and under
# loss-first and balanced on lm-medium. ~500 s. Carry .whl13.
source results/gpu-h200-next/preamble.sh
C=${CAND:?set CAND}
P="--policy $C --policy-dir results/policy-$C"
M="--model lm-medium --steps 600 --batch-size 32"
DEMO_TIMEOUT=130 demo_mf gpt85m-s18c33 r64/b4/g0 --policy s18c33 --policy-dir results/policy-s18c33
DEMO_TIMEOUT=110 demo_obj tf-gpt85m-$C time-first r0/b8/g0 $P
DEMO_TIMEOUT=110 demo_obj ef-gpt85m-$C energy-first r0/b8/g0 $P
DEMO_TIMEOUT=70 demo_obj lf-lmmed-$C loss-first r0/b8/g0 $M $P
DEMO_TIMEOUT=70 demo_obj bal-lmmed-$C balanced r64/b4/g0 $M $P
finish
