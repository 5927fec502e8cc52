#!/bin/bash
# Prepared in session 19, not run (the session's device time was spent on calls 11-14). Issue 13: the H200 floor
# cells for the first policy trained from the cloned per-episode oracle (`mango train --bc-episodes`), which
# plays r64/b4/g0 on the GPU workloads under memory-first where the default s18c33 plays r32/b8/g0 (the
# surrogate: -55 % vs r64/b4/g0; the H200, session 19: J 0.337 vs 0.197). Memory-first on gpt-85m and
# lm-medium, and balanced on gpt-85m against the static r64/b4/g0 (the surrogate's best static setting there,
# never run on the H200 under balanced). CAND=name picks another artifact of results/policy-NAME.
# ~500 s on a fresh machine (the first demo compiles). Carry .whl13.
source results/gpu-h200-next/preamble.sh
C=${CAND:-s19bc44}
DEMO_TIMEOUT=330 demo_mf gpt85m-$C r64/b4/g0 --policy $C --policy-dir results/policy-$C
DEMO_TIMEOUT=120 demo_mf lmmed-$C r64/b4/g0 --model lm-medium --steps 600 --batch-size 32 --policy $C \
  --policy-dir results/policy-$C
DEMO_TIMEOUT=150 demo_obj bal-gpt85m-$C balanced r64/b4/g0 --policy $C --policy-dir results/policy-$C
finish
