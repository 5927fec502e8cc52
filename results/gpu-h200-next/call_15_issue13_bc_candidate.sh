#!/bin/bash
# Prepared in session 19, not run (the session's device time was spent on calls 11-14). Issue 13, a check of
# the surrogate more than of a candidate: s19bc44 (cloned oracle, then PPO) plays r64/b4/g0 on the GPU under
# memory-first and balanced, where the surrogate ranks r64/b4/g0 first and the default s18c33 plays r32/b8/g0 /
# r0/b8/g0; it fails 3 of 5 GPU surrogate floor cells (loss-first), so it is no shipping candidate. Does
# r64/b4/g0 beat r0/b8/g0 under balanced on the H200, as the surrogate says (-15 % for the default)? Memory-first
# on gpt-85m and lm-medium, and balanced on gpt-85m against the static r64/b4/g0. CAND=name picks another
# artifact of results/policy-NAME (a candidate that passes the surrogate's floor cells, when one exists).
# ~500 s on a fresh machine (the first demo compiles). Carry .whl13.
source results/gpu-h200-next/preamble.sh
C=${CAND:-s19bc44}
DEMO_TIMEOUT=330 demo_mf gpt85m-$C r64/b4/g0 --policy $C --policy-dir results/policy-$C
DEMO_TIMEOUT=120 demo_mf lmmed-$C r64/b4/g0 --model lm-medium --steps 600 --batch-size 32 --policy $C \
  --policy-dir results/policy-$C
DEMO_TIMEOUT=150 demo_obj bal-gpt85m-$C balanced r64/b4/g0 --policy $C --policy-dir results/policy-$C
finish
