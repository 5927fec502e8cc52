#!/bin/bash
# Session 20: run as calls 10 (every demo failed: the carried wheels lacked fastapi-offline) and 11 (CAND=s20j51, on an H100).
# Session 20, issue 13: a joint-head candidate (cloned oracle + PPO, CAND=name of results/policy-NAME) on the
# GPU demos where the default s18c33 lost or tied: memory-first on gpt-85m and lm-medium (the default plays
# r32/b8/g0, the static r64/b4/g0 won by J 0.19 vs 0.34 on the H200), loss-first on gpt-85m (the floor, static
# r0/b8/g0), balanced on gpt-85m against r64/b4/g0. ~520 s on a fresh machine (the first demo compiles and
# profiles). Carry .whl13.
source results/gpu-h200-next/preamble.sh
C=${CAND:?set CAND}
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
P="--policy $C --policy-dir results/policy-$C"
DEMO_TIMEOUT=240 demo_mf gpt85m-$C r64/b4/g0 $P
DEMO_TIMEOUT=130 demo_obj lf-gpt85m-$C loss-first r0/b8/g0 $P
DEMO_TIMEOUT=130 demo_obj bal-gpt85m-$C balanced r64/b4/g0 $P
DEMO_TIMEOUT=80 demo_mf lmmed-$C r64/b4/g0 --model lm-medium --steps 600 --batch-size 32 $P
finish
