#!/bin/bash
# Prepared in session 20, not run (the session's device time went to calls 10-13 on an H100). Issue 13: the
# H200 (or H100) memory-first floor cell for s20j52, the candidate of session 20 (joint head, clone with
# --bc-explore 0.3, anchored PPO): 0 of 75 surrogate floor cells fail, the CPU demo's and the real CPU training
# cells pass. A CPU replay of s20j51's H100 memory-first windows says it moves back to r64/b4/g0 where s20j51
# stayed at r32/b4/g0 (59 of 60 windows). Memory-first on gpt-85m for s20j52 and the default s18c33 (this
# device's baseline), balanced and loss-first on gpt-85m, memory-first on lm-medium. ~560 s on a fresh machine.
# Carry .whl13 (made with ../shared/tools/gpu-wheels.sh fastapi-offline; mv .whl .whl13).
source results/gpu-h200-next/preamble.sh
C=${CAND:-s20j52}
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader >> $L
P="--policy $C --policy-dir results/policy-$C"
DEMO_TIMEOUT=240 demo_mf gpt85m-$C r64/b4/g0 $P
DEMO_TIMEOUT=130 demo_mf gpt85m-s18c33 r64/b4/g0 --policy s18c33 --policy-dir results/policy-s18c33
DEMO_TIMEOUT=130 demo_obj bal-gpt85m-$C balanced r64/b4/g0 $P
DEMO_TIMEOUT=80 demo_mf lmmed-$C r64/b4/g0 --model lm-medium --steps 600 --batch-size 32 $P
finish
# Then (a second call on the warm machine): demo_obj lf-gpt85m-$C loss-first r0/b8/g0 $P, and the same four
# presets on lm-medium.
